#!/usr/bin/env bash
# Runs on the GPU machine in one call, from the repository root, with the binaries of
# scripts/build-cuda.sh carried along (target/release/examples/*): generates a 1B-shape Q4_0
# model with random weights (the real model cannot travel), checks CUDA against the CPU on it,
# then measures aggregate decode at K = 1, 8, 32 on CUDA and prints one table.
# The cu13 libraries of the machine's PyTorch are put on LD_LIBRARY_PATH for cudarc.
set -euo pipefail
bin=${BIN:-target/release/examples}
out=${OUT:-/tmp}
libs=$(python3 -c 'import glob,site,os; print(":".join(sorted(set(os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s+"/nvidia/*/lib/*.so*")))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$bin/gen_model" "$out/model-1b-q4_0.gguf" 1b q4_0
echo "== CUDA vs CPU"
"$bin/device_check" "$out/model-1b-q4_0.gguf" cuda || echo "MISMATCH between CUDA and CPU"
echo "== decode on CUDA (npp 128, ntg 128)"
"$bin/batched_bench" --model "$out/model-1b-q4_0.gguf" --device cuda --npl 1,8,32 --threads 16
