#!/usr/bin/env bash
# A fixed snapshot of a meta-database being built: the first N_i records of each shard (shard
# files only grow), merged into OUT. Runs on a snapshot repeat exactly while the build goes on.
#   scripts/metadb-snapshot.sh DB OUT N_0 N_1 ...    (one count per shard, in shard order)
# e.g. scripts/metadb-snapshot.sh data/metadb-v2 target/v2-1662 787 875
# METAD2A: the binary with the `train` feature (default target/release/metad2a).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,6p "$0" >&2; exit 2; }
db=$1 out=$2
shift 2
bin=${METAD2A:-target/release/metad2a}
shards=("$db"/work/records-*-of-$#.jsonl)
[ ${#shards[@]} -eq $# ] && [ -f "${shards[0]}" ] ||
  { echo "$db/work has no $# shard files records-I-of-$#.jsonl" >&2; exit 2; }
mkdir -p "$out/work"
cp "$db"/features.safetensors "$db"/tasks.jsonl "$out"/
cp "$db"/work/plan.json "$out"/work/
i=0
for n in "$@"; do
  f=$db/work/records-$i-of-$#.jsonl
  have=$(wc -l < "$f")
  [ "$have" -ge "$n" ] || { echo "$f has $have records, fewer than $n" >&2; exit 2; }
  head -n "$n" "$f" > "$out/work/records-$i-of-$#.jsonl"
  i=$((i + 1))
done
"$bin" build-db merge --db "$out" --partial
