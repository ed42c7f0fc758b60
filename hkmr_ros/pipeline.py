"""The perception pipeline without ROS: an RGB frame in, tracked and smoothed people out.

    pipe = Pipeline(load_estimator(), PipelineConfig(detector="hog", max_people=4))
    result = pipe.process(rgb, stamp_ns, frame_id, camera=CameraModel.from_camera_info(info))

Per frame: find person boxes (upstream detections when given, else the embedded detector when
the tracker asks for it, else each track's box from its last joints), crop them with the
training rule, run the estimator on all crops in one batch, turn each estimate into a person in
the camera frame (translation from the weak-perspective camera, the crop and the intrinsics),
match it to its track, and smooth it. The node and the bag tools share this class.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from hkmr_ros import crops as crop_rules
from hkmr_ros import geometry
from hkmr_ros.camera import CameraModel
from hkmr_ros.detection import (DEFAULT_CLASSES, BlazePoseConfig, HogConfig, clean_detections,
                                detections_from_msg, make_detector)
from hkmr_ros.images import ImageDecodeError, decode_compressed, decode_image
from hkmr_ros.people import Detection, FrameResult, Person
from hkmr_ros.smoothing import SmoothingConfig
from hkmr_ros.tracking import Tracker, TrackingConfig, joints_box

DETECTORS = ("hog", "blazepose", "fixed", "whole_image", "none")
STAGES = ("detect", "crop", "infer", "track", "smooth")


@dataclass
class PipelineConfig:
    """Everything the pipeline can be told. `validate()` rejects absurd values with a clear error.

    detector: 'hog' or 'blazepose' (embedded), 'fixed' (fixed_box), 'whole_image', or 'none'
    (upstream detections only, tracking in between). box_rescale: detection box -> square crop padding
    (training's 1.2). confidence_margin: a joint this far inside the crop/image edge (in
    half-crop units) gets confidence 1, one this far outside gets 0.
    """

    detector: str = "hog"
    fixed_box: Optional[Sequence[float]] = None
    hog: HogConfig = field(default_factory=HogConfig)
    blazepose: BlazePoseConfig = field(default_factory=BlazePoseConfig)
    detection_classes: Sequence[str] = DEFAULT_CLASSES
    min_detection_score: float = 0.0
    max_people: int = 6
    box_rescale: float = 1.2
    confidence_margin: float = 0.1
    vertices: bool = True
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)

    def validate(self) -> "PipelineConfig":
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.detector == "fixed" and self.fixed_box is None:
            raise ValueError("detector 'fixed' needs fixed_box = (x0, y0, x1, y1) in pixels")
        if not (isinstance(self.max_people, int) and 1 <= self.max_people <= 64):
            raise ValueError(f"max_people must be an integer in [1, 64], got {self.max_people!r}")
        if not (math.isfinite(self.box_rescale) and 1.0 <= self.box_rescale <= 3.0):
            raise ValueError(f"box_rescale must be in [1, 3] (training uses 1.2), got {self.box_rescale!r}")
        if not (math.isfinite(self.min_detection_score) and 0.0 <= self.min_detection_score <= 1.0):
            raise ValueError(f"min_detection_score must be in [0, 1], got {self.min_detection_score!r}")
        if not (math.isfinite(self.confidence_margin) and 0.0 < self.confidence_margin <= 1.0):
            raise ValueError(f"confidence_margin must be in (0, 1], got {self.confidence_margin!r}")
        self.hog.validate()
        self.blazepose.validate()
        self.tracking.validate()
        self.smoothing.validate()
        return self


def crop_box(box: np.ndarray, rescale: float) -> np.ndarray:
    """Person box -> (cx, cy, side) of the square training crop around it."""
    center, scale = crop_rules.box_to_center_scale(*[float(v) for v in box], rescale=rescale)
    return np.array([center[0], center[1], scale * crop_rules.SCALE_UNIT])


def project_to_image(joints: np.ndarray, cam: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """24x3 model joints, weak-perspective cam (s, tx, ty), crop (cx, cy, side) -> 24x2 pixels."""
    norm = cam[0] * joints[:, :2] + cam[1:3]
    return crop[:2] + norm * crop[2] / 2.0


def camera_translation(cam: np.ndarray, crop: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Translation T (metres) that takes the model's joints into the camera frame.

    Weak perspective maps X to crop pixels c + (s X + t) side/2; a pinhole at depth z maps it to
    p + f X / z. Equal for every X when z = 2 f / (s side) (f the mean focal length) and
    T_xy = t / s + (c - p) z / f_xy, with c the crop centre and p the principal point.
    """
    s, tx, ty = float(cam[0]), float(cam[1]), float(cam[2])
    z = 2.0 * camera.focal / (s * float(crop[2]))
    x = tx / s + (float(crop[0]) - camera.cx) * z / camera.fx
    y = ty / s + (float(crop[1]) - camera.cy) * z / camera.fy
    return np.array([x, y, z])


def joint_confidence(joints_2d: np.ndarray, crop: np.ndarray, width: int, height: int,
                     margin: float) -> np.ndarray:
    """Per joint in [0, 1]: how far inside both the crop and the image it lies.

    Distance to the nearest crop or image edge in half-crop units, mapped linearly from
    -margin (0) to +margin (1): joints cut off by the crop or the image are unreliable.
    """
    half = crop[2] / 2.0
    rel = (joints_2d - crop[:2]) / half
    in_crop = 1.0 - np.max(np.abs(rel), axis=1)
    in_img = np.min(np.stack([joints_2d[:, 0], width - joints_2d[:, 0],
                              joints_2d[:, 1], height - joints_2d[:, 1]], 1), axis=1) / half
    m = np.minimum(in_crop, in_img)
    return np.clip(0.5 + m / (2.0 * margin), 0.0, 1.0)


class Pipeline:
    """Stateful (tracks, filters) per camera stream. `process` and `reset` hold one lock, so a
    reset from another thread (a ROS callback) waits for the frame in progress."""

    def __init__(self, estimator, config: Optional[PipelineConfig] = None,
                 detector: Optional[Callable[[np.ndarray], List[Detection]]] = None):
        self.config = (config or PipelineConfig()).validate()
        self.estimator = estimator
        c = self.config
        self.detector = detector if detector is not None else make_detector(c.detector, c.fixed_box, c.hog, c.blazepose)
        self.tracker = Tracker(c.tracking, c.smoothing, c.max_people)
        self.body_model = str(getattr(estimator, "body_model_name", "smpl"))
        self._lock = threading.Lock()
        self.stats: Dict[str, object] = {"frames": 0, "skipped_frames": 0, "detector_runs": 0,
                                         "invalid_detections": 0, "failed_estimates": 0, "last_error": "",
                                         "track_end_reasons": self.tracker.end_reasons}

    # -- entry points ---------------------------------------------------------------------------

    def process_msg(self, msg, camera: Optional[CameraModel] = None,
                    detections: Optional[List[Detection]] = None) -> Optional[FrameResult]:
        """A sensor_msgs/Image or CompressedImage object -> FrameResult; None (counted in
        stats['skipped_frames'], reason in stats['last_error']) when it cannot be decoded."""
        t0 = time.perf_counter()
        try:
            rgb = decode_msg(msg)
        except ImageDecodeError as e:
            self.stats["skipped_frames"] += 1
            self.stats["last_error"] = str(e)
            return None
        decode_ms = 1000.0 * (time.perf_counter() - t0)
        stamp = msg.header.stamp
        stamp_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        result = self.process(rgb, stamp_ns, str(msg.header.frame_id), camera, detections)
        result.timings_ms["decode"] = decode_ms
        result.timings_ms["total"] += decode_ms
        return result

    def detections_from_msg(self, msg) -> List[Detection]:
        """vision_msgs/Detection2DArray -> Detections with this pipeline's class filter."""
        return detections_from_msg(msg, self.config.detection_classes, self.config.min_detection_score)

    def reset(self) -> List[int]:
        """Forget every track (e.g. the camera jumped); returns the ended ids."""
        with self._lock:
            return self.tracker.reset()

    def process(self, image_rgb: np.ndarray, stamp_ns: int, frame_id: str = "",
                camera: Optional[CameraModel] = None,
                detections: Optional[List[Detection]] = None) -> FrameResult:
        """One HxWx3 uint8 RGB frame -> FrameResult. `detections`: upstream boxes for this frame
        (None = none arrived; the embedded detector or the tracks supply the crops)."""
        with self._lock:
            return self._process(image_rgb, stamp_ns, frame_id, camera, detections)

    def _process(self, image_rgb, stamp_ns, frame_id, camera, detections) -> FrameResult:
        img = np.asarray(image_rgb)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"image must be HxWx3 uint8 RGB, got shape {img.shape} dtype {img.dtype}")
        h, w = img.shape[:2]
        cam_model = self._camera(camera, w, h)
        times = {k: 0.0 for k in STAGES}
        t_start = time.perf_counter()
        before = {t.track_id for t in self.tracker.tracks}
        ended: List[int] = []

        t = time.perf_counter()
        dets, ran = self._detect(img, detections, w, h)
        times["detect"] = _ms(t)

        t = time.perf_counter()
        cands, gone = self.tracker.candidates(dets)
        ended += gone
        crops, boxes = [], []
        for cand in cands:
            cb = crop_box(cand.box, self.config.box_rescale)
            crops.append(crop_rules.crop_image(img, cb[:2], cb[2] / crop_rules.SCALE_UNIT))
            boxes.append(cb)
        times["crop"] = _ms(t)

        t = time.perf_counter()
        estimates = self.estimator.estimate(np.stack(crops)) if crops else []
        times["infer"] = _ms(t)

        t = time.perf_counter()
        raw = []
        for cand, cb, est in zip(cands, boxes, estimates):
            j2d = self._image_joints(est, cb)
            track = self.tracker.commit(cand, j2d, w, h)
            if track is not None:
                raw.append((track, cand, cb, est, j2d))
        ended += self.tracker.resolve_duplicates()
        ended += self.tracker.enforce_max()
        alive = {id(tr) for tr in self.tracker.visible()}
        if self.config.tracking.enabled:
            raw = [r for r in raw if id(r[0]) in alive]
        times["track"] = _ms(t)

        t = time.perf_counter()
        people = self._people(raw, cam_model, stamp_ns, w, h)
        times["smooth"] = _ms(t)

        after = {tr.track_id for tr in self.tracker.tracks}
        ended = sorted(set(ended) | (before - after))
        times["total"] = _ms(t_start)
        self.stats["frames"] += 1
        people.sort(key=lambda p: p.track_id)
        return FrameResult(int(stamp_ns), str(frame_id), w, h, people, ended, ran, times)

    # -- stages ---------------------------------------------------------------------------------

    def _camera(self, camera: Optional[CameraModel], w: int, h: int) -> CameraModel:
        if camera is None:
            return CameraModel.assumed(w, h)
        if (camera.width, camera.height) != (w, h):
            return camera.scaled_to(w, h)
        return camera

    def _detect(self, img, detections, w, h):
        """-> (detections or None when no detector ran, whether boxes came this frame)."""
        c = self.config
        if detections is not None:
            given = list(detections)
            dets = clean_detections(given, w, h, c.max_people, c.min_detection_score)
            self.stats["invalid_detections"] += sum(
                1 for d in given if not (isinstance(d, Detection) and d.is_valid(w, h)))
            return dets, True
        if self.detector is None or not self.tracker.needs_detection():
            return None, False
        self.stats["detector_runs"] += 1
        return clean_detections(self.detector(img), w, h, c.max_people, c.min_detection_score), True

    def _image_joints(self, est, cb: np.ndarray) -> Optional[np.ndarray]:
        """The estimate's joints in image pixels, or None when the estimate is unusable."""
        if est.joints is None:
            raise ValueError("the estimator gives no 3D joints: export the model with the body model "
                             "(sidecar format hkmr-onnx/2)")
        cam = np.asarray(est.cam, dtype=np.float64)
        joints = np.asarray(est.joints, dtype=np.float64)
        rot = est.rotmat if est.rotmat is not None else est.pose
        finite = all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in (cam, joints, rot, est.betas))
        if not (finite and cam.shape == (3,) and joints.shape == (24, 3) and cam[0] > 1e-3):
            self.stats["failed_estimates"] += 1
            return None
        return project_to_image(joints, cam, cb)

    def _report_box(self, track, joints_2d: np.ndarray) -> np.ndarray:
        """The published box: this frame's detection, else the box around the smoothed joints."""
        if track.box_from_detection:
            return track.box.copy()
        return joints_box(joints_2d.astype(np.float64), tuple(self.config.tracking.joint_box_pad))

    def _people(self, raw, camera: CameraModel, stamp_ns: int, w: int, h: int) -> List[Person]:
        """Estimates -> smoothed people in the camera frame (rotation maths batched over people)."""
        if not raw:
            return []
        c = self.config
        n = len(raw)
        cams = np.array([np.asarray(est.cam, dtype=np.float64) for _, _, _, est, _ in raw])
        joints = np.array([np.asarray(est.joints, dtype=np.float64) for _, _, _, est, _ in raw])
        rot_in = np.empty((n, 24, 3, 3))
        for i, (_, _, _, est, _) in enumerate(raw):
            rot_in[i] = (est.rotmat if est.rotmat is not None else
                         geometry.axis_angle_to_matrix(np.asarray(est.pose, dtype=np.float64).reshape(24, 3)))
        rot_in = geometry.orthonormalise(rot_in)
        pelvis_s, rel_s, rot_s, betas_s = np.empty((n, 3)), np.empty((n, 24, 3)), np.empty_like(rot_in), []
        for i, (track, _, cb, est, _) in enumerate(raw):
            pelvis = joints[i, 0] + camera_translation(cams[i], cb, camera)
            out = track.smoother(stamp_ns * 1e-9, pelvis, joints[i] - joints[i, 0], rot_in[i],
                                 np.asarray(est.betas, dtype=np.float64))
            pelvis_s[i], rel_s[i], rot_s[i] = out[0], out[1], out[2]
            betas_s.append(np.asarray(out[3], np.float32))
        joints_cam = rel_s + pelvis_s[:, None, :]
        poses = geometry.matrix_to_axis_angle(rot_s).reshape(n, 72).astype(np.float32)
        orients = geometry.joint_orientations(rot_s)
        j2d = camera.project(joints_cam.reshape(-1, 3)).reshape(n, 24, 2).astype(np.float32)
        people = []
        for i, (track, _, cb, est, raw_j2d) in enumerate(raw):
            verts = None
            if c.vertices and est.vertices is not None:
                verts = (np.asarray(est.vertices, dtype=np.float64) - joints[i, 0] + pelvis_s[i]).astype(np.float32)
            people.append(Person(
                track_id=int(track.track_id), score=float(track.score), box=self._report_box(track, j2d[i]),
                pose=poses[i], rotmat=rot_s[i].astype(np.float32), betas=betas_s[i],
                cam=cams[i].astype(np.float32), translation=pelvis_s[i].copy(), joints=joints_cam[i],
                joint_orientations=orients[i],
                joint_confidence=joint_confidence(raw_j2d, cb, w, h, c.confidence_margin).astype(np.float32),
                joints_2d=j2d[i], vertices=verts, crop_box=cb))
        return people


def decode_msg(msg) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage object (rosbags or rclpy) -> HxWx3 uint8 RGB."""
    if hasattr(msg, "format"):
        return decode_compressed(msg.format, msg.data)
    return decode_image(msg.encoding, msg.width, msg.height, msg.step, msg.data, msg.is_bigendian)


def _ms(t0: float) -> float:
    return 1000.0 * (time.perf_counter() - t0)
