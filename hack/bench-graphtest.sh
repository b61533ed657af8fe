#!/usr/bin/env bash
# `make bench-graphtest`: every DriverBench* benchmark of the storage module's
# drivers/graphtest for cvmfs, overlay and vfs, in one test binary (one run),
# printed as a markdown table with the ratio cvmfs/overlay (target: <= 1.2x);
# then the memory the driver adds to the containers-storage CLI: max RSS of
# `containers-storage layers` on a 100-layer store, cvmfs vs overlay and vfs
# (target: < 10 MiB more).
#
#   BENCHTIME=2s hack/bench-graphtest.sh     longer runs per benchmark (go test -benchtime)
#   BENCHCOUNT=5                             repetitions (median, with min–max)
set -euo pipefail
source "$(dirname "$0")/lib-storage.sh"

benchtime=${BENCHTIME:-0.5s}
count=${BENCHCOUNT:-5}
layers=${RSS_LAYERS:-100}
ratio_target=1.2
rss_target_kib=$((10 * 1024))

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-graphtest: must run as root (overlay mounts)" >&2
  exit 1
fi

"$ROOT/hack/build-lib.sh" >&2
pin_rust_lib
"$ROOT/hack/gen-patches.sh" --check >&2
module=$("$ROOT/hack/patched-storage.sh")
out="$ROOT/build/bench"
mkdir -p "$out"

# --- DriverBench* for the three drivers --------------------------------------
bench_file="$module/drivers/cvmfs/zz_bench_compare_test.go"
cp "$ROOT/tests/go/bench_compare_test.go" "$bench_file"
trap 'rm -f "$bench_file"' EXIT
echo "bench-graphtest: go test -bench BenchmarkCompare -benchtime $benchtime -count $count" >&2
set +e
(cd "$module" && go test -count="$count" -run '^$' -bench '^BenchmarkCompare' -benchtime "$benchtime" \
  -timeout 60m ./drivers/cvmfs/) | tee "$out/graphbench.txt"
bench_rc=${PIPESTATUS[0]}
set -e
rm -f "$bench_file"

# --- RSS of the CLI on a 100-layer store -----------------------------------
binary="$ROOT/build/containers-storage"
(cd "$module" && go build -o "$binary" ./cmd/containers-storage)
# The same CLI from the pristine module (no cvmfs driver, no Rust core linked
# in) shows what merely linking the driver costs overlay users.
pristine_binary="$ROOT/build/containers-storage-pristine"
(cd "$(pristine_module_dir)" && go build -o "$pristine_binary" ./cmd/containers-storage)
rss_root=$(mktemp -d /var/tmp/cvmfs-rss.XXXXXX)
cleanup_rss() {
  for d in cvmfs overlay vfs; do
    "$binary" --graph "$rss_root/$d/root" --run "$rss_root/$d/run" --storage-driver "$d" shutdown >/dev/null 2>&1 || true
  done
  rm -rf "$rss_root"
}
trap 'rm -f "$bench_file"; cleanup_rss' EXIT
for d in cvmfs overlay vfs; do
  parent=""
  for _ in $(seq "$layers"); do
    parent=$("$binary" --graph "$rss_root/$d/root" --run "$rss_root/$d/run" --storage-driver "$d" \
      create-layer $parent)
  done
done

python3 - "$binary" "$rss_root" "$out/graphbench.txt" "$ratio_target" "$rss_target_kib" "$layers" "$pristine_binary" <<'EOF'
import os, re, statistics, subprocess, sys
binary, rss_root, bench_path, ratio_target, rss_target, layers, pristine = sys.argv[1:8]
ratio_target, rss_target = float(ratio_target), int(rss_target)
drivers = ["cvmfs", "overlay", "vfs"]

# Benchmark lines: "BenchmarkCompareExists/cvmfs-2   10   12345 ns/op ..."
times = {}
for line in open(bench_path):
    m = re.match(r"^BenchmarkCompare(\w+)/(\w+)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op", line)
    if m:
        times.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(float(m.group(3)))

def fmt(ns):
    return f"{ns / 1e6:.3f} ms" if ns >= 1e5 else f"{ns / 1e3:.2f} µs"

print()
print("| benchmark (median of the runs, min–max) | cvmfs | overlay | vfs | cvmfs/overlay (medians) |")
print("|---|---:|---:|---:|---:|")
worst = 0.0
missing = []
for bench, per in times.items():
    med = {d: statistics.median(per[d]) for d in drivers if d in per}
    cells = [
        f"{fmt(med[d])} ({fmt(min(per[d]))}–{fmt(max(per[d]))})" if d in med else "n/a"
        for d in drivers
    ]
    if "cvmfs" in med and "overlay" in med:
        ratio = med["cvmfs"] / med["overlay"]
        worst = max(worst, ratio)
        mark = "" if ratio <= ratio_target else " ⚠"
        cells.append(f"{ratio:.2f}x{mark}")
    else:
        missing.append(bench)
        cells.append("n/a")
    print(f"| {bench} | " + " | ".join(cells) + " |")
print()
print(f"worst cvmfs/overlay ratio: {worst:.2f}x (target <= {ratio_target}x)")

# Max RSS of `containers-storage layers`, median of 5 runs per driver: wait4
# gives each child's own peak RSS (KiB on Linux).
def child_rss(driver, binary=binary):
    samples = []
    for _ in range(5):
        p = subprocess.Popen([binary, "--graph", f"{rss_root}/{driver}/root", "--run",
                              f"{rss_root}/{driver}/run", "--storage-driver", driver, "layers"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = p.stdout.read()  # small: one line per layer
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = status
        if status != 0:
            sys.exit(f"bench-graphtest: `containers-storage --storage-driver {driver} layers` failed ({status})")
        n = len(out.splitlines())
        if n != int(layers):
            sys.exit(f"bench-graphtest: the {driver} store lists {n} layers, expected {layers}")
        samples.append(ru.ru_maxrss)
    return statistics.median(samples), min(samples), max(samples)

def mib_range(r):
    return f"{r[0] / 1024:.1f} MiB ({r[1] / 1024:.1f}–{r[2] / 1024:.1f})"

rss_runs = {d: child_rss(d) for d in drivers}
rss = {d: r[0] for d, r in rss_runs.items()}
pristine_runs = child_rss("overlay", pristine)
pristine_overlay = pristine_runs[0]
size = {"patched": os.path.getsize(binary), "pristine": os.path.getsize(pristine)}
print()
print(f"| containers-storage layers, {layers}-layer store | max RSS, median of 5 (min–max) |")
print("|---|---:|")
for d in drivers:
    print(f"| {d} | {mib_range(rss_runs[d])} |")
print(f"| overlay, pristine CLI (no cvmfs linked in) | {mib_range(pristine_runs)} |")
added = rss["cvmfs"] - rss["overlay"]
print()
print(f"RSS added by the cvmfs driver vs overlay in the same CLI: {added / 1024:+.1f} MiB "
      f"(vs vfs: {(rss['cvmfs'] - rss['vfs']) / 1024:+.1f} MiB; "
      f"vs the pristine CLI with overlay: {(rss['cvmfs'] - pristine_overlay) / 1024:+.1f} MiB; "
      f"target < {rss_target / 1024:.0f} MiB)")
print(f"CLI binary size: {size['patched'] / 2**20:.1f} MiB with the driver, "
      f"{size['pristine'] / 2**20:.1f} MiB pristine")
rss_ok = max(added, rss["cvmfs"] - pristine_overlay) < rss_target
if not rss_ok:
    print("bench-graphtest: the driver adds more RSS than the target")
if missing:
    sys.exit(f"bench-graphtest: no cvmfs/overlay result for: {', '.join(missing)}")
if not times:
    sys.exit("bench-graphtest: no benchmark results")
if not rss_ok:
    sys.exit(1)
EOF
if [ "$bench_rc" -ne 0 ]; then
  echo "bench-graphtest: some benchmarks failed (see above)" >&2
  exit 1
fi
