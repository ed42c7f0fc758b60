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


def _shepperd_matrix() -> torch.Tensor:
    """`10x16`: [flattened rotmat (9), 1] -> the four Shepperd candidates 4 q_k q (rows k = x, y, z, w).

    Every candidate component is linear in the matrix entries (plus a constant), so all sixteen
    are one MatMul. Entry (i, j) of R is index 3 i + j; index 9 is the constant 1.
    """
    rows = [  # per candidate: x, y, z, w components as {index: coefficient}
        [{9: 1, 0: 1, 4: -1, 8: -1}, {1: 1, 3: 1}, {2: 1, 6: 1}, {7: 1, 5: -1}],  # 4 qx q
        [{1: 1, 3: 1}, {9: 1, 0: -1, 4: 1, 8: -1}, {5: 1, 7: 1}, {2: 1, 6: -1}],  # 4 qy q
        [{2: 1, 6: 1}, {5: 1, 7: 1}, {9: 1, 0: -1, 4: -1, 8: 1}, {3: 1, 1: -1}],  # 4 qz q
        [{7: 1, 5: -1}, {2: 1, 6: -1}, {3: 1, 1: -1}, {9: 1, 0: 1, 4: 1, 8: 1}],  # 4 qw q
    ]
    matrix = torch.zeros(10, 16)
    for k, candidate in enumerate(rows):
        for c, terms in enumerate(candidate):
            for index, coefficient in terms.items():
                matrix[index, 4 * k + c] = coefficient
    return matrix


SHEPPERD = _shepperd_matrix()
DIAGONAL = torch.tensor([0, 5, 10, 15])


def rotmat_to_quat(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `...x3x3` -> unit quaternions `...x4` (xyzw), w >= 0.

    Shepperd's method without branches: the four candidates 4 q_k q are computed at once (one
    MatMul, see `_shepperd_matrix`) and the best conditioned, largest 4 q_k^2 (the diagonal), is
    picked by ArgMax + gather.
    """
    flat = rotmat.reshape(*rotmat.shape[:-2], 9)
    weights = SHEPPERD.to(rotmat)
    flat16 = torch.matmul(flat, weights[:9]) + weights[9]
    candidates = flat16.reshape(*rotmat.shape[:-2], 4, 4)
    # not torch.diagonal: the TorchScript exporter writes it with an If on the shape
    diagonal = flat16.index_select(-1, DIAGONAL.to(rotmat.device))  # 4 q_k^2
    best = diagonal.argmax(dim=-1, keepdim=True)  # ...x1
    index = best.unsqueeze(-1).expand(*best.shape, 4)  # ...x1x4
    quat = torch.gather(candidates, -2, index).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True).clamp_min(EPS)
    return torch.where(quat[..., 3:] < 0, -quat, quat)


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """6-D rotation `...x6` (as training.geometry.rot6d_to_rotmat reads it: `...x3x2` columns a1, a2)
    -> `...x3x3`: Gram-Schmidt, b1 = a1 / |a1|, b2 = the unit part of a2 orthogonal to b1, b3 = b1 x b2.

    The same maths as roma.special_gramschmidt in fewer graph nodes: the cross product is the
    outer product b1 b2^T contracted with the Levi-Civita symbol (one MatMul).
    """
    m = x.reshape(*x.shape[:-1], 3, 2)
    a1, a2 = m[..., 0], m[..., 1]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(EPS)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp_min(EPS)
    outer = (b1.unsqueeze(-1) * b2.unsqueeze(-2)).reshape(*b1.shape[:-1], 9)
    b3 = torch.matmul(outer, LEVI_CIVITA.to(x))
    return torch.stack([b1, b2, b3], dim=-1)


def _levi_civita() -> torch.Tensor:
    """`9x3`: (b1 b2^T flattened) @ E = b1 x b2."""
    e = torch.zeros(3, 3, 3)
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        e[j, k, i], e[k, j, i] = 1.0, -1.0
    return e.reshape(9, 3)


LEVI_CIVITA = _levi_civita()


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
