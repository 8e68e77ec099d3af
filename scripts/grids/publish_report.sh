#!/usr/bin/env bash
# Publish a finished grid's report under docs/results/: runs prompt-bench-report on the grid's folder (intervals,
# majority-class and random rows, markers, and the paired comparisons asked for with --compare A B), then writes
# <DEST>/<NAME>.md (the command, the commit and the date, the table, the comparisons), <NAME>.csv, <NAME>.tex and
# <NAME>_compare.csv. Nothing is re-run: the report reads the run folders' stored predictions.
#   bash scripts/grids/publish_report.sh OUT NAME [--compare A B ...] [other prompt-bench-report options, --metric too]
#   DEST=/tmp/preview bash scripts/grids/publish_report.sh ...      (default DEST: docs/results)
set -euo pipefail
OUT=${1:?the grid output folder}; NAME=${2:?the table file name under docs/results, without extension}
shift 2
HERE=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${DEST:-$HERE/docs/results}
mkdir -p "$DEST"
prompt-bench-report "$OUT" --wandb disabled "$@"
# with --metric M the report writes report_M.* and compare_M.* beside the headline ones
SUFFIX=""
ARGS=("$@")
for i in "${!ARGS[@]}"; do [ "${ARGS[$i]}" != --metric ] || SUFFIX="_${ARGS[$((i + 1))]}"; done
COMMIT=$(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "<!-- written by scripts/grids/publish_report.sh: edit the grid or the report, not this file -->"
  echo
  echo "Regenerated on $(date -u +%Y-%m-%d) at commit $COMMIT from the run folders of \`$(basename "$OUT")\`:"
  echo
  echo '```'
  printf 'prompt-bench-report <grid folder>'; printf ' %q' "$@"; echo
  echo '```'
  echo
  cat "$OUT/report$SUFFIX.md"
  if [ -f "$OUT/compare$SUFFIX.md" ] && [[ " $* " == *" --compare "* ]]; then
    echo
    echo "### Paired comparisons"
    echo
    cat "$OUT/compare$SUFFIX.md"
  fi
} > "$DEST/$NAME.md"
cp "$OUT/report$SUFFIX.csv" "$DEST/$NAME.csv"
cp "$OUT/report$SUFFIX.tex" "$DEST/$NAME.tex"
if [[ " $* " == *" --compare "* ]]; then cp "$OUT/compare$SUFFIX.csv" "$DEST/${NAME}_compare.csv"; fi
echo "published: $DEST/$NAME.md (.csv, .tex)"
