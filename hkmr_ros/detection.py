"""Person boxes: from an upstream vision_msgs detector, the embedded HOG detector, or a fixed region.

On a robot the first-class path is an upstream detector publishing vision_msgs/Detection2DArray
(matched to the image by stamp, filtered by class); the embedded fallbacks are OpenCV's HOG people
detector (its weights ship inside OpenCV 4.x) and MediaPipe's BlazePose person detector (its
ONNX conversion ships in hkmr_ros/data, run by ONNX Runtime); a fixed region or the whole image
serves a camera that always frames one person.
"""
from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from hkmr_ros.people import Detection

DEFAULT_CLASSES: Tuple[str, ...] = ("person",)


# --- upstream vision_msgs -----------------------------------------------------------------------

def _hypotheses(det) -> List[Tuple[str, float]]:
    """(class_id, score) of a vision_msgs/Detection2D's results (Humble+ and Foxy layouts)."""
    out = []
    for r in getattr(det, "results", []) or []:
        hyp = getattr(r, "hypothesis", r)          # Humble+: results[i].hypothesis.class_id
        cid = getattr(hyp, "class_id", getattr(hyp, "id", ""))  # Foxy: results[i].id
        out.append((str(cid), float(getattr(hyp, "score", 1.0))))
    return out


def _box_of(det) -> np.ndarray:
    bb = det.bbox
    c = bb.center
    pos = getattr(c, "position", c)                # vision_msgs 4: center.position.x; 3: center.x
    cx, cy = float(pos.x), float(pos.y)
    w, h = float(bb.size_x), float(bb.size_y)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


def detections_from_msg(msg, classes: Optional[Sequence[str]] = DEFAULT_CLASSES,
                        min_score: float = 0.0) -> List[Detection]:
    """A vision_msgs/Detection2DArray (rosbags or rclpy object) -> person Detections.

    `classes`: accepted class ids (case-insensitive); None or empty accepts all. A detection with
    no hypotheses counts as class "" with score 1. Non-finite or degenerate boxes are dropped.
    """
    wanted = {c.lower() for c in classes} if classes else None
    out: List[Detection] = []
    for det in getattr(msg, "detections", []) or []:
        hyps = _hypotheses(det) or [("", 1.0)]
        ok = [(c, s) for c, s in hyps if wanted is None or c.lower() in wanted]
        if not ok:
            continue
        label, score = max(ok, key=lambda cs: cs[1] if math.isfinite(cs[1]) else -1.0)
        d = Detection(_box_of(det), min(max(score, 0.0), 1.0) if math.isfinite(score) else float("nan"),
                      label or "person")
        if d.is_valid() and d.score >= min_score:
            out.append(d)
    return out


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(getattr(stamp, "nanosec", getattr(stamp, "nsec", 0)))


class DetectionBuffer:
    """Recent upstream detections by stamp, so an image finds the ones computed on it.

    Detectors publish the image's own stamp; `tolerance_ns` allows for drivers that restamp.
    """

    def __init__(self, capacity: int = 64, tolerance_ns: int = 5_000_000):
        if capacity < 1 or tolerance_ns < 0:
            raise ValueError(f"DetectionBuffer needs capacity >= 1 and tolerance_ns >= 0, got {capacity}, {tolerance_ns}")
        self.capacity = int(capacity)
        self.tolerance_ns = int(tolerance_ns)
        self._items: "OrderedDict[int, List[Detection]]" = OrderedDict()
        self._stamps: List[int] = []

    def add(self, stamp_ns: int, detections: List[Detection]) -> None:
        stamp_ns = int(stamp_ns)
        if stamp_ns not in self._items:
            bisect.insort(self._stamps, stamp_ns)
        self._items[stamp_ns] = list(detections)
        while len(self._stamps) > self.capacity:
            oldest = self._stamps.pop(0)
            self._items.pop(oldest, None)

    def match(self, stamp_ns: int) -> Optional[List[Detection]]:
        """The detections whose stamp is nearest to `stamp_ns` within tolerance, else None."""
        if not self._stamps:
            return None
        i = bisect.bisect_left(self._stamps, int(stamp_ns))
        best = None
        for k in (i - 1, i):
            if 0 <= k < len(self._stamps):
                dt = abs(self._stamps[k] - int(stamp_ns))
                if dt <= self.tolerance_ns and (best is None or dt < best[0]):
                    best = (dt, self._stamps[k])
        return None if best is None else self._items[best[1]]

    def __len__(self) -> int:
        return len(self._stamps)


# --- boxes --------------------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Nx4 and Mx4 boxes (x0, y0, x1, y1) -> NxM intersection over union."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def non_max_suppression(dets: List[Detection], iou_threshold: float = 0.5) -> List[Detection]:
    """Keep the highest-scoring of overlapping boxes."""
    order = sorted(dets, key=lambda d: -d.score)
    kept: List[Detection] = []
    for d in order:
        if all(box_iou(d.box, k.box)[0, 0] < iou_threshold for k in kept):
            kept.append(d)
    return kept


def clean_detections(dets: Iterable[Detection], width: int, height: int,
                     max_people: int, min_score: float = 0.0) -> List[Detection]:
    """Drop invalid boxes (NaN, degenerate, outside the image), clip, keep the best `max_people`."""
    out = []
    for d in dets:
        if not isinstance(d, Detection):
            continue
        if not d.is_valid(width, height) or d.score < min_score:
            continue
        b = d.box.copy()
        b[[0, 2]] = np.clip(b[[0, 2]], 0, width)
        b[[1, 3]] = np.clip(b[[1, 3]], 0, height)
        if b[2] - b[0] >= 4 and b[3] - b[1] >= 4:
            out.append(Detection(b, d.score, d.label))
    out.sort(key=lambda d: -d.score)
    return out[:max(int(max_people), 0)]


# --- detectors ----------------------------------------------------------------------------------

class FixedRegionDetector:
    """Always the same box (pixels), or the whole image when `box` is None."""

    name = "fixed"

    def __init__(self, box: Optional[Sequence[float]] = None):
        self.box = None if box is None else np.asarray(box, dtype=np.float64).reshape(4)
        if self.box is not None and not (np.all(np.isfinite(self.box)) and self.box[2] > self.box[0]
                                         and self.box[3] > self.box[1]):
            raise ValueError(f"fixed region must be a finite (x0, y0, x1, y1) with x1 > x0, y1 > y0, got {box!r}")

    def __call__(self, image_rgb: np.ndarray) -> List[Detection]:
        h, w = image_rgb.shape[:2]
        box = self.box if self.box is not None else np.array([0.0, 0.0, w, h])
        return [Detection(box, 1.0, "person")]


@dataclass
class HogConfig:
    """OpenCV HOG people detector settings.

    downscale: the image is shrunk by this factor first (the cost falls with its square; the
    smallest window found is 128 * downscale pixels tall, the person filling 84% of it).
    Scores are 1 / (1 + exp(-2 margin)) of the SVM margin: 0.5 on the boundary, so with
    hit_threshold 0 every detection scores at least 0.5 and min_score only bites above that.
    """

    downscale: float = 2.0
    win_stride: int = 8
    pyramid_scale: float = 1.1
    hit_threshold: float = 0.0
    min_score: float = 0.5
    nms_iou: float = 0.45

    def validate(self) -> "HogConfig":
        checks = [
            (math.isfinite(self.downscale) and 1.0 <= self.downscale <= 8.0, "downscale must be in [1, 8]"),
            (isinstance(self.win_stride, int) and 1 <= self.win_stride <= 64, "win_stride must be an integer in [1, 64]"),
            (math.isfinite(self.pyramid_scale) and 1.01 <= self.pyramid_scale <= 2.0, "pyramid_scale must be in [1.01, 2]"),
            (math.isfinite(self.hit_threshold) and -10.0 <= self.hit_threshold <= 10.0, "hit_threshold must be in [-10, 10]"),
            (math.isfinite(self.min_score) and 0.0 <= self.min_score <= 1.0, "min_score must be in [0, 1]"),
            (math.isfinite(self.nms_iou) and 0.0 < self.nms_iou <= 1.0, "nms_iou must be in (0, 1]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"hog.{msg}, got {self}")
        return self


class HogDetector:
    """OpenCV's built-in HOG + linear SVM pedestrian detector (Dalal & Triggs), no download.

    Its boxes are the 64x128 window, looser than a person: they are shrunk to the person inside
    (BODY_W x BODY_H of the window, centre BODY_DY lower), fractions that maximise recall at
    IoU 0.5 against the true boxes of the sample bag, so the crop rule sees person boxes.
    """

    name = "hog"
    BODY_W, BODY_H, BODY_DY = 0.6, 0.84, 0.03

    def __init__(self, config: Optional[HogConfig] = None):
        if not hasattr(cv2, "HOGDescriptor"):
            raise RuntimeError(
                f"OpenCV {cv2.__version__} has no HOGDescriptor (removed in OpenCV 5); install "
                "opencv-python-headless<5 or use upstream detections / a fixed region")
        self.config = (config or HogConfig()).validate()
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, image_rgb: np.ndarray) -> List[Detection]:
        c = self.config
        h, w = image_rgb.shape[:2]
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        f = float(c.downscale)
        if f != 1.0:
            gray = cv2.resize(gray, (max(int(round(w / f)), 1), max(int(round(h / f)), 1)),
                              interpolation=cv2.INTER_AREA)
        if gray.shape[0] < 128 or gray.shape[1] < 64:
            return []
        rects, weights = self._hog.detectMultiScale(
            gray, hitThreshold=c.hit_threshold, winStride=(c.win_stride, c.win_stride),
            padding=(8, 8), scale=c.pyramid_scale)
        dets = []
        sx = sy = f
        for (x, y, bw, bh), wt in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            cx, cy = (x + bw / 2) * sx, (y + bh * (0.5 + self.BODY_DY)) * sy
            pw, ph = bw * sx * self.BODY_W, bh * sy * self.BODY_H
            score = float(1.0 / (1.0 + math.exp(-2.0 * float(wt))))  # SVM margin -> (0, 1)
            if score >= c.min_score:
                dets.append(Detection([cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2], score, "person"))
        return non_max_suppression(dets, c.nms_iou)


DEFAULT_BLAZEPOSE_MODEL = Path(__file__).resolve().parent / "data" / "blazepose_detector.onnx"


@dataclass
class BlazePoseConfig:
    """MediaPipe's BlazePose person detector, run by ONNX Runtime.

    model: the ONNX file (default: hkmr_ros/data/blazepose_detector.onnx).
    tiles: a landscape (portrait) image is searched as two overlapping squares, left and right
    (top and bottom), so people appear 1.33x larger at 4:3 than in one letterboxed pass, for
    twice the cost. min_score: least sigmoid score; nms_iou: overlap of the detector's face
    boxes above which the weaker one is dropped.
    threads: ONNX Runtime intra-op threads for the detector.
    """

    model: Optional[str] = None
    min_score: float = 0.5
    nms_iou: float = 0.3
    tiles: bool = True
    threads: int = 1

    def validate(self) -> "BlazePoseConfig":
        checks = [
            (math.isfinite(self.min_score) and 0.0 < self.min_score < 1.0, "min_score must be in (0, 1)"),
            (math.isfinite(self.nms_iou) and 0.0 < self.nms_iou <= 1.0, "nms_iou must be in (0, 1]"),
            (isinstance(self.threads, int) and 1 <= self.threads <= 64, "threads must be an integer in [1, 64]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"blazepose.{msg}, got {self}")
        return self


def _ssd_anchors() -> np.ndarray:
    """The 2254 anchor centres (x, y in [0, 1]) of BlazePose's detector: MediaPipe's SSD anchors
    for a 224 input, strides 8, 16, 32, 32, 32, two anchors per layer and position."""
    strides = (8, 16, 32, 32, 32)
    out, layer = [], 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        per_cell = 2 * (same - layer)
        fm = int(math.ceil(224 / strides[layer]))
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        cells = np.stack([xs.reshape(-1), ys.reshape(-1)], 1)
        out.append(np.repeat(cells, per_cell, axis=0))
        layer = same
    return np.concatenate(out)


class BlazePoseDetector:
    """BlazePose's person detector (MediaPipe, Apache-2.0; converted by engine_build.blazepose_onnx).

    It finds a person from the face and regresses the hip centre and a point on a circle around
    the whole body; the person box is that circle narrowed to a standing person's width (fitted
    to the sample bag's true boxes). Trained on real photographs, unlike anything trained here.
    It needs the face: people seen from behind are found less often.
    """

    name = "blazepose"
    # person box from the hip centre c and the body circle radius r (fitted on the sample bag)
    HALF_WIDTH, HALF_HEIGHT, CENTRE_DY = 0.37, 0.98, 0.10
    INPUT = 224

    def __init__(self, config: Optional[BlazePoseConfig] = None):
        self.config = (config or BlazePoseConfig()).validate()
        path = Path(self.config.model) if self.config.model else DEFAULT_BLAZEPOSE_MODEL
        if not path.is_file():
            raise FileNotFoundError(f"BlazePose detector model not found: {path} (make it with "
                                    "python -m engine_build.blazepose_onnx, see its docstring)")
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.config.threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._anchors = _ssd_anchors()

    def _tiles(self, w: int, h: int) -> List[Tuple[int, int, int, int]]:
        if self.config.tiles and w > 1.1 * h:
            return [(0, 0, h, h), (w - h, 0, h, h)]
        if self.config.tiles and h > 1.1 * w:
            return [(0, 0, w, w), (0, h - w, w, w)]
        return [(0, 0, w, h)]

    def _detect_tile(self, tile: np.ndarray) -> List[Detection]:
        """One letterboxed pass -> Detections in tile pixels."""
        h, w = tile.shape[:2]
        n = self.INPUT
        s = n / max(h, w)
        nh, nw = max(int(round(h * s)), 1), max(int(round(w * s)), 1)
        oy, ox = (n - nh) // 2, (n - nw) // 2
        x = np.zeros((1, n, n, 3), np.float32)
        x[0, oy:oy + nh, ox:ox + nw] = cv2.resize(tile, (nw, nh), interpolation=cv2.INTER_AREA) / 127.5 - 1.0
        raw, logits = self._session.run(None, {"image_nhwc": x})
        score = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100, 100)))
        keep = np.nonzero(score >= self.config.min_score)[0]
        if keep.size == 0:
            return []
        raw, score, anc = raw[0, keep].astype(np.float64), score[keep], self._anchors[keep]
        offset, px = np.array([ox, oy], np.float64), n / s

        def to_px(p):
            return (p * n - offset) / s

        face_c = to_px(raw[:, 0:2] / n + anc)
        face_half = raw[:, 2:4] / 2.0 / s
        faces = np.concatenate([face_c - face_half, face_c + face_half], 1)
        kp = to_px(raw[:, 4:12].reshape(-1, 4, 2) / n + anc[:, None, :])
        order = np.argsort(-score)
        kept: List[int] = []
        for i in order:
            if all(box_iou(faces[i], faces[j])[0, 0] < self.config.nms_iou for j in kept):
                kept.append(int(i))
        out = []
        for i in kept:
            c, r = kp[i, 0], float(np.linalg.norm(kp[i, 1] - kp[i, 0]))
            if not (np.all(np.isfinite(c)) and math.isfinite(r) and 0 < r < 4 * px):
                continue
            cy = c[1] + self.CENTRE_DY * r
            out.append(Detection([c[0] - self.HALF_WIDTH * r, cy - self.HALF_HEIGHT * r,
                                  c[0] + self.HALF_WIDTH * r, cy + self.HALF_HEIGHT * r], float(score[i]), "person"))
        return out

    def __call__(self, image_rgb: np.ndarray) -> List[Detection]:
        h, w = image_rgb.shape[:2]
        dets: List[Detection] = []
        for x0, y0, tw, th in self._tiles(w, h):
            for d in self._detect_tile(image_rgb[y0:y0 + th, x0:x0 + tw]):
                dets.append(Detection(d.box + np.array([x0, y0, x0, y0]), d.score, d.label))
        return non_max_suppression(dets, 0.5) if len(self._tiles(w, h)) > 1 else dets


def make_detector(kind: str, box: Optional[Sequence[float]] = None, hog: Optional[HogConfig] = None,
                  blazepose: Optional[BlazePoseConfig] = None):
    """'hog' | 'blazepose' | 'fixed' (needs `box`) | 'whole_image' | 'none' (upstream detections only)."""
    if kind == "hog":
        return HogDetector(hog)
    if kind == "blazepose":
        return BlazePoseDetector(blazepose)
    if kind == "fixed":
        if box is None:
            raise ValueError("detector 'fixed' needs a box (x0, y0, x1, y1)")
        return FixedRegionDetector(box)
    if kind == "whole_image":
        return FixedRegionDetector(None)
    if kind in ("none", "upstream"):
        return None
    raise ValueError(f"unknown detector {kind!r}; expected 'hog', 'blazepose', 'fixed', 'whole_image' or 'none'")
