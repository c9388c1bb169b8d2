#!/usr/bin/env bash
# Chooses and trains the dataset-aware ranker (src/train/ranker.rs) over the weights in BASE:
#  1. every variant, leave-one-source-out: trained without one image source of the
#     meta-database, validated on that source's tasks (within-task Spearman of the records'
#     labels, with each task's own embedding and with one fixed embedding);
#  2. the summary table (OUT/loso.md);
#  3. each variant on all training tasks (the database's valid split validates) in OUT/<variant>.
# Nothing here reads CIFAR: the NB201 table's ImageNet16-120 column is the only one training uses.
#   scripts/train-ranker.sh            # BASE, DB, NB201, OUT may be set
set -euo pipefail
cd "$(dirname "$0")/.."
nb201=${NB201:-../shared/data/nb201/nats_bench.csv}
base=${BASE:-weights/nb201-lite0}
db=${DB:-data/metadb-nb201}
out=${OUT:-target/ranker}
bin=target/release/metad2a
cargo build --release --locked --features train
mkdir -p "$out"
variant_args() {
  case $1 in
    prior-only) echo "--epochs 0" ;;
    prior+head) echo "--epochs 100 --lr 1e-3" ;;
    head-only) echo "--no-prior --epochs 100 --lr 1e-3" ;;
  esac
}
variants="prior-only prior+head head-only"
sources=$(python3 -c "import json,sys; print(' '.join(sorted({json.loads(l)['source'] for l in open(sys.argv[1])})))" "$db/tasks.jsonl")
for v in $variants; do
  for s in $sources; do
    if [ ! -f "$out/loso-$v-$s/ranker.json" ]; then
      echo "leave out $s: $v"
      # shellcheck disable=SC2046
      $bin train ranker --base "$base" --db "$db" --nb201 "$nb201" --out "$out/loso-$v-$s" \
        --holdout-source "$s" $(variant_args "$v") 2> "$out/loso-$v-$s.log" >/dev/null
    fi
  done
  if [ ! -f "$out/$v/ranker.json" ]; then
    echo "all sources: $v"
    # shellcheck disable=SC2046
    $bin train ranker --base "$base" --db "$db" --nb201 "$nb201" --out "$out/$v" \
      $(variant_args "$v") 2> "$out/$v.log" >/dev/null
  fi
done
SOURCES="$sources" python3 - "$out" $variants <<'PY'
import json, os, sys, pathlib
out = pathlib.Path(sys.argv[1]); variants = sys.argv[2:]
srcs = os.environ['SOURCES'].split()
mean = lambda v: sum(v) / len(v)
rows = ["Within-task Spearman on the held-out source's tasks (own embedding), at the kept epoch:", "",
        "| variant | " + " | ".join(srcs) + " | mean | mean, fixed embedding | source-benchmark Spearman (held-out cells) | source top-10 percentile | selection |",
        "|---" * (len(srcs) + 6) + "|"]
base = {}
for v in variants:
    runs = [json.load(open(out / f'loso-{v}-{s}' / 'ranker.json')) for s in srcs]
    own = [r['best']['spearman'] for r in runs]
    rows.append(f"| {v} | " + " | ".join(f"{x:.3f}" for x in own)
                + f" | **{mean(own):.3f}** | {mean([r['best']['spearman_fixed_embedding'] for r in runs]):.3f}"
                + f" | {mean([r['best']['source_spearman'] for r in runs]):.3f} | {mean([r['best']['source_top'] for r in runs]):.3f} | {mean([r['best']['selection'] for r in runs]):.3f} |")
    base['ImageNet16-120 accuracy (table lookup)'] = [r['baseline_source_benchmark'] for r in runs]
    base['parameter count'] = [r['baseline_params'] for r in runs]
for k, vals in base.items():
    rows.append(f"| *{k}* | " + " | ".join(f"{x:.3f}" for x in vals) + f" | {mean(vals):.3f} | | | | |")
rows += ["", "The variants trained on all sources (the database's valid split validates):", "",
         "| variant | kept epoch | within-task | fixed embedding | source-benchmark Spearman | source top-10 percentile | selection |", "|---|---|---|---|---|---|---|"]
for v in variants:
    b = json.load(open(out / v / 'ranker.json'))['best']
    rows.append(f"| {v} | {b['epoch']} | {b['spearman']:.3f} | {b['spearman_fixed_embedding']:.3f} | {b['source_spearman']:.3f} | {b['source_top']:.3f} | {b['selection']:.3f} |")
text = "\n".join(rows)
(out / 'loso.md').write_text(text + "\n")
print(text)
PY
