"""Synthetic people drawn with OpenCV and a fake estimator that "sees" them, for runtime tests.

Each person is a stick figure of one flat colour drawn from TEMPLATE_JOINTS; the fake estimator
finds the colour at the crop centre, fits the template's weak-perspective camera to that colour's
pixels, and returns the template joints (optionally with noise), so tracking and smoothing can be
tested without a network. Same surface as hkmr_ros.inference's Estimator.
"""
from __future__ import annotations

from typing import List

import cv2
import numpy as np

from hkmr_ros.inference import MeshEstimate
from hkmr_ros.skeleton import BONES

# SMPL-like rest joints (metres), camera-aligned axes: x right, y down, z away.
TEMPLATE_JOINTS = np.array([
    [0, 0, 0], [0.06, 0.09, 0], [-0.06, 0.09, 0], [0, -0.11, 0], [0.1, 0.47, 0], [-0.1, 0.47, 0],
    [0, -0.24, 0], [0.1, 0.87, 0], [-0.1, 0.87, 0], [0, -0.29, 0], [0.12, 0.93, -0.1],
    [-0.12, 0.93, -0.1], [0, -0.5, 0], [0.08, -0.42, 0], [-0.08, -0.42, 0], [0, -0.62, 0],
    [0.18, -0.44, 0], [-0.18, -0.44, 0], [0.22, -0.18, 0], [-0.22, -0.18, 0], [0.24, 0.06, 0],
    [-0.24, 0.06, 0], [0.25, 0.14, 0], [-0.25, 0.14, 0]], dtype=np.float64)
BACKGROUND = (90, 90, 90)
COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 240), (240, 200, 30), (200, 40, 220), (30, 210, 220)]
_EXTENT = TEMPLATE_JOINTS[:, 1].max() - TEMPLATE_JOINTS[:, 1].min()


def person_joints_2d(center, height_px) -> np.ndarray:
    """24x2 pixels of a person whose pelvis is at `center` and whose joints span `height_px`."""
    k = height_px / _EXTENT
    return np.asarray(center, dtype=np.float64) + TEMPLATE_JOINTS[:, :2] * k


def thickness(height_px: float) -> int:
    return max(2, int(round(height_px / 18)))


def draw_people(people, size=(480, 640)) -> np.ndarray:
    """people: list of (center_xy, height_px, colour index) -> HxWx3 uint8 RGB."""
    img = np.empty(size + (3,), np.uint8)
    img[:] = BACKGROUND
    for center, height, ci in people:
        j = person_joints_2d(center, height)
        th = thickness(height)
        for a, b in BONES:
            cv2.line(img, tuple(int(v) for v in j[a]), tuple(int(v) for v in j[b]), COLOURS[ci], th)
        cv2.circle(img, tuple(int(v) for v in j[15]), int(th * 1.8), COLOURS[ci], -1)
    return img


def gt_box(center, height) -> np.ndarray:
    """The box a good detector would report (joints plus head and limb thickness)."""
    j = person_joints_2d(center, height)
    pad = thickness(height) * 2
    return np.array([j[:, 0].min() - pad, j[:, 1].min() - pad * 1.5, j[:, 0].max() + pad, j[:, 1].max() + pad])


class FakeEstimator:
    """Fits TEMPLATE_JOINTS to the flat-coloured figure at the centre of each crop.

    noise_px: Gaussian noise on the fitted camera (crop pixels at 224), rot_noise: radians on
    every joint rotation, so smoothing has jitter to remove. delay_s: sleep per call (a slow
    network, for the worker tests).
    """

    backend_name = "fake"
    image_size = 224
    body_model_name = "smpl"

    def __init__(self, noise_px: float = 0.0, rot_noise: float = 0.0, seed: int = 0, delay_s: float = 0.0,
                 vertices: bool = False):
        self.rng = np.random.default_rng(seed)
        self.noise_px, self.rot_noise, self.delay_s = noise_px, rot_noise, delay_s
        self.faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32) if vertices else None
        self.marker_faces = self.faces
        self.calls = 0
        self.crops_seen = 0

    def _fit(self, crop: np.ndarray) -> np.ndarray:
        """-> cam (s, tx, ty); s = 0 when no figure is found."""
        res = crop.shape[0]
        c = res // 2
        centre = crop[c - 20:c + 20, c - 20:c + 20].reshape(-1, 3)
        fg = centre[np.any(centre != BACKGROUND, axis=1) & np.any(centre != 0, axis=1)]
        if len(fg) == 0:
            return np.zeros(3)
        colours, counts = np.unique(fg, axis=0, return_counts=True)
        colour = colours[np.argmax(counts)]
        ys, xs = np.nonzero(np.all(crop == colour, axis=2))
        if len(ys) < 10:
            return np.zeros(3)
        height_px = (ys.max() - ys.min())  # joints span + head radius + line thickness, roughly
        s_px = height_px / (_EXTENT * 1.12)
        # pelvis: the template's pelvis sits at a known fraction of the figure's height
        top = ys.min()
        pelvis_y = top + (0 - TEMPLATE_JOINTS[:, 1].min()) * s_px + 0.06 * height_px
        pelvis_x = (xs.min() + xs.max()) / 2.0
        s = s_px / (res / 2.0)
        return np.array([s, pelvis_x / (res / 2.0) - 1.0, pelvis_y / (res / 2.0) - 1.0])

    def estimate(self, crops) -> List[MeshEstimate]:
        import time
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        crops = list(crops)
        self.crops_seen += len(crops)
        out = []
        for crop in crops:
            cam = self._fit(np.asarray(crop))
            if self.noise_px and cam[0] > 0:
                cam = cam + np.r_[0.0, self.rng.normal(0, self.noise_px / 112.0, 2)]
            rot = np.tile(np.eye(3), (24, 1, 1))
            if self.rot_noise:
                from hkmr_ros.geometry import axis_angle_to_matrix
                rot = axis_angle_to_matrix(self.rng.normal(0, self.rot_noise, (24, 3)))
            from hkmr_ros.geometry import matrix_to_axis_angle
            verts = None
            if self.faces is not None:
                verts = TEMPLATE_JOINTS[:4].astype(np.float32)
            out.append(MeshEstimate(pose=matrix_to_axis_angle(rot).reshape(72).astype(np.float32),
                                rotmat=rot.astype(np.float32), betas=np.zeros(10, np.float32),
                                cam=cam.astype(np.float32), joints=TEMPLATE_JOINTS.astype(np.float32),
                                vertices=verts))
        return out


class ListDetector:
    """A detector that returns prepared boxes per call and counts calls."""

    name = "list"

    def __init__(self, boxes_fn):
        self.boxes_fn = boxes_fn
        self.calls = 0

    def __call__(self, image):
        from hkmr_ros.people import Detection
        self.calls += 1
        return [Detection(b, 0.9) for b in self.boxes_fn(self.calls - 1)]
