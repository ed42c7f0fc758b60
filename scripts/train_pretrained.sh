#!/usr/bin/env bash
# The ImageNet-initialised protocol of docs/results.md ("Pretrained encoder"): a pre-rendered store,
# HKMR against HMR with the same EfficientNet-Lite0 encoder and budget (two seeds each, to show the
# run-to-run noise), the default weights' second, third and fourth stages, the occlusion protocol and the
# ablations at that budget, all evaluated beside the two baselines on a held-out test set (seed 2,
# never trained on). Resumable: rerun after an interruption (the store renders only its missing shards,
# `--resume` continues a run exactly).
# The first-stage runs (HKMR, HMR, second seeds, ablations) replay the default run's four phases on
# the first 33,000 people of the seed-0 store (scripts/train_phased.sh: 2,700 steps of 32; on the
# 2-core development CPU 36-42 min for two runs at once, one core each); the later stages take
# 90-100 min each. STORE_PROCESSES renderers.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/checkpoints.sh
PY="${PYTHON:-python3}"
DATA="${DATA:-data}"
RUNS="${RUNS:-runs}"
NUM="${NUM:-33000}"  # the phases use the first 33,000
STORE_PROCESSES="${STORE_PROCESSES:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
STORE="$DATA/store/train_s0_128"

"$PY" -m training.datasets.store render --out "$STORE" --num "$NUM" --seed 0 --image-size 128 --processes "$STORE_PROCESSES"
[ -f "$DATA/synthetic/val/manifest.json" ] || "$PY" -m training.datasets.synthetic --out "$DATA/synthetic/val" --num 200 --seed 1
[ -f "$DATA/synthetic/test/manifest.json" ] || "$PY" -m training.datasets.synthetic --out "$DATA/synthetic/test" --num 1000 --seed 2
# the same test people, each with a bystander
[ -f "$DATA/synthetic/test_bystanders/manifest.json" ] || "$PY" -m training.datasets.synthetic \
  --out "$DATA/synthetic/test_bystanders" --num 1000 --seed 2 --bystanders 1.0

run() {  # run OUT CONFIG [--set ...]: train (or resume) one run through the first stage's phases
  bash scripts/train_phased.sh "$1" "$2" "$STORE" "$DATA/synthetic/val" "${@:3}"
}
HKMR=training/configs/lite0_store_hkmr.yaml
HMR=training/configs/lite0_store_hmr.yaml

# HKMR against HMR, two seeds each (seed changes the initialisation of the regressor and the data order)
run "$RUNS/lite0_hkmr" $HKMR &
run "$RUNS/lite0_hmr" $HMR &
wait
run "$RUNS/lite0_hkmr_seed1" $HKMR --set seed=1 &
run "$RUNS/lite0_hmr_seed1" $HMR --set seed=1 &
wait
"$PY" -m training.evaluate --names HKMR "HKMR seed 1" HMR "HMR seed 1" \
  --checkpoint "$(last "$RUNS/lite0_hkmr")" --checkpoint "$(last "$RUNS/lite0_hkmr_seed1")" \
  --checkpoint "$(last "$RUNS/lite0_hmr")" --checkpoint "$(last "$RUNS/lite0_hmr_seed1")" \
  --data "synthetic:$DATA/synthetic/test" --data "synthetic:$DATA/synthetic/test_bystanders" --workers 1 \
  --out outputs/eval_pretrained

continue_stage() {  # continue_stage OUT CONFIG STORE INIT [--set ...]: a run that starts from INIT's weights
  local out=$1 config=$2 store=$3 init=$4; shift 4
  local resume=(); [ -n "$(newest_checkpoint "$out")" ] && resume=(--resume)
  "$PY" -m training.train --config "$config" --out "$out" "${resume[@]}" --set "data.store_roots=[$store]" \
    --set "data.val_root=$DATA/synthetic/val" --set "model.init_checkpoint=$init" --set optim.threads=1 "$@"
}

continue_pair() {  # continue_pair FROM TO CONFIG STORE: the seed-1 HKMR and HMR runs lite0_*_seed1FROM
  # continued side by side as lite0_*_seed1TO (HMR keeps its regressor)
  local from=$1 to=$2 config=$3 store=$4
  continue_stage "$RUNS/lite0_hkmr_seed1$to" "$config" "$store" "$(last "$RUNS/lite0_hkmr_seed1$from")" &
  continue_stage "$RUNS/lite0_hmr_seed1$to" "$config" "$store" "$(last "$RUNS/lite0_hmr_seed1$from")" \
    --set model.regressor=hmr --set "model.regressor_kwargs={}" &
  wait
}

# The default weights' second stage: the HKMR run continued (model.init_checkpoint) on people it
# has not seen, a store of seed 3 (docs/results.md; there it was rendered while it trained,
# scripts/train_growing_store.sh)
STORE2="$DATA/store/train_s3_128"
"$PY" -m training.datasets.store render --out "$STORE2" --num "${NUM2:-139000}" --seed 3 --image-size 128 --processes "$STORE_PROCESSES"
LONG="$RUNS/lite0_hkmr_long"
continue_stage "$LONG" training/configs/lite0_store_hkmr_long.yaml "$STORE2" "$(last "$RUNS/lite0_hkmr")" \
  --set optim.steps="${STEPS2:-6500}"
"$PY" -m training.evaluate --names "HKMR stage 2" "HKMR stage 1" --checkpoint "$(last "$LONG")" \
  --checkpoint "$(last "$RUNS/lite0_hkmr")" --data "synthetic:$DATA/synthetic/test" --workers 1 --out outputs/eval_stage2

# HKMR against HMR at the second stage's budget: the seed-1 pair, each continued as the second stage
# (its config and store, here finished before the runs start)
continue_pair "" _stage2 training/configs/lite0_store_hkmr_long.yaml "$STORE2"
"$PY" -m training.evaluate --names "HKMR seed 0, stage 2" "HKMR seed 1, stage 2" "HMR seed 1, stage 2" \
  --checkpoint "$(last "$LONG")" --checkpoint "$(last "$RUNS/lite0_hkmr_seed1_stage2")" \
  --checkpoint "$(last "$RUNS/lite0_hmr_seed1_stage2")" --data "synthetic:$DATA/synthetic/test" \
  --data "synthetic:$DATA/synthetic/test_bystanders" --workers 1 --out outputs/eval_pair_stage2

# The third stage: stage 2 continued on new people (seed 4), half of the crops with a bystander
# beside, in front of or behind the person; the fourth (the default weights): stage 3 continued on
# a fresh schedule at a lower peak rate on new people (seed 5), half with a bystander (steps as
# in their configs; NUM_LATER people per store). Each is evaluated against the stage before on the
# test set and on the same test people each with a bystander (--bystanders 1.0, same seed)
previous="$LONG"
for stage in 3 4; do
  store_seed=$((stage + 1))
  store="$DATA/store/train_s${store_seed}_128_bystanders"
  out="$RUNS/lite0_hkmr_stage$stage"
  "$PY" -m training.datasets.store render --out "$store" --num "${NUM_LATER:-100000}" --seed "$store_seed" --image-size 128 \
    --bystanders 0.5 --processes "$STORE_PROCESSES"
  continue_stage "$out" "training/configs/lite0_store_hkmr_stage$stage.yaml" "$store" "$(last "$previous")"
  "$PY" -m training.evaluate --names "HKMR stage $stage" "HKMR stage $((stage - 1))" --checkpoint "$(last "$out")" \
    --checkpoint "$(last "$previous")" --data "synthetic:$DATA/synthetic/test" \
    --data "synthetic:$DATA/synthetic/test_bystanders" --workers 1 --out "outputs/eval_stage$stage"
  previous="$out"
done

pair_stage() {  # pair_stage STAGE STORE: the previous stage's seed-1 pair continued with stage STAGE's
  # config on STORE, evaluated beside HKMR seed 0's own stage, then under the occlusion protocol
  local stage=$1 store=$2 s1="$RUNS/lite0_hkmr_seed1_stage$1" h1="$RUNS/lite0_hmr_seed1_stage$1"
  continue_pair "_stage$((stage - 1))" "_stage$stage" "training/configs/lite0_store_hkmr_stage$stage.yaml" "$store"
  "$PY" -m training.evaluate --names "HKMR seed 0, stage $stage" "HKMR seed 1, stage $stage" "HMR seed 1, stage $stage" \
    --checkpoint "$(last "$RUNS/lite0_hkmr_stage$stage")" --checkpoint "$(last "$s1")" --checkpoint "$(last "$h1")" \
    --data "synthetic:$DATA/synthetic/test" --data "synthetic:$DATA/synthetic/test_bystanders" --workers 1 \
    --out "outputs/eval_pair_stage$stage"
  "$PY" -m training.evaluate --names "HKMR seed 1, stage $stage" "HMR seed 1, stage $stage" \
    --checkpoint "$(last "$s1")" --checkpoint "$(last "$h1")" --data "synthetic:$DATA/synthetic/test" --occlusion \
    --max-samples 150 --joint-stride 3 --workers 1 --batch-size 8 --out "outputs/eval_pair_stage${stage}_occlusion"
}

# HKMR against HMR at the third stage's budget (502,400 samples seen) on the seed-5 store, all of it
# rendered before the runs start (NUM_LATER people, half with a bystander; 117,000 in
# docs/results.md), so both see the same ones; then at the fourth stage's budget (694,400, the
# default's) on the seed-4 store (the people of the default's third stage)
pair_stage 3 "$DATA/store/train_s5_128_bystanders"
pair_stage 4 "$DATA/store/train_s4_128_bystanders"

# Occlusion protocol (bar, circle, rectangle; DoC 1-5; every third joint on 150 test images), the
# paper's figure 6, for both seeds of the first-stage pair
"$PY" -m training.evaluate --names HKMR "HKMR seed 1" HMR "HMR seed 1" \
  --checkpoint "$(last "$RUNS/lite0_hkmr")" --checkpoint "$(last "$RUNS/lite0_hkmr_seed1")" \
  --checkpoint "$(last "$RUNS/lite0_hmr")" --checkpoint "$(last "$RUNS/lite0_hmr_seed1")" \
  --data "synthetic:$DATA/synthetic/test" --occlusion --max-samples 150 --joint-stride 3 --workers 1 --batch-size 8 \
  --out outputs/eval_pretrained_occlusion

# Ablations at the same budget, one change each from the HKMR run
run "$RUNS/lite0_no_hierarchy" $HKMR --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 3, joint_hierarchy: false}" &
run "$RUNS/lite0_forward_only" $HKMR --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 3, backward_pass: false}" &
wait
run "$RUNS/lite0_inner2" $HKMR --set "model.regressor_kwargs={inner_iters: 2, outer_iters: 3}" &
run "$RUNS/lite0_outer1" $HKMR --set "model.regressor_kwargs={inner_iters: 4, outer_iters: 1}" &
wait
run "$RUNS/lite0_discriminator" $HKMR --set prior.kind=discriminator
"$PY" -m training.evaluate --names HKMR "no joint hierarchy" "forward only" "2 inner" "1 outer" "discriminator prior" \
  --checkpoint "$(last "$RUNS/lite0_hkmr")" --checkpoint "$(last "$RUNS/lite0_no_hierarchy")" \
  --checkpoint "$(last "$RUNS/lite0_forward_only")" --checkpoint "$(last "$RUNS/lite0_inner2")" \
  --checkpoint "$(last "$RUNS/lite0_outer1")" --checkpoint "$(last "$RUNS/lite0_discriminator")" \
  --data "synthetic:$DATA/synthetic/test" --workers 1 --out outputs/eval_pretrained_ablation

# Ablations at the full budget: the default weights (the fourth stage) fine-tuned 1,250 more steps on
# people no stage has seen (seed 6), unchanged (three seeds: the noise of this protocol) and with one
# ingredient of the regressor removed (model.init_ablation, two seeds each); then the default
# weights run at fewer iterations without retraining (--iterations)
STORE6="$DATA/store/train_s6_128_bystanders"
"$PY" -m training.datasets.store render --out "$STORE6" --num 32000 --seed 6 --image-size 128 --bystanders 0.5 \
  --processes "$STORE_PROCESSES"
ablate() {  # ablate NAME [--set ...]: the fourth stage's weights fine-tuned as RUNS/finetune_NAME
  local name=$1; shift
  continue_stage "$RUNS/finetune_$name" training/configs/lite0_store_hkmr_ablation.yaml "$STORE6" \
    "$(last "$RUNS/lite0_hkmr_stage4")" "$@"
}
variant() {  # variant NAME KWARGS [--set ...]: an ablation started from the full network's layers
  ablate "$1" --set model.init_ablation=true --set "model.regressor_kwargs={$2}" "${@:3}"
}
ablate hkmr &
ablate hkmr_seed7 --set seed=7 &
wait
variant no_hierarchy "inner_iters: 4, outer_iters: 3, joint_hierarchy: false" &
variant forward_only "inner_iters: 4, outer_iters: 3, backward_pass: false" &
wait
variant inner2 "inner_iters: 2, outer_iters: 3" &
variant outer1 "inner_iters: 4, outer_iters: 1" &
wait
# a third control and a second seed of every ablation
ablate hkmr_seed8 --set seed=8 &
variant inner2_seed7 "inner_iters: 2, outer_iters: 3" --set seed=7 &
variant outer1_seed7 "inner_iters: 4, outer_iters: 1" --set seed=7 &
wait
variant no_hierarchy_seed7 "inner_iters: 4, outer_iters: 3, joint_hierarchy: false" --set seed=7 &
variant forward_only_seed7 "inner_iters: 4, outer_iters: 3, backward_pass: false" --set seed=7 &
wait
names=(hkmr hkmr_seed7 hkmr_seed8 no_hierarchy no_hierarchy_seed7 forward_only forward_only_seed7 inner2 inner2_seed7
       outer1 outer1_seed7)
checkpoints=(); for name in "${names[@]}"; do checkpoints+=(--checkpoint "$(last "$RUNS/finetune_$name")"); done
"$PY" -m training.evaluate --names "${names[@]}" "HKMR stage 4, not fine-tuned" "${checkpoints[@]}" \
  --checkpoint "$(last "$RUNS/lite0_hkmr_stage4")" --data "synthetic:$DATA/synthetic/test" --workers 1 \
  --out outputs/eval_ablation_full_budget
"$PY" -m training.evaluate --names "HKMR stage 4" --checkpoint "$(last "$RUNS/lite0_hkmr_stage4")" \
  --iterations 2x3 1x3 4x2 4x1 --data "synthetic:$DATA/synthetic/test" --workers 1 \
  --out outputs/eval_iterations_stage4
