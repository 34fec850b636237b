#!/usr/bin/env bash
# Compares docanalyze's token ids with llama.cpp's `llama-tokenize` on the text of every sample
# document (HTML and PDF as docanalyze extracts them), for one model, and prints how many agree.
#
#   scripts/compare-tokenizer.sh LLAMA_CPP_BIN [MODEL.gguf] [DOCS_DIR]
#
# LLAMA_CPP_BIN: the bin folder of ../shared/tools/build-llama-cpp.sh. MODEL defaults to Gemma 3
# 270M (scripts/fetch-model.sh gemma-3-270m), a SentencePiece vocabulary. Exit 1 on any mismatch.
# With FIXTURE=FILE, llama.cpp's ids are also written to FILE as `name<TAB>count<TAB>fnv1a64`
# lines (FNV-1a over the ids as little-endian u32), the fixture tests/real_models.rs checks
# docanalyze against in CI, where llama.cpp is not built.
set -euo pipefail
bin=${1:?usage: compare-tokenizer.sh LLAMA_CPP_BIN [MODEL.gguf] [DOCS_DIR]}
cd "$(dirname "$0")/.."
model=${2:-$(scripts/fetch-model.sh gemma-3-270m)}
docs=${3:-sample-data/docs}
cargo build --release --quiet --example tokenize
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
same=0 total=0
# `name<TAB>count<TAB>FNV-1a-64` of the ids (a JSON list on stdin).
fnv='
import json, sys
ids = json.loads(sys.stdin.read())
h = 0xcbf29ce484222325
for i in ids:
    for b in i.to_bytes(4, "little"):
        h = ((h ^ b) * 0x100000001b3) % 2**64
print(f"{sys.argv[1]}\t{len(ids)}\t{h:016x}")
'
for doc in "$docs"/*; do
  name=$(basename "$doc")
  text="$tmp/$name.txt"
  case "$doc" in
    *.html | *.htm) target/release/docanalyze extract-text --kind html --max-document-bytes 67108864 \
                      --memory 536870912 --cpu-seconds 60 -- "$doc" > "$text" ;;
    *.pdf) target/release/docanalyze extract-text --kind pdf --max-document-bytes 67108864 \
             --memory 536870912 --cpu-seconds 60 -- "$doc" > "$text" ;;
    *) cp "$doc" "$text" ;;
  esac
  theirs=$("$bin/llama-tokenize" -m "$model" -f "$text" --ids --no-escape --log-disable 2>/dev/null | tail -n 1 | tr -d ' ')
  ours=$(target/release/examples/tokenize "$model" "$text")
  if [ -n "${FIXTURE:-}" ]; then
    python3 -c "$fnv" "$name" <<< "$theirs" >> "$tmp/fixture"
  fi
  total=$((total + 1))
  if [ "$theirs" = "$ours" ]; then
    same=$((same + 1))
  else
    n_theirs=$(echo "$theirs" | tr ',' '\n' | wc -l)
    n_ours=$(echo "$ours" | tr ',' '\n' | wc -l)
    echo "differs: $name (llama.cpp $n_theirs ids, docanalyze $n_ours)"
  fi
done
echo "$same of $total documents: identical token ids ($(basename "$model"))"
if [ -n "${FIXTURE:-}" ]; then
  cp "$tmp/fixture" "$FIXTURE"
  echo "llama.cpp's ids written to $FIXTURE"
fi
[ "$same" = "$total" ]
