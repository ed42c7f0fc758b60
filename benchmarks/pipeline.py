"""Whole-pipeline speed on the sample bag: decode -> detect -> crop -> infer -> track -> smooth -> messages.

    OMP_NUM_THREADS=1 python benchmarks/pipeline.py --threads 1 --out docs/pipeline_table.md

Frames are the sample bag's 640x480 JPEG CompressedImages (hkmr_ros/data/sample/people), in its
three stretches with 1, 3 and 6 people; each stretch is played forwards and backwards in turn
(so motion stays continuous for the tracker) for `--frames` frames at 30 Hz stamps. Per frame the
runtime's whole path runs as the node runs it: decode the CompressedImage, detect (the embedded
HOG detector when the tracker asks for it, or the bag's upstream Detection2DArray), crop,
estimate on ONNX Runtime (CPU), track, smooth, and build PersonMeshArray and MarkerArray
messages (rosbags classes). Reported per scenario: frames/s (frames / summed wall time), wall
latency median and 90th percentile, process CPU time per frame (median; other processes' load on
a shared machine does not inflate it), the mean of each stage, and how often the detector ran.
Outside the total: the overlay image and CDR serialisation (what the bag tools add).
The first `--warmup` frames of each scenario are run untimed.
No torch: this runs in the runtime-only install.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hkmr_ros.bags import BagReader  # noqa: E402
from hkmr_ros.camera import CameraModel  # noqa: E402
from hkmr_ros.messages import marker_array, overlay_image, person_mesh_array  # noqa: E402
from hkmr_ros.pipeline import Pipeline, PipelineConfig, decode_msg  # noqa: E402
from hkmr_ros.ros_types import make_typestore  # noqa: E402
from hkmr_ros.tracking import TrackingConfig  # noqa: E402
from machine import cpu_model, usable_cores

SAMPLE_BAG = ROOT / "hkmr_ros" / "data" / "sample" / "people"
STAGES = ("decode", "detect", "crop", "infer", "track", "smooth", "messages")
FRAME_NS = 33_333_333


def load_stretches(bag: Path) -> Dict[int, List[dict]]:
    """people count -> consecutive frames {image, camera_info, detections} with that count."""
    frames: Dict[int, dict] = {}
    with BagReader(bag) as reader:
        for m in reader.messages():
            st = m.msg.header.stamp.sec * 1_000_000_000 + m.msg.header.stamp.nanosec
            frames.setdefault(st, {})[m.topic] = m.msg
    out: Dict[int, List[dict]] = {}
    for st in sorted(frames):
        f = frames[st]
        gt = f.get("/ground_truth/people")
        img = f.get("/camera/image_raw/compressed")
        if gt is None or img is None:
            continue
        out.setdefault(len(gt.people), []).append(
            {"image": img, "info": f.get("/camera/camera_info"), "detections": f.get("/detections")})
    return out


def ping_pong(seq: Sequence, n: int) -> List:
    """seq forwards, backwards, forwards ... until n items (continuous motion)."""
    if len(seq) < 2:
        return list(seq) * n
    cycle = list(seq) + list(seq[-2:0:-1])
    return [cycle[i % len(cycle)] for i in range(n)]


def run_scenario(estimator, frames: List[dict], detector: str, tracking: bool, types, warmup: int,
                 body_model: str, mesh_faces=None) -> dict:
    cfg = PipelineConfig(detector=detector if detector in ("hog", "blazepose") else "none", max_people=6,
                         tracking=TrackingConfig(enabled=tracking))
    pipe = Pipeline(estimator, cfg)
    walls, cpus, people, ran = [], [], [], []
    stages = {k: [] for k in STAGES}
    extra = {"overlay": [], "cdr": []}
    store = make_typestore()
    for i, f in enumerate(frames):
        stamp = i * FRAME_NS
        f["image"].header.stamp.sec, f["image"].header.stamp.nanosec = stamp // 10**9, stamp % 10**9
        w0, c0 = time.perf_counter(), time.process_time()
        cam = CameraModel.from_camera_info(f["info"]) if f["info"] is not None else None
        dets = pipe.detections_from_msg(f["detections"]) if detector == "upstream" else None
        result = pipe.process_msg(f["image"], cam, dets)
        t = time.perf_counter()
        pm = person_mesh_array(result, types, body_model)
        ma = marker_array(result, types, mesh_faces=mesh_faces)
        msg_ms = 1000.0 * (time.perf_counter() - t)
        wall, cpu = 1000.0 * (time.perf_counter() - w0), 1000.0 * (time.process_time() - c0)
        t = time.perf_counter()
        overlay_image(decode_msg(f["image"]), result)
        ov_ms = 1000.0 * (time.perf_counter() - t)
        t = time.perf_counter()
        store.serialize_cdr(pm, "hkmr_ros/msg/PersonMeshArray")
        store.serialize_cdr(ma, "visualization_msgs/msg/MarkerArray")
        cdr_ms = 1000.0 * (time.perf_counter() - t)
        if i < warmup:
            continue
        walls.append(wall)
        cpus.append(cpu)
        people.append(len(result.people))
        ran.append(result.detector_ran)
        for k in STAGES:
            stages[k].append(msg_ms if k == "messages" else result.timings_ms.get(k, 0.0))
        extra["overlay"].append(ov_ms)
        extra["cdr"].append(cdr_ms)
    return {
        "frames": len(walls), "fps": 1000.0 * len(walls) / sum(walls), "median": statistics.median(walls),
        "p90": float(np.percentile(walls, 90)), "cpu_median": statistics.median(cpus),
        "fps_cpu": 1000.0 * len(cpus) / sum(cpus), "people": float(np.mean(people)),
        "detector_share": float(np.mean(ran)),
        "stages": {k: float(np.mean(v)) for k, v in stages.items()},
        "extra": {k: float(np.mean(v)) for k, v in extra.items()},
    }


def table(rows: List[dict], header: str) -> str:
    lines = [header, "",
             "| people (found) | detector | tracking | frames/s | median ms | p90 ms | CPU ms/frame (median) | "
             "detector ran | " + " | ".join(STAGES) + " | overlay | CDR |",
             "|---" * (10 + len(STAGES)) + "|"]
    for r in rows:
        s = r["result"]
        lines.append(
            f"| {r['people']} ({s['people']:.1f}) | {r['detector']} | {'on' if r['tracking'] else 'off'} | "
            f"{s['fps']:.1f} | {s['median']:.1f} | {s['p90']:.1f} | {s['cpu_median']:.1f} | "
            f"{100 * s['detector_share']:.0f}% | " + " | ".join(f"{s['stages'][k]:.1f}" for k in STAGES)
            + f" | {s['extra']['overlay']:.1f} | {s['extra']['cdr']:.1f} |")
    lines.append("")
    lines.append("Stage columns: mean milliseconds per frame (the detector's cost is spread over the "
                 "frames it skips). Overlay and CDR are outside the total.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bag", type=Path, default=SAMPLE_BAG)
    ap.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--people", type=int, nargs="+", default=[1, 3, 6])
    ap.add_argument("--detectors", nargs="+", default=["hog", "upstream"], choices=["hog", "blazepose", "upstream"])
    ap.add_argument("--no-tracking-row", action="store_true", help="skip the HOG-every-frame row")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--mesh", action="store_true",
                    help="add two rows with the mesh variant (hkmr_default_mesh.onnx) and mesh markers: every "
                         "face, and the display mesh the node draws")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    if args.frames <= args.warmup:
        ap.error("--frames must exceed --warmup")

    import cv2
    import onnxruntime
    from hkmr_ros.inference import load_estimator
    estimator = load_estimator(args.model, backend=args.backend, threads=args.threads)
    stretches = load_stretches(args.bag)
    types = make_typestore().types
    rows = []
    plan = []
    for n in args.people:
        if n not in stretches:
            print(f"no stretch with {n} people in {args.bag} (have {sorted(stretches)}); skipped", file=sys.stderr)
            continue
        for det in args.detectors:
            plan.append((n, det, True))
        if "hog" in args.detectors and n == min(args.people) and not args.no_tracking_row:
            plan.append((n, "hog", False))
    if args.mesh:
        plan += [(min(args.people), "upstream", True, "full"), (min(args.people), "upstream", True, "display")]
    mesh_estimator = None
    for n, det, trk, *mesh in plan:
        est, faces, label = estimator, None, det
        if mesh:
            mesh_estimator = mesh_estimator or load_estimator(ROOT / "hkmr_ros" / "data" / "hkmr_default_mesh.onnx",
                                                              backend=args.backend, threads=args.threads)
            est = mesh_estimator
            faces = est.faces if mesh[0] == "full" else est.marker_faces
            label = f"{det} + mesh markers ({mesh[0]}, {len(faces)} triangles)"
        frames = ping_pong(stretches[n], args.frames)
        res = run_scenario(est, frames, det, trk, types, args.warmup, est.body_model_name, faces)
        rows.append({"people": n, "detector": label, "tracking": trk, "result": res})
        print(f"{n} people, {det}, tracking {'on' if trk else 'off'}: {res['fps']:.1f} frames/s, "
              f"median {res['median']:.1f} ms, p90 {res['p90']:.1f} ms, CPU {res['cpu_median']:.1f} ms/frame, "
              f"stages {', '.join(f'{k} {v:.1f}' for k, v in res['stages'].items())}", flush=True)
    header = (f"Machine: {cpu_model()}, {usable_cores()} cores usable; "
              f"Python {platform.python_version()}, ONNX Runtime {onnxruntime.__version__} "
              f"({estimator.backend_name}, {args.threads} thread(s)), OpenCV {cv2.__version__}, "
              f"model input {estimator.image_size} px; {args.frames - args.warmup} timed frames per row "
              f"(640x480 JPEG) after {args.warmup} untimed.\n\n"
              f"Command: `OMP_NUM_THREADS={__import__('os').environ.get('OMP_NUM_THREADS', '?')} "
              f"python benchmarks/pipeline.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
    text = table(rows, header)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
