"""Losses of equation (3): hand-computed values, masks, summation over outer iterations."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from training.config import LossConfig
from training.geometry import aa_to_rotmat
from training.losses import (
    hkmr_loss,
    joints_3d_loss,
    keypoint_2d_loss,
    prior_kl_loss,
    smpl_param_loss,
)


class StandInBodyModel(nn.Module):
    """Joints that depend on every joint's rotation and on the betas, without a mesh."""

    def __init__(self):
        super().__init__()
        self.register_buffer("offsets", torch.linspace(-1, 1, 24 * 3).reshape(24, 3))

    def forward(self, pose, betas):
        joints = (pose @ self.offsets[..., None])[..., 0] * 0.3 + betas[:, None, :3] * 0.1
        return SimpleNamespace(joints=joints)

    def joint_set(self, name, out):
        assert name == "spin24"
        return out.joints


class StandInPrior(nn.Module):
    """KL = squared distance of the rotations from the identity (known by hand)."""

    def kl(self, pose):
        eye = torch.eye(3).expand_as(pose)
        return (pose - eye).pow(2).flatten(1).sum(-1)


def _batch(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, 24, 3, generator=g) * 2 - 1
    kp[..., 2] = 1.0
    j3 = torch.rand(b, 24, 4, generator=g)
    j3[..., 3] = 1.0
    return {
        "keypoints_2d": kp, "joints_3d": j3,
        "pose": torch.randn(b, 72, generator=g) * 0.3, "betas": torch.randn(b, 10, generator=g),
        "has_smpl": torch.ones(b), "has_joints_3d": torch.ones(b),
    }


def _outputs(b=3, t=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(b, t, 72, generator=g) * 0.3
    return {
        "rotmat": aa_to_rotmat(pose.reshape(b, t, 24, 3)), "pose": pose,
        "betas": torch.randn(b, t, 10, generator=g), "cam": torch.rand(b, t, 3, generator=g) + 0.5,
    }


def test_keypoint_2d_loss_by_hand():
    pred = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]]])
    gt = torch.tensor([[[1.0, 0.0, 1.0], [5.0, 5.0, 0.0], [0.0, 0.5, 0.5]]])
    # visible joint 0: |0-1| + |0-0| (weight 1 each), joint 1 invisible, joint 2: 0.5 * (0.5 + 0)
    expected = (1.0 + 0.0 + 0.5 * 0.5) / (1 + 1 + 0.5 + 0.5)
    assert keypoint_2d_loss(pred, gt).item() == pytest.approx(expected)


def test_joints_3d_loss_aligns_on_pelvis_by_hand():
    gt = torch.zeros(1, 24, 4)
    gt[..., 3] = 1.0
    gt[0, 14, :3] = torch.tensor([1.0, 2.0, 3.0])  # pelvis
    gt[0, 0, :3] = torch.tensor([1.0, 1.0, 3.0])  # one joint 1 m below the pelvis
    pred = gt[..., :3] + torch.tensor([10.0, -4.0, 7.0])  # a global shift only ...
    assert joints_3d_loss(pred, gt, torch.ones(1)).item() == pytest.approx(0.0, abs=1e-6)
    pred[0, 0, 0] += 0.6  # ... plus a 0.6 m error on one coordinate of one joint
    assert joints_3d_loss(pred, gt, torch.ones(1)).item() == pytest.approx(0.6 / (24 * 3))


def test_joints_3d_loss_uses_hips_without_pelvis():
    gt = torch.zeros(1, 24, 4)
    gt[..., 3] = 1.0
    gt[0, 14, 3] = 0.0  # pelvis not annotated
    gt[0, 2, :3] = torch.tensor([-0.1, 0.0, 0.0])
    gt[0, 3, :3] = torch.tensor([0.1, 0.0, 0.0])
    pred = gt[..., :3].clone()
    pred[0, 14] = torch.tensor([5.0, 5.0, 5.0])  # a wild pelvis must not move the alignment
    pred = pred + 1.0
    # only joint 14 differs after centring on the hips, but its confidence is 0
    assert joints_3d_loss(pred, gt, torch.ones(1)).item() == pytest.approx(0.0, abs=1e-6)
    # centred on the pelvis instead, every joint would be off by 4 m per coordinate
    pred[0, 0, 1] += 0.3
    assert joints_3d_loss(pred, gt, torch.ones(1)).item() == pytest.approx(0.3 / (23 * 3))


def test_smpl_param_loss_by_hand():
    pred_rotmat = torch.eye(3).expand(1, 24, 3, 3).clone()
    gt_pose = torch.zeros(1, 72)
    gt_pose[0, 5 * 3 + 2] = math.pi / 2  # joint 5: 90 deg about z
    pred_betas = torch.zeros(1, 10)
    gt_betas = torch.zeros(1, 10)
    gt_betas[0, 3] = 2.0
    pose_term, betas_term = smpl_param_loss(pred_rotmat, pred_betas, gt_pose, gt_betas, torch.ones(1))
    # Rz(90) - I = [[-1,-1,0],[1,-1,0],[0,0,0]]: squared sum 4 over 24 * 9 entries
    assert pose_term.item() == pytest.approx(4.0 / 216, rel=1e-5)
    assert betas_term.item() == pytest.approx(4.0 / 10)


def test_masked_samples_contribute_nothing():
    batch, out = _batch(b=2), _outputs(b=2, t=1)
    rot, betas = out["rotmat"][:, 0], out["betas"][:, 0]
    pred2d, pred3d = torch.randn(2, 24, 2), torch.randn(2, 24, 3)
    alone = smpl_param_loss(rot[:1], betas[:1], batch["pose"][:1], batch["betas"][:1], torch.ones(1))
    bad = batch["pose"].clone()
    bad[1] += 5.0  # wild ground truth on the sample without SMPL
    masked = smpl_param_loss(rot, betas, bad, batch["betas"], torch.tensor([1.0, 0.0]))
    for a, m in zip(alone, masked):
        assert m.item() == pytest.approx(a.item())
    alone3d = joints_3d_loss(pred3d[:1], batch["joints_3d"][:1], torch.ones(1))
    masked3d = joints_3d_loss(pred3d, batch["joints_3d"], torch.tensor([1.0, 0.0]))
    assert masked3d.item() == pytest.approx(alone3d.item())
    kp = batch["keypoints_2d"].clone()
    kp[1, :, 2] = 0.0
    assert keypoint_2d_loss(pred2d, kp).item() == pytest.approx(
        keypoint_2d_loss(pred2d[:1], kp[:1]).item())


def test_all_masked_batch_gives_zero_and_finite_gradients():
    batch = _batch(b=2)
    batch["has_smpl"].zero_()
    batch["has_joints_3d"].zero_()
    batch["keypoints_2d"][..., 2] = 0.0
    out = _outputs(b=2, t=3)
    for value in out.values():
        value.requires_grad_(True)
    total, terms = hkmr_loss(out, batch, StandInBodyModel(), None, LossConfig())
    assert total.item() == 0.0
    for name in ("smpl_pose", "smpl_betas", "joints_3d", "keypoints_2d", "kl"):
        assert terms[name].item() == 0.0, name
    total.backward()
    for name in ("rotmat", "betas", "cam"):
        assert torch.isfinite(out[name].grad).all(), name


def test_zero_when_prediction_equals_ground_truth():
    body = StandInBodyModel()
    b = 2
    pose = torch.randn(b, 72, generator=torch.Generator().manual_seed(3)) * 0.3
    betas = torch.randn(b, 10)
    cam = torch.tensor([[0.9, 0.1, -0.2], [1.1, 0.0, 0.05]])
    rotmat = aa_to_rotmat(pose.reshape(b, 24, 3))
    joints = body.joint_set("spin24", body(rotmat, betas))
    kp = torch.cat([cam[:, None, :1] * joints[..., :2] + cam[:, None, 1:], torch.ones(b, 24, 1)], -1)
    batch = {"keypoints_2d": kp, "joints_3d": torch.cat([joints + 3.0, torch.ones(b, 24, 1)], -1),
             "pose": pose, "betas": betas, "has_smpl": torch.ones(b), "has_joints_3d": torch.ones(b)}
    out = {"rotmat": rotmat[:, None], "pose": pose[:, None], "betas": betas[:, None], "cam": cam[:, None]}
    total, terms = hkmr_loss(out, batch, body, None, LossConfig())
    assert total.item() == pytest.approx(0.0, abs=1e-5)
    assert terms["joints_3d"].item() == pytest.approx(0.0, abs=1e-6)  # a global shift is aligned away


def test_hkmr_loss_sums_weighted_terms_over_iterations():
    batch, body, prior = _batch(), StandInBodyModel(), StandInPrior()
    weights = LossConfig(lambda_smpl=2.0, lambda_3d=3.0, lambda_2d=4.0, lambda_kl=0.5, lambda_betas=0.7)
    out = _outputs(t=3)
    total, terms = hkmr_loss(out, batch, body, prior, weights)
    expected = 0.0
    names = ("smpl_pose", "smpl_betas", "joints_3d", "keypoints_2d", "kl")
    per_step_sum = {n: 0.0 for n in names}
    for i in range(3):
        single = {k: v[:, i:i + 1] for k, v in out.items()}
        step_total, step_terms = hkmr_loss(single, batch, body, prior, weights)
        expected += step_total.item()
        for n in names:
            per_step_sum[n] += step_terms[n].item()
        by_hand = (2.0 * step_terms["smpl_pose"] + weights.lambda_betas * step_terms["smpl_betas"]
                   + 3.0 * step_terms["joints_3d"] + 4.0 * step_terms["keypoints_2d"] + 0.5 * step_terms["kl"])
        assert step_total.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    for n in names:
        assert terms[n].item() == pytest.approx(per_step_sum[n], rel=1e-5)
        assert terms[n].item() > 0
    # the last iteration's terms are reported on their own
    last = {k: v[:, 2:3] for k, v in out.items()}
    assert terms["kl_last"].item() == pytest.approx(hkmr_loss(last, batch, body, prior, weights)[1]["kl"].item())


def test_prior_kl_loss_by_hand_and_without_prior():
    rot = torch.eye(3).expand(2, 24, 3, 3).clone()
    rot[1, 4] = -torch.eye(3)  # squared distance from identity: 3 * 4 = 12
    assert prior_kl_loss(StandInPrior(), rot).item() == pytest.approx(6.0)
    assert prior_kl_loss(None, rot).item() == 0.0


def test_gradients_reach_every_prediction():
    out = _outputs(t=2)
    for value in out.values():
        value.requires_grad_(True)
    total, _ = hkmr_loss(out, _batch(), StandInBodyModel(), StandInPrior(), LossConfig())
    total.backward()
    for name in ("rotmat", "betas", "cam"):
        grad = out[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
        assert (grad[:, 0].abs().sum() > 0) and (grad[:, 1].abs().sum() > 0), name
