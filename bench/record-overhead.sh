#!/usr/bin/env bash
# bench/record-overhead.sh: what recording a start-up profile costs (issue 16).
# Recording may be slower than a plain run; running afterwards, with the
# recorded profile published, must not be. On the plain repository directory
# (no latency), for each image, interleaved run by run:
#
#   plain    podman --storage-driver cvmfs … run --rm IMG /bench/run.sh
#   record   cvmfs-podman profile record IMG -- /bench/run.sh
#            (the same podman run, in a private mount namespace, through
#            bench/fuselat without delay, then the log turned into a profile)
#   profile  the plain run again, with the profile recorded by the first
#            `record` run published (the driver prefetches it)
#
# Prints one markdown table per image (median of BENCH_RUNS with min–max).
#
# Environment: BENCH_SCALE=0.1 BENCH_SEED=6 BENCH_RUNS=5 BENCH_IMAGES=large
#   BENCH_DROP_CACHES=1 (drop the page cache before each run)
#   BENCH_SKIP_BUILD=1 (use target/release/cvmfs-podman and build/bench/fuselat as they are)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"

scale=${BENCH_SCALE:-0.1}
seed=${BENCH_SEED:-6}
runs=${BENCH_RUNS:-5}
images=${BENCH_IMAGES:-large}
drop=${BENCH_DROP_CACHES:-1}

die() { echo "record-overhead: $*" >&2; exit 1; }
log() { echo "$*" >&2; }
[ "$(id -u)" -eq 0 ] || die "must run as root (podman mounts, FUSE)"
# shellcheck source=hack/lib-cgroup2.sh
source "$ROOT/hack/lib-cgroup2.sh"
reexec_primary_with_cgroup2 "$0" "$@" || die "podman cannot run on this host"

L="$ROOT/build/bench"
PODMAN="$ROOT/build/bin/podman"
B="$ROOT/target/release/cvmfs-podman"
TAP="$L/fuselat"
[ -x "$PODMAN" ] || die "$PODMAN missing (make podman)"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --bin cvmfs-podman --quiet || die "building cvmfs-podman failed"
  (cd bench/fuselat && GOFLAGS=-mod=mod go build -o "$TAP" .) || die "building fuselat failed"
fi

W=$(mktemp -d /tmp/record-overhead.XXXXXX)
R="$W/repo"
cleanup() {
  grep -o " $W[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT
E="$ROOT/tests/e2e"

publish_image() { # IMG: generated (cached in build/bench/images), published into $R
  local img=$1 G="$L/images/$1-$scale-$seed"
  if [ ! -f "$G/info.json" ]; then
    log "==> generating $img (scale $scale, seed $seed)"
    rm -rf "$G"
    python3 bench/gen-image.py "$img" "$G" --scale "$scale" --seed "$seed" >&2 || die "generating $img failed"
  fi
  if [ ! -f "$G/oci/index.json" ]; then
    "$B" make-oci "$G/oci" --tag "$img" "$G"/layer-*.tar >&2 || die "make-oci $img failed"
  fi
  log "==> publishing $img into $R"
  "$B" publish "oci:$G/oci:$img" --name "localhost/bench/$img:1" --repo "$R" -q >&2 || die "publishing $img failed"
}

# The podman command line of `profile record` (crates/publisher/src/bin/
# cvmfs-podman/profile_cmd.rs), in the run directory $1, without the tap.
podman_cmd() {
  echo "env HOME=$1/home CONTAINERS_CONF=$E/containers.conf PODMAN_IGNORE_CGROUPSV1_WARNING=1" \
    "$PODMAN --root $1/root --runroot $1/run --tmpdir $1/tmp --storage-driver cvmfs" \
    "--storage-opt cvmfs.imagestore=$R/podmanStore --storage-opt cvmfs.repositories=$R"
}

# one_run IMG ALT N: prints "first_s exit_s rc tap_s" (tap_s: record only, else -)
one_run() {
  local img=$1 alt=$2 ref="localhost/bench/$1:1" C="$W/run/$1-$2-$3" cmd
  mkdir -p "$C/home/.config/containers" "$C/tmp"
  cp "$E/policy.json" "$C/home/.config/containers/policy.json"
  case $alt in
  plain) cmd="$(podman_cmd "$C") run --rm $ref /bench/run.sh" ;;
  profile)
    cp "$W/$img.profile.json" "$(profile_slot "$img")"
    cmd="$(podman_cmd "$C") run --rm $ref /bench/run.sh"
    ;;
  record)
    # `record` makes its own graphroot in TMPDIR; the profile goes to a file.
    cmd="env HOME=$C/home TMPDIR=$C/tmp CONTAINERS_CONF=$E/containers.conf PODMAN_IGNORE_CGROUPSV1_WARNING=1"
    cmd+=" $B profile record $ref --repo $R --podman $PODMAN --tap $TAP -o $C/profile.json -- /bench/run.sh"
    ;;
  esac
  [ "$drop" = 1 ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }
  python3 bench/measure.py "bench: started" "$cmd" >"$C/measure.json"
  [ "$alt" = profile ] && rm -f "$(profile_slot "$img")"
  if [ "$alt" = record ] && [ ! -f "$W/$img.profile.json" ] && [ -s "$C/profile.json" ]; then
    cp "$C/profile.json" "$W/$img.profile.json"
  fi
  if [ "$(jq -r .rc "$C/measure.json")" != 0 ]; then
    log "    run $C failed:"
    jq -r .out "$C/measure.json" | tail -n 15 | sed 's/^/      /' >&2
  fi
  # record: how long unshare + tap + podman took (its own "recorded:" line),
  # the rest of its exit time is turning the log into the profile.
  local tap
  tap=$(jq -r .out "$C/measure.json" | sed -n 's/^recorded: the container ran \([0-9.]*\) s.*/\1/p' | tail -n 1)
  echo "$(jq -r '"\(.first_s // "-") \(.total_s) \(.rc)"' "$C/measure.json") ${tap:--}"
  rm -rf "$C/root" "$C/run" 2>/dev/null
}
profile_slot() { # IMG -> where the repository keeps IMG's profile
  mkdir -p "$R/podmanStore/cvmfs/profiles"
  echo "$R/podmanStore/cvmfs/profiles/$(jq -r '."top-layer"' "$W/$1.profile.json").json"
}

stats() { # values... -> "median min max" (ignores "-")
  printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "- - -"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.2fx", a / b }'; }

table() { # IMG, with F[alt], T[alt], P[record] and N[alt] filled
  local img=$1 alt fm fl fh tm tl th pm pt
  read -r pm _ _ < <(stats ${F[plain]})
  read -r pt _ _ < <(stats ${T[plain]})
  echo
  echo "### $img image ($(jq -r '"\(.layers) layers, \(.files) files, \(.bytes / 1048576 | floor) MiB"' "$L/images/$img-$scale-$seed/info.json")), plain directory, $runs runs"
  echo
  echo "| run | first output s (min–max) | x plain | exit s (min–max) | x plain | failed |"
  echo "|---|---|---|---|---|---|"
  for alt in plain record profile; do
    read -r fm fl fh < <(stats ${F[$alt]})
    read -r tm tl th < <(stats ${T[$alt]})
    printf '| %s | %s (%s–%s) | %s | %s (%s–%s) | %s | %s |\n' "$(label $alt)" \
      "$fm" "$fl" "$fh" "$(ratio "$fm" "$pm")" "$tm" "$tl" "$th" "$(ratio "$tm" "$pt")" "${N[$alt]}"
  done
  echo
  read -r tm tl th < <(stats ${P[record]})
  echo "- record: podman under the tap (unshare, fuselat mounted, podman run, fuselat stopped) $tm s ($tl–$th), $(ratio "$tm" "$pt") the plain exit; the rest of its exit time turns the tap's log into the profile and removes its work directory"
  echo "- profile: $(jq -r '"\(.entries | length) files, \([.entries[].ranges[][1]] | add / 1048576 * 10 | floor / 10) MiB"' "$W/$img.profile.json")"
}
label() {
  case $1 in
  plain) echo "podman --storage-driver cvmfs run" ;;
  record) echo "cvmfs-podman profile record (fuselat, no delay)" ;;
  profile) echo "podman --storage-driver cvmfs run, profile published" ;;
  esac
}

echo "## Recording a start-up profile: overhead (bench/record-overhead.sh)"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg); BENCH_SCALE=$scale, seed $seed, page cache dropped before each run: $drop"
for img in $images; do
  publish_image "$img"
  declare -A F T P N
  for alt in plain record profile; do F[$alt]="" T[$alt]="" P[$alt]="" N[$alt]=0; done
  for r in $(seq "$runs"); do
    for alt in plain record profile; do
      # The profile runs need the profile the first record run wrote.
      if [ "$alt" = profile ] && [ ! -f "$W/$img.profile.json" ]; then
        log "    run $r profile: skipped (no profile recorded yet)"
        continue
      fi
      read -r f t rc tap < <(one_run "$img" "$alt" "$r")
      [ "$rc" = 0 ] || { f=- t=- tap=- N[$alt]=$((N[$alt] + 1)); }
      log "    run $r $alt: first ${f}s exit ${t}s under the tap ${tap}s rc $rc (load $(cut -d' ' -f1 /proc/loadavg))"
      F[$alt]+=" $f" T[$alt]+=" $t" P[$alt]+=" $tap"
    done
  done
  table "$img"
  unset F T P N
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
