#!/usr/bin/env bash
# Publish the Prompt Recycling grid (recycling_minilm_smollm2.sh) under docs/results/: one page with, per direction and
# task, the table scripts/recycle_grid.py printed (intervals, majority class, Holm-adjusted paired tests) and its
# legend, taken from the .log the grid wrote beside each JSON. Nothing is re-run.
#   bash scripts/grids/publish_recycling.sh OUT [NAME]        (NAME default: recycling_minilm_smollm2)
#   DEST=/tmp/preview bash scripts/grids/publish_recycling.sh ...      (default DEST: docs/results)
set -euo pipefail
OUT=${1:?the grid output folder}; NAME=${2:-recycling_minilm_smollm2}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${DEST:-$HERE/docs/results}
mkdir -p "$DEST"
# in the order the grid wrote them (its first task first, each direction in turn)
mapfile -t LOGS < <(find "$OUT" -maxdepth 1 -type f -name "*_to_*_*.log" -printf "%T@ %p\n" | sort -n | cut -d" " -f2-)
[ ${#LOGS[@]} -gt 0 ] || { echo "no <source>_to_<target>_<task>.log in $OUT: run scripts/grids/recycling_minilm_smollm2.sh $OUT first" >&2; exit 2; }
COMMIT=$(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "<!-- written by scripts/grids/publish_recycling.sh: edit the grid or scripts/recycle_grid.py, not this file -->"
  echo
  echo "Regenerated on $(date -u +%Y-%m-%d) at commit $COMMIT from \`$(basename "$OUT")\`"
  echo "(\`bash scripts/grids/recycling_minilm_smollm2.sh OUT\`, then \`bash scripts/grids/publish_recycling.sh OUT\`)."
  for log in "${LOGS[@]}"; do
    name=$(basename "$log" .log)           # <source>_to_<target>_<task>
    source=${name%%_to_*}; rest=${name#*_to_}
    echo
    echo "## ${source} → ${rest%%_*}, ${rest#*_}"
    echo
    # the block recycle_grid.py prints at the end: the heading line, the table, the legend and the wall time
    block=$(awk '/^Recycled to /{on=1} on{print} /^wall time /{on=0}' "$log")
    [ -n "$block" ] || { echo "$log has no finished table (did recycle_grid.py fail? see the log)" >&2; exit 2; }
    echo "$block"
  done
} > "$DEST/$NAME.md"
echo "published: $DEST/$NAME.md"
