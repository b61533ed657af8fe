#!/usr/bin/env bash
# make demo: build what is missing, publish a sample "scientific" image into
# ./demo-repo, run it with the patched podman's cvmfs driver by name, and show
# how long it took to start and how many bytes it read from the repository.
#
#   1. builds the Rust library, cvmfs-podman and build/bin/podman (make podman);
#   2. generates a ~1 GiB image (demo/gen-image.py; DEMO_SIZE_MB changes it):
#      thousands of files, an entrypoint that reads ~1 % of the bytes;
#   3. pushes it to a docker-registry on 127.0.0.1 and publishes it from there
#      with `cvmfs-podman publish` into ./demo-repo, as a CVMFS operator would;
#   4. packs ./demo-repo into an uncompressed squashfs image and loop-mounts it
#      read-only at ./demo-repo-mnt: that mount plays /cvmfs/<repository>, and
#      the loop device's read counter (/sys/block/loopN/stat) tells exactly how
#      many bytes the container pulled out of the repository;
#   5. stops the registry, drops the page cache and runs
#      `podman run <registry>/demo/analysis:1` with --storage-driver cvmfs;
#   6. for comparison (DEMO_COMPARE=0 skips it), pulls the same image with the
#      stock overlay driver and runs it the same way; measured once, then the
#      saved result is shown again.
#
# DEMO_BUILD=0 uses an existing build/bin/podman without `make podman`.
#
# Everything lives in ./demo-repo, ./demo-repo-mnt and build/demo/; a second run
# reuses what is there. Mounts are undone on exit and on Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
# shellcheck source=tests/lib/registry.bash
source "$ROOT/tests/lib/registry.bash"

SIZE_MB=${DEMO_SIZE_MB:-1024}
COMPARE=${DEMO_COMPARE:-1}
D="$ROOT/build/demo"
REPO="$ROOT/demo-repo"
MNT="$ROOT/demo-repo-mnt"
IMG_TAG=1
E="$ROOT/tests/e2e"

step_no=0
bold='' plain=''
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step() {
  step_no=$((step_no + 1))
  printf '\n%s[%d] %s%s\n' "$bold" "$step_no" "$*" "$plain"
}
say() { echo "    $*"; }
die() {
  echo "make demo: $*" >&2
  exit 1
}
now_ns() { date +%s%N; }
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }
# human 123456789 -> "117.7 MiB"
human() { awk -v b="$1" 'BEGIN { split("B KiB MiB GiB", u); i = 1; while (b >= 1024 && i < 4) { b /= 1024; i++ } printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i] }'; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f s", ms / 1000 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f %%", 100 * a / b }'; }

[ "$(id -u)" -eq 0 ] || die "must run as root (podman mounts overlayfs and the squashfs image)"
# build/bin/podman is podman 6, which needs a cgroup v2 hierarchy (hack/lib-cgroup2.sh).
# shellcheck source=hack/lib-cgroup2.sh
source "$ROOT/hack/lib-cgroup2.sh"
reexec_primary_with_cgroup2 "$0" "$@" || die "podman cannot run on this host"
mkdir -p "$D"

LOOP=
cleanup() {
  set +e
  [ -n "${REG_DIR:-}" ] && registry_stop
  # Whatever podman left mounted under the demo's stores, innermost first, then
  # the repository image and its loop device.
  grep -o " $D/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  if mountpoint -q "$MNT"; then
    umount "$MNT" 2>/dev/null || umount -l "$MNT"
  fi
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
}
trap cleanup EXIT
trap 'echo; echo "make demo: interrupted" >&2; exit 130' INT TERM

# A mount left behind by a run that was killed with -9.
if mountpoint -q "$MNT" 2>/dev/null; then
  umount "$MNT" 2>/dev/null || umount -l "$MNT"
fi

# ------------------------------------------------------------------ 1. build
step "Build what is missing: the Rust library, cvmfs-podman, podman with the cvmfs driver"
"$ROOT/hack/install-deps.sh"
start=$(now_ns)
CP="$ROOT/target/release/cvmfs-podman"
# cvmfs-podman first, and only when a source is newer than it: cargo keeps one
# fingerprint for the library whatever its features, so building the CLI (features
# "cli") after hack/build-lib.sh (no default features) recompiles the crate, and
# the next `make podman` would recompile it again.
if [ -x "$CP" ] && [ -z "$(find crates Cargo.toml Cargo.lock -newer "$CP" -print -quit)" ]; then
  say "cvmfs-podman is up to date"
else
  cargo build --release --bin cvmfs-podman --quiet 2>"$D/build-cvmfs-podman.log" || {
    tail -n 30 "$D/build-cvmfs-podman.log"
    die "cargo build --bin cvmfs-podman failed"
  }
fi
if [ "${DEMO_BUILD:-1}" = 0 ] && [ -x build/bin/podman ]; then
  say "DEMO_BUILD=0: using build/bin/podman as it is"
else
  make --no-print-directory -s podman >"$D/build-podman.log" 2>&1 || {
    tail -n 30 "$D/build-podman.log"
    die "make podman failed (log: $D/build-podman.log)"
  }
  say "$(grep -E 'up to date|built in' "$D/build-podman.log" | tail -1 | sed 's/^build-podman: //')"
fi
PODMAN="$ROOT/build/bin/podman"
say "podman:       $PODMAN ($("$PODMAN" --version))"
say "cvmfs-podman: $CP"
say "build step: $(secs "$(ms_since "$start")")"

# ------------------------------------------------------------------ 2. image
step "Generate the sample image (${SIZE_MB} MiB, DEMO_SIZE_MB to change)"
OCI="$D/oci"
gen_stamp=$(cat demo/gen-image.py demo/run.sh <(echo "$SIZE_MB") | sha256sum | cut -d' ' -f1)
if [ -f "$OCI/stamp" ] && [ "$(cat "$OCI/stamp")" = "$gen_stamp" ]; then
  say "reusing $OCI (generated before with the same size and generator)"
else
  rm -rf "$OCI"
  start=$(now_ns)
  python3 demo/gen-image.py "$OCI" "$IMG_TAG" "$SIZE_MB"
  echo "$gen_stamp" >"$OCI/stamp"
  say "generated in $(secs "$(ms_since "$start")")"
fi
img_files=$(jq -r .files "$OCI/stats.json")
img_bytes=$(jq -r .bytes "$OCI/stats.json")
img_compressed=$(jq -r .compressed "$OCI/stats.json")
input_bytes=$(jq -r .input_bytes "$OCI/stats.json")
expected=$(cat "$OCI/expected.txt")
say "OCI layout $OCI: $img_files files, $(human "$img_bytes") unpacked, $(human "$img_compressed") of zstd layers"
say "the entrypoint /opt/analysis/run.sh reads 4 of the files: $(human "$input_bytes") ($(pct "$input_bytes" "$img_bytes") of the image)"

# ------------------------------------------------------------------ 3. registry + publish
step "Push it to a docker-registry on 127.0.0.1 and publish it into ./demo-repo"
port=
[ -f "$D/registry.port" ] && port=$(cat "$D/registry.port")
# The port is part of the image's name in the repository: keep it across runs.
# (SO_REUSEADDR as the registry itself uses: the last run's connections may
# still be in TIME_WAIT.)
if [ -n "$port" ] && ! python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",int(sys.argv[1])))' "$port" 2>/dev/null; then
  die "port $port (build/demo/registry.port, used by the published name) is busy; free it or rm -rf build/demo demo-repo"
fi
registry_start "$D/registry" "$port" || die "cannot start docker-registry"
echo "${REG##*:}" >"$D/registry.port"
NAME="$REG/demo/analysis:$IMG_TAG"
say "registry $REG (pid $REG_PID, data in $D/registry/data)"
start=$(now_ns)
skopeo copy --quiet --dest-tls-verify=false "oci:$OCI:$IMG_TAG" "docker://$NAME"
say "skopeo copy oci:build/demo/oci:$IMG_TAG docker://$NAME ($(secs "$(ms_since "$start")"))"
manifest_digest=$(jq -r .manifests[0].digest "$OCI/index.json")
pub_stamp="$manifest_digest $NAME $MNT"
if [ -d "$REPO" ] && [ -f "$D/published.stamp" ] && [ "$(cat "$D/published.stamp")" = "$pub_stamp" ]; then
  say "reusing ./demo-repo (already holds $NAME, $manifest_digest)"
else
  rm -rf "$REPO" "$D/repo.sqfs"
  start=$(now_ns)
  # Podman will see the tree at ./demo-repo-mnt (the squashfs mount), so the
  # records name that path.
  say "\$ cvmfs-podman publish docker://$NAME --tls-verify=false --repo ./demo-repo --recorded-repository $MNT"
  "$CP" publish "docker://$NAME" --tls-verify=false --repo "$REPO" --recorded-repository "$MNT" -q
  "$CP" check "$REPO" >/dev/null
  echo "$pub_stamp" >"$D/published.stamp"
  say "published in $(secs "$(ms_since "$start")"): $(du -sh "$REPO" | cut -f1) in ./demo-repo"
fi

# ------------------------------------------------------------------ 4. squashfs mount
step "Serve ./demo-repo read-only from a loop-mounted squashfs image at ./demo-repo-mnt"
SQ="$D/repo.sqfs"
if [ -f "$SQ" ] && [ -f "$D/sqfs.stamp" ] && [ "$(cat "$D/sqfs.stamp")" = "$pub_stamp" ]; then
  say "reusing $SQ"
else
  start=$(now_ns)
  rm -f "$SQ"
  # Uncompressed (-noI -noD -noF -noX): the sectors read from the loop device are
  # then the repository's own bytes, comparable with the image size.
  mksquashfs "$REPO" "$SQ" -noappend -noI -noD -noF -noX -quiet -no-progress >/dev/null
  echo "$pub_stamp" >"$D/sqfs.stamp"
  say "mksquashfs: $(human "$(stat -c %s "$SQ")") in $(secs "$(ms_since "$start")")"
fi
mkdir -p "$MNT"
LOOP=$(losetup --find --show --read-only "$SQ")
mount -t squashfs -o ro "$LOOP" "$MNT"
LOOPDEV=${LOOP#/dev/}
say "$SQ -> $LOOP -> $MNT (plays /cvmfs/<repository>)"

# ------------------------------------------------------------------ podman setup
P="$D/podman"
mkdir -p "$P/home/.config/containers" "$P/tmp"
cp "$E/policy.json" "$P/home/.config/containers/policy.json"
sed -e "s|@GRAPHROOT@|$P/root|; s|@RUNROOT@|$P/run|; s|@REPO@|$MNT|g" "$E/storage.conf.in" >"$P/storage.conf"
sed -e "s|@REGISTRY@|$REG|" "$E/registries.conf.in" >"$P/registries.conf"
pm() {
  env HOME="$P/home" CONTAINERS_CONF="$E/containers.conf" CONTAINERS_STORAGE_CONF="$P/storage.conf" \
    CONTAINERS_REGISTRIES_CONF="$P/registries.conf" PODMAN_IGNORE_CGROUPSV1_WARNING=1 \
    "$PODMAN" --tmpdir "$P/tmp" "$@"
}
O="$D/overlay"
mkdir -p "$O/tmp"
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$O/root" "$O/run" >"$O/storage.conf"
po() {
  env HOME="$P/home" CONTAINERS_CONF="$E/containers.conf" CONTAINERS_STORAGE_CONF="$O/storage.conf" \
    CONTAINERS_REGISTRIES_CONF="$P/registries.conf" PODMAN_IGNORE_CGROUPSV1_WARNING=1 \
    "$PODMAN" --tmpdir "$O/tmp" "$@"
}

loop_read_bytes() { awk '{ print $3 * 512 }' "/sys/block/$LOOPDEV/stat"; }
drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}
# timed_run FN OUTFILE ARGS...: run `FN run --rm ARGS`, indenting its output;
# sets FIRST_MS (podman start to the container's first line) and TOTAL_MS.
timed_run() {
  local fn=$1 out=$2 t0
  shift 2
  rm -f "$D/first"
  t0=$(now_ns)
  "$fn" run --rm "$@" 2>&1 | while IFS= read -r line; do
    [ -f "$D/first" ] || now_ns >"$D/first"
    echo "$line" >>"$out"
    echo "    | $line"
  done
  TOTAL_MS=$(ms_since "$t0")
  [ -f "$D/first" ] || die "the container printed nothing"
  FIRST_MS=$((($(cat "$D/first") - t0) / 1000000))
}

# ------------------------------------------------------------------ 5. cvmfs run
step "Run it by name with the cvmfs driver, registry stopped"
registry_stop
curl -fs --max-time 2 "http://$REG/v2/" >/dev/null && die "the registry still answers"
say "registry stopped: nothing can be downloaded from now on"
say "\$ podman --storage-driver cvmfs images   (storage.conf: additionalimagestores = [\"$MNT/podmanStore\"])"
pm images --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}  read-only={{.ReadOnly}}' | sed 's/^/    | /'
drop_caches
before=$(loop_read_bytes)
say "page cache dropped (echo 3 > /proc/sys/vm/drop_caches), $LOOP's read counter noted"
say "\$ podman --storage-driver cvmfs run --rm $NAME"
rm -f "$D/cvmfs-out.txt"
timed_run pm "$D/cvmfs-out.txt" "$NAME"
after=$(loop_read_bytes)
cvmfs_read=$((after - before))
cvmfs_first=$FIRST_MS cvmfs_total=$TOTAL_MS
grep -q "checksum=$expected " "$D/cvmfs-out.txt" || die "the container's checksum is not the expected $expected"
say "the checksum matches the one computed when the image was generated"

# ------------------------------------------------------------------ 6. overlay comparison
cmp_file="$D/overlay-result.txt"
if [ "$COMPARE" != 0 ]; then
  step "For comparison: the same image with the stock overlay driver (pull, then run)"
  if [ -f "$cmp_file" ] && [ "$(head -1 "$cmp_file")" = "$pub_stamp" ]; then
    say "measured on an earlier run (rm $cmp_file to measure again):"
  else
    registry_start "$D/registry" "${REG##*:}" >/dev/null || die "cannot restart docker-registry"
    po rmi -af >/dev/null 2>&1 || true
    mark=$(registry_log_mark)
    drop_caches
    say "\$ podman --storage-driver overlay pull $NAME"
    t0=$(now_ns)
    po pull -q "$NAME" >/dev/null
    pull_ms=$(ms_since "$t0")
    # (registry_requests_since waits for the access log to settle.) Bytes of
    # the blob GETs, from the combined log lines' size field.
    registry_requests_since "$mark" >/dev/null
    downloaded=$(tail -n "+$((mark + 1))" "$REG_LOG" | awk '/"GET [^ ]*\/blobs\/[^ ]* HTTP[^"]*" 200 / { for (i = 1; i <= NF; i++) if ($i ~ /^HTTP/) { s += $(i + 2); break } } END { print s + 0 }')
    registry_stop
    drop_caches
    say "\$ podman --storage-driver overlay run --rm $NAME"
    rm -f "$D/overlay-out.txt"
    timed_run po "$D/overlay-out.txt" "$NAME"
    grep -q "checksum=$expected " "$D/overlay-out.txt" || die "the overlay container's checksum is not the expected $expected"
    printf '%s\n%s %s %s %s\n' "$pub_stamp" "$pull_ms" "$downloaded" "$FIRST_MS" "$TOTAL_MS" >"$cmp_file"
    po rmi -af >/dev/null 2>&1 || true
  fi
  read -r pull_ms downloaded ov_first ov_total < <(sed -n 2p "$cmp_file")
  say "pull: $(secs "$pull_ms"), $(human "$downloaded") downloaded from the registry (its access log)"
  say "run:  first output after $(secs "$ov_first"), done after $(secs "$ov_total")"
fi

# ------------------------------------------------------------------ summary
step "Result"
printf '    %-34s %s\n' "image:" "$NAME: $img_files files, $(human "$img_bytes")"
printf '    %-34s %s\n' "cvmfs: time to first output:" "$(secs "$cvmfs_first") (from the start of podman run; done after $(secs "$cvmfs_total"))"
printf '    %-34s %s\n' "cvmfs: read from the repository:" "$(human "$cvmfs_read") = $(pct "$cvmfs_read" "$img_bytes") of the image ($(human "$input_bytes") of files the job reads + busybox + podman's metadata)"
printf '    %-34s %s\n' "cvmfs: downloaded:" "0 B (the registry was stopped)"
if [ "$COMPARE" != 0 ]; then
  printf '    %-34s %s\n' "overlay: pull + first output:" "$(secs $((pull_ms + ov_first))) (pull $(secs "$pull_ms") + run $(secs "$ov_first"))"
  printf '    %-34s %s\n' "overlay: downloaded:" "$(human "$downloaded") (zstd layers), then $(human "$img_bytes") written to local disk"
fi
cat <<EOF

    How the bytes were counted: ./demo-repo is packed into an uncompressed squashfs
    image, attached to $LOOP and mounted read-only at ./demo-repo-mnt, the path the
    published records point at. Before the run the page cache is dropped
    (echo 3 > /proc/sys/vm/drop_caches); the figure is the growth of the "sectors
    read" counter in /sys/block/$LOOPDEV/stat times 512, i.e. every byte podman,
    the kernel's overlayfs and the container pulled out of the repository,
    metadata and read-ahead included. On CVMFS that is what would be fetched
    over the network.
EOF
