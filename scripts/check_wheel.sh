#!/usr/bin/env bash
# The package as a researcher installs it: build the wheel, install it (not editable) into a fresh virtual
# environment, and run prompt-bench from a folder outside the checkout. The environment sees the machine's
# site-packages for the heavy dependencies (torch, transformers), but prompt-bench itself only from the wheel.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
python3 -m pip wheel "$repo" --no-deps -q -w "$work/wheel"
python3 -m venv --system-site-packages "$work/env"
"$work/env/bin/python" -m pip install -q --no-deps "$work"/wheel/prompt_bench-*.whl
mkdir "$work/elsewhere" && cd "$work/elsewhere"
"$work/env/bin/python" -c "import prompt_bench.conf_files as c; assert 'site-packages' in str(c.CONF_DIR), c.CONF_DIR; print('conf from', c.CONF_DIR)"
"$work/env/bin/prompt-bench" --version
"$work/env/bin/prompt-bench" --help | sed -n 1p
mirror="${PROMPT_BENCH_DATA:-$repo/../shared/data}"
if [ -d "$mirror" ]; then
  "$work/env/bin/prompt-bench" method=manual task=sst2 setting.k=4 logger=none run.progress=false \
      data.mirror="$mirror" run.root="$work/elsewhere/runs" > "$work/run.out"
  grep -q "test accuracy" "$work/run.out"
  test -f "$(find "$work/elsewhere/runs" -name results.json | head -1)"
else  # no data here (and no hub): compose the run without running it
  echo "no data mirror at $mirror: composing the run instead of running it"
  "$work/env/bin/prompt-bench" method=bbt task=sst2 --cfg job | grep -q "name: bbt"
fi
echo "wheel check passed in $(( $(date +%s) - start )) s: built, installed into a fresh environment, ran from $work/elsewhere"
