#!/usr/bin/env bash
# llama.cpp's greedy continuations of a set of prompts, as a test fixture: one JSON line per
# prompt with the prompt text, its token count, the ids llama.cpp generated and, per generated
# token, its log-probability and its lead over the runner-up (`margins`: a near tie, which any
# other arithmetic may break the other way, shows as a small one). llama-server `/completion`,
# temperature 0, ignore_eos, no prompt cache, BOS as the model asks.
# usage: scripts/llama-cpp-greedy.sh LLAMA_CPP_BIN MODEL.gguf [N_TOKENS] > FIXTURE.jsonl
# The prompts: short ones of several kinds, and the starts of three sample documents long
# enough to cross Gemma 3's 512-token sliding window (~700, ~1,300 and ~2,000 tokens).
set -euo pipefail
bin=${1:?usage: llama-cpp-greedy.sh LLAMA_CPP_BIN MODEL.gguf [N_TOKENS]}
model=${2:?usage: llama-cpp-greedy.sh LLAMA_CPP_BIN MODEL.gguf [N_TOKENS]}
tokens=${3:-24}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
source "$here/scripts/llama-server-lib.sh"
trap cleanup EXIT
start_llama_server "$model" -c 4096 --log-disable
PORT=$port TOKENS=$tokens DOCS="$here/sample-data/docs" python3 - <<'PY'
import json, os, urllib.request
docs = os.environ["DOCS"]
def start(name, chars):
    with open(os.path.join(docs, name), encoding="utf-8") as f:
        return f.read()[:chars] + "\n\nIn summary,"
prompts = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, built from 1887 to 1889 as the entrance arch for the 1889 World's Fair. It was designed by",
    "Question: What is the capital of France?\nAnswer:",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "The three primary colors of light are",
    start("moby-dick-chapter-001.txt", 3000),
    start("sotu-1790_george_washington_n.txt", 6000),
    start("sotu-1934_franklin_d_roosevelt_d.txt", 9000),
]
for p in prompts:
    body = json.dumps({"prompt": p, "n_predict": int(os.environ["TOKENS"]), "temperature": 0,
                       "n_probs": 2, "post_sampling_probs": False, "return_tokens": True,
                       "cache_prompt": False, "ignore_eos": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{os.environ['PORT']}/completion", body,
                                 {"Content-Type": "application/json"})
    r = json.load(urllib.request.urlopen(req))
    steps = r["completion_probabilities"]
    top = [s["top_logprobs"] for s in steps]
    print(json.dumps({"prompt": p, "prompt_tokens": r["tokens_evaluated"], "tokens": r["tokens"],
                      "logprobs": [round(s["logprob"], 4) for s in steps],
                      "margins": [round(t[0]["logprob"] - t[1]["logprob"], 4) for t in top]}))
PY
