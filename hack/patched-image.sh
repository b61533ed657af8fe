#!/usr/bin/env bash
# Materialise the patched go.podman.io/image/v5 module of the podman line
# (PODMAN_LINE, hack/versions.env) in build/image-<version>/: the pristine
# module from the Go module cache plus `git am` of
# patches/go.podman.io-image@<version>/ (a git repository of its own, so every
# hunk must apply exactly). Redone only when the patches change. Prints the
# module directory. Used by build-podman.sh and build-buildah.sh.
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"

image_dir="$ROOT/build/image-$IMAGE_VERSION"
shopt -s nullglob
patches=("$IMAGE_PATCH_DIR"/*.patch)
[ "${#patches[@]}" -gt 0 ] || { echo "patched-image: no patches in $IMAGE_PATCH_DIR (run hack/gen-image-patches.sh)" >&2; exit 1; }
stamp=$(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$image_dir/.cvmfs-patched.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$image_dir"
  exit 0
fi
pristine=$(go_module_dir "$IMAGE_MODULE@$IMAGE_VERSION") || exit 1
echo "patched-image: $pristine + ${#patches[@]} patches -> $image_dir" >&2
rm -rf "$image_dir"
cp -a "$pristine" "$image_dir"
chmod -R u+w "$image_dir"
git_id=(-c user.name=cvmfs-graphdriver -c user.email=cvmfs-graphdriver@invalid -c commit.gpgsign=false)
(
  cd "$image_dir"
  git init -q
  git "${git_id[@]}" add -A
  git "${git_id[@]}" commit -q -m "$IMAGE_MODULE@$IMAGE_VERSION (pristine)"
  git "${git_id[@]}" am -q --keep-cr "${patches[@]}" >&2
) || { echo "patched-image: the patches in $IMAGE_PATCH_DIR do not apply to $IMAGE_MODULE@$IMAGE_VERSION" >&2; exit 1; }
echo "$stamp" >"$image_dir/.cvmfs-patched.stamp"
echo "$image_dir"
