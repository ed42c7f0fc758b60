"""The node's parameters and its running statistics, without ROS.

Every parameter is a `ParamSpec` (default, description, range or choices), so the node declares
them with descriptors and validates a change before it is accepted; the pipeline's own
settings are read from `PipelineConfig`'s dataclass fields (nested configs as dotted names such
as `tracking.detect_every`), so a new pipeline setting becomes a parameter without touching the
node. Kept free of rclpy so CI tests it without ROS.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from hkmr_ros.pipeline import DETECTORS

Number = (int, float)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. `live`: a change applies to the running node; otherwise at the next configure."""

    name: str
    default: Any
    description: str
    range: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None
    live: bool = False
    read_only: bool = False

    @property
    def kind(self) -> type:
        """bool, int, float, str or list (of str, or of float when the default is)."""
        if isinstance(self.default, bool):
            return bool
        if isinstance(self.default, (list, tuple)):
            return list
        return type(self.default)

    def constraints(self) -> str:
        """Human-readable constraints for the descriptor's additional_constraints."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.range is not None:
            return f"in [{self.range[0]}, {self.range[1]}]"
        return ""

    def check(self, value: Any) -> Optional[str]:
        """None if `value` is acceptable, else the reason (for SetParametersResult.reason)."""
        kind = self.kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is list:
            if self.default and isinstance(self.default[0], float):
                ok = isinstance(value, (list, tuple)) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
                if not ok or len(value) != len(self.default):
                    return f"{self.name} must be {len(self.default)} finite numbers, got {value!r}"
                return None
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                return f"{self.name} must be a list of strings, got {value!r}"
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{self.name} must be a {kind.__name__}, got {type(value).__name__} {value!r}"
        if kind is float and not math.isfinite(value):
            return f"{self.name} must be finite, got {value!r}"
        if self.range is not None and not (self.range[0] <= value <= self.range[1]):
            return f"{self.name} must be in [{self.range[0]}, {self.range[1]}], got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        return None


BACKEND_CHOICES = ("auto", "onnxruntime", "onnxruntime-cuda", "tensorrt")

# The node's own parameters (topics, model, outputs). Topic names are relative, so a namespace
# or remapping moves them; `image_topic` may also be set directly (the launch file does).
NODE_PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec("image_topic", "image_raw",
              "Input image topic (sensor_msgs/Image). With compressed=true the node subscribes "
              "<image_topic>/compressed (sensor_msgs/CompressedImage), the image_transport convention."),
    ParamSpec("compressed", False, "Subscribe the CompressedImage (JPEG/PNG) topic instead of the raw Image."),
    ParamSpec("camera_info_topic", "camera_info",
              "sensor_msgs/CameraInfo of the camera; its K gives the metric pelvis translation. Empty: "
              "no CameraInfo, a focal length of one image diagonal is assumed."),
    ParamSpec("detections_topic", "",
              "Upstream vision_msgs/Detection2DArray with the image's stamp (empty: none, the "
              "pipeline's own detector finds people)."),
    ParamSpec("detection_tolerance", 0.005,
              "Largest stamp difference (seconds) between an image and the detections used for it.",
              range=(0.0, 10.0)),
    ParamSpec("model", "",
              "ONNX model (.onnx with its .json sidecar; the tensorrt backend builds an engine from it once "
              "and caches it); empty: the shipped default."),
    ParamSpec("backend", "auto", "Inference backend: auto picks TensorRT, then ONNX Runtime CUDA, then CPU.",
              choices=BACKEND_CHOICES),
    ParamSpec("threads", 0, "ONNX Runtime intra-op threads (0: the usable CPUs, at most 4).", range=(0, 64)),
    ParamSpec("precision", "fp32", "TensorRT engine precision.", choices=("fp32", "fp16")),
    ParamSpec("engine_cache_dir", "", "Where built TensorRT engines are kept and looked up (empty: beside the "
              "model)."),
    ParamSpec("warmup", True, "Run the network once during configure so the first frame is not slow."),
    ParamSpec("publish_overlay", True, "Publish the image with skeletons and ids drawn (only while subscribed).",
              live=True),
    ParamSpec("publish_markers", True, "Publish visualization_msgs/MarkerArray skeletons.", live=True),
    ParamSpec("publish_mesh", False, "Add each person's mesh (TRIANGLE_LIST) to the markers when the model "
              "has vertices (its decimated display mesh when it ships one).", live=True),
    ParamSpec("publish_tf", False, "Broadcast a TF frame per tracked person at the pelvis, child of the image "
              "frame.", live=True),
    ParamSpec("tf_prefix", "hkmr_person_", "TF child frame name prefix; the track id is appended.", live=True),
    ParamSpec("marker_namespace", "hkmr", "Namespace of the published markers.", live=True),
    ParamSpec("input_queue_depth", 2, "Depth of the sensor-data (best effort) input subscriptions.",
              range=(1, 100)),
    ParamSpec("output_queue_depth", 10, "Depth of the reliable output publishers.", range=(1, 1000)),
    ParamSpec("diagnostics_period", 1.0, "Seconds between diagnostics messages (steady clock).",
              range=(0.1, 60.0)),
    ParamSpec("stale_input_timeout", 3.0, "Seconds without an image before diagnostics warn.", range=(0.1, 3600.0),
              live=True),
    ParamSpec("autostart", False, "Configure and activate right after start (plain ros2 run / ros2 launch use "
              "on Humble and Jazzy alike).", read_only=True),
    ParamSpec("exit_on_fatal", True, "Exit with a non-zero status when configure cannot load the model "
              "(off: stay unconfigured for a lifecycle manager to retry).", read_only=True),
)

# Descriptions and ranges of the pipeline's settings (PipelineConfig fields, dotted for nested
# configs). A field missing here is still declared, with a generic description; the runtime test
# lists missing ones so they get written.
PIPELINE_DOCS: Dict[str, Tuple[str, Optional[Tuple[float, float]], Optional[Tuple[str, ...]]]] = {
    "detector": ("Embedded person detector when no upstream detections come (fixed: fixed_box; none: "
                 "upstream detections only, tracking in between).", None, tuple(DETECTORS)),
    "fixed_box": ("Box x0, y0, x1, y1 (pixels) for detector=fixed; all zeros: unset.", None, None),
    "hog.downscale": ("HOG: the image is shrunk by this factor first (smallest person found: 128 x it, "
                      "pixels tall).", (1.0, 8.0), None),
    "hog.win_stride": ("HOG window stride (pixels of the shrunk image).", (1, 64), None),
    "hog.pyramid_scale": ("HOG image pyramid scale step.", (1.01, 2.0), None),
    "hog.hit_threshold": ("HOG SVM margin threshold.", (-10.0, 10.0), None),
    "hog.min_score": ("Least HOG detection score kept.", (0.0, 1.0), None),
    "hog.nms_iou": ("HOG non-maximum suppression IoU.", (0.0, 1.0), None),
    "detection_classes": ("Class ids accepted from upstream detections (case-insensitive; empty: all).",
                          None, None),
    "min_detection_score": ("Least detection score kept (upstream and embedded).", (0.0, 1.0), None),
    "box_rescale": ("Person box to square crop padding (training uses 1.2).", (1.0, 3.0), None),
    "confidence_margin": ("Joint confidence ramp width at crop and image edges (half-crop units).",
                          (0.0, 1.0), None),
    "vertices": ("Keep the mesh vertices when the model outputs them (needed for publish_mesh).", None, None),
    "max_people": ("Most people processed per image (largest boxes first).", (1, 64), None),
    "tracking.enabled": ("Track people across frames (off: detect every frame, track id 0).", None, None),
    "tracking.detect_every": ("Frames between detector runs while every track is fine (finds newcomers).",
                              (1, 100000), None),
    "tracking.iou_threshold": ("Least match quality between a detection and a track.", (0.0, 1.0), None),
    "tracking.max_unconfirmed": ("Detector runs in a row that miss a track before it ends.", (1, 1000), None),
    "tracking.joint_box_scale": ("Joint bounding box to person box scale for the next crop.", (1.0, 3.0), None),
    "tracking.motion": ("Share of the last box motion extrapolated to the next frame.", (0.0, 1.0), None),
    "tracking.duplicate_iou": ("Two tracks overlapping more than this are one person.", (0.0, 1.0), None),
    "tracking.max_hidden": ("Frames a hidden (occluded) track waits for a detection before it ends.",
                            (0, 100000), None),
    "tracking.detect_every_hidden": ("Detector period (frames) while a track is hidden.", (1, 100000), None),
    "tracking.max_scale_change": ("Largest factor a tracked box side may change by between frames "
                                  "(bigger: the track is lost).", (1.0, 100.0), None),
    "tracking.confirm_detections": ("Detections a track needs before it may hide behind someone.",
                                    (1, 1000), None),
    "tracking.joint_box_pad": ("Joints' extent to person box padding (each side, top, bottom) as fractions "
                               "of the extent.", None, None),
    "blazepose.min_score": ("Least BlazePose detection score kept.", (0.0, 1.0), None),
    "blazepose.nms_iou": ("BlazePose non-maximum suppression IoU (face boxes).", (0.0, 1.0), None),
    "blazepose.tiles": ("Search a landscape (portrait) image as two overlapping squares (people 1.33x "
                        "larger at 4:3, twice the cost).", None, None),
    "blazepose.threads": ("ONNX Runtime intra-op threads of the BlazePose detector.", (1, 64), None),
    "blazepose.model": ("BlazePose detector ONNX file; empty: the shipped one.", None, None),
    "tracking.min_inside": ("Least share of a person box inside the image to keep its track.", (0.0, 1.0), None),
    "tracking.min_box_side": ("Smallest person box side (pixels).", (0.0, 10000.0), None),
    "smoothing.enabled": ("One-Euro smoothing of joints, translation, rotations and shape per track.", None, None),
    "smoothing.reset_after_s": ("A gap longer than this (seconds) restarts a track's filters.", (0.0, 3600.0), None),
}
for _q, _unit in (("joints", "m/s"), ("translation", "m/s"), ("rotations", "rad/s"), ("betas", "1/s")):
    PIPELINE_DOCS[f"smoothing.{_q}.min_cutoff"] = (
        f"One-Euro cutoff at rest (Hz) of the {_q}: lower is smoother.", (0.0, 1000.0), None)
    PIPELINE_DOCS[f"smoothing.{_q}.beta"] = (
        f"One-Euro speed coefficient of the {_q} (per {_unit}): higher is less lag.", (0.0, 1000.0), None)
    PIPELINE_DOCS[f"smoothing.{_q}.d_cutoff"] = (
        f"One-Euro cutoff (Hz) of the {_q}' speed estimate.", (0.0, 1000.0), None)

_SCALARS = (bool, int, float, str)

# Optional pipeline fields (None by default) that become parameters: this value means None.
NONE_ARRAYS: Dict[str, Any] = {"fixed_box": [0.0, 0.0, 0.0, 0.0], "blazepose.model": ""}


def _flatten(obj: Any, prefix: str = "") -> Iterable[Tuple[str, Any]]:
    """(dotted name, value) of a dataclass's scalar and list fields, nested dataclasses expanded."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            yield from _flatten(value, name + ".")
        elif value is None and name in NONE_ARRAYS:
            none = NONE_ARRAYS[name]
            yield name, list(none) if isinstance(none, list) else none
        elif isinstance(value, _SCALARS):
            yield name, value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, Number) and not isinstance(v, bool)
                                                      for v in value) and value:
            yield name, [float(v) for v in value]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            yield name, list(value)
        # None or other objects (e.g. an optional box left unset) are not parameters


def docstring_fields(cls: type) -> Dict[str, str]:
    """'field: text' descriptions from a config dataclass's docstring (the pipeline's convention)."""
    names = [f.name for f in dataclasses.fields(cls)]
    text = " ".join((cls.__doc__ or "").split())
    hits = sorted((m.start(), m.end(), m.group(1)) for m in
                  re.finditer(r"(?<![\w.])(" + "|".join(map(re.escape, names)) + r"):\s", text)) if names else []
    out: Dict[str, str] = {}
    for i, (start, end, name) in enumerate(hits):
        stop = hits[i + 1][0] if i + 1 < len(hits) else len(text)
        out.setdefault(name, text[end:stop].strip())
    return out


def _doc_of(config: Any, dotted: str) -> Optional[str]:
    """The docstring description of a (nested) field, e.g. 'tracking.max_hidden'."""
    *path, leaf = dotted.split(".")
    obj = config
    for part in path:
        obj = getattr(obj, part)
    desc = docstring_fields(type(obj)).get(leaf)
    return desc[0].upper() + desc[1:] if desc else None


def pipeline_param_specs(config: Any) -> Tuple[ParamSpec, ...]:
    """ParamSpecs for a PipelineConfig instance (its values are the defaults); all live.

    Description and range from PIPELINE_DOCS, else the description from the config class's
    docstring (values are then checked by the config's own validate())."""
    specs = []
    for name, value in _flatten(config):
        doc, rng, choices = PIPELINE_DOCS.get(
            name, (_doc_of(config, name) or f"Pipeline setting {name} (see hkmr_ros.pipeline).", None, None))
        if isinstance(value, bool):
            rng = None
        elif isinstance(value, int) and rng is not None:
            rng = (int(rng[0]), int(rng[1]))
        elif isinstance(value, float) and rng is not None:
            rng = (float(rng[0]), float(rng[1]))
        else:
            rng = None if not isinstance(value, (int, float)) else rng
        specs.append(ParamSpec(name, value, doc, range=rng, choices=choices, live=True))
    return tuple(specs)


def missing_pipeline_docs(config: Any) -> List[str]:
    """PipelineConfig fields with no description, neither in PIPELINE_DOCS nor in their docstring."""
    return [name for name, _ in _flatten(config) if name not in PIPELINE_DOCS and not _doc_of(config, name)]


def apply_to_config(config: Any, values: Mapping[str, Any], _prefix: str = "") -> Any:
    """A copy of the (nested) dataclass `config` with dotted-name `values` replaced."""
    nested: Dict[str, Dict[str, Any]] = {}
    direct: Dict[str, Any] = {}
    for name, value in values.items():
        head, _, rest = name.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted((set(direct) | set(nested)) - known)
    if unknown:
        raise ValueError(f"unknown pipeline settings: {', '.join(unknown)}")
    changes: Dict[str, Any] = {}
    for name, value in direct.items():
        old = getattr(config, name)
        full = _prefix + name
        if full in NONE_ARRAYS and isinstance(value, (list, tuple)):
            value = None if not any(float(v) for v in value) else tuple(float(v) for v in value)
        elif full in NONE_ARRAYS and isinstance(value, str):
            value = value or None
        elif isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        changes[name] = value
    for name, sub in nested.items():
        changes[name] = apply_to_config(getattr(config, name), sub, f"{_prefix}{name}.")
    return dataclasses.replace(config, **changes)


def validate_config(config: Any) -> Optional[str]:
    """The config's own validate() (which checks its nested configs); None when fine, else the reason."""
    check = getattr(config, "validate", None)
    if not callable(check):
        return None
    try:
        check()
    except (ValueError, TypeError) as e:
        return str(e)
    return None


# --- running statistics -----------------------------------------------------------------------

class WindowStats:
    """Counts and latencies over a sliding time window (seconds), thread-safe.

    The node's executor thread counts received frames; the worker thread counts processed,
    bad and failed frames with their latency. `snapshot()` gives rates per second.
    """

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = float(window_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._events: Dict[str, Deque[float]] = collections.defaultdict(collections.deque)
        self._latency: Deque[Tuple[float, float]] = collections.deque()
        self._age: Deque[Tuple[float, float]] = collections.deque()
        self.totals: Dict[str, int] = collections.Counter()
        self.started = clock()
        self.last_input: Optional[float] = None

    def count(self, what: str, n: int = 1) -> None:
        now = self._clock()
        with self._lock:
            q = self._events[what]
            for _ in range(n):
                q.append(now)
            self.totals[what] += n
            if what == "input":
                self.last_input = now
            self._trim(now)

    def latency(self, processing_ms: float, stamp_age_ms: Optional[float] = None) -> None:
        """Receive-to-publish time of one frame, and the age of its stamp when published."""
        now = self._clock()
        with self._lock:
            self._latency.append((now, float(processing_ms)))
            if stamp_age_ms is not None and math.isfinite(stamp_age_ms):
                self._age.append((now, float(stamp_age_ms)))
            self._trim(now)

    def _trim(self, now: float) -> None:
        edge = now - self.window_s
        for q in self._events.values():
            while q and q[0] < edge:
                q.popleft()
        for q in (self._latency, self._age):
            while q and q[0][0] < edge:
                q.popleft()

    def snapshot(self) -> Dict[str, float]:
        """Rates (per second over the window, or since start when younger), latency percentiles,
        totals and the seconds since the last input (inf when none yet)."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            span = max(min(self.window_s, now - self.started), 1e-3)
            out: Dict[str, float] = {}
            for what, q in self._events.items():
                out[f"{what}_rate"] = len(q) / span
            for what, n in self.totals.items():
                out[f"{what}_total"] = float(n)
            for key, q in (("latency", self._latency), ("stamp_age", self._age)):
                vals = sorted(v for _, v in q)
                if vals:
                    out[f"{key}_median_ms"] = percentile(vals, 50.0)
                    out[f"{key}_p90_ms"] = percentile(vals, 90.0)
                    out[f"{key}_max_ms"] = vals[-1]
            out["since_input_s"] = math.inf if self.last_input is None else now - self.last_input
            return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


# Diagnostic levels (diagnostic_msgs/DiagnosticStatus)
OK, WARN, ERROR, STALE = 0, 1, 2, 3


def diagnostic_summary(snap: Mapping[str, float], active: bool, stale_after_s: float,
                       dropped_in_window: float, bad_in_window: float) -> Tuple[int, str]:
    """(level, message) of the node's DiagnosticStatus from a WindowStats snapshot."""
    if not active:
        return OK, "inactive"
    if snap.get("failed_rate", 0.0) > 0:
        return ERROR, "frames fail in the pipeline (see the log)"
    if snap.get("since_input_s", math.inf) > stale_after_s:
        return WARN, "no images received"
    problems = []
    if dropped_in_window > 0:
        problems.append("dropping frames (processing slower than input)")
    if bad_in_window > 0:
        problems.append("undecodable frames skipped")
    if problems:
        return WARN, "; ".join(problems)
    return OK, "running"
