#!/usr/bin/env bash
# `make test-bats`: the storage module's own CLI suite (tests/*.bats) with
# STORAGE_DRIVER=cvmfs, using its containers-storage CLI built from the patched
# module (the Rust core linked in statically) -- the storage release of the
# primary podman line (hack/versions.env); PODMAN_LINE=5 for the 5.8 line's.
#
# Every case that does not pass (failed or skipped) must be listed, with its
# reason, in tests/bats-known-failures.txt ("file.bats: test name — reason"),
# and at least 90% of all cases must pass. Ends with
# "N passed, N failed, N skipped".
#
#   hack/test-bats.sh [file.bats ...]   run only these files of the suite
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"

known_file="$ROOT/tests/bats-known-failures.txt"
min_pass_percent=90

if [ "$(id -u)" -ne 0 ]; then
  echo "test-bats: must run as root (the driver mounts overlayfs)" >&2
  summary_line 0 1 0
  exit 1
fi
command -v bats >/dev/null || { echo "test-bats: bats is missing (make deps)" >&2; summary_line 0 1 0; exit 1; }

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
  echo "test-bats: $binary links libcvmfs_graphdriver dynamically; expected the static library" >&2
  summary_line 0 1 0
  exit 1
fi
env -u LD_LIBRARY_PATH "$binary" version >/dev/null

files=("$@")
if [ "${#files[@]}" -eq 0 ]; then
  files=()
  for f in "$module"/tests/*.bats; do files+=("$(basename "$f")"); done
fi

logs="$ROOT/build/test-logs/bats"
rm -rf "$logs"
mkdir -p "$logs"
results="$logs/results.txt" # "<status>\t<file>\t<name>" per case
: >"$results"
for f in "${files[@]}"; do
  echo "==> $f"
  # One bats run per file so every case is known by file and name.
  (cd "$module/tests" && env -u LD_LIBRARY_PATH STORAGE_DRIVER=cvmfs STORAGE_BINARY="$binary" \
    bats --tap "$f") >"$logs/$f.tap" 2>&1 || true
  # Case results, and for failures the suite's diagnostics (without the CLI's
  # debug log, which stays in build/test-logs/bats/<file>.tap).
  awk '/^(ok|not ok) /{print; show=($1=="not"); n=0; next}
       show && /^#/ && !/level=debug/ && n<20 {print; n++}' "$logs/$f.tap"
  python3 - "$f" "$logs/$f.tap" >>"$results" <<'EOF'
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
  if ! grep -q "	$f	" "$results"; then
    # A file whose cases never ran (syntax error, missing helper) is a failure.
    printf 'fail\t%s\t%s\n' "$f" "(the file ran no cases)" >>"$results"
  fi
done

python3 - "$results" "$known_file" "$min_pass_percent" <<'EOF'
import sys
results_path, known_path, min_pct = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [l.rstrip("\n").split("\t", 2) for l in open(results_path) if l.strip()]
known = {}
for line in open(known_path):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    case, sep, reason = line.partition(" — ")
    if not sep or not reason.strip():
        sys.exit(f"test-bats: {known_path}: every line needs 'file.bats: name — reason': {line!r}")
    known[case.strip()] = reason.strip()
passed = [r for r in rows if r[0] == "pass"]
failed = [r for r in rows if r[0] == "fail"]
skipped = [r for r in rows if r[0] == "skip"]
unexpected = [r for r in failed + skipped if f"{r[1]}: {r[2]}" not in known]
fixed = [r for r in passed if f"{r[1]}: {r[2]}" in known]
total = len(rows)
pct = 100 * len(passed) / total if total else 0
print()
for r in failed:
    key = f"{r[1]}: {r[2]}"
    print(f"  failed: {key}" + (f"  (known: {known[key]})" if key in known else "  (NOT in tests/bats-known-failures.txt)"))
for r in skipped:
    key = f"{r[1]}: {r[2]}"
    print(f"  skipped: {key}" + (f"  (known: {known[key]})" if key in known else "  (NOT in tests/bats-known-failures.txt)"))
for r in fixed:
    print(f"  note: {r[1]}: {r[2]} passes now; remove it from tests/bats-known-failures.txt")
ok = True
if unexpected:
    print(f"test-bats: {len(unexpected)} failing or skipped case(s) are not listed in tests/bats-known-failures.txt")
    ok = False
if pct < min_pct:
    print(f"test-bats: pass rate {pct:.1f}% is below {min_pct}%")
    ok = False
else:
    print(f"test-bats: pass rate {pct:.1f}% ({len(passed)}/{total})")
print(f"{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped")
sys.exit(0 if ok and total else 1)
EOF
