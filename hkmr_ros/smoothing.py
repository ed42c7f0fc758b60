"""One-Euro filters (Casiez et al., CHI 2012) on joints and on rotations, one set per track.

A One-Euro filter is a low-pass whose cutoff rises with speed: a still person is smoothed
hard (jitter goes), a moving one lightly (little lag). Rotations are filtered on the manifold:
the step from the previous estimate to the new measurement is taken in the tangent space
(R_hat = R_prev * exp(alpha * log(R_prev^T R))), i.e. a slerp by alpha, never on axis-angle
components (which jump at pi and mix axes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from hkmr_ros.geometry import exp_map, log_map


@dataclass
class OneEuroParams:
    """min_cutoff (Hz): cutoff at rest, lower = smoother. beta (s per unit): how fast the cutoff
    rises with speed (units/s, e.g. m/s or rad/s), higher = less lag. d_cutoff (Hz): cutoff of
    the speed estimate."""

    min_cutoff: float = 1.0
    beta: float = 0.5
    d_cutoff: float = 1.0

    def validate(self, what: str) -> None:
        for name in ("min_cutoff", "beta", "d_cutoff"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)) or v < 0 or (name != "beta" and v == 0):
                raise ValueError(f"smoothing.{what}.{name} must be a finite number > 0 (beta >= 0), got {v!r}")
        if self.min_cutoff > 1000 or self.d_cutoff > 1000 or self.beta > 1000:
            raise ValueError(f"smoothing.{what} parameters above 1000 make no sense, got {self}")


def _alpha(cutoff: np.ndarray, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroVector:
    """One-Euro filter on ...xD points; the cutoff of each point follows its own speed (norm
    over the last axis), so a joint's x, y and z are smoothed alike."""

    def __init__(self, params: OneEuroParams):
        self.p = params
        self.x: Optional[np.ndarray] = None
        self.dx: Optional[np.ndarray] = None

    def reset(self) -> None:
        self.x = self.dx = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.x.shape != x.shape or not np.all(np.isfinite(self.x)):
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self.x) / dt
        a_d = _alpha(self.p.d_cutoff, dt)
        self.dx = self.dx + a_d * (dx - self.dx)
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True)
        a = _alpha(self.p.min_cutoff + self.p.beta * speed, dt)
        self.x = self.x + a * (x - self.x)
        return self.x.copy()


class OneEuroRotation:
    """One-Euro filter on ...x3x3 rotations, in the tangent space of the previous estimate."""

    def __init__(self, params: OneEuroParams):
        self.p = params
        self.r: Optional[np.ndarray] = None
        self.w: Optional[np.ndarray] = None   # filtered angular velocity (rad/s, body frame)

    def reset(self) -> None:
        self.r = self.w = None

    def __call__(self, r: np.ndarray, dt: float) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        if self.r is None or self.r.shape != r.shape:
            self.r, self.w = r.copy(), np.zeros(r.shape[:-2] + (3,))
            return r.copy()
        delta = log_map(np.swapaxes(self.r, -1, -2) @ r)       # ...x3, the step to the measurement
        a_d = _alpha(self.p.d_cutoff, dt)
        self.w = self.w + a_d * (delta / dt - self.w)
        speed = np.linalg.norm(self.w, axis=-1, keepdims=True)
        a = _alpha(self.p.min_cutoff + self.p.beta * speed, dt)  # ...x1
        self.r = self.r @ exp_map(a * delta)
        return self.r.copy()


@dataclass
class SmoothingConfig:
    """Per-quantity One-Euro settings. Units of beta: joints and translation m/s, rotations rad/s.

    reset_after_s: a gap longer than this (or time going backwards) restarts the filters.
    """

    enabled: bool = True
    joints: OneEuroParams = field(default_factory=lambda: OneEuroParams(1.5, 4.0, 1.0))
    translation: OneEuroParams = field(default_factory=lambda: OneEuroParams(0.8, 2.0, 1.0))
    rotations: OneEuroParams = field(default_factory=lambda: OneEuroParams(1.5, 2.0, 1.0))
    betas: OneEuroParams = field(default_factory=lambda: OneEuroParams(0.3, 0.0, 1.0))
    reset_after_s: float = 1.0

    def validate(self) -> None:
        for name in ("joints", "translation", "rotations", "betas"):
            getattr(self, name).validate(name)
        if not (math.isfinite(self.reset_after_s) and self.reset_after_s > 0):
            raise ValueError(f"smoothing.reset_after_s must be > 0, got {self.reset_after_s!r}")


class PersonSmoother:
    """The filters of one track: pelvis translation, root-relative joints, local rotations, betas."""

    def __init__(self, config: SmoothingConfig):
        self.config = config
        self.translation = OneEuroVector(config.translation)
        self.joints = OneEuroVector(config.joints)
        self.rotations = OneEuroRotation(config.rotations)
        self.betas = OneEuroVector(config.betas)
        self.t: Optional[float] = None

    def reset(self) -> None:
        for f in (self.translation, self.joints, self.rotations, self.betas):
            f.reset()
        self.t = None

    def __call__(self, t: float, translation: np.ndarray, joints_rel: np.ndarray,
                 rotmat: np.ndarray, betas: np.ndarray):
        """Filter one measurement at time `t` (s). joints_rel 24x3 relative to the pelvis,
        rotmat 24x3x3 local rotations. Returns the filtered (translation, joints_rel, rotmat, betas)."""
        if not self.config.enabled:
            return translation, joints_rel, rotmat, betas
        if self.t is None or not (0.0 < t - self.t <= self.config.reset_after_s):
            self.reset()
            dt = 1.0
        else:
            dt = t - self.t
        self.t = t
        betas_2d = np.asarray(betas, dtype=np.float64).reshape(-1, 1)  # each beta its own "point"
        return (self.translation(translation, dt), self.joints(joints_rel, dt),
                self.rotations(rotmat, dt), self.betas(betas_2d, dt).reshape(-1))
