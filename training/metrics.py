"""3D joint error metrics: MPJPE after root alignment and PA-MPJPE after Procrustes alignment.

Every function takes numpy arrays or torch tensors (`BxJx3`, or `Jx3` for one sample) and returns
the same kind. The metrics keep the unit of their inputs: joints in metres give errors in metres
(`training.evaluate` multiplies by `M_TO_MM` to report millimetres). The pure maths is written once
for both libraries: only `det` and `svd` differ, and come from `numpy.linalg` or `torch.linalg`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]
Root = Union[str, Sequence[int], None]

M_TO_MM = 1000.0

# Joints whose mean is the root that MPJPE aligns on, per joint set: Human3.6M-17's pelvis is joint 0;
# LSP-14 has no pelvis, so the midpoint of its right (2) and left (3) hips stands in (HMR's convention);
# its 12 limb joints (limbs12) are its first 12, so the same two.
ROOT_JOINTS = {"h36m17": (0,), "lsp14": (2, 3), "limbs12": (2, 3), "spin24": (14,), "smpl24": (0,)}


def _linalg(x: Array):
    return torch.linalg if isinstance(x, torch.Tensor) else np.linalg


def _root_indices(root: Root) -> Optional[tuple]:
    if root is None:
        return None
    if isinstance(root, str):
        if root not in ROOT_JOINTS:
            raise ValueError(f"unknown joint set {root!r} for root alignment; known: {sorted(ROOT_JOINTS)}")
        return ROOT_JOINTS[root]
    return tuple(int(i) for i in root)


def _weights(mask: Optional[Array], like: Array) -> Array:
    """Per-joint weights `BxJx1` (1 = scored) from a bool or 0/1 mask `BxJ`; all ones without one."""
    if mask is None:
        return like[..., :1] * 0 + 1
    return mask[..., None] * 1.0 if isinstance(mask, np.ndarray) else mask[..., None].to(like.dtype)


def root_align(joints: Array, root: Root) -> Array:
    """Subtract the mean of the `root` joints (a joint-set name or indices): `BxJx3` -> `BxJx3`."""
    idx = _root_indices(root)
    if idx is None:
        return joints
    return joints - joints[..., list(idx), :].mean(-2)[..., None, :]


def procrustes_align(pred: Array, gt: Array, mask: Optional[Array] = None) -> Array:
    """Map `pred` onto `gt` by the similarity transform (scale, rotation, translation) of least squares.

    pred, gt: `BxJx3`; mask `BxJ` selects the joints the fit uses (missing ground truth). The rotation
    is proper (det +1): a mirrored solution of the SVD is flipped on its weakest axis (Umeyama 1991),
    so a reflected pose is not explained away. Returns the aligned pred, `BxJx3`.
    """
    la = _linalg(pred)
    w = _weights(mask, pred)
    wsum = w.sum(-2)[..., None]  # Bx1x1
    mu_p = (w * pred).sum(-2)[..., None, :] / wsum
    mu_g = (w * gt).sum(-2)[..., None, :] / wsum
    p0, g0 = pred - mu_p, gt - mu_g
    cov = (w * p0).swapaxes(-1, -2) @ g0  # Bx3x3, sum_j p_j g_j^T
    u, s, vh = la.svd(cov)
    # R = V diag(1, 1, d) U^T with d = sign(det(V U^T)) maximises trace(R cov)
    d = la.det(vh.swapaxes(-1, -2) @ u.swapaxes(-1, -2))
    z = s * 0 + 1
    z[..., 2] = 1 - 2 * (d < 0)
    rot = (vh.swapaxes(-1, -2) * z[..., None, :]) @ u.swapaxes(-1, -2)
    var_p = (w * p0 ** 2).sum((-2, -1))
    scale = (s * z).sum(-1) / var_p
    return scale[..., None, None] * (p0 @ rot.swapaxes(-1, -2)) + mu_g


def joint_errors(pred: Array, gt: Array) -> Array:
    """Euclidean distance per joint, no alignment: `BxJx3` -> `BxJ`."""
    return ((pred - gt) ** 2).sum(-1) ** 0.5


def per_joint_errors(pred: Array, gt: Array, root: Root = "h36m17", procrustes: bool = False,
                     mask: Optional[Array] = None) -> Array:
    """Per-joint errors `BxJ` after root alignment (`root`), or after Procrustes when `procrustes`.

    mask only restricts which joints the Procrustes fit uses; average errors with `masked_mean`.
    """
    if procrustes:
        return joint_errors(procrustes_align(pred, gt, mask), gt)
    return joint_errors(root_align(pred, root), root_align(gt, root))


def masked_mean(errors: Array, mask: Optional[Array] = None) -> Array:
    """Mean over joints of `BxJ` errors, counting only joints where mask is true -> `B`.

    A sample with no scored joint gets NaN.
    """
    if mask is None:
        return errors.mean(-1)
    w = mask * 1.0 if isinstance(mask, np.ndarray) else mask.to(errors.dtype)
    return (errors * w).sum(-1) / w.sum(-1)


def mpjpe(pred: Array, gt: Array, mask: Optional[Array] = None, root: Root = "h36m17") -> Array:
    """Mean per-joint position error of each sample after root alignment -> `B` (input units).

    root: joint-set name ('h36m17' aligns on the pelvis, 'lsp14' on the hips' midpoint), joint
    indices, or None for no alignment. mask `BxJ`: joints with ground truth.
    """
    return masked_mean(per_joint_errors(pred, gt, root=root), mask)


def pa_mpjpe(pred: Array, gt: Array, mask: Optional[Array] = None) -> Array:
    """MPJPE after similarity Procrustes alignment ("reconstruction error") of each sample -> `B`."""
    return masked_mean(per_joint_errors(pred, gt, procrustes=True, mask=mask), mask)
