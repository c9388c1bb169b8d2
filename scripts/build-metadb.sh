#!/usr/bin/env bash
# Builds (or resumes) the committed meta-database data/metadb-nb201 on one machine.
#   scripts/fetch-meta-sources.sh target/meta-sources 600   # once: the image sources (v1: 600/class)
#   scripts/build-metadb.sh [SOURCES] [JOBS]
# init is deterministic: with the same sources and arguments it redraws the same plan, so a
# fresh clone regenerates work/images.safetensors (not committed) and resumes from the
# committed shard records. JOBS shards run side by side, one thread each; merge at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-target/meta-sources}
jobs=${2:-2}
db=data/metadb-nb201
cargo build --release --locked --features train
bin=target/release/metad2a
if [ ! -f "$db/work/images.safetensors" ]; then
  $bin build-db init --sources "$src" --out "$db" --tasks 110 --archs-per-task 10 \
    --feature-rows 40 --train-per-class 500 --valid-per-class 100 \
    --epochs 10 --resolution 16 --channels 8 --cells-per-stage 1
fi
for i in $(seq 0 $((jobs - 1))); do
  RAYON_NUM_THREADS=1 $bin build-db run --db "$db" --shard "$i/$jobs" 2> "$db/work/log-$i-of-$jobs.txt" &
done
wait
$bin build-db merge --db "$db"
