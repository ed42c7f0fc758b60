# Sourced by the training scripts: how a run directory's checkpoints are found, in one place.
# A run writes OUT/checkpoint_<8-digit step>.pt, so the newest sorts last.

newest_checkpoint() {  # newest_checkpoint OUT: the path of OUT's newest checkpoint, or nothing
  ls "$1"/checkpoint_*.pt 2>/dev/null | sort | tail -1 || true
}

checkpoint_step() {  # checkpoint_step OUT: the step of OUT's newest checkpoint, or 0
  local newest
  newest=$(newest_checkpoint "$1")
  if [ -n "$newest" ]; then echo $((10#$(basename "$newest" .pt | sed 's/checkpoint_//'))); else echo 0; fi
}

last() {  # last OUT: OUT's newest checkpoint; fails naming OUT when it has none
  local newest
  newest=$(newest_checkpoint "$1")
  if [ -z "$newest" ]; then echo "no checkpoint in $1" >&2; return 1; fi
  echo "$newest"
}
