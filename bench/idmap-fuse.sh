#!/usr/bin/env bash
# bench/idmap-fuse.sh: what the ID-mappable pass-through (cvmfs-idmap-fuse,
# docs/rootless.md) costs over reading a CVMFS client mount directly.
#
#   bench/idmap-fuse.sh [CLIENT_MOUNT [SUBDIR]]   (as root)
#
# Three ways to read the same tree, alternated run by run, page cache dropped
# before each: the client mount itself, cvmfs-idmap-fuse over it, and
# cvmfs-idmap-fuse -passthrough over it. Each run times a metadata walk
# (find: lookups and stats) and reading every regular file (cat). Prints one
# markdown table: median (min-max) seconds of BENCH_RUNS (default 5) runs.
# Default tree: /var/spool/cvmfs/test.local/rdonly/.layers (the real-cvmfs
# suite's repository; the plain client mount, so passthrough may stack).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"
client=${1:-/var/spool/cvmfs/test.local/rdonly}
sub=${2:-.layers}
runs=${BENCH_RUNS:-5}
die() { echo "bench-idmap-fuse: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (drops the page cache, mounts FUSE)"
[ -d "$client/$sub" ] || die "$client/$sub: not a directory"
make -s -C "$ROOT" idmap-fuse >/dev/null || die "building cvmfs-idmap-fuse failed"

W=$(mktemp -d /tmp/bench-idmap-fuse.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  umount -l "$W/view" "$W/pass" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/view" "$W/pass"
"$ROOT/build/bin/cvmfs-idmap-fuse" "$client" "$W/view" 2>"$W/view.log" & pids+=($!)
"$ROOT/build/bin/cvmfs-idmap-fuse" -passthrough "$client" "$W/pass" 2>"$W/pass.log" & pids+=($!)
for m in view pass; do
  for _ in $(seq 50); do mountpoint -q "$W/$m" && break; sleep 0.1; done
  mountpoint -q "$W/$m" || die "cvmfs-idmap-fuse ($m) did not mount: $(cat "$W/$m.log")"
done

one() { # DIR -> "walk_s read_s"
  sync
  echo 3 >/proc/sys/vm/drop_caches
  local t0 t1 t2
  t0=$(date +%s.%N)
  find "$1" -xdev >/dev/null 2>&1
  t1=$(date +%s.%N)
  find "$1" -xdev -type f -exec cat {} + >/dev/null 2>&1
  t2=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%.3f %.3f", b - a, c - b }'
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END { printf "%.2f (%.2f–%.2f)", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'; }

declare -A walk read
for r in $(seq "$runs"); do
  for m in client view pass; do
    case $m in client) d="$client/$sub" ;; view) d="$W/view/$sub" ;; pass) d="$W/pass/$sub" ;; esac
    read -r w rd <<<"$(one "$d")"
    walk[$m]+="$w " read[$m]+="$rd "
    echo "run $r $m: walk ${w}s read ${rd}s" >&2
  done
done
files=$(find "$client/$sub" -xdev -type f | wc -l)
bytes=$(du -s --apparent-size -B1M "$client/$sub" | cut -f1)
echo "| read through | metadata walk s | read all files s |"
echo "|---|---|---|"
for m in client view pass; do
  case $m in client) n="the CVMFS client mount" ;; view) n="cvmfs-idmap-fuse" ;; pass) n="cvmfs-idmap-fuse -passthrough" ;; esac
  # shellcheck disable=SC2086
  echo "| $n | $(median ${walk[$m]}) | $(median ${read[$m]}) |"
done
echo
echo "$client/$sub: $files files, $bytes MiB; median (min–max) of $runs runs alternated, page cache dropped before each; load $(cut -d' ' -f1-3 /proc/loadavg)."
