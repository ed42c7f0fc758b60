#!/usr/bin/env bash
# Installs hkmr_ros on a fresh Debian/Ubuntu machine. Safe to run again.
#
#   bash scripts/install.sh runtime   the runtime only: pipeline, ONNX Runtime engine, bag tools
#                                     (numpy, OpenCV, ONNX Runtime, rosbags; no torch), in the
#                                     current Python
#   bash scripts/install.sh           everything: also torch (pinned), training, export and tests
#
# PYTHON selects the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
MODE="${1:-all}"
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

case "$MODE" in
  runtime)
    echo "[install] hkmr_ros runtime (no torch)"
    "$PYTHON" -m pip install -q -e ".[tools]"
    ;;
  all)
    if command -v apt-get >/dev/null; then
      echo "[install] system libraries for headless OpenGL (EGL, Mesa)"
      $SUDO apt-get update -qq
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1-mesa-dri libgles2 >/dev/null
    fi
    # torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
    echo "[install] torch, torchvision"
    "$PYTHON" -m pip install -q torch==2.14.1 torchvision==0.29.1
    echo "[install] hkmr_ros with training, test and tool extras"
    "$PYTHON" -m pip install -q -e ".[train,test,tools]"
    ;;
  *)
    echo "usage: bash scripts/install.sh [runtime|all]" >&2
    exit 2
    ;;
esac
