"""Pinhole intrinsics of the source camera (from sensor_msgs/CameraInfo), and the guess used without them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics in pixels. Distortion is ignored: boxes and depth are coarse anyway."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(float(v)) for v in vals):
            raise ValueError(f"camera intrinsics must be finite, got fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"camera focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera image size must be positive, got {self.width}x{self.height}")

    @property
    def matrix(self) -> np.ndarray:
        """3x3 intrinsic matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def focal(self) -> float:
        """Mean focal length (pixels), the one the translation estimate uses."""
        return 0.5 * (float(self.fx) + float(self.fy))

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> "CameraModel":
        """From CameraInfo's row-major 3x3 `k` (9 numbers) and the image size."""
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.size != 9:
            raise ValueError(f"CameraInfo k must have 9 elements, got {k.size}")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    @classmethod
    def from_camera_info(cls, msg) -> "CameraModel":
        """From a sensor_msgs/CameraInfo object (rosbags or rclpy: the fields are the same)."""
        return cls.from_k(msg.k, int(msg.width), int(msg.height))

    @classmethod
    def assumed(cls, width: int, height: int) -> "CameraModel":
        """No CameraInfo: focal length = image diagonal (about 53 degrees horizontal field of view
        at 4:3, a typical robot camera; CLIFF's rule), principal point at the image centre."""
        f = math.hypot(float(width), float(height))
        return cls(f, f, width / 2.0, height / 2.0, int(width), int(height))

    def scaled_to(self, width: int, height: int) -> "CameraModel":
        """The same camera for an image resized to width x height (e.g. CameraInfo of the full
        sensor while the image is binned)."""
        sx, sy = width / float(self.width), height / float(self.height)
        return CameraModel(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, int(width), int(height))

    def project(self, points: np.ndarray) -> np.ndarray:
        """Nx3 camera-frame points (metres, z forward) -> Nx2 pixels."""
        p = np.asarray(points, dtype=np.float64)
        z = np.where(np.abs(p[..., 2]) < 1e-9, 1e-9, p[..., 2])
        return np.stack([self.fx * p[..., 0] / z + self.cx, self.fy * p[..., 1] / z + self.cy], axis=-1)
