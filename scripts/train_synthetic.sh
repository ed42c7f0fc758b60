#!/usr/bin/env bash
# Reproduces docs/results.md: the synthetic data, the HKMR/HMR pair trained with the same budget
# (the default weights are HKMR's), the ablations, and the evaluations. Sized for a 2-core CPU:
# two runs at a time, one thread each (about 50 min for the pair, 30 min per group of ablations).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

gen() { [ -f "data/synthetic/$1/manifest.json" ] || "$PY" -m training.datasets.synthetic --out "data/synthetic/$1" --num "$2" --seed "$3"; }
gen train 8000 0
gen val 200 1
gen test 500 2   # held out: its seed is never used for training

# HKMR and HMR, same data, steps, optimiser and seed; only the regressor differs.
"$PY" -m training.train --config training/configs/synthetic_hkmr.yaml --out runs/synthetic_hkmr &
"$PY" -m training.train --config training/configs/synthetic_hmr.yaml --out runs/synthetic_hmr &
wait
"$PY" -m training.release --checkpoint runs/synthetic_hkmr/checkpoint_00002000.pt --out training/weights/hkmr_default

# Ablations: a shorter budget (300 steps) and the first settings tried (128 px, lr 2e-4, SPIN's
# betas weight), the same for every row.
short() {  # short OUT CONFIG [--set ...]
  local out=$1 config=$2; shift 2
  "$PY" -m training.train --config "$config" --out "$out" --set optim.steps=300 --set data.image_size=128 \
    --set optim.lr=0.0002 --set loss.lambda_betas=0.001 --set log.checkpoint_every=300 "$@"
}
HKMR=training/configs/synthetic_hkmr.yaml
short runs/ablation_full $HKMR &
short runs/ablation_hmr training/configs/synthetic_hmr.yaml &
wait
short runs/ablation_no_hierarchy $HKMR --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 3, joint_hierarchy: false}" &
short runs/ablation_forward_only $HKMR --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 3, backward_pass: false}" &
wait
short runs/ablation_discriminator $HKMR --set prior.kind=discriminator &
short runs/ablation_inner2 $HKMR --set "model.regressor_kwargs={inner_iters: 2, outer_iters: 3}" &
wait
short runs/ablation_outer1 $HKMR --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 1}"

# Evaluations on the held-out test set.
"$PY" -m training.evaluate --checkpoint runs/synthetic_hkmr/checkpoint_00002000.pt \
  --checkpoint runs/synthetic_hmr/checkpoint_00002000.pt --names HKMR HMR \
  --data synthetic:data/synthetic/test --workers 1 --out outputs/eval_main
"$PY" -m training.evaluate --checkpoint runs/synthetic_hkmr/checkpoint_00002000.pt \
  --checkpoint runs/synthetic_hmr/checkpoint_00002000.pt --names HKMR HMR \
  --data synthetic:data/synthetic/test --occlusion --max-samples 150 --joint-stride 1 --workers 1 \
  --batch-size 8 --out outputs/eval_occlusion
A=runs/ablation_
"$PY" -m training.evaluate --checkpoint ${A}full/checkpoint_00000300.pt --checkpoint ${A}hmr/checkpoint_00000300.pt \
  --checkpoint ${A}no_hierarchy/checkpoint_00000300.pt --checkpoint ${A}forward_only/checkpoint_00000300.pt \
  --checkpoint ${A}discriminator/checkpoint_00000300.pt --checkpoint ${A}inner2/checkpoint_00000300.pt \
  --checkpoint ${A}outer1/checkpoint_00000300.pt \
  --names HKMR HMR "HKMR no joint hierarchy" "HKMR forward only" "HKMR discriminator prior" "HKMR inner 2" "HKMR outer 1" \
  --data synthetic:data/synthetic/test --workers 1 --out outputs/eval_ablation
