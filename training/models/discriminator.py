"""HMR's pose and shape discriminator (Kanazawa et al. 2018), for the paper's "Discriminator
instead of VAE prior" ablation, and its least-squares GAN losses.

Body-joint rotation matrices (23 joints, no global orientation) go through a per-joint shared
1x1 convolution (9 -> 32 -> 32); 23 joint-specific heads score each joint, a full-pose MLP
(23*32 -> 1024 -> 1024 -> 1) scores the whole pose, a shape MLP (10 -> 10 -> 5 -> 1) the betas.
"""
from __future__ import annotations

import torch
from torch import nn

from training.body.chains import NUM_JOINTS
from training.models.mean_params import NUM_BETAS

NUM_BODY_JOINTS = NUM_JOINTS - 1
NUM_LOGITS = NUM_BODY_JOINTS + 2  # per-joint heads, full pose, shape


class PoseShapeDiscriminator(nn.Module):
    """rotmat `Bx24x3x3` (or `Bx23x3x3` without the global orientation), betas `Bx10` -> logits `Bx25`.

    Logit order: 23 per-joint scores, the full-pose score, the shape score.
    """

    def __init__(self, joint_channels: int = 32, pose_hidden: int = 1024) -> None:
        super().__init__()
        self.joint_features = nn.Sequential(
            nn.Conv1d(9, joint_channels, 1), nn.ReLU(),
            nn.Conv1d(joint_channels, joint_channels, 1), nn.ReLU(),
        )
        # one linear head per joint, stored stacked: 23xC weights
        self.joint_head_weight = nn.Parameter(torch.empty(NUM_BODY_JOINTS, joint_channels))
        self.joint_head_bias = nn.Parameter(torch.zeros(NUM_BODY_JOINTS))
        nn.init.xavier_uniform_(self.joint_head_weight)
        self.pose_head = nn.Sequential(
            nn.Linear(NUM_BODY_JOINTS * joint_channels, pose_hidden), nn.ReLU(),
            nn.Linear(pose_hidden, pose_hidden), nn.ReLU(),
            nn.Linear(pose_hidden, 1),
        )
        self.shape_head = nn.Sequential(
            nn.Linear(NUM_BETAS, 10), nn.ReLU(), nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 1),
        )

    def forward(self, rotmat: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        if rotmat.dim() != 4 or rotmat.shape[-2:] != (3, 3) or rotmat.shape[1] not in (NUM_JOINTS, NUM_BODY_JOINTS):
            raise ValueError(f"rotmat must be Bx24x3x3 or Bx23x3x3, got {tuple(rotmat.shape)}")
        if betas.dim() != 2 or betas.shape[1] != NUM_BETAS:
            raise ValueError(f"betas must be Bx{NUM_BETAS}, got {tuple(betas.shape)}")
        body = rotmat[:, -NUM_BODY_JOINTS:].flatten(2)  # Bx23x9
        feats = self.joint_features(body.transpose(1, 2)).transpose(1, 2)  # Bx23xC
        joint_logits = (feats * self.joint_head_weight).sum(-1) + self.joint_head_bias  # Bx23
        pose_logit = self.pose_head(feats.flatten(1))
        shape_logit = self.shape_head(betas)
        return torch.cat([joint_logits, pose_logit, shape_logit], dim=1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss of the discriminator (HMR): real -> 1, fake -> 0.

    Mean over the batch, summed over the 25 scores. Pass detached regressor outputs as fake.
    """
    real = ((real_logits - 1.0) ** 2).mean(0).sum()
    fake = (fake_logits ** 2).mean(0).sum()
    return real + fake


def adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss of the regressor (HMR's encoder loss): fake -> 1."""
    return ((fake_logits - 1.0) ** 2).mean(0).sum()
