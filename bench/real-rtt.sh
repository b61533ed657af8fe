#!/usr/bin/env bash
# bench/real-rtt.sh: time to first output through a REAL CernVM-FS client with a
# cold cache behind ../shared/real-cvmfs/delayproxy.py (100 ms per request,
# BENCH_RTT_LATENCY), ours by name against `podman run --rootfs <flat>:O` on the
# same flat tree, interleaved run by run (issue 13 item 5; bench/README.md).
#
# Needs a configured repository (REAL_CVMFS_REPO, default test.local; see
# ../shared/real-cvmfs/README.md), root and build/bin/podman; without them it
# prints why and exits 0 (hack/bench.sh part `real`).
#
# The large bench image (BENCH_SCALE, default 0.1) is published once with
# `cvmfs-podman publish --cvmfs-transaction` (serialised on the publisher lock)
# into REPO/bench-rtt/large-<scale>-<seed>-v5 (REAL_RTT_NSDIR; -v5: the store
# layout with the indexes and the records in the store's catalog and the
# start links, `exec-N` and the top layer record's `start` link included,
# docs/store-format.md); REAL_RTT_KEEP=1 keeps it for the next run (which
# reuses it), else it is removed at the end (`ingest -d`). A directory
# published by an earlier version is reused as it is
# (REAL_RTT_NSDIR=bench-rtt/large-0.1-6-v4 times `exec-N` without the record's
# `start` link, -v3 the start links without `exec-N`, -v2 the layout before
# the start links, bench-rtt/large-0.1-6 the one before that).
#
# Each timed run: a new client with an empty cache mounted through the proxy,
# the page cache dropped, the client bound over /cvmfs/REPO (where the records
# point) in this script's private mount namespace, then one podman command;
# stopped at the first output. Alternatives:
#   rootfs      podman run --rootfs REPO/…/.flat/XX/<config>:O (storage overlay)
#   cvmfs       podman run <name> (storage cvmfs), fresh graphroot
#   cvmfs-warm  the same, graphroot kept from a run before (not timed, other
#               client): a user's second start after the client cache was emptied
# The proxy log of each run (requests until the first output) is split into
# catalogs (object names ending in C), data objects and the rest (manifest,
# whitelist, ...); the last run's requests are printed for each alternative,
# with the repository file each data object is (matched by the client's
# `user.hash` of the store files, the flat tree's entrypoint and busybox).
#
# Environment: BENCH_RUNS (5), BENCH_SCALE (0.1), BENCH_SEED (6),
# BENCH_RTT_LATENCY (100ms; ms only), REAL_RTT_PORT (3141), REAL_RTT_ALTS
# ("rootfs cvmfs cvmfs-warm"), REAL_RTT_KEEP=1, BENCH_KEEP=1 (work dir).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib-real-cvmfs.sh
source "$ROOT/hack/lib-real-cvmfs.sh"
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
REPO=${REAL_CVMFS_REPO:-test.local}
scale=${BENCH_SCALE:-0.1}
seed=${BENCH_SEED:-6}
runs=${BENCH_RUNS:-5}
lat=${BENCH_RTT_LATENCY:-100ms}
lat_ms=${lat%ms}
port=${REAL_RTT_PORT:-3141}
alts=${REAL_RTT_ALTS:-rootfs cvmfs cvmfs-warm}
PODMAN="$ROOT/build/bin/podman"
B="$ROOT/target/release/cvmfs-podman"
NSDIR=${REAL_RTT_NSDIR:-bench-rtt/large-$scale-$seed-v5}
DEST="/cvmfs/$REPO/$NSDIR"
G="$ROOT/build/bench/images/large-$scale-$seed"
log() { echo "$*" >&2; }
skip() {
  echo "real CVMFS round trips: skipped ($*)"
  exit 0
}

# ------------------------------------------------------------ host side: publish
if [ "${1:-}" != --inside ]; then
  [ "$(id -u)" -eq 0 ] || skip "must run as root"
  command -v cvmfs_server >/dev/null && command -v cvmfs2 >/dev/null || skip "no CernVM-FS installed (../shared/real-cvmfs/)"
  [ -d "/etc/cvmfs/repositories.d/$REPO" ] || skip "repository $REPO is not configured here (REAL_CVMFS_REPO)"
  [ -x "$PODMAN" ] || skip "no $PODMAN (make podman)"
  [[ "$lat_ms" =~ ^[0-9]+$ ]] || { log "BENCH_RTT_LATENCY must be N ms, not $lat"; exit 1; }
  curl -fsS -o /dev/null "http://127.0.0.1/cvmfs/$REPO/.cvmfspublished" ||
    skip "the stratum 0 of $REPO does not answer on 127.0.0.1 (apachectl start?)"
  cargo build --release --bin cvmfs-podman --quiet || { log "building cvmfs-podman failed"; exit 1; }
  if [ ! -f "$G/info.json" ]; then
    log "==> generating large (scale $scale, seed $seed)"
    rm -rf "$G"
    python3 bench/gen-image.py large "$G" --scale "$scale" --seed "$seed" >&2 || exit 1
  fi
  if [ ! -f "$G/oci/index.json" ]; then
    "$B" make-oci "$G/oci" --tag large "$G"/layer-*.tar >&2 || exit 1
  fi
  published=0
  if [ -f "$DEST/podmanStore/cvmfs-images/images.json" ]; then
    log "==> reusing $DEST"
  else
    log "==> publishing large ($scale) into $DEST (cvmfs-podman publish --cvmfs-transaction)"
    t0=$(date +%s.%N)
    "$B" publish -q --repo "$DEST" "oci:$G/oci:large" --name localhost/bench/large:1 \
      --cvmfs-transaction "$REPO" >&2 || { log "publish failed"; exit 1; }
    log "    took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
    published=1
  fi
  FLAT=$(ls -d "$DEST"/.flat/*/* 2>/dev/null | head -n 1)
  [ -n "$FLAT" ] || { log "no flat tree in $DEST/.flat"; exit 1; }
  export FLAT
  rc=0
  unshare --mount --propagation private -- "$0" --inside || rc=$?
  if [ "$published" = 1 ] && [ "${REAL_RTT_KEEP:-0}" != 1 ]; then
    log "==> removing $NSDIR from $REPO (REAL_RTT_KEEP=1 keeps it)"
    cvmfs_server ingest -d "$NSDIR" "$REPO" >/dev/null 2>&1 || log "    could not remove $NSDIR"
  fi
  exit $rc
fi

# ------------------------------------------------------------ inside a private mount namespace
# This namespace's copies of the server's mounts would pin them and block the
# next publish's remount: detach them here first (only in this namespace).
umount -l "/cvmfs/$REPO" 2>/dev/null
umount -l "/var/spool/cvmfs/$REPO/rdonly" 2>/dev/null
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || { log "cannot mount cgroup2"; exit 1; }
  grep -qw pids /sys/fs/cgroup/cgroup.controllers || export CONTAINERS_CONF_OVERRIDE="$ROOT/hack/cgroup2-nopids.conf"
fi
mkdir -p "/cvmfs/$REPO"

W=$(mktemp -d /tmp/real-rtt.XXXXXX)
MNT="$W/mnt"
PROXY_PID=""
PLOG="$W/proxy.log"
cleanup() {
  if mountpoint -q "/cvmfs/$REPO"; then umount -l "/cvmfs/$REPO"; fi
  if mountpoint -q "$MNT"; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  [ "${BENCH_KEEP:-0}" = 1 ] && log "work directory kept: $W" || rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$MNT"
python3 /work/shared/real-cvmfs/delayproxy.py --port "$port" --delay-ms "$lat_ms" --log "$PLOG" 2>"$W/proxy.err" &
PROXY_PID=$!
sleep 0.5
: >>"$PLOG"

client_up() { # CACHE: an empty-cache client at $MNT through the proxy, bound over /cvmfs/REPO
  local cache=$1
  rm -rf "$cache"
  mkdir -p "$cache"
  real_cvmfs_client_conf "$cache" "$REPO" "http://127.0.0.1:$port" CVMFS_KCACHE_TIMEOUT=60
  sync
  echo 3 >/proc/sys/vm/drop_caches
  cvmfs2 -o "config=$cache/client.conf,allow_other" "$REPO" "$MNT" >"$W/mount.log" 2>&1 ||
    { log "client mount failed: $(tail -n 2 "$W/mount.log")"; return 1; }
  mount --bind "$MNT" "/cvmfs/$REPO"
}
client_down() {
  umount "/cvmfs/$REPO" 2>/dev/null || umount -l "/cvmfs/$REPO"
  umount "$MNT" 2>/dev/null || umount -l "$MNT"
}

E="$ROOT/tests/e2e"
pm_env() { # ALT GRAPHDIR -> writes GRAPHDIR/storage.conf; prints the podman prefix
  local alt=$1 g=$2
  mkdir -p "$g/home/.config/containers" "$g/tmp"
  cp "$E/policy.json" "$g/home/.config/containers/policy.json"
  printf '[registries.search]\nregistries = []\n' >"$g/registries.conf"
  if [ "$alt" = rootfs ]; then
    printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$g/root" "$g/run" >"$g/storage.conf"
  else
    printf '[storage]\ndriver = "cvmfs"\ngraphroot = "%s"\nrunroot = "%s"\n[storage.options]\nadditionalimagestores = ["%s"]\n[storage.options.cvmfs]\nrepositories = "%s"\n' \
      "$g/root" "$g/run" "$DEST/podmanStore" "$DEST" >"$g/storage.conf"
  fi
  echo "env HOME=$g/home CONTAINERS_CONF=$E/containers.conf CONTAINERS_STORAGE_CONF=$g/storage.conf CONTAINERS_REGISTRIES_CONF=$g/registries.conf PODMAN_IGNORE_CGROUPSV1_WARNING=1 $PODMAN --tmpdir $g/tmp"
}

# one_run ALT N -> "first_s requests catalogs data other" and the run's proxy lines in $W/req-ALT-N.txt
one_run() {
  local alt=$1 n=$2 g="$W/g-$1" pm cmd t0 t1 mark first
  [ "$alt" = cvmfs-warm ] || g="$W/g-$alt-$n"
  pm=$(pm_env "$alt" "$g")
  local entry=/bench/run.sh until_first=1
  # The untimed warming run ends by itself (podman finishes what it does
  # after the start, as a user's run would).
  [ "$n" = 0 ] && entry="sh -c 'echo bench: started'" until_first=0
  if [ "$alt" = rootfs ]; then
    cmd="$pm run --name b --network none --rootfs $FLAT:O $entry"
  else
    cmd="$pm run --name b --network none localhost/bench/large:1 $entry"
  fi
  client_up "$W/cache" || { echo "- 0 0 0 0"; return; }
  mark=$(wc -l <"$PLOG")
  t0=$(date +%s.%N)
  MEASURE_UNTIL_FIRST=$until_first MEASURE_TIMEOUT=120 python3 bench/measure.py "bench: started" "$cmd" >"$W/m-$alt-$n.json"
  t1=$(date +%s.%N)
  first=$(jq -r '.first_s // "-"' "$W/m-$alt-$n.json")
  [ "$first" = - ] && log "    $alt run $n failed: $(jq -r .out "$W/m-$alt-$n.json" | tail -n 5)"
  # Requests answered by the time podman was stopped at the first output
  # (the proxy logs at the answer; measure.py starts its clock a little
  # after t0, so its first_s is no window to filter with).
  sleep 0.3
  tail -n "+$((mark + 1))" "$PLOG" | awk -v t0="$t0" -v t1="$t1" '$1 <= t1 {printf "%.3f %s %s %s\n", $1 - t0, $2, $3, $4}' >"$W/req-$alt-$n.txt"
  $pm rm -af -t 0 >/dev/null 2>&1
  client_down
  [ "$alt" = cvmfs-warm ] || rm -rf "$g"
  awk -v f="$first" '{ if ($4 ~ /\/data\/..\/[0-9a-f]+C$/) c++; else if ($4 ~ /\/data\//) d++; else o++ }
    END { printf "%s %d %d %d %d\n", f, NR, c, d, o }' "$W/req-$alt-$n.txt"
}

if [[ " $alts " == *" cvmfs-warm "* ]]; then
  log "==> warming the driver home of cvmfs-warm (one run, not timed)"
  one_run cvmfs-warm 0 >/dev/null
fi
declare -A F R C D O
for r in $(seq "$runs"); do
  for alt in $alts; do
    read -r f n c d o < <(one_run "$alt" "$r")
    log "    run $r $alt: first ${f}s, $n requests ($c catalogs, $d data, $o other)"
    F[$alt]+=" $f" R[$alt]+=" $n" C[$alt]+=" $c" D[$alt]+=" $d" O[$alt]+=" $o"
  done
done

# hash -> repository file, for the request lists: the store's files and the
# few files of the flat tree a start reads (a client without the proxy).
client_up "$W/cache-names" && {
  { find "$DEST/podmanStore" -type f; echo "$FLAT/bench/run.sh"; echo "$FLAT/bin/busybox"; } |
    while read -r f; do
      h=$(getfattr --only-values -n user.hash "$f" 2>/dev/null) && echo "${h%%-*} ${f#"$DEST"/}"
    done >"$W/names.txt"
  client_down
}
stats() { # values -> "median min max"
  printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "- - -"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    print m, v[1], v[NR] }'
}
label() {
  case $1 in
  rootfs) echo "run --rootfs .flat:O" ;;
  cvmfs) echo "**cvmfs: run by name, fresh driver home**" ;;
  cvmfs-warm) echo "**cvmfs: run by name, warm driver home**" ;;
  esac
}
echo
echo "### large image ($(jq -r '"\(.layers) layers, \(.files) files, \(.bytes / 1048576 | floor) MiB"' "$G/info.json")), real CernVM-FS $(cvmfs2 --version 2>&1 | grep -o '[0-9][0-9.]*' | head -n 1) client, empty cache, ${lat_ms} ms per request (delayproxy.py)"
echo
echo "| alternative | first output s (min–max) | x --rootfs | requests before first output (catalogs / data / other) |"
echo "|---|---|---|---|"
read -r base _ _ < <(stats ${F[rootfs]:-})
for alt in $alts; do
  read -r m lo hi < <(stats ${F[$alt]})
  read -r n _ _ < <(stats ${R[$alt]})
  read -r c _ _ < <(stats ${C[$alt]})
  read -r d _ _ < <(stats ${D[$alt]})
  read -r o _ _ < <(stats ${O[$alt]})
  f2() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }'; }
  printf '| %s | %s (%s–%s) | %s | %s (%s / %s / %s) |\n' "$(label "$alt")" "$(f2 "$m")" "$(f2 "$lo")" "$(f2 "$hi")" \
    "$(awk -v a="$m" -v b="$base" 'BEGIN { if (a == "-" || b == "-" || b == "") print "-"; else printf "%.2fx", a / b }')" "$n" "$c" "$d" "$o"
done
echo
echo "Requests of the last run of each (seconds after podman started, status, bytes, object; C = catalog):"
for alt in $alts; do
  echo
  echo "- $(label "$alt"):"
  echo '```'
  awk 'NR == FNR { name[$1] = $2; next }
    { h = $4; sub(/.*\/data\//, "", h); sub(/\//, "", h); k = h; sub(/[A-Z]$/, "", k)
      print $0 (k in name ? "  " name[k] : "") }' "$W/names.txt" "$W/req-$alt-$runs.txt"
  echo '```'
done
