#!/usr/bin/env bash
# Publish docs/results/superglue_dpt_recipe.md: the reference recipes of experiment=dp_superglue (superglue_dpt_recipe.sh)
# against the same methods with prompt-bench's defaults (superglue_dp.sh's main rows), paired over the tasks both grids
# ran (CB, RTE, COPA) and their seeds. The report reads one folder, so this builds one out of the two grids: real
# folders with symbolic links to the run files (nothing is copied or re-run), without superglue_dp's prompt tuning
# rows, DP ablations and temperature diagnostic.
#   bash scripts/grids/dpt_recipe_vs_default.sh SUPERGLUE_DP_OUT SUPERGLUE_DPT_RECIPE_OUT [COMBINED_OUT]
set -euo pipefail
DEFAULT=$(realpath "${1:?superglue_dp.sh output folder}"); RECIPE=$(realpath "${2:?superglue_dpt_recipe.sh output folder}")
OUT=${3:-$(mktemp -d)/superglue_dpt_recipe}
HERE=$(cd "$(dirname "$0")" && pwd)
[ ! -e "$OUT" ] || { echo "$OUT exists: give a new folder" >&2; exit 2; }
mkdir -p "$OUT/default" "$OUT/recipe"
for task in cb superglue_rte copa; do
  cp -rs "$DEFAULT/$task" "$OUT/default/$task"
  cp -rs "$RECIPE/$task" "$OUT/recipe/$task"
done
rm -rf "$OUT"/default/*/prompt_tuning
# the ablations turn one DP component off; the diagnostic raises the temperature's rate
grep -l -E "^ +(position|length|representation): 'off'|^ +rate: 0.00014" "$OUT"/default/*/dynamic_prompting/*/*/config.yaml \
  | xargs -r -n1 dirname | xargs -r rm -rf
find "$OUT" -name "*.lock" -delete
DP_RECIPE="dynamic_prompting (adafactor) (batch_size=8, init=uniform, lr=0.3, model_dropout=true, temperature.every=4)"
PT2_RECIPE="p_tuning_v2 (batch_size=8, dropout=0.1, head=reference, model_dropout=true, prefix_init_std=0.02)"
COMPARE=(--compare "$DP_RECIPE" dynamic_prompting --compare "$PT2_RECIPE" p_tuning_v2 --compare "$DP_RECIPE" "$PT2_RECIPE")
bash "$HERE/publish_report.sh" "$OUT" superglue_dpt_recipe "${COMPARE[@]}"
# CB's accuracy is DPT's metric (ours is macro-F1): the same report and comparisons by accuracy
bash "$HERE/publish_report.sh" "$OUT" superglue_dpt_recipe_accuracy --metric accuracy "${COMPARE[@]}"
