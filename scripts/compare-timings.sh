#!/usr/bin/env bash
# Compares the in-process latency of two builds of the `search_timings` example: runs them in
# turn ROUNDS times on the same arguments (each run repeats the search and prints its
# medians), then prints, per stage, the median of each build's run medians and their ratio
# (NEW / OLD). Running the two in turn keeps a drifting machine from favouring either.
#
#   scripts/compare-timings.sh OLD_BINARY NEW_BINARY ROUNDS WEIGHTS DATA [NUM_ARCHS|exhaustive] [REPEATS]
#
# Build each with `cargo build --release --example search_timings` (an older checkout in a
# worktree with its own CARGO_TARGET_DIR) and copy target/release/examples/search_timings
# aside; DATA as the example takes it (a feature file or synthetic:CLASSES:ROWS).
set -euo pipefail
if [ $# -lt 5 ]; then
  echo "usage: $0 OLD_BINARY NEW_BINARY ROUNDS WEIGHTS DATA [NUM_ARCHS|exhaustive] [REPEATS]" >&2
  exit 2
fi
old=$1
new=$2
rounds=$3
shift 3
for _ in $(seq "$rounds"); do
  echo "old $("$old" "$@")"
  echo "new $("$new" "$@")"
done | python3 -c '
import statistics, sys
runs = {"old": {}, "new": {}}
for line in sys.stdin:
    w = line.split()
    for key, value in zip(w[1::2], w[2::2]):
        runs[w[0]].setdefault(key, []).append(float(value))
for key, olds in runs["old"].items():
    a, b = statistics.median(olds), statistics.median(runs["new"][key])
    ratio = f"{b / a:.3f}" if a > 0 else "-"
    print(f"{key:7s} old {a:8.3f} ms  new {b:8.3f} ms  new/old {ratio}")
'
