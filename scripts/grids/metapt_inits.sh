#!/usr/bin/env bash
# MetaPT closing grid (docs/results/README.md): downstream 16-shot prompt tuning on MiniLM from five
# initialisations (random, vocab-sampled, PPT, MetaPT K-means, MetaPT LDA), SST-2 / MRPC / CoLA x 5 seeds.
# CPU-sized: 20 prompt tokens, 100 steps, dev every 20. One worker thread (run two grids side by side).
#   bash scripts/grids/metapt_inits.sh [OUT]   then   prompt-bench-report OUT
# Re-running skips finished runs and resumes interrupted ones.
set -uo pipefail
OUT=${1:-outputs/closing/metapt_inits}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
COMMON=(logger=none run.progress=false model=minilm setting.k=16
        method.n_prompt_tokens=20 method.max_steps=100 method.eval_every=20
        task=sst2,mrpc,cola seed=13,21,42,87,100 hydra.sweep.dir="$OUT")
run() { prompt-bench -m "${COMMON[@]}" "$@"; }
run method=metapt                                   # K-means auxiliary tasks (pre-trains once, then cached)
run method=metapt method.pretrain.clustering=lda
run method=ppt
run method=prompt_tuning method.init=vocab,random
