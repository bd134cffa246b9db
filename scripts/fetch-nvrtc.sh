#!/usr/bin/env bash
# Fetches NVIDIA's NVRTC library (CUDA 13) from PyPI into DIR (default `target/nvrtc`) and
# prints the folder to put on LD_LIBRARY_PATH. NVRTC needs no GPU: with it on the loader
# path, the runtime's kernel tests compile every `.cu` file and check each kernel launcher
# against the PTX, on any x86_64 Linux machine.
#
#   export LD_LIBRARY_PATH=$(bash scripts/fetch-nvrtc.sh)
#
# The wheel is pinned by version and SHA-256; exits non-zero when it cannot be fetched.
set -euo pipefail

version=13.5.37
sha256=86b4d68058807988b7d9af5b44917a0601e9c337f35ccd657bfb3c759ff8d8bc
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/target/nvrtc}
lib=$dir/nvidia/cu13/lib

if [[ ! -e $lib/libnvrtc.so.13 ]]; then
    mkdir -p "$dir"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_12_x86_64 \
        --dest "$dir" "nvidia-cuda-nvrtc==$version" >&2
    wheel=$(ls "$dir"/nvidia_cuda_nvrtc-"$version"-*.whl)
    echo "$sha256  $wheel" | sha256sum --check --quiet >&2
    python3 -m zipfile -e "$wheel" "$dir"
    rm "$wheel"
fi
echo "$lib"
