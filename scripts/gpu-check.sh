#!/usr/bin/env bash
# GPU check of the CUDA backend, in two parts, for hosts where the GPU machine has no Rust.
#
#   bash scripts/gpu-check.sh build [DIR]
#       Here (Rust, no GPU needed): builds the test binaries with `--features cuda,nccl`,
#       strips the ones that exercise the GPU and packs them into DIR/binaries.tar.xz (DIR
#       defaults to `gpu-bin/`, git-ignored; about 15 MiB, as the binaries share most of their
#       code), with this script beside it:
#         tests/cuda            the facade's tests/cuda.rs: every Backend method and a
#                               TwoLayerNet training step, CUDA against the CPU
#         tests/cuda_graph      StepGraph: replays match eager steps; refused captures
#         tests/nccl            NCCL (`--features nccl`) as one rank: its collectives,
#                               data-parallel steps averaged in GPU memory against the CPU
#                               (the tutorial net; a CNN with BatchNorm's buffers), and a
#                               step captured as a CUDA graph against eager steps
#         tests/gradcheck       finite-difference checks of every op, on the CPU and CUDA
#         tests/losses          every loss against PyTorch, CPU and CUDA
#         tests/optimizers      every optimizer config against PyTorch, CPU and CUDA
#         tests/stage*          the seven tutorial stages against PyTorch, CPU and CUDA
#         tests/declnet_runtime the runtime's unit tests (Cuda::new, NVRTC compile of every
#                               kernel source, out of memory, failed launch and compile)
#         examples/*            the seven tutorial examples (release, `--features cuda`), run
#                               with `--device cuda`, and 06 once more with `--graph`
#         benches/cuda_step     eager vs CUDA-graph tutorial step; 4096-wide MLP with Adam
#                               against its GEMMs alone (release)
#
#   bash gpu-bin/gpu-check.sh run [DIR]        (or: bash scripts/gpu-check.sh run gpu-bin)
#       On the GPU host, from the repository root (the stage tests read tests/fixtures/; needs
#       only glibc >= 2.34, xz, the NVIDIA driver and CUDA 13 libraries): unpacks the
#       binaries into a temporary folder, puts the CUDA libraries on LD_LIBRARY_PATH ($CUDA_HOME/lib64, /usr/local/cuda/lib64,
#       and pip's nvidia-* wheels, whichever exist), runs every binary in DIR/tests, and
#       prints a summary: tests passed and failed per binary, and any `skipped: no CUDA
#       device` lines, which on a GPU host mean the device or a library was not found; then
#       runs each example with `--device cuda` and prints its final loss, then the benchmark.
#       Exits non-zero when a test, an example or the benchmark failed, or a GPU test skipped.
set -euo pipefail

mode=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)

# Copies the executables cargo reported in JSON (its `--message-format=json` output) for the
# targets NAME:KIND given into DIR, and fails when one of them was not built.
copy_executables() {
    local json=$1 dir=$2
    shift 2
    python3 - "$json" "$dir" "$@" <<'EOF'
import json, shutil, sys
wanted = {tuple(arg.split(":")) for arg in sys.argv[3:]}
found = set()
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    key = (msg["target"]["name"], msg["target"]["kind"][0])
    if key in wanted:
        shutil.copy(msg["executable"], f"{sys.argv[2]}/{key[0]}")
        found.add(key)
if wanted - found:
    sys.exit(f"executables not built: {sorted(wanted - found)}")
EOF
}

build() {
    local out=${1:-$root/gpu-bin}
    cd "$root"
    rm -rf "$out"
    mkdir -p "$out/tests" "$out/examples" "$out/benches"
    local json
    json=$(mktemp)
    # The facade's GPU-aware integration tests and the runtime's unit tests.
    cargo test --workspace --features cuda,nccl --no-run --message-format=json >"$json"
    copy_executables "$json" "$out/tests" cuda:test cuda_graph:test nccl:test gradcheck:test \
        losses:test optimizers:test declnet_runtime:lib stage1_tensors:test \
        stage2_autograd:test stage3_custom_function:test stage4_nn:test stage5_optim:test \
        stage6_custom_module:test stage7_dynamic_net:test
    cargo bench --features cuda --bench cuda_step --no-run --message-format=json >"$json"
    copy_executables "$json" "$out/benches" cuda_step:bench
    rm -f "$json"
    cargo build --release --features cuda --examples
    for example in examples/*.rs; do
        name=$(basename "$example" .rs)
        cp "target/release/examples/$name" "$out/examples/$name"
    done
    strip --strip-all "$out"/tests/* "$out"/examples/* "$out"/benches/*
    du -sh "$out"/tests "$out"/examples "$out"/benches
    tar -C "$out" -cJf "$out/binaries.tar.xz" tests examples benches
    rm -rf "$out"/tests "$out"/examples "$out"/benches
    cp "$root/scripts/gpu-check.sh" "$out/gpu-check.sh"
    du -sh "$out"
}

cuda_library_path() {
    local dirs=()
    for dir in ${CUDA_HOME:+"$CUDA_HOME/lib64"} /usr/local/cuda/lib64; do
        if [[ -d $dir ]]; then dirs+=("$dir"); fi
    done
    # pip's nvidia-cuda-nvrtc / nvidia-cublas / nvidia-nccl wheels keep their libraries in
    # site-packages.
    if command -v python3 >/dev/null; then
        while IFS= read -r lib; do
            dirs+=("$(dirname "$lib")")
        done < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null |
            while IFS= read -r site; do
                find "$site/nvidia" \( -name 'libnvrtc.so*' -o -name 'libcublas.so*' \
                    -o -name 'libnccl.so*' \) 2>/dev/null
            done | sort -u)
    fi
    # NCCL's packages ship only libnccl.so.2, and cudarc loads libnccl.so: link one to it.
    local nccl
    nccl=$( (find "${dirs[@]}" /usr/lib/x86_64-linux-gnu -maxdepth 1 -name 'libnccl.so.2' \
        2>/dev/null || true) | head -1)
    if [[ -n $nccl ]]; then
        ln -sf "$nccl" "$link_dir/libnccl.so"
        dirs+=("$link_dir")
    fi
    local IFS=:
    echo "${dirs[*]}"
}

# Runs example binary BIN (labelled LABEL) with ARGS and adds its last loss, or its error, to
# the caller's summary, counting a failure in the caller's `failed`.
run_example() {
    local label=$1 bin=$2
    shift 2
    echo "== example $(basename "$bin") $*"
    local output last
    if output=$(bounded "$bin" "$@" 2>&1); then :; else failed=$((failed + 1)); fi
    tail -5 <<<"$output"
    # The last `STEP LOSS` line, or the last line (an error) when there is none.
    last=$(grep -E '^[0-9]+ ' <<<"$output" | tail -1 || true)
    summary+=("example $label: ${last:-$(tail -1 <<<"$output")}")
}

# Runs a binary for at most 90 seconds (a hung GPU call fails it instead of the whole run).
bounded() {
    timeout --kill-after=5 90 "$@"
}

run() {
    local packed=${1:-$(dirname "$0")}
    local dir
    dir=$(mktemp -d)
    # Expanded now: `dir` is out of scope when the trap runs at exit.
    trap "rm -rf '$dir'" EXIT
    tar -C "$dir" -xJf "$packed/binaries.tar.xz"
    local extra link_dir=$dir/lib
    mkdir -p "$link_dir"
    extra=$(cuda_library_path)
    export LD_LIBRARY_PATH="${extra}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv
    # Every test that would skip for want of a device fails instead.
    export DECLNET_REQUIRE_CUDA=1
    local failed=0 skipped=0 summary=()
    for bin in "$dir"/tests/*; do
        local name log
        name=$(basename "$bin")
        log=$(mktemp)
        echo "== $name"
        if bounded "$bin" >"$log" 2>&1; then :; else failed=$((failed + 1)); fi
        # Failed tests with their panic messages (the lines after `panicked at`), and skips.
        grep -E -A3 '^(test .* FAILED|---- )|panicked at|skipped:|^NCCL version' "$log" || true
        local result skips nccl_skips
        result=$(grep -E '^test result:' "$log" | tail -1 || true)
        skips=$(grep -c 'skipped: no CUDA device' "$log" || true)
        skipped=$((skipped + skips))
        # NCCL is not part of the CUDA toolkit: its absence is reported, not a failure.
        nccl_skips=$(grep -c 'skipped: no NCCL' "$log" || true)
        summary+=("$name: ${result:-no test result (crashed?)}; skipped on no device: $skips; on no NCCL: $nccl_skips")
        if grep -q '^NCCL version' "$log"; then summary+=("$(grep -m1 '^NCCL version' "$log")"); fi
        rm -f "$log"
    done
    for bin in "$dir"/examples/*; do
        [[ -e $bin ]] || continue
        run_example "$(basename "$bin")" "$bin" --device cuda
    done
    local graph_example="$dir/examples/06_custom_module"
    if [[ -e $graph_example ]]; then
        run_example "06_custom_module --graph" "$graph_example" --device cuda --graph
    fi
    for bin in "$dir"/benches/*; do
        [[ -e $bin ]] || continue
        echo "== bench $(basename "$bin")"
        local figures
        if figures=$(bounded "$bin" --bench 2>&1); then :; else failed=$((failed + 1)); fi
        echo "$figures"
        while IFS= read -r line; do summary+=("$line"); done <<<"$figures"
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
