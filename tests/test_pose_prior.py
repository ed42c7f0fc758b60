"""Pose sampler (ranges, signs, determinism, correlations), VAE prior and its training script."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from smplx.lbs import batch_rigid_transform

from hkmr_ros.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from training.body.pose_sampler import (
    ACTIVITIES,
    CENTRAL_ANGLES,
    RANGES_OF_MOTION,
    SIDE_ANGLES,
    PoseSampler,
    angles_to_pose,
    sample_poses,
    shoulder_max_elevation,
)
from training.models.pose_prior import (
    DEFAULT_PRIOR_PATH,
    PosePriorEncoder,
    PosePriorError,
    PoseVAE,
    kl_divergence,
    load_pose_prior,
    save_pose_prior,
)
from training.train_prior import main as train_prior_main
from training.train_prior import random_rotation_poses, smpl_poses_from_array

J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
TOL = 0.5  # degrees, for float32 round trips
MIRROR = np.array([1.0, -1.0, -1.0])

# SMPL-like rest joints (T-pose, y up, facing +z, left on +x), metres: enough to check signs
REST_JOINTS = torch.tensor([
    [0, 0, 0], [0.06, -0.09, 0], [-0.06, -0.09, 0], [0, 0.11, -0.02], [0.10, -0.47, 0],
    [-0.10, -0.47, 0], [0, 0.25, 0], [0.09, -0.88, -0.04], [-0.09, -0.88, -0.04], [0, 0.30, 0],
    [0.12, -0.94, 0.08], [-0.12, -0.94, 0.08], [0, 0.52, -0.03], [0.08, 0.42, 0], [-0.08, 0.42, 0],
    [0, 0.6, 0.03], [0.18, 0.45, -0.01], [-0.18, 0.45, -0.01], [0.44, 0.43, -0.03],
    [-0.44, 0.43, -0.03], [0.70, 0.44, -0.03], [-0.70, 0.44, -0.03], [0.78, 0.43, -0.03],
    [-0.78, 0.43, -0.03]])


def _fk(pose: torch.Tensor) -> torch.Tensor:
    rot = Rotation.from_rotvec(pose.reshape(-1, 3).double().numpy()).as_matrix()
    rot = torch.from_numpy(rot).float().reshape(-1, 24, 3, 3)
    parents = torch.tensor(SMPL_PARENTS)
    joints, _ = batch_rigid_transform(rot, REST_JOINTS.expand(len(rot), 24, 3), parents)
    return joints


def _angles(**values) -> dict:
    keys = [f"{s}:{k}" for s in ("left", "right") for k in SIDE_ANGLES] + list(CENTRAL_ANGLES)
    out = {k: torch.zeros(1, dtype=torch.float64) for k in keys}
    for k, v in values.items():
        out[k.replace("__", ":")] = torch.tensor([float(v)], dtype=torch.float64)
    return out


def _moved(joint: str, **values) -> torch.Tensor:
    """Displacement of a joint from the rest pose for the given anatomical angles."""
    return (_fk(angles_to_pose(_angles(**values)).float()) - _fk(torch.zeros(1, 72)))[0, J[joint]]


def test_axis_signs_move_the_body_as_named():
    assert _moved("left_ankle", left__knee_flexion=90)[2] < -0.3  # knee flexion: the ankle goes back
    assert _moved("right_ankle", right__knee_flexion=90)[2] < -0.3
    assert _moved("left_knee", left__hip_flexion=90)[2] > 0.3  # hip flexion: the knee goes forward
    assert _moved("right_knee", right__hip_flexion=-30)[2] < -0.1
    assert _moved("left_knee", left__hip_abduction=40)[0] > 0.1  # abduction: away from the midline
    assert _moved("right_knee", right__hip_abduction=40)[0] < -0.1
    assert _moved("head", spine_flexion=60)[2] > 0.2  # trunk flexion: the head goes forward
    assert _moved("head", spine_lateral_left=30)[0] > 0.1
    left_arm_forward = _moved("left_wrist", left__shoulder_elevation=90, left__shoulder_plane=90)
    assert left_arm_forward[2] > 0.3 and _moved("right_wrist", right__shoulder_elevation=90,
                                                  right__shoulder_plane=90)[2] > 0.3
    hanging = _moved("left_wrist", left__shoulder_elevation=0)
    assert hanging[1] < -0.4 and abs(hanging[0]) < 0.6  # arm down by the side
    # elbow flexion with the arm hanging brings the hand forward, on both sides
    for side in ("left", "right"):
        bent = _moved(f"{side}_wrist", **{f"{side}__elbow_flexion": 90})
        assert (bent - _moved(f"{side}_wrist"))[2] > 0.2
    assert _moved("left_foot", left__ankle_dorsiflexion=20)[1] > 0.01  # toes up


def test_axis_signs_on_the_default_body_model():
    from training.body.body_model import load_body_model

    body = load_body_model()
    cases = [  # (angles, joint, axis, sign): the joint moves along +/- axis by over 10 cm
        ({"left__knee_flexion": 90}, "left_ankle", 2, -1),
        ({"right__hip_flexion": 90}, "right_knee", 2, 1),
        ({"spine_flexion": 60}, "head", 2, 1),
        ({"left__shoulder_elevation": 90, "left__shoulder_plane": 90}, "left_wrist", 2, 1),
        ({"right__shoulder_elevation": 0, "right__elbow_flexion": 90}, "right_wrist", 2, 1),
        ({"left__hip_abduction": 40}, "left_knee", 0, 1),
    ]
    poses = torch.cat([angles_to_pose(_angles(**values)).float() for values, *_ in cases])
    reference = torch.cat([angles_to_pose(_angles(**{k: 0 for k in values if "elbow" not in k})).float()
                           for values, *_ in cases])
    with torch.no_grad():
        moved = body(poses, torch.zeros(len(cases), 10)).joints - body(reference, torch.zeros(len(cases), 10)).joints
    for i, (values, joint, axis, sign) in enumerate(cases):
        assert sign * moved[i, J[joint], axis] > 0.1, (values, moved[i, J[joint]])


def _decompose(pose: torch.Tensor, joint: str, order: str) -> np.ndarray:
    """Intrinsic Euler angles (degrees) of a joint, the right side mirrored into the left's axes."""
    rotvec = pose[:, 3 * J[joint]:3 * J[joint] + 3].double().numpy()
    if joint.startswith("right"):
        rotvec = rotvec * MIRROR
    return Rotation.from_rotvec(rotvec).as_euler(order, degrees=True)


def _within(values: np.ndarray, name: str, scale: float = 1.0) -> bool:
    lo, hi = RANGES_OF_MOTION[name]
    return bool(((values >= scale * lo - TOL) & (values <= scale * hi + TOL)).all())


@pytest.fixture(scope="module")
def samples():
    return PoseSampler().sample(3000, torch.Generator().manual_seed(7))


def test_samples_respect_ranges_of_motion(samples):
    pose, activity = samples
    assert pose.shape == (3000, 72) and pose.dtype == torch.float32
    assert torch.isfinite(pose).all() and (pose[:, :3] == 0).all()
    assert set(activity.unique().tolist()) == set(range(len(ACTIVITIES)))
    for side in ("left", "right"):
        knee = pose[:, 3 * J[f"{side}_knee"]:3 * J[f"{side}_knee"] + 3]
        assert knee[:, 1:].abs().max() < 1e-5  # a hinge: about x only
        assert _within(np.degrees(knee[:, 0].numpy()), "knee_flexion")
        hip = _decompose(pose, f"{side}_hip", "XZY")  # R = Rx(-flexion) Rz(abduction) Ry(external)
        assert _within(-hip[:, 0], "hip_flexion") and _within(hip[:, 1], "hip_abduction")
        assert _within(hip[:, 2], "hip_external_rotation")
        elbow = _decompose(pose, f"{side}_elbow", "YXZ")  # Ry(-flexion) Rx(-supination)
        assert _within(-elbow[:, 0], "elbow_flexion") and _within(-elbow[:, 1], "forearm_supination")
        assert np.abs(elbow[:, 2]).max() < TOL
        ankle = _decompose(pose, f"{side}_ankle", "XZY")  # Rx(-dorsiflexion) Rz(-inversion)
        assert _within(-ankle[:, 0], "ankle_dorsiflexion") and _within(-ankle[:, 1], "ankle_inversion")
        # the upper arm's direction: elevation from hanging, limited by its plane
        rotvec = pose[:, 3 * J[f"{side}_shoulder"]:3 * J[f"{side}_shoulder"] + 3].double().numpy()
        if side == "right":
            rotvec = rotvec * MIRROR
        direction = Rotation.from_rotvec(rotvec).apply([1.0, 0.0, 0.0])
        elevation = np.degrees(np.arccos(np.clip(-direction[:, 1], -1, 1)))
        plane = np.degrees(np.arctan2(direction[:, 2], direction[:, 0]))
        limit = shoulder_max_elevation(torch.from_numpy(plane)).numpy()
        lifted = elevation > 5.0  # the plane is undefined for an arm hanging straight down
        assert (elevation[lifted] <= limit[lifted] + TOL).all()
        assert elevation.max() > 120  # raised arms do occur
    spine = np.stack([_decompose(pose, s, "XZY") for s in ("spine1", "spine2", "spine3")])
    total_flexion = spine[:, :, 0].sum(0)
    assert _within(total_flexion, "spine_flexion")
    assert total_flexion.max() > 40  # bending and crouching are sampled


def test_sampler_is_deterministic_per_seed():
    a = sample_poses(64, 3)
    assert torch.equal(a, sample_poses(64, torch.Generator().manual_seed(3)))
    assert torch.equal(a, sample_poses(64, 3))
    assert not torch.equal(a, sample_poses(64, 4))


def test_sampler_correlations(samples):
    pose, activity = samples
    spine1, spine3 = pose[:, 3 * J["spine1"]], pose[:, 3 * J["spine3"]]
    assert np.corrcoef(spine1.numpy(), spine3.numpy())[0, 1] > 0.9  # one shared bend
    walking = activity == ACTIVITIES.index("walking")
    left_hip = -_decompose(pose[walking], "left_hip", "XZY")[:, 0]
    right_hip = -_decompose(pose[walking], "right_hip", "XZY")[:, 0]
    assert np.corrcoef(left_hip, right_hip)[0, 1] < -0.7  # legs in anti-phase
    sitting = activity == ACTIVITIES.index("sitting")
    assert (-_decompose(pose[sitting], "left_hip", "XZY")[:, 0]).mean() > 60


def test_sampler_rejects_bad_weights():
    with pytest.raises(ValueError, match="unknown activities.*standing"):
        PoseSampler({"flying": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        PoseSampler({"standing": 0.0})
    only_sitting = PoseSampler({"sitting": 1.0}).sample(10, torch.Generator().manual_seed(0))[1]
    assert (only_sitting == ACTIVITIES.index("sitting")).all()


def test_kl_divergence_by_hand():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, np.log(2.0)]])
    expected = 0.5 * (1.0 + 1.0 - 1.0 - 0.0) + 0.5 * (0.0 + 2.0 - 1.0 - np.log(2.0))
    assert kl_divergence(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).tolist() == [0.0, 0.0, 0.0]


def test_encoder_accepts_every_pose_format():
    torch.manual_seed(0)
    encoder = PosePriorEncoder().eval()
    pose = sample_poses(4, 0)
    pose[:, :3] = torch.randn(4, 3)  # the global orientation must be ignored
    mu, logvar = encoder(pose)
    assert mu.shape == logvar.shape == (4, 32)
    rotmat = torch.from_numpy(Rotation.from_rotvec(pose.reshape(-1, 3).double().numpy()).as_matrix())
    rotmat = rotmat.float().reshape(4, 24, 3, 3)
    for other in (pose[:, 3:], pose.reshape(4, 24, 3), rotmat, rotmat[:, 1:]):
        assert torch.allclose(encoder(other)[0], mu, atol=1e-4)
    with pytest.raises(ValueError, match="Bx72"):
        encoder(torch.zeros(4, 70))


def test_vae_losses_and_gradient_to_the_pose():
    vae = PoseVAE()
    terms = vae.losses(sample_poses(8, 0))
    assert terms["reconstruction"] > 0 and terms["kl"] > 0
    encoder = load_pose_prior()
    pose = sample_poses(4, 1).requires_grad_(True)
    encoder.kl(pose).sum().backward()
    assert pose.grad[:, 3:].abs().sum() > 0  # usable as a loss on a predicted pose
    assert all(not p.requires_grad for p in encoder.parameters())  # the prior itself is frozen


def test_shipped_prior_prefers_plausible_poses():
    assert DEFAULT_PRIOR_PATH.stat().st_size < 1_000_000
    encoder = load_pose_prior()
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        plausible = encoder.kl(sample_poses(500, g))
        random = encoder.kl(random_rotation_poses(500, g))
    assert plausible.mean() * 3 < random.mean()
    assert (plausible.median() < random.quantile(0.05))


def test_load_pose_prior_errors(tmp_path):
    missing = tmp_path / "nothing.pt"
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_pose_prior(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(PosePriorError, match="corrupt.pt"):
        load_pose_prior(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"something": 1}, foreign)
    with pytest.raises(PosePriorError, match="not a pose prior"):
        load_pose_prior(foreign)


def test_save_and_load_round_trip(tmp_path):
    encoder = PosePriorEncoder()
    encoder.set_input_statistics(sample_poses(64, 0))
    path = save_pose_prior(encoder, tmp_path / "p.pt", {"note": "test"})
    loaded = load_pose_prior(path)
    pose = sample_poses(3, 5)
    assert torch.allclose(loaded.kl(pose), encoder.kl(pose))
    assert loaded.training_info == {"note": "test"}


def test_smplh_rows_keep_the_body_and_zero_smpl_hands():
    rows = np.arange(2 * 156, dtype=np.float64).reshape(2, 156)
    out = smpl_poses_from_array(rows, "x.npz")
    assert out.shape == (2, 72)
    assert np.array_equal(out[:, :66], rows[:, :66]) and (out[:, 66:] == 0).all()
    with pytest.raises(ValueError, match="x.npz"):
        smpl_poses_from_array(np.zeros((2, 30)), "x.npz")


def test_train_prior_on_amass_style_files(tmp_path, capsys):
    folder = tmp_path / "amass" / "subject"
    folder.mkdir(parents=True)
    poses = np.zeros((40, 156), dtype=np.float32)
    poses[:, :72] = sample_poses(40, 2).numpy()
    np.savez(folder / "clip_poses.npz", poses=poses, mocap_framerate=120.0)
    np.savez(folder / "shape.npz", betas=np.zeros(16))  # AMASS's per-subject file: skipped
    out = tmp_path / "prior.pt"
    assert train_prior_main(["--amass", str(tmp_path / "amass"), "--steps", "5", "--batch-size", "16",
                             "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction" in printed and "KL" in printed and "40 poses" in printed
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"format", "version", "config", "encoder", "training"}
    assert all(not k.startswith("decoder") for k in saved["encoder"])
    assert set(saved["encoder"]) == set(PosePriorEncoder().state_dict())
    assert load_pose_prior(out).kl(sample_poses(2, 0)).shape == (2,)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        train_prior_main(["--amass", str(tmp_path / "no_such_dir"), "--steps", "1", "--out", str(out)])
