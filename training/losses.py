"""The losses of the paper's section 3.3 (equation 3), with per-sample masks.

    L = sum_t  lambda_smpl L_smpl^t + lambda_3D L_3D^t + lambda_2D L_2D^t + lambda_KL L_KL^t

over the T outer iterations of the regressor. Every term is a mean over the annotations that
exist: a sample without SMPL ground truth adds nothing to L_smpl and does not count in its
normaliser, an invisible keypoint adds nothing to L_2D, and so on. When nothing in a batch is
annotated for a term, the term is exactly zero (never NaN).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from training.config import LossConfig
from training.geometry import aa_to_rotmat, weak_perspective_project

# spin24 indices: the pelvis, and the right and left hips (LSP order)
SPIN24_PELVIS = 14
SPIN24_HIPS = (2, 3)
# normalisers are clamped here, so an all-masked term is 0 / EPS = 0
EPS = 1e-8


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * v) / sum(w) over all entries, 0 where every weight is 0. Shapes broadcast."""
    weights = weights.expand_as(values)
    return (weights * values).sum() / weights.sum().clamp(min=EPS)


def keypoint_2d_loss(pred_2d: torch.Tensor, gt_2d: torch.Tensor) -> torch.Tensor:
    """L1 between projected and annotated 2D keypoints, weighted by visibility.

    pred_2d: BxJx2, gt_2d: BxJx3 (x, y, visibility in [0, 1]), normalised crop coordinates.
    Returns the mean absolute error per visible coordinate (scalar).
    """
    visibility = gt_2d[..., 2:3]
    return _masked_mean((pred_2d - gt_2d[..., :2]).abs(), visibility)


def pelvis_centre(joints: torch.Tensor, use_pelvis: torch.Tensor) -> torch.Tensor:
    """Root of the alignment, Bx3: spin24's pelvis (14) where `use_pelvis` (B bool), else the
    midpoint of the hips (2, 3). joints: BxJx3 (spin24 order)."""
    hips = 0.5 * (joints[:, SPIN24_HIPS[0]] + joints[:, SPIN24_HIPS[1]])
    return torch.where(use_pelvis[:, None], joints[:, SPIN24_PELVIS], hips)


def joints_3d_loss(pred_3d: torch.Tensor, gt_3d: torch.Tensor, has_3d: torch.Tensor) -> torch.Tensor:
    """L1 between pelvis-aligned 3D joints, weighted by confidence, for samples with 3D truth.

    pred_3d: BxJx3, gt_3d: BxJx4 (metres + confidence), has_3d: B (0/1), spin24 order.
    Both skeletons are centred on the annotated pelvis (14); where the pelvis has zero
    confidence, on the midpoint of the hips (2, 3) if both are annotated; a sample with
    neither cannot be aligned and is left out. Returns the mean absolute error per confident
    coordinate (scalar, metres).
    """
    conf = gt_3d[..., 3]
    has_pelvis = conf[:, SPIN24_PELVIS] > 0
    has_hips = (conf[:, SPIN24_HIPS[0]] > 0) & (conf[:, SPIN24_HIPS[1]] > 0)
    sample_weight = has_3d.to(conf.dtype) * (has_pelvis | has_hips).to(conf.dtype)
    gt = gt_3d[..., :3] - pelvis_centre(gt_3d[..., :3], has_pelvis)[:, None]
    pred = pred_3d - pelvis_centre(pred_3d, has_pelvis)[:, None]
    weights = (conf * sample_weight[:, None])[..., None]
    return _masked_mean((pred - gt).abs(), weights)


def smpl_param_loss(pred_rotmat: torch.Tensor, pred_betas: torch.Tensor, gt_pose: torch.Tensor,
                    gt_betas: torch.Tensor, has_smpl: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2 on the SMPL parameters where SMPL ground truth exists.

    pred_rotmat: Bx24x3x3, pred_betas: Bx10, gt_pose: Bx72 axis-angle, gt_betas: Bx10,
    has_smpl: B (0/1). Returns (pose term, betas term): mean squared error per rotation-matrix
    entry and per shape coefficient, averaged over the samples that have SMPL.
    """
    gt_rotmat = aa_to_rotmat(gt_pose.reshape(-1, 24, 3))
    mask = has_smpl.to(pred_rotmat.dtype)
    pose_term = _masked_mean((pred_rotmat - gt_rotmat).pow(2).flatten(1), mask[:, None])
    betas_term = _masked_mean((pred_betas - gt_betas).pow(2), mask[:, None])
    return pose_term, betas_term


def prior_kl_loss(prior: Optional[nn.Module], pose: torch.Tensor) -> torch.Tensor:
    """KL(q(z | pose) || N(0, I)) of the VAE encoder, mean over the batch (0 without a prior).

    pose: Bx24x3x3 rotation matrices or Bx72 axis-angle (any format the encoder accepts).
    """
    if prior is None:
        return pose.new_zeros(())
    return prior.kl(pose).mean()


def hkmr_loss(outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor], body_model: nn.Module,
              prior: Optional[nn.Module], weights: LossConfig) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Equation (3): the weighted losses summed over the T outer iterations.

    outputs: the regressor's dict (`rotmat` BxTx24x3x3, `betas` BxTx10, `cam` BxTx3).
    batch: the dataset's dict (`keypoints_2d` Bx24x3, `joints_3d` Bx24x4, `pose` Bx72,
    `betas` Bx10, `has_smpl` B, `has_joints_3d` B). body_model: `forward(pose, betas)` and
    `joint_set('spin24', out)`. prior: a `PosePriorEncoder` or None (no KL term).
    Returns (total, terms): `terms` holds each unweighted term summed over T (detached) and
    `<term>_last`, its value at the last iteration.
    """
    rotmat, betas, cam = outputs["rotmat"], outputs["betas"], outputs["cam"]
    b, t = rotmat.shape[:2]
    body = body_model(rotmat.reshape(b * t, 24, 3, 3), betas.reshape(b * t, -1))
    joints = body_model.joint_set("spin24", body).reshape(b, t, -1, 3)
    total = rotmat.new_zeros(())
    sums: Dict[str, torch.Tensor] = {}
    last: Dict[str, torch.Tensor] = {}
    for i in range(t):
        pose_term, betas_term = smpl_param_loss(rotmat[:, i], betas[:, i], batch["pose"], batch["betas"],
                                                batch["has_smpl"])
        terms = {
            "smpl_pose": pose_term,
            "smpl_betas": betas_term,
            "joints_3d": joints_3d_loss(joints[:, i], batch["joints_3d"], batch["has_joints_3d"]),
            "keypoints_2d": keypoint_2d_loss(weak_perspective_project(joints[:, i], cam[:, i]),
                                             batch["keypoints_2d"]),
            "kl": prior_kl_loss(prior, rotmat[:, i]),
        }
        total = total + (weights.lambda_smpl * terms["smpl_pose"] + weights.lambda_betas * terms["smpl_betas"]
                         + weights.lambda_3d * terms["joints_3d"]
                         + weights.lambda_2d * terms["keypoints_2d"]
                         + weights.lambda_kl * terms["kl"])
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value.detach()
            last[f"{name}_last"] = value.detach()
    return total, {**sums, **last}
