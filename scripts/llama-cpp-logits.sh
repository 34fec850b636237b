#!/usr/bin/env bash
# llama.cpp's next-token log-probabilities at every position of a fixed token sequence, on the
# synthetic reference file of each architecture (`gen_model OUT ref-ARCH`, the same bytes the
# test writes), as test fixtures: tests/fixtures/logits-ARCH.json holds the input ids and, per
# position, llama.cpp's 8 most likely next tokens with their log-probabilities (llama-server
# `/completion` on the ids up to that position, n_probs 8, from the raw logits).
# usage: scripts/llama-cpp-logits.sh LLAMA_CPP_BIN [ARCH...]
#   (default: llama qwen2 qwen3 gemma3 phi3; llama.cpp reads mistral files as `llama`)
set -euo pipefail
bin=${1:?usage: llama-cpp-logits.sh LLAMA_CPP_BIN [ARCH...]}
shift
archs=${*:-llama qwen2 qwen3 gemma3 phi3}
cd "$(dirname "$0")/.."
cargo build --release --quiet --example gen_model
tmp=$(mktemp -d)
source scripts/llama-server-lib.sh
trap cleanup EXIT
for arch in $archs; do
  model="$tmp/ref-$arch.gguf"
  target/release/examples/gen_model "$model" "ref-$arch" 2>/dev/null
  start_llama_server "$model" -c 512
  PORT=$port ARCH=$arch python3 - >"tests/fixtures/logits-$arch.json" <<'PY'
import json, os, urllib.request
# 96 ids spread over the vocabulary (ordinary tokens, no control ids 256-258).
ids = [(i * 97 + 31) % 256 if i % 5 else 259 + (i * 13) % 61 for i in range(96)]
# The server holds back a token that ends inside a UTF-8 sequence (a lone byte of 0x80-0xFF),
# probabilities and all, so those are never picked; the probabilities reported come from the
# raw logits (server-common.cpp get_token_probabilities), before any bias.
never_picked = [[i, False] for i in range(128, 256)]
steps = []
for n in range(1, len(ids) + 1):
    body = json.dumps({"prompt": ids[:n], "n_predict": 1, "temperature": 0, "n_probs": 8,
                       "post_sampling_probs": False, "cache_prompt": True,
                       "ignore_eos": True, "logit_bias": never_picked}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{os.environ['PORT']}/completion", body,
                                 {"Content-Type": "application/json"})
    r = json.load(urllib.request.urlopen(req))
    assert r["tokens_evaluated"] == n, r["tokens_evaluated"]
    top = r["completion_probabilities"][0]["top_logprobs"]
    steps.append([[t["id"], round(t["logprob"], 5)] for t in top])
print(json.dumps({"architecture": os.environ["ARCH"], "ids": ids, "top": steps}))
PY
  stop_llama_server
  echo "tests/fixtures/logits-$arch.json" >&2
done
