#!/usr/bin/env bash
# make test-cvmfs: CVMFS layers mounted exactly as the OCI image defines them
# (issue 4): the corpus compared with umoci unpack, the no-copy proof, the
# fault cases, plus the unit tests of the whiteout conversion and of record
# resolution. Privileged tests really mount when run as root.
# Ends with exactly one line "N passed, N failed, N skipped":
#   skipped = tests that printed "SKIP: <test>: ..." (e.g. not root) or are #[ignore]d.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
log=build/test-cvmfs
mkdir -p "$log"

for tool in umoci tar; do
  if ! command -v "$tool" >/dev/null; then
    echo "test-cvmfs: $tool is not installed (make deps)" >&2
    echo "0 passed, 1 failed, 0 skipped"
    exit 1
  fi
done

args=()
for f in crates/driver/tests/cvmfs_*.rs; do
  args+=(--test "$(basename "$f" .rs)")
done

# Integration tests, then the library's own tests of the modules involved.
{
  cargo test --no-fail-fast "${args[@]}" -- --show-output
  echo "cargo-rc-1: $?"
  cargo test --no-fail-fast -p cvmfs-graphdriver --lib -- --show-output mount::whiteouts layout::
  echo "cargo-rc-2: $?"
} >"$log/cargo.txt" 2>&1

read -r ok failed ignored skip bad < <(python3 - "$log/cargo.txt" <<'PY'
import re, sys
ok = failed = ignored = 0
skipped = set()
bad = 0
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^test (.+?) \.\.\. (ok|FAILED|ignored)", line)
    if m:
        if m.group(2) == "ok": ok += 1
        elif m.group(2) == "FAILED": failed += 1
        else: ignored += 1
    m = re.match(r"^SKIP: (\S+?):", line)
    if m:
        skipped.add(m.group(1))
    m = re.match(r"^cargo-rc-\d: (\d+)", line)
    if m and m.group(1) != "0":
        bad += 1
print(ok - len(skipped), failed, ignored, len(skipped), bad)
PY
)
grep -E '^test .* \.\.\. (FAILED|ignored)|^SKIP: |^MEASURE: ' "$log/cargo.txt" || true
if [ "$bad" -gt 0 ] && [ "$failed" -eq 0 ]; then
  # A build error or crash: no test lines to count, but it must not pass.
  echo "test-cvmfs: cargo test failed without a failing test:" >&2
  tail -40 "$log/cargo.txt" >&2
  failed=$((failed + 1))
fi
echo "$ok passed, $failed failed, $((ignored + skip)) skipped"
[ "$failed" -eq 0 ]
