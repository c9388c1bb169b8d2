# Shared by the scripts (source it from the repository root).

# The CIFAR-10 JPEGs of ../shared unpacked into $CIFAR_DIR (default /tmp/metad2a-cifar10) once;
# prints the directory (holding train/ and test/).
cifar_dir() {
  local dir=${CIFAR_DIR:-/tmp/metad2a-cifar10}
  if [ ! -d "$dir/test" ] || [ ! -d "$dir/train" ]; then
    mkdir -p "$dir"
    tar xzf ../shared/data/cifar10/cifar10-jpg.tar.gz -C "$dir"
  fi
  echo "$dir"
}

# Builds metad2a with the training commands and prints the binary's path; METAD2A names an
# already built one instead (a copy keeps a long run safe from rebuilds of target/release).
train_bin() {
  if [ -n "${METAD2A:-}" ]; then echo "$METAD2A"; return; fi
  cargo build --release --locked --features train >&2
  echo target/release/metad2a
}

# The training options of each ranker variant (`metad2a train ranker|loso`, docs/ranker.md).
ranker_variant_args() {
  case $1 in
    prior-only) echo "--epochs 0" ;;
    prior+head) echo "--epochs 100 --lr 1e-3" ;;
    head-only) echo "--no-prior --epochs 100 --lr 1e-3" ;;
    mix-gated) echo "--mix-only --mix-l2 1e-1 --mix-gate 0.4 --epochs 100 --lr 1e-3" ;;
    mix-gated-20) echo "--mix-only --mix-l2 1e-1 --mix-gate 0.4 --epochs 20 --lr 1e-3" ;;
    mix-gated-pairs) echo "--mix-only --mix-l2 1e-1 --mix-gate 0.4 --source-pairs 1 --epochs 100 --lr 1e-3" ;;
    mix-gated-pairs3) echo "--mix-only --mix-l2 1e-1 --mix-gate 0.4 --source-pairs 3 --epochs 100 --lr 1e-3" ;;
    mix-gated-pairs03) echo "--mix-only --mix-l2 1e-1 --mix-gate 0.4 --source-pairs 0.3 --epochs 100 --lr 1e-3" ;;
    *) echo "unknown ranker variant $1" >&2; return 2 ;;
  esac
}
