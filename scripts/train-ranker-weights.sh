#!/usr/bin/env bash
# Trains the default weights weights/nb201-lite0-ranker (docs/ranker.md) from a committed
# meta-database and the base weights weights/nb201-lite0, then meta-tests them on CIFAR-10.
# Each step is skipped when its output exists, so a rerun resumes:
#   1. scripts/train-ranker.sh     the variants, leave-one-source-out and on all sources
#   2. train relabel               each task's top 500 cells by the chosen ranker
#   3. train generator             on those targets (one epoch over the 500 targets of every
#                                  task: about the official 400 epochs' steps)
#   4. train ranker --generator    the chosen variant with that generator -> OUT
#   5. meta-test                   10 seeds on CIFAR-10 -> REPORT.{md,jsonl,summary.json,svg}
#   6. dataset-awareness.sh        score vectors for CIFAR-10, MNIST and Fashion-MNIST images
# VARIANT (default prior+head; the list is ranker_variant_args in scripts/common.sh), DB
# (default data/metadb-nb201), LABEL (default train), FOLDS, OUT, REPORT and WORK (default
# target/ranker) may be set; the own-data-only table is VARIANT=head-only
# OUT=target/nb201-lite0-head-only REPORT=docs/meta-test/cifar10-head-only.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${VARIANT:-prior+head}
out=${OUT:-weights/nb201-lite0-ranker}
report=${REPORT:-docs/meta-test/cifar10-ranker}
work=${WORK:-target/ranker}
export DB=${DB:-data/metadb-nb201} LABEL=${LABEL:-train}
nb201=../shared/data/nb201/nats_bench.csv
. scripts/common.sh
bin=$(train_bin)
args=$(ranker_variant_args "$variant")
OUT=$work METAD2A=$bin scripts/train-ranker.sh
# the relabelled targets and the generator are named after the database and the variant
tag=$(basename "$DB")-$(echo "$variant" | tr -c 'a-z0-9\n' '-')
db=target/db-$tag-top500
gen=target/gen-$tag-top500
[ -f "$db/records.jsonl" ] ||
  $bin train relabel --weights "$work/$variant" --db "$DB" --out "$db" --top 500
# resumes from its checkpoint, and returns at once when the epoch is done
$bin train generator --db "$db" --out "$gen" --epochs 1 --targets-per-task 500
# shellcheck disable=SC2086
[ -f "$out/manifest.json" ] ||
  $bin train ranker --base weights/nb201-lite0 --db "$DB" --nb201 "$nb201" --label "$LABEL" \
    $args --generator "$gen" --out "$out"
cifar=$(cifar_dir)   # CIFAR-10 is unpacked only now, after training
mkdir -p "$(dirname "$report")"
$bin meta-test --weights "$out" --images "$cifar/test" --nb201 "$nb201" --seeds 10 \
  --naswot-cache docs/meta-test/cifar10.naswot.jsonl --out "$report"
METAD2A=$bin scripts/dataset-awareness.sh "$out" "$report.awareness.md"
