#!/usr/bin/env bash
# Prompt Recycling closing grid (docs/results/README.md): prompt tuning on MiniLM and on SmolLM2 (SST-2 and CoLA,
# 16-shot, 5 seeds, 20 tokens, 100 steps), then every prompt recycled to the other model by each recycler, against
# the target's zero-shot manual prompt, random prompts and the prompts tuned on the target itself, on a fixed
# 200-example subset of each test split.
#   bash scripts/grids/recycling_minilm_smollm2.sh [OUT] [TASK ...]      (tasks default: sst2 cola)
# Re-running skips finished prompt tuning runs and resumes interrupted ones.
set -uo pipefail
OUT=${1:-outputs/closing/recycling_minilm_smollm2}
shift || true
TASKS=("$@")
[ ${#TASKS[@]} -gt 0 ] || TASKS=(sst2 cola)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
HERE=$(dirname "$0")
COMMON=(logger=none run.progress=false method=prompt_tuning setting.k=16
        method.n_prompt_tokens=20 method.max_steps=100 method.eval_every=20 seed=13,21,42,87,100)
for task in "${TASKS[@]}"; do
  prompt-bench -m "${COMMON[@]}" task="$task" model=minilm hydra.sweep.dir="$OUT/minilm_sources"
  prompt-bench -m "${COMMON[@]}" task="$task" model=smollm2 method.batch_size=8 hydra.sweep.dir="$OUT/smollm2_sources"
  python "$HERE/../recycle_grid.py" "$OUT/minilm_sources/$task" --target smollm2 --limit-test 200 \
    --tuned-on-target "$OUT/smollm2_sources/$task" --out "$OUT/minilm_to_smollm2_$task.json" 2>&1 | tee "$OUT/minilm_to_smollm2_$task.log"
  python "$HERE/../recycle_grid.py" "$OUT/smollm2_sources/$task" --target minilm --limit-test 200 \
    --tuned-on-target "$OUT/minilm_sources/$task" --out "$OUT/smollm2_to_minilm_$task.json" 2>&1 | tee "$OUT/smollm2_to_minilm_$task.log"
done
