#!/usr/bin/env bash
# Builds the CUDA binaries here, on a machine without a GPU or a system CUDA toolkit.
#
# NVIDIA's PyPI wheels provide nvcc, headers and libraries. CUDA 13.0 by default, the toolkit
# of the GPU machine this project is checked on (driver 580); CUDA_VERSION=12.8 (or another
# 12.x) builds for a CUDA 12 runtime instead. The GPU machine must have the same major
# version's libcudart/libcublas/libcurand/libnvrtc (PyTorch's wheels ship them; see
# scripts/gpu-check.sh, which puts them on LD_LIBRARY_PATH).
#
# candle links the CUDA libraries (cudarc's `dynamic-linking`). The wheels ship only
# versioned names (libcublas.so.13), so a link folder gets unversioned links to them, and a
# stub libcuda.so.1 built here from the driver symbols cudarc uses (the driver's own library
# replaces it at run time).
#
# Output, in its own target folder so the CPU build is not disturbed:
#   target/cuda/release/docanalyze
#   target/cuda/release/examples/{batched_bench,device_check,gen_model}
# The default (CPU) build and CI never need any of this.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${CUDA_VERSION:-13.0}
major=${version%%.*}
venv=${CUDA_VENV:-.cuda-venv}
python3 -m venv "$venv"
if [ "$major" -ge 13 ]; then
  suffix=""
  curand="nvidia-curand==10.4.0.*"
else
  suffix="-cu$major"
  curand="nvidia-curand$suffix"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "nvidia-cuda-nvcc$suffix==$version.*" "nvidia-cuda-runtime$suffix==$version.*" \
  "nvidia-cuda-cccl$suffix==$version.*" "nvidia-cublas$suffix" "$curand" \
  "nvidia-cuda-nvrtc$suffix==$version.*"
if [ "$major" -ge 13 ]; then
  # nvcc's compiler front end and headers are separate wheels there: same release as ptxas.
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-nvvm==$version.*" "nvidia-cuda-crt==$version.*"
fi
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')

# CUDA 13 wheels share one tree (nvidia/cu13); CUDA 12 wheels have one tree per package.
if [ -d "$site/nvidia/cu$major" ]; then
  roots=("$site/nvidia/cu$major")
else
  roots=("$site"/nvidia/*/)
fi
nvcc_bin=$(find "${roots[@]}" -path '*/bin/nvcc' | head -1)
[ -x "$nvcc_bin" ] || { echo "build-cuda.sh: nvcc not found in $site/nvidia" >&2; exit 1; }
cuda_root=$(dirname "$(dirname "$nvcc_bin")")
export CUDA_ROOT="$cuda_root" CUDA_PATH="$cuda_root" CUDA_HOME="$cuda_root"
export PATH="$cuda_root/bin:$PATH"

link_dir="$PWD/target/cuda/link"
mkdir -p "$link_dir"
inc=""
for r in "${roots[@]}"; do
  [ -d "$r/include" ] && inc="$inc -I$r/include"
  for lib in "$r"/lib/lib*.so.*; do
    [ -e "$lib" ] || continue
    name=$(basename "$lib")
    ln -sf "$lib" "$link_dir/${name%%.so.*}.so"
  done
done
export NVCC_PREPEND_FLAGS="$inc"

# libcuda stub: every driver entry point cudarc declares, with the driver's soname.
cudarc_src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name 'cudarc-*' | sort -V | tail -1)
grep -ohE 'load::<_F>\("cu[A-Za-z0-9_]+"\)' "$cudarc_src/src/driver/sys/mod.rs" |
  sed -E 's/.*"(cu[A-Za-z0-9_]+)".*/int \1(void) { return 999; }/' | sort -u >"$link_dir/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link_dir/libcuda.so" "$link_dir/cuda_stub.c"

export RUSTFLAGS="${RUSTFLAGS:-} -L native=$link_dir"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}   # H100/H200
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
cargo build --release --features cuda --bin docanalyze \
  --example batched_bench --example device_check --example gen_model
echo "built (CUDA $version, compute capability $CUDA_COMPUTE_CAP):"
echo "  $CARGO_TARGET_DIR/release/docanalyze"
echo "  $CARGO_TARGET_DIR/release/examples/{batched_bench,device_check,gen_model}"

# What the GPU machine needs, small enough to travel with the working tree (64 MiB): the
# three programs of scripts/gpu-check.sh, stripped and gzipped (~39 MB; the kernels for every
# quantized type make each binary ~55 MB stripped).
dist="$CARGO_TARGET_DIR/dist"
rm -rf "$dist" && mkdir -p "$dist"
for b in batched_bench device_check gen_model; do
  strip -o "$dist/$b" "$CARGO_TARGET_DIR/release/examples/$b"
  gzip -9 "$dist/$b"
done
du -sh "$dist"
echo "for the GPU machine: $dist (scripts/gpu-check.sh $dist)"
