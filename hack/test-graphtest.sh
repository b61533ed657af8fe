#!/usr/bin/env bash
# `make test-graphtest`: the storage module's own driver conformance suite
# (drivers/graphtest, every exported DriverTest* function, called from
# drivers/cvmfs/cvmfs_test.go) against the cvmfs driver, in the patched module
# of the primary podman line's storage release (PODMAN_LINE=5 for the 5.8
# line's), as root with real overlay mounts.
#
# Ends with "N passed, N failed, N skipped", then the skipped tests with their
# reasons. Exit status non-zero on any failure.
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"
source "$ROOT/hack/lib-test.sh"
test_init test-graphtest "" "$ROOT/build/test-graphtest"

[ "$(id -u)" -eq 0 ] || die "must run as root (the driver mounts overlayfs)"

"$ROOT/hack/build-lib.sh" >&2
pin_rust_lib
"$ROOT/hack/gen-patches.sh" --check >&2
module=$("$ROOT/hack/patched-storage.sh")
echo "test-graphtest: $STORAGE_MODULE@$STORAGE_VERSION (podman line $PODMAN_LINE)"

# All tests of the driver package (every graphtest DriverTest* plus the
# binding's own) and the storage.conf table test of the config patch; they are
# all named TestCvmfs*. Extra arguments go to `go test`.
run=${GRAPHTEST_RUN:-^TestCvmfs}
cd "$module"
set +e
go test -json -count=1 -timeout 45m -run "$run" "$@" ./drivers/cvmfs/ ./pkg/config/ 2>&1 |
  python3 "$ROOT/hack/gotest-summary.py" --allow-skip TestCvmfsSetQuota
rc=${PIPESTATUS[1]}
set -e
# Mounts the suite left behind (a test that failed half-way) would pin the
# temporary directories; report them rather than hide them.
if grep -q ' /tmp/storage-graphtest-' /proc/self/mountinfo; then
  echo "test-graphtest: warning: mounts left under /tmp/storage-graphtest-*" >&2
fi
exit "$rc"
