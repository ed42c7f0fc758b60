#!/usr/bin/env bash
# The first stage's four phases (docs/results.md, "First stage"), replayed on a finished store: the
# HKMR run of the default weights grew its data as the store rendered, and every run compared with
# it (HMR, second seeds, ablations) goes through the same phases, so all see the same samples at
# the same learning rate. Rerun after an interruption: it resumes from OUT's newest checkpoint.
#
#   bash scripts/train_phased.sh OUT CONFIG STORE VAL [--set SECTION.KEY=VALUE ...]
#
# The --set overrides apply to the first phase and are saved with the run (e.g. seed=1). The store
# may still be rendering: each phase waits until it holds that phase's samples.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/checkpoints.sh
PY="${PYTHON:-python3}"
if [ $# -lt 4 ]; then
  echo "usage: bash scripts/train_phased.sh OUT CONFIG STORE VAL [--set SECTION.KEY=VALUE ...]" >&2
  exit 2
fi
out=$1 config=$2 store=$3 val=$4
shift 4
# phase: last step, store samples, optim.steps (the cosine re-targeted at each resume); the phases
# start at steps 0, 176, 500 and 1,198
PHASES=("176 4500 2000" "500 10000 1000" "1198 17000 2500" "2700 33000 2700")

for phase in "${PHASES[@]}"; do
  read -r last samples steps <<< "$phase"
  step=$(checkpoint_step "$out")
  [ "$step" -ge "$last" ] && continue
  until [ "$("$PY" -m training.datasets.store info "$store" --ready)" -ge "$samples" ]; do sleep 30; done
  if [ "$step" -eq 0 ]; then
    "$PY" -m training.train --config "$config" --out "$out" --set "data.store_roots=[$store]" \
      --set "data.val_root=$val" --set "data.store_samples=[$samples]" --set optim.steps="$steps" \
      --set optim.threads=1 "$@" --stop-at "$last"
  else
    "$PY" -m training.train --resume --out "$out" --set "data.store_samples=[$samples]" \
      --set optim.steps="$steps" --stop-at "$last"
  fi
done
echo "[train_phased] $out reached step $last"
