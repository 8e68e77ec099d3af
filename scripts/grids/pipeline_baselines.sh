#!/usr/bin/env bash
# The pipeline's first comparison (docs/results/README.md): the zero-shot manual prompt, prompt tuning at its
# MiniLM defaults (50 tokens, 300 steps) and BBT at its CPU-demo budget (1,000 API calls, 10 prompt tokens), MiniLM,
# 16-shot, seeds 13/21/42, on SST-2 and AG News (the two tasks where MiniLM carries signal) and RTE (where it does
# not). One thread per run.
#   bash scripts/grids/pipeline_baselines.sh [OUT] [extra overrides]
#   prompt-bench-report OUT --compare bbt manual --compare prompt_tuning manual --compare bbt prompt_tuning
# Re-running skips finished runs and resumes interrupted ones.
set -uo pipefail
OUT=${1:-outputs/closing/pipeline_baselines}
shift || true
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
prompt-bench -m logger=none run.progress=false model=minilm setting.k=16 method=manual,prompt_tuning,bbt \
  task=sst2,ag_news,rte seed=13,21,42 hydra.sweep.dir="$OUT" "$@"
