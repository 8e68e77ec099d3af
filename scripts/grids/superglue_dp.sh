#!/usr/bin/env bash
# Dynamic Prompting on SuperGLUE, CPU-sized (issue 4's closing grid): MiniLM, FewGLUE size (32 train + 32 dev,
# setting=fewglue), seeds 13/21/42, 20 prompt tokens, 100 steps, dev every 20; prompt tuning, P-tuning v2, DP
# (position + length + representation, instance level) and one ablation per DP component (that component off).
#   bash scripts/grids/superglue_dp.sh [OUT] [extra overrides, e.g. compute.bf16=true]   then   prompt-bench-report OUT
# Two copies started side by side share the work: a run the other copy holds fails at once with RunBusy (its
# folder lock) and this copy moves on to the next; finished runs are skipped. BoolQ (long passages, 2,950 test
# examples) costs about 3x any other task, so it comes first in the main rows and last in the ablations.
# Last, a diagnostic of DP's temperature schedule on CB and RTE.
set -uo pipefail
OUT=${1:-outputs/closing/superglue_dp}
shift || true
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
run() { prompt-bench -m logger=none run.progress=false model=minilm setting=fewglue task="$1" seed=13,21,42 \
          method.n_prompt_tokens=20 method.max_steps=100 method.eval_every=20 hydra.sweep.dir="$OUT" "${@:2}"; }
run boolq,cb,superglue_rte,wic,copa method=prompt_tuning,p_tuning_v2,dynamic_prompting "$@"
for tasks in cb,superglue_rte,wic,copa boolq; do
  for component in position length representation; do
    run "$tasks" method=dynamic_prompting method.dp.$component=off "$@"
  done
done
# A diagnostic of DP's temperature schedule: DPT's rate is made for 20,000 steps, so after 100 the temperature is
# still 0.985; this rate brings it to its 0.5 floor at step 100 (CB and RTE only).
run cb,superglue_rte method=dynamic_prompting method.temperature.rate=1.4e-4 "$@"
