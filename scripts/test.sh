#!/usr/bin/env bash
# Sets up (scripts/install.sh) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
"${PYTHON:-python3}" -m pytest -q tests "$@"
