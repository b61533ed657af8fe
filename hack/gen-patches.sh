#!/usr/bin/env bash
# Generate the git-format patches that add the cvmfs driver to the storage
# module, from go-bindings/, into patches/<module>@<version>/ -- one series per
# storage release, for every podman line of hack/versions.env (PODMAN_LINES).
#
#   hack/gen-patches.sh           regenerate patches/
#   hack/gen-patches.sh --check   fail if patches/ is stale (what CI runs)
#
# Deterministic (hack/lib-patches.sh): the same inputs always give
# byte-identical patches.
#
# The series, on top of the pristine module from the Go module cache:
#   1. drivers/cvmfs: the cgo package          (go-bindings/*.go)
#   2. drivers/register: register_cvmfs.go     (go-bindings/register/; since
#      storage 1.63 also "cvmfs" among internal/driver's known driver names)
#   3. pkg/config: [storage.options.cvmfs]     (go-bindings/config/ + two small edits)
#   4. tests: driver-generic bats cases also run for cvmfs (small edits)
#   5. store: Image() and the layer-by-digest lookups ask a driver that lists
#      images on demand (go-bindings/provider/, three anchored edits)
#
# Release-specific files: go-bindings may hold files named
# *_storage_v<major>_<minor>[_test].go (the seam of methods whose signature or
# existence changes between releases, a config test). A series takes the ones
# of its own release and none of the others; every release must have its
# driver_storage_v<major>_<minor>.go.
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"
source "$ROOT/hack/lib-patches.sh"

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# v1.63.0 -> v1_63, the suffix of release-specific files.
release_suffix() { sed -E 's/^v([0-9]+)\.([0-9]+)\..*/v\1_\2/' <<<"$STORAGE_VERSION"; }

# copy_release_files SRC DEST: the Go files of SRC for $STORAGE_VERSION.
copy_release_files() {
  local src=$1 dest=$2 release f
  release=$(release_suffix)
  for f in "$src"/*.go; do
    case "$(basename "$f")" in
      *_storage_"$release".go | *_storage_"$release"_test.go) ;;
      *_storage_v[0-9]*) continue ;;
    esac
    cp "$f" "$dest/"
  done
}

# Every storage release once (the lines of hack/versions.env may share one),
# each in a run of its own (GEN_PATCHES_ONE_LINE=1 with that line).
if [ -z "${GEN_PATCHES_ONE_LINE:-}" ]; then
  done_releases=" " rc=0
  for line in ${PODMAN_LINES//,/ }; do
    select_podman_line "$line"
    case "$done_releases" in *" $STORAGE_VERSION "*) continue ;; esac
    done_releases+="$STORAGE_VERSION "
    GEN_PATCHES_ONE_LINE=1 PODMAN_LINE=$line "$0" "$@" || rc=1
  done
  exit "$rc"
fi

# From here on: the series of $STORAGE_VERSION (PODMAN_LINE's) into $PATCH_DIR.
seam="$ROOT/go-bindings/driver_storage_$(release_suffix).go"
[ -f "$seam" ] || { echo "gen-patches: no seam for $STORAGE_MODULE@$STORAGE_VERSION: ${seam#"$ROOT/"} is missing" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pristine=$(pristine_module_dir)
cp -a "$pristine" "$work/storage"
chmod -R u+w "$work/storage"
patch_tree_init "$work/storage" "$STORAGE_MODULE@$STORAGE_VERSION"

# 1. The driver package.
mkdir -p "$tree/drivers/cvmfs"
copy_release_files "$ROOT/go-bindings" "$tree/drivers/cvmfs"
commit "drivers/cvmfs: add the cvmfs graph driver" \
"The driver mounts read-only image layers straight out of a CernVM-FS
repository and keeps every other layer on local disk, stacked with kernel
overlayfs. Its logic is a Rust library (libcvmfs_graphdriver) reached through
a C ABI; this package is the cgo binding implementing graphdriver.Driver.

Generated from go-bindings/ of cvmfs-graphdriver by hack/gen-patches.sh."

# 2. Registration, behind the same kind of build tag as the other drivers.
cp "$ROOT"/go-bindings/register/register_cvmfs.go "$tree/drivers/register/"
known_names=""
# Since 1.63 the option parser of every driver (and GetMountOptions) refuses a
# "<driver>.<key>" option whose driver it does not know, and every driver
# receives the [storage.options.<driver>] tables of all others.
if [ -f "$tree/internal/driver/driver.go" ]; then
  edit internal/driver/driver.go $'\tcase "overlay", "overlay2", "btrfs", "zfs", "vfs":\n' \
$'\tcase "overlay", "overlay2", "btrfs", "zfs", "vfs", "cvmfs":\n'
  known_names=$'\n\ninternal/driver: "cvmfs" is a known driver name, so cvmfs.<key> options\n(the [storage.options.cvmfs] table, which every driver receives) parse in\nevery driver and in GetMountOptions instead of failing as an unknown driver.'
fi
commit "drivers/register: register the cvmfs driver" \
"Linked in unless built with exclude_graphdriver_cvmfs; needs linux and cgo.$known_names"

# 3. storage.conf: a [storage.options.cvmfs] table.
copy_release_files "$ROOT/go-bindings/config" "$tree/pkg/config"
edit pkg/config/config.go $'\t// Zfs container options to be handed to ZFS drivers\n' \
$'\t// Cvmfs container options to be handed to the cvmfs driver\n\tCvmfs struct{ CvmfsOptionsConfig } `toml:"cvmfs,omitempty"`\n\n\t// Zfs container options to be handed to ZFS drivers\n'
if grep -q 'func GetGraphDriverOptions(driverName string' "$tree/pkg/config/config.go"; then
  # Up to 1.62: a switch over the configured driver's name.
  edit pkg/config/config.go $'\tcase "zfs":\n' \
$'\tcase "cvmfs":\n\t\tdoptions = append(doptions, cvmfsGraphDriverOptions(options)...)\n\n\tcase "zfs":\n'
else
  # Since 1.63: every table, each option prefixed with its driver's name.
  edit pkg/config/config.go $'\tif options.Zfs.Name != "" {\n' \
$'\tdoptions = append(doptions, cvmfsGraphDriverOptions(options)...)\n\n\tif options.Zfs.Name != "" {\n'
fi
gofmt -l "$tree/pkg/config" | grep . && { echo "gen-patches: pkg/config is not gofmt-clean after editing" >&2; exit 1; }
commit "pkg/config: honour a [storage.options.cvmfs] table" \
"storage.conf options of the cvmfs driver (repositories, mountopt,
ignore_chown_errors, force_mask, repository_timeout, use_flat) reach the driver as
cvmfs.<key>=<value>, like the tables of the other drivers."

# 4. The bats suite gates driver-generic cases on a list of in-tree driver
#    names; cvmfs supports what those cases exercise (additional image stores,
#    ListLayers-based checks, ID-mapped layer copies, layer deletion order), so
#    it is added to those lists. Overlay-only cases (staging directories,
#    overlay's own recreate test) stay skipped.
gates=()
while read -r file _; do
  case "$file" in '' | '#'*) continue ;; esac
  gates+=("$tree/tests/$file")
done <"$ROOT/hack/bats-cvmfs-gates.txt"
python3 - "${gates[@]}" <<'EOF'
import re, sys
# The gate lines look like "\toverlay*|vfs)" or "\tbtrfs|overlay*|vfs|zfs)".
gate = re.compile(r"^(\t(?:btrfs\|)?overlay\*\|vfs(?:\|zfs)?)\)$", re.M)
for path in sys.argv[1:]:
    text, n = gate.subn(r"\1|cvmfs)", open(path).read())
    if n == 0:
        sys.exit(f"gen-patches: no driver gate found in {path}")
    open(path, "w").write(text)
EOF
commit "tests: run the driver-generic cases for cvmfs too" \
"Cases that check generic behaviour are gated on a list of driver names;
cvmfs implements what they exercise, so it joins those lists."

# 5. The on-demand hook: a lookup that finds nothing asks a driver that lists
#    images on demand (drivers.ImageProvider) and is retried once when it
#    added something (go-bindings/provider/).
cp "$ROOT/go-bindings/provider/image_provider.go" "$tree/drivers/"
cp "$ROOT/go-bindings/provider/store_provider.go" "$tree/"
edit store.go $'func (s *store) Image(id string) (*Image, error) {\n\tif res, done, err := readAllImageStores(' \
$'func (s *store) Image(id string) (*Image, error) {\n\treturn s.imageProvided(id)\n}\n\nfunc (s *store) image(id string) (*Image, error) {\n\tif res, done, err := readAllImageStores('
for kind in Compressed Uncompressed; do
  edit store.go $'\treturn s.layersByMappedDigest(func(r roLayerStore, d digest.Digest) ([]Layer, error) { return r.LayersBy'"$kind"$'Digest(d) }, d)\n' \
$'\treturn s.layersProvided(drivers.ProvideLayersBy'"$kind"$'Digest, d, func(r roLayerStore, d digest.Digest) ([]Layer, error) { return r.LayersBy'"$kind"$'Digest(d) })\n'
done
gofmt -l "$tree/store.go" "$tree/store_provider.go" "$tree/drivers/image_provider.go" | grep . && { echo "gen-patches: the provider hook is not gofmt-clean" >&2; exit 1; }
commit "store: ask a driver that lists images on demand" \
"A driver may list some images of its additional image stores only once
they are asked for (the cvmfs driver's DUCC stores: thousands of images,
of which a user runs a few). It implements drivers.ImageProvider; Image()
and the layer-by-digest lookups a pull uses to skip downloads ask it when
they find nothing, and retry once when it added something (it writes the
store's files, then a new last-write token into the store's lock files, so
the read-only store reloads). Drivers without the interface are unaffected."

emit_patches gen-patches 5 "$PATCH_DIR" "$check"
