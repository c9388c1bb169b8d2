#!/usr/bin/env bash
# Compares the search reports of two builds of `metad2a` on 16 searches: the parity weights on
# CIFAR-10-shaped 512-d features and the default weights on the example images' 1280-d
# features; 7 to 1,000 candidates, 10, 20 and 30 rows per class, with and without replacement,
# exhaustive, three seeds. For each search it prints whether the candidates, their order, the
# counts and the data fit are the same, and the largest score difference.
#
#   scripts/compare-searches.sh NEW_BINARY OLD_BINARY
#
# Needs the inputs README's commands make: target/nb201 (the imported parity weights),
# target/c10.safetensors, and target/fm.safetensors
# (`metad2a features --images examples/data/fashion-mnist --out target/fm.safetensors`).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 NEW_BINARY OLD_BINARY" >&2
  exit 2
fi
new=$1
old=$2
for f in target/nb201/manifest.json target/c10.safetensors target/fm.safetensors; do
  [ -e "$f" ] || { echo "error: $f is missing (see the comments at the top)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for pair in target/c10.safetensors:target/nb201 target/fm.safetensors:weights/nb201-lite0-ranker; do
  feats=${pair%%:*}
  weights=${pair##*:}
  for args in "--num-archs 7" "--num-archs 100" "--num-archs 500" "--exhaustive" \
    "--num-archs 100 --per-class 10" "--num-archs 1000 --per-class 10 --with-replacement" \
    "--num-archs 300 --per-class 30 --with-replacement --seed 3" \
    "--num-archs 100 --resamples 3 --seed 5"; do
    # shellcheck disable=SC2086
    "$new" search --weights "$weights" --features "$feats" $args --top-k 0 --json >"$tmp/a.json"
    # shellcheck disable=SC2086
    "$old" search --weights "$weights" --features "$feats" $args --top-k 0 --json >"$tmp/b.json"
    python3 - "$tmp/a.json" "$tmp/b.json" "$weights $args" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ka = [c["arch"] for c in a["candidates"]]
kb = [c["arch"] for c in b["candidates"]]
sa = {c["arch"]: c["score"] for c in a["candidates"]}
sb = {c["arch"]: c["score"] for c in b["candidates"]}
same_set = set(ka) == set(kb)
diff = max(abs(sa[k] - sb[k]) for k in sa) if same_set else float("nan")
line = [
    f"{sys.argv[3]:72s}",
    "order " + ("same" if ka == kb else "DIFF"),
    "candidates " + ("same" if same_set else "DIFF"),
    "counts " + ("same" if a["counts"] == b["counts"] else "DIFF"),
    "fit " + ("same" if a.get("data_fit") == b.get("data_fit") else "diff"),
    f"max|dscore| {diff:.1e}",
]
if same_set and ka != kb:
    first = next(i for i, (x, y) in enumerate(zip(ka, kb)) if x != y)
    at = {k: i for i, k in enumerate(kb)}
    moved = max(abs(i - at[k]) for i, k in enumerate(ka))
    line.append(f"(same order down to rank {first}, no cell moved more than {moved} places)")
print(" ".join(line))
PY
  done
done
