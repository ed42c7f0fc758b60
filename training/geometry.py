"""Rotation conversions and the weak-perspective camera, shared by networks, losses and data.

Conversions delegate to roma (well kept, differentiable, export-friendly ops only).
"""
from __future__ import annotations

import roma
import torch


def aa_to_rotmat(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle `...x3` -> rotation matrices `...x3x3`."""
    return roma.rotvec_to_rotmat(aa)


def rotmat_to_aa(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `...x3x3` -> axis-angle `...x3`."""
    return roma.rotmat_to_rotvec(rotmat)


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """6-D rotation (Zhou et al. 2019: the first two columns, `...x6`) -> `...x3x3`."""
    return roma.special_gramschmidt(x.reshape(*x.shape[:-1], 3, 2))


def rotmat_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """`...x3x3` -> 6-D rotation `...x6` (first two columns, row-major as rot6d_to_rotmat reads them)."""
    return rotmat[..., :, :2].reshape(*rotmat.shape[:-2], 6)


def weak_perspective_project(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Orthographic projection scaled and shifted: `x2d = s * X[..., :2] + (tx, ty)`.

    points: BxJx3 (or ...xJx3), cam: Bx3 (s, tx, ty) -> BxJx2 in normalised crop coordinates.
    """
    s = cam[..., 0:1].unsqueeze(-2)
    t = cam[..., 1:3].unsqueeze(-2)
    return s * points[..., :2] + t
