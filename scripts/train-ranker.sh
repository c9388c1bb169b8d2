#!/usr/bin/env bash
# Chooses and trains the dataset-aware ranker (src/train/ranker.rs) over the weights in BASE:
#  1. every variant, leave-one-source-out (`metad2a train loso`): trained without one image
#     source of the meta-database, measured after the last epoch on that source's tasks
#     (within-task Spearman of the records' labels, with each task's own embedding and with one
#     fixed embedding);
#  2. with FOLDS=K, every variant on held-out tasks of seen sources (`train loso --folds K`);
#  3. the summary table (OUT/loso.md);
#  4. each variant on all training tasks (the database's valid split validates) in OUT/<variant>.
# Nothing here reads CIFAR: the NB201 table's ImageNet16-120 column is the only one training uses.
#   scripts/train-ranker.sh      # BASE, DB, NB201, OUT, LABEL, VARIANTS, FOLDS may be set
# e.g. the v2 database: DB=data/metadb-v2 LABEL=speed FOLDS=5 OUT=target/ranker-v2 \
#        VARIANTS="prior-only prior+head mix-gated mix-gated-pairs" scripts/train-ranker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nb201=${NB201:-../shared/data/nb201/nats_bench.csv}
base=${BASE:-weights/nb201-lite0}
db=${DB:-data/metadb-nb201}
out=${OUT:-target/ranker}
label=${LABEL:-train}
folds=${FOLDS:-0}
. scripts/common.sh
bin=$(train_bin)
mkdir -p "$out"
variants=${VARIANTS:-prior-only prior+head head-only}
for v in $variants; do
  args=$(ranker_variant_args "$v")
  if [ ! -f "$out/loso-$v.json" ]; then
    echo "leave-one-source-out: $v"
    # shellcheck disable=SC2086
    $bin train loso --base "$base" --db "$db" --nb201 "$nb201" --label "$label" \
      --out "$out/loso-$v" $args 2> "$out/loso-$v.log" >/dev/null
  fi
  if [ "$folds" -gt 0 ] && [ ! -f "$out/folds-$v.json" ]; then
    echo "$folds task folds: $v"
    # shellcheck disable=SC2086
    $bin train loso --base "$base" --db "$db" --nb201 "$nb201" --label "$label" \
      --folds "$folds" --out "$out/folds-$v" $args 2> "$out/folds-$v.log" >/dev/null
  fi
  if [ ! -f "$out/$v/ranker.json" ]; then
    echo "all sources: $v"
    # shellcheck disable=SC2086
    $bin train ranker --base "$base" --db "$db" --nb201 "$nb201" --label "$label" \
      --out "$out/$v" $args 2> "$out/$v.log" >/dev/null
  fi
done
python3 - "$out" "$folds" $variants <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); folds = int(sys.argv[2]); variants = sys.argv[3:]
runs = {v: json.load(open(out / f'loso-{v}.json'))['rows'] for v in variants}
srcs = [r['source'] for r in runs[variants[0]]]
tasks = [r['tasks'] for r in runs[variants[0]]]
wmean = lambda v: sum(x * n for x, n in zip(v, tasks)) / sum(tasks)
rows = ["Within-task Spearman on the held-out source's tasks (own embedding) after the last epoch "
        "(`metad2a train loso`: the held-out source chooses nothing); the mean weighs each source "
        "by its tasks:", "",
        "| variant | " + " | ".join(f"{s} ({n})" for s, n in zip(srcs, tasks)) + " | mean | mean, fixed embedding | source-benchmark Spearman (held-out cells) | source top-10 percentile |",
        "|---" * (len(srcs) + 5) + "|"]
for v in variants:
    last = [r['last'] for r in runs[v]]
    own = [x['spearman'] for x in last]
    rows.append(f"| {v} | " + " | ".join(f"{x:.3f}" for x in own)
                + f" | **{wmean(own):.3f}** | {wmean([x['spearman_fixed_embedding'] for x in last]):.3f}"
                + f" | {wmean([x['source_spearman'] for x in last]):.3f} | {wmean([x['source_top'] for x in last]):.3f} |")
r0 = runs[variants[0]]
for k, name in [('baseline_source_benchmark', 'ImageNet16-120 accuracy (table lookup)'), ('baseline_params', 'parameter count')]:
    vals = [r[k] for r in r0]
    rows.append(f"| *{name}* | " + " | ".join(f"{x:.3f}" for x in vals) + f" | {wmean(vals):.3f} | | | |")
def kept_rows(kind):
    out_rows = []
    for v in variants:
        per = [r['kept'] for r in json.load(open(out / f'{kind}-{v}.json'))['rows']]
        own, fa, top = (wmean([x[k] for x in per]) for k in ('spearman', 'source_spearman', 'source_top'))
        out_rows.append(f"| {v} | {'/'.join(str(x['epoch']) for x in per) if kind == 'loso' else '~' + str(per[0]['epoch'])} | {own:.3f} | "
                        f"{wmean([x['spearman_fixed_embedding'] for x in per]):.3f} | {fa:.3f} | {top:.3f} | {(own + fa + top) / 3:.3f} |")
    return out_rows
kinds = ['loso'] + (['folds'] if folds else [])
for kind in kinds:
    rows += ["", f"Nested ({kind}): each variant at the epoch the database's valid split (outside the held-out tasks) "
             "kept, as `train ranker` keeps it; held-out measures, task-weighted (kept epochs source by source; folds: their mean over folds):", "",
             "| variant | kept epoch | within-task | fixed embedding | faithfulness | top-10 | selection |", "|---|---|---|---|---|---|---|"]
    rows += kept_rows(kind)
if folds:
    rows += ["", f"Held-out tasks of seen sources (`train loso --folds {folds}`: task t in fold t mod {folds}, "
             "each measured by the ranker trained on the other folds), the same columns:", "",
             "| variant | " + " | ".join(f"{s} ({n})" for s, n in zip(srcs, tasks)) + " | mean | mean, fixed embedding | source-benchmark Spearman (held-out cells) | source top-10 percentile |",
             "|---" * (len(srcs) + 5) + "|"]
    for v in variants:
        last = [r['last'] for r in json.load(open(out / f'folds-{v}.json'))['rows']]
        own = [x['spearman'] for x in last]
        rows.append(f"| {v} | " + " | ".join(f"{x:.3f}" for x in own)
                    + f" | **{wmean(own):.3f}** | {wmean([x['spearman_fixed_embedding'] for x in last]):.3f}"
                    + f" | {wmean([x['source_spearman'] for x in last]):.3f} | {wmean([x['source_top'] for x in last]):.3f} |")
rows += ["", "The variants trained on all sources (the database's valid split validates and chooses the kept epoch):", "",
         "| variant | kept epoch | within-task | fixed embedding | source-benchmark Spearman | source top-10 percentile | selection |", "|---|---|---|---|---|---|---|"]
for v in variants:
    b = json.load(open(out / v / 'ranker.json'))['best']
    rows.append(f"| {v} | {b['epoch']} | {b['spearman']:.3f} | {b['spearman_fixed_embedding']:.3f} | {b['source_spearman']:.3f} | {b['source_top']:.3f} | {b['selection']:.3f} |")
text = "\n".join(rows)
(out / 'loso.md').write_text(text + "\n")
print(text)
PY
