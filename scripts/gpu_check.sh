#!/usr/bin/env bash
# The prepared GPU check: on one GPU, at most 8 minutes, ONE markdown table (RoBERTa-large- and T5-large-shaped
# models with random weights: population-batched vs one-at-a-time BBT generations, bf16 vs fp32, peak memory,
# 8,000 BBT calls extrapolated beside the reference's ~13 minutes on an RTX 3090, BBTv2 with and without its
# prefix cache, prompt tuning and P-tuning v2 steps vs peft, the GPU pool claiming the device). What each row
# measures: scripts/gpu_check.py's docstring.
#
#   bash scripts/gpu_check.sh                        # a GPU box (the table goes in README)
#   bash scripts/gpu_check.sh --device cpu --small   # tiny models of the same shapes, under a minute on 2 cores
#
# No hub and no data mirror are needed. Arguments go to scripts/gpu_check.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# the 8-minute promise, kept by force: a run that would pass it is stopped (its progress lines say how far it got)
exec timeout --kill-after=10 480 python3 scripts/gpu_check.py "$@"
