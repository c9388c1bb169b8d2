#!/usr/bin/env bash
# Rebuilds examples/data/fashion-mnist: the first 20 test images of each Fashion-MNIST class, as
# PNG files, from Debian's dataset-fashion-mnist package (MIT; Copyright 2017 Zalando SE).
# The result is committed; this only documents and reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb root)
src="$tmp/root/usr/share/datasets/fashion-mnist"
rm -rf examples/data/fashion-mnist
cargo run --release --locked --example export_idx -- \
  "$src/t10k-images-idx3-ubyte.gz" "$src/t10k-labels-idx1-ubyte.gz" 20 examples/data/fashion-mnist \
  t-shirt_top trouser pullover dress coat sandal shirt sneaker bag ankle_boot
cp "$tmp/root/usr/share/doc/dataset-fashion-mnist/copyright" examples/data/fashion-mnist/COPYRIGHT
