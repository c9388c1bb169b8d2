#!/usr/bin/env bash
# Builds the static library alone with fat LTO (profile release-lto), links the C example
# against it with the system C compiler, strips it, and prints both sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo rustc --locked --profile release-lto --lib --crate-type staticlib
lib=target/release-lto/libmetad2a.a
out=target/release-lto/metad2a-search
cc -O2 -I include examples/c/search.c "$lib" -Wl,--gc-sections -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$out"
strip "$out"
printf 'static library (release, fat LTO): %s bytes\n' "$(stat -c %s "$lib")"
printf 'C example, stripped:               %s bytes\n' "$(stat -c %s "$out")"
