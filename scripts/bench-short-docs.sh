#!/usr/bin/env bash
# `docanalyze run` on 32 short real documents (SMS messages of sample-data, a sentence or two
# each), `--max-tokens 64 --ignore-eos`: `--sequential` against `--sequences K` (default 8), in
# one invocation, and the wall-time ratio. Checks that both runs wrote the same records.
# usage: scripts/bench-short-docs.sh [K]      THREADS (default: all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-8}
scripts/fetch-model.sh >/dev/null
cargo build --release --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -32 sample-data/labeled/sms-spam-40.jsonl >"$tmp/docs.jsonl"
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
run() {
  local start end
  start=$(date +%s.%N)
  target/release/docanalyze run "$tmp/docs.jsonl" --max-tokens 64 --ignore-eos -q "${threads[@]}" \
    -o "$tmp/$1.jsonl" "${@:2}"
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}
seq_s=$(run sequential --sequential)
par_s=$(run parallel --sequences "$k")
same=$(python3 - "$tmp" <<'PY'
import json, sys
load = lambda n: sorted((r["id"], r["output"]) for r in map(json.loads, open(f"{sys.argv[1]}/{n}.jsonl")))
a, b = load("sequential"), load("parallel")
print("identical" if a == b and len(a) == 32 else f"DIFFERENT ({len(a)} vs {len(b)} records)")
PY
)
python3 -c "print(f'sequential {$seq_s:.1f} s, --sequences $k {$par_s:.1f} s: {$seq_s / $par_s:.2f}x (outputs $same)')"
