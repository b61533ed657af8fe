#!/usr/bin/env bash
# make bench: every benchmark of the project in one run, one markdown document
# printed and written to bench/results.md with the date, machine and versions:
#   1. bench/run.sh          cold start against the alternatives (bench/README.md)
#   2. hack/bench-graphtest.sh  DriverBench* cvmfs vs overlay vs vfs, driver RSS
#   3. hack/bench-publish.sh    publisher throughput vs skopeo copy + umoci unpack
#   4. bench/run.sh again       cold start with a published start-up profile
#                               (--rootfs, ours without, with, with a stale one)
#   5. hack/bench-owners.sh     owner restoration on a claim-ownership client
#   6. bench/run.sh again       round trips before the first output: the large
#                               image, --rootfs and ours, 100 ms per request
#                               (BENCH_RTT_LATENCY), runs stopped at the first output
#                               twice: fuselat as before (content fetches only)
#                               and with its catalog model (BENCH_CATALOGS=1)
#   7. bench/real-rtt.sh        the same through a real CernVM-FS client behind
#                               delayproxy.py (skipped without one; large image
#                               at BENCH_REAL_SCALE, default 0.1)
#   8. bench/rootless.sh        rootless / rootful time to first output (issue 15)
# BENCH_* variables (bench/run.sh) pass through; BENCH_ONLY="cold graphtest
# publish profile owners rtt real rootless" picks parts (then bench/results.md is left alone). Progress goes to
# stderr, logs to build/bench/.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
only=${BENCH_ONLY:-cold graphtest publish profile owners rtt real rootless}
L="$ROOT/build/bench"
mkdir -p "$L"
out="$L/results.md"
rc=0

version() { "$@" 2>/dev/null | head -n 1; }
{
  echo "# Benchmark results"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)"
  echo "- project: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates bench hack go-bindings || echo ' (with uncommitted changes)')"
  echo "- podman: $(version build/bin/podman --version) (patched, hack/versions.env); runc: $(version runc --version); fuse-overlayfs: $(fuse-overlayfs --version 2>/dev/null | sed -n "s/^fuse-overlayfs: //p" | head -n 1); skopeo: $(version skopeo --version)"
  echo "- kernel overlayfs for overlay and cvmfs; every figure is the median of the runs with min–max, ratios against the fastest alternative of the same table"
  echo "- settings: BENCH_SCALE=${BENCH_SCALE:-1} BENCH_RUNS=${BENCH_RUNS:-5} BENCH_SEED=${BENCH_SEED:-6} BENCH_LATENCY=${BENCH_LATENCY:-2ms} BENCH_BANDWIDTH=${BENCH_BANDWIDTH:-1000}"
  echo
} >"$out"

# go test's raw benchmark lines stay in build/bench/*.out; the document gets the tables.
tables() { grep -vE '^(Benchmark|goos:|goarch:|pkg:|cpu:|PASS$|ok  )' "$1"; }

part() { # TITLE LOG COMMAND...: run, append its stdout (the tables) to the results
  local title=$1 log=$2
  shift 2
  echo "==> $title" >&2
  {
    echo "## $title"
    echo
  } >>"$out"
  if "$@" >"$L/$log.out" 2>"$L/$log.err"; then
    tables "$L/$log.out" >>"$out"
  else
    rc=1
    tables "$L/$log.out" >>"$out"
    {
      echo
      echo "**failed** (exit status; last lines of build/bench/$log.err):"
      echo '```'
      tail -n 15 "$L/$log.err"
      echo '```'
    } >>"$out"
    tail -n 15 "$L/$log.err" >&2
  fi
  echo >>"$out"
}

for p in $only; do
  case $p in
  cold) part "Cold start against the alternatives (bench/run.sh)" cold bench/run.sh ;;
  graphtest) part "Driver operations: DriverBench* (hack/bench-graphtest.sh)" graphtest hack/bench-graphtest.sh ;;
  publish) part "Publisher throughput (hack/bench-publish.sh)" publish hack/bench-publish.sh ;;
  owners) part "Owner restoration on a claim-ownership client (hack/bench-owners.sh, issue 13)" owners hack/bench-owners.sh ;;
  profile) part "Cold start with a published profile (bench/run.sh, issue 16)" profile \
    env BENCH_ALTS="rootfs cvmfs cvmfs-profile cvmfs-stale" bench/run.sh ;;
  rtt)
    part "Time to first output with ${BENCH_RTT_LATENCY:-100ms} per request, content fetches only (bench/run.sh, issue 13 item 5; runs stopped at the first output, so exit = first output)" rtt \
      env BENCH_ALTS="rootfs cvmfs cvmfs-warm" BENCH_IMAGES=large BENCH_VIEWS=fuse BENCH_LATENCY="${BENCH_RTT_LATENCY:-100ms}" \
      MEASURE_UNTIL_FIRST=1 bench/run.sh
    part "Time to first output with ${BENCH_RTT_LATENCY:-100ms} per request, catalog loads modelled too (bench/run.sh with BENCH_CATALOGS=1, calibrated in bench/README.md)" rtt-catalogs \
      env BENCH_CATALOGS=1 BENCH_ALTS="rootfs cvmfs cvmfs-warm" BENCH_IMAGES=large BENCH_VIEWS=fuse BENCH_LATENCY="${BENCH_RTT_LATENCY:-100ms}" \
      MEASURE_UNTIL_FIRST=1 bench/run.sh
    ;;
  real) part "Time to first output through a real CernVM-FS client, ${BENCH_RTT_LATENCY:-100ms} per request (bench/real-rtt.sh, issue 13 item 5)" real \
    env BENCH_SCALE="${BENCH_REAL_SCALE:-0.1}" bench/real-rtt.sh ;;
  rootless) part "Rootless against rootful (bench/rootless.sh, issue 15)" rootless bench/rootless.sh ;;
  *) echo "bench: unknown part $p" >&2; rc=1 ;;
  esac
done
cat "$out"
# bench/results.md holds complete runs only.
if [ -z "${BENCH_ONLY:-}" ]; then
  cp "$out" "$ROOT/bench/results.md"
else
  echo "bench: BENCH_ONLY set: results in $out only" >&2
fi
exit $rc
