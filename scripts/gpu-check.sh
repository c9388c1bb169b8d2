#!/usr/bin/env bash
# The device check of the CUDA backend, as one script for a machine with an NVIDIA GPU:
#   scripts/gpu-check.sh [TEST_BINARY [BENCH_BINARY]]
# 1. the kernels-vs-CPU tests of src/cuda/tests.rs on the GPU (ignored in a plain `cargo test`;
#    here a missing or unusable GPU fails them), printing the measured errors and agreement,
#    and whole searches (generated and exhaustive, shipped weights) against the CPU engine;
# 2. the device bench `search-gpu` (benches/search.rs): whole searches on the GPU and on the CPU
#    in the same run, at CIFAR-10 and CIFAR-100 shapes, exhaustive scoring of all 15,625 cells,
#    per stage; it needs ../shared for the fixture models.
# The binaries can be built elsewhere and carried:
#   cargo test  --release --features cuda --lib --no-run        # TEST_BINARY: the path printed
#   cargo bench --features cuda --bench search --no-run          # BENCH_BINARY
# Without arguments the script builds both here.
set -euo pipefail
cd "$(dirname "$0")/.."
exe() { sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1; }
test_bin=${1:-$(cargo test --release --features cuda --lib --no-run --message-format=json 2>/dev/null | exe)}
bench_bin=${2:-$(cargo bench --features cuda --bench search --no-run --message-format=json 2>/dev/null | exe)}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$test_bin" cuda:: --include-ignored --nocapture --test-threads 1
"$bench_bin" --bench search-gpu
