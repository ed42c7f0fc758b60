"""Plain data objects the pipeline produces: detections, tracked people, one frame's result.

No ROS types here: the node and the bag tools turn these into messages (hkmr_ros.messages).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class Detection:
    """A person box in image pixels: box = (x0, y0, x1, y1), score in [0, 1]."""

    box: np.ndarray
    score: float = 1.0
    label: str = "person"

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float64).reshape(4)
        self.score = float(self.score)

    def is_valid(self, width: Optional[int] = None, height: Optional[int] = None, min_side: float = 4.0) -> bool:
        """Finite, non-degenerate, and overlapping the image (when its size is given)."""
        b = self.box
        if not (np.all(np.isfinite(b)) and np.isfinite(self.score)):
            return False
        if b[2] - b[0] < min_side or b[3] - b[1] < min_side:
            return False
        if width is not None and height is not None:
            if b[2] <= 0 or b[3] <= 0 or b[0] >= width or b[1] >= height:
                return False
        return True


@dataclass
class Person:
    """One tracked person in one frame. 3D quantities are in the camera optical frame, metres.

    pose (72,) axis-angle, rotmat (24,3,3) local rotations, betas (10,), cam (3,) weak
    perspective (s, tx, ty) of the crop, translation (3,) pelvis position, joints (24,3),
    joint_orientations (24,4) global quaternions xyzw, joint_confidence (24,) in [0, 1],
    joints_2d (24,2) image pixels, vertices (V,3) when the model gives them (camera frame).
    """

    track_id: int
    score: float
    box: np.ndarray
    pose: np.ndarray
    rotmat: np.ndarray
    betas: np.ndarray
    cam: np.ndarray
    translation: np.ndarray
    joints: np.ndarray
    joint_orientations: np.ndarray
    joint_confidence: np.ndarray
    joints_2d: Optional[np.ndarray] = None
    vertices: Optional[np.ndarray] = None
    crop_box: Optional[np.ndarray] = None  # (cx, cy, side) of the square crop in pixels


@dataclass
class FrameResult:
    """Everyone found in one image, plus what the pipeline did to find them."""

    stamp_ns: int
    frame_id: str
    width: int
    height: int
    people: List[Person] = field(default_factory=list)
    ended_track_ids: List[int] = field(default_factory=list)
    detector_ran: bool = False
    timings_ms: Dict[str, float] = field(default_factory=dict)
