#!/usr/bin/env bash
# The SuperGLUE Dynamic Prompting comparison (superglue_dp.sh) checked on the two tasks on which MiniLM carries signal,
# SST-2 and AG News: 16-shot (setting.k=16), seeds 13/21/42, prompt tuning, P-tuning v2 and DP (position + length +
# representation, instance level), with superglue_dp.sh's budget (20 prompt tokens, 100 steps, dev every 20). On
# SuperGLUE MiniLM sits near the majority class, so differences there say little about the methods.
#   bash scripts/grids/dp_signal_tasks.sh [OUT] [extra overrides]
#   prompt-bench-report OUT --compare dynamic_prompting p_tuning_v2 --compare dynamic_prompting prompt_tuning
# Re-running skips finished runs and resumes interrupted ones.
set -uo pipefail
OUT=${1:-outputs/closing/dp_signal_tasks}
shift || true
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
prompt-bench -m logger=none run.progress=false model=minilm setting=few_shot setting.k=16 task=sst2,ag_news \
  seed=13,21,42 method.n_prompt_tokens=20 method.max_steps=100 method.eval_every=20 \
  method=prompt_tuning,p_tuning_v2,dynamic_prompting hydra.sweep.dir="$OUT" "$@"
