#!/usr/bin/env bash
# Trains while its store is still being rendered (a machine whose CPUs both render and train): the
# run goes PHASE_STEPS steps at a time, each phase resuming it exactly (`--resume`) with every
# sample the store holds at that phase's start (`data.store_samples`), until optim.steps. Rerun
# after an interruption: it continues from the run's latest checkpoint. The phases (first step,
# samples) are appended to OUT/phases.tsv.
#
#   bash scripts/train_growing_store.sh OUT STORE STEPS CONFIG [--set SECTION.KEY=VALUE ...]
#
# The --set overrides apply to every phase (e.g. optim.threads=1); CONFIG only to the first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/checkpoints.sh
PY="${PYTHON:-python3}"
PHASE_STEPS="${PHASE_STEPS:-500}"
if [ $# -lt 4 ]; then
  echo "usage: bash scripts/train_growing_store.sh OUT STORE STEPS CONFIG [--set SECTION.KEY=VALUE ...]" >&2
  exit 2
fi
out=$1 store=$2 steps=$3 config=$4
shift 4

while :; do
  step=$(checkpoint_step "$out")
  samples=$("$PY" -m training.datasets.store info "$store" --ready)
  if [ "$step" -eq 0 ]; then
    mkdir -p "$out"
    printf '0\t%s\n' "$samples" >> "$out/phases.tsv"
    "$PY" -m training.train --config "$config" --out "$out" --set "data.store_roots=[$store]" \
      --set "data.store_samples=[$samples]" --set optim.steps="$steps" "$@" --stop-at "$PHASE_STEPS"
    continue
  fi
  [ "$step" -ge "$steps" ] && break
  printf '%s\t%s\n' "$step" "$samples" >> "$out/phases.tsv"
  "$PY" -m training.train --resume --out "$out" --set "data.store_samples=[$samples]" \
    --set optim.steps="$steps" "$@" --stop-at $((step + PHASE_STEPS))
done
echo "[train_growing_store] $out reached step $steps"
