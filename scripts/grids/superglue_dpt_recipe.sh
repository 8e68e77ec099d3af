#!/usr/bin/env bash
# P-tuning v2 and Dynamic Prompting with experiment=dp_superglue's reference recipes, CPU-sized (issue 17's closing
# grid): MiniLM, FewGLUE size (setting=fewglue), CB / RTE / COPA, seeds 13/21/42. The preset's recipes apply as they
# are (DP: DPT's templates and words, transformers' Adafactor lr 0.3, constant warm-up, clipping at 1.0, dropout on,
# U(-0.5, 0.5) pool, temperature annealed every 4 steps; P-tuning v2: THUDM's reference head on the plain text,
# dropout 0.1, AdamW 1e-2 decaying linearly, clipping at 1.0; both at DPT's batch 8) except the length: 100 optimizer
# steps instead of 80,000, dev every 20 instead of 2,000, and DP's warm-up 10 steps instead of 500.
#   bash scripts/grids/superglue_dpt_recipe.sh [OUT]   then   prompt-bench-report OUT [--metric accuracy]
# The two sweeps may run side by side (finished runs are skipped, a run the other holds is refused).
set -uo pipefail
OUT=${1:-outputs/closing/superglue_dpt_recipe}
shift || true
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
run() { prompt-bench -m experiment=dp_superglue model=minilm setting=fewglue task=cb,superglue_rte,copa seed=13,21,42 \
          method.max_steps=100 method.eval_every=20 logger=none run.progress=false hydra.sweep.dir="$OUT" "$@"; }
run method=dynamic_prompting optimizer.warmup_steps=10 "$@"
run method=p_tuning_v2 "$@"
