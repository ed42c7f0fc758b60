#!/usr/bin/env bash
# The main job on the embedded defaults: installs the runtime only (no torch), runs the default
# HKMR network (hkmr_ros/data/hkmr_default.onnx, ONNX Runtime on the CPU) over the sample bag
# (hkmr_ros/data/sample/people: six synthetic people walking, with ground truth), and evaluates it.
# Output in outputs/: the result bag, its overlay video and contact sheet, and the metrics.
# Extra arguments go to `hkmr-bag process` (e.g. --detections-topic none for the embedded detector).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash scripts/install.sh runtime
"$PYTHON" -m hkmr_ros.bag_cli process hkmr_ros/data/sample/people outputs/people_hkmr --overwrite "$@"
"$PYTHON" -m hkmr_ros.bag_cli eval outputs/people_hkmr hkmr_ros/data/sample/people --out outputs/eval
echo "[demo] results in outputs/: people_hkmr/ (bag), people_hkmr.mp4, people_hkmr_contact_sheet.png, eval/metrics.md"
