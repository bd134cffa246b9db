#!/usr/bin/env bash
# GPU check of the CUDA backend, in two parts, for hosts where the GPU machine has no Rust.
#
#   bash scripts/gpu-check.sh build [DIR]
#       Here (Rust, no GPU needed): builds the test binaries with `--features cuda` and copies
#       the ones that exercise the GPU into DIR (default `gpu-bin/`, git-ignored), stripped of
#       debug info, with this script beside them:
#         tests/cuda            the facade's tests/cuda.rs: every Backend method and a
#                               TwoLayerNet training step, CUDA against the CPU
#         tests/declnet_runtime the runtime's unit tests (Cuda::new, NVRTC compile of every
#                               kernel source, broadcast layouts, and all the CPU kernels)
#         examples/*            the seven tutorial examples (release, `--features cuda`), run
#                               with `--device cuda`
#
#   bash gpu-bin/gpu-check.sh run [DIR]        (or: bash scripts/gpu-check.sh run gpu-bin)
#       On the GPU host (needs only glibc >= 2.34, the NVIDIA driver and CUDA 13 libraries):
#       puts the CUDA libraries on LD_LIBRARY_PATH ($CUDA_HOME/lib64, /usr/local/cuda/lib64,
#       and pip's nvidia-* wheels, whichever exist), runs every binary in DIR/tests, and
#       prints a summary: tests passed and failed per binary, and any `skipped: no CUDA
#       device` lines, which on a GPU host mean the device or a library was not found; then
#       runs each example with `--device cuda` and prints its last line (its final loss).
#       Exits non-zero when a test or an example failed, or a GPU test skipped.
set -euo pipefail

mode=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)

build() {
    local out=${1:-$root/gpu-bin}
    cd "$root"
    rm -rf "$out"
    mkdir -p "$out/tests"
    local json
    json=$(mktemp)
    cargo test --workspace --features cuda --no-run --message-format=json >"$json"
    # The executables of the facade's `cuda` integration test and the runtime's unit tests.
    python3 - "$json" "$out/tests" <<'EOF'
import json, shutil, sys
wanted = {("cuda", "test"), ("declnet_runtime", "lib")}
found = set()
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    target = msg["target"]
    key = (target["name"], target["kind"][0])
    if key in wanted:
        shutil.copy(msg["executable"], f"{sys.argv[2]}/{target['name']}")
        found.add(key)
missing = wanted - found
if missing:
    sys.exit(f"test binaries not built: {sorted(missing)}")
EOF
    rm -f "$json"
    cargo build --release --features cuda --examples
    mkdir -p "$out/examples"
    for example in examples/*.rs; do
        name=$(basename "$example" .rs)
        cp "target/release/examples/$name" "$out/examples/$name"
    done
    strip --strip-debug "$out"/tests/* "$out"/examples/*
    cp "$root/scripts/gpu-check.sh" "$out/gpu-check.sh"
    du -sh "$out"/tests/* "$out"/examples/*
    du -sh "$out"
}

cuda_library_path() {
    local dirs=()
    for dir in ${CUDA_HOME:+"$CUDA_HOME/lib64"} /usr/local/cuda/lib64; do
        if [[ -d $dir ]]; then dirs+=("$dir"); fi
    done
    # pip's nvidia-cuda-nvrtc / nvidia-cublas wheels keep their libraries in site-packages.
    if command -v python3 >/dev/null; then
        while IFS= read -r lib; do
            dirs+=("$(dirname "$lib")")
        done < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null |
            while IFS= read -r site; do
                find "$site/nvidia" \( -name 'libnvrtc.so*' -o -name 'libcublas.so*' \) 2>/dev/null
            done | sort -u)
    fi
    local IFS=:
    echo "${dirs[*]}"
}

run() {
    local dir=${1:-$(dirname "$0")}
    local extra
    extra=$(cuda_library_path)
    export LD_LIBRARY_PATH="${extra}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv
    local failed=0 skipped=0 summary=()
    for bin in "$dir"/tests/*; do
        local name log
        name=$(basename "$bin")
        log=$(mktemp)
        echo "== $name"
        if "$bin" >"$log" 2>&1; then :; else failed=$((failed + 1)); fi
        grep -E '^(test .* FAILED|failures:|---- )|panicked|skipped:' "$log" || true
        local result skips
        result=$(grep -E '^test result:' "$log" | tail -1 || true)
        skips=$(grep -c 'skipped: no CUDA device' "$log" || true)
        skipped=$((skipped + skips))
        summary+=("$name: ${result:-no test result (crashed?)}; skipped on no device: $skips")
        rm -f "$log"
    done
    for bin in "$dir"/examples/*; do
        [[ -e $bin ]] || continue
        local name last
        name=$(basename "$bin")
        echo "== example $name --device cuda"
        if last=$("$bin" --device cuda 2>&1 | tail -1); then :; else failed=$((failed + 1)); fi
        summary+=("example $name: $last")
    done
    echo "== summary"
    printf '%s\n' "${summary[@]}"
    if ((failed > 0 || skipped > 0)); then
        echo "gpu-check: FAILED ($failed binaries failed, $skipped GPU tests skipped)"
        exit 1
    fi
    echo "gpu-check: all passed on the GPU"
}

case $mode in
build) build "${2:-}" ;;
run) run "${2:-}" ;;
*)
    echo "usage: $0 build [DIR] | run [DIR]" >&2
    exit 2
    ;;
esac
