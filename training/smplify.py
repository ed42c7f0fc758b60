"""SMPLify-style fitting of pose, shape and camera translation to 2D keypoints.

Used in the training loop (SPIN's encoder-regressor-optimizer paradigm, the paper's HKMR_MF):
the regressor's prediction initialises the fit and the fit becomes pseudo ground truth; also
usable at evaluation. Camera: a perspective camera with a fixed focal length looking at a
`res x res` crop (SPIN), whose translation is initialised from the weak-perspective camera.
All samples of a batch are fitted together; their losses are independent (summed), so a
sample's fit does not depend on the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

# spin24 indices of the hips and shoulders (LSP order: r hip, l hip, r shoulder, l shoulder)
TORSO_JOINTS = (2, 3, 8, 9)


def weak_perspective_to_translation(cam: torch.Tensor, focal_length: float, res: int) -> torch.Tensor:
    """Weak-perspective `(s, tx, ty)` (`x2d = s * X + t`, normalised crop) -> camera translation.

    cam: Bx3 -> Bx3. With depth tz = 2f / (res * s) a point X projects to
    `2f (X + t) / (res tz) = s X + s t`, so the translation is `(tx / s, ty / s, tz)`.
    (SPIN's weak-perspective camera is `s * (X + t)`, whence its `[tx, ty, 2f/(res s)]`.)
    """
    s = cam[:, 0].clamp(min=1e-3)
    tz = 2.0 * focal_length / (res * s)
    return torch.stack([cam[:, 1] / s, cam[:, 2] / s, tz], dim=-1)


def translation_to_weak_perspective(t: torch.Tensor, focal_length: float, res: int) -> torch.Tensor:
    """Inverse of `weak_perspective_to_translation`: Bx3 translation -> Bx3 `(s, tx, ty)`."""
    s = 2.0 * focal_length / (res * t[:, 2].clamp(min=1e-3))
    return torch.stack([s, s * t[:, 0], s * t[:, 1]], dim=-1)


def perspective_project(points: torch.Tensor, translation: torch.Tensor, focal_length: float,
                        res: int) -> torch.Tensor:
    """Points BxJx3 + translation Bx3 -> crop pixels BxJx2 (principal point at the crop centre)."""
    p = points + translation[:, None, :]
    z = p[..., 2:3].clamp(min=1e-3)
    return focal_length * p[..., :2] / z + res / 2.0


def gmof(residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty, elementwise: sigma^2 r^2 / (sigma^2 + r^2)."""
    sq = residual ** 2
    return sigma ** 2 * sq / (sigma ** 2 + sq)


def estimate_translation(joints: torch.Tensor, keypoints_px: torch.Tensor, focal_length: float,
                         res: int) -> torch.Tensor:
    """Least-squares camera translation that projects `joints` BxJx3 onto `keypoints_px` BxJx3.

    keypoints_px holds crop pixels and a confidence (used as weight). Linearises
    `f (X + tx) = (u - c)(Z + tz)` per joint (SPIN's closed form). Returns Bx3.
    """
    b, j, _ = joints.shape
    w = keypoints_px[..., 2].clamp(min=0).sqrt()  # BxJ
    uv = keypoints_px[..., :2] - res / 2.0
    x, y, z = joints[..., 0], joints[..., 1], joints[..., 2]
    f = torch.full_like(x, focal_length)
    zero = torch.zeros_like(x)
    # rows for u: [f, 0, -u] t = u z - f x ; rows for v: [0, f, -v] t = v z - f y
    a_u = torch.stack([f, zero, -uv[..., 0]], dim=-1)
    a_v = torch.stack([zero, f, -uv[..., 1]], dim=-1)
    a = torch.cat([a_u, a_v], dim=1) * torch.cat([w, w], dim=1)[..., None]  # B x 2J x 3
    rhs = torch.cat([uv[..., 0] * z - focal_length * x, uv[..., 1] * z - focal_length * y], dim=1)
    rhs = rhs * torch.cat([w, w], dim=1)
    ata = a.transpose(1, 2) @ a + 1e-6 * torch.eye(3, dtype=a.dtype, device=a.device)
    atb = a.transpose(1, 2) @ rhs[..., None]
    return torch.linalg.solve(ata, atb)[..., 0]


def prior_penalty(prior_encoder: Optional[nn.Module], pose: torch.Tensor) -> torch.Tensor:
    """Pose prior per sample (B): KL(q(z|pose) || N(0, I)) of the VAE encoder on the 69-D body pose.

    Without an encoder, a small L2 pull of the body pose towards the rest pose.
    """
    body = pose[:, 3:]
    if prior_encoder is None:
        return (body ** 2).sum(-1)
    return prior_encoder.kl(body)


@dataclass
class FitResult:
    pose: torch.Tensor  # Bx72 axis-angle
    betas: torch.Tensor  # Bx10
    translation: torch.Tensor  # Bx3 perspective camera translation
    cam: torch.Tensor  # Bx3 weak-perspective (s, tx, ty) equivalent
    reprojection_loss: torch.Tensor  # B: mean robust 2D error per joint (SPIN's comparison value)


class SMPLify(nn.Module):
    """Two-stage fit (camera + global orientation on the torso, then everything) with Adam.

    body_model: `training.body.body_model.BodyModel`; prior_encoder: a `PosePriorEncoder` or None.
    """

    def __init__(self, body_model: nn.Module, prior_encoder: Optional[nn.Module] = None,
                 camera_iters: int = 30, body_iters: int = 70, lr: float = 0.01,
                 focal_length: float = 5000.0, image_res: int = 224, sigma: float = 100.0,
                 prior_weight: float = 4.78, shape_weight: float = 5.0, depth_weight: float = 100.0):
        super().__init__()
        self.body_model = body_model
        self.prior_encoder = prior_encoder
        self.camera_iters = camera_iters
        self.body_iters = body_iters
        self.lr = lr
        self.focal_length = focal_length
        self.image_res = image_res
        self.sigma = sigma
        self.prior_weight = prior_weight
        self.shape_weight = shape_weight
        self.depth_weight = depth_weight

    def keypoints_to_pixels(self, keypoints_2d: torch.Tensor) -> torch.Tensor:
        """Normalised crop keypoints BxJx3 (u, v, conf) -> crop pixels BxJx3."""
        px = (keypoints_2d[..., :2] + 1.0) * self.image_res / 2.0
        return torch.cat([px, keypoints_2d[..., 2:3]], dim=-1)

    def model_joints(self, pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        out = self.body_model(pose, betas)
        return self.body_model.joint_set("spin24", out)

    def reprojection(self, joints: torch.Tensor, translation: torch.Tensor,
                     keypoints_px: torch.Tensor, joint_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Confidence-weighted Geman-McClure reprojection error, BxJ."""
        proj = perspective_project(joints, translation, self.focal_length, self.image_res)
        conf = keypoints_px[..., 2] ** 2
        if joint_mask is not None:
            conf = conf * joint_mask
        return conf * gmof(proj - keypoints_px[..., :2], self.sigma).sum(-1)

    def fitting_loss(self, pose: torch.Tensor, betas: torch.Tensor, translation: torch.Tensor,
                     keypoints_2d: torch.Tensor) -> torch.Tensor:
        """Per-sample reprojection loss (B), mean over joints: how SPIN ranks fits of one sample."""
        with torch.no_grad():
            joints = self.model_joints(pose, betas)
            kp = self.keypoints_to_pixels(keypoints_2d)
            return self.reprojection(joints, translation, kp).mean(-1)

    def forward(self, pose: torch.Tensor, betas: torch.Tensor, cam: torch.Tensor,
                keypoints_2d: torch.Tensor) -> FitResult:
        """Fit from an initial estimate.

        pose Bx72 (axis-angle), betas Bx10, cam Bx3 weak-perspective, keypoints_2d BxJx3
        (spin24, normalised crop coordinates + confidence) -> FitResult.
        """
        kp = self.keypoints_to_pixels(keypoints_2d.detach().float())
        init_t = weak_perspective_to_translation(cam.detach().float(), self.focal_length, self.image_res)
        global_orient = pose.detach()[:, :3].clone().float().requires_grad_(True)
        body_pose = pose.detach()[:, 3:].clone().float()
        betas_v = betas.detach().clone().float()
        transl = init_t.clone().requires_grad_(True)
        torso = torch.zeros(kp.shape[1], device=kp.device)
        torso[list(TORSO_JOINTS)] = 1.0

        with torch.enable_grad():
            # stage 1: camera translation and global orientation from the torso
            opt = torch.optim.Adam([global_orient, transl], lr=self.lr, betas=(0.9, 0.999))
            for _ in range(self.camera_iters):
                joints = self.model_joints(torch.cat([global_orient, body_pose], -1), betas_v)
                loss = self.reprojection(joints, transl, kp, torso).sum(-1)
                loss = loss + self.depth_weight ** 2 * (transl[:, 2] - init_t[:, 2]) ** 2
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()

            # stage 2: everything
            body_pose.requires_grad_(True)
            betas_v.requires_grad_(True)
            opt = torch.optim.Adam([global_orient, body_pose, betas_v, transl], lr=self.lr,
                                   betas=(0.9, 0.999))
            for _ in range(self.body_iters):
                full = torch.cat([global_orient, body_pose], -1)
                joints = self.model_joints(full, betas_v)
                loss = self.reprojection(joints, transl, kp).sum(-1)
                loss = loss + self.prior_weight ** 2 * prior_penalty(self.prior_encoder, full)
                loss = loss + self.shape_weight ** 2 * (betas_v ** 2).sum(-1)
                loss = loss + self.depth_weight ** 2 * (transl[:, 2] - init_t[:, 2]) ** 2
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()

        pose_out = torch.cat([global_orient, body_pose], -1).detach()
        betas_out = betas_v.detach()
        transl_out = transl.detach()
        return FitResult(
            pose=pose_out,
            betas=betas_out,
            translation=transl_out,
            cam=translation_to_weak_perspective(transl_out, self.focal_length, self.image_res),
            reprojection_loss=self.fitting_loss(pose_out, betas_out, transl_out, keypoints_2d.float()),
        )


def build_smplify(cfg, body_model: nn.Module, prior_encoder: Optional[nn.Module] = None) -> SMPLify:
    """An SMPLify from a `training.config.SmplifyConfig`."""
    return SMPLify(body_model, prior_encoder, camera_iters=cfg.camera_iters, body_iters=cfg.body_iters,
                   lr=cfg.lr, focal_length=cfg.focal_length, image_res=cfg.image_res, sigma=cfg.sigma,
                   prior_weight=cfg.prior_weight, shape_weight=cfg.shape_weight,
                   depth_weight=cfg.depth_weight)
