#!/usr/bin/env bash
# Runs one libFuzzer target of fuzz/ for SECONDS (default 60):
#   scripts/fuzz.sh TARGET [SECONDS] [extra libFuzzer flags]
#   scripts/fuzz.sh all [SECONDS]        # every target in turn
# Targets: weights_store manifest feature_file idx image torch_checkpoint arch_text.
# Builds with the flags cargo-fuzz uses (coverage instrumentation, debug assertions, overflow
# checks) plus AddressSanitizer when a nightly toolchain is installed; cargo-fuzz itself is not
# needed (`cargo fuzz run TARGET` works too where it is installed). FUZZ_ASAN=0 forces the
# stable toolchain without AddressSanitizer. Seeds: fuzz/corpus/TARGET
# (committed) and, when ../shared exists, real files from it copied into the working corpus
# target/fuzz/corpus/TARGET (never committed). Crashes land in target/fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET|all [SECONDS]}
secs=${2:-60}
shift $(( $# < 2 ? $# : 2 ))
all="weights_store manifest feature_file idx image torch_checkpoint arch_text"
if [ "$target" = all ]; then
  for t in $all; do "$0" "$t" "$secs" "$@"; done
  exit 0
fi
case " $all " in *" $target "*) ;; *) echo "unknown target $target (one of: $all)" >&2; exit 2;; esac

flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
toolchain=()
kind=plain
if [ "${FUZZ_ASAN:-auto}" != 0 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
  flags="$flags -Zsanitizer=address"
  kind=asan
else
  echo "note: no nightly toolchain (or FUZZ_ASAN=0); fuzzing without AddressSanitizer" >&2
fi
host=$(rustc -vV | sed -n 's/^host: //p')
(cd fuzz && RUSTFLAGS="$flags" cargo "${toolchain[@]}" build --release --locked --quiet \
  --target "$host" --target-dir "../target/fuzz/build-$kind" --bin "$target")
bin=target/fuzz/build-$kind/$host/release/$target

work=target/fuzz/corpus/$target
mkdir -p "$work" "target/fuzz/artifacts/$target"
seed() { [ -f "$1" ] && cp -n "$1" "$work/" || true; }
if [ -d ../shared ]; then
  case $target in
    weights_store) seed ../shared/parity/mbv3/generator.safetensors ;;
    feature_file) seed ../shared/parity/effnet-lite0/expected.safetensors ;;
    image) for f in ../shared/parity/effnet-lite0/*.jpg; do seed "$f"; done ;;
    torch_checkpoint) seed ../shared/parity/mbv3/generator_ckpt.pt ;;
    manifest) ;;
    idx) ;;
    arch_text) ;;
  esac
fi
echo "fuzzing $target for ${secs}s"
"$bin" "$work" "fuzz/corpus/$target" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
  -max_len=65536 -print_final_stats=1 -artifact_prefix="target/fuzz/artifacts/$target/" "$@"
