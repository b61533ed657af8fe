#!/usr/bin/env bash
# Generate or check include/cvmfs_graphdriver.h with a pinned cbindgen.
#   hack/header.sh generate   rewrite the checked-in header
#   hack/header.sh check      fail if the checked-in header differs from crates/driver/src, or
#                             if the result-code table of docs/c-abi.md differs from the header
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

# The crate from its root (the result codes are error::ErrorCode); cbindgen.toml limits the
# output to the extern "C" functions of the ffi module and the types they use.
generate() { "$CBINDGEN" --quiet --config crates/driver/cbindgen.toml --output "$1" crates/driver/src/lib.rs; }

# The result codes as "<value> <name>" lines, from the header / from the docs table
# ("| 2 | `CVMFS_RESULT_LAYER_UNKNOWN` | ... |").
header_codes() { sed -nE 's/^ *(CVMFS_RESULT_[A-Z_]+) = ([0-9]+),?$/\2 \1/p' "$1"; }
docs_codes() { sed -nE 's/^\| *([0-9]+) *\| *`(CVMFS_RESULT_[A-Z_]+)` *\|.*/\1 \2/p' docs/c-abi.md; }

check_docs() {
  local from_header from_docs
  from_header=$(header_codes "$HEADER")
  from_docs=$(docs_codes)
  if [ -z "$from_header" ]; then
    echo "header: FAIL: no CVMFS_RESULT_* codes found in $HEADER" >&2
    return 1
  fi
  if [ "$from_header" != "$from_docs" ]; then
    diff -u <(echo "$from_header") <(echo "$from_docs") | sed 's/^/  /' >&2 || true
    echo "header: FAIL: the result-code table of docs/c-abi.md differs from $HEADER (- header, + docs)" >&2
    return 1
  fi
  echo "header: docs/c-abi.md lists the $(echo "$from_header" | wc -l) result codes of the header"
}

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
      echo "header: FAIL: $HEADER is out of date with crates/driver/src; run 'make header' and commit it" >&2
      exit 1
    fi
    echo "header: $HEADER is up to date"
    check_docs
    ;;
  *)
    echo "usage: $0 generate|check" >&2
    exit 2
    ;;
esac
