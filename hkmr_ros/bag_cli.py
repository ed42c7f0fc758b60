"""`hkmr-bag`: synthesise, process and evaluate rosbag2 bags without ROS.

    hkmr-bag synth OUT [--seconds 8 --fps 15 --people 6 --storage mcap|sqlite3 --raw]
    hkmr-bag process IN OUT [--image-topic T --camera-info-topic T --detections-topic T ...]
    hkmr-bag eval RESULT GT [--out DIR]

`synth` renders (training extras: torch, smplx, moderngl); `process` and `eval` need only the
runtime (numpy, OpenCV, ONNX Runtime, rosbags).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hkmr_ros import bags

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_BAG = PACKAGE_DIR / "data" / "sample" / "people"

OUT_PEOPLE_TOPIC = "/hkmr/people"
OUT_MARKERS_TOPIC = "/hkmr/markers"
OUT_OVERLAY_TOPIC = "/hkmr/overlay/compressed"
OUT_CAMERA_INFO_TOPIC = "/camera/camera_info"

TRAINING_EXTRAS_HINT = ("`hkmr-bag synth` renders with the training extras (torch, smplx, roma, moderngl, "
                        "scipy); install them with `pip install -e .[train]` (see the README)")


# ------------------------------------------------------------------------------------ synth

def cmd_synth(args: argparse.Namespace) -> int:
    try:
        from training import bag_synth
    except ImportError as err:  # torch, smplx, moderngl... are training-side
        print(f"error: {TRAINING_EXTRAS_HINT} ({err})", file=sys.stderr)
        return 2
    cfg = bag_synth.SceneConfig(width=args.width, height=args.height, fps=args.fps, seconds=args.seconds,
                                people=args.people, seed=args.seed, jpeg_quality=args.jpeg_quality)
    summary = bag_synth.synthesise_bag(args.out, cfg, storage=args.storage, raw=args.raw,
                                       detections=not args.no_detections, overwrite=args.overwrite,
                                       model=args.model, distro=args.distro, progress=not args.quiet)
    counts = np.bincount(summary.people_per_frame, minlength=cfg.people + 1)
    print(f"wrote {summary.frames} frames ({cfg.width}x{cfg.height}, {cfg.fps:g} fps) to {summary.path} "
          f"in {summary.seconds:.1f} s; topics: "
          + ", ".join(f"{t} ({n})" for t, n in sorted(summary.topics.items())))
    print("frames by number of people with at least half of their joints visible: "
          + ", ".join(f"{k}: {int(c)}" for k, c in enumerate(counts) if c))
    return 0


# ------------------------------------------------------------------------------------ process

@dataclass
class ProcessSummary:
    """What `process_bag` did."""
    output: Path
    image_topic: str
    camera_info_topic: Optional[str]
    detections_topic: Optional[str]
    detector: str
    backend: str
    frames_in_bag: int = 0
    frames: int = 0
    skipped_frames: int = 0
    undecodable_messages: int = 0
    people: int = 0
    detector_runs: int = 0
    seconds: float = 0.0
    stage_ms: Dict[str, float] = field(default_factory=dict)
    video: Optional[Path] = None
    contact_sheet: Optional[Path] = None
    warnings: List[str] = field(default_factory=list)
    skip_reasons: Dict[str, int] = field(default_factory=dict)
    realtime_rate: Optional[float] = None
    dropped_frames: int = 0  # --realtime: frames the worker never started (a newer one replaced them)
    latency_ms: Dict[str, float] = field(default_factory=dict)  # --realtime: due time -> result written

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def to_json(self) -> Dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        d["fps"] = self.fps
        return d


def choose_topic(reader: bags.BagReader, requested: Optional[str], msgtypes: Sequence[str], what: str,
                 required: bool) -> Optional[str]:
    """`requested` checked against the bag, or (None / 'auto') the bag's only topic of `msgtypes`.

    'none' disables an optional topic. Errors list the bag's topics.
    """
    if requested is not None and requested.lower() == "none":
        if required:
            raise ValueError(f"the {what} topic is required")
        return None
    if requested is not None and requested.lower() != "auto":
        reader.require_topic(requested, msgtypes)
        return requested
    found = sorted(t for t, m in reader.topics.items() if m in msgtypes)
    if len(found) == 1:
        return found[0]
    if not found:
        if required:
            raise bags.TopicNotFoundError(f"no {what} topic ({' or '.join(msgtypes)}) in {reader.path}; "
                                          f"its topics: {reader.describe_topics()}")
        return None
    raise bags.TopicNotFoundError(f"several {what} topics in {reader.path} ({', '.join(found)}); choose one "
                                  f"with the option; its topics: {reader.describe_topics()}")


class ContactSheet:
    """Keeps a few evenly spaced overlay frames and tiles them into one image."""

    def __init__(self, total_frames: int, count: int = 12, columns: int = 4, tile_width: int = 320):
        step = max(total_frames, 1) / count
        self.wanted = sorted({min(int(step * (k + 0.5)), max(total_frames - 1, 0)) for k in range(count)})
        self.columns = columns
        self.tile_width = tile_width
        self.tiles: List[np.ndarray] = []

    def offer(self, index: int, image_rgb: np.ndarray, label: str) -> None:
        import cv2

        if not self.wanted or index < self.wanted[0]:
            return
        while self.wanted and self.wanted[0] <= index:  # frames may have been dropped (--realtime)
            self.wanted.pop(0)
        h, w = image_rgb.shape[:2]
        tile = cv2.resize(image_rgb, (self.tile_width, max(1, int(round(h * self.tile_width / w)))),
                          interpolation=cv2.INTER_AREA)
        org = (6, tile.shape[0] - 8)  # bottom left: the overlay's id labels sit at the top of the boxes
        cv2.putText(tile, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        self.tiles.append(tile)

    def write(self, path: Path) -> bool:
        import cv2

        if not self.tiles:
            return False
        h = max(t.shape[0] for t in self.tiles)
        tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in self.tiles]
        while len(tiles) % self.columns:
            tiles.append(np.zeros_like(tiles[0]))
        rows = [np.concatenate(tiles[r:r + self.columns], axis=1) for r in range(0, len(tiles), self.columns)]
        sheet = np.concatenate(rows, axis=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        return bool(cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6]))


class VideoOut:
    """mp4 (OpenCV VideoWriter, mp4v) of the overlays, opened on the first frame."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.writer = None
        self.size = None
        self.failed = False

    def add(self, image_rgb: np.ndarray) -> None:
        import cv2

        if self.failed:
            return
        if self.writer is None:
            h, w = image_rgb.shape[:2]
            self.size = (w, h)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(self.fps), self.size)
            if not self.writer.isOpened():
                self.failed = True
                self.writer = None
                return
        if (image_rgb.shape[1], image_rgb.shape[0]) != self.size:
            image_rgb = cv2.resize(image_rgb, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def _stream_fps(reader: bags.BagReader, topic: str) -> float:
    """Frame rate of `topic` from the bag's duration and message count (15 when unknown)."""
    count = reader.message_counts().get(topic, 0)
    duration = reader.duration_ns * 1e-9
    if count > 1 and duration > 0:
        return float(np.clip((count - 1) / duration, 1.0, 120.0))
    return 15.0


class _BagRun:
    """One `process` run: the reader, the pipeline, the outputs and the counters of a ProcessSummary.

    Images go through `dispatch` (main thread) once every message logged at their time has been
    read; `handle` decodes, runs the pipeline and writes (main thread, or the worker's with
    --realtime; `lock` guards the writer and the counters shared by both).
    """

    def __init__(self, reader: bags.BagReader, pipe, summary: ProcessSummary, *, faces, overlay_quality: int,
                 video_out: Optional[VideoOut], sheet: Optional[ContactSheet], realtime: Optional[float],
                 max_frames: Optional[int]):
        import threading

        from hkmr_ros.detection import DetectionBuffer

        self.reader, self.pipe, self.summary = reader, pipe, summary
        self.faces, self.overlay_quality = faces, overlay_quality
        self.video_out, self.sheet = video_out, sheet
        self.realtime, self.max_frames = realtime, max_frames
        self.det_buffer = DetectionBuffer()
        self.camera_info = None
        self.camera_warned = False
        self.first_stamp: Optional[int] = None
        self.images = 0
        self.clock0: Optional[Tuple[float, int]] = None  # (wall time, log time) of the first image
        self.stage_times: Dict[str, List[float]] = {}
        self.latencies: List[float] = []
        self.worker = None
        self.worker_error: List[BaseException] = []
        self.lock = threading.Lock()

    # -- inputs
    def camera(self):
        """CameraModel of the latest CameraInfo (None: none yet, or unusable, warned once)."""
        from hkmr_ros.camera import CameraModel

        if self.camera_info is None:
            return None
        try:
            return CameraModel.from_camera_info(self.camera_info)
        except (ValueError, TypeError) as err:
            if not self.camera_warned:
                self.summary.warnings.append(f"unusable CameraInfo on {self.summary.camera_info_topic} ({err}); "
                                             "assuming intrinsics")
                self.camera_warned = True
            return None

    def enough(self) -> bool:
        return self.max_frames is not None and self.images >= self.max_frames

    # -- one image
    def handle(self, item, writer: bags.BagWriter) -> None:
        """Decode, run the pipeline, write the results (skips undecodable images, counted)."""
        from hkmr_ros import messages
        from hkmr_ros.images import ImageDecodeError
        from hkmr_ros.pipeline import decode_msg

        m, camera, dets, index, due = item
        t0 = time.perf_counter()
        try:
            rgb = decode_msg(m.msg)
        except (ImageDecodeError, ValueError) as err:
            with self.lock:
                self.summary.skipped_frames += 1
                reason = str(err).split(":")[0][:80]
                self.summary.skip_reasons[reason] = self.summary.skip_reasons.get(reason, 0) + 1
            return
        decode_ms = 1000.0 * (time.perf_counter() - t0)
        stamp = bags.stamp_to_ns(m.msg.header.stamp)
        frame_id = str(m.msg.header.frame_id)
        result = self.pipe.process(rgb, stamp, frame_id, camera, dets)
        result.timings_ms["decode"] = decode_ms
        t1 = time.perf_counter()
        types = writer.types
        people = messages.person_mesh_array(result, types, self.pipe.body_model)
        markers = messages.marker_array(result, types, mesh_faces=self.faces)
        overlay = messages.overlay_image(rgb, result)
        overlay_msg = messages.compressed_image(types, overlay, stamp, frame_id, quality=self.overlay_quality)
        with self.lock:
            writer.write(OUT_PEOPLE_TOPIC, m.log_time_ns, people)
            writer.write(OUT_MARKERS_TOPIC, m.log_time_ns, markers)
            writer.write(OUT_OVERLAY_TOPIC, m.log_time_ns, overlay_msg)
            result.timings_ms["messages"] = 1000.0 * (time.perf_counter() - t1)
            for k, v in result.timings_ms.items():
                self.stage_times.setdefault(k, []).append(float(v))
            if due is not None:
                self.latencies.append(1000.0 * (time.perf_counter() - due))
            if self.video_out is not None:
                self.video_out.add(overlay)
            if self.first_stamp is None:
                self.first_stamp = stamp
            if self.sheet is not None:
                n = len(result.people)
                self.sheet.offer(index, overlay, f"t={(stamp - self.first_stamp) * 1e-9:.2f} s, {n} "
                                                 f"{'person' if n == 1 else 'people'}")
            self.summary.frames += 1
            self.summary.people += len(result.people)

    def dispatch(self, m: bags.BagMessage, writer: bags.BagWriter, bar) -> None:
        """An image whose CameraInfo and detections are in: process it now, or (realtime) hand
        it to the worker at its recorded time."""
        index = self.images
        self.images += 1
        bar.update(1)
        stamp = bags.stamp_to_ns(m.msg.header.stamp) if hasattr(m.msg, "header") else 0
        dets = self.det_buffer.match(stamp) if self.summary.detections_topic else None
        camera = self.camera()
        if self.worker is None:
            self.handle((m, camera, dets, index, None), writer)
            return
        if self.worker_error:
            raise self.worker_error[0]
        if self.clock0 is None:
            self.clock0 = (time.perf_counter(), m.log_time_ns)
        due = self.clock0[0] + (m.log_time_ns - self.clock0[1]) * 1e-9 / self.realtime
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self.worker.submit((m, camera, dets, index, due))

    # -- the whole bag
    def run(self, writer: bags.BagWriter, bar, out_info_topic: str) -> None:
        """Read the image, CameraInfo and detections topics in log-time order and handle every image."""
        from hkmr_ros.worker import LatestFrameWorker

        s = self.summary
        if self.realtime is not None:
            self.worker = LatestFrameWorker(lambda item: self.handle(item, writer),
                                            on_error=lambda item, exc: self.worker_error.append(exc))
        topics = [t for t in (s.image_topic, s.camera_info_topic, s.detections_topic) if t]
        pending: List[bags.BagMessage] = []
        for topic, msgtype, log_ns, data in self.reader.raw_messages(topics):
            # an image waits until every message logged at its time (CameraInfo, detections) is in
            while pending and pending[0].log_time_ns < log_ns and not self.enough():
                self.dispatch(pending.pop(0), writer, bar)
            if self.enough():
                break
            try:
                msg = self.reader.deserialize(topic, msgtype, data)
            except Exception:  # garbled CDR: counted, the stream goes on
                s.undecodable_messages += 1
                self.reader.skipped[topic] += 1
                continue
            if topic == s.image_topic:
                pending.append(bags.BagMessage(topic, msgtype, log_ns, msg))
            elif topic == s.camera_info_topic:
                self.camera_info = msg
                with self.lock:
                    writer.write_raw(out_info_topic, bags.CAMERA_INFO, log_ns, data)
            elif topic == s.detections_topic:
                self.det_buffer.add(bags.stamp_to_ns(msg.header.stamp), self.pipe.detections_from_msg(msg))
        while pending and not self.enough():
            self.dispatch(pending.pop(0), writer, bar)
        self.stop_worker(drain=True)
        if self.worker_error:
            raise self.worker_error[0]

    def stop_worker(self, drain: bool) -> None:
        """Let the frame in progress finish (and, when `drain`, the one waiting)."""
        if self.worker is not None:
            self.worker.stop(drain=drain, timeout=None)
            self.summary.dropped_frames = self.worker.dropped
            self.worker = None

    def finish(self, video: Optional[Path], contact_sheet: Optional[Path]) -> None:
        """Close the side outputs and fill the summary's timings (also after a fault)."""
        s = self.summary
        if self.latencies:
            s.latency_ms = {"median": float(np.median(self.latencies)),
                            "p90": float(np.percentile(self.latencies, 90)), "max": float(np.max(self.latencies))}
        if self.video_out is not None:
            self.video_out.close()
            if self.video_out.failed:
                s.warnings.append(f"OpenCV could not open an mp4 writer for {video}; no video written")
            elif s.frames:
                s.video = Path(video)
        if self.sheet is not None and self.sheet.write(Path(contact_sheet)):
            s.contact_sheet = Path(contact_sheet)
        s.stage_ms = {k: float(np.median(v)) for k, v in self.stage_times.items()}
        s.detector_runs = int(self.pipe.stats.get("detector_runs", 0))
        s.warnings += [w for w in self.reader.warnings if w not in s.warnings]


def _provenance(input_bag: Path, summary: ProcessSummary, estimator) -> Dict[str, str]:
    """What made an output bag, for its metadata's custom_data."""
    info = getattr(estimator, "info", None)
    return {"hkmr.source_bag": Path(input_bag).name, "hkmr.image_topic": summary.image_topic,
            "hkmr.backend": summary.backend, "hkmr.boxes": summary.detections_topic or summary.detector,
            "hkmr.model": Path(str(getattr(info, "onnx_path", "unknown"))).name,
            "hkmr.model_sha256": str(getattr(info, "onnx_sha256", "") or "")}


def process_bag(input_bag: Path, output_bag: Path, *, estimator=None, config=None,
                image_topic: Optional[str] = None, camera_info_topic: Optional[str] = "auto",
                detections_topic: Optional[str] = "auto", detector: str = "auto",
                model: Optional[str] = None, backend: str = "onnxruntime", threads: Optional[int] = None,
                storage: str = "mcap", video: Optional[Path] = None, contact_sheet: Optional[Path] = None,
                max_frames: Optional[int] = None, overwrite: bool = False, mesh: bool = False,
                overlay_quality: int = 80, progress: bool = True,
                realtime: Optional[float] = None) -> ProcessSummary:
    """Run the pipeline over the images of `input_bag`; write results to `output_bag` (see the CLI help).

    realtime: None processes every frame; a rate (1.0 = as recorded) replays the images at their
    recorded pace into a LatestFrameWorker, as the node receives them, so frames that arrive
    while one is being processed are dropped (counted) and latency stays bounded.
    """
    from tqdm import tqdm

    from hkmr_ros.pipeline import Pipeline, PipelineConfig

    if realtime is not None and not (np.isfinite(realtime) and 0.01 <= realtime <= 100):
        raise ValueError(f"the realtime rate must be in [0.01, 100], got {realtime}")
    reader = bags.BagReader(input_bag)
    try:
        image_topic = choose_topic(reader, image_topic, bags.IMAGE_TYPES, "image", required=True)
        info_topic = choose_topic(reader, camera_info_topic, (bags.CAMERA_INFO,), "CameraInfo", required=False)
        det_topic = choose_topic(reader, detections_topic, (bags.DETECTION_ARRAY,), "detections", required=False)
        if detector == "auto":  # upstream boxes when the bag has them, else the pipeline's default
            detector = "none" if det_topic else PipelineConfig().detector
        if config is None:
            config = PipelineConfig(detector=detector)
        else:
            config.detector = detector
        if estimator is None:
            from hkmr_ros.inference import load_estimator
            estimator = load_estimator(model, backend=backend, threads=threads)
        pipe = Pipeline(estimator, config)
    except BaseException:
        reader.close()
        raise
    total = reader.message_counts().get(image_topic, 0)
    if max_frames is not None:
        total = min(total, int(max_frames))
    summary = ProcessSummary(output=Path(output_bag), image_topic=image_topic, camera_info_topic=info_topic,
                             detections_topic=det_topic, detector=detector,
                             backend=str(getattr(estimator, "backend_name", "?")), frames_in_bag=total,
                             realtime_rate=realtime)
    summary.warnings += reader.warnings
    run = _BagRun(reader, pipe, summary, faces=getattr(estimator, "marker_faces", None) if mesh else None,
                  overlay_quality=overlay_quality,
                  video_out=VideoOut(Path(video), _stream_fps(reader, image_topic)) if video is not None else None,
                  sheet=ContactSheet(total) if contact_sheet is not None else None,
                  realtime=realtime, max_frames=max_frames)
    out_info_topic = info_topic or OUT_CAMERA_INFO_TOPIC
    start = time.perf_counter()
    try:
        with bags.BagWriter(output_bag, storage=storage, overwrite=overwrite) as writer, \
                tqdm(total=total, desc="processing", unit="frame", disable=not progress) as bar:
            for topic, msgtype in ((OUT_PEOPLE_TOPIC, bags.PERSON_MESH_ARRAY), (OUT_MARKERS_TOPIC, bags.MARKER_ARRAY),
                                   (OUT_OVERLAY_TOPIC, bags.COMPRESSED_IMAGE), (out_info_topic, bags.CAMERA_INFO)):
                writer.add_topic(topic, msgtype)
            for key, value in _provenance(input_bag, summary, estimator).items():
                writer.set_custom_data(key, value)
            try:
                run.run(writer, bar, out_info_topic)
            finally:
                run.stop_worker(drain=False)  # after a fault: the frame in progress finishes first
    finally:
        summary.seconds = time.perf_counter() - start
        reader.close()
        run.finish(video, contact_sheet)
    return summary


def _default_side_path(out: Path, suffix: str) -> Path:
    return out.parent / f"{out.name}{suffix}"


def cmd_process(args: argparse.Namespace) -> int:
    from hkmr_ros.pipeline import PipelineConfig
    from hkmr_ros.smoothing import SmoothingConfig
    from hkmr_ros.tracking import TrackingConfig

    out = Path(args.out)
    video = None if args.no_video else Path(args.video) if args.video else _default_side_path(out, ".mp4")
    sheet = (None if args.no_contact_sheet else Path(args.contact_sheet) if args.contact_sheet
             else _default_side_path(out, "_contact_sheet.png"))
    config = PipelineConfig(max_people=args.max_people,
                            tracking=TrackingConfig(enabled=not args.no_tracking, detect_every=args.detect_every),
                            smoothing=SmoothingConfig(enabled=not args.no_smoothing),
                            fixed_box=args.fixed_box)
    try:
        summary = process_bag(Path(args.input), out, config=config, image_topic=args.image_topic,
                              camera_info_topic=args.camera_info_topic, detections_topic=args.detections_topic,
                              detector=args.detector, model=args.model, backend=args.backend, threads=args.threads,
                              storage=args.storage or bags.storage_of(out), video=video, contact_sheet=sheet,
                              max_frames=args.max_frames, overwrite=args.overwrite, mesh=args.mesh,
                              progress=not args.quiet, realtime=args.realtime)
    except KeyboardInterrupt:
        print(f"interrupted; {out} was closed with what was processed so far", file=sys.stderr)
        return 130
    print(f"processed {summary.frames} of {summary.frames_in_bag} frames from {summary.image_topic} in "
          f"{summary.seconds:.1f} s ({summary.fps:.1f} frames/s, {summary.backend}); "
          f"{summary.people} people ({summary.people / max(summary.frames, 1):.2f} per frame); "
          f"boxes from {'upstream ' + summary.detections_topic if summary.detections_topic else summary.detector}"
          f" (detector runs: {summary.detector_runs})")
    if summary.skipped_frames or summary.undecodable_messages:
        print(f"skipped: {summary.skipped_frames} undecodable images "
              f"({'; '.join(f'{k}: {v}' for k, v in summary.skip_reasons.items())}), "
              f"{summary.undecodable_messages} messages that did not deserialise")
    if summary.realtime_rate is not None:
        lat = summary.latency_ms
        print(f"realtime x{summary.realtime_rate:g}: {summary.dropped_frames} frames dropped by the newest-frame "
              f"worker; latency (recorded arrival -> results written) median {lat.get('median', float('nan')):.0f} ms, "
              f"p90 {lat.get('p90', float('nan')):.0f} ms, max {lat.get('max', float('nan')):.0f} ms")
    if summary.stage_ms:
        print("median ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.stage_ms.items()))
    print(f"wrote {out} ({OUT_PEOPLE_TOPIC}, {OUT_MARKERS_TOPIC}, {OUT_OVERLAY_TOPIC}, CameraInfo)"
          + (f", {summary.video}" if summary.video else "") + (f", {summary.contact_sheet}" if summary.contact_sheet else ""))
    for w in summary.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return 0 if summary.frames else 1


# ------------------------------------------------------------------------------------ eval

def cmd_eval(args: argparse.Namespace) -> int:
    from hkmr_ros import evaluation

    results, rtopic, rreader = evaluation.read_people(args.result, args.result_topic, evaluation.RESULT_TOPIC)
    truth, gtopic, greader = evaluation.read_people(args.gt, args.gt_topic, evaluation.GT_TOPIC)
    report = evaluation.evaluate(results, truth, iou=args.iou, min_visible=args.min_visible)
    print(f"{args.result} ({rtopic}) against {args.gt} ({gtopic}):\n")
    print(evaluation.markdown_table(report))
    for r in (rreader, greader):
        for w in r.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if sum(r.skipped.values()):
            print(f"warning: {sum(r.skipped.values())} messages of {r.path} did not deserialise", file=sys.stderr)
    if args.out:
        paths = evaluation.write_reports(report, args.out)
        note = "" if "plot" in paths else " (no plot: matplotlib is not installed)"
        print("wrote " + ", ".join(str(p) for p in paths.values()) + note)
    return 0


# ------------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hkmr-bag",
        description="Offline tools for rosbag2 bags (mcap or sqlite3), no ROS needed: render a synthetic "
                    "bag with ground truth, run the HKMR pipeline over a bag, evaluate the result.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{synth,process,eval}")

    s = sub.add_parser("synth", help="render a bag of several people walking, with ground truth (training extras)",
                       description="Render a camera stream of several people walking, turning and passing "
                                   "each other, with CameraInfo, ground truth (hkmr_ros/PersonMeshArray on "
                                   "/ground_truth/people) and upstream detections (vision_msgs/Detection2DArray).")
    s.add_argument("out", help="output bag folder (must not exist unless --overwrite)")
    s.add_argument("--storage", choices=bags.STORAGES, default="mcap", help="rosbag2 storage (default: mcap)")
    s.add_argument("--seconds", type=float, default=8.0, help="duration (default 8; the script is stretched to it)")
    s.add_argument("--fps", type=float, default=15.0, help="frames per second (default 15)")
    s.add_argument("--width", type=int, default=640)
    s.add_argument("--height", type=int, default=480)
    s.add_argument("--people", type=int, default=6, help="number of walkers, 1..6 (default 6)")
    s.add_argument("--seed", type=int, default=0, help="shapes, clothes and room colours")
    s.add_argument("--jpeg-quality", type=int, default=85)
    s.add_argument("--raw", action="store_true", help="write sensor_msgs/Image rgb8 on /camera/image_raw "
                                                      "instead of JPEG CompressedImage")
    s.add_argument("--no-detections", action="store_true", help="do not write /detections")
    s.add_argument("--model", help="SMPL-format body model file (default: $HKMR_SMPL_MODEL or anny-smpl)")
    s.add_argument("--distro", choices=("humble", "jazzy"), default="humble", help="message definitions")
    s.add_argument("--overwrite", action="store_true", help="replace OUT if it is a bag")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_synth)

    p = sub.add_parser("process", help="run the pipeline over a bag; write people, markers, overlay, video",
                       description="Read a rosbag2 bag (mcap or sqlite3; sensor_msgs/Image or CompressedImage), "
                                   "run decode -> detect -> crop -> infer -> track -> smooth on every image and "
                                   f"write a bag with hkmr_ros/PersonMeshArray ({OUT_PEOPLE_TOPIC}), "
                                   f"visualization_msgs/MarkerArray ({OUT_MARKERS_TOPIC}), the overlay as "
                                   f"CompressedImage ({OUT_OVERLAY_TOPIC}) and the input CameraInfo, with the "
                                   "message definitions embedded; plus an overlay mp4 and a contact-sheet PNG. "
                                   "Every frame is processed (offline: none is dropped).")
    p.add_argument("input", help="input bag: a rosbag2 folder, or a .mcap / .db3 file")
    p.add_argument("out", help="output bag folder (must not exist unless --overwrite)")
    p.add_argument("--image-topic", help="Image or CompressedImage topic (default: the bag's only one)")
    p.add_argument("--camera-info-topic", default="auto",
                   help="CameraInfo topic; 'auto' (default) = the bag's only one, 'none' = assume intrinsics")
    p.add_argument("--detections-topic", default="auto",
                   help="vision_msgs/Detection2DArray topic of an upstream detector, matched by stamp; "
                        "'auto' (default) = the bag's only one, 'none' = use the embedded detector")
    from hkmr_ros.pipeline import DETECTORS, PipelineConfig
    p.add_argument("--detector", choices=("auto",) + tuple(DETECTORS), default="auto",
                   help=f"embedded detector; 'auto' = none with upstream detections, else the pipeline's "
                        f"default ({PipelineConfig().detector})")
    p.add_argument("--fixed-box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                   help="the box for --detector fixed (pixels)")
    p.add_argument("--max-people", type=int, default=6)
    p.add_argument("--detect-every", type=int, default=10, help="frames between detector runs while tracking")
    p.add_argument("--no-tracking", action="store_true", help="detect on every frame, track id 0")
    p.add_argument("--no-smoothing", action="store_true", help="no One-Euro smoothing")
    p.add_argument("--model", help="ONNX model with its .json sidecar (default: the shipped hkmr_default.onnx)")
    p.add_argument("--backend", default="onnxruntime",
                   choices=("auto", "onnxruntime", "onnxruntime-cuda", "tensorrt"), help="default: onnxruntime (CPU)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: usable CPUs, at most 4)")
    p.add_argument("--storage", choices=bags.STORAGES, help="output storage (default: mcap; .db3 suffix: sqlite3)")
    p.add_argument("--video", help="overlay video path (default: OUT.mp4)")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--contact-sheet", help="contact-sheet PNG path (default: OUT_contact_sheet.png)")
    p.add_argument("--no-contact-sheet", action="store_true")
    p.add_argument("--mesh", action="store_true", help="also publish the mesh as a TRIANGLE_LIST marker (the model's display "
                   "mesh when it ships one)")
    p.add_argument("--max-frames", type=int, help="stop after this many images")
    p.add_argument("--realtime", type=float, nargs="?", const=1.0, metavar="RATE",
                   help="replay the images at their recorded pace (x RATE, default 1) through the node's "
                        "newest-frame worker: frames arriving while one is processed are dropped and "
                        "counted, as on the robot (default: process every frame)")
    p.add_argument("--summary-json", help="write the run's summary (counts, timings) as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is a bag")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_process)

    e = sub.add_parser("eval", help="MPJPE / PA-MPJPE, recall and id switches against ground truth",
                       description="Compare the PersonMeshArray of a processed bag with the ground truth of a "
                                   "synthetic bag (frames matched by stamp, people by box IoU). Prints a markdown "
                                   "table with the network beside two baselines (a constant mean skeleton and "
                                   "the rest pose); --out also writes metrics.md, metrics.json, per_frame.csv "
                                   "and metrics.png (the plot needs matplotlib).")
    e.add_argument("result", help="bag written by `hkmr-bag process`")
    e.add_argument("gt", help="bag with the ground truth (e.g. the input bag made by `hkmr-bag synth`)")
    e.add_argument("--result-topic", help=f"PersonMeshArray topic of the result (default {OUT_PEOPLE_TOPIC})")
    e.add_argument("--gt-topic", help="PersonMeshArray topic of the ground truth (default /ground_truth/people)")
    e.add_argument("--iou", type=float, default=0.5, help="least box IoU of a match (default 0.5)")
    e.add_argument("--min-visible", type=float, default=0.5,
                   help="a true person counts when at least this share of joints is visible (default 0.5)")
    e.add_argument("--out", help="folder for metrics.md, metrics.json, per_frame.csv, metrics.png")
    e.set_defaults(func=cmd_eval)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, bags.BagError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
