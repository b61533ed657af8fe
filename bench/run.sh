#!/usr/bin/env bash
# bench/run.sh: cold start of generated images with podman, ours against the
# alternatives, same images, same run (bench/README.md). Prints one markdown
# table per image and repository view; hack/bench.sh puts them in
# bench/results.md with the other benchmark tables.
#
# Environment:
#   BENCH_SCALE=1        image size factor (0.1: 400 MiB / 20 000 files "large")
#   BENCH_SEED=6         generator seed
#   BENCH_RUNS=5         runs per alternative (median, min, max)
#   BENCH_IMAGES="large deep"
#   BENCH_VIEWS="fuse local"  repository views: fuse = bench/fuselat (cold CVMFS
#                        client model), local = the plain directory
#   BENCH_LATENCY=2ms BENCH_BANDWIDTH=1000 (Mbit/s) BENCH_CHUNK=8388608   fuselat
#   BENCH_ALTS="overlay-pull rootfs ducc cvmfs cvmfs-pull cvmfs-enabled"   which alternatives;
#                        also cvmfs-profile (ours with a published start-up profile
#                        recorded for the entrypoint) and cvmfs-stale (with one
#                        recorded for another command of the image), issue 16;
#                        cvmfs-warm (ours with the driver home of an earlier
#                        run kept), issue 13
#   BENCH_CATALOGS=1     fuselat models catalog loads too (bench/README.md)
#   BENCH_DROP_CACHES=1  drop the page cache before each run (cold local disk too)
#   BENCH_TIMEOUT=300    seconds one run of an alternative may take; a run that
#                        takes longer is stopped, shown as "> N (timed out)",
#                        and the alternative's further runs in that table are
#                        skipped (DUCC's store through fuse-overlayfs reads the
#                        whole image: ~15 min per run at full size under fuselat)
#   BENCH_KEEP=1         keep the work directory
#   BENCH_SKIP_BUILD=1   use build/bin/podman as it is
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
# shellcheck source=tests/lib/registry.bash
source "$ROOT/tests/lib/registry.bash"

scale=${BENCH_SCALE:-1}
seed=${BENCH_SEED:-6}
runs=${BENCH_RUNS:-5}
images=${BENCH_IMAGES:-large deep}
views=${BENCH_VIEWS:-fuse local}
alts=${BENCH_ALTS:-overlay-pull rootfs ducc cvmfs cvmfs-pull cvmfs-enabled}
latency=${BENCH_LATENCY:-2ms}
bandwidth=${BENCH_BANDWIDTH:-1000}
chunk=${BENCH_CHUNK:-8388608}
drop=${BENCH_DROP_CACHES:-1}
run_timeout=${BENCH_TIMEOUT:-300}

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "$*" >&2; }
[ "$(id -u)" -eq 0 ] || die "must run as root (podman mounts, FUSE)"
# build/bin/podman is podman 6, which needs a cgroup v2 hierarchy (hack/lib-cgroup2.sh).
# shellcheck source=hack/lib-cgroup2.sh
source "$ROOT/hack/lib-cgroup2.sh"
reexec_primary_with_cgroup2 "$0" "$@" || die "podman cannot run on this host"
for tool in skopeo docker-registry jq python3 curl conmon runc busybox fuse-overlayfs; do
  command -v "$tool" >/dev/null || die "$tool missing (make deps)"
done

L="$ROOT/build/bench"
mkdir -p "$L"
log "==> building podman, cvmfs-podman, fuselat"
PODMAN="$ROOT/build/bin/podman"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ] && ! "$ROOT/hack/build-podman.sh" >"$L/build-podman.log" 2>&1; then
  tail -n 10 "$L/build-podman.log" >&2
  [ -x "$PODMAN" ] || die "building podman failed"
  log "bench: building podman failed; using the existing $PODMAN"
fi
cargo build --release --bin cvmfs-podman --quiet || die "building cvmfs-podman failed"
B="$ROOT/target/release/cvmfs-podman"
(cd bench/fuselat && GOFLAGS=-mod=mod go build -o "$L/fuselat" .) || die "building fuselat failed"

W=$(mktemp -d /tmp/bench.XXXXXX)
# The publisher records the repository's path, so the repository is published
# at R and then moved to D; each run mounts a view of D at R (fuselat or a bind
# mount), which is what a CVMFS client mount at a fixed path looks like.
R="$W/repo"
D="$W/repo-data"
FL_PID=
fuselat_stop() {
  if [ -n "$FL_PID" ]; then
    kill "$FL_PID" 2>/dev/null
    wait "$FL_PID" 2>/dev/null
    FL_PID=
  fi
  if mountpoint -q "$R" 2>/dev/null; then umount -l "$R" 2>/dev/null; fi
}
cleanup() {
  local d
  for d in "$W"/run/*/; do
    [ -f "$d/env" ] || continue
    (source "$d/env" && pm rm -af -t 0 >/dev/null 2>&1)
  done
  fuselat_stop
  registry_stop
  grep -o " $W[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

# ------------------------------------------------------------------ images
registry_start "$W/registry" || die "cannot start docker-registry"
log "==> registry on $REG; work directory $W"
for img in $images; do
  G="$L/images/$img-$scale-$seed"
  if [ ! -f "$G/info.json" ]; then
    log "==> generating $img (scale $scale, seed $seed)"
    rm -rf "$G"
    python3 bench/gen-image.py "$img" "$G" --scale "$scale" --seed "$seed" >&2 || die "generating $img failed"
  fi
  if [ ! -f "$G/oci/index.json" ]; then
    "$B" make-oci "$G/oci" --tag "$img" "$G"/layer-*.tar >&2 || die "make-oci $img failed"
  fi
  skopeo copy --quiet --dest-tls-verify=false "oci:$G/oci:$img" "docker://$REG/bench/$img:1" || die "pushing $img failed"
  "$B" publish "docker://$REG/bench/$img:1" --tls-verify=false --repo "$R" -q >&2 || die "publishing $img failed"
done

# DUCC's symlink store for overlay, beside ours (ours owns podmanStore).
args=()
for img in $images; do
  G="$L/images/$img-$scale-$seed"
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REG/v2/bench/$img/manifests/1" >"$W/$img.manifest.json" || die "no manifest for $img"
  cfg=$(jq -r .config.digest "$W/$img.manifest.json")
  curl -fsS "http://$REG/v2/bench/$img/blobs/$cfg" >"$W/$img.config.json" || die "no config for $img"
  args+=("$REG/bench/$img:1=$W/$img.manifest.json" "$W/$img.config.json")
done
python3 bench/ducc-store.py "$R" "$R/ducc/podmanStore" "${args[@]}" || die "writing DUCC's podmanStore failed"
mv "$R" "$D" && mkdir "$R" || die "cannot move the repository to $D"
# What a CVMFS client shows on every path: the revision of the snapshot
# (fuselat passes the source's xattrs through).
setfattr -n user.revision -v 1 "$D" 2>/dev/null || log "bench: cannot set user.revision on $D"

# ------------------------------------------------------------------ runs
E="$ROOT/tests/e2e"
# new_run NAME ALT: fresh graphroot, runroot, tmpdir and HOME; `pm` runs podman there.
new_run() {
  C="$W/run/$1"
  shift
  mkdir -p "$C/home/.config/containers" "$C/tmp"
  cp "$E/policy.json" "$C/home/.config/containers/policy.json"
  sed -e "s|@REGISTRY@|$REG|" "$E/registries.conf.in" >"$C/registries.conf"
  case $1 in
  cvmfs | cvmfs-pull | cvmfs-profile | cvmfs-stale | cvmfs-warm)
    sed -e "s|@GRAPHROOT@|$C/root|; s|@RUNROOT@|$C/run|; s|@REPO@|$R|g" "$E/storage.conf.in" >"$C/storage.conf"
    ;;
  cvmfs-enabled)
    # The image's records copied once into a host-local store by
    # `cvmfs-podman enable` (not timed: a one-time setup step, like writing
    # storage.conf); podman's indexes and lock files are then local, the
    # image's files still come from the repository.
    sed -e "s|@GRAPHROOT@|$C/root|; s|@RUNROOT@|$C/run|; s|@REPO@|$R|g; s|\"$R/podmanStore\"|\"$C/root/enabled\"|" \
      "$E/storage.conf.in" >"$C/storage.conf"
    ;;
  ducc)
    # DUCC's documentation: overlay with fuse-overlayfs as mount program and
    # the repository's podmanStore as additional image store.
    printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n[storage.options]\nadditionalimagestores = ["%s"]\n[storage.options.overlay]\nmount_program = "%s"\n' \
      "$C/root" "$C/run" "$R/ducc/podmanStore" "$(command -v fuse-overlayfs)" >"$C/storage.conf"
    ;;
  *)
    printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$C/root" "$C/run" >"$C/storage.conf"
    ;;
  esac
  cat >"$C/env" <<EOF
pm() {
  env HOME=$C/home CONTAINERS_CONF=$E/containers.conf CONTAINERS_STORAGE_CONF=$C/storage.conf \\
    CONTAINERS_REGISTRIES_CONF=$C/registries.conf PODMAN_IGNORE_CGROUPSV1_WARNING=1 \\
    $PODMAN --tmpdir $C/tmp "\$@"
}
EOF
  PM="env HOME=$C/home CONTAINERS_CONF=$E/containers.conf CONTAINERS_STORAGE_CONF=$C/storage.conf CONTAINERS_REGISTRIES_CONF=$C/registries.conf PODMAN_IGNORE_CGROUPSV1_WARNING=1 $PODMAN --tmpdir $C/tmp"
}

# BENCH_CATALOGS=1: fuselat models a cold client's catalog loads too
# (-catalogs, calibrated against a real client: bench/README.md).
fuselat_model_flags() {
  if [ "${BENCH_CATALOGS:-0}" = 1 ]; then echo "-catalogs"; fi
}
view_start() { # VIEW: mount the repository at $R as this view serves it, cold
  fuselat_stop
  if [ "$1" = fuse ]; then
    # shellcheck disable=SC2046
    "$L/fuselat" $(fuselat_model_flags) -latency "$latency" -bandwidth "$bandwidth" -chunk "$chunk" -stats "$W/fuselat.json" -log "$C/fetched.txt" "$D" "$R" 2>"$W/fuselat.log" &
    FL_PID=$!
    local _
    for _ in $(seq 50); do mountpoint -q "$R" && return 0; sleep 0.1; done
    cat "$W/fuselat.log" >&2
    die "fuselat did not mount"
  else
    mount --bind "$D" "$R" || die "cannot bind-mount the repository"
  fi
}
view_bytes() { # VIEW -> bytes the view served (fuse), after stopping it
  if [ "$1" = fuse ]; then
    fuselat_stop
    jq -r .bytes_fetched "$W/fuselat.json"
  else
    echo ""
  fi
}

registry_bytes_since() { # log line -> bytes of blob bodies the registry sent
  registry_requests_since "$1" >/dev/null
  tail -n "+$(($1 + 1))" "$REG_LOG" |
    sed -n 's/^[^"]*"GET [^ ]*\/blobs\/[^ ]* HTTP[^"]*" 200 \([0-9]*\) .*/\1/p' | awk '{s += $1} END {print s + 0}'
}

# ------------------------------------------------------------------ profiles (issue 16)
# Start-up profiles for cvmfs-profile and cvmfs-stale, recorded before any run:
# the image runs once (not timed) on a fuselat view without delay whose fetch
# log becomes the profile (cvmfs-podman profile from-log, what `profile record`
# does). "entry": the entrypoint; "stale": another command of the same image
# (every other file the entrypoint reads, then as many files it does not read).
# Profiles are kept aside and put into the repository only for the runs of
# their alternative, so every other alternative runs as before.
STALE_CMD='awk "NR % 2" /bench/readlist | xargs cat >/dev/null; n=$(wc -l </bench/readlist); find / -xdev -type f | grep -vxFf /bench/readlist | head -n $((n / 2)) | xargs cat >/dev/null'
record_profile() { # IMG KIND CMD...: writes $W/profiles/IMG-KIND.json
  local img=$1 kind=$2 ref="$REG/bench/$1:1"
  shift 2
  new_run "$img-record-$kind" cvmfs
  # no prefetch while recording (the storage.conf ends in [storage.options.cvmfs])
  echo 'prefetch = "off"' >>"$C/storage.conf"
  fuselat_stop
  "$L/fuselat" -latency 0 -bandwidth 0 -chunk "$chunk" -log "$C/record.txt" "$D" "$R" 2>"$W/fuselat.log" &
  FL_PID=$!
  local _
  for _ in $(seq 50); do mountpoint -q "$R" && break; sleep 0.1; done
  $PM run --rm --network none "$ref" "$@" >/dev/null 2>"$C/record.err" ||
    log "    recording $img ($kind) failed: $(tail -n 3 "$C/record.err")"
  (source "$C/env" && pm rm -af -t 0 >/dev/null 2>&1)
  fuselat_stop
  mkdir -p "$W/profiles"
  "$B" profile from-log "$C/record.txt" --repo "$D" --source-root "$D" --image "$ref" \
    --chunk "$chunk" -o "$W/profiles/$img-$kind.json" 2>&1 | sed 's/^/    /' >&2
  rm -rf "$C/root" "$C/run"
}
profile_slot() { # IMG -> where the repository keeps IMG's profile
  mkdir -p "$D/podmanStore/cvmfs/profiles"
  echo "$D/podmanStore/cvmfs/profiles/$(jq -r '."top-layer"' "$W/profiles/$1-entry.json").json"
}
if [[ " $alts " == *" cvmfs-profile "* || " $alts " == *" cvmfs-stale "* ]]; then
  for img in $images; do
    log "==> recording start-up profiles of $img"
    record_profile "$img" entry /bench/run.sh
    record_profile "$img" stale sh -c "$STALE_CMD"
  done
fi


# Local disk of a graphroot + runroot, not counting what is mounted in them
# (bench/diskuse.py: other file systems are not entered, bind mounts of the
# same one are, so the overlay driver's self-bind-mounted image counts).
DU="python3 $ROOT/bench/diskuse.py"

# cvmfs-warm: ours with the driver home (graphroot, runroot) of one earlier
# run kept, as for a user's second start; the client view is cold again for
# every run. warm_home_prepare IMG VIEW makes that home (not timed): a run
# of the image that ends by itself, so the driver finishes what it does
# ahead (the image's metadata copied into its store view).
warm_home_name() { echo "$1-$2-cvmfs-warm"; }
warm_home_prepare() {
  new_run "$(warm_home_name "$1" "$2")" cvmfs-warm
  view_start "$2"
  MEASURE_UNTIL_FIRST=0 MEASURE_TIMEOUT="$run_timeout" python3 bench/measure.py "bench: started" \
    "$PM run --name b --network none $REG/bench/$1:1 sh -c 'echo bench: started'" >"$C/warm.json"
  [ "$(jq -r .rc "$C/warm.json")" = 0 ] || log "    warming the driver home failed: $(jq -r .out "$C/warm.json" | tail -n 3)"
  (source "$C/env" && pm rm -af -t 0 >/dev/null 2>&1)
  fuselat_stop
}

# one_run IMG VIEW ALT N: prints "first total rss_kib bytes_read disk_bytes rc disk_at_first"
one_run() {
  local img=$1 view=$2 alt=$3 ref="$REG/bench/$1:1" flat name="$1-$2-$3-$4"
  [ "$alt" = cvmfs-warm ] && name=$(warm_home_name "$img" "$view")
  new_run "$name" "$alt"
  if [ "$alt" = cvmfs-enabled ]; then
    # Read from the plain directory before the view is mounted, so that the
    # view's counters see only the run; the records keep naming $R. In
    # graphroot/enabled, its bytes count as local disk.
    "$B" enable --repo "$D" --store "$C/root/enabled" "$ref" >/dev/null || log "    cvmfs-podman enable failed"
  fi
  case $alt in
  cvmfs-profile) cp "$W/profiles/$img-entry.json" "$(profile_slot "$img")" ;;
  cvmfs-stale) cp "$W/profiles/$img-stale.json" "$(profile_slot "$img")" ;;
  esac
  view_start "$view"
  [ "$drop" = 1 ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }
  local mark
  mark=$(registry_log_mark)
  local run="run --name b --network none"
  local cmds=()
  case $alt in
  overlay-pull | cvmfs-pull) cmds=("$PM pull -q $ref >/dev/null" "$PM $run $ref /bench/run.sh") ;;
  rootfs)
    flat=$(jq -r .config.digest "$W/$img.manifest.json")
    flat=${flat#sha256:}
    cmds=("$PM $run --rootfs $R/.flat/${flat:0:2}/$flat:O /bench/run.sh")
    ;;
  ducc | cvmfs | cvmfs-profile | cvmfs-stale | cvmfs-warm) cmds=("$PM $run $ref /bench/run.sh") ;;
  cvmfs-enabled) cmds=("$PM $run $ref /bench/run.sh") ;;
  esac
  MEASURE_TIMEOUT="$run_timeout" MEASURE_AT_FIRST="$DU '$C/root' '$C/run'" \
    python3 bench/measure.py "bench: started" "${cmds[@]}" >"$C/measure.json"
  local disk fetched
  disk=$($DU "$C/root" "$C/run")
  # Where the bytes went, for the log.
  (cd "$C" && du -bx --max-depth=4 root run 2>/dev/null | sort -n | tail -n 12) >"$C/du.txt"
  (source "$C/env" && pm rm -af -t 0 >/dev/null 2>&1)
  fetched=$(view_bytes "$view")
  case $alt in
  # overlay's pull does not touch the repository: what it costs is the download.
  overlay-pull) fetched=$(registry_bytes_since "$mark") ;;
  # ours: the download (manifest and config) plus what the run read.
  cvmfs-pull) fetched=$((${fetched:-0} + $(registry_bytes_since "$mark"))) ;;
  esac
  [ -n "$fetched" ] || fetched=-
  fuselat_stop
  case $alt in cvmfs-profile | cvmfs-stale) rm -f "$(profile_slot "$img")" ;; esac
  jq -r --arg b "$fetched" --arg d "$disk" '"\(.first_s // "-") \(.total_s) \(.maxrss_kib) \($b) \($d) \(if .timed_out then "timeout" else .rc end) \(.at_first // "-")"' "$C/measure.json"
  if [ "$(jq -r .timed_out "$C/measure.json")" = true ]; then
    log "    run $C ($img $view $alt) stopped after ${run_timeout}s (BENCH_TIMEOUT)"
  elif [ "$(jq -r .rc "$C/measure.json")" != 0 ] || [ "$(jq -r '.first_s // "null"' "$C/measure.json")" = null ]; then
    log "    run $C ($img $view $alt) failed; output:"
    jq -r .out "$C/measure.json" | tail -n 15 | sed 's/^/      /' >&2
  fi
  [ "$alt" = cvmfs-warm ] || rm -rf "$C/root" "$C/run" 2>/dev/null
}

# ------------------------------------------------------------------ table
stats() { # values... -> "median min max" (ignores "-")
  printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "- - -"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    print m, v[1], v[NR] }'
}
num() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }'; }
human() { # bytes -> MiB with 1 decimal, or "-"
  [ "$1" = - ] && { echo -; return; }
  awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'
}

label() {
  case $1 in
  overlay-pull) echo "overlay: pull + run" ;;
  rootfs) echo "run --rootfs .flat:O" ;;
  ducc) echo "DUCC podmanStore + fuse-overlayfs" ;;
  cvmfs) echo "**cvmfs: run by name**" ;;
  cvmfs-pull) echo "**cvmfs: pull + run**" ;;
  cvmfs-enabled) echo "**cvmfs: run by name, enabled local store**" ;;
  cvmfs-profile) echo "**cvmfs: run by name, published profile**" ;;
  cvmfs-stale) echo "**cvmfs: run by name, stale profile (another command)**" ;;
  cvmfs-warm) echo "**cvmfs: run by name, warm driver home**" ;;
  esac
}

declare -A OP
for img in $images; do
  G="$L/images/$img-$scale-$seed"
  ibytes=$(jq -r .bytes "$G/info.json")
  for view in $views; do
    vdesc="plain local directory"
    if [ "$view" = fuse ]; then
      vdesc="fuselat ($latency per fetch, $bandwidth Mbit/s, ${chunk}-byte chunks)"
      [ -n "$(fuselat_model_flags)" ] && vdesc="${vdesc%)}, catalog loads modelled)"
    fi
    log "==> $img via $view: $runs runs of: $alts"
    declare -A F T S Bt DW D0 TO
    for alt in $alts; do F[$alt]="" T[$alt]="" S[$alt]="" Bt[$alt]="" DW[$alt]="" D0[$alt]="" TO[$alt]=0; done
    [[ " $alts " == *" cvmfs-warm "* ]] && warm_home_prepare "$img" "$view"
    # Alternate the alternatives run by run, so a slow phase of the machine
    # does not land on one of them.
    for r in $(seq "$runs"); do
      for alt in $alts; do
        # One run past BENCH_TIMEOUT is enough to know it is that slow.
        if [ "${TO[$alt]}" -gt 0 ]; then
          log "    run $r $alt: skipped (an earlier run took more than ${run_timeout}s)"
          continue
        fi
        # overlay's pull + run does not use the repository: measured once,
        # with the first view, and shown again for the others.
        if [ "$alt" = overlay-pull ] && [ -n "${OP[$img-$r]:-}" ]; then
          read -r f t s b d rc d0 <<<"${OP[$img-$r]}"
        else
          read -r f t s b d rc d0 < <(one_run "$img" "$view" "$alt" "$r")
          [ "$alt" = overlay-pull ] && OP[$img-$r]="$f $t $s $b $d $rc $d0"
        fi
        if [ "$rc" = timeout ]; then
          # The first output may have come in time; the exit did not.
          TO[$alt]=1 t=-
        elif [ "$rc" != 0 ]; then
          f=- t=-
        fi
        log "    run $r $alt: first ${f}s total ${t}s rss ${s}KiB read $b disk $d (at first output $d0) rc $rc"
        F[$alt]+=" $f" T[$alt]+=" $t" S[$alt]+=" $s" Bt[$alt]+=" $b" DW[$alt]+=" $d" D0[$alt]+=" ${d0:--}"
      done
    done
    # The fastest alternative by median time to first output.
    best="" bestv=""
    for alt in $alts; do
      read -r m _ _ < <(stats ${F[$alt]})
      [ "$m" = - ] && continue
      if [ -z "$bestv" ] || awk -v a="$m" -v b="$bestv" 'BEGIN { exit !(a < b) }'; then best=$alt bestv=$m; fi
    done
    # Exit times are compared with the fastest exit, which may be another one.
    bestt=""
    for alt in $alts; do
      read -r m _ _ < <(stats ${T[$alt]})
      [ "$m" = - ] || [ "${TO[$alt]}" -gt 0 ] && continue
      if [ -z "$bestt" ] || awk -v a="$m" -v b="$bestt" 'BEGIN { exit !(a < b) }'; then bestt=$m; fi
    done
    echo
    echo "### $img image ($(jq -r '"\(.layers) layers, \(.files) files, \(.bytes / 1048576 | floor) MiB; entrypoint reads \(.read_files) files, \(.read_bytes / 1048576 * 10 | floor / 10) MiB"' "$G/info.json")), repository: $vdesc"
    echo
    echo "| alternative | first output s (min–max) | x fastest | exit s (min–max) | x fastest | read/downloaded | % of image | local disk at first output / at exit | podman peak RSS |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for alt in $alts; do
      read -r fm fl fh < <(stats ${F[$alt]})
      read -r tm tl th < <(stats ${T[$alt]})
      read -r bm _ _ < <(stats ${Bt[$alt]})
      read -r dm _ _ < <(stats ${DW[$alt]})
      read -r d0m _ _ < <(stats ${D0[$alt]})
      read -r sm _ _ < <(stats ${S[$alt]})
      rf=$(awk -v a="$fm" -v b="$bestv" 'BEGIN { if (a == "-" || b == "") print "-"; else printf "%.2fx", a / b }')
      # A timed-out exit is only known to be later than the timeout.
      [ "${TO[$alt]}" -gt 0 ] && tm=$run_timeout
      rt=$(awk -v a="$tm" -v b="$bestt" 'BEGIN { if (a == "-" || b == "") print "-"; else printf "%.2fx", a / b }')
      texit="$(num "$tm") ($(num "$tl")–$(num "$th"))"
      if [ "${TO[$alt]}" -gt 0 ]; then texit="> $run_timeout (timed out)" rt="> $rt"; fi
      pct=$(awk -v a="$bm" -v b="$ibytes" 'BEGIN { if (a == "-") print "-"; else printf "%.1f%%", 100 * a / b }')
      nfail=$(printf '%s\n' ${F[$alt]} | grep -c '^-$')
      fail=""
      if [ "${TO[$alt]}" -gt 0 ]; then
        # Its exit is only known to be later than the timeout.
        nrun=$(printf '%s\n' ${T[$alt]} | grep -c .)
        fail=" (run $nrun of $runs stopped after ${run_timeout} s, the rest skipped)"
      elif [ "$nfail" -gt 0 ]; then
        fail=" ($nfail of $runs failed)"
      fi
      printf '| %s%s | %s (%s–%s) | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$(label "$alt")" "$fail" \
        "$(awk -v v="$fm" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }')" \
        "$(awk -v v="$fl" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }')" \
        "$(awk -v v="$fh" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }')" "$rf" \
        "$texit" "$rt" \
        "$(human "$bm")" "$pct" "$(human "$d0m") / $(human "$dm")" "$(awk -v v="$sm" 'BEGIN { printf "%.0f MiB", v / 1024 }')"
    done
    # The issue's targets, checked against this table.
    med() { local m; read -r m _ _ < <(stats $1); echo "$m"; }
    verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
      if (v == "-" || v == "") { print "not measured"; exit }
      ok = (op == "<=") ? (v <= t) : (v >= t); print (ok ? "met" : "**missed**") }'; }
    echo
    if [[ " $alts " == *" cvmfs "* ]]; then
      c=$(med "${F[cvmfs]}")
      if [[ " $alts " == *" rootfs "* ]]; then
        r=$(awk -v a="$c" -v b="$(med "${F[rootfs]}")" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.2f", a / b }')
        echo "- ours (run by name) / --rootfs, time to first output: ${r}x (target <= 1.1x: $(verdict "$r" "<=" 1.1))"
        if [[ " $alts " == *" cvmfs-warm "* ]]; then
          r=$(awk -v a="$(med "${F[cvmfs-warm]}")" -v b="$(med "${F[rootfs]}")" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.2f", a / b }')
          echo "- ours (run by name, warm driver home) / --rootfs, time to first output: ${r}x (target <= 1.1x: $(verdict "$r" "<=" 1.1))"
        fi
      fi
      if [[ " $alts " == *" overlay-pull "* ]]; then
        r=$(awk -v a="$(med "${F[overlay-pull]}")" -v b="$c" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.1f", a / b }')
        if [ "$img" = large ] && [ "$view" = fuse ] && [ "$scale" = 1 ]; then
          echo "- overlay pull + run / ours, time to first output: ${r}x (target >= 10x: $(verdict "$r" ">=" 10))"
        else
          echo "- overlay pull + run / ours, time to first output: ${r}x (the >= 10x target is for the full-size large image under fuselat)"
        fi
      fi
      if [ "$view" = fuse ]; then
        r=$(awk -v a="$(med "${Bt[cvmfs]}")" -v b="$ibytes" 'BEGIN { if (a == "-") print "-"; else printf "%.1f", 100 * a / b }')
        echo "- ours, bytes read from the repository: ${r}% of the image (target <= 5%: $(verdict "$r" "<=" 5); the entrypoint reads $(jq -r '.read_bytes * 1000 / .bytes | floor / 10' "$G/info.json")%, and runs the 1.9 MiB busybox, which counts at small BENCH_SCALE)"
      fi
      r=$(awk -v a="$(med "${D0[cvmfs]}")" 'BEGIN { if (a == "-") print "-"; else printf "%.2f", a / 1048576 }')
      echo "- ours, local disk used when the entrypoint printed its first line (graphroot + runroot, podman's databases included): ${r} MiB (target <= 1 MiB: $(verdict "$r" "<=" 1))"
    fi
    if [[ " $alts " == *" cvmfs-profile "* ]]; then
      ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "") print "-"; else printf "%.2f", a / b }'; }
      ref=rootfs
      [[ " $alts " == *" rootfs "* ]] || ref=cvmfs
      r=$(ratio "$(med "${T[cvmfs-profile]}")" "$(med "${T[$ref]}")")
      if [ "$view" = fuse ]; then
        echo "- ours with a profile / $ref, time to exit: ${r}x (target <= 0.25x: $(verdict "$r" "<=" 0.25))"
      else
        echo "- ours with a profile / $ref, time to exit: ${r}x (target on the plain directory <= 1.05x: $(verdict "$r" "<=" 1.05))"
      fi
      r=$(ratio "$(med "${F[cvmfs-profile]}")" "$(med "${F[$ref]}")")
      echo "- ours with a profile / $ref, time to first output: ${r}x (target <= 1.1x: $(verdict "$r" "<=" 1.1))"
      if [ "$view" = fuse ] && [[ " $alts " == *" cvmfs "* ]]; then
        # What the job reads is what ours without a profile fetches: the
        # entrypoint's files plus busybox and run.sh.
        r=$(ratio "$(med "${Bt[cvmfs-profile]}")" "$(med "${Bt[cvmfs]}")")
        echo "- ours with a profile, bytes read / what the job reads (ours without a profile): ${r}x (target <= 1.2x: $(verdict "$r" "<=" 1.2))"
      fi
      echo "- profiles: $(jq -r '"\(.entries | length) files, \([.entries[].ranges[][1]] | add / 1048576 * 10 | floor / 10) MiB"' "$W/profiles/$img-entry.json") recorded for the entrypoint; stale: $(jq -r '"\(.entries | length) files, \([.entries[].ranges[][1]] | add / 1048576 * 10 | floor / 10) MiB"' "$W/profiles/$img-stale.json")"
    fi
    unset F T S Bt DW D0 TO
  done
done
