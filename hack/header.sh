#!/usr/bin/env bash
# Generate or check include/cvmfs_graphdriver.h with a pinned cbindgen.
#   hack/header.sh generate   rewrite the checked-in header
#   hack/header.sh check      fail if the checked-in header differs from crates/driver/src/ffi.rs
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

CBINDGEN_VERSION=0.29.4
TOOLS="$PWD/build/tools"
CBINDGEN="$TOOLS/bin/cbindgen"
HEADER=include/cvmfs_graphdriver.h

if ! "$CBINDGEN" --version 2>/dev/null | grep -qx "cbindgen $CBINDGEN_VERSION"; then
  echo "header: installing cbindgen $CBINDGEN_VERSION into $TOOLS (once)" >&2
  cargo install --quiet cbindgen --version "$CBINDGEN_VERSION" --locked --root "$TOOLS" >&2
fi

# Only the ffi module: public Rust items elsewhere in the driver are not part of the C ABI.
generate() { "$CBINDGEN" --quiet --config crates/driver/cbindgen.toml --output "$1" crates/driver/src/ffi.rs; }

case "${1:-}" in
  generate)
    mkdir -p include
    generate "$HEADER"
    echo "header: wrote $HEADER"
    ;;
  check)
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    generate "$tmp"
    if ! diff -u "$HEADER" "$tmp" >&2; then
      echo "header: FAIL: $HEADER is out of date with crates/driver/src/ffi.rs; run 'make header' and commit it" >&2
      exit 1
    fi
    echo "header: $HEADER is up to date"
    ;;
  *)
    echo "usage: $0 generate|check" >&2
    exit 2
    ;;
esac
