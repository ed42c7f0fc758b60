#!/usr/bin/env bash
# Sets up (scripts/install.sh) and runs the test suite in two parts:
#   1. tests/runtime in a fresh virtual environment with the runtime only (no torch), which proves
#      the runtime needs no torch and keeps those tests fast;
#   2. the whole suite with everything installed: the training, export and ROS tests, and the
#      runtime tests again, now with the comparisons against PyTorch that the first run skips.
# Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash scripts/install.sh all

RUNTIME_ENV=.venv-runtime
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  SUDO=""; if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
"$PYTHON" -m venv --clear "$RUNTIME_ENV"
"$RUNTIME_ENV/bin/python" -m pip install -q -e ".[test,tools]"
if "$RUNTIME_ENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "error: torch is importable in the runtime-only environment $RUNTIME_ENV" >&2
  exit 1
fi
echo "[test] runtime tests without torch"
"$RUNTIME_ENV/bin/python" -m pytest -q tests/runtime "$@"
echo "[test] the whole suite with torch"
"$PYTHON" -m pytest -q tests "$@"
