#!/usr/bin/env bash
# `make buildah`: buildah $BUILDAH_VERSION (hack/versions.env) built against the
# same patched storage and image modules as podman line $BUILDAH_LINE, the Rust
# core linked in statically, into build/bin/buildah. As build-podman.sh: the
# release copied out of the Go module cache into build/buildah-src-<version>/,
# its go.mod pointed at the patched modules with `replace`, ./cmd/buildah
# built; skipped when a stamp over its inputs matches (FORCE=1 rebuilds).
# Prints the binary's path.
set -euo pipefail
source "$(dirname "$0")/versions.env"
PODMAN_LINE=$BUILDAH_LINE
source "$(dirname "$0")/lib-storage.sh"

src_dir="$ROOT/build/buildah-src-$BUILDAH_VERSION"
binary="$ROOT/build/bin/buildah"
stamp_file="$ROOT/build/bin/.buildah.stamp"
# buildah's Makefile probes (seccomp, btrfs, sqlite, systemd) give the same
# choice as podman's on this machine (see build-podman.sh).
tags="${BUILDAH_BUILDTAGS:-seccomp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper containers_image_openpgp libsqlite3}"

mkdir -p "$ROOT/build/bin"
exec 9>"$ROOT/build/bin/.buildah.lock"
flock 9
"$ROOT/hack/build-lib.sh" >&2
pin_rust_lib
storage_dir=$("$ROOT/hack/patched-storage.sh")
image_dir=$("$ROOT/hack/patched-image.sh")

stamp=$(
  {
    echo "$BUILDAH_MODULE@$BUILDAH_VERSION $STORAGE_MODULE@$STORAGE_VERSION $IMAGE_MODULE@$IMAGE_VERSION"
    echo "tags: $tags"
    echo "go: $(go version)"
    cat "$0" "$PATCH_DIR"/*.patch "$IMAGE_PATCH_DIR"/*.patch
    (cd "$ROOT" && find go-bindings -type f -print0 | sort -z | xargs -0 sha256sum)
    sha256sum <"$ROOT/target/release/libcvmfs_graphdriver.a"
  } | sha256sum | cut -d' ' -f1
)
if [ -z "${FORCE:-}" ] && [ -x "$binary" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
  echo "build-buildah: $binary is up to date" >&2
  echo "$binary"
  exit 0
fi

pristine=$(go_module_dir "$BUILDAH_MODULE@$BUILDAH_VERSION") || exit 1
echo "build-buildah: $pristine -> $src_dir" >&2
rm -rf "$src_dir"
cp -a "$pristine" "$src_dir"
chmod -R u+w "$src_dir"
cd "$src_dir"
[ ! -d vendor ] || { echo "build-buildah: $src_dir/vendor exists; expected a module release without vendor/" >&2; exit 1; }
for required in "$IMAGE_MODULE $IMAGE_VERSION" "$STORAGE_MODULE $STORAGE_VERSION"; do
  grep -qE "^[[:space:]]*$required\$" go.mod ||
    { echo "build-buildah: buildah $BUILDAH_VERSION does not require $required (hack/versions.env, BUILDAH_LINE)" >&2; exit 1; }
done
go mod edit -replace "$STORAGE_MODULE=$storage_dir" -replace "$IMAGE_MODULE=$image_dir"
go mod download >&2

echo "build-buildah: go build -tags '$tags' ./cmd/buildah" >&2
start=$SECONDS
go build -trimpath -tags "$tags" \
  -ldflags "-X main.GitCommit=unknown -X main.buildInfo=$(date +%s)" \
  -o "$binary.tmp" ./cmd/buildah
echo "build-buildah: built in $((SECONDS - start))s" >&2
if ldd "$binary.tmp" | grep -q cvmfs_graphdriver; then
  echo "build-buildah: $binary links libcvmfs_graphdriver dynamically; expected the static library" >&2
  exit 1
fi
for dir in "$storage_dir" "$image_dir"; do
  go version -m "$binary.tmp" | grep -qE "=>[[:space:]]+$dir[[:space:]]" ||
    { echo "build-buildah: $binary was not built against $dir" >&2; exit 1; }
done
mv "$binary.tmp" "$binary"
echo "$stamp" >"$stamp_file"
echo "$binary"
