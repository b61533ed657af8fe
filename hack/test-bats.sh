#!/usr/bin/env bash
# `make test-bats`: the storage module's own CLI suite (tests/*.bats) with
# STORAGE_DRIVER=cvmfs, using its containers-storage CLI built from the patched
# module (the Rust core linked in statically) -- the storage release of the
# primary podman line (hack/versions.env); PODMAN_LINE=5 for the 5.8 line's.
#
# Every case runs through hack/lib-test.sh as "file.bats: test name": one that
# does not pass (failed or skipped) must be listed, with its reason, in
# tests/bats-known-failures.txt ("file.bats: test name — reason"), and at
# least 90% of all cases must pass. Ends with "N passed, N failed, N skipped".
#
# The project's own tests/harness/*.bats (the rules of hack/lib-test.sh) run
# here too, as "harness/<file>: name".
#
#   hack/test-bats.sh [file.bats ...]   run only these files of the suite
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"
source "$ROOT/hack/lib-test.sh"

logs="$ROOT/build/test-logs/bats"
rm -rf "$logs"
test_init test-bats "$ROOT/tests/bats-known-failures.txt" "$logs"
min_pass_percent=90

[ "$(id -u)" -eq 0 ] || die "must run as root (the driver mounts overlayfs)"
command -v bats >/dev/null || die "bats is missing (make deps)"

"$ROOT/hack/build-lib.sh" >&2
pin_rust_lib
"$ROOT/hack/gen-patches.sh" --check >&2
module=$("$ROOT/hack/patched-storage.sh")
echo "test-bats: $STORAGE_MODULE@$STORAGE_VERSION (podman line $PODMAN_LINE)"

# The primary line's CLI is build/containers-storage (test-publish.sh uses it
# too); another line's is named after its storage release.
binary="$ROOT/build/containers-storage"
[ "$PODMAN_LINE" = "$DEFAULT_PODMAN_LINE" ] || binary+="-$STORAGE_VERSION"
(cd "$module" && go build -o "$binary" ./cmd/containers-storage)
# The Rust core must be linked in: the binary may not need the shared library.
if ldd "$binary" | grep -q cvmfs_graphdriver; then
  die "$binary links libcvmfs_graphdriver dynamically; expected the static library"
fi
env -u LD_LIBRARY_PATH "$binary" version >/dev/null

files=("$@")
if [ "${#files[@]}" -eq 0 ]; then
  files=()
  for f in "$module"/tests/*.bats; do files+=("$(basename "$f")"); done
else
  TEST_PARTIAL=1
fi
# The known-failures file serves both storage releases: a line for a file this
# release does not have (overlay-recreate.bats in v1.63) is not stale.
known_failure_applies() { [ -f "$module/tests/${1%%: *}" ]; }
results="$logs/results.txt" # "<status>\t<file>\t<name>" per case
: >"$results"

# bats_file DIR FILE LABEL [VAR=VALUE...]: one bats run of DIR/FILE (so every
# case is known by file and name), its cases appended to $results as LABEL.
bats_file() {
  local dir=$1 f=$2 label=$3 tap
  shift 3
  tap="$logs/$(tr / - <<<"$label").tap"
  echo "==> $label"
  (cd "$dir" && env -u LD_LIBRARY_PATH "$@" bats --tap "$f") >"$tap" 2>&1 || true
  # Case results, and for failures the suite's diagnostics (without the CLI's
  # debug log, which stays in build/test-logs/bats/<file>.tap).
  awk '/^(ok|not ok) /{print; show=($1=="not"); n=0; next}
       show && /^#/ && !/level=debug/ && n<20 {print; n++}' "$tap"
  python3 - "$label" "$tap" >>"$results" <<'EOF'
import re, sys
name, path = sys.argv[1], sys.argv[2]
for line in open(path, errors="replace"):
    # "ok 3 name", "not ok 3 name", "ok 3 name # skip reason"
    m = re.match(r"^(not ok|ok) \d+ (.*?)( # skip\b.*)?$", line.rstrip("\n"))
    if not m:
        continue
    status = "fail" if m.group(1) == "not ok" else ("skip" if m.group(3) else "pass")
    print(f"{status}\t{name}\t{m.group(2)}")
EOF
  if ! grep -q "	$label	" "$results"; then
    # A file whose cases never ran (syntax error, missing helper) is a failure.
    printf 'fail\t%s\t%s\n' "$label" "(the file ran no cases)" >>"$results"
  fi
}

for f in "${files[@]}"; do
  bats_file "$module/tests" "$f" "$f" STORAGE_DRIVER=cvmfs STORAGE_BINARY="$binary"
done
# The project's own .bats files: the shell harness's rules (hack/lib-test.sh).
for f in "$ROOT"/tests/harness/*.bats; do
  bats_file "$ROOT/tests/harness" "$(basename "$f")" "harness/$(basename "$f")"
done

# Every case through the one harness (known failures, stale lines).
while IFS=$'\t' read -r status file name; do
  record_result "$file: $name" "$status"
done <"$results"
total=$((TEST_PASSED + TEST_FAILED + TEST_SKIPPED))
if [ "$total" -gt 0 ]; then
  pct=$((100 * TEST_PASSED / total))
  echo "test-bats: pass rate $pct% ($TEST_PASSED/$total)"
  if [ "$pct" -lt "$min_pass_percent" ]; then
    echo "test-bats: pass rate $pct% is below $min_pass_percent%"
    add_counts 0 1 0
  fi
else
  echo "test-bats: no case ran"
  add_counts 0 1 0
fi
summary
