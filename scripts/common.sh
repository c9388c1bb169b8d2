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

# Builds metad2a with the training commands and prints the binary's path.
train_bin() {
  cargo build --release --locked --features train >&2
  echo target/release/metad2a
}
