#!/usr/bin/env bash
# End to end against what a user would run instead: llama-server with parallel slots fed by 8
# concurrent clients, versus `docanalyze run --sequences 8`, on the same short documents with
# the same instruction (the built-in `summarize`), greedy, every answer --max-tokens long.
# Also docanalyze with --prefix-cache off. Wall times exclude model loading (llama-server is
# timed from its first request, once /health says ready; docanalyze by its report's wall_s).
#
#   scripts/bench-vs-llama-server.sh LLAMA_CPP_BIN [DOCS.jsonl]
#
# LLAMA_CPP_BIN: the bin folder of ../shared/tools/build-llama-cpp.sh. DOCS defaults to the first
# 32 lines of sample-data/labeled/sms-spam-40.jsonl. Env: MODEL (default model), MAX_TOKENS (64),
# REPS (3), THREADS (2), PARALLEL (8), CTX (1024: positions per slot and per sequence).
# llama-server listens on a free port of 127.0.0.1 and is stopped by its PID. Prints every
# run, then medians and ratios.
set -euo pipefail
bin=${1:?usage: bench-vs-llama-server.sh LLAMA_CPP_BIN [DOCS.jsonl]}
cd "$(dirname "$0")/.."
model=${MODEL:-$(scripts/fetch-model.sh)}
max_tokens=${MAX_TOKENS:-64} reps=${REPS:-3} threads=${THREADS:-2} parallel=${PARALLEL:-8}
tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -z $server_pid ]] || { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; }
  rm -rf "$tmp"
}
trap cleanup EXIT
docs=${2:-$tmp/docs.jsonl}
[[ -n ${2:-} ]] || head -n 32 sample-data/labeled/sms-spam-40.jsonl >"$docs"
cargo build --release --quiet
ctx=${CTX:-1024}

# A fresh server per run: its slots keep earlier prompts (cache_prompt), and the same documents
# sent again would find their whole prompts cached.
start_server() {
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin/llama-server" -m "$model" \
    --host 127.0.0.1 --port "$port" -np "$parallel" -c $((ctx * parallel)) -t "$threads" \
    --log-disable >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log"; exit 1; }
    sleep 0.1
  done
  echo "llama-server did not get ready" >&2
  exit 1
}
stop_server() {
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# The client: PARALLEL threads pull documents from one queue; prints the wall time.
client='
import json, queue, sys, threading, time, urllib.request
url, docs_path, instruction, max_tokens, parallel = sys.argv[1:6]
docs = [json.loads(l)["text"] for l in open(docs_path) if l.strip()]
work = queue.Queue()
for d in docs:
    work.put(d)
def worker():
    while True:
        try:
            doc = work.get_nowait()
        except queue.Empty:
            return
        body = json.dumps({"messages": [{"role": "user", "content": instruction + doc}],
                           "max_tokens": int(max_tokens), "temperature": 0, "ignore_eos": True,
                           "cache_prompt": True}).encode()
        req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            out = json.load(r)
        assert out["usage"]["completion_tokens"] == int(max_tokens), out["usage"]
start = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(int(parallel))]
for t in threads: t.start()
for t in threads: t.join()
print(f"{time.perf_counter() - start:.3f}")
'
instruction=$'Summarize the following document in one or two sentences.\n\n'
run_docanalyze() {
  target/release/docanalyze run "$docs" --model "$model" --sequences "$parallel" \
    --max-tokens "$max_tokens" --ignore-eos --ctx-size "$ctx" --threads "$threads" -q \
    --prefix-cache "$1" -o "$tmp/out.jsonl" --report "$tmp/report.json"
  python3 -c 'import json, sys; print("%.3f" % json.load(open(sys.argv[1]))["wall_s"])' "$tmp/report.json"
}
echo "== $(wc -l <"$docs") documents, $max_tokens tokens each, $parallel in parallel, $threads threads, $(basename "$model")"
: >"$tmp/times"
for r in $(seq "$reps"); do
  start_server
  server=$(python3 -c "$client" "http://127.0.0.1:$port/v1/chat/completions" "$docs" "$instruction" "$max_tokens" "$parallel")
  stop_server
  ours=$(run_docanalyze on)
  off=$(run_docanalyze off)
  echo "run $r: llama-server $server s, docanalyze $ours s, docanalyze --prefix-cache off $off s"
  echo "$server $ours $off" >>"$tmp/times"
done
python3 - "$tmp/times" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
server, ours, off = (statistics.median(c) for c in zip(*rows))
print(f"medians: llama-server {server:.2f} s, docanalyze {ours:.2f} s, --prefix-cache off {off:.2f} s")
print(f"docanalyze vs llama-server: {server / ours:.2f}x faster; prefix cache: {off / ours:.2f}x")
PY
