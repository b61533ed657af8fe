#!/usr/bin/env bash
# Generate the git-format patches that add the cvmfs driver to the storage
# module, from go-bindings/, into patches/<module>@<version>/.
#
#   hack/gen-patches.sh           regenerate patches/
#   hack/gen-patches.sh --check   fail if patches/ is stale (what CI runs)
#
# Deterministic (hack/lib-patches.sh): the same inputs always give
# byte-identical patches.
#
# The series, on top of the pristine module from the Go module cache:
#   1. drivers/cvmfs: the cgo package          (go-bindings/*.go)
#   2. drivers/register: register_cvmfs.go     (go-bindings/register/)
#   3. pkg/config: [storage.options.cvmfs]     (go-bindings/config/ + two small edits)
#   4. tests: driver-generic bats cases also run for cvmfs (small edits)
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"
source "$ROOT/hack/lib-patches.sh"

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pristine=$(pristine_module_dir)
cp -a "$pristine" "$work/storage"
chmod -R u+w "$work/storage"
patch_tree_init "$work/storage" "$STORAGE_MODULE@$STORAGE_VERSION"

# 1. The driver package.
mkdir -p "$tree/drivers/cvmfs"
cp "$ROOT"/go-bindings/*.go "$tree/drivers/cvmfs/"
commit "drivers/cvmfs: add the cvmfs graph driver" \
"The driver mounts read-only image layers straight out of a CernVM-FS
repository and keeps every other layer on local disk, stacked with kernel
overlayfs. Its logic is a Rust library (libcvmfs_graphdriver) reached through
a C ABI; this package is the cgo binding implementing graphdriver.Driver.

Generated from go-bindings/ of cvmfs-graphdriver by hack/gen-patches.sh."

# 2. Registration, behind the same kind of build tag as the other drivers.
cp "$ROOT"/go-bindings/register/register_cvmfs.go "$tree/drivers/register/"
commit "drivers/register: register the cvmfs driver" \
"Linked in unless built with exclude_graphdriver_cvmfs; needs linux and cgo."

# 3. storage.conf: a [storage.options.cvmfs] table.
cp "$ROOT"/go-bindings/config/*.go "$tree/pkg/config/"
edit pkg/config/config.go $'\t// Zfs container options to be handed to ZFS drivers\n' \
$'\t// Cvmfs container options to be handed to the cvmfs driver\n\tCvmfs struct{ CvmfsOptionsConfig } `toml:"cvmfs,omitempty"`\n\n\t// Zfs container options to be handed to ZFS drivers\n'
edit pkg/config/config.go $'\tcase "zfs":\n' \
$'\tcase "cvmfs":\n\t\tdoptions = append(doptions, cvmfsGraphDriverOptions(options)...)\n\n\tcase "zfs":\n'
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

emit_patches gen-patches 4 "$PATCH_DIR" "$check"
