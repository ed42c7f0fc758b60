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
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, bags.BagError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
