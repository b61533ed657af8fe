#!/usr/bin/env bash
# make test-podman-system: podman's own system tests (test/system/*.bats from
# the module source of the pinned podman, hack/versions.env; PODMAN_LINE=5 for
# the 5.8 line) run three times with the same patched binary:
#   overlay      the stock overlay driver, the test image in the local store
#   cvmfs        the cvmfs driver, the test image in the local store
#   overlay-repo overlay, the test image in a read-only overlay image store
#                (additionalimagestores): the reference for cvmfs-repo, as
#                containers/storage treats read-only images its own way
#   cvmfs-repo   the cvmfs driver, the test image published by cvmfs-podman into
#                a plain directory standing in for /cvmfs/<repo> and seen
#                through additionalimagestores + [storage.options.cvmfs]
# The suite's test image (quay.io/libpod/testimage:<tag>) is built offline from
# Debian's static busybox to the layout the suite expects, and placed in the
# suite's image cache so its own _prefetch finds it.
#
#   PODMAN_SYSTEM_SET=default|full   which files of tests/podman-system/files.txt
#   PODMAN_SYSTEM_RUNS="overlay cvmfs overlay-repo cvmfs-repo"   which runs (overlay first)
#   hack/test-podman-system.sh [FILE...]   only these files (e.g. 010-images.bats)
#
# Each run gets its own /etc/containers (a bind mount in this script's private
# mount namespace), graphroot, runroot and tmp_dir, so nothing of the host's
# podman configuration or storage is read or touched.
#
# A test that passes in the reference run (overlay for cvmfs, overlay-repo for
# cvmfs-repo, overlay when overlay-repo is not run) and fails in the cvmfs run
# is a failure;
# tests failing with overlay too depend on the environment (no network, no
# systemd) and count as skipped. Prints a per-file pass/fail/skip table, writes
# it to build/podman-system*/results.md (tests/podman-system/results.md is the
# committed copy), and ends with "N passed, N failed, N skipped".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=hack/lib-storage.sh
source "$ROOT/hack/lib-storage.sh"
# shellcheck source=hack/lib-cgroup2.sh
source "$ROOT/hack/lib-cgroup2.sh"

SET=${PODMAN_SYSTEM_SET:-default}
RUNS=${PODMAN_SYSTEM_RUNS:-overlay cvmfs overlay-repo cvmfs-repo}
P="$ROOT/tests/podman-system"
WORK="$ROOT/build/podman-system"
[ "$PODMAN_LINE" = "$DEFAULT_PODMAN_LINE" ] || WORK+="-$PODMAN_LINE"
# The tag the suite's helpers.bash names (PODMAN_TEST_IMAGE_TAG) is read from
# the copy below; the repository part is fixed by the suite.
TEST_IMAGE_REPO=quay.io/libpod/testimage

die() {
  echo "test-podman-system: $*" >&2
  summary_line 0 1 0
  exit 1
}
case "$SET" in default | full) ;; *) die "PODMAN_SYSTEM_SET must be default or full, not '$SET'" ;; esac
for r in $RUNS; do
  case "$r" in overlay | cvmfs | overlay-repo | cvmfs-repo) ;; *) die "unknown run '$r' in PODMAN_SYSTEM_RUNS" ;; esac
done
[ "${RUNS%% *}" = overlay ] || die "PODMAN_SYSTEM_RUNS must start with overlay (the reference)"
[ "$(id -u)" -eq 0 ] || die "must run as root (the suite runs rootful podman with overlay mounts)"
for tool in bats skopeo runc conmon busybox jq python3 openssl unshare gcc; do
  command -v "$tool" >/dev/null || die "$tool missing (make deps)"
done

reexec_with_cgroup2 "$PODMAN_VERSION" "$0" "$@" || die "podman $PODMAN_VERSION cannot run on this host"
# A private mount namespace of our own (also when cgroup2 needed none), so each
# run's /etc/containers can be a bind mount that nobody else sees.
if [ -z "${PODMAN_SYSTEM_NS:-}" ]; then
  export PODMAN_SYSTEM_NS=1
  exec unshare --mount --propagation private -- "$(realpath "$0")" "$@"
fi
# Our containers.conf carries pids_limit = 0 where needed; the variable stays
# free for the tests that set it themselves.
NOPIDS=
if cgroup2_lacks_pids; then NOPIDS=1; fi
unset CONTAINERS_CONF_OVERRIDE CONTAINERS_CONF CONTAINERS_STORAGE_CONF CONTAINERS_REGISTRIES_CONF
# podman 5 warns on every command on a cgroup v1 host (it runs there, unlike
# podman 6), and the suite fails any command with an unexpected warning.
export PODMAN_IGNORE_CGROUPSV1_WARNING=1

rm -rf "$WORK"
mkdir -p "$WORK/logs"
T=$(mktemp -d /tmp/test-podman-system.XXXXXX)
cleanup() {
  mountpoint -q /etc/containers && umount /etc/containers 2>/dev/null
  grep -o " $T[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
# The host's files (policy.json, registries.conf) as each run's starting point.
mkdir -p "$T/host-etc"
cp -a /etc/containers/. "$T/host-etc/"

# ------------------------------------------------------------------ build
echo "==> make podman (line $PODMAN_LINE: podman $PODMAN_VERSION)"
start=$SECONDS
"$ROOT/hack/build-podman.sh" >"$WORK/logs/build-podman.log" 2>&1 ||
  { tail -n 30 "$WORK/logs/build-podman.log"; die "building podman failed"; }
echo "    $(grep -E 'up to date|built in' "$WORK/logs/build-podman.log" | tail -1) ($((SECONDS - start))s)"
PODMAN=$PODMAN_BINARY
# buildah on the same patched storage (hack/versions.env BUILDAH_LINE): the
# suite runs `buildah from` for its external-container tests; without it
# (another podman line) those tests fail in every run alike.
if [ "$PODMAN_LINE" = "$BUILDAH_LINE" ]; then
  echo "==> make buildah (buildah $BUILDAH_VERSION)"
  start=$SECONDS
  BUILDAH=$("$ROOT/hack/build-buildah.sh" 2>"$WORK/logs/build-buildah.log") ||
    { tail -n 30 "$WORK/logs/build-buildah.log"; die "building buildah failed"; }
  echo "    $(grep -E 'up to date|built in' "$WORK/logs/build-buildah.log" | tail -1) ($((SECONDS - start))s)"
  export PATH="$(dirname "$BUILDAH"):$PATH"
else
  echo "    (no buildah for podman line $PODMAN_LINE: the suite's buildah tests fail in every run)"
fi
echo "==> cargo build --bin cvmfs-podman"
cargo build --release --bin cvmfs-podman --quiet || die "building cvmfs-podman failed"
PUBLISHER="$ROOT/target/release/cvmfs-podman"

# ------------------------------------------------------------------ the suite
module_dir=$(cd / && go mod download -json "$PODMAN_MODULE@$PODMAN_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$module_dir/test/system" ] || die "no test/system in $PODMAN_MODULE@$PODMAN_VERSION (go mod download failed?)"
SUITE="$WORK/suite"
cp -r "$module_dir/test/system" "$SUITE"
chmod -R u+w "$SUITE"
# shellcheck source=hack/lib-podman-system.sh
source "$ROOT/hack/lib-podman-system.sh"
patch_suite "$SUITE" || die "patching the suite's helpers.bash failed (did upstream change them?)"
TEST_IMAGE_TAG=$(sed -n 's/^PODMAN_TEST_IMAGE_TAG=\${PODMAN_TEST_IMAGE_TAG:-"\([0-9]*\)"}$/\1/p' "$SUITE/helpers.bash")
[ -n "$TEST_IMAGE_TAG" ] || die "cannot read PODMAN_TEST_IMAGE_TAG from helpers.bash"
TEST_IMAGE="$TEST_IMAGE_REPO:$TEST_IMAGE_TAG"
NONLOCAL_TAG=$(sed -n 's/^PODMAN_NONLOCAL_IMAGE_TAG=\${PODMAN_NONLOCAL_IMAGE_TAG:-"\([0-9]*\)"}$/\1/p' "$SUITE/helpers.bash")
[ -n "$NONLOCAL_TAG" ] || die "cannot read PODMAN_NONLOCAL_IMAGE_TAG from helpers.bash"
NONLOCAL_IMAGE="$TEST_IMAGE_REPO:$NONLOCAL_TAG"

files=()
if [ $# -gt 0 ]; then
  files=("$@")
else
  while read -r f set; do
    [ "$set" = default ] || [ "$SET" = full ] && files+=("$f")
  done < <(grep -v '^#' "$P/files.txt" | grep .)
fi
# A file of files.txt that this podman line does not have (126-commit is new in
# 6.0) is left out with a note; a file named on the command line must exist.
present=()
for f in "${files[@]}"; do
  if [ -f "$SUITE/$f" ]; then
    present+=("$f")
  elif [ $# -gt 0 ]; then
    die "$f is not in $PODMAN_MODULE@$PODMAN_VERSION test/system"
  else
    echo "    ($f is not in $PODMAN_MODULE@$PODMAN_VERSION: left out)"
  fi
done
files=("${present[@]}")
echo "    $PODMAN_MODULE@$PODMAN_VERSION test/system: ${#files[@]} files ($SET set), runs: $RUNS"

# catatonit (the pods' pause process) is not installed: a static stand-in for
# its -P mode goes where containers.conf's helper_binaries_dir points.
mkdir -p "$T/bin"
gcc -static -O2 -o "$T/bin/catatonit" "$P/catatonit-pause.c" || die "building the catatonit stand-in failed"

# ------------------------------------------------------------------ test image
echo "==> the test images $TEST_IMAGE and $NONLOCAL_IMAGE (built offline from busybox)"
# The suite's image cache (helpers.bash PODMAN_IMAGECACHE under BATS_TMPDIR).
export TMPDIR="$T/tmp"
CACHE="$TMPDIR/podman-systest-imagecache-$(id -u)"
mkdir -p "$CACHE"
CACHED_ARCHIVE="$CACHE/${TEST_IMAGE//[\/:]/--}.tar"
OVERLAY_RO_STORE="$T/overlay-ro-store"
start=$SECONDS
(
  set -e
  build_test_image "$T/image" "$CACHED_ARCHIVE" "$T/testimage-oci" "$CACHE/${NONLOCAL_IMAGE//[\/:]/--}.tar"
) >"$WORK/logs/test-image.log" 2>&1
[ $? -eq 0 ] ||
  { tail -n 30 "$WORK/logs/test-image.log"; die "building the test image failed"; }
echo "    $(du -h "$CACHED_ARCHIVE" | cut -f1) archive, image $(jq -r '.manifests[0].digest' "$T/testimage-oci/index.json") ($((SECONDS - start))s)"

REPO="$T/cvmfs/unpacked.test.local"
if [[ " $RUNS " == *" cvmfs-repo "* ]]; then
  echo "==> cvmfs-podman publish into $REPO"
  "$PUBLISHER" publish "oci:$T/testimage-oci:testimage" --name "$TEST_IMAGE" --repo "$REPO" -q >"$WORK/logs/publish.log" 2>&1 &&
    "$PUBLISHER" check "$REPO" >>"$WORK/logs/publish.log" 2>&1 ||
    { cat "$WORK/logs/publish.log"; die "publishing the test image failed"; }
fi

# ------------------------------------------------------------------ runs
for run in $RUNS; do
  run_suite "$run" "${files[@]}" || die "run $run could not be set up"
done

python3 "$ROOT/hack/podman-system-tally.py" --logs "$WORK/logs" --runs "$RUNS" \
  --podman "$("$PODMAN" --version) ($PODMAN_MODULE@$PODMAN_VERSION)" --set "$SET" \
  --known "$P/known-differences.txt" --out "$WORK/results.md" "${files[@]}"
