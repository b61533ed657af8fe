#!/usr/bin/env bash
# Materialise the patched containers/storage module in build/storage-<version>/:
# copy the pristine module out of the Go module cache (read-only there), apply
# patches/<module>@<version>/*.patch as commits, and fetch the module's own
# dependencies so it builds offline afterwards.
#
# Idempotent: a stamp file records a hash of the inputs (patches, versions, this
# script); when it matches, nothing is redone. Prints the module directory.
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"

shopt -s nullglob
patches=("$PATCH_DIR"/*.patch)
if [ "${#patches[@]}" -eq 0 ]; then
  echo "patched-storage: no patches in $PATCH_DIR (run hack/gen-patches.sh)" >&2
  exit 1
fi

stamp_file="$STORAGE_DIR/.cvmfs-patched.stamp"
stamp=$( (echo "$STORAGE_MODULE@$STORAGE_VERSION"; cat "$0" "${patches[@]}") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
  echo "$STORAGE_DIR"
  exit 0
fi

pristine=$(pristine_module_dir)
echo "patched-storage: $pristine + ${#patches[@]} patches -> $STORAGE_DIR" >&2
# Mounts left over from an interrupted test run must not be deleted through.
if grep -q " $STORAGE_DIR/" /proc/self/mountinfo 2>/dev/null; then
  echo "patched-storage: something is still mounted under $STORAGE_DIR; unmount it first" >&2
  exit 1
fi
rm -rf "$STORAGE_DIR"
mkdir -p "$(dirname "$STORAGE_DIR")"
cp -a "$pristine" "$STORAGE_DIR"
chmod -R u+w "$STORAGE_DIR"

# A git repository of its own: `git am` checks every hunk applies exactly, keeps
# the patch series visible (git log), and stops git from walking up into our
# checkout (build/ lives inside it).
git_id=(-c user.name=cvmfs-graphdriver -c user.email=cvmfs-graphdriver@invalid -c commit.gpgsign=false)
(
  cd "$STORAGE_DIR"
  git init -q
  git "${git_id[@]}" add -A
  git "${git_id[@]}" commit -q -m "$STORAGE_MODULE@$STORAGE_VERSION (pristine)"
  if ! git "${git_id[@]}" am -q --keep-cr "${patches[@]}" >&2; then
    git am --abort >/dev/null 2>&1 || true
    echo "patched-storage: the patches in $PATCH_DIR do not apply to $STORAGE_MODULE@$STORAGE_VERSION" >&2
    exit 1
  fi
  go mod download >&2
)
echo "$stamp" >"$stamp_file"
echo "$STORAGE_DIR"
