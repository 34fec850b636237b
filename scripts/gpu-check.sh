#!/usr/bin/env bash
# Runs on the GPU machine in one call, from the repository root, with the gzipped binaries of
# scripts/build-cuda.sh carried along (target/cuda/dist): generates a 1B-shape Q4_0 model with
# random weights (the real model cannot travel), checks CUDA against the CPU on it (greedy
# tokens of 3 prompts, max prefill-logit difference), then measures aggregate decode at
# K = 1, 8, 32 on CUDA and prints one table.
# usage: scripts/gpu-check.sh [DIST]   (default target/cuda/dist); OUT: scratch folder.
# The CUDA libraries (libcublas/libcurand/libcudart of the same major version as the build)
# are taken from the machine's Python site-packages (PyTorch's NVIDIA wheels).
set -euo pipefail
dist=${1:-target/cuda/dist}
out=${OUT:-/tmp/docanalyze-gpu}
mkdir -p "$out/bin"
for gz in "$dist"/*.gz; do
  gunzip -c "$gz" >"$out/bin/$(basename "$gz" .gz)"
  chmod +x "$out/bin/$(basename "$gz" .gz)"
done
libs=$(python3 -c 'import glob,site,os; print(":".join(sorted(set(os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s+"/nvidia/*/lib/*.so*")))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$out/bin/gen_model" "$out/model-1b-q4_0.gguf" 1b q4_0
echo "== CUDA vs CPU"
"$out/bin/device_check" "$out/model-1b-q4_0.gguf" cuda || echo "device_check FAILED: CUDA and CPU disagree, or CUDA did not start (see above)"
echo "== decode on CUDA (npp 128, ntg 128)"
"$out/bin/batched_bench" --model "$out/model-1b-q4_0.gguf" --device cuda --npl 1,8,32 --threads 16
