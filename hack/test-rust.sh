#!/usr/bin/env bash
# make test-rust: the header drift check, every Rust unit and integration test
# (privileged ones really mount when run as root), and the C ABI test.
# Ends with exactly one line "N passed, N failed, N skipped":
#   skipped = tests that printed "SKIP: <test>: ..." (e.g. not root) or are #[ignore]d.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
log=build/test-rust
mkdir -p "$log"

passed=0 failed=0 skipped=0

# 1. Header drift.
if hack/header.sh check >"$log/header.txt" 2>&1; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  cat "$log/header.txt" >&2
fi

# 2. The differential archive tests compare our tar handling with containers/storage's
#    own pkg/archive through a small Go program; build it so they run rather than skip.
#    A build failure is a test failure: the comparison is part of the suite.
gocheck="$PWD/build/gocheck"
if (cd crates/driver/tests/archive_support/gocheck && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
    /usr/local/go/bin/go build -o "$gocheck" .) >"$log/gocheck.txt" 2>&1; then
  export CVMFS_GO_ARCHIVE="$gocheck" CVMFS_GO_CHANGES="$gocheck"
else
  echo "test-rust: building the Go reference helper failed:" >&2
  cat "$log/gocheck.txt" >&2
  failed=$((failed + 1))
fi

# 3. cargo test. --show-output prints the stdout of passing tests, where gated
#    tests announce "SKIP: <name>: needs root".
cargo test --no-fail-fast -- --show-output >"$log/cargo.txt" 2>&1
cargo_rc=$?
read -r c_ok c_failed c_ignored c_skip < <(python3 - "$log/cargo.txt" <<'PY'
import re, sys
ok = failed = ignored = 0
skipped = set()
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^test (.+?) \.\.\. (ok|FAILED|ignored)", line)
    if m:
        if m.group(2) == "ok": ok += 1
        elif m.group(2) == "FAILED": failed += 1
        else: ignored += 1
    m = re.match(r"^SKIP: (\S+?):", line)
    if m:
        skipped.add(m.group(1))
print(ok - len(skipped), failed, ignored, len(skipped))
PY
)
passed=$((passed + c_ok)); failed=$((failed + c_failed)); skipped=$((skipped + c_ignored + c_skip))
grep -E '^test .* \.\.\. (FAILED|ignored)|^SKIP: ' "$log/cargo.txt" || true
if [ "$cargo_rc" -ne 0 ] && [ "$c_failed" -eq 0 ]; then
  # A build error or crash: no test lines to count, but it must not pass.
  echo "test-rust: cargo test exited $cargo_rc:" >&2
  tail -40 "$log/cargo.txt" >&2
  failed=$((failed + 1))
fi

# 4. The C ABI test.
tests/c/run.sh >"$log/c.txt" 2>&1
c_rc=$?
grep -E '^(FAIL|SKIP)' "$log/c.txt" || true
if line=$(grep -E '^c-abi: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$log/c.txt"); then
  read -r cp cf cs < <(echo "$line" | sed -E 's/c-abi: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped/\1 \2 \3/')
  passed=$((passed + cp)); failed=$((failed + cf)); skipped=$((skipped + cs))
  [ "$c_rc" -ne 0 ] && [ "$cf" -eq 0 ] && failed=$((failed + 1))
else
  echo "test-rust: the C ABI test did not finish (crash/abort or build failure):" >&2
  tail -20 "$log/c.txt" >&2
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
