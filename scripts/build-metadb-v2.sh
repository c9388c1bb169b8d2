#!/usr/bin/env bash
# Builds (or resumes) the meta-database v2, data/metadb-v2: 150 tasks from five image sources
# (scripts/fetch-meta-sources.sh), 20 cells per task (8 spread over the number of 3x3
# convolutions, 4 drawn from the top 200 the built-in ranker proposes for the task, 8 uniform),
# each trained with the calibrated protocol p1000-e10-r16-c8-n1 (docs/calibration.md) and
# recorded with its per-epoch training losses, NASWOT score on the task's images, FLOPs and
# parameters.
#   scripts/build-metadb-v2.sh [JOBS]      # default 2 jobs at the lowest priority
# The plan (work/plan.json) is committed: init in a fresh clone keeps it and only prepares the
# images again; `run` skips every pair any shard file has recorded, so the work may be split
# differently on each resume. Progress and the ETA are in work/log-<i>-of-<n>.txt. Ends with a
# partial merge (records.jsonl holds what is done); rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-2}
src=target/meta-sources-v2
db=data/metadb-v2
cargo build --release --locked --features train
bin=target/release/metad2a
[ -d "$src/photos" ] || scripts/fetch-meta-sources.sh "$src" 1200
if [ ! -f "$db/work/images.safetensors" ]; then
  $bin build-db init --sources "$src" --out "$db" --tasks 150 --archs-per-task 20 \
    --stratified 8 --proposed 4 --proposal-pool 200 --feature-rows 40 \
    --train-per-class 1000 --valid-per-class 100 --epochs 10 --resolution 16 --channels 8 \
    --cells-per-stage 1 --seed 2 --protocol-name p1000-e10-r16-c8-n1 --naswot-batch 128
fi
for i in $(seq 0 $((jobs - 1))); do
  RAYON_NUM_THREADS=1 nice -n 19 $bin build-db run --db "$db" --shard "$i/$jobs" \
    2> "$db/work/log-$i-of-$jobs.txt" &
done
wait
$bin build-db merge --db "$db" --partial
$bin build-db manifest --db "$db" --command "scripts/fetch-meta-sources.sh $src 1200" \
  --command "scripts/build-metadb-v2.sh $jobs"
