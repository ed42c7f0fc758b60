#!/usr/bin/env bash
# One ~15-minute GPU window: render a store on the machine's CPUs (NVIDIA EGL when present), train
# a full-size run (EfficientNet-Lite0 at 224 px by default, or ResNet-50: ENCODER=resnet50
# WEIGHTS=path/to/resnet50-imagenet.pth), bf16 autocast, then evaluate the checkpoint on a held-out
# test set beside the two baselines. Everything goes under $OUT (default runs/gpu).
#   bash scripts/gpu_train.sh            # knobs: OUT, ENCODER, WEIGHTS, SIZE, RENDER_NUM, RENDER_SECONDS,
#                                        #        STEPS, BATCH, TRAIN_SECONDS, WORKERS, REGRESSOR
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/checkpoints.sh
PY="${PYTHON:-python3}"
OUT="${OUT:-runs/gpu}"
ENCODER="${ENCODER:-efficientnet_lite0}"
WEIGHTS="${WEIGHTS:-efficientnet-lite0-pip}"
REGRESSOR="${REGRESSOR:-hkmr}"
SIZE="${SIZE:-224}"
CPUS="$(nproc)"
RENDER_NUM="${RENDER_NUM:-60000}"        # planned; whatever completes within RENDER_SECONDS is used
RENDER_SECONDS="${RENDER_SECONDS:-180}"
STEPS="${STEPS:-4000}"                   # a guess for ~10 min at batch 128; TRAIN_SECONDS stops it anyway
BATCH="${BATCH:-128}"
TRAIN_SECONDS="${TRAIN_SECONDS:-600}"
WORKERS="${WORKERS:-$(( CPUS > 2 ? CPUS - 2 : 1 ))}"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: scripts/gpu_train.sh needs a CUDA GPU (torch.cuda.is_available() is False); on a CPU" \
       "use training/configs/lite0_store_hkmr.yaml (docs/training.md)" >&2
  exit 3
fi
mkdir -p "$OUT"
T0=$(date +%s)

# 1. data: the test set (seed 2, never trained on) and as much of the training store as fits
"$PY" -m training.datasets.synthetic --out "$OUT/test_s2" --num 1000 --seed 2 --overwrite > "$OUT/render_test.log" 2>&1 &
TEST_PID=$!
OMP_NUM_THREADS=1 timeout "$RENDER_SECONDS" "$PY" -m training.datasets.store render --out "$OUT/store" \
  --num "$RENDER_NUM" --seed 0 --image-size "$SIZE" --shard-size 500 --processes "$CPUS" > "$OUT/render.log" 2>&1 || true
"$PY" -m training.datasets.store info "$OUT/store" | grep complete_shards
wait "$TEST_PID"
echo "data ready after $(( $(date +%s) - T0 )) s"

# 2. training (stopped after TRAIN_SECONDS at the latest; checkpoints every minute)
timeout "$TRAIN_SECONDS" "$PY" -m training.train --config training/configs/lite0_store_hkmr.yaml --out "$OUT/run" \
  --set model.encoder="$ENCODER" --set model.encoder_weights="$WEIGHTS" --set model.regressor="$REGRESSOR" \
  --set "model.regressor_kwargs={}" \
  --set data.store_roots="[$OUT/store]" --set data.image_size="$SIZE" --set data.num_workers="$WORKERS" \
  --set data.val_root="$OUT/test_s2" --set log.val_samples=200 --set log.val_every=1000 \
  --set optim.batch_size="$BATCH" --set optim.steps="$STEPS" --set optim.lr=0.0005 --set optim.warmup_steps=200 \
  --set optim.frozen_encoder_stages=0 --set optim.threads=0 --set optim.amp=true --set optim.amp_dtype=bfloat16 \
  --set device=cuda --set log.checkpoint_minutes=1 --set log.checkpoint_every=1000 --set log.log_every=50 \
  > "$OUT/train.log" 2>&1 || echo "training stopped (exit $?): the latest checkpoint is evaluated"
echo "trained after $(( $(date +%s) - T0 )) s"

# 3. evaluation of the latest checkpoint beside the baselines
CKPT="$(last "$OUT/run")"
"$PY" -m training.evaluate --checkpoint "$CKPT" --names "$REGRESSOR $ENCODER $SIZE px" \
  --data "synthetic:$OUT/test_s2" --workers 4 --batch-size 64 --device cuda --out "$OUT/eval" | tee "$OUT/eval.log"
echo "done after $(( $(date +%s) - T0 )) s: $CKPT, $OUT/eval/results.md"
