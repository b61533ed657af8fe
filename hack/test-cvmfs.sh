#!/usr/bin/env bash
# make test-cvmfs: CVMFS layers mounted exactly as the OCI image defines them
# (issue 4): the corpus compared with umoci unpack, the no-copy proof, the
# fault cases, plus the unit tests of the whiteout conversion and of record
# resolution. Privileged tests are `#[ignore = "needs root"]`: as root they run
# (--include-ignored) and really mount; without root they count as skipped.
# Ends with exactly one line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source hack/lib-test.sh
test_init test-cvmfs "" build/test-cvmfs
log=$TEST_LOG_DIR

for tool in umoci tar; do
  command -v "$tool" >/dev/null || die "$tool is not installed (make deps)"
done

args=()
for f in crates/driver/tests/cvmfs_*.rs; do
  args+=(--test "$(basename "$f" .rs)")
done

# Integration tests, then the library's own tests of the modules involved.
{
  cargo test --no-fail-fast -p cvmfs-graphdriver "${args[@]}" -- --show-output $(cargo_include_ignored)
  echo "cargo-exit: $?"
  cargo test --no-fail-fast -p cvmfs-graphdriver --lib -- $(cargo_include_ignored) mount::whiteouts layout::
  echo "cargo-exit: $?"
} >"$log/cargo.txt" 2>&1
grep -E '^MEASURE: ' "$log/cargo.txt" || true
count_cargo "$log/cargo.txt"
summary
