#!/usr/bin/env bash
# Runs the same workloads on docanalyze's engine and, when a llama.cpp build is given, on
# llama.cpp, one after the other, and prints both tables:
#   llama-bench -p 512 -n 128               (prefill and single-sequence decode)
#   llama-batched-bench -npp 128 -ntg 128 -npl 1,2,4,8,16   (aggregate decode over B sequences)
#
# usage: scripts/bench-vs-llama-cpp.sh [LLAMA_CPP_BUILD_DIR]   (or LLAMA_CPP_BUILD=...)
#   THREADS (default 2), NPL (default 1,2,4,8,16), REPS (default 3), MODEL (default model)
# llama.cpp is never part of this repository; build it from its public source with
#   cmake -B build -DLLAMA_CURL=OFF && cmake --build build -j2 --target llama-bench llama-batched-bench
# and pass that build folder. Run on an otherwise idle machine: both use every thread given.
# Ends with a table of medians and ratios (scripts/bench_summary.py).
set -euo pipefail
cd "$(dirname "$0")/.."

llama=${1:-${LLAMA_CPP_BUILD:-}}
# A build of ../shared/tools/build-llama-cpp.sh keeps its shared libraries beside the tools.
[ -z "$llama" ] || export LD_LIBRARY_PATH="$llama/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
threads=${THREADS:-2}
npl=${NPL:-1,2,4,8,16}
reps=${REPS:-3}
scripts/fetch-model.sh
if [ -n "${DOCANALYZE_HOME:-}" ]; then dir="$DOCANALYZE_HOME/models"; else dir="${XDG_CACHE_HOME:-$HOME/.cache}/docanalyze/models"; fi
model=${MODEL:-$dir/SmolLM2-135M-Instruct.Q4_1.gguf}

cargo build --release --quiet --example batched_bench
log=$(mktemp)
trap 'rm -f "$log"' EXIT
exec > >(tee "$log")
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; threads $threads"
for r in $(seq "$reps"); do
  echo "== docanalyze, run $r"
  target/release/examples/batched_bench --model "$model" --threads "$threads" --npl "$npl"
  if [ -n "$llama" ]; then
    echo "== llama.cpp, run $r"
    "$llama/bin/llama-bench" -m "$model" -p 512 -n 128 -t "$threads" -r 1 2>/dev/null | grep '|'
    "$llama/bin/llama-batched-bench" -m "$model" -c 4096 -b 2048 -ub 512 -npp 128 -ntg 128 \
      -npl "$npl" -t "$threads" 2>/dev/null | grep '^|'
  fi
done
echo "== summary"
python3 scripts/bench_summary.py <"$log"
