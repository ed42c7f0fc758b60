"""SMPLify-style fitting: cameras, reprojection, and a fit that improves on a perturbed start.

Uses the real `BodyModel` on a tiny SMPL-format file written here (48 vertices, two per joint on a
plausible skeleton), so the fits are quick and independent of the shipped model file.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from hkmr_ros.skeleton import SMPL_PARENTS
from training.body.body_model import load_body_model
from training.body.joint_sets import SMPLX_VERTEX_ID_KEYS
from training.config import SmplifyConfig
from training.smplify import (
    SMPLify,
    build_smplify,
    estimate_translation,
    perspective_project,
    translation_to_weak_perspective,
    weak_perspective_to_translation,
)

# SMPL's rest joints, roughly (metres, y up, +x = the body's left)
REST_JOINTS = np.array([
    [0.0, 0.0, 0.0], [0.07, -0.08, 0.0], [-0.07, -0.08, 0.0], [0.0, 0.1, -0.02],
    [0.1, -0.45, 0.01], [-0.1, -0.45, 0.01], [0.0, 0.22, 0.0], [0.1, -0.85, -0.03],
    [-0.1, -0.85, -0.03], [0.0, 0.28, 0.02], [0.11, -0.9, 0.1], [-0.11, -0.9, 0.1],
    [0.0, 0.5, 0.0], [0.07, 0.42, 0.0], [-0.07, 0.42, 0.0], [0.0, 0.62, 0.04],
    [0.17, 0.44, -0.01], [-0.17, 0.44, -0.01], [0.44, 0.42, -0.03], [-0.44, 0.42, -0.03],
    [0.69, 0.43, -0.02], [-0.69, 0.43, -0.02], [0.78, 0.42, -0.02], [-0.78, 0.42, -0.02],
])


def write_tiny_smpl(path: Path, seed: int = 0) -> Path:
    """A 48-vertex SMPL-format npz that `load_body_model` accepts: two vertices per joint."""
    rng = np.random.default_rng(seed)
    offsets = np.array([[0.0, 0.0, 0.03], [0.0, 0.0, -0.03]])
    v_template = (REST_JOINTS[:, None, :] + offsets[None]).reshape(48, 3)
    weights = np.repeat(np.eye(24), 2, axis=0)  # each vertex follows its joint
    j_regressor = weights.T / 2.0
    head, l_foot, r_foot, l_hand, r_hand = 15, 10, 11, 22, 23
    ids = {"nose": 2 * head, "reye": 2 * head, "leye": 2 * head, "rear": 2 * head + 1, "lear": 2 * head + 1,
           "LBigToe": 2 * l_foot, "LSmallToe": 2 * l_foot, "LHeel": 2 * l_foot + 1,
           "RBigToe": 2 * r_foot, "RSmallToe": 2 * r_foot, "RHeel": 2 * r_foot + 1}
    ids.update({k: 2 * (l_hand if k.startswith("l") else r_hand) for k in SMPLX_VERTEX_ID_KEYS if k not in ids})
    np.savez(
        path,
        v_template=v_template,
        shapedirs=rng.normal(scale=0.01, size=(48, 3, 10)),
        posedirs=np.zeros((48, 3, 207)),
        J_regressor=j_regressor,
        weights=weights,
        kintree_table=np.array([[max(p, 0) if j else 4294967295 for j, p in enumerate(SMPL_PARENTS)],
                                list(range(24))], dtype=np.int64),
        f=np.array([[2 * j, 2 * j + 1, 2 * SMPL_PARENTS[j]] for j in range(1, 24)]),
        vertex_ids_head_top=np.array(2 * head),
        **{f"vertex_ids_{k}": np.array(v) for k, v in ids.items()},
    )
    return path


@pytest.fixture(scope="module")
def body_model(tmp_path_factory):
    return load_body_model(write_tiny_smpl(tmp_path_factory.mktemp("body") / "tiny_smpl.npz"))


def keypoints_of(fitter: SMPLify, pose, betas, translation):
    """spin24 keypoints (normalised crop coordinates, confidence 1) of a body seen by the camera."""
    joints = fitter.model_joints(pose, betas)
    px = perspective_project(joints, translation, fitter.focal_length, fitter.image_res)
    uv = 2.0 * px / fitter.image_res - 1.0
    return torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)


def test_weak_perspective_translation_round_trip():
    cam = torch.tensor([[0.9, 0.1, -0.2], [1.3, -0.05, 0.3], [0.4, 0.0, 0.0]])
    t = weak_perspective_to_translation(cam, 5000.0, 224)
    assert torch.allclose(translation_to_weak_perspective(t, 5000.0, 224), cam, atol=1e-6)
    assert torch.all(t[:, 2] > 0)


def test_translation_projects_a_fronto_parallel_body_like_the_weak_perspective_camera():
    # Points at depth 0 (a plane facing the camera): the perspective camera at the equivalent
    # translation projects them exactly where the weak-perspective camera does.
    from training.geometry import weak_perspective_project

    points = torch.randn(2, 24, 3) * 0.5
    points[..., 2] = 0.0
    cam = torch.tensor([[0.8, 0.1, -0.1], [1.1, -0.2, 0.05]])
    t = weak_perspective_to_translation(cam, 5000.0, 224)
    px = perspective_project(points, t, 5000.0, 224)
    assert torch.allclose(2.0 * px / 224 - 1.0, weak_perspective_project(points, cam), atol=1e-5)


def test_estimate_translation_recovers_the_camera():
    joints = torch.randn(3, 24, 3) * 0.4
    t = torch.tensor([[0.1, -0.2, 12.0], [0.0, 0.3, 20.0], [-0.3, 0.1, 8.0]])
    px = perspective_project(joints, t, 5000.0, 224)
    keypoints = torch.cat([px, torch.ones(3, 24, 1)], -1)
    assert torch.allclose(estimate_translation(joints, keypoints, 5000.0, 224), t, rtol=1e-3, atol=1e-3)


def fit_problem(n: int, seed: int = 0):
    """Ground-truth bodies and keypoints, and a perturbed starting estimate."""
    g = torch.Generator().manual_seed(seed)
    gt_pose = torch.randn(n, 72, generator=g) * 0.2
    gt_pose[:, :3] = torch.tensor([np.pi, 0.0, 0.0])  # SPIN's frame: the camera sees the front
    gt_betas = torch.randn(n, 10, generator=g) * 0.5
    gt_cam = torch.tensor([[0.9, 0.05, -0.05]]).repeat(n, 1)
    init_pose = gt_pose + torch.randn(n, 72, generator=g) * 0.25
    init_cam = gt_cam * torch.tensor([1.15, 1.0, 1.0]) + torch.tensor([0.0, 0.05, 0.03])
    return gt_pose, gt_betas, gt_cam, init_pose, torch.zeros(n, 10), init_cam


def test_fit_reduces_the_reprojection_loss(body_model):
    fitter = SMPLify(body_model, None, camera_iters=20, body_iters=60, lr=0.02)
    gt_pose, gt_betas, gt_cam, pose, betas, cam = fit_problem(3)
    gt_t = weak_perspective_to_translation(gt_cam, fitter.focal_length, fitter.image_res)
    keypoints = keypoints_of(fitter, gt_pose, gt_betas, gt_t)
    start = fitter.fitting_loss(pose, betas, weak_perspective_to_translation(
        cam, fitter.focal_length, fitter.image_res), keypoints)
    fit = fitter(pose, betas, cam, keypoints)
    assert fit.pose.shape == (3, 72) and fit.betas.shape == (3, 10) and fit.cam.shape == (3, 3)
    assert torch.all(fit.reprojection_loss < 0.3 * start), (start, fit.reprojection_loss)
    # the reported loss is that of the returned parameters
    again = fitter.fitting_loss(fit.pose, fit.betas, fit.translation, keypoints)
    assert torch.allclose(again, fit.reprojection_loss)
    assert torch.allclose(fit.cam, translation_to_weak_perspective(fit.translation, 5000.0, 224))


def test_samples_are_fitted_independently(body_model):
    fitter = SMPLify(body_model, None, camera_iters=5, body_iters=10)
    gt_pose, gt_betas, gt_cam, pose, betas, cam = fit_problem(3, seed=1)
    t = weak_perspective_to_translation(gt_cam, fitter.focal_length, fitter.image_res)
    keypoints = keypoints_of(fitter, gt_pose, gt_betas, t)
    together = fitter(pose, betas, cam, keypoints)
    alone = fitter(pose[1:2], betas[1:2], cam[1:2], keypoints[1:2])
    assert torch.allclose(together.pose[1:2], alone.pose, atol=1e-5)
    assert torch.allclose(together.translation[1:2], alone.translation, atol=1e-4)
    # a sample's fit is not just its start: the other samples' presence is what must not matter
    assert not torch.allclose(alone.pose, pose[1:2], atol=1e-4)


def test_prior_encoder_kl_is_used_on_the_body_pose(body_model):
    seen = []

    class RecordingPrior(torch.nn.Module):
        def kl(self, body_pose):
            seen.append(body_pose.shape)
            return (body_pose ** 2).sum(-1)

    fitter = SMPLify(body_model, RecordingPrior(), camera_iters=1, body_iters=3)
    _, _, _, pose, betas, cam = fit_problem(2)
    fitter(pose, betas, cam, torch.zeros(2, 24, 3))
    assert seen == [torch.Size([2, 69])] * 3


def test_build_smplify_takes_the_config(body_model):
    cfg = SmplifyConfig(camera_iters=3, body_iters=4, focal_length=1000.0, image_res=128)
    fitter = build_smplify(cfg, body_model)
    assert (fitter.camera_iters, fitter.body_iters, fitter.focal_length, fitter.image_res) == (3, 4, 1000.0, 128)
