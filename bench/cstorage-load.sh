#!/usr/bin/env bash
# What containers/storage itself parses on every podman command for a store
# of N listed images (the floor under any listing of a DUCC repository):
#   bench/cstorage-load.sh STORE_ROOT...
# STORE_ROOT: a store of ours (cvmfs-images/images.json, cvmfs-layers/layers.json),
# e.g. <home>/ducc/<repo>-<patterns>/ or the directories the ducc_store measure
# test leaves with DUCC_MEASURE_KEEP=DIR (DIR/<n>/{images,layers}.json).
# Needs build/storage-v1.63.0 (make storage) and the Go module cache of a podman build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STORAGE=$ROOT/build/storage-v1.63.0
[ -d "$STORAGE" ] || { echo "cstorage-load: $STORAGE missing (make storage)" >&2; exit 1; }
work=$(mktemp -d /tmp/cstorage-load.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$ROOT/bench/cstorage-load/main.go" "$work/"
cp "$STORAGE/go.sum" "$work/"
printf 'module cstorageload\n\ngo 1.25.0\n\nrequire go.podman.io/storage v1.63.0\n\nreplace go.podman.io/storage => %s\n' "$STORAGE" >"$work/go.mod"
(cd "$work" && GOFLAGS=-mod=mod GOPROXY=off CGO_ENABLED=0 go build \
  -tags "exclude_graphdriver_btrfs exclude_graphdriver_cvmfs containers_image_openpgp" -o cstorage-load .)
for store in "$@"; do
  ro=$work/ro
  rm -rf "$ro"
  mkdir -p "$ro/vfs-images" "$ro/vfs-layers"
  for f in images layers; do
    src=$store/cvmfs-$f/$f.json
    [ -f "$src" ] || src=$store/$f.json
    cp "$src" "$ro/vfs-$f/$f.json"
    : >"$ro/vfs-$f/$f.lock"
  done
  for _ in 1 2 3; do "$work/cstorage-load" "$ro"; done
done
