#!/usr/bin/env bash
# Builds the CUDA binaries here, on a machine without a GPU or a system CUDA toolkit:
# NVIDIA's PyPI wheels provide nvcc, headers and libraries (CUDA 12 by default; set CUDA_MAJOR=13
# for a driver that only has cu13 libraries), and libcuda is linked against the stub that the
# runtime wheel ships. At run time cudarc loads the real driver's libraries.
# Output: target/release/docanalyze and target/release/examples/{batched_bench,device_check,gen_model}
# built with --features cuda. The default (CPU) build and CI never need any of this.
set -euo pipefail
cd "$(dirname "$0")/.."
major=${CUDA_MAJOR:-12}
venv=${CUDA_VENV:-.cuda-venv}
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "nvidia-cuda-nvcc-cu$major" "nvidia-cuda-runtime-cu$major" "nvidia-cuda-cccl-cu$major" \
  "nvidia-cublas-cu$major" "nvidia-curand-cu$major" "nvidia-cuda-nvrtc-cu$major"
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
export CUDA_ROOT="$site/nvidia/cuda_nvcc" CUDA_PATH="$site/nvidia/cuda_nvcc"
export PATH="$site/nvidia/cuda_nvcc/bin:$PATH"
inc=""; lib=""
for d in "$site"/nvidia/*/; do
  [ -d "$d/include" ] && inc="$inc -I$d/include"
  [ -d "$d/lib" ] && lib="$lib -L$d/lib"
done
export NVCC_PREPEND_FLAGS="$inc"
# libcuda.so: the driver's at run time, a stub at link time.
stub=$(find "$site/nvidia" -name 'libcuda.so*' -path '*stubs*' | head -1 || true)
if [ -n "$stub" ]; then lib="$lib -L$(dirname "$stub")"; fi
export RUSTFLAGS="${RUSTFLAGS:-} $(for l in $lib; do printf -- '-C link-arg=%s ' "$l"; done)"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}   # H100/H200
cargo build --release --features cuda --bin docanalyze \
  --example batched_bench --example device_check --example gen_model
echo "built: target/release/docanalyze and target/release/examples/{batched_bench,device_check,gen_model} (cuda)"
