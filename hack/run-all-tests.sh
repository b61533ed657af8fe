#!/usr/bin/env bash
# `make test`: every suite in turn. Each suite ends with its own
# "N passed, N failed[, N skipped]" line; this script adds them up and prints
# the grand total as its last line, failing if any suite failed or printed no
# summary (a suite that ran nothing is a failure, not a green run).
set -uo pipefail
cd "$(dirname "$0")/.."

suites=(test-rust test-lint test-hostile test-graphtest test-bats test-publish test-cvmfs test-e2e test-e2e-5 test-rootless)
total_pass=0 total_fail=0 total_skip=0 broken=() timings=()
all_start=$SECONDS
log_dir=build/test-logs
mkdir -p "$log_dir"

for suite in "${suites[@]}"; do
  echo "==> make $suite"
  start=$SECONDS
  make --no-print-directory "$suite" 2>&1 | tee "$log_dir/$suite.log"
  rc=${PIPESTATUS[0]}
  timings+=("$(printf '%-16s %5ds' "$suite" "$((SECONDS - start))")")
  summary=$(grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$log_dir/$suite.log" | tail -n 1)
  if [ -z "$summary" ]; then
    echo "==> $suite printed no summary line (exit $rc)"
    broken+=("$suite")
    continue
  fi
  p=$(sed -E 's/.*\b([0-9]+) passed.*/\1/' <<<"$summary")
  f=$(sed -E 's/.*\b([0-9]+) failed.*/\1/' <<<"$summary")
  s=0
  grep -q skipped <<<"$summary" && s=$(sed -E 's/.*\b([0-9]+) skipped.*/\1/' <<<"$summary")
  total_pass=$((total_pass + p)) total_fail=$((total_fail + f)) total_skip=$((total_skip + s))
  echo "==> $suite: $summary (exit $rc, $((SECONDS - start))s)"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    broken+=("$suite")
  fi
done

echo "==> time per suite (the first run on a cold machine includes its builds):"
printf '    %s\n' "${timings[@]}"
printf '    %-16s %5ds\n' total "$((SECONDS - all_start))"
if [ "${#broken[@]}" -gt 0 ]; then
  echo "==> suites that failed without a counted failure: ${broken[*]}"
  total_fail=$((total_fail + ${#broken[@]}))
fi
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
