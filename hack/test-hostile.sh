#!/usr/bin/env bash
# make test-hostile: every hostile input of crates/publisher/tests/hostile (tar streams, records,
# registry responses, C ABI calls, publisher races), one line per case, ending
# "hostile: N passed, N failed, N skipped". Cases that need root report SKIP
# without it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
log=build/test-hostile
mkdir -p "$log"
if ! cargo test --no-run --test hostile >"$log/build.txt" 2>&1; then
  tail -40 "$log/build.txt" >&2
  echo "hostile: 0 passed, 1 failed, 0 skipped"
  exit 1
fi
cargo test --quiet --test hostile -- "$@" 2>&1 | tee "$log/run.txt"
rc=${PIPESTATUS[0]}
grep -qE '^hostile: [0-9]+ passed' "$log/run.txt" || { echo "hostile: 0 passed, 1 failed, 0 skipped"; exit 1; }
exit "$rc"
