"""Rotation maths in numpy (axis-angle, matrices, quaternions xyzw) and the kinematic chain.

The runtime's counterpart of training/geometry.py without torch. Quaternions are (x, y, z, w),
geometry_msgs' order. All functions take any leading batch shape `...`.
"""
from __future__ import annotations

import numpy as np

from hkmr_ros.skeleton import NUM_JOINTS, SMPL_PARENTS

_EPS = 1e-8


def _skew(v: np.ndarray) -> np.ndarray:
    """...x3 -> ...x3x3 cross-product matrices."""
    z = np.zeros(v.shape[:-1], dtype=v.dtype)
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([np.stack([z, -w, y], -1), np.stack([w, z, -x], -1), np.stack([-y, x, z], -1)], -2)


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """...x3 axis-angle (radians) -> ...x3x3 rotation matrices (Rodrigues, stable near 0)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)[..., None]  # ...x1x1
    k = _skew(aa)
    small = theta < 1e-4
    t = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta ** 2 / 6.0, np.sin(t) / t)
    b = np.where(small, 0.5 - theta ** 2 / 24.0, (1.0 - np.cos(t)) / t ** 2)
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + a * k + b * (k @ k)


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """...x3x3 rotation matrices -> ...x4 unit quaternions (x, y, z, w) with w >= 0.

    Shepperd's rule: each matrix uses the formula of its largest of (trace, m00, m11, m22),
    stable at every angle including pi.
    """
    r = np.asarray(r, dtype=np.float64)
    m00, m01, m02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    m10, m11, m12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    m20, m21, m22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    tr = m00 + m11 + m22
    case = np.argmax(np.stack([tr, m00, m11, m22], -1), axis=-1)
    big = np.choose(case, [1.0 + tr, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22])
    sq = 2.0 * np.sqrt(np.maximum(big, 1e-12))                      # 4 x the largest component
    a, b, c = m21 - m12, m02 - m20, m10 - m01                       # 4w (x, y, z)
    d, e, f = m01 + m10, m02 + m20, m12 + m21                       # 4 (xy, xz, yz)
    q = np.empty(r.shape[:-2] + (4,))
    q[..., 0] = np.choose(case, [a, sq * sq / 4.0, d, e]) / sq
    q[..., 1] = np.choose(case, [b, d, sq * sq / 4.0, f]) / sq
    q[..., 2] = np.choose(case, [c, e, f, sq * sq / 4.0]) / sq
    q[..., 3] = np.choose(case, [sq * sq / 4.0, a, b, c]) / sq
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """...x4 quaternions (x, y, z, w; normalised here) -> ...x3x3 rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quaternion_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """...x4 quaternions (x, y, z, w) -> ...x3 axis-angle with angle in [0, pi]."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)
    q = np.where(q[..., 3:4] < 0, -q, q)
    s = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., 3:4])
    # angle / sin(angle/2), with the small-angle limit 2
    factor = np.where(s < 1e-6, 2.0 / np.maximum(q[..., 3:4], _EPS), angle / np.maximum(s, 1e-12))
    return q[..., :3] * factor


def axis_angle_to_quaternion(aa: np.ndarray) -> np.ndarray:
    """...x3 axis-angle -> ...x4 quaternions (x, y, z, w)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * theta
    k = np.where(theta < 1e-6, 0.5 - theta ** 2 / 48.0, np.sin(half) / np.maximum(theta, 1e-12))
    q = np.concatenate([aa * k, np.cos(half)], -1)
    return np.where(q[..., 3:4] < 0, -q, q)


def matrix_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """...x3x3 rotation matrices -> ...x3 axis-angle (angle in [0, pi]; stable at 0 and pi)."""
    r = np.asarray(r, dtype=np.float64)
    tr = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    cos = np.clip((tr - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    v = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = np.sin(theta)
    k = np.where(theta < 1e-4, 0.5 + theta ** 2 / 12.0, theta / (2.0 * np.maximum(sin, 1e-12)))
    out = v * k[..., None]
    bad = cos < -0.9                                      # near pi the skew part vanishes
    if np.any(bad):
        out[bad] = quaternion_to_axis_angle(matrix_to_quaternion(r[bad]))
    return out


def log_map(r: np.ndarray) -> np.ndarray:
    """SO(3) logarithm: ...x3x3 -> ...x3 rotation vector (same as matrix_to_axis_angle)."""
    return matrix_to_axis_angle(r)


def exp_map(v: np.ndarray) -> np.ndarray:
    """SO(3) exponential: ...x3 rotation vector -> ...x3x3 matrix."""
    return axis_angle_to_matrix(v)


def orthonormalise(r: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    """...x3x3 nearly-rotation matrices -> the nearest rotations (SVD, det +1); matrices already
    orthonormal within `tol` (a network's Gram-Schmidt output) are returned as they are."""
    r = np.asarray(r, dtype=np.float64)
    err = np.abs(r @ np.swapaxes(r, -1, -2) - np.eye(3)).max() if r.size else 0.0
    if err < tol and np.all(np.linalg.det(r) > 0):
        return r
    u, _, vt = np.linalg.svd(r)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


def global_rotations(local: np.ndarray, parents=SMPL_PARENTS) -> np.ndarray:
    """...x24x3x3 local (parent-relative) rotations -> ...x24x3x3 global ones.

    R_global[j] = R_global[parent(j)] @ R_local[j]; joint 0's local rotation is already global.
    """
    local = np.asarray(local, dtype=np.float64)
    if local.shape[-3] != len(parents):
        raise ValueError(f"expected {len(parents)} joints, got rotations of shape {local.shape}")
    out = np.empty_like(local)
    levels = _levels(tuple(parents))
    out[..., levels[0], :, :] = local[..., levels[0], :, :]
    for joints in levels[1:]:                 # one batched product per tree depth
        par = [parents[j] for j in joints]
        out[..., joints, :, :] = out[..., par, :, :] @ local[..., joints, :, :]
    return out


_LEVELS: dict = {}


def _levels(parents: tuple) -> list:
    """Joint indices grouped by depth in the tree (roots first)."""
    if parents not in _LEVELS:
        depth = []
        for j, p in enumerate(parents):
            depth.append(0 if p < 0 else depth[p] + 1)
        _LEVELS[parents] = [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]
    return _LEVELS[parents]


def joint_orientations(local: np.ndarray) -> np.ndarray:
    """...x24x3x3 local rotations -> ...x24x4 global quaternions (x, y, z, w)."""
    return matrix_to_quaternion(global_rotations(local))


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle (radians) between ...x3x3 rotations a and b."""
    rel = np.swapaxes(a, -1, -2) @ b
    c = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(c, -1.0, 1.0))


assert NUM_JOINTS == len(SMPL_PARENTS)
