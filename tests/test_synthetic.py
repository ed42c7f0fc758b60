"""Synthetic data: renderer conventions, generator determinism and ground-truth consistency, shards.

The body model is a small stand-in written by the test in SMPL's format (one box per bone,
rigidly skinned) and loaded through `load_body_model`, so the tests do not depend on the size or
presence of the default model file.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hkmr_ros.skeleton import SMPL_PARENTS
from training.body.body_model import load_body_model
from training.body.joint_sets import SMPLX_VERTEX_ID_KEYS
from training.datasets import synthetic
from training.datasets.crop import normalise_keypoints, transform_points
from training.datasets.synthetic import (
    GeneratorConfig,
    SyntheticDataset,
    SyntheticGenerator,
    generate_dataset,
    keypoint_visibility,
    procedural_background,
)
from training import render
from hkmr_ros.camera import CameraModel
from training.render import MeshRenderer

# approximate SMPL rest joints (metres, y up, the body faces +z, its left is +x)
REST_JOINTS = np.array([
    (0.0, 0.0, 0.0), (0.06, -0.09, 0.0), (-0.06, -0.09, 0.0), (0.0, 0.11, -0.02),
    (0.11, -0.46, 0.0), (-0.11, -0.46, 0.0), (0.0, 0.25, 0.0), (0.09, -0.86, -0.04),
    (-0.09, -0.86, -0.04), (0.0, 0.31, 0.02), (0.12, -0.92, 0.08), (-0.12, -0.92, 0.08),
    (0.0, 0.52, -0.01), (0.08, 0.43, 0.0), (-0.08, 0.43, 0.0), (0.0, 0.61, 0.04),
    (0.18, 0.45, -0.01), (-0.18, 0.45, -0.01), (0.44, 0.43, -0.03), (-0.44, 0.43, -0.03),
    (0.70, 0.44, -0.02), (-0.70, 0.44, -0.02), (0.78, 0.44, -0.03), (-0.78, 0.44, -0.03),
])
BOX_FACES = np.array([
    (0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
    (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3),
])


def box(lo, hi):
    """8 corners of an axis-aligned box (index bits: x, y, z)."""
    return np.array([[(hi if i & 4 else lo)[0], (hi if i & 2 else lo)[1], (hi if i & 1 else lo)[2]]
                     for i in range(8)])


def write_standin_model(path):
    """A box-per-bone body in SMPL's npz format; joints are extra (face-less) vertices."""
    vertices, faces, weights = [], [], []
    pieces = [(p, REST_JOINTS[p], REST_JOINTS[j]) for j, p in enumerate(SMPL_PARENTS) if p >= 0]
    pieces += [(15, REST_JOINTS[15], REST_JOINTS[15] + (0, 0.14, 0))]  # head
    for j in (10, 11, 22, 23):  # feet and hands
        pieces.append((j, REST_JOINTS[j], REST_JOINTS[j] + (0, 0, 0.06)))
    for part, a, b in pieces:
        corners = box(np.minimum(a, b) - 0.05, np.maximum(a, b) + 0.05)
        faces.append(BOX_FACES + len(vertices) * 8)
        vertices.append(corners)
        weights.append(part)
    v = np.concatenate(vertices + [REST_JOINTS])
    w = np.zeros((len(v), 24))
    w[np.arange(len(weights) * 8), np.repeat(weights, 8)] = 1.0
    w[len(weights) * 8 + np.arange(24), np.arange(24)] = 1.0
    regressor = np.zeros((24, len(v)))
    regressor[np.arange(24), len(weights) * 8 + np.arange(24)] = 1.0
    shapedirs = np.zeros((len(v), 3, 10))
    shapedirs[:, 1, 0] = 0.05 * v[:, 1]  # taller / shorter
    shapedirs[:, 0, 1] = 0.05 * v[:, 0]  # wider / narrower
    head_box = (len(SMPL_PARENTS) - 1) * 8
    ids = {f"vertex_ids_{key}": np.array(head_box + k % 8) for k, key in enumerate(SMPLX_VERTEX_ID_KEYS)}
    np.savez(path, v_template=v, shapedirs=shapedirs, J_regressor=regressor, weights=w,
             kintree_table=np.array([[2 ** 32 - 1] + list(SMPL_PARENTS[1:]), list(range(24))]),
             f=np.concatenate(faces), posedirs=np.zeros((len(v), 3, 207)),
             vertex_ids_head_top=np.array(head_box + 3), **ids)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_standin_model(tmp_path_factory.mktemp("model") / "standin_smpl.npz")


@pytest.fixture(scope="module")
def body_model(model_path):
    return load_body_model(model_path)


@pytest.fixture(scope="module")
def generator(body_model):
    return SyntheticGenerator(body_model, seed=7)


@pytest.fixture(scope="module")
def samples(generator):
    return generator.generate(range(4))


def test_renderer_follows_the_pinhole_camera():
    # a square at 2 m seen by a 64x64 camera: its corners land where u = fx X / Z + cx says
    vertices = np.array([[-0.5, -0.25, 2.0], [0.5, -0.25, 2.0], [0.5, 0.25, 2.0], [-0.5, 0.25, 2.0]])
    renderer = MeshRenderer(np.array([[0, 1, 2], [0, 2, 3]]), 4, samples=4)
    camera = CameraModel(fx=100.0, fy=100.0, cx=30.0, cy=33.0, width=64, height=64)
    background = np.full((64, 64, 3), 40, np.uint8)
    result = renderer.render(vertices, np.full((4, 3), 0.9), camera, background)
    rows, cols = np.nonzero(result.mask)
    # x from 30 - 25 = 5 to 30 + 25 = 55, y from 33 - 12.5 to 33 + 12.5 (pixel centres inside)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (5, 55, 21, 45)
    # edge pixels divide by an 8-bit coverage: within 1 %; inside exact
    assert np.allclose(result.depth[result.mask], 2.0, rtol=0.01)
    assert np.allclose(result.depth[25:40, 10:50], 2.0, atol=1e-4)
    assert np.isinf(result.depth[0, 0]) and (result.image[0, 0] == 40).all()
    assert result.image[33, 30].mean() > 60  # lit surface, not background


def test_renderer_explains_missing_egl(monkeypatch):
    def fail(**kwargs):
        raise Exception("libEGL.so: cannot open shared object file")
    render.get_context.cache_clear()
    monkeypatch.setattr(render.moderngl, "create_standalone_context", fail)
    try:
        with pytest.raises(RuntimeError, match="libegl1 libgl1-mesa-dri"):
            render.get_context()
    finally:
        render.get_context.cache_clear()


def test_visibility_uses_depth_and_image_bounds():
    depth = np.full((10, 10), np.inf, np.float32)
    depth[:, :5] = 2.0  # a surface at 2 m on the left half
    points = np.array([[0, 0, 2.1], [0, 0, 2.5], [0, 0, 3.0], [0, 0, 2.0]])
    pixels = np.array([[2.0, 5.0], [2.0, 5.0], [8.0, 5.0], [12.0, 5.0]])
    visible = keypoint_visibility(points, pixels, depth, tolerance=0.15)
    # just behind the surface: visible; far behind it: hidden; background: visible; outside: not
    assert visible.tolist() == [True, False, True, False]


@pytest.mark.parametrize("kind", synthetic.BACKGROUND_KINDS)
def test_procedural_backgrounds_vary(kind):
    a = procedural_background(kind, np.random.default_rng(0), 64)
    b = procedural_background(kind, np.random.default_rng(1), 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert a.std() > 1.0 and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="checker"):
        procedural_background("plasma", np.random.default_rng(0), 8)


def test_same_seed_same_images_other_seed_differs(body_model, samples):
    again = SyntheticGenerator(body_model, seed=7).generate([1, 3])
    for a, b in zip([samples[1], samples[3]], again):
        assert a["img"].tobytes() == b["img"].tobytes()
        assert np.array_equal(a["keypoints_2d"], b["keypoints_2d"])
    other = SyntheticGenerator(body_model, seed=8).generate([1])[0]
    assert not np.array_equal(other["img"], samples[1]["img"])
    assert not np.array_equal(other["pose"], samples[1]["pose"])


def test_ground_truth_is_consistent(samples):
    for s in samples:
        assert s["img"].shape == (224, 224, 3) and s["img"].dtype == np.uint8
        joints = s["joints_spin24"].astype(np.float64)
        assert (joints[:, 2] > 1.0).all()  # in front of the camera, metres
        # full-frame projection, then the SPIN crop, gives the stored normalised keypoints
        uvw = joints @ s["camera_K"].astype(np.float64).T
        frame_px = uvw[:, :2] / uvw[:, 2:]
        crop_px = transform_points(frame_px, s["center"], float(s["scale"]))
        assert np.allclose(normalise_keypoints(crop_px), s["keypoints_2d"][:, :2], atol=1e-3)
        # and the crop intrinsics project straight to the same crop pixels
        uvw = joints @ s["crop_K"].astype(np.float64).T
        assert np.allclose(uvw[:, :2] / uvw[:, 2:], crop_px, atol=1e-2)
        # the person fills the crop: keypoints within it, spread over a good part of it
        kp = s["keypoints_2d"][:, :2]
        assert np.abs(kp).max() < 1.0 and np.ptp(kp, axis=0).max() > 0.8


def test_mask_covers_visible_keypoints(samples):
    import cv2
    covered, total = 0, 0
    for s in samples:
        mask = cv2.dilate(s["mask"].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert 0.05 < s["mask"].mean() < 0.8
        kp = s["keypoints_2d"]
        px = np.floor((kp[:, :2] + 1.0) * 112.0 + 0.5).astype(int)
        for (x, y), vis in zip(px, kp[:, 2]):
            if vis > 0:
                total += 1
                covered += int(mask[y, x])
    assert total > 0.5 * 24 * len(samples)
    assert covered >= 0.9 * total


@pytest.fixture(scope="module")
def bystander_samples(body_model):
    """Samples 0-3 of seed 7 (the `samples` fixture's people), each with a bystander."""
    cfg = GeneratorConfig(bystander_prob=1.0)
    return SyntheticGenerator(body_model, seed=7, cfg=cfg).generate(range(4))


def test_bystanders_leave_the_person_and_its_labels_unchanged(samples, bystander_samples):
    label_keys = ("pose", "betas", "joints_spin24", "joints_h36m17", "center", "scale", "crop_K")
    for alone, crowded in zip(samples, bystander_samples):
        for key in label_keys:
            assert np.array_equal(alone[key], crowded[key]), key
        assert not np.array_equal(alone["img"], crowded["img"])  # the bystander is in the crop
        # a bystander in front hides part of the person: never more of it, nor more keypoints, is seen
        assert not (crowded["mask"] & ~alone["mask"]).any()
        assert not ((crowded["keypoints_2d"][:, 2] > 0) & (alone["keypoints_2d"][:, 2] == 0)).any()
        assert np.array_equal(alone["keypoints_2d"][:, :2], crowded["keypoints_2d"][:, :2])

def test_bystander_in_front_hides_part_of_the_person(body_model):
    alone = SyntheticGenerator(body_model, seed=7).generate([22])[0]
    crowded = SyntheticGenerator(body_model, seed=7, cfg=GeneratorConfig(bystander_prob=1.0)).generate([22])[0]
    hidden = alone["mask"] & ~crowded["mask"]  # sample 22 of seed 7 draws its bystander in front
    assert hidden.sum() > 0.1 * alone["mask"].sum()
    assert (crowded["keypoints_2d"][:, 2] < alone["keypoints_2d"][:, 2]).sum() >= 3


def test_samples_without_a_bystander_are_unchanged(body_model):
    indices = [2, 3, 4, 5]
    alone = SyntheticGenerator(body_model, seed=7).generate(indices)
    generator = SyntheticGenerator(body_model, seed=7, cfg=GeneratorConfig(bystander_prob=0.5))
    draws = generator._bystander_draws(indices)
    assert 0 < sum(d is None for d in draws) < len(indices)  # both kinds among these four (seed 7)
    for draw, single, sample in zip(draws, alone, generator.generate(indices)):
        assert (sample["img"].tobytes() == single["img"].tobytes()) == (draw is None)
        assert np.array_equal(sample["keypoints_2d"][:, :2], single["keypoints_2d"][:, :2])


def test_bystander_stands_beside_the_person_and_never_interpenetrates():
    cfg = GeneratorConfig()
    camera = CameraModel(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)
    rng = np.random.default_rng(0)
    fronts = 0
    for depth in (1.5, 2.5, 6.0):
        for _ in range(50):
            placed = synthetic.place_bystander(rng, cfg, camera, np.array([320.0, 240.0]), depth, 200.0)
            gap = abs(placed.translation[2] - depth)
            assert cfg.bystander_depth_gap[0] <= gap <= cfg.bystander_depth_gap[1]
            assert placed.translation[2] >= 1.0 and placed.in_front == (placed.translation[2] < depth)
            sideways = abs(placed.translation[0] / placed.translation[2] * 500.0) / 200.0
            assert cfg.bystander_offset[0] - 1e-9 <= sideways <= cfg.bystander_offset[1] + 1e-9
            fronts += placed.in_front
    assert 0 < fronts < 150


def test_pose_orientation_and_shape_are_random(samples):
    poses = np.stack([s["pose"] for s in samples])
    betas = np.stack([s["betas"] for s in samples])
    assert poses.shape == (4, 72) and betas.shape == (4, 10)
    assert not np.allclose(poses[0, :3], poses[1, :3]) and np.abs(betas).max() > 0.1
    # upright: head top above the ankles in the image (y down), for every sample
    for s in samples:
        kp = s["keypoints_2d"]
        assert kp[13, 1] < min(kp[0, 1], kp[5, 1])


def test_shards_manifest_and_dataset(tmp_path, body_model):
    cfg = GeneratorConfig(batch_size=2)
    manifest = generate_dataset(tmp_path / "a", 5, seed=3, body_model=body_model, shard_size=2,
                                cfg=cfg, progress=False)
    saved = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert saved == manifest
    assert saved["count"] == 5 and saved["seed"] == 3 and saved["generator_version"] == 1
    assert [s["count"] for s in saved["shards"]] == [2, 2, 1]
    assert saved["config"]["batch_size"] == 2
    # the same seed gives byte-identical files
    generate_dataset(tmp_path / "b", 5, seed=3, body_model=body_model, shard_size=2, cfg=cfg,
                     progress=False)
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with pytest.raises(FileExistsError):
        generate_dataset(tmp_path / "a", 1, seed=3, body_model=body_model, progress=False)

    dataset = SyntheticDataset(tmp_path / "a")
    assert len(dataset) == 5
    item = dataset[4]
    expected = {"img": (3, 224, 224), "keypoints_2d": (24, 3), "joints_3d": (24, 4), "pose": (72,),
                "betas": (10,), "has_smpl": (), "has_joints_3d": (), "center": (2,), "scale": ()}
    assert set(item) == set(expected) | {"dataset_name"}
    for key, shape in expected.items():
        assert item[key].shape == shape and item[key].dtype == torch.float32, key
    assert item["dataset_name"] == "synthetic" and item["has_smpl"] == 1 and item["has_joints_3d"] == 1
    assert torch.all(item["joints_3d"][:, 3] == 1) and -3 < item["img"].mean() < 3
    # the stored sample equals a fresh render (up to JPEG)
    fresh = SyntheticGenerator(body_model, seed=3, cfg=cfg).generate([4])[0]
    assert np.allclose(item["keypoints_2d"].numpy(), fresh["keypoints_2d"])
    assert np.abs(dataset.raw_sample(4)["img"].astype(int) - fresh["img"]).mean() < 4

    evaluation = SyntheticDataset(tmp_path / "a", eval_keys=True)[0]
    assert evaluation["joints_h36m17"].shape == (17, 3) and evaluation["keypoints_px"].shape == (24, 3)
    assert torch.allclose(evaluation["keypoints_px"][:, :2], (evaluation["keypoints_2d"][:, :2] + 1) * 112)

    calls = []

    def augment(sample, rng):
        calls.append((sample["img"].shape, sample["img"].dtype, type(rng)))
        sample = dict(sample)
        sample["img"] = np.zeros_like(sample["img"])
        return sample
    augmented = SyntheticDataset(tmp_path / "a", augment=augment)[1]
    assert calls == [((224, 224, 3), np.uint8, np.random.Generator)]
    assert torch.allclose(augmented["img"][0], torch.tensor(-0.485 / 0.229))


def test_missing_root_or_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SyntheticDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        SyntheticDataset(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="not a hkmr-synthetic manifest"):
        SyntheticDataset(tmp_path)


def test_cli_writes_dataset_and_reports_rate(tmp_path, model_path, capsys):
    out = tmp_path / "cli"
    assert synthetic.main(["--out", str(out), "--num", "3", "--seed", "11", "--shard-size", "2",
                           "--model", str(model_path), "--contact-sheet", str(tmp_path / "sheet.png")]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 samples in 2 shards" in printed and "images/s" in printed
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    assert synthetic.main(["--out", str(out), "--num", "3", "--seed", "11", "--model", str(model_path)]) == 1
    assert "exists" in capsys.readouterr().err
    assert synthetic.main(["--out", str(tmp_path / "b"), "--num", "3", "--seed", "11", "--model", str(model_path),
                           "--bystanders", "1.5"]) == 1
    assert "--bystanders is a probability" in capsys.readouterr().err
    assert synthetic.main(["--out", str(tmp_path / "b"), "--num", "2", "--seed", "11", "--model", str(model_path),
                           "--bystanders", "1"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["config"]["bystander_prob"] == 1.0
