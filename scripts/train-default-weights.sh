#!/usr/bin/env bash
# Meta-trains the default weights weights/nb201-lite0 on the committed meta-database and runs
# the CIFAR-10 meta-test (CIFAR-10 JPEGs from ../shared). Steps (each rerunnable):
#   1. build-db merge          data/metadb-nb201/records.jsonl from the shard files
#   2. train generator         GEN_EPOCHS epochs (default 400, the official count)
#   3. train predictor         PRED_EPOCHS epochs (default 100), LABEL accuracy (default train),
#                              TARGET standardisation (default global, the official objective;
#                              task standardises within each task, see docs/meta-test.md)
#   4. cache                   the graph-embedding cache of the new predictor
#   5. meta-test               10 seeds -> REPORT.{jsonl,summary.json,svg} (default
#                              docs/meta-test/cifar10; NASWOT scores cached, they do not depend
#                              on the weights)
# OUT (default weights/nb201-lite0) is the weights directory.
set -euo pipefail
cd "$(dirname "$0")/.."
db=data/metadb-nb201
out=${OUT:-weights/nb201-lite0}
report=${REPORT:-docs/meta-test/cifar10}
label=${LABEL:-train}
target=${TARGET:-global}
. scripts/common.sh
cifar=$(cifar_dir)
bin=$(train_bin)
$bin build-db merge --db "$db"
$bin train generator --db "$db" --out "$out" --epochs "${GEN_EPOCHS:-400}" --label "$label"
$bin train predictor --db "$db" --out "$out" --epochs "${PRED_EPOCHS:-100}" --label "$label" \
  --target "$target"
$bin cache --weights "$out"
mkdir -p "$(dirname "$report")"
$bin meta-test --weights "$out" --images "$cifar/test" --nb201 ../shared/data/nb201/nats_bench.csv \
  --seeds 10 --naswot-cache docs/meta-test/cifar10.naswot.jsonl --out "$report"
