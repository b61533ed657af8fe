#!/usr/bin/env bash
# `make podman`: build the pinned podman release of one line (hack/versions.env)
# against the patched storage module, with the Rust core linked in statically:
#   make podman                  line 6, the primary: podman v6.0.2 -> build/bin/podman
#   make podman PODMAN_LINE=5    line 5: podman v5.8.6             -> build/bin/podman-5
# Each line builds on the storage and image releases its go.mod requires, in
# directories named by version, so both binaries can exist side by side.
#
#   1. the Rust static library + pkg-config file (hack/build-lib.sh),
#   2. the patched go.podman.io/storage tree (hack/patched-storage.sh),
#   3. the patched go.podman.io/image tree (hack/patched-image.sh): the module
#      podman requires plus patches/go.podman.io-image@<version>/ (push keeps the
#      original compressed blobs of stored layers; hack/gen-image-patches.sh),
#      in build/image-<version>/,
#   4. podman $PODMAN_VERSION copied out of the Go module cache (downloaded from
#      the Go module proxy if missing) into build/podman-src-<version>/, its go.mod
#      pointed at both patched modules with `replace`, and ./cmd/podman built.
#
# Skipped when nothing it depends on changed: a stamp next to the binary records
# a hash of the podman version, the patches, go-bindings/, the Rust library, the
# build tags and this script. FORCE=1 rebuilds anyway. Prints the binary's path.
#
# Environment: PODMAN_BUILDTAGS replaces the build tags chosen below;
# EXTRA_BUILDTAGS adds to them (as podman's own Makefile allows).
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"

src_dir="$ROOT/build/podman-src-$PODMAN_VERSION"
binary=$PODMAN_BINARY
bin_dir=$(dirname "$binary")
stamp_file="$bin_dir/.$(basename "$binary").stamp"

# Build tags for a Debian 12 build, following podman's Makefile: its probes
# (hack/*_tag.sh) decide btrfs, sqlite, systemd, libsubid and apparmor from the
# headers present. We pick the same from what install-deps.sh installs:
#  - exclude_graphdriver_btrfs: not needed (and keeps libbtrfs out of the link);
#  - containers_image_openpgp: signature checks in Go, no libgpgme at run time;
#  - libsqlite3: link Debian's libsqlite3 instead of compiling the amalgamation;
#  - seccomp: libseccomp-dev, as every Linux build of podman uses;
#  - grpcnotrace: podman's default.
# No systemd (no libsystemd-dev: journald events/logs are not used; the tests
# use the file events backend and k8s-file logs).
default_tags="grpcnotrace exclude_graphdriver_btrfs exclude_graphdriver_devicemapper containers_image_openpgp libsqlite3 seccomp"
tags="${PODMAN_BUILDTAGS:-$default_tags}${EXTRA_BUILDTAGS:+ $EXTRA_BUILDTAGS}"

# One build at a time: concurrent runs (make demo and make test-e2e in parallel)
# would delete each other's build/podman-src-* tree. The lock is released when
# this script exits; a second run then finds the stamp up to date.
mkdir -p "$bin_dir"
exec 9>"$bin_dir/.podman.lock"
flock 9
"$ROOT/hack/build-lib.sh" >&2
pin_rust_lib
storage_dir=$("$ROOT/hack/patched-storage.sh")

# The patched image module (hack/patched-image.sh: pristine copy + `git am`).
image_patch_dir=$IMAGE_PATCH_DIR
image_dir=$("$ROOT/hack/patched-image.sh")

lib="$ROOT/target/release/libcvmfs_graphdriver.a"
stamp=$(
  {
    echo "$PODMAN_MODULE@$PODMAN_VERSION $STORAGE_MODULE@$STORAGE_VERSION"
    echo "tags: $tags"
    echo "go: $(go version)"
    cat "$0"
    cat "$PATCH_DIR"/*.patch "$image_patch_dir"/*.patch
    (cd "$ROOT" && find go-bindings -type f -print0 | sort -z | xargs -0 sha256sum)
    sha256sum <"$lib"
  } | sha256sum | cut -d' ' -f1
)
if [ -z "${FORCE:-}" ] && [ -x "$binary" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
  echo "build-podman: $binary is up to date" >&2
  echo "$binary"
  exit 0
fi

if ! pristine=$(go_module_dir "$PODMAN_MODULE@$PODMAN_VERSION"); then
  echo "build-podman: no pristine podman module" >&2
  exit 1
fi

# A fresh writable copy every time: the module cache is read-only, and a copy
# left by an earlier build with another storage tree must not leak into this one.
echo "build-podman: $pristine -> $src_dir" >&2
rm -rf "$src_dir"
mkdir -p "$(dirname "$src_dir")" "$bin_dir"
cp -a "$pristine" "$src_dir"
chmod -R u+w "$src_dir"

cd "$src_dir"
# The release ships no vendor/ directory, so module mode is the only mode: the
# replace takes effect directly. The patched storage is the same version with
# the driver added, so its requirements (and podman's go.sum) are unchanged;
# `go mod download` fetches anything the module cache still lacks.
if [ -d vendor ]; then
  echo "build-podman: $src_dir/vendor exists; this script expects a release without vendor/" >&2
  exit 1
fi
# The patches are made for one version of each module: podman must require
# exactly those (hack/versions.env pins them per line).
for required in "$IMAGE_MODULE $IMAGE_VERSION" "$STORAGE_MODULE $STORAGE_VERSION"; do
  if ! grep -qE "^[[:space:]]*$required\$" go.mod; then
    echo "build-podman: podman $PODMAN_VERSION does not require $required (hack/versions.env, line $PODMAN_LINE)" >&2
    exit 1
  fi
done
go mod edit -replace "$STORAGE_MODULE=$storage_dir" -replace "$IMAGE_MODULE=$image_dir"
go mod download >&2

# Podman's Makefile stamps these into the binary; we have no git checkout, so
# the version's commit comes from the proxy's origin record when present.
commit=$(go_module_field "$PODMAN_MODULE@$PODMAN_VERSION" Origin.Hash)
libpod=$PODMAN_MODULE/libpod
ldflags="-X $libpod/define.gitCommit=${commit:-unknown}"
ldflags+=" -X $libpod/define.buildInfo=$(date +%s)"
ldflags+=" -X '$libpod/define.buildOrigin=cvmfs-graphdriver (patched $STORAGE_MODULE@$STORAGE_VERSION)'"
ldflags+=" -X $libpod/config._installPrefix=/usr/local -X $libpod/config._etcDir=/etc"

echo "build-podman: go build -tags '$tags' ./cmd/podman" >&2
start=$SECONDS
go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$binary.tmp" ./cmd/podman
echo "build-podman: built in $((SECONDS - start))s" >&2

# The driver must be in the binary, and the Rust core linked statically.
if ldd "$binary.tmp" | grep -q cvmfs_graphdriver; then
  echo "build-podman: $binary links libcvmfs_graphdriver dynamically; expected the static library" >&2
  exit 1
fi
if ! go version -m "$binary.tmp" | grep -qE "=>[[:space:]]+$storage_dir[[:space:]]"; then
  echo "build-podman: $binary was not built against $storage_dir" >&2
  exit 1
fi
if ! go version -m "$binary.tmp" | grep -qE "=>[[:space:]]+$image_dir[[:space:]]"; then
  echo "build-podman: $binary was not built against $image_dir" >&2
  exit 1
fi
mv "$binary.tmp" "$binary"
echo "$stamp" >"$stamp_file"
echo "$binary"
