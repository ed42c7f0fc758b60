#!/usr/bin/env bash
# Reproduces the committed synthetic results (docs/results.md): data, the HKMR/HMR pair with the
# same budget, the training ablations, and the evaluation. CPU-sized; OMP_NUM_THREADS=1 per run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
gen() { [ -f "data/synthetic/$1/manifest.json" ] || "$PY" -m training.datasets.synthetic --out "data/synthetic/$1" --num "$2" --seed "$3"; }
gen train 8000 0
gen val 200 1
gen test 500 2
ABL="--config training/configs/synthetic_hkmr.yaml --set optim.steps=300"
"$PY" -m training.train --config training/configs/synthetic_hkmr.yaml --out runs/synthetic_hkmr --set log.keep_checkpoints=10 &
"$PY" -m training.train --config training/configs/synthetic_hmr.yaml --out runs/synthetic_hmr --set log.keep_checkpoints=10 &
"$PY" -m training.train $ABL --out runs/ablation_no_hierarchy --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 3, joint_hierarchy: false}" &
"$PY" -m training.train $ABL --out runs/ablation_forward_only --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 3, backward_pass: false}" &
"$PY" -m training.train $ABL --out runs/ablation_discriminator --set prior.kind=discriminator &
wait
# iteration-count ablations (the paper's Table 3 rows), same short budget
"$PY" -m training.train $ABL --out runs/ablation_inner2 --set "model.regressor_kwargs={inner_iters: 2, outer_iters: 3}" &
"$PY" -m training.train $ABL --out runs/ablation_outer1 --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 1}" &
wait
