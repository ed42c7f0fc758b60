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
    """...x3x3 rotation matrices -> ...x4 unit quaternions (x, y, z, w) with w >= 0."""
    r = np.asarray(r, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    # four candidate magnitudes (Shepperd); take the largest for stability
    q_abs = np.sqrt(np.maximum(np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                                         1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1), 0.0))
    m = r
    cands = np.stack([
        np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], q_abs[..., 0] ** 2], -1),
        np.stack([q_abs[..., 1] ** 2, m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
        np.stack([m[..., 1, 0] + m[..., 0, 1], q_abs[..., 2] ** 2, m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0]], -1),
        np.stack([m[..., 2, 0] + m[..., 0, 2], m[..., 2, 1] + m[..., 1, 2], q_abs[..., 3] ** 2, m[..., 1, 0] - m[..., 0, 1]], -1),
    ], -2)  # ...x4(candidate)x4(xyzw)
    best = np.argmax(q_abs, axis=-1)
    denom = 2.0 * np.maximum(np.take_along_axis(q_abs, best[..., None], -1), 0.1)
    q = np.take_along_axis(cands, best[..., None, None], -2)[..., 0, :] / denom
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)
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
    """...x3x3 rotation matrices -> ...x3 axis-angle (via quaternions: stable at 0 and pi)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(r))


def log_map(r: np.ndarray) -> np.ndarray:
    """SO(3) logarithm: ...x3x3 -> ...x3 rotation vector (same as matrix_to_axis_angle)."""
    return matrix_to_axis_angle(r)


def exp_map(v: np.ndarray) -> np.ndarray:
    """SO(3) exponential: ...x3 rotation vector -> ...x3x3 matrix."""
    return axis_angle_to_matrix(v)


def orthonormalise(r: np.ndarray) -> np.ndarray:
    """...x3x3 nearly-rotation matrices -> the nearest rotations (SVD, det +1)."""
    u, _, vt = np.linalg.svd(np.asarray(r, dtype=np.float64))
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
    for j, p in enumerate(parents):
        out[..., j, :, :] = local[..., j, :, :] if p < 0 else out[..., p, :, :] @ local[..., j, :, :]
    return out


def joint_orientations(local: np.ndarray) -> np.ndarray:
    """...x24x3x3 local rotations -> ...x24x4 global quaternions (x, y, z, w)."""
    return matrix_to_quaternion(global_rotations(local))


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle (radians) between ...x3x3 rotations a and b."""
    rel = np.swapaxes(a, -1, -2) @ b
    c = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(c, -1.0, 1.0))


assert NUM_JOINTS == len(SMPL_PARENTS)
