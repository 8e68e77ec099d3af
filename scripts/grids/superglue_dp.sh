#!/usr/bin/env bash
# Dynamic Prompting on SuperGLUE, CPU-sized (issue 4's closing grid): MiniLM, FewGLUE size (32 train + 32 dev,
# setting=fewglue), seeds 13/21/42, 20 prompt tokens, 100 steps, dev every 20; prompt tuning, P-tuning v2, DP
# (position + length + representation, instance level) and one ablation per DP component (that component off).
#   bash scripts/grids/superglue_dp.sh [OUT] [extra overrides, e.g. compute.bf16=true]   then   prompt-bench-report OUT
# Tasks go in two halves so that two copies can run side by side: TASKS=boolq,copa bash ... / TASKS=cb,superglue_rte,wic.
set -uo pipefail
OUT=${1:-outputs/closing/superglue_dp}
shift || true
TASKS=${TASKS:-boolq,cb,copa,superglue_rte,wic}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
COMMON=(logger=none run.progress=false model=minilm setting=fewglue task="$TASKS" seed=13,21,42
        method.n_prompt_tokens=20 method.max_steps=100 method.eval_every=20 hydra.sweep.dir="$OUT")
run() { prompt-bench -m "${COMMON[@]}" "$@"; }
run method=prompt_tuning,p_tuning_v2,dynamic_prompting "$@"
run method=dynamic_prompting method.dp.position=off "$@"
run method=dynamic_prompting method.dp.length=off "$@"
run method=dynamic_prompting method.dp.representation=off "$@"
