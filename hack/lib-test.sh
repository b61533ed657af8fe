# The one test harness of the shell suites (hack/test-*.sh), sourced, not run.
#
#   test_init SUITE KNOWN_FILE LOG_DIR   once, before the first case
#   run_test NAME FUNCTION [ARGS...]     one case: FUNCTION ARGS in a subshell
#                                        with `set -ex`, output to a log shown
#                                        (last 40 lines) when it fails
#   record_result NAME pass|fail|skip [DETAIL]
#                                        a case run by something else (bats, cargo)
#   add_counts PASSED FAILED SKIPPED     counts some other runner totalled
#   summary                              stale known failures, then the one line
#                                        "N passed, N failed, N skipped" that
#                                        hack/run-all-tests.sh adds up; returns
#                                        non-zero when anything failed
#   die MESSAGE                          the suite cannot run: one failure, the
#                                        summary line, exit 1
#   fail MESSAGE                         inside a case: say what is wrong, fail
#
# Known failures: a suite has one file, all in one format (tests/publish/known-failures.txt,
# tests/e2e/known-failures.txt, tests/bats-known-failures.txt):
#   # comments and blank lines
#   <case name> — <reason>
# A listed case that fails (or is skipped by its runner) counts as skipped and
# prints its reason; a listed case that passes is an XPASS and counts as failed
# (remove the line); a case skipped by its runner without a line counts as
# failed. When every case ran (no TEST_FILTER), a line naming no case that ran
# is stale and counts as failed: an entry must cite a case that exists.
#
# TEST_FILTER=<regex> runs only the cases whose name matches it; a suite that
# selects cases its own way (test-e2e's E2E_SET) sets TEST_PARTIAL=1, so that
# known failures of the cases left out are not called stale.
# TEST_AFTER_CASE=<function> is called after every case (e.g. to restart a
# server a failed case left stopped).

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
TEST_SUITE= TEST_KNOWN_FILE= TEST_LOG_DIR=
TEST_PASSED=0 TEST_FAILED=0 TEST_SKIPPED=0 TEST_CASE_NO=0
declare -A TEST_KNOWN=()   # case name -> reason
declare -A TEST_SEEN=()    # case names that ran
TEST_FILTER=${TEST_FILTER:-}
TEST_PARTIAL=${TEST_PARTIAL:-}
TEST_AFTER_CASE=${TEST_AFTER_CASE:-}

test_init() {
  TEST_SUITE=$1 TEST_KNOWN_FILE=$2 TEST_LOG_DIR=$3
  mkdir -p "$TEST_LOG_DIR"
  TEST_KNOWN=()
  [ -z "$TEST_KNOWN_FILE" ] || [ ! -f "$TEST_KNOWN_FILE" ] || load_known_failures "$TEST_KNOWN_FILE"
}

# load_known_failures FILE: "<case name> — <reason>" lines; any other line is an
# error (a malformed entry would silently excuse nothing or everything).
load_known_failures() {
  local line name reason n=0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    name=${line%% — *} reason=${line#* — }
    if [ "$name" = "$line" ] || [ -z "${reason// /}" ]; then
      echo "$TEST_SUITE: $1:$n: not '<case name> — <reason>': $line" >&2
      TEST_FAILED=$((TEST_FAILED + 1))
      continue
    fi
    TEST_KNOWN[$name]=$reason
  done <"$1"
}

# known_failure_applies NAME: whether a listed case that did not run is stale.
# A suite whose known-failures file spans variants (test-bats: two storage
# releases) redefines it.
known_failure_applies() { return 0; }

fail() { echo "FAILED CHECK: $*" >&2; return 1; }

die() {
  echo "$TEST_SUITE: $*" >&2
  TEST_FAILED=$((TEST_FAILED + 1))
  TEST_PARTIAL=1 summary
  exit 1
}

test_selected() { [ -z "$TEST_FILTER" ] || [[ $1 =~ $TEST_FILTER ]]; }

run_test() {
  local name=$1
  shift
  test_selected "$name" || return 0
  TEST_CASE_NO=$((TEST_CASE_NO + 1))
  local slug log start=$SECONDS rc
  slug=$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_' | cut -c1-80)
  log="$TEST_LOG_DIR/$(printf '%02d' "$TEST_CASE_NO")-$slug.log"
  # Not inside `if`: bash ignores `set -e` in a subshell that is an if
  # condition, and every command of a case must count.
  (
    set -ex
    CASE_NO=$TEST_CASE_NO
    "$@"
  ) >"$log" 2>&1
  rc=$?
  [ -z "$TEST_AFTER_CASE" ] || "$TEST_AFTER_CASE"
  if [ "$rc" -eq 0 ]; then
    record_result "$name" pass "$((SECONDS - start))s"
  else
    record_result "$name" fail "$((SECONDS - start))s; log $log"
    sed 's/^/    /' "$log" | tail -n 40
  fi
}

record_result() {
  local name=$1 status=$2 detail=${3:+ ($3)}
  TEST_SEEN[$name]=1
  local known=${TEST_KNOWN[$name]-}
  local listed=${TEST_KNOWN[$name]+yes}
  case $status/$listed in
  pass/)
    echo "ok: $name$detail"
    TEST_PASSED=$((TEST_PASSED + 1)) ;;
  pass/yes)
    echo "XPASS: $name$detail: passes, but ${TEST_KNOWN_FILE#"$ROOT/"} lists it: remove the line"
    TEST_FAILED=$((TEST_FAILED + 1)) ;;
  fail/yes | skip/yes)
    echo "KNOWN: $name$detail — $known"
    TEST_SKIPPED=$((TEST_SKIPPED + 1)) ;;
  fail/)
    echo "FAIL: $name$detail"
    TEST_FAILED=$((TEST_FAILED + 1)) ;;
  skip/)
    echo "FAIL: $name$detail: skipped, and not listed in ${TEST_KNOWN_FILE#"$ROOT/"}"
    TEST_FAILED=$((TEST_FAILED + 1)) ;;
  *)
    echo "$TEST_SUITE: record_result: unknown status '$status' for $name" >&2
    TEST_FAILED=$((TEST_FAILED + 1)) ;;
  esac
}

add_counts() {
  TEST_PASSED=$((TEST_PASSED + $1)) TEST_FAILED=$((TEST_FAILED + $2)) TEST_SKIPPED=$((TEST_SKIPPED + $3))
}

summary() {
  local name
  if [ -z "$TEST_FILTER" ] && [ -z "$TEST_PARTIAL" ] && [ "${#TEST_SEEN[@]}" -gt 0 ]; then
    for name in "${!TEST_KNOWN[@]}"; do
      [ -n "${TEST_SEEN[$name]-}" ] && continue
      known_failure_applies "$name" || continue
      echo "STALE: '$name' in ${TEST_KNOWN_FILE#"$ROOT/"} names no case that ran: fix or remove the line"
      TEST_FAILED=$((TEST_FAILED + 1))
    done
  fi
  echo "$TEST_PASSED passed, $TEST_FAILED failed, $TEST_SKIPPED skipped"
  [ "$TEST_FAILED" -eq 0 ]
}

# cargo_include_ignored: the arguments after `--` that run the
# `#[ignore = "needs root"]` tests -- as root only; without root they stay
# ignored and are counted as skipped.
cargo_include_ignored() {
  if [ "$(id -u)" -eq 0 ]; then echo --include-ignored; fi
}

# count_cargo LOG: adds the results of the `cargo test` runs in LOG (each
# followed by a line "cargo-exit: N") to the totals (hack/cargo-summary.py).
count_cargo() {
  local counts
  counts=$(python3 "$ROOT/hack/cargo-summary.py" "$1") || { add_counts 0 1 0; return; }
  # shellcheck disable=SC2086
  add_counts $counts
}
