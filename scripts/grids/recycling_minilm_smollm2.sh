#!/usr/bin/env bash
# Prompt Recycling closing grid (README "Measured here"): prompt tuning on MiniLM and on SmolLM2 (SST-2 and RTE,
# 16-shot, 5 seeds, 20 tokens, 100 steps), then every prompt recycled to the other model by each recycler,
# against the target's zero-shot manual prompt, random prompts and the prompts tuned on the target itself.
#   bash scripts/grids/recycling_minilm_smollm2.sh [OUT]
set -uo pipefail
OUT=${1:-outputs/closing/issue7}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
COMMON=(logger=none run.progress=false method=prompt_tuning setting.k=16
        method.n_prompt_tokens=20 method.max_steps=100 method.eval_every=20
        task=sst2,rte seed=13,21,42,87,100)
prompt-bench -m "${COMMON[@]}" model=minilm hydra.sweep.dir="$OUT/minilm_sources"
prompt-bench -m "${COMMON[@]}" model=smollm2 method.batch_size=8 hydra.sweep.dir="$OUT/smollm2_sources"
HERE=$(dirname "$0")
python "$HERE/../recycle_grid.py" "$OUT/minilm_sources" --target smollm2 --limit-test 300 \
  --tuned-on-target "$OUT/smollm2_sources" --out "$OUT/minilm_to_smollm2.json" 2>&1 | tee "$OUT/minilm_to_smollm2.log"
python "$HERE/../recycle_grid.py" "$OUT/smollm2_sources" --target minilm --limit-test 300 \
  --tuned-on-target "$OUT/minilm_sources" --out "$OUT/smollm2_to_minilm.json" 2>&1 | tee "$OUT/smollm2_to_minilm.log"
