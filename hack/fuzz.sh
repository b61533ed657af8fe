#!/usr/bin/env bash
# make fuzz: run every cargo-fuzz target for FUZZ_SECONDS (default 60) each, or
# only the targets named as arguments. Not part of make test (it never ends by
# itself without a time limit); make test replays fuzz/regressions/ instead.
# A failing input is copied to fuzz/regressions/<target>/ so the replay keeps it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
toolchain=+nightly
rustup toolchain list | grep -q '^nightly' || toolchain=""
[ -n "$toolchain" ] || export RUSTC_BOOTSTRAP=1   # cargo fuzz needs -Z flags
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo "$toolchain" fuzz list 2>/dev/null)
passed=0 failed=0
for t in "${targets[@]}"; do
  echo "==> fuzz $t for ${seconds}s"
  corpus=build/fuzz-corpus/$t
  mkdir -p "$corpus" "fuzz/regressions/$t"
  if (cd fuzz && cargo $toolchain fuzz run "$t" "../$corpus" "../fuzz/regressions/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=65536); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    for a in fuzz/artifacts/"$t"/*; do
      [ -f "$a" ] && cp "$a" "fuzz/regressions/$t/" && echo "saved $a to fuzz/regressions/$t/"
    done
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
