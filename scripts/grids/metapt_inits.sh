#!/usr/bin/env bash
# MetaPT closing grid (docs/results/README.md): downstream 16-shot prompt tuning on MiniLM from five
# initialisations (random, vocab-sampled, PPT, MetaPT K-means, MetaPT LDA), SST-2 / MRPC / CoLA x 5 seeds, and AG News x 3
# seeds: with SST-2 the one task where MiniLM carries signal, and the only one whose texts are not the pre-training corpus.
# CPU-sized: 20 prompt tokens, 100 steps, dev every 20. One worker thread (run two grids side by side).
#   bash scripts/grids/metapt_inits.sh [OUT]   then   prompt-bench-report OUT
# Re-running skips finished runs and resumes interrupted ones.
set -uo pipefail
OUT=${1:-outputs/closing/metapt_inits}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
COMMON=(logger=none run.progress=false model=minilm setting.k=16
        method.n_prompt_tokens=20 method.max_steps=100 method.eval_every=20
        hydra.sweep.dir="$OUT")
inits() {
  "$@" method=metapt                                # K-means auxiliary tasks (pre-trains once, then cached)
  "$@" method=metapt method.pretrain.clustering=lda
  "$@" method=ppt
  "$@" method=prompt_tuning method.init=vocab,random
}
run() { prompt-bench -m "${COMMON[@]}" task=sst2,mrpc,cola seed=13,21,42,87,100 "$@"; }
# AG News scores 6,600 test examples, which makes a run about 3x an SST-2 one, so 3 seeds
run_ag_news() { prompt-bench -m "${COMMON[@]}" task=ag_news seed=13,21,42 "$@"; }
inits run
inits run_ag_news
