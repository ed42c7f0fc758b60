"""Rotation conversions for exported graphs: plain tensor ops, no data-dependent control flow.

roma's rotmat -> axis-angle writes an `If` into a traced ONNX graph (its `diagonal` on an empty
shape check); these versions choose between candidates with ArgMax / GatherElements / Where, so
ONNX Runtime and TensorRT see one straight graph. Same conventions as roma: quaternions xyzw,
axis-angle angle in [0, pi].
"""
from __future__ import annotations

import math

import torch

EPS = 1e-12


def rotmat_to_quat(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `...x3x3` -> unit quaternions `...x4` (xyzw), w >= 0.

    Shepperd's method without branches: the four candidates 4 q_k q are all computed and the one
    with the largest |q_k| (the best conditioned) is picked by ArgMax + gather.
    """
    m = rotmat
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    candidates = torch.stack([
        torch.stack([1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12], dim=-1),  # 4x q
        torch.stack([m01 + m10, 1 - m00 + m11 - m22, m12 + m21, m02 - m20], dim=-1),  # 4y q
        torch.stack([m02 + m20, m12 + m21, 1 - m00 - m11 + m22, m10 - m01], dim=-1),  # 4z q
        torch.stack([m21 - m12, m02 - m20, m10 - m01, 1 + m00 + m11 + m22], dim=-1),  # 4w q
    ], dim=-2)  # ...x4x4, row k = 4 q_k q
    diagonal = torch.stack([1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22,
                            1 + m00 + m11 + m22], dim=-1)  # 4 q_k^2
    best = diagonal.argmax(dim=-1, keepdim=True)  # ...x1
    index = best.unsqueeze(-1).expand(*best.shape, 4)  # ...x1x4
    quat = torch.gather(candidates, -2, index).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True).clamp_min(EPS)
    return torch.where(quat[..., 3:] < 0, -quat, quat)


def quat_to_aa(quat: torch.Tensor) -> torch.Tensor:
    """Unit quaternions `...x4` (xyzw, w >= 0) -> axis-angle `...x3`, angle in [0, pi].

    The half angle is atan(|v| / w) or pi/2 - atan(w / |v|), whichever ratio is at most 1 (both
    computed, Where picks: no atan2, which ONNX lacks); near 0 the scale angle / |v| tends to 2 / w.
    """
    vec, w = quat[..., :3], quat[..., 3:]
    norm = vec.norm(dim=-1, keepdim=True)
    half = torch.where(norm <= w, torch.atan(norm / w.clamp_min(EPS)),
                       math.pi / 2 - torch.atan(w / norm.clamp_min(EPS)))
    small = norm < 1e-6
    scale = torch.where(small, 2.0 / w.clamp_min(EPS), 2.0 * half / norm.clamp_min(EPS))
    return vec * scale


def rotmat_to_aa(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `...x3x3` -> axis-angle `...x3` (the rotation as roma.rotmat_to_rotvec)."""
    return quat_to_aa(rotmat_to_quat(rotmat))
