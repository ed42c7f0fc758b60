"""The embedded person detectors on the sample bag: recall, false positives and time per frame.

    OMP_NUM_THREADS=1 python benchmarks/detector.py --downscales 1 1.5 2 3

Every frame of the sample bag (640x480, 1 to 6 rendered people walking and passing each other)
goes through hkmr_ros.detection.HogDetector (OpenCV's HOG people detector, boxes shrunk to the
person) at each downscale factor, and through BlazePoseDetector (MediaPipe's BlazePose person
detector on ONNX Runtime, one thread) in one letterboxed pass and in two square tiles. A true person counts as found when a detection overlaps its
ground-truth box with IoU >= --iou; a detection that overlaps no true box that well is a false
positive. Time: wall and process CPU per frame (median, p90 wall). Detector alone, no tracking:
in the pipeline it runs only every N frames or when a track is lost.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hkmr_ros.bags import BagReader  # noqa: E402
from hkmr_ros.detection import (BlazePoseConfig, BlazePoseDetector, HogConfig, HogDetector,  # noqa: E402
                                box_iou)
from hkmr_ros.pipeline import decode_msg  # noqa: E402

SAMPLE_BAG = ROOT / "hkmr_ros" / "data" / "sample" / "people"


def gt_boxes(msg) -> np.ndarray:
    return np.array([[p.bbox.center.position.x - p.bbox.size_x / 2, p.bbox.center.position.y - p.bbox.size_y / 2,
                      p.bbox.center.position.x + p.bbox.size_x / 2, p.bbox.center.position.y + p.bbox.size_y / 2]
                     for p in msg.people]).reshape(-1, 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bag", type=Path, default=SAMPLE_BAG)
    ap.add_argument("--image-topic", default="/camera/image_raw/compressed")
    ap.add_argument("--gt-topic", default="/ground_truth/people")
    ap.add_argument("--downscales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--no-blazepose", action="store_true")
    args = ap.parse_args(argv)
    import cv2

    frames, gts = {}, {}
    with BagReader(args.bag) as reader:
        for m in reader.messages([args.image_topic, args.gt_topic]):
            st = m.msg.header.stamp.sec * 1_000_000_000 + m.msg.header.stamp.nanosec
            if m.topic == args.image_topic:
                frames[st] = decode_msg(m.msg)
            else:
                gts[st] = gt_boxes(m.msg)
    stamps = [s for s in sorted(frames) if s in gts]
    people = sum(len(gts[s]) for s in stamps)
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    print(f"Machine: {cpu}; OpenCV {cv2.__version__}; {len(stamps)} frames, {people} people; "
          f"found = IoU >= {args.iou}\n")
    print("| detector | smallest window height (px) | recall | false positives / frame | median ms | p90 ms | CPU ms (median) |")
    print("|---|---|---|---|---|---|---|")
    rows = [(f"HOG, downscale {ds:g}", f"{128 * ds:.0f}", lambda ds=ds: HogDetector(HogConfig(downscale=ds)))
            for ds in args.downscales]
    if not args.no_blazepose:
        rows += [("BlazePose, one pass", "-", lambda: BlazePoseDetector(BlazePoseConfig(tiles=False))),
                 ("BlazePose, two tiles", "-", lambda: BlazePoseDetector(BlazePoseConfig(tiles=True)))]
    for label, window, make in rows:
        det = make()
        found = fp = 0
        walls, cpus = [], []
        for s in stamps:
            w0, c0 = time.perf_counter(), time.process_time()
            dets = det(frames[s])
            walls.append(1000.0 * (time.perf_counter() - w0))
            cpus.append(1000.0 * (time.process_time() - c0))
            g = gts[s]
            if len(dets) and len(g):
                iou = box_iou(g, np.array([d.box for d in dets]))
                found += int((iou.max(1) >= args.iou).sum())
                fp += int((iou.max(0) < args.iou).sum())
            else:
                fp += len(dets)
        print(f"| {label} | {window} | {found}/{people} = {found / max(people, 1):.2f} | "
              f"{fp / len(stamps):.2f} | {statistics.median(walls):.1f} | {np.percentile(walls, 90):.1f} | "
              f"{statistics.median(cpus):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
