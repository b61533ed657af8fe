#!/usr/bin/env bash
# Build tests/c/abi_test.c against the checked-in header and the static library
# (via the generated pkg-config file) and run it.
set -euo pipefail
cd "$(dirname "$0")/../.."
hack/build-lib.sh >/dev/null
mkdir -p build/c
flags=$(PKG_CONFIG_PATH=$PWD/build/pkgconfig pkg-config --cflags --libs cvmfs_graphdriver)
# shellcheck disable=SC2086
gcc -std=c11 -Wall -Wextra -Werror -o build/c/abi_test tests/c/abi_test.c $flags
exec build/c/abi_test
