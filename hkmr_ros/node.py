"""The ROS 2 node: a managed lifecycle node around hkmr_ros.pipeline.Pipeline.

Lifecycle: configure loads and warms the estimator (ONNX Runtime / TensorRT, with the body
model's faces) and builds the pipeline and the publishers; activate subscribes and starts the
newest-frame worker; deactivate unsubscribes and stops it; cleanup releases the model;
shutdown (from any state, or Ctrl-C) does all of it and ends the process. `autostart` makes
the node configure and activate itself, for plain `ros2 run` / `ros2 launch` on Humble and
Jazzy alike; a configure that cannot load the model logs FATAL and exits non-zero.

Messages: the image callback only queues the serialized message (sensor-data QoS). The
worker thread decodes it, runs the pipeline and publishes (reliable QoS) PersonMeshArray,
MarkerArray, the overlay Image and TF, each with the input header's stamp and frame_id. The
output messages are built by hkmr_ros.messages from a rosbags typestore and published as CDR,
exactly as the offline bag tools write them. Diagnostics go to /diagnostics on a steady timer.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from hkmr_ros import messages
from hkmr_ros import node_params as params
from hkmr_ros.camera import CameraModel
from hkmr_ros.detection import DetectionBuffer, stamp_to_ns
from hkmr_ros.images import ImageDecodeError
from hkmr_ros.pipeline import Pipeline, PipelineConfig, decode_msg
from hkmr_ros.ros_types import make_typestore
from hkmr_ros.worker import LatestFrameWorker

NODE_NAME = "hkmr"


def sensor_qos(depth: int) -> QoSProfile:
    """Camera streams: best effort (matches best-effort and reliable publishers), newest only."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


def reliable_qos(depth: int) -> QoSProfile:
    """Results: reliable, so RViz and `ros2 bag record` get every message."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def descriptor(spec: params.ParamSpec) -> ParameterDescriptor:
    """A ParameterDescriptor with the spec's description, range and read-only flag."""
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    extra = spec.constraints()
    if not spec.live and not spec.read_only:
        extra = (extra + "; " if extra else "") + "applies at the next configure"
    d.additional_constraints = extra
    if spec.range is not None and spec.kind is int:
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=0)]
    elif spec.range is not None and spec.kind is float:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                     to_value=float(spec.range[1]), step=0.0)]
    return d


def ros_distro() -> str:
    """The typestore flavour for this ROS (wire formats of our messages agree on both)."""
    distro = os.environ.get("ROS_DISTRO", "jazzy")
    return distro if distro in ("humble", "jazzy") else "jazzy"


class HkmrNode(LifecycleNode):
    """Image in, PersonMeshArray / MarkerArray / overlay / TF / diagnostics out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.store = make_typestore(ros_distro())
        self.types = self.store.types
        self.specs: Dict[str, params.ParamSpec] = {}
        self.pipeline_config = PipelineConfig()
        for spec in params.NODE_PARAMS + params.pipeline_param_specs(self.pipeline_config):
            self.specs[spec.name] = spec
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        self.values: Dict[str, Any] = {n: self.get_parameter(n).value for n in self.specs}
        self.pipeline_config = self._pipeline_config_from(self.values)
        reason = params.validate_config(self.pipeline_config)
        if reason:
            raise ValueError(f"invalid pipeline parameters: {reason}")
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.estimator = None
        self.pipeline: Optional[Pipeline] = None
        self.worker: Optional[LatestFrameWorker] = None
        self.stats = params.WindowStats(window_s=5.0)
        self.camera: Optional[CameraModel] = None
        self.detections: Optional[DetectionBuffer] = None
        self.detections_lock = threading.Lock()
        self.pending_config: Optional[PipelineConfig] = None
        self.pending_ended: List[int] = []
        self.last_people = 0
        self.last_timings: Dict[str, float] = {}
        self.last_error = ""
        self._subs: List[Any] = []
        self._pubs: Dict[str, Any] = {}
        self._diag_timer = None
        self._diag_pub = None
        self._diag_last: Dict[str, float] = {}
        self._active = False
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.exit_code: Optional[int] = None
        self.finished = threading.Event()

    # -- parameters ----------------------------------------------------------------------------

    def _pipeline_config_from(self, values: Dict[str, Any]) -> PipelineConfig:
        names = {s.name for s in params.pipeline_param_specs(PipelineConfig())}
        return params.apply_to_config(PipelineConfig(), {k: v for k, v in values.items() if k in names})

    def _on_set_parameters(self, changed: List[Parameter]) -> SetParametersResult:
        """Validate a change; apply live ones (the pipeline is rebuilt before the next frame)."""
        new = dict(self.values)
        for p in changed:
            spec = self.specs.get(p.name)
            if spec is None:
                continue  # e.g. use_sim_time
            value = list(p.value) if spec.kind is list and p.value is not None else p.value
            reason = spec.check(value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            new[p.name] = value
        try:
            config = self._pipeline_config_from(new)
        except (ValueError, TypeError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        reason = params.validate_config(config)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        later = [p.name for p in changed if p.name in self.specs and not self.specs[p.name].live]
        if later and self.estimator is not None:
            self.get_logger().info(f"{', '.join(later)} changed: applies at the next configure")
        if config != self.pipeline_config:
            self.pending_config = config
        self.pipeline_config = config
        self.values = new
        return SetParametersResult(successful=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        v = self.values
        from hkmr_ros.inference import load_estimator  # onnxruntime / tensorrt load lazily
        model = v["model"] or None
        self.get_logger().info(
            f"configuring: model {model or 'default'}, backend {v['backend']} "
            "(a TensorRT engine is built on first use, with progress on the console)")
        t0 = time.monotonic()
        try:
            self.estimator = load_estimator(
                model=model, backend=v["backend"], threads=v["threads"] or None, precision=v["precision"],
                cache_dir=v["engine_cache_dir"] or None, warmup=v["warmup"], progress=True)
            self.pipeline = Pipeline(self.estimator, self.pipeline_config)
        except Exception as e:  # noqa: BLE001 - any load failure is fatal, with its reason
            self.estimator = self.pipeline = None
            self.fatal(f"cannot load the model: {type(e).__name__}: {e}")
            return TransitionCallbackReturn.FAILURE
        self.pending_config = None
        self.get_logger().info(
            f"model ready in {time.monotonic() - t0:.1f} s: backend {self.estimator.backend_name}, "
            f"input {self.estimator.image_size} px, body model {self.estimator.body_model_name}, "
            f"detector {self.pipeline_config.detector}")
        depth = int(v["output_queue_depth"])
        self._pubs = {
            "people": self.create_lifecycle_publisher(self._msg_class("hkmr_ros.msg", "PersonMeshArray"),
                                                      "~/people", reliable_qos(depth)),
            "markers": self.create_lifecycle_publisher(MarkerArray, "~/markers", reliable_qos(depth)),
            "overlay": self.create_lifecycle_publisher(Image, "~/overlay", reliable_qos(depth)),
            "tf": self.create_lifecycle_publisher(TFMessage, "/tf", reliable_qos(100)),
        }
        # diagnostics also while inactive (a plain publisher): the state is what one wants to see
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", reliable_qos(10))
        self.stats = params.WindowStats(window_s=5.0)
        self._diag_last = {}
        self._diag_timer = self.create_timer(float(v["diagnostics_period"]), self._publish_diagnostics,
                                             clock=self._steady)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        v = self.values
        ret = super().on_activate(state)   # enables the lifecycle publishers
        self.worker = LatestFrameWorker(self._process, name="hkmr-worker")
        self._active = True
        qos = sensor_qos(int(v["input_queue_depth"]))
        topic = v["image_topic"] + ("/compressed" if v["compressed"] else "")
        msg_type = CompressedImage if v["compressed"] else Image
        self._subs.append(self.create_subscription(msg_type, topic, self._on_image, qos, raw=True))
        if v["camera_info_topic"]:
            self._subs.append(self.create_subscription(CameraInfo, v["camera_info_topic"],
                                                       self._on_camera_info, qos))
        if v["detections_topic"]:
            from vision_msgs.msg import Detection2DArray
            with self.detections_lock:
                self.detections = DetectionBuffer(capacity=64,
                                                  tolerance_ns=int(v["detection_tolerance"] * 1e9))
            self._subs.append(self.create_subscription(Detection2DArray, v["detections_topic"],
                                                       self._on_detections, sensor_qos(10)))
        self.get_logger().info(f"active: {msg_type.__name__} on {self.resolve_topic_name(topic)}")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        self._release()
        self.get_logger().info("shut down")
        self._finish(0 if self.exit_code is None else self.exit_code)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("error during a transition: releasing everything")
        self._stop_streaming()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_streaming(self) -> None:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self.worker is not None:
            if not self.worker.stop(timeout=10.0):
                self.get_logger().warning("the worker thread did not stop within 10 s")
            self.worker = None

    def _release(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for pub in self._pubs.values():
            try:
                self.destroy_lifecycle_publisher(pub)
            except Exception:  # noqa: BLE001 - the context may already be shut down (Ctrl-C)
                pass
        self._pubs = {}
        if self._diag_pub is not None:
            try:
                self.destroy_publisher(self._diag_pub)
            except Exception:  # noqa: BLE001
                pass
            self._diag_pub = None
        self.pipeline = None
        self.estimator = None
        self.camera = None

    def fatal(self, text: str) -> None:
        """Log FATAL; with exit_on_fatal the process ends with status 1 once the reply is out."""
        self.get_logger().fatal(text)
        if self.values["exit_on_fatal"]:
            self.exit_code = 1
            timer = None

            def _exit() -> None:
                self.destroy_timer(timer)
                self._finish(1)
            timer = self.create_timer(0.2, _exit, clock=self._steady)

    def _finish(self, code: int) -> None:
        if self.exit_code is None or code != 0:
            self.exit_code = code
        self.finished.set()

    def shutdown_now(self) -> None:
        """Ctrl-C / context shutdown: stop the worker thread and release, whatever the state."""
        self._stop_streaming()
        self._release()

    # -- input ---------------------------------------------------------------------------------

    @staticmethod
    def _msg_class(module: str, name: str):
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)

    def _on_image(self, raw: bytes) -> None:
        """Executor thread: count and hand over; never blocks."""
        self.stats.count("input")
        worker = self.worker
        if worker is not None and self._active:
            before = worker.dropped
            worker.submit((raw, time.monotonic()))
            if worker.dropped > before:
                self.stats.count("dropped")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.camera = CameraModel.from_camera_info(msg)
        except ValueError as e:
            self.camera = None
            self.get_logger().warning(f"ignoring CameraInfo: {e}", throttle_duration_sec=10.0)

    def _on_detections(self, msg) -> None:
        pipe = self.pipeline
        if pipe is None:
            return
        dets = pipe.detections_from_msg(msg)
        with self.detections_lock:
            if self.detections is not None:
                self.detections.add(stamp_to_ns(msg.header.stamp), dets)

    # -- worker thread ---------------------------------------------------------------------------

    def _process(self, item) -> None:
        """Worker thread: decode, run the pipeline, publish. A bad frame is logged and skipped."""
        raw, t_received = item
        if self.pending_config is not None and self.estimator is not None:
            config, self.pending_config = self.pending_config, None
            ended = self.pipeline.reset() if self.pipeline is not None else []
            self.pipeline = Pipeline(self.estimator, config)
            self.pending_ended += ended
            self.get_logger().info("pipeline parameters changed: tracks restarted")
        pipe = self.pipeline
        if pipe is None:
            return
        kind = "sensor_msgs/msg/CompressedImage" if self.values["compressed"] else "sensor_msgs/msg/Image"
        try:
            msg = self.store.deserialize_cdr(raw, kind)
            rgb = decode_msg(msg)
        except (ImageDecodeError, ValueError, AssertionError, IndexError, KeyError, UnicodeDecodeError) as e:
            self.stats.count("bad")
            self.last_error = f"bad frame skipped: {e}"
            self.get_logger().warning(self.last_error, throttle_duration_sec=2.0)
            return
        hdr = msg.header
        stamp_ns = stamp_to_ns(hdr.stamp)
        dets = None
        with self.detections_lock:
            if self.detections is not None:
                dets = self.detections.match(stamp_ns)
        try:
            result = pipe.process(rgb, stamp_ns, hdr.frame_id, camera=self.camera, detections=dets)
            if self.pending_ended:
                result.ended_track_ids = sorted(set(result.ended_track_ids) | set(self.pending_ended))
                self.pending_ended = []
            self._publish(result, rgb)
        except Exception as e:  # noqa: BLE001 - one failing frame must not kill the stream
            if not rclpy.ok():
                return
            self.stats.count("failed")
            self.last_error = f"frame failed: {type(e).__name__}: {e}"
            self.get_logger().error(self.last_error, throttle_duration_sec=2.0)
            return
        now_ns = self.get_clock().now().nanoseconds
        self.stats.count("processed")
        self.stats.latency(1000.0 * (time.monotonic() - t_received), (now_ns - stamp_ns) / 1e6)
        self.last_people = len(result.people)
        self.last_timings = dict(result.timings_ms)

    def _publish(self, result, rgb) -> None:
        v, t, pubs = self.values, self.types, self._pubs
        if not pubs:
            return
        body = self.estimator.body_model_name if self.estimator is not None else "smpl"
        self._send("people", messages.person_mesh_array(result, t, body), "hkmr_ros/msg/PersonMeshArray")
        if v["publish_markers"]:
            faces = self.estimator.marker_faces if (v["publish_mesh"] and self.estimator is not None) else None
            self._send("markers", messages.marker_array(result, t, ns=v["marker_namespace"], mesh_faces=faces),
                       "visualization_msgs/msg/MarkerArray")
        if v["publish_overlay"] and pubs["overlay"].get_subscription_count() > 0:
            img = messages.overlay_image(rgb, result)
            self._send("overlay", messages.raw_image(t, img, result.stamp_ns, result.frame_id),
                       "sensor_msgs/msg/Image")
        if v["publish_tf"] and result.people:
            self._send("tf", self._tf_message(result), "tf2_msgs/msg/TFMessage")

    def _send(self, key: str, msg, msgtype: str) -> None:
        self._pubs[key].publish(bytes(self.store.serialize_cdr(msg, msgtype)))

    def _tf_message(self, result):
        """One transform per tracked person: image frame -> <tf_prefix><id> at the pelvis,
        oriented like the pelvis (its global rotation)."""
        t = self.types
        hdr = messages.header(t, result.stamp_ns, result.frame_id)
        transforms = []
        for p in result.people:
            x, y, z = (float(c) for c in p.translation)
            q = [float(c) for c in p.joint_orientations[0]]
            if not all(math.isfinite(c) for c in (x, y, z, *q)):
                continue
            transforms.append(t["geometry_msgs/msg/TransformStamped"](
                header=hdr, child_frame_id=f"{self.values['tf_prefix']}{p.track_id}",
                transform=t["geometry_msgs/msg/Transform"](
                    translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                    rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))))
        return t["tf2_msgs/msg/TFMessage"](transforms=transforms)

    # -- diagnostics -----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        pub = self._diag_pub
        if pub is None:
            return
        snap = self.stats.snapshot()
        totals = {k: snap.get(f"{k}_total", 0.0) for k in ("input", "processed", "dropped", "bad", "failed")}
        window = {k: totals[k] - self._diag_last.get(k, 0.0) for k in totals}
        self._diag_last = totals
        level, text = params.diagnostic_summary(snap, self._active, float(self.values["stale_input_timeout"]),
                                                window["dropped"], window["bad"])
        if self.last_error and level != params.OK:
            text += f" (last: {self.last_error})"
        est = self.estimator
        pipe = self.pipeline
        kv = {
            "state": "active" if self._active else "inactive",
            "backend": est.backend_name if est is not None else "none",
            "model": self.values["model"] or "default",
            "body_model": est.body_model_name if est is not None else "",
            "detector": self.pipeline_config.detector,
            "input_topic": self.values["image_topic"] + ("/compressed" if self.values["compressed"] else ""),
            "camera_info": "yes" if self.camera is not None else "no (assumed focal length)",
            "input_rate_hz": f"{snap.get('input_rate', 0.0):.2f}",
            "processing_rate_hz": f"{snap.get('processed_rate', 0.0):.2f}",
            "frames_received": f"{totals['input']:.0f}",
            "frames_processed": f"{totals['processed']:.0f}",
            "frames_dropped": f"{totals['dropped']:.0f}",
            "frames_bad": f"{totals['bad']:.0f}",
            "frames_failed": f"{totals['failed']:.0f}",
            "latency_median_ms": _fmt(snap.get("latency_median_ms")),
            "latency_p90_ms": _fmt(snap.get("latency_p90_ms")),
            "latency_max_ms": _fmt(snap.get("latency_max_ms")),
            "stamp_age_median_ms": _fmt(snap.get("stamp_age_median_ms")),
            "people": str(self.last_people),
            "detector_runs": str(pipe.stats.get("detector_runs", 0)) if pipe is not None else "0",
        }
        for stage, ms in sorted(self.last_timings.items()):
            kv[f"last_{stage}_ms"] = f"{ms:.1f}"
        t = self.types
        status = t["diagnostic_msgs/msg/DiagnosticStatus"](
            level=int(level), name=f"{self.get_name()}: human mesh recovery",
            message=text, hardware_id=kv["backend"],
            values=[t["diagnostic_msgs/msg/KeyValue"](key=k, value=str(val)) for k, val in kv.items()])
        stamp_ns = self.get_clock().now().nanoseconds
        arr = t["diagnostic_msgs/msg/DiagnosticArray"](header=messages.header(t, stamp_ns, ""), status=[status])
        pub.publish(bytes(self.store.serialize_cdr(arr, "diagnostic_msgs/msg/DiagnosticArray")))


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def main(args: Optional[List[str]] = None) -> int:
    """`ros2 run hkmr_ros hkmr_node`: spin until shutdown; 1 when the model could not load."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        try:
            node = HkmrNode()
        except Exception as e:  # noqa: BLE001 - invalid parameters at start: say which, exit 2
            print(f"[FATAL] [{NODE_NAME}]: cannot start: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        if node.values["autostart"]:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            elif node.values["exit_on_fatal"]:
                return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not node.finished.is_set():
            executor.spin_once(timeout_sec=0.1)
        code = node.exit_code or 0
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    finally:
        if node is not None:
            node.shutdown_now()
            node.destroy_node()
        rclpy.try_shutdown()
    return code
