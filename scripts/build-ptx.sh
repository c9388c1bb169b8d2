#!/usr/bin/env bash
# Regenerates kernels/metad2a.ptx from kernels/metad2a.cu, or checks it:
#   scripts/build-ptx.sh            # write kernels/metad2a.ptx
#   scripts/build-ptx.sh --check    # fail if the committed PTX is stale; assemble it for sm_90
# Needs no CUDA installation: NVRTC 12.4 and ptxas 12.4 come from PyPI (nvidia-cuda-nvrtc-cu12,
# nvidia-cuda-nvcc-cu12, about 60 MB) into target/cuda-tools. NVRTC is driven through Python's
# ctypes (scripts/nvrtc_ptx.py); Python is used only here, never at run time. PTX ISA 8.4 for
# compute_90 loads on drivers from R550 on.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/cuda-tools
if [ ! -f "$tools/.installed-12.4" ]; then
  if ! python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tools" \
      nvidia-cuda-nvrtc-cu12==12.4.127 nvidia-cuda-nvcc-cu12==12.4.131; then
    if [ "${1:-}" = --check ]; then
      echo "**************** SKIPPED: PTX check (NVRTC/ptxas could not be installed from PyPI) ****************" >&2
      exit 0
    fi
    echo "error: could not install NVRTC and ptxas from PyPI" >&2
    exit 1
  fi
  touch "$tools/.installed-12.4"
fi
nvrtc=$(find "$tools" -name 'libnvrtc.so.12*' | head -n 1)
ptxas=$(find "$tools" -name ptxas -type f | head -n 1)
chmod +x "$ptxas"
out=kernels/metad2a.ptx
if [ "${1:-}" = --check ]; then
  tmp=$(mktemp)
  python3 scripts/nvrtc_ptx.py "$nvrtc" kernels/metad2a.cu "$tmp"
  if ! cmp -s "$tmp" "$out"; then
    echo "error: $out is stale: rerun scripts/build-ptx.sh and commit it" >&2
    diff <(head -c 2000 "$out") <(head -c 2000 "$tmp") >&2 || true
    rm -f "$tmp"
    exit 1
  fi
  rm -f "$tmp"
  "$ptxas" -arch=sm_90 -O3 "$out" -o /dev/null
  echo "ok: $out is up to date and assembles for sm_90"
else
  python3 scripts/nvrtc_ptx.py "$nvrtc" kernels/metad2a.cu "$out"
  "$ptxas" -arch=sm_90 -O3 "$out" -o /dev/null
  echo "wrote $out"
fi
