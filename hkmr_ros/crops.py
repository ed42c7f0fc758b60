"""Person-centred crops in the SPIN/HMR convention (centre in pixels, scale = box side / 200).

The runtime's copy of the rules in the training crop module (numpy + OpenCV only, no torch), so
that the robot cuts a person out of a camera frame exactly as the network saw people in training:
`box_to_center_scale` pads a detection box to a square, `crop_transform` is the 2x3 pixel map and
`crop_image` applies it at 224x224 (`CROP_SIZE`, the training crop side). The estimator then
normalises and resizes the crop to the network's input side (hkmr_ros.inference.preprocess).
"""
from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 224
SCALE_UNIT = 200.0  # scale = box side in pixels / 200 (HMR, SPIN)


def crop_transform(center: np.ndarray, scale: float, res: int = CROP_SIZE,
                   rot: float = 0.0) -> np.ndarray:
    """2x3 affine map from image pixels to crop pixels for a box of side `scale * 200`.

    `rot` (degrees, counter-clockwise in the image) rotates the crop about its centre.
    """
    side = float(scale) * SCALE_UNIT
    if not np.isfinite(side) or side <= 0:
        raise ValueError(f"crop scale must be a positive finite number, got {scale!r}")
    s = res / side
    a = np.deg2rad(rot)
    cos, sin = np.cos(a) * s, np.sin(a) * s
    cx, cy = float(center[0]), float(center[1])
    # rotate+scale about the box centre, then move the centre to the crop centre
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=np.float64)
    m[:, 2] = np.array([res / 2.0, res / 2.0]) - m[:, :2] @ np.array([cx, cy])
    return m


def crop_image(img: np.ndarray, center: np.ndarray, scale: float, res: int = CROP_SIZE,
               rot: float = 0.0, border_value: int = 0) -> np.ndarray:
    """Crop (and rotate) `img` HxWxC to `res x res`; outside the image is `border_value` in every
    channel (OpenCV alone would fill only the first channel for a scalar)."""
    m = crop_transform(center, scale, res, rot)
    fill = (float(border_value),) * 4
    return cv2.warpAffine(img, m, (res, res), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def transform_points(points: np.ndarray, center: np.ndarray, scale: float,
                     res: int = CROP_SIZE, rot: float = 0.0) -> np.ndarray:
    """Image pixels `Nx2` -> crop pixels `Nx2` under the same map as `crop_image`."""
    m = crop_transform(center, scale, res, rot)
    return points[:, :2] @ m[:, :2].T + m[:, 2]


def normalise_keypoints(crop_px: np.ndarray, res: int = CROP_SIZE) -> np.ndarray:
    """Crop pixels -> [-1, 1] (the coordinates the weak-perspective camera predicts)."""
    return 2.0 * crop_px / res - 1.0


def denormalise_keypoints(norm: np.ndarray, res: int = CROP_SIZE) -> np.ndarray:
    """[-1, 1] -> crop pixels."""
    return (norm + 1.0) * res / 2.0


def box_to_center_scale(x0: float, y0: float, x1: float, y1: float,
                        rescale: float = 1.2) -> tuple[np.ndarray, float]:
    """A detection box -> (center, scale) of a square crop around it, padded by `rescale`."""
    center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0], dtype=np.float64)
    side = max(x1 - x0, y1 - y0) * rescale
    return center, side / SCALE_UNIT
