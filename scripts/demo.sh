#!/usr/bin/env bash
# Sets up everything (scripts/install.sh) and runs the main job on the embedded defaults:
# renders synthetic people with the open body model, recovers their meshes with the default HKMR
# weights and scores them against the known truth. Output: outputs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
"${PYTHON:-python3}" -m training.demo "$@"
