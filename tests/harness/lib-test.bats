#!/usr/bin/env bats
# The rules of hack/lib-test.sh, the one harness of the shell suites: what
# counts as passed, failed and skipped, and what a known-failures file may say.
# Each case runs a small suite against the library and checks its summary.

setup() {
  ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
  known="$BATS_TEST_TMPDIR/known-failures.txt"
  : >"$known"
}

# suite BODY: a suite script sourcing the library, BODY between test_init and
# summary; run through bats' `run`.
suite() {
  cat >"$BATS_TEST_TMPDIR/suite.sh" <<SH
set -uo pipefail
ROOT=$ROOT
source "\$ROOT/hack/lib-test.sh"
test_init selftest "$known" "$BATS_TEST_TMPDIR/logs"
good() { true; }
bad() { false; echo "not reached"; }
$1
summary
SH
  run bash "$BATS_TEST_TMPDIR/suite.sh"
}

@test "passing and failing cases are counted, the failure's log shown" {
  suite 'run_test "one" good; run_test "two" bad'
  [ "$status" -eq 1 ]
  [[ "$output" == *"ok: one"* ]]
  [[ "$output" == *"FAIL: two"* ]]
  [[ "$output" == *"+ false"* ]]
  [[ "${lines[-1]}" == "1 passed, 1 failed, 0 skipped" ]]
}

@test "a command failing in the middle of a case fails it (set -e inside)" {
  suite 'mid() { false; true; }; run_test "mid" mid'
  [ "$status" -eq 1 ]
  [[ "${lines[-1]}" == "0 passed, 1 failed, 0 skipped" ]]
}

@test "a listed case that fails counts as skipped, with its reason" {
  echo "two — waits for the driver fix" >"$known"
  suite 'run_test "one" good; run_test "two" bad'
  [ "$status" -eq 0 ]
  [[ "$output" == *"KNOWN: two"*"waits for the driver fix"* ]]
  [[ "${lines[-1]}" == "1 passed, 0 failed, 1 skipped" ]]
}

@test "a listed case that passes is an XPASS and fails the run" {
  echo "one — was broken" >"$known"
  suite 'run_test "one" good'
  [ "$status" -eq 1 ]
  [[ "$output" == *"XPASS: one"* ]]
  [[ "${lines[-1]}" == "0 passed, 1 failed, 0 skipped" ]]
}

@test "a line naming no case that ran is stale and fails the run" {
  printf '%s\n' "# a comment" "" "gone — the case was renamed" >"$known"
  suite 'run_test "one" good'
  [ "$status" -eq 1 ]
  [[ "$output" == *"STALE: 'gone'"* ]]
  [[ "${lines[-1]}" == "1 passed, 1 failed, 0 skipped" ]]
}

@test "with a filter, unselected known cases are not stale" {
  echo "other — flaky" >"$known"
  suite 'TEST_FILTER=^one; run_test "one" good; run_test "other" bad'
  [ "$status" -eq 0 ]
  [[ "$output" != *"other"* ]]
  [[ "${lines[-1]}" == "1 passed, 0 failed, 0 skipped" ]]
}

@test "a line without ' — reason' is an error, not an excuse" {
  echo "two" >"$known"
  suite 'run_test "two" bad'
  [ "$status" -eq 1 ]
  [[ "$output" == *"not '<case name> — <reason>'"* ]]
  [[ "${lines[-1]}" == "0 passed, 2 failed, 0 skipped" ]]
}

@test "a runner's skip must be listed; listed, it counts as skipped" {
  echo "b — FreeBSD only" >"$known"
  suite 'record_result "a" skip; record_result "b" skip'
  [ "$status" -eq 1 ]
  [[ "$output" == *"FAIL: a: skipped, and not listed"* ]]
  [[ "${lines[-1]}" == "0 passed, 1 failed, 1 skipped" ]]
}

@test "die prints the summary with one failure and exits 1" {
  suite 'die "no registry"'
  [ "$status" -eq 1 ]
  [[ "$output" == *"selftest: no registry"* ]]
  [[ "${lines[-1]}" == "0 passed, 1 failed, 0 skipped" ]]
}

@test "cargo-summary.py counts ok, FAILED, ignored and a run that broke" {
  cat >"$BATS_TEST_TMPDIR/cargo.txt" <<'OUT'
test a ... ok
test b ... ok
test c ... ignored, needs root
cargo-exit: 0
test d ... FAILED
cargo-exit: 101
error[E0425]: cannot find value
cargo-exit: 101
OUT
  run python3 "$ROOT/hack/cargo-summary.py" "$BATS_TEST_TMPDIR/cargo.txt"
  [ "$status" -eq 0 ]
  [[ "${lines[-1]}" == "2 2 1" ]]
}
