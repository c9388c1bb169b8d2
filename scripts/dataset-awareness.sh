#!/usr/bin/env bash
# Does the dataset change the ranking? Scores all 15,625 NB201 cells (search --exhaustive) with
# WEIGHTS on 20 images per class of CIFAR-10 (test split), MNIST (test split) and the committed
# Fashion-MNIST example images, then prints the Spearman correlation between the three score
# vectors and each dataset's top 5 cells. CIFAR-10 and MNIST come from ../shared.
#   scripts/dataset-awareness.sh [WEIGHTS] [OUT.md]    (METAD2A: the binary; built when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
weights=${1:-weights/nb201-lite0}
out=${2:-}
tmp=${TMPDIR:-/tmp}/metad2a-awareness
mkdir -p "$tmp"
[ -d "$tmp/cifar10/test" ] || { mkdir -p "$tmp/cifar10"; tar xzf ../shared/data/cifar10/cifar10-jpg.tar.gz -C "$tmp/cifar10"; }
[ -d "$tmp/mnist/test" ] || { mkdir -p "$tmp/mnist"; tar xzf ../shared/data/mnist/mnist-png.tar.gz -C "$tmp/mnist"; }
bin=${METAD2A:-target/release/metad2a}
[ -x "$bin" ] || cargo build --release --locked
declare -A dirs=([cifar10]="$tmp/cifar10/test" [mnist]="$tmp/mnist/test" [fashion-mnist]=examples/data/fashion-mnist)
for name in cifar10 mnist fashion-mnist; do
  [ -f "$tmp/$name.safetensors" ] || $bin features --images "${dirs[$name]}" --per-class 20 --out "$tmp/$name.safetensors" >/dev/null
  $bin search --weights "$weights" --features "$tmp/$name.safetensors" --exhaustive --top-k 15625 --json > "$tmp/$name.json"
done
python3 - "$tmp" "$weights" "$out" <<'PY'
import json, sys
tmp, weights, out = sys.argv[1:4]
names = ["cifar10", "mnist", "fashion-mnist"]
scores = {}
for n in names:
    r = json.load(open(f"{tmp}/{n}.json"))
    scores[n] = {c["arch"]: c["score"] for c in r["candidates"]}
    scores[n + "/top"] = [c["arch"] for c in r["candidates"][:5]]
def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v); i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]: j += 1
        for k in range(i, j + 1): r[order[k]] = (i + j) / 2
        i = j + 1
    return r
def spearman(a, b):
    ra, rb = ranks(a), ranks(b); n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5; vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)
cells = sorted(scores["cifar10"])
lines = [f"Weights `{weights}`, 20 images per class, all 15,625 cells scored (`search --exhaustive`).", "",
         "| datasets | Spearman of the score vectors |", "|---|---|"]
for i, a in enumerate(names):
    for b in names[i + 1:]:
        lines.append(f"| {a} vs {b} | {spearman([scores[a][c] for c in cells], [scores[b][c] for c in cells]):.6f} |")
lines += ["", "Top 5 cells of each dataset (best first):", ""]
for n in names:
    lines.append(f"- {n}: " + ", ".join(f"`{c}`" for c in scores[n + "/top"]))
lines += ["", "Top-5 sets equal: " + ", ".join(
    f"{a} and {b} {'yes' if set(scores[a + '/top']) == set(scores[b + '/top']) else 'no'}"
    for i, a in enumerate(names) for b in names[i + 1:])]
text = "\n".join(lines)
print(text)
if out:
    open(out, "w").write(text + "\n")
PY
