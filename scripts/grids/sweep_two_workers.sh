#!/usr/bin/env bash
# A sweep over two joblib workers, then the same sweep again (docs/results/README.md): MiniLM, methods manual /
# prompt_tuning / bbt at their MiniLM defaults, SST-2 and RTE, seeds 13 and 21, one thread per worker, W&B offline.
# The second launch finds every run finished (same config hash) and reruns nothing.
#   bash scripts/grids/sweep_two_workers.sh [OUT] [extra overrides, e.g. compute.bf16=true]
set -uo pipefail
OUT=${1:-outputs/closing/sweep_two_workers}
shift || true
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=${WANDB_MODE:-offline}
sweep() { prompt-bench -m hydra/launcher=joblib_gpus hydra.launcher.n_jobs=2 method=manual,prompt_tuning,bbt \
            task=sst2,rte seed=13,21 hydra.sweep.dir="$OUT" "$@"; }
for attempt in first again; do
  start=$SECONDS
  sweep "$@"
  echo "sweep ($attempt): $((SECONDS - start)) s"
done
prompt-bench-report "$OUT"
