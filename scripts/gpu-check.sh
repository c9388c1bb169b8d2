#!/usr/bin/env bash
# The device check of the CUDA kernels, as one script for a machine with an NVIDIA GPU:
#   scripts/gpu-check.sh [TEST_BINARY]
# Runs the kernels-vs-CPU tests of src/cuda/tests.rs on the GPU (METAD2A_REQUIRE_GPU=1: a missing
# or unusable GPU fails instead of skipping) and prints the measured errors. TEST_BINARY is the
# library's test executable built elsewhere with
#   cargo test --release --features cuda --lib --no-run
# (the path it prints); without it the script builds it here.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
  bin=$(cargo test --release --features cuda --lib --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
METAD2A_REQUIRE_GPU=1 "$bin" cuda:: --nocapture --test-threads 1
