#!/usr/bin/env bash
# Issue 16's before/after grid (docs/results/black_box_parity.md): bbt at the CPU demo sizes (1,000 calls, 10 tokens)
# and gdfo at 720 calls, MiniLM, 16-shot, seeds 13/21/42, SST-2 / RTE / MRPC.
#   bash scripts/grids/black_box_parity.sh after  <out>    # this checkout
#   bash scripts/grids/black_box_parity.sh before <out> <worktree of commit 1e05b04>   # the code before the parity work
set -uo pipefail
WHICH=${1:?before or after}; OUT=${2:?output folder}; TREE=${3:-.}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
C=(logger=none run.progress=false model=minilm setting.k=16 task=sst2,rte,mrpc seed=13,21,42)
cd "$TREE"
if [ "$WHICH" = before ]; then run() { python3 -m prompt_bench.cli "$@"; }; else run() { prompt-bench "$@"; }; fi
run -m "${C[@]}" method=bbt hydra.sweep.dir="$OUT/bbt"
run -m "${C[@]}" method=gdfo method.budget=720 method.gdfo.student_depth=3 hydra.sweep.dir="$OUT/gdfo"
