#!/usr/bin/env bash
# make test-rust: the header drift check, every Rust unit and integration test
# and the C ABI test. Privileged tests are `#[ignore = "needs root"]`: as root
# they run (cargo test -- --include-ignored) and really mount; without root
# cargo reports them as ignored and they count as skipped, never as passed.
# Ends with exactly one line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source hack/lib-test.sh
test_init test-rust "" build/test-rust
log=$TEST_LOG_DIR

# No `make deps` here (it may run apt-get): what this suite needs is checked.
for tool in cargo gcc pkg-config /usr/local/go/bin/go; do
  command -v "$tool" >/dev/null || die "$tool is missing (install it; make deps installs pkg-config)"
done

# 1. Header drift.
if hack/header.sh check >"$log/header.txt" 2>&1; then
  record_result "header matches crates/driver/src/ffi.rs" pass
else
  record_result "header matches crates/driver/src/ffi.rs" fail
  cat "$log/header.txt" >&2
fi

# 2. The differential archive tests compare our tar handling with containers/storage's
#    own pkg/archive through a small Go program; build it so they run (they fail
#    when included without it). A build failure is a test failure.
gocheck="$PWD/build/gocheck"
if (cd crates/driver/tests/archive_support/gocheck && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
    /usr/local/go/bin/go build -o "$gocheck" .) >"$log/gocheck.txt" 2>&1; then
  export CVMFS_GO_ARCHIVE="$gocheck" CVMFS_GO_CHANGES="$gocheck"
else
  record_result "the Go reference helper builds" fail
  cat "$log/gocheck.txt" >&2
fi

# 3. cargo test, every crate of the workspace.
{
  cargo test --workspace --no-fail-fast -- $(cargo_include_ignored) --show-output
  echo "cargo-exit: $?"
} >"$log/cargo.txt" 2>&1
count_cargo "$log/cargo.txt"

# 4. The C ABI test.
tests/c/run.sh >"$log/c.txt" 2>&1
c_rc=$?
grep -E '^(FAIL|SKIP)' "$log/c.txt" || true
if line=$(grep -E '^c-abi: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$log/c.txt"); then
  read -r cp cf cs < <(echo "$line" | sed -E 's/c-abi: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped/\1 \2 \3/')
  add_counts "$cp" "$cf" "$cs"
  [ "$c_rc" -ne 0 ] && [ "$cf" -eq 0 ] && add_counts 0 1 0
else
  echo "test-rust: the C ABI test did not finish (crash/abort or build failure):" >&2
  tail -20 "$log/c.txt" >&2
  add_counts 0 1 0
fi

summary
