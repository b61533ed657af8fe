#!/usr/bin/env bash
# make test-lint: the workspace is formatted (cargo fmt --check) and clippy
# finds nothing (cargo clippy --all-targets --workspace -- -D warnings).
# Ends with exactly one line "N passed, N failed, N skipped"; the findings of
# a failing step are in build/test-lint/<step>.txt, their first lines printed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source hack/lib-test.sh
test_init test-lint "" build/test-lint
log=$TEST_LOG_DIR

lint_step() { # name, log file, command...
  local name=$1 out=$2
  shift 2
  if "$@" >"$out" 2>&1; then
    record_result "$name" pass
  else
    record_result "$name" fail "$(count_findings "$out") finding(s), $out"
    head -n 40 "$out" | sed 's/^/    /'
  fi
}

# Findings: clippy's "error: ..." lines less its closing "could not compile"
# line; rustfmt's "Diff in ..." hunks.
count_findings() {
  grep -cE '^(error(\[[A-Z0-9]+\])?: |Diff in )' "$1" |
    awk -v extra="$(grep -cE '^error: (could not compile|aborting)' "$1")" '{print $1 - extra}'
}

lint_step "cargo fmt --all --check" "$log/fmt.txt" cargo fmt --all -- --check
# --keep-going: every crate whose dependencies pass is linted, so the count
# covers more than the first crate with a finding (crates depending on one
# with findings are still not linted).
lint_step "cargo clippy --all-targets --workspace -- -D warnings" "$log/clippy.txt" \
  cargo clippy --all-targets --workspace --keep-going --quiet -- -D warnings
summary
