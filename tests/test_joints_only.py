"""The joints-only body path equals the full body model's joints (every joint set), with and without
pose blend shapes, and its gradients agree too."""
from __future__ import annotations

import pytest
import torch

from training.body.body_model import load_body_model
from training.body.joint_sets import JOINT_SETS
from training.body.joints_only import JointsOnlyBody
from training.geometry import aa_to_rotmat


@pytest.fixture(scope="module")
def body_model():
    torch.set_num_threads(1)
    model = load_body_model()
    model.requires_grad_(False)
    return model


def random_body(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return aa_to_rotmat(0.6 * torch.randn(n, 24, 3, generator=g)), torch.randn(n, 10, generator=g)


def assert_same_joints(full, fast, rotmat, betas):
    a, b = full(rotmat, betas), fast(rotmat, betas)
    for name in JOINT_SETS:
        ja, jb = full.joint_set(name, a), fast.joint_set(name, b)
        assert ja.shape == jb.shape
        assert torch.allclose(ja, jb, atol=2e-5), (name, float((ja - jb).abs().max()))
    assert torch.allclose(a.joints, b.joints, atol=2e-5)


def test_joints_only_equals_full_model(body_model):
    fast = JointsOnlyBody(body_model)
    assert not fast.has_pose_blendshapes  # anny-smpl: zero pose blend shapes
    rotmat, betas = random_body(8, 0)
    assert_same_joints(body_model, fast, rotmat, betas)
    pose = 0.5 * torch.randn(3, 72, generator=torch.Generator().manual_seed(1))  # axis-angle input
    assert_same_joints(body_model, fast, pose, torch.zeros(3, 10))


def test_joints_only_with_pose_blendshapes(body_model):
    """An SMPL-like file (non-zero posedirs): the keypoint vertices take their blend shape rows."""
    model = load_body_model()
    g = torch.Generator().manual_seed(2)
    model.smpl.posedirs.copy_(0.01 * torch.randn(model.smpl.posedirs.shape, generator=g))
    fast = JointsOnlyBody(model)
    assert fast.has_pose_blendshapes
    rotmat, betas = random_body(4, 3)
    assert_same_joints(model, fast, rotmat, betas)


def test_joints_only_gradients_match(body_model):
    fast = JointsOnlyBody(body_model)
    rotmat, betas = random_body(4, 4)
    grads = []
    for model in (body_model, fast):
        r, b = rotmat.clone().requires_grad_(True), betas.clone().requires_grad_(True)
        (model.joint_set("spin24", model(r, b)) ** 2).sum().backward()
        grads.append((r.grad, b.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-4)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-4)


def test_bad_shapes_raise(body_model):
    fast = JointsOnlyBody(body_model)
    with pytest.raises(ValueError, match="betas"):
        fast(torch.zeros(1, 72), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="pose"):
        fast(torch.zeros(1, 70), torch.zeros(1, 10))
    with pytest.raises(ValueError, match="unknown joint set"):
        fast.joint_set("nope", fast(torch.zeros(1, 72), torch.zeros(1, 10)))
