#!/usr/bin/env bash
# Calibrates the cheap cell-training protocol against NAS-Bench-201 (CIFAR-10 from ../shared):
# the protocols of docs/calibration.md, then NASWOT on the same 60 cells. Each protocol's
# results go to docs/calibration/<name>.jsonl, one line per cell; rerunning resumes.
# About 1.5 hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
cifar=$(cifar_dir)
bin=$(train_bin)
csv=../shared/data/nb201/nats_bench.csv
run() { # name per-class epochs resolution channels cells-per-stage [cells, default 60]
  local name=$1; shift
  $bin calibrate --cifar "$cifar" --nb201 "$csv" --cells "${6:-60}" --valid-per-class 300 --naswot 128 \
    --per-class "$1" --epochs "$2" --resolution "$3" --channels "$4" --cells-per-stage "$5" \
    --out "docs/calibration/$name.jsonl" --svg "docs/calibration/$name.svg" > "docs/calibration/$name.summary.json"
}
run p500-e10-r16-c8-n1 500 10 16 8 1
run p1000-e10-r16-c8-n1 1000 10 16 8 1
# the chosen protocol on 59 other cells (a held-out check of the training-accuracy score)
run p1000-e10-r16-c8-n1-cells59 1000 10 16 8 1 59
# the chosen protocol again on both spreads, recording each epoch's training loss, to compare
# training-speed labels (SoTL) with the final training accuracy and the free rankers
run p1000-e10-r16-c8-n1-sotl 1000 10 16 8 1
run p1000-e10-r16-c8-n1-sotl-cells59 1000 10 16 8 1 59
# NASWOT with the standard network (C=16, N=5, 32x32, batch 128)
$bin naswot --cifar "$cifar" --nb201 "$csv" --cells 60 > docs/calibration/naswot-c16-n5-r32.txt
