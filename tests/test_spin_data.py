"""SPIN-format npz loading, HMR-style augmentation and mixed-dataset sampling on tiny files."""
import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.utils.data import DataLoader, DistributedSampler

from hkmr_ros.skeleton import SMPL_FLIP_PERMUTATION, SMPL_JOINT_NAMES
from training.datasets.augment import (IMAGENET_MEAN, IMAGENET_STD, SPIN24_FLIP_PERMUTATION,
                                       SPIN24_JOINT_NAMES, Augmentation, AugmentationParams,
                                       flip_pose, inplane_rotation, jitter_colour)
from training.datasets.mixed import MixedDataset
from training.datasets.spin_npz import SPIN_DATASETS, SpinNpzDataset, spin_dataset_paths

H, W = 240, 320
LEFT_ANKLE = SPIN24_JOINT_NAMES.index("left_ankle")
RIGHT_ANKLE = SPIN24_JOINT_NAMES.index("right_ankle")
# one white dot per image, at the left ankle's pixel
DOTS = [(150, 100), (200, 170), (120, 60)]
CENTERS = [(160.0, 120.0), (180.0, 130.0), (140.0, 110.0)]
SCALES = [1.0, 0.9, 0.8]


def _write_image(path, dot):
    img = np.zeros((H, W, 3), dtype=np.uint8)
    img[:, :, 2] = 40  # a little red (OpenCV writes BGR), so an RGB/BGR mix-up shows
    cv2.circle(img, dot, 3, (255, 255, 255), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 100])


def _annotations(rng, n=3, full=True):
    data = {"imgname": np.array([f"images/im{i:04d}.jpg" for i in range(n)]),
            "center": np.array(CENTERS[:n]), "scale": np.array(SCALES[:n])}
    if full:
        part = np.zeros((n, 24, 3))
        part[:, :, :2] = rng.uniform(20, 200, (n, 24, 2))
        part[:, :, 2] = 1.0
        part[:, 7, 2] = 0.0
        for i in range(n):
            part[i, LEFT_ANKLE, :2] = DOTS[i]
        joints = np.concatenate([rng.normal(size=(n, 24, 3)), np.ones((n, 24, 1))], 2)
        data.update(part=part, S=joints,
                    pose=rng.normal(scale=0.3, size=(n, 72)), shape=rng.normal(size=(n, 10)),
                    has_smpl=np.array([1.0, 0.0, 1.0][:n]),
                    openpose=np.zeros((n, 25, 3)))
    return data


@pytest.fixture
def spin_root(tmp_path):
    """SPIN's layout: <root>/dataset_extras/<file>.npz and <root>/<image dir>/images/*.jpg."""
    npz, img_root = spin_dataset_paths(tmp_path, "lsp-orig")
    npz.parent.mkdir(parents=True)
    for i, dot in enumerate(DOTS):
        _write_image(img_root / f"images/im{i:04d}.jpg", dot)
    np.savez(npz, **_annotations(np.random.default_rng(0)))
    return tmp_path


def _crop_rgb(sample):
    """The network input back to HxWx3 in [0, 1]."""
    x = sample["img"].numpy().transpose(1, 2, 0)
    return x * IMAGENET_STD + IMAGENET_MEAN


def _dot_centroid(sample):
    """Normalised crop coordinates of the white dot (bright in all channels)."""
    rgb = _crop_rgb(sample)
    weight = np.clip(rgb.min(axis=2) - 0.5, 0, None)
    assert weight.sum() > 0, "dot not in the crop"
    ys, xs = np.mgrid[:rgb.shape[0], :rgb.shape[1]]
    px = np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()
    return 2.0 * px / rgb.shape[1] - 1.0


# ---------------------------------------------------------------- loading

def test_sample_dict_shapes_dtypes_and_values(spin_root):
    ds = SpinNpzDataset.from_root(spin_root, "lsp-orig", is_train=False)
    raw = np.load(spin_dataset_paths(spin_root, "lsp-orig")[0])
    assert len(ds) == 3
    s = ds[1]
    shapes = {"img": (3, 224, 224), "keypoints_2d": (24, 3), "joints_3d": (24, 4), "pose": (72,),
              "betas": (10,), "has_smpl": (), "has_joints_3d": (), "center": (2,), "scale": ()}
    for key, shape in shapes.items():
        assert s[key].shape == shape, key
        assert s[key].dtype == torch.float32, key
    assert s["dataset_name"] == "lsp-orig"
    assert float(s["has_smpl"]) == 0.0 and float(ds[0]["has_smpl"]) == 1.0  # from has_smpl
    assert float(s["has_joints_3d"]) == 1.0
    np.testing.assert_allclose(s["joints_3d"].numpy(), raw["S"][1], atol=1e-6)
    assert not s["pose"].any()  # has_smpl = 0: no pose
    np.testing.assert_allclose(ds[0]["pose"].numpy(), raw["pose"][0], atol=1e-6)
    np.testing.assert_allclose(s["betas"].numpy(), raw["shape"][1], atol=1e-6)
    assert torch.equal(s["center"], torch.tensor(CENTERS[1], dtype=torch.float32))
    assert float(s["scale"]) == pytest.approx(SCALES[1])
    assert float(s["keypoints_2d"][7, 2]) == 0.0 and float(s["keypoints_2d"][0, 2]) == 1.0
    # background: red 40/255 in the crop, so the image came in as RGB
    rgb = _crop_rgb(s)
    assert rgb[5, 112, 0] == pytest.approx(40 / 255, abs=0.02) and rgb[5, 112, 2] < 0.02
    assert not s["keypoints_2d"][7].any()  # invisible keypoints carry no coordinates
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["img"].shape == (2, 3, 224, 224) and batch["dataset_name"] == ["lsp-orig"] * 2


def test_keypoints_land_on_their_pixel_in_the_crop(spin_root):
    ds = SpinNpzDataset.from_root(spin_root, "lsp-orig", is_train=False)
    # by hand: box side 200 px -> 224 px, so crop px = 112 + 1.12 * (dot - centre)
    expected = np.array([112 + 1.12 * (150 - 160), 112 + 1.12 * (100 - 120)]) * 2 / 224 - 1
    np.testing.assert_allclose(ds[0]["keypoints_2d"][LEFT_ANKLE, :2].numpy(), expected, atol=1e-5)
    for i in range(3):
        s = ds[i]
        np.testing.assert_allclose(_dot_centroid(s), s["keypoints_2d"][LEFT_ANKLE, :2].numpy(),
                                   atol=0.6 * 2 / 224)  # within 0.6 crop pixels


def test_missing_optional_keys_give_zeros_and_has_flags_zero(tmp_path):
    _write_image(tmp_path / "imgs/images/im0000.jpg", DOTS[0])
    np.savez(tmp_path / "mini.npz", **_annotations(np.random.default_rng(0), n=1, full=False))
    ds = SpinNpzDataset(tmp_path / "mini.npz", tmp_path / "imgs", "coco",
                        augment=Augmentation(), is_train=True)
    s = ds[0]
    assert float(s["has_smpl"]) == 0.0 and float(s["has_joints_3d"]) == 0.0
    for key in ("keypoints_2d", "joints_3d", "pose", "betas"):
        assert not s[key].any(), key


def test_pose_without_has_smpl_counts_as_smpl(tmp_path):
    _write_image(tmp_path / "imgs/images/im0000.jpg", DOTS[0])
    data = _annotations(np.random.default_rng(0), n=1)
    del data["has_smpl"], data["S"]
    np.savez(tmp_path / "mini.npz", **data)
    s = SpinNpzDataset(tmp_path / "mini.npz", tmp_path / "imgs", "h36m", is_train=False)[0]
    assert float(s["has_smpl"]) == 1.0 and float(s["has_joints_3d"]) == 0.0


# ---------------------------------------------------------------- errors

def test_missing_npz_is_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        SpinNpzDataset(tmp_path / "nothere.npz", tmp_path, "mpii")


def test_missing_key_and_bad_shapes_are_named(tmp_path):
    data = _annotations(np.random.default_rng(0))
    del data["center"]
    np.savez(tmp_path / "a.npz", **data)
    with pytest.raises(ValueError, match=r"a\.npz.*center"):
        SpinNpzDataset(tmp_path / "a.npz", tmp_path, "mpii")
    data = _annotations(np.random.default_rng(0))
    data["part"] = data["part"][:, :14]
    np.savez(tmp_path / "b.npz", **data)
    with pytest.raises(ValueError, match=r"b\.npz.*'part'"):
        SpinNpzDataset(tmp_path / "b.npz", tmp_path, "mpii")
    (tmp_path / "c.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"c\.npz"):
        SpinNpzDataset(tmp_path / "c.npz", tmp_path, "mpii")


def test_unknown_dataset_name_lists_known_ones(spin_root):
    npz, img_root = spin_dataset_paths(spin_root, "lsp-orig")
    with pytest.raises(ValueError, match="lsp-orig.*mpii"):
        SpinNpzDataset(npz, img_root, "lsp-original")
    with pytest.raises(ValueError, match="h36m-p1"):
        spin_dataset_paths(spin_root, "human36m")
    assert SPIN_DATASETS["h36m-p2"].npz_file == "h36m_valid_protocol2.npz"


def test_missing_or_corrupt_image_named_and_optionally_skipped(spin_root):
    _, img_root = spin_dataset_paths(spin_root, "lsp-orig")
    (img_root / "images/im0000.jpg").write_bytes(b"\xff\xd8 truncated garbage")
    (img_root / "images/im0001.jpg").unlink()
    ds = SpinNpzDataset.from_root(spin_root, "lsp-orig", is_train=False)
    with pytest.raises(ValueError, match=r"im0000\.jpg"):
        ds[0]
    with pytest.raises(FileNotFoundError, match=r"im0001\.jpg"):
        ds[1]
    skipping = SpinNpzDataset.from_root(spin_root, "lsp-orig", is_train=False, skip_bad_images=True)
    assert torch.equal(skipping[0]["keypoints_2d"], ds[2]["keypoints_2d"])  # moved on to sample 2
    with pytest.raises(IndexError):
        ds[3]


# ---------------------------------------------------------------- augmentation

def _synthetic_sample(rng):
    """A crop with a weak-perspective consistent pair: keypoints_2d = 0.5 * joints_3d[:, :2]."""
    joints = np.concatenate([rng.normal(scale=0.6, size=(24, 3)), np.ones((24, 1))], 1)
    kp = np.concatenate([0.5 * joints[:, :2], np.ones((24, 1))], 1)
    return {"img": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "keypoints_2d": kp,
            "joints_3d": joints, "pose": rng.normal(scale=0.4, size=72), "betas": np.arange(10.0)}


def test_flip_swaps_left_and_right_and_twice_is_identity():
    rng = np.random.default_rng(0)
    s = _synthetic_sample(rng)
    flip = AugmentationParams(flip=True)
    once = Augmentation.apply(s, flip)
    # left ankle's keypoint becomes the right ankle, mirrored
    assert once["keypoints_2d"][RIGHT_ANKLE, 1] == pytest.approx(s["keypoints_2d"][LEFT_ANKLE, 1])
    mirrored_x = -s["keypoints_2d"][LEFT_ANKLE, 0] - 2 / 224
    assert once["keypoints_2d"][RIGHT_ANKLE, 0] == pytest.approx(mirrored_x)
    assert once["joints_3d"][RIGHT_ANKLE, 0] == pytest.approx(-s["joints_3d"][LEFT_ANKLE, 0])
    # SMPL left hip's rotation goes to the right hip with y and z negated
    lh, rh = SMPL_JOINT_NAMES.index("left_hip"), SMPL_JOINT_NAMES.index("right_hip")
    np.testing.assert_allclose(once["pose"][3 * rh:3 * rh + 3],
                               s["pose"][3 * lh:3 * lh + 3] * [1, -1, -1], rtol=1e-6)
    assert np.array_equal(once["img"], s["img"][:, ::-1])
    assert np.array_equal(once["betas"], s["betas"])
    twice = Augmentation.apply(once, flip)
    for key in ("keypoints_2d", "joints_3d", "pose"):
        np.testing.assert_allclose(twice[key], s[key], atol=1e-6)
    assert np.array_equal(twice["img"], s["img"])
    assert all(SPIN24_FLIP_PERMUTATION[SPIN24_FLIP_PERMUTATION[i]] == i for i in range(24))
    assert SMPL_FLIP_PERMUTATION[lh] == rh


def test_flipped_pose_matches_flipped_joints():
    """Joints made by a global rotation R of body points P: flipping the joints (x -> -x, swap)
    equals rotating the mirrored points by the flipped pose's global rotation."""
    rng = np.random.default_rng(1)
    pose = flip_pose(flip_pose(rng.normal(scale=0.8, size=72)))
    points = rng.normal(size=(24, 3))
    R = Rotation.from_rotvec(pose[:3]).as_matrix()
    joints = np.concatenate([points @ R.T, np.ones((24, 1))], 1)
    sample = {"img": np.zeros((224, 224, 3), np.uint8), "keypoints_2d": np.zeros((24, 3)),
              "joints_3d": joints, "pose": pose}
    out = Augmentation.apply(sample, AugmentationParams(flip=True, rot=25.0))
    R_new = Rotation.from_rotvec(out["pose"][:3].astype(np.float64)).as_matrix()
    mirrored = points[list(SPIN24_FLIP_PERMUTATION)] * [-1, 1, 1]
    np.testing.assert_allclose(out["joints_3d"][:, :3], mirrored @ R_new.T, atol=1e-5)


def test_rotation_and_scale_keep_2d_and_3d_consistent():
    rng = np.random.default_rng(2)
    s = _synthetic_sample(rng)
    out = Augmentation.apply(s, AugmentationParams(rot=40.0, scale=1.25, flip=True))
    # keypoints stay the weak-perspective projection of the joints: s' = 0.5 / 1.25, t' = -2/224
    np.testing.assert_allclose(out["keypoints_2d"][:, :2],
                               0.5 / 1.25 * out["joints_3d"][:, :2] + [-2 / 224, 0], atol=1e-5)
    np.testing.assert_allclose(out["joints_3d"][:, 2],
                               s["joints_3d"][list(SPIN24_FLIP_PERMUTATION), 2], atol=1e-6)
    assert not np.allclose(out["keypoints_2d"], s["keypoints_2d"])
    # a point to the right of the centre turns counter-clockwise in the image (upwards, y down)
    assert (inplane_rotation(90)[:2, :2] @ [1.0, 0.0]) == pytest.approx([0.0, -1.0])


def test_rotation_moves_keypoints_with_the_image():
    img = np.zeros((224, 224, 3), np.uint8)
    kp = np.zeros((24, 3))
    kp[LEFT_ANKLE] = [0.3, -0.4, 1.0]
    px = ((kp[LEFT_ANKLE, :2] + 1) * 112).round().astype(int)
    cv2.circle(img, tuple(int(v) for v in px), 3, (255, 255, 255), -1)
    kp[LEFT_ANKLE, :2] = px / 112.0 - 1
    out = Augmentation.apply({"img": img, "keypoints_2d": kp},
                             AugmentationParams(rot=35.0, scale=0.8, flip=True))
    found = _dot_centroid({"img": torch.from_numpy(
        ((out["img"] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))})
    np.testing.assert_allclose(found, out["keypoints_2d"][RIGHT_ANKLE, :2], atol=0.6 * 2 / 224)


@pytest.mark.parametrize("params", [AugmentationParams(flip=True),
                                    AugmentationParams(rot=-30.0, scale=1.2),
                                    AugmentationParams(rot=20.0, scale=0.8, flip=True)])
def test_augmented_real_crop_keeps_keypoints_on_the_dot(spin_root, params):
    class Fixed(Augmentation):
        def sample_params(self, rng, res=224):
            return params
    ds = SpinNpzDataset.from_root(spin_root, "lsp-orig", augment=Fixed(), is_train=True)
    for i in range(3):
        s = ds[i]
        j = RIGHT_ANKLE if params.flip else LEFT_ANKLE
        np.testing.assert_allclose(_dot_centroid(s), s["keypoints_2d"][j, :2].numpy(),
                                   atol=0.6 * 2 / 224)
        assert float(s["scale"]) == pytest.approx(SCALES[i] * params.scale)


def test_random_augmentation_is_deterministic_per_seed_and_epoch(spin_root):
    aug = Augmentation(occluder_prob=0.5)
    a = SpinNpzDataset.from_root(spin_root, "lsp-orig", augment=aug, seed=3)
    b = SpinNpzDataset.from_root(spin_root, "lsp-orig", augment=aug, seed=3)
    assert all(torch.equal(a[i]["img"], b[i]["img"]) for i in range(3))
    b.set_epoch(1)
    assert not all(torch.equal(a[i]["img"], b[i]["img"]) for i in range(3))
    params = [aug.sample_params(np.random.default_rng(s)) for s in range(400)]
    flips = np.mean([p.flip for p in params])
    rotated = np.mean([p.rot != 0 for p in params])
    assert 0.4 < flips < 0.6 and 0.3 < rotated < 0.5
    assert all(abs(p.rot) <= 60 and 0.75 <= p.scale <= 1.25 for p in params)
    assert all(0.6 <= n <= 1.4 for p in params for n in p.pixel_noise)
    assert 0.4 < np.mean([p.occluder is not None for p in params]) < 0.6


def test_colour_jitter_scales_channels():
    img = np.full((224, 224, 3), 100, np.uint8)
    out = Augmentation.apply({"img": img, "keypoints_2d": np.zeros((24, 3))},
                             AugmentationParams(pixel_noise=(0.5, 1.0, 3.0)))
    assert out["img"][0, 0].tolist() == [50, 100, 255]


@pytest.mark.parametrize("kwargs", [{"flip_prob": 1.5}, {"rot_prob": -0.1}, {"scale_factor": 1.0},
                                    {"noise_factor": -1}, {"occluder_prob": 2}])
def test_bad_augmentation_settings(kwargs):
    with pytest.raises(ValueError):
        Augmentation(**kwargs)


# ---------------------------------------------------------------- mixed sampling

class _Tiny(torch.utils.data.Dataset):
    def __init__(self, tag, n):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"tag": self.tag, "index": i}


def test_mixed_frequencies_follow_the_ratios_and_are_deterministic():
    sources = [_Tiny("a", 10), _Tiny("b", 50), _Tiny("c", 5)]
    mixed = MixedDataset(sources, ratios=[2, 5, 3], length=6000, seed=1)
    picks = np.array([mixed.locate(i) for i in range(len(mixed))])
    freq = np.bincount(picks[:, 0], minlength=3) / len(mixed)
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.025)
    assert all(0 <= j < len(sources[k]) for k, j in picks)
    again = MixedDataset(sources, ratios=[2, 5, 3], length=6000, seed=1)
    assert [again[i] for i in range(50)] == [mixed[i] for i in range(50)]
    assert mixed[7]["tag"] == "abc"[picks[7, 0]] and mixed[7]["index"] == picks[7, 1]
    other_seed = MixedDataset(sources, ratios=[2, 5, 3], length=6000, seed=2)
    assert [other_seed.locate(i) for i in range(50)] != [tuple(p) for p in picks[:50]]
    mixed.set_epoch(1)
    assert [mixed.locate(i) for i in range(50)] != [tuple(p) for p in picks[:50]]
    zero = MixedDataset(sources, ratios=[0, 1, 0])
    assert len(zero) == 50 and {zero.locate(i)[0] for i in range(50)} == {1}


@pytest.mark.parametrize("ratios,match", [([1, 2], "2 ratio"), ([1, -1, 1], "non-negative"),
                                          ([0, 0, 0], "zero"), ([1, float("nan"), 1], "finite")])
def test_mixed_ratios_are_validated(ratios, match):
    with pytest.raises(ValueError, match=match):
        MixedDataset([_Tiny("a", 3), _Tiny("b", 3), _Tiny("c", 3)], ratios=ratios)


def test_mixed_rejects_empty_sources():
    with pytest.raises(ValueError, match="empty"):
        MixedDataset([_Tiny("a", 3), _Tiny("b", 0)], ratios=[1, 1])
    with pytest.raises(ValueError, match="at least one"):
        MixedDataset([])


def test_mixed_real_data_is_reproducible_under_a_distributed_sampler(spin_root):
    def build():
        real = SpinNpzDataset.from_root(spin_root, "lsp-orig", augment=Augmentation())
        return MixedDataset([real, _Tiny("t", 4)], ratios=[3, 1], length=8, seed=5)
    mixed = build()
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(mixed, num_replicas=2, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(0)
        seen += list(sampler)
    assert sorted(seen) == list(range(8))  # the ranks split the epoch between them
    other = build()
    for i in range(8):
        a, b = mixed[i], other[i]
        assert a.keys() == b.keys()
        if "img" in a:  # the real source: same augmentation from (seed, epoch, index)
            assert torch.equal(a["img"], b["img"]) and a["dataset_name"] == "lsp-orig"
    assert any("img" in mixed[i] for i in range(8))


def test_colour_jitter_is_the_rounded_clipped_product_per_pixel():
    rng = np.random.default_rng(4)
    for _ in range(20):
        img = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
        noise = rng.uniform(0.5, 1.5, 3)
        want = np.clip(np.rint(img.astype(np.float32) * noise.astype(np.float32)), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(jitter_colour(img, noise), want)
    mirrored = img[:, ::-1]  # a strided view, as after a flip
    np.testing.assert_array_equal(jitter_colour(mirrored, noise), jitter_colour(mirrored.copy(), noise))
