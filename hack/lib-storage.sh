# Shared settings for the scripts that work on the patched storage module.
# Sourced (not executed) by gen-patches.sh, patched-storage.sh, build-podman.sh,
# test-graphtest.sh, test-bats.sh and bench-graphtest.sh, so the versions and
# paths live in one place. PODMAN_LINE (environment) picks the podman line and
# with it the storage release; unset, the primary line (hack/versions.env).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"

# select_podman_line N: the versions of podman line N (hack/versions.env) become
# PODMAN_MODULE, PODMAN_VERSION, STORAGE_VERSION, IMAGE_VERSION, and the paths
# derived from them (PATCH_DIR, STORAGE_DIR, IMAGE_PATCH_DIR); PODMAN_BINARY is
# where that line's podman is built (the primary line's is build/bin/podman).
select_podman_line() {
  local line=$1 module version storage image
  module=PODMAN${line}_MODULE version=PODMAN${line}_VERSION
  storage=STORAGE${line}_VERSION image=IMAGE${line}_VERSION
  if [ -z "${!module:-}" ] || [ -z "${!version:-}" ] || [ -z "${!storage:-}" ] || [ -z "${!image:-}" ]; then
    echo "unknown podman line '$line' (hack/versions.env has: ${PODMAN_LINES//,/ })" >&2
    return 1
  fi
  PODMAN_LINE=$line
  PODMAN_MODULE=${!module} PODMAN_VERSION=${!version}
  STORAGE_VERSION=${!storage} IMAGE_VERSION=${!image}
  # go.podman.io/storage -> go.podman.io-storage (a path component cannot hold "/").
  PATCH_DIR="$ROOT/patches/${STORAGE_MODULE//\//-}@$STORAGE_VERSION"
  STORAGE_DIR="$ROOT/build/storage-$STORAGE_VERSION"
  # go.podman.io/image/v5 -> go.podman.io-image (the major-version suffix dropped).
  IMAGE_PATCH_DIR="$ROOT/patches/${IMAGE_MODULE%/v[0-9]*}@$IMAGE_VERSION"
  IMAGE_PATCH_DIR="${IMAGE_PATCH_DIR//go.podman.io\//go.podman.io-}"
  if [ "$line" = "$DEFAULT_PODMAN_LINE" ]; then
    PODMAN_BINARY="$ROOT/build/bin/podman"
  else
    PODMAN_BINARY="$ROOT/build/bin/podman-$line"
  fi
  export PODMAN_LINE
}
select_podman_line "${PODMAN_LINE:-$DEFAULT_PODMAN_LINE}" || exit 1

export PATH=/usr/local/go/bin:$HOME/.cargo/bin:$PATH
export GOTOOLCHAIN=local
# The patched module is a plain directory, not a VCS checkout we want stamped.
export GOFLAGS="${GOFLAGS:--mod=mod} -buildvcs=false"
export PKG_CONFIG_PATH="$ROOT/build/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export CGO_ENABLED=1

# go_module_field MODULE@VERSION FIELD: one field of what `go mod download
# -json` reports for the module (downloading it if the cache lacks it), a
# dotted path for nested ones (Dir, Origin.Hash); empty when absent. The one
# place that reads that output.
go_module_field() {
  (cd / && go mod download -json "$1") | python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value.get(key, {}) if isinstance(value, dict) else {}
print(value if isinstance(value, str) else "")' "$2"
}

# go_module_dir MODULE@VERSION: the pristine module's directory in the module
# cache; fails naming the module when it cannot be had.
go_module_dir() {
  local dir
  dir=$(go_module_field "$1" Dir)
  if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
    echo "cannot get $1 from the Go module cache/proxy" >&2
    return 1
  fi
  printf '%s\n' "$dir"
}

# Directory of the pristine storage module in the module cache.
pristine_module_dir() { go_module_dir "$STORAGE_MODULE@$STORAGE_VERSION"; }

# Go's build cache does not notice when a C library it links changes (only the
# flags are part of the cache key), so a rebuilt Rust core would be silently
# ignored by `go build`/`go test`. Naming the library's hash in a harmless
# linker flag makes every new library a new cache key. Call after build-lib.sh.
pin_rust_lib() {
  local lib hash
  # The library pkg-config links (hack/build-lib.sh may have honoured
  # CARGO_TARGET_DIR), else the default cargo location.
  lib=$(pkg-config --libs cvmfs_graphdriver 2>/dev/null | tr ' ' '\n' | grep 'libcvmfs_graphdriver\.a$' | head -n 1 || true)
  lib=${lib:-$ROOT/target/release/libcvmfs_graphdriver.a}
  if [ ! -f "$lib" ]; then
    echo "missing $lib (run hack/build-lib.sh)" >&2
    return 1
  fi
  hash=$(sha256sum "$lib" | cut -c1-16)
  export CGO_LDFLAGS="${CGO_LDFLAGS:+$CGO_LDFLAGS }-Wl,--defsym=cvmfs_graphdriver_lib_$hash=0"
}
