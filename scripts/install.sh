#!/usr/bin/env bash
# Installs everything hkmr_ros needs (system libraries for headless rendering, torch, the package
# with its training and test extras) on a fresh Debian/Ubuntu machine. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if command -v apt-get >/dev/null; then
  echo "[install] system libraries for headless OpenGL (EGL, Mesa)"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1-mesa-dri libgles2 >/dev/null
fi

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
echo "[install] torch, torchvision"
"$PYTHON" -m pip install -q torch==2.14.1 torchvision==0.29.1
echo "[install] hkmr_ros with training and test extras"
"$PYTHON" -m pip install -q -e ".[train,test]"
