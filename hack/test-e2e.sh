#!/usr/bin/env bash
# make test-e2e: the patched podman of one line (hack/versions.env; PODMAN_LINE,
# default the primary line: build/bin/podman, podman 6) end to end against a
# repository published by `cvmfs-podman publish` from a real docker-registry on
# 127.0.0.1. `make test-e2e-5` runs the smoke cases against podman 5.8
# (build/bin/podman-5): PODMAN_LINE=5 E2E_SET=smoke.
#
# Test images are built from the layer specs in tests/e2e/images/ over a layer
# holding Debian's static busybox (the only executable available offline),
# pushed to the registry, and published from there. Every case gets its own
# graphroot, runroot, tmpdir and HOME (storage.conf, registries.conf and
# policy.json from tests/e2e/), so cases cannot see each other's containers.
#
#   hack/test-e2e.sh [PATTERN]   run only the cases whose name contains PATTERN
#   E2E_SET=smoke                 run only the smoke cases: run by name, pull
#                                 without layer download, build, commit, save
#
# The cases run through hack/lib-test.sh: known failures in
# tests/e2e/known-failures.txt ("<case name> — <reason>"). Ends with exactly one
# line "N passed, N failed, N skipped".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
# shellcheck source=tests/lib/registry.bash
source "$ROOT/tests/lib/registry.bash"
# PODMAN_LINE -> PODMAN_VERSION, PODMAN_BINARY (and what build-podman.sh needs).
# shellcheck source=hack/lib-storage.sh
source "$ROOT/hack/lib-storage.sh"
# shellcheck source=hack/lib-cgroup2.sh
source "$ROOT/hack/lib-cgroup2.sh"

only=${1:-}
set_only=${E2E_SET:-}
case "$set_only" in "" | smoke) ;; *) echo "test-e2e: E2E_SET must be empty or smoke, not '$set_only'" >&2; exit 2 ;; esac
E="$ROOT/tests/e2e"
log_dir="$ROOT/build/test-e2e"
[ "$PODMAN_LINE" = "$DEFAULT_PODMAN_LINE" ] || log_dir+="-$PODMAN_LINE"
rm -rf "$log_dir"
# shellcheck source=hack/lib-test.sh
source "$ROOT/hack/lib-test.sh"
test_init test-e2e "$E/known-failures.txt" "$log_dir"
[ -z "$only$set_only" ] || TEST_PARTIAL=1

# A case that stopped the registry and failed before restarting it must not
# take the following cases down with it.
registry_back() {
  curl -fs --max-time 2 "http://$REG/v2/" >/dev/null 2>&1 || registry_start "$W/registry" "${REG##*:}" || true
}
TEST_AFTER_CASE=registry_back

# e2e_case NAME FUNCTION [SET]: run_test (hack/lib-test.sh) for the cases the
# PATTERN argument and E2E_SET select; SET "smoke" marks the cases
# E2E_SET=smoke runs. A case's CASE_NO numbers its directories.
e2e_case() {
  local name=$1 fn=$2 set=${3:-}
  if [ -n "$only" ] && [[ "$name" != *"$only"* ]]; then
    return 0
  fi
  if [ -n "$set_only" ] && [ "$set" != "$set_only" ]; then
    return 0
  fi
  run_test "$name" "$fn"
}

if [ "$(id -u)" -ne 0 ]; then
  die "must run as root (podman mounts overlayfs, the runtime needs root)"
fi
for tool in skopeo umoci docker-registry jq python3 curl conmon runc busybox tar; do
  command -v "$tool" >/dev/null || die "$tool missing (make deps)"
done
[ -x /usr/lib/podman/netavark ] || die "netavark missing (make deps)"
reexec_with_cgroup2 "$PODMAN_VERSION" "$0" "$@" || die "podman $PODMAN_VERSION cannot run on this host"

# ------------------------------------------------------------------ build
echo "==> make podman (line $PODMAN_LINE: podman $PODMAN_VERSION, storage $STORAGE_VERSION, image $IMAGE_VERSION)"
start=$SECONDS
if ! "$ROOT/hack/build-podman.sh" >"$log_dir/build-podman.log" 2>&1; then
  tail -n 40 "$log_dir/build-podman.log"
  die "building podman failed"
fi
echo "    $(grep -E 'up to date|built in' "$log_dir/build-podman.log" | tail -1) ($((SECONDS - start))s)"
# The image patches build-podman.sh applies must be what their generator makes.
"$ROOT/hack/gen-image-patches.sh" --check >"$log_dir/gen-image-patches.log" 2>&1 ||
  { cat "$log_dir/gen-image-patches.log"; die "patches/go.podman.io-image@* are stale"; }
PODMAN=$PODMAN_BINARY
echo "    $("$PODMAN" --version) at $PODMAN"
# buildah on the same patched storage (only with the line it is built for,
# hack/versions.env BUILDAH_LINE); a failed build fails its case, not the suite.
BUILDAH= buildah_case="buildah from a CVMFS image, run (chroot), commit, push; podman runs it"
if [ "$PODMAN_LINE" = "$BUILDAH_LINE" ] && [ -z "$set_only" ] && [[ "$buildah_case" == *"$only"* ]]; then
  echo "==> make buildah (buildah $BUILDAH_VERSION)"
  start=$SECONDS
  if BUILDAH=$("$ROOT/hack/build-buildah.sh" 2>"$log_dir/build-buildah.log"); then
    echo "    $(grep -E 'up to date|built in' "$log_dir/build-buildah.log" | tail -1) ($((SECONDS - start))s)"
  else
    tail -n 20 "$log_dir/build-buildah.log"
    echo "    building buildah failed: its case fails"
    BUILDAH=
  fi
fi
echo "==> cargo build --bin cvmfs-podman"
cargo build --release --bin cvmfs-podman --quiet || die "building cvmfs-podman failed"
B="$ROOT/target/release/cvmfs-podman"

# ------------------------------------------------------------------ fixtures
W=$(mktemp -d /tmp/test-e2e.XXXXXX)
R="$W/repo"
cleanup() {
  local d
  # Containers of all cases: stop them through podman, so conmon goes too.
  for d in "$W"/cases/*/; do
    [ -f "$d/env" ] || continue
    (source "$d/env" && pm rm -af -t 0 && pm system reset -f) >/dev/null 2>&1
  done
  registry_stop
  grep -o " $W[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

echo "==> fixtures in $W"
(
  set -e
  # The busybox layer: the static binary and the applets the tests call.
  mkdir -p "$W/bb/bin"
  cp /bin/busybox "$W/bb/bin/busybox"
  for a in sh cat ls find stat echo sleep true test mkdir rm sort cut awk readlink sha256sum; do
    ln -s busybox "$W/bb/bin/$a"
  done
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -cf "$W/busybox.tar" -C "$W/bb" bin
  I="$E/images"
  "$B" make-oci "$W/oci" --tag tiny "$W/busybox.tar" "$I/app.spec"
  "$B" make-oci "$W/oci" --tag wh "$W/busybox.tar" "$I/wh-base.spec" "$I/wh-delete.spec" "$I/wh-top.spec"
  "$B" make-oci "$W/oci" --tag local "$W/busybox.tar" "$I/local.spec"
) >"$log_dir/fixtures.log" 2>&1 || { cat "$log_dir/fixtures.log"; die "building the test images failed"; }

# Without a pids controller no container starts with a pids limit: the
# namespace of hack/lib-cgroup2.sh sets CONTAINERS_CONF_OVERRIDE for that.
if cgroup2_lacks_pids; then
  echo "    cgroup2 without the pids controller: CONTAINERS_CONF_OVERRIDE=${CONTAINERS_CONF_OVERRIDE:-(unset!)}"
fi

registry_start "$W/registry" || die "cannot start docker-registry"
echo "    registry on $REG (pid $REG_PID, access log $REG_LOG)"
(
  set -e
  for t in tiny wh local; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$W/oci:$t" "docker://$REG/e2e/$t:1"
  done
  # What a CVMFS operator does: publish from the registry. "local" stays out.
  for t in tiny wh; do
    "$B" publish "docker://$REG/e2e/$t:1" --tls-verify=false --repo "$R" -q
  done
  "$B" check "$R"
) >"$log_dir/publish.log" 2>&1 || { cat "$log_dir/publish.log"; die "pushing or publishing the test images failed"; }

# helpers --------------------------------------------------------------------
# (Never pipe podman into `grep -q`: grep exits at the first match, podman gets
# SIGPIPE, and with pipefail the check fails at random.)
manifest_of() { # tag -> manifest blob path in the OCI layout
  local d
  d=$(jq -r --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | .digest' "$W/oci/index.json")
  echo "$W/oci/blobs/sha256/${d#sha256:}"
}
config_digest() { jq -r .config.digest "$(manifest_of "$1")"; }
layer_digests() { jq -r '.layers[].digest' "$(manifest_of "$1")"; }
diff_ids() { local c; c=$(config_digest "$1"); jq -r '.rootfs.diff_ids[]' "$W/oci/blobs/sha256/${c#sha256:}"; }
image_id() { local c; c=$(config_digest "$1"); echo "${c#sha256:}"; }
fetch_manifest() { # repository, tag -> the registry's manifest
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REG/v2/$1/manifests/$2"
}

# fresh_blob_info_cache CMD...: run CMD in a private mount namespace with an
# empty tmpfs over podman's (root) blob info cache directory, so nothing that
# earlier cases or other podman runs recorded there can help it.
fresh_blob_info_cache() {
  mkdir -p /var/lib/containers/cache
  unshare -m --propagation private -- bash -c 'mount -t tmpfs tmpfs /var/lib/containers/cache && [ -z "$(ls -A /var/lib/containers/cache)" ] && source "$0" && "$@"' "$C/env" "$@"
}

# new_case [DRIVER]: a fresh graphroot/runroot/tmpdir/HOME for this case and a
# `pm` function running the patched podman in it. DRIVER "overlay" gives a
# stock overlay store without the repository.
new_case() {
  local driver=${1:-cvmfs}
  C="$W/cases/$CASE_NO${2:+-$2}"
  mkdir -p "$C/home/.config/containers" "$C/tmp"
  cp "$E/policy.json" "$C/home/.config/containers/policy.json"
  if [ "$driver" = cvmfs ]; then
    sed -e "s|@GRAPHROOT@|$C/root|; s|@RUNROOT@|$C/run|; s|@REPO@|$R|g" "$E/storage.conf.in" >"$C/storage.conf"
  else
    printf '[storage]\ndriver = "%s"\ngraphroot = "%s"\nrunroot = "%s"\n' "$driver" "$C/root" "$C/run" >"$C/storage.conf"
  fi
  sed -e "s|@REGISTRY@|$REG|" "$E/registries.conf.in" >"$C/registries.conf"
  cat >"$C/env" <<EOF
C=$C
pm() {
  env HOME=$C/home CONTAINERS_CONF=$E/containers.conf CONTAINERS_STORAGE_CONF=$C/storage.conf \\
    CONTAINERS_REGISTRIES_CONF=$C/registries.conf PODMAN_IGNORE_CGROUPSV1_WARNING=1 \\
    $PODMAN --tmpdir $C/tmp "\$@"
}
EOF
  if [ -n "$BUILDAH" ]; then
    cat >>"$C/env" <<EOF
bh() {
  env HOME=$C/home CONTAINERS_CONF=$E/containers.conf \\
    CONTAINERS_STORAGE_CONF=$C/storage.conf CONTAINERS_REGISTRIES_CONF=$C/registries.conf TMPDIR=$C/tmp \\
    $BUILDAH "\$@"
}
EOF
  fi
  # shellcheck disable=SC1091
  source "$C/env"
}

# A checksum of everything in the repository: names, types, modes, owners,
# sizes, times, link targets and file contents.
repo_state() {
  (
    cd "$R"
    find . -printf '%y %m %U:%G %s %T@ %p -> %l\n' | LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -d' ' -f1
}

overlay_mounts_under() { awk -v d="$1/" '$3 == "overlay" && index($2, d) == 1 {print $2}' /proc/self/mounts; }

umoci_rootfs() { # tag -> reference rootfs dir (cached)
  local d="$W/umoci-$1"
  [ -d "$d/rootfs" ] || umoci unpack --image "$W/oci:$1" "$d" >/dev/null
  echo "$d/rootfs"
}

LIST_PATHS=(app bin data etc gone home local opt x built.txt committed.txt)

# ------------------------------------------------------------------ cases
# (1) Run by name from the repository with no registry reachable at all.
t_run_by_name_registry_stopped() {
  new_case
  registry_stop
  curl -fs --max-time 2 "http://$REG/v2/" && fail "the registry still answers"
  local out
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/hello.txt)
  [ "$out" = "hello from cvmfs" ] || fail "container printed '$out'"
  pm images --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.ReadOnly}}' >"$C/images.txt"
  cat "$C/images.txt"
  grep -qx "$REG/e2e/tiny:1 $(image_id tiny | cut -c1-12) true" "$C/images.txt" || fail "podman images does not list the published image"
  grep -q "$REG/e2e/wh:1" "$C/images.txt" || fail "podman images does not list the second published image"
  # Nothing of the image was copied: the local store holds only podman's own
  # state (the container's layer is gone with --rm).
  local used
  used=$(du -sb "$C/root" | cut -f1)
  [ "$used" -lt 1000000 ] || fail "graphroot holds $used bytes after running a CVMFS image"
  registry_start "$W/registry" "${REG##*:}"
}

# (1b) The same with command-line options only, as the man page shows them.
t_run_with_storage_opts() {
  new_case
  : >"$C/storage.conf" # nothing from storage.conf: defaults plus the flags
  local out
  out=$(pm --root "$C/root" --runroot "$C/run" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$R/podmanStore" --storage-opt "cvmfs.repositories=$R" \
    run --rm "$REG/e2e/tiny:1" cat /app/data/1)
  [ "$out" = "one" ] || fail "container printed '$out'"
  pm --root "$C/root" --runroot "$C/run" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$R/podmanStore" --storage-opt "cvmfs.repositories=$R" \
    info --format '{{.Store.GraphDriverName}}' >"$C/driver.txt"
  [ "$(cat "$C/driver.txt")" = cvmfs ] || fail "podman info names the driver $(cat "$C/driver.txt")"
  # An unknown option is refused with a message naming it.
  if pm --root "$C/root" --runroot "$C/run" --storage-driver cvmfs --storage-opt cvmfs.bogus=1 images 2>"$C/err"; then
    fail "an unknown driver option was accepted"
  fi
  cat "$C/err"
  grep -q bogus "$C/err" || fail "the error does not name the unknown option"
}

# (3) Pull and run an image that is not in the repository: its own layer is
# downloaded and stored locally, the busybox layer it shares with a published
# image is taken from CVMFS (a mixed stack).
t_pull_and_run_local_image() {
  new_case
  local mark local_layer bb_layer
  bb_layer=$(layer_digests local | sed -n 1p)
  local_layer=$(layer_digests local | sed -n 2p)
  mark=$(registry_log_mark)
  pm pull "$REG/e2e/local:1"
  registry_requests_since "$mark" | tee "$C/requests.txt"
  grep -q "^GET /v2/e2e/local/blobs/$local_layer 200" "$C/requests.txt" || fail "the local layer was not downloaded"
  if grep -q "blobs/$bb_layer" "$C/requests.txt"; then fail "the busybox layer, which is in CVMFS, was downloaded"; fi
  local out
  out=$(pm run --rm "$REG/e2e/local:1" cat /local/hello.txt)
  [ "$out" = "hello from a local layer" ] || fail "container printed '$out'"
  pm images --format '{{.Repository}}:{{.Tag}} {{.ReadOnly}}' >"$C/images.txt"
  grep -qx "$REG/e2e/local:1 false" "$C/images.txt" || fail "the pulled image is not listed as local: $(cat "$C/images.txt")"
}

# (7) rmi, system prune -a and system reset leave the repository as it was.
t_repo_never_modified() {
  new_case
  local before after
  before=$(repo_state)
  pm run --name keep "$REG/e2e/tiny:1" sh -c 'echo x > /app/new; rm /app/hello.txt'
  pm pull "$REG/e2e/tiny:1"
  pm tag "$REG/e2e/tiny:1" localhost/e2e/alias:1
  pm rmi -f localhost/e2e/alias:1 || true
  pm rmi -f "$REG/e2e/tiny:1" || true # the read-only copy may refuse; it must not change
  pm rmi -af || true
  pm system prune -a -f
  pm system reset -f
  after=$(repo_state)
  [ "$before" = "$after" ] || fail "the repository changed: $before -> $after"
  # ... and it still serves podman after the reset.
  local out
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/hello.txt)
  [ "$out" = "hello from cvmfs" ] || fail "after reset the container printed '$out'"
  [ "$(repo_state)" = "$before" ] || fail "the repository changed after the last run"
}

# (8) 8 containers of one image in parallel; then kill -9 of podman at random
# points of `podman run`, after which podman works and nothing stays mounted.
t_parallel_and_kill9() {
  new_case
  local i pids=() rc=0
  for i in 1 2 3 4 5 6 7 8; do
    pm run --rm --name "par$i" "$REG/e2e/tiny:1" sh -c "cat /app/hello.txt; echo $i > /app/me; cat /app/me" >"$C/par$i.out" 2>"$C/par$i.err" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || { echo "run $((i + 1)) failed"; rc=1; }; done
  for i in 1 2 3 4 5 6 7 8; do
    cat "$C/par$i.out" "$C/par$i.err"
    [ "$(cat "$C/par$i.out")" = "$(printf 'hello from cvmfs\n%s' "$i")" ] || { echo "run $i printed the wrong thing"; rc=1; }
  done
  [ "$rc" -eq 0 ] || fail "parallel runs failed"
  # kill -9 of the podman process while `run` sets the container up (or after:
  # a container started before the kill keeps running under conmon).
  for i in 1 2 3 4 5 6; do
    pm run --name "k$i" "$REG/e2e/tiny:1" sleep 300 >/dev/null 2>&1 &
    local pid=$!
    sleep "0.$((RANDOM % 9))$((RANDOM % 10))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  local out
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/hello.txt)
  [ "$out" = "hello from cvmfs" ] || fail "after kill -9 the container printed '$out'"
  pm ps -a --format '{{.Names}} {{.Status}}' | tee "$C/ps.txt"
  pm rm -af -t 0
  [ -z "$(pm ps -aq)" ] || fail "containers left after rm -af"
  local left
  left=$(overlay_mounts_under "$C")
  [ -z "$left" ] || fail "overlay mounts left after cleanup: $left"
  # and a run after all that still works
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/data/1)
  [ "$out" = "one" ] || fail "final run printed '$out'"
  [ -z "$(overlay_mounts_under "$C")" ] || fail "overlay mounts left after the final run"
}

# (2) Pulling a published image downloads no layer blob.
t_pull_downloads_no_layer() {
  new_case
  local mark cfg
  cfg=$(config_digest tiny)
  mark=$(registry_log_mark)
  pm pull "$REG/e2e/tiny:1"
  registry_requests_since "$mark" | tee "$C/requests.txt"
  grep -q "^GET /v2/e2e/tiny/manifests/1 200" "$C/requests.txt" || fail "no manifest request seen: the log is not what we think"
  local blobs
  blobs=$(grep '/blobs/' "$C/requests.txt" | grep -v "/blobs/$cfg " || true)
  [ -z "$blobs" ] || fail "blobs other than the config were requested: $blobs"
  pm images --format "{{.Repository}}:{{.Tag}} {{.ID}} {{.ReadOnly}}" | tee "$C/images.txt"
  grep -q "^$REG/e2e/tiny:1 " "$C/images.txt" || fail "podman images does not list the pulled image"
  local out
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/hello.txt)
  [ "$out" = "hello from cvmfs" ]
}

# (4) Build FROM a CVMFS image with RUN steps; commit a container; push both.
# Every pushed CVMFS layer must decompress to exactly the original layer tar
# (DiffGetter + tar-split rebuild it from the repository) and the new layers
# must hold the changes in OCI form.
t_build_commit_push() {
  new_case
  mkdir -p "$C/ctx"
  cat >"$C/ctx/Containerfile" <<EOF
FROM $REG/e2e/tiny:1
RUN echo built > /built.txt && rm /app/hello.txt
RUN echo two > /app/data/2 && cat /app/data/1 >> /app/data/2
EOF
  pm build --network none --pull=never -t "$REG/e2e/built:1" "$C/ctx"
  [ "$(pm run --rm "$REG/e2e/built:1" cat /built.txt /app/data/2)" = "$(printf 'built\ntwo\none')" ] || fail "built image content"
  pm run --rm "$REG/e2e/built:1" sh -c 'test ! -e /app/hello.txt' || fail "a file deleted by RUN is visible"

  pm run --name c1 "$REG/e2e/tiny:1" sh -c 'echo committed > /committed.txt; rm /app/data/1'
  pm commit c1 "$REG/e2e/committed:1"
  [ "$(pm run --rm "$REG/e2e/committed:1" cat /committed.txt)" = committed ]
  pm run --rm "$REG/e2e/committed:1" sh -c 'test ! -e /app/data/1' || fail "a file deleted in the committed container is visible"

  local img want_ids
  want_ids=$(diff_ids tiny)
  for img in built committed; do
    pm push "$REG/e2e/$img:1"
    fetch_manifest "e2e/$img" 1 >"$C/$img.manifest"
    local cfg
    cfg=$(jq -r .config.digest "$C/$img.manifest")
    curl -fsS "http://$REG/v2/e2e/$img/blobs/$cfg" >"$C/$img.config"
    [ "$(jq -r '.rootfs.diff_ids[]' "$C/$img.config" | head -n 2)" = "$want_ids" ] || fail "$img: diffIDs of the CVMFS layers changed"
    local d i=0 sum
    for d in $(jq -r '.layers[].digest' "$C/$img.manifest" | head -n 2); do
      i=$((i + 1))
      sum=$(curl -fsS "http://$REG/v2/e2e/$img/blobs/$d" | gzip -dc | sha256sum | cut -d' ' -f1)
      [ "sha256:$sum" = "$(echo "$want_ids" | sed -n "${i}p")" ] || fail "$img: pushed layer $i decompresses to sha256:$sum, not the original tar"
    done
  done
  local top
  top=$(jq -r '.layers[-1].digest' "$C/committed.manifest")
  curl -fsS "http://$REG/v2/e2e/committed/blobs/$top" | gzip -dc | tar -t >"$C/top.list"
  cat "$C/top.list"
  grep -qx 'committed.txt' "$C/top.list" || fail "committed.txt missing from the committed layer"
  grep -qx 'app/data/.wh.1' "$C/top.list" || fail "no whiteout for app/data/1 in the committed layer"
}

# (4b) The pushed blobs of the CVMFS layers have exactly the original digests,
# on the path users take: run by name (no pull: the image comes from the
# additional store) -> commit -> push, and build FROM -> push, each into the
# repository that holds the originals. push runs with an empty blob info cache
# (a tmpfs over podman's cache directory in a private mount namespace), as on a
# machine that never pulled anything: what it knows must come from the store.
t_push_keeps_original_digests() {
  new_case
  local want
  want=$(layer_digests tiny)
  pm run --name c1 "$REG/e2e/tiny:1" sh -c 'echo committed > /committed.txt'
  pm commit c1 "$REG/e2e/tiny:committed"
  mkdir -p "$C/ctx"
  printf 'FROM %s\nRUN echo built > /built.txt\n' "$REG/e2e/tiny:1" >"$C/ctx/Containerfile"
  pm build --network none --pull=never -t "$REG/e2e/tiny:built" "$C/ctx"
  local tag got
  for tag in committed built; do
    fresh_blob_info_cache pm --log-level debug push "$REG/e2e/tiny:$tag" >"$C/push-$tag.log" 2>&1 ||
      { tail -n 40 "$C/push-$tag.log"; fail "push of tiny:$tag failed"; }
    grep -E 'BlobInfoCache|stored from blob|Skipping blob|Trying to reuse' "$C/push-$tag.log" || true
    fetch_manifest e2e/tiny "$tag" >"$C/manifest-$tag"
    got=$(jq -r '.layers[].digest' "$C/manifest-$tag" | head -n 2)
    [ "$got" = "$want" ] || fail "tiny:$tag: pushed blobs of the CVMFS layers are $(echo $got), originals $(echo $want)"
    [ "$(jq '.layers | length' "$C/manifest-$tag")" -eq 3 ] || fail "tiny:$tag: expected 3 layers"
  done
}

# (5) save from cvmfs, load into a stock overlay store: same files.
t_save_load_overlay() {
  new_case
  pm save -o "$W/wh-save.tar" "$REG/e2e/wh:1"
  # The archive's layer tars are the original layers byte for byte.
  mkdir -p "$C/save"
  tar -xf "$W/wh-save.tar" -C "$C/save"
  jq -r '.[0].Layers[]' "$C/save/manifest.json" | while read -r l; do sha256sum "$C/save/$l" | cut -d' ' -f1; done |
    sed 's/^/sha256:/' >"$C/save-ids.txt"
  diff <(diff_ids wh) "$C/save-ids.txt" || fail "saved layers are not the original layer tars"
  pm run --name src "$REG/e2e/wh:1" true
  local m
  m=$(pm mount src)
  python3 "$E/tree.py" "$m" --exclude etc/hosts --exclude etc/hostname --exclude etc/resolv.conf --exclude etc/mtab \
    --exclude run/.containerenv --exclude dev --exclude proc --exclude sys --exclude run/secrets >"$C/cvmfs.tree"
  pm umount src

  local cvmfs_case=$C
  new_case overlay ovl
  pm load -i "$W/wh-save.tar"
  [ "$(pm info --format '{{.Store.GraphDriverName}}')" = overlay ] || fail "the second store does not use overlay"
  pm run --name dst "$REG/e2e/wh:1" true
  m=$(pm mount dst)
  python3 "$E/tree.py" "$m" --exclude etc/hosts --exclude etc/hostname --exclude etc/resolv.conf --exclude etc/mtab \
    --exclude run/.containerenv --exclude dev --exclude proc --exclude sys --exclude run/secrets >"$C/overlay.tree"
  pm umount dst
  diff "$cvmfs_case/cvmfs.tree" "$C/overlay.tree" || fail "the overlay container sees other files than the cvmfs one"
  pm rm -af -t 0
  pm system reset -f
}

# (6) Whiteouts and opaque directories: the container sees the OCI rootfs.
t_whiteouts_match_umoci() {
  new_case
  local ref
  ref=$(umoci_rootfs wh)
  # Inside the container, with busybox (what a process in it sees) ...
  pm run --rm -v "$E/list.sh:/e2e-list.sh:ro" "$REG/e2e/wh:1" sh /e2e-list.sh / "${LIST_PATHS[@]}" >"$C/container.list"
  sh "$E/list.sh" "$ref" "${LIST_PATHS[@]}" >"$C/umoci.list"
  diff "$C/umoci.list" "$C/container.list" || fail "find/stat in the container differ from umoci unpack"
  grep -q '^data/x/3|' "$C/container.list" || fail "listing incomplete"
  # ... and from the host through podman mount, with xattrs and device numbers.
  pm run --name w "$REG/e2e/wh:1" true
  local m
  m=$(pm mount w)
  python3 "$E/tree.py" "$m" --exclude etc/hosts --exclude etc/hostname --exclude etc/resolv.conf --exclude etc/mtab \
    --exclude run --exclude dev --exclude proc --exclude sys >"$C/container.tree"
  python3 "$E/tree.py" "$ref" --exclude run --exclude dev --exclude proc --exclude sys >"$C/umoci.tree"
  pm umount w
  diff "$C/umoci.tree" "$C/container.tree" || fail "the mounted rootfs differs from umoci unpack"
}

# (9) buildah on the same store: from a CVMFS image (no pull), run with chroot
# isolation, commit, push; podman runs the result and the push keeps the
# original blobs of the CVMFS layers.
t_buildah_from_run_commit_push() {
  [ -n "$BUILDAH" ] || fail "build/bin/buildah was not built (log $log_dir/build-buildah.log)"
  new_case
  local ctr out want
  ctr=$(bh from --pull=never "$REG/e2e/tiny:1")
  bh run --isolation chroot "$ctr" -- sh -c 'echo from buildah > /buildah.txt; rm /app/hello.txt; cat /app/data/1'
  bh commit "$ctr" "$REG/e2e/tiny:buildah"
  bh rm "$ctr"
  out=$(pm run --rm "$REG/e2e/tiny:buildah" cat /buildah.txt /app/data/1)
  [ "$out" = "$(printf 'from buildah\none')" ] || fail "podman ran buildah's image and got '$out'"
  pm run --rm "$REG/e2e/tiny:buildah" sh -c 'test ! -e /app/hello.txt' || fail "a file deleted in buildah's container is visible"
  # The base image's layers stayed in CVMFS: nothing of them was copied.
  local used
  used=$(du -sb "$C/root" | cut -f1)
  [ "$used" -lt 1000000 ] || fail "graphroot holds $used bytes after buildah from/commit of a CVMFS image"
  want=$(layer_digests tiny)
  bh push --tls-verify=false "$REG/e2e/tiny:buildah"
  fetch_manifest e2e/tiny buildah >"$C/manifest"
  [ "$(jq -r '.layers[].digest' "$C/manifest" | head -n 2)" = "$want" ] || fail "buildah push changed the blobs of the CVMFS layers"
  [ "$(jq '.layers | length' "$C/manifest")" -eq 3 ] || fail "expected 3 layers"
}

# (13) Deep stacks (issue 13 item 6): 150, 320 and 500-layer images whose
# layers are stacked as DUCC's are (cvmfs.use_flat=false: no flat tree), each
# layer deleting the file of the one below, so every layer also takes a
# whiteout layer (500 layers: two mounts of 500 lowers). All three run with
# runc at once while another container starts beside them; every overlay line
# of /proc/self/mountinfo stays under 8 KiB (runc reads mountinfo with a
# 64 KiB line limit: full lower paths made 94 KB lines, and 321 layers failed
# with "bufio.Scanner: token too long"). The lengths go to deep-stacks.txt.
t_deep_stacks_with_runc() {
  local D="$W/deep" n i last
  local R="$D/repo" # new_case points the store at this repository
  mkdir -p "$D/specs"
  for i in $(seq 1 499); do
    {
      echo "dir /m 0755"
      echo "file /m/f$i 0644 \"$i\\n\""
      [ "$i" -lt 2 ] || echo "whiteout /m/f$((i - 1))"
    } >"$D/specs/$i.spec"
  done
  for n in 150 320 500; do
    local specs=()
    for i in $(seq 1 $((n - 1))); do specs+=("$D/specs/$i.spec"); done
    "$B" make-oci "$D/oci" --tag "deep$n" "$W/busybox.tar" "${specs[@]}" >/dev/null
    skopeo copy --quiet --dest-tls-verify=false "oci:$D/oci:deep$n" "docker://$REG/e2e/deep$n:1"
    "$B" publish "docker://$REG/e2e/deep$n:1" --tls-verify=false --repo "$R" -q
  done
  new_case
  printf 'use_flat = "false"\n' >>"$C/storage.conf"
  for n in 150 320 500; do
    last=$((n - 1))
    pm run -d --name "deep$n" "$REG/e2e/deep$n:1" sleep 300
    [ "$(pm exec "deep$n" cat "/m/f$last")" = "$last" ] || fail "deep$n: /m/f$last is not '$last'"
    pm exec "deep$n" test ! -e "/m/f$((last - 1))" || fail "deep$n: a deleted file is visible"
  done
  # runc reads mountinfo for every container it creates.
  [ "$(pm run --rm --name beside "$REG/e2e/deep150:1" cat /m/f149)" = 149 ] ||
    fail "a container beside the deep ones did not start"
  awk -v d="$C/" 'index($5, d) == 1 && / - overlay / {
      n = gsub(/lowerdir\+=/, "&"); print length($0) " bytes, " n " lowers: " $5 }' \
    /proc/self/mountinfo | sort -n | tee "$log_dir/deep-stacks.txt"
  local longest
  longest=$(sort -n "$log_dir/deep-stacks.txt" | tail -1 | cut -d' ' -f1)
  [ "${longest:-0}" -gt 4000 ] || fail "no deep overlay mount found (longest line ${longest:-none})"
  [ "$longest" -lt 8192 ] || fail "a mountinfo line has $longest bytes"
  pm rm -af -t 0
  [ -z "$(overlay_mounts_under "$C")" ] || fail "overlay mounts left after rm -af"
}

# (14) A slow repository is not an unreachable one (issue 13 item 4): a
# repository served through a FUSE view whose first requests take 2 s each
# (its daemon stopped for 2 s at a time, 8 times), as a cold client's first
# catalog loads do. podman run waits and succeeds (the former 1 s default
# failed "no answer within 1.0s"); the driver's progress lines, if a probe
# waited over 3 s, are on podman's stderr.
t_slow_first_access() {
  local S="$W/slow" start took out
  local R="$S/repo" # new_case points the store at this repository
  "$B" publish "docker://$REG/e2e/tiny:1" --tls-verify=false --repo "$R" -q
  # The records name $R: the view of the published tree is mounted there.
  mv "$R" "$S/src"
  mkdir "$R"
  fuse-overlayfs -f -o "lowerdir=$S/src" "$R" &
  # Not local: the EXIT trap (the case's subshell) needs them.
  view=$! stopper= view_at=$R
  trap 'rc_before=$?; set +e; [ -z "$stopper" ] || kill "$stopper" 2>/dev/null; kill -CONT "$view"; umount -l "$view_at"; kill "$view"; exit "$rc_before"' EXIT
  for _ in $(seq 100); do [ -d "$R/podmanStore" ] && break; sleep 0.1; done
  [ -d "$R/podmanStore" ] || fail "the FUSE view did not come up"
  new_case
  (for _ in 1 2 3 4 5 6 7 8; do
    kill -STOP "$view"
    sleep 2
    kill -CONT "$view"
    sleep 0.05
  done) &
  stopper=$!
  start=$SECONDS
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/hello.txt 2>"$C/err") || { cat "$C/err"; fail "podman run failed on a slow repository"; }
  took=$((SECONDS - start))
  cat "$C/err"
  [ "$out" = "hello from cvmfs" ] || fail "container printed '$out'"
  [ "$took" -ge 2 ] || fail "the view was not slow (run took ${took}s)"
  echo "podman run on a repository answering its first requests after 2 s: ${took}s" | tee "$log_dir/slow-first-access.txt"
  grep 'cvmfs: waiting for' "$C/err" | tee -a "$log_dir/slow-first-access.txt" || true
  wait "$stopper"
  pm rm -af -t 0
}

# (11b) A client that claims ownership (CVMFS_CLAIM_OWNERSHIP=yes, CVMFS's
# default) shows every file as owned by its cvmfs2 process. Emulated by the
# project's FUSE view (bench/fuselat -claim-uid 4242: every owner reported as
# 4242:4242, raw .wh.* names passed through, no extra stacking level, like
# cvmfs2). The driver notices it from the records' owner probes, says so in
# `podman info` with the fix, and the container still shows the image's owners.
t_claim_ownership_view() {
  local S="$W/claim" out want status
  local R="$S/repo" # new_case points the store at this repository
  mkdir -p "$S"
  (cd "$ROOT/bench/fuselat" && GOFLAGS=-mod=mod go build -o "$S/fuselat" .) >"$S/build.log" 2>&1 ||
    { cat "$S/build.log"; fail "building bench/fuselat failed"; }
  "$B" publish "docker://$REG/e2e/wh:1" --tls-verify=false --repo "$R" -q
  # The records name $R: the view of the published tree is mounted there.
  mv "$R" "$S/src"
  mkdir "$R"
  "$S/fuselat" -latency 0 -bandwidth 0 -claim-uid 4242 "$S/src" "$R" 2>"$S/fuselat.log" &
  # Not local: the EXIT trap (the case's subshell) needs them.
  view=$! view_at=$R
  trap 'rc_before=$?; set +e; umount -l "$view_at"; kill "$view"; exit "$rc_before"' EXIT
  for _ in $(seq 100); do [ -d "$R/podmanStore" ] && break; sleep 0.1; done
  [ -d "$R/podmanStore" ] || fail "the FUSE view did not come up: $(cat "$S/fuselat.log")"
  [ "$(stat -c %u:%g "$R/podmanStore/cvmfs")" = 4242:4242 ] || fail "the view does not claim ownership"
  new_case
  out=$(pm run --rm "$REG/e2e/wh:1" stat -c '%u:%g %a %n' /home/user/.profile /x/passwd /etc/b /opt/tool /bin/busybox) ||
    fail "podman run failed on a claim-ownership client"
  want="1000:1000 640 /home/user/.profile
0:0 4755 /x/passwd
2000:2000 600 /etc/b
1000:100 755 /opt/tool
0:0 755 /bin/busybox"
  [ "$out" = "$want" ] || fail "owners in the container:
$out
expected:
$want"
  pm info --format '{{json .Store.GraphStatus}}' >"$C/status.json"
  status=$(jq -r '."CVMFS Client Owners"' "$C/status.json")
  echo "podman info: CVMFS Client Owners: $status" | tee "$log_dir/claim-ownership.txt"
  [[ "$status" == *"the client does not show the owners the repository holds"* ]] || fail "podman info does not report the claiming client"
  [[ "$status" == *"shown as 4242:4242"* ]] || fail "podman info does not say what the client shows"
  [[ "$status" == *"fix: set CVMFS_CLAIM_OWNERSHIP=no in /etc/cvmfs/config.d/repo.local"* ]] || fail "podman info does not give the fix"
  # Where the kernel has EROFS the owners are owner images, each built from
  # the layer's tar-split (our publisher wrote one per layer), not walked.
  if grep -qw erofs /proc/filesystems; then
    local images from_split
    images=$(find "$C/root/cvmfs/aux" -maxdepth 1 -name '*.erofs' | wc -l)
    from_split=$(find "$C/root/cvmfs/aux" -maxdepth 1 -name '*-ts1-*.erofs' | wc -l)
    echo "owner images: $images, from tar-splits: $from_split" | tee -a "$log_dir/claim-ownership.txt"
    [ "$images" -gt 0 ] && [ "$from_split" -eq "$images" ] ||
      fail "owner images not all built from the layers' tar-splits ($from_split of $images)"
  fi
  pm rm -af -t 0
}

# (15) Round trips on podman's start path (issue 13 item 5): the repository
# behind bench/fuselat without delay, whose log lists every object a cold
# CVMFS client would download. `podman run` by name with a fresh driver home,
# again with a new (cold) view and the same home, then after a second image
# is published. Repository objects outside the image's own files are counted
# by kind; before the store views and the record cache (crates/driver/src/
# mirror.rs) every run fetched 7, one after another (2 lock files, 2 indexes,
# manifest, config, layer record).
FUSELAT=
fuselat_bin() {
  if [ -z "$FUSELAT" ]; then
    (cd "$ROOT/bench/fuselat" && GOFLAGS=-mod=mod go build -o "$W/fuselat" .) || return 1
    FUSELAT="$W/fuselat"
  fi
}
# rtt_view_up SRC MNT LOG / rtt_view_down MNT: a fuselat view, stopped by PID.
rtt_view_up() {
  # -catalogs: nested catalog loads are logged too (chunk -2), as a client
  # downloads them on the first access beneath each .cvmfscatalog.
  "$FUSELAT" -catalogs -latency 0 -bandwidth 0 -log "$3" "$1" "$2" 2>>"$W/fuselat-rtt.log" &
  RTT_VIEW=$!
  for _ in $(seq 50); do mountpoint -q "$2" && return 0; sleep 0.1; done
  fail "fuselat did not mount $2"
}
rtt_view_down() {
  [ -n "${RTT_VIEW:-}" ] || return 0
  # podman's cleanup process (conmon starts it when the container exits;
  # `podman run --rm` may have returned before it ends) must still find the
  # repository: without it the driver hands containers/storage the store's
  # own path, and containers/storage makes its directories in the empty
  # mount point.
  local _
  for _ in $(seq 100); do
    pgrep -f -- "$C/root" >/dev/null || break
    sleep 0.1
  done
  kill "$RTT_VIEW" 2>/dev/null || true
  wait "$RTT_VIEW" 2>/dev/null || true
  RTT_VIEW=
  if mountpoint -q "$1"; then umount -l "$1"; fi
}
# rtt_count LOG SRC: fetches outside the image's files, by kind; sets RTT_STORE
# (catalog loads are listed, not counted in it).
rtt_count() {
  local kinds
  kinds=$(awk -F'\t' '$2 == -2 { print "catalog\t" $3; next } { print "file\t" $3 }' "$1" | sed "s|\t$2/|\t|" | awk -F'\t' '
    $1 == "catalog" { k["catalog load: " $2]++; next }
    { $0 = $2 }
    /^podmanStore\/.*\.lock$/ { k["lock file"]++; next }
    /^podmanStore\/cvmfs-(images\/images|layers\/layers)\.json$/ { k["index (images.json, layers.json)"]++; next }
    /^podmanStore\/cvmfs-images\// { k["image big data (manifest, config)"]++; next }
    /^podmanStore\/cvmfs\/layers\// { k["layer record"]++; next }
    /^podmanStore\// { k["other store file: " $0]++; next }
    { k["image files"]++ }
    END { for (n in k) printf "%4d  %s\n", k[n], n }' | sort -k2)
  echo "$kinds"
  RTT_STORE=$(echo "$kinds" | awk '!/image files|catalog load/ {s += $1} END {print s + 0}')
  echo "     = $RTT_STORE store fetches"
}
# rtt_report NAME TITLE: the repository fetches of run NAME ($S/NAME.txt,
# fuselat's log) counted into the case's report; sets RTT_STORE. Uses the
# caller's S and report.
rtt_report() {
  { echo "$2:"; rtt_count "$S/$1.txt" "$S/src"; } >"$S/count-$1.txt"
  tee -a "$report" <"$S/count-$1.txt"
}

# rtt_tiny_run NAME TITLE: podman runs the tiny image by name through a new
# cold view of $S/src at $R (log $S/NAME.txt), then rtt_report.
rtt_tiny_run() {
  local out
  rtt_view_up "$S/src" "$R" "$S/$1.txt"
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/hello.txt)
  [ "$out" = "hello from cvmfs" ] || fail "$2: container printed '$out'"
  rtt_view_down "$R"
  rtt_report "$1" "$2"
}

t_start_path_round_trips() {
  fuselat_bin || fail "cannot build bench/fuselat"
  local S="$W/rtt" out
  local R="$S/repo" # new_case points the store at this repository
  "$B" publish "docker://$REG/e2e/tiny:1" --tls-verify=false --repo "$R" -q
  mv "$R" "$S/src" && mkdir "$R"
  # What a CVMFS client shows on every path: the repository revision
  # (fuselat passes the source's xattrs through; a publish bumps it).
  setfattr -n user.revision -v 1 "$S/src"
  trap 'rc_before=$?; set +e; rtt_view_down "$R"; exit "$rc_before"' EXIT
  new_case
  local report="$log_dir/start-path-round-trips.txt"
  : >"$report"
  rtt_tiny_run run1 "podman run by name, fresh driver home, cold view"
  local cold=$RTT_STORE
  # The publisher keeps the indexes in the store's catalog: a fresh home
  # loads no catalog of their own.
  ! grep -qE 'podmanStore/cvmfs-(images|layers)/\.cvmfscatalog' "$S/run1.txt" ||
    fail "the indexes have catalogs of their own (publisher layout)"
  # Nor the records (small store), and the image's start links name its top
  # layer's record, which the driver reads beside the indexes.
  ! grep -q 'podmanStore/cvmfs/\.cvmfscatalog' "$S/run1.txt" ||
    fail "the records have a catalog of their own (publisher layout)"
  local top_record
  top_record=$(readlink -f "$S/src/podmanStore/cvmfs/start/$(image_id tiny)/record")
  [ "$top_record" = "$S/src/podmanStore/cvmfs/layers/$(jq -r '.[0].layer' "$S/src/podmanStore/cvmfs-images/images.json")/layer.json" ] ||
    fail "the start link names '$top_record', not the image's top layer record"
  grep -q "podmanStore/cvmfs/layers/.*/layer.json" "$S/run1.txt" || fail "the top layer record was not read"
  # The runs below: a store published before that layout (the indexes and
  # the records in catalogs of their own), which must read the same; its catalog loads
  # show whether the indexes' identity was asked.
  touch "$S/src/podmanStore/cvmfs-images/.cvmfscatalog" "$S/src/podmanStore/cvmfs-layers/.cvmfscatalog" \
    "$S/src/podmanStore/cvmfs/.cvmfscatalog"
  rtt_tiny_run run2 "again: same driver home, same revision, new cold view"
  local warm=$RTT_STORE
  ! grep -q '\.lock$' "$S/run1.txt" "$S/run2.txt" || fail "lock files were read from the repository"
  # Fresh home: the 2 indexes (read together), the files of the image's
  # directory (manifest, its digest-named copy, config; read ahead together
  # with the record) and the top layer's record.
  local bigdata
  bigdata=$(find "$S/src/podmanStore/cvmfs-images/$(image_id tiny)" -type f | wc -l)
  [ "$cold" -le $((3 + bigdata)) ] || fail "$cold store fetches with a fresh driver home (at most $((3 + bigdata)))"
  # Warm home: manifest and config were copied into the view (digests
  # checked), the record is in the record cache, the revision is the same:
  # nothing of the store is read.
  [ "$warm" -eq 0 ] || fail "$warm store fetches with a warm driver home (none expected)"
  # What a container of tiny runs first (its Cmd, /bin/sh: busybox) is
  # linked from its start directory; the warm home, which guesses no image,
  # fetched it at Get all the same (no profile: the start links instead).
  local start_dir exec0 last
  start_dir="$S/src/podmanStore/cvmfs/start/$(image_id tiny)"
  exec0=$(readlink "$start_dir/exec-0") || fail "tiny has no exec-0 start link"
  [ -f "$start_dir/$exec0" ] || fail "exec-0 leads to '$exec0', not a file of the repository"
  # (with the repository mounted: containers/storage makes the store's
  # directories in an empty mount point)
  rtt_view_up "$S/src" "$R" "$S/info.txt"
  pm info --format '{{json .Store.GraphStatus}}' >"$S/status.json"
  rtt_view_down "$R"
  last=$(jq -r '."Prefetch Last" // ""' "$S/status.json")
  echo "prefetch of the warm run: $last" | tee -a "$report"
  echo "$last" | grep -qE "done: ([0-9]+)/\1 files.*the start links of image $(image_id tiny)" ||
    fail "the warm run did not fetch the start links' files: '$last'"
  # Under the same revision the indexes' identity is not asked: their
  # catalogs (a download each on a cold client) are not loaded.
  ! grep -qE 'podmanStore/cvmfs-(images|layers)/\.cvmfscatalog' "$S/run2.txt" ||
    fail "a warm home under the same revision loaded the indexes' catalogs: $(grep -E 'cvmfs-(images|layers)/' "$S/run2.txt" | tr '\n' ' ')"
  # The same without a revision (a client that shows none): the indexes'
  # identity is asked (metadata), still nothing read.
  setfattr -x user.revision "$S/src"
  rtt_tiny_run run2b "again, no revision shown"
  [ "$RTT_STORE" -eq 0 ] || fail "$RTT_STORE store fetches with a warm driver home and no revision (none expected)"
  grep -q 'podmanStore/cvmfs-images/\.cvmfscatalog' "$S/run2b.txt" ||
    fail "without a revision the indexes' identity must be asked (their catalogs loaded)"
  setfattr -n user.revision -v 1 "$S/src"
  # A publish is seen at once: it changes the revision, and the views and
  # cached records are keyed by what the repository shows, not by time.
  mv "$S/src" "$R.tmp" && rmdir "$R" && mv "$R.tmp" "$R" ||
    fail "cannot put the repository back at $R: $(find "$R" -maxdepth 3 | head -n 5 | tr '\n' ' ')"
  "$B" publish "docker://$REG/e2e/wh:1" --tls-verify=false --repo "$R" -q
  mv "$R" "$S/src" && mkdir "$R"
  setfattr -n user.revision -v 2 "$S/src"
  rtt_view_up "$S/src" "$R" "$S/run3.txt"
  out=$(pm run --rm "$REG/e2e/wh:1" cat /data/keep 2>&1) || fail "the image published after the first runs does not run: $out"
  pm images --format '{{.Repository}}:{{.Tag}}' >"$S/images.txt"
  rtt_view_down "$R"
  rtt_report run3 "after publishing a second image (revision 2), running it"
  grep -qx "$REG/e2e/wh:1" "$S/images.txt" || fail "podman images does not list the new image: $(cat "$S/images.txt")"
  grep -qx "$REG/e2e/tiny:1" "$S/images.txt" || fail "podman images lost the first image: $(cat "$S/images.txt")"
  pm rm -af -t 0
}

# (12) A repository as DUCC leaves it: its layers (raw whiteout markers, owners
# lost), manifest copies and its own legacy podmanStore (overlay-images,
# overlay-layers: layer ID = diffID), none of our records, mounted read-only.
# The user names it with cvmfs.ducc_repositories and runs its images by name,
# offline; the driver builds a store for it in its home (crates/driver/src/ducc/).
make_ducc_repo() { # tag, dir
  local tag=$1 D=$2 name="$REG/e2e/$1:1" c top prev="" blob diff
  "$B" publish "docker://$name" --tls-verify=false --repo "$D" -q
  # Everything of ours goes; DUCC ingests without owners (only what is not
  # 0:0 is chowned: chown clears setuid bits, which DUCC keeps).
  rm -rf "$D/podmanStore"
  find "$D"/.layers/*/*/layerfs \( ! -uid 0 -o ! -gid 0 \) -exec chown -h 0:0 {} +
  c=$(image_id "$tag")
  top=$(diff_ids "$tag" | tail -1)
  local ps="$D/podmanStore" oi="$D/podmanStore/overlay-images" ol="$D/podmanStore/overlay-layers"
  mkdir -p "$oi/$c" "$ol" "$ps/overlay/l"
  cp "$W/oci/blobs/sha256/$c" "$oi/$c/=$(printf 'sha256:%s' "$c" | base64 -w0)"
  ln -s "../../../.metadata/$name/manifest.json" "$oi/$c/manifest"
  [ -f "$oi/$c/manifest" ] || fail "no DUCC manifest copy at .metadata/$name"
  jq -n --arg c "$c" --arg n "$name" --arg l "${top#sha256:}" \
    '[{id: $c, names: [$n], layer: $l, created: "2024-01-02T03:04:05Z"}]' >"$oi/images.json"
  echo '[]' >"$ol/layers.json"
  while read -r blob diff; do
    blob=${blob#sha256:} diff=${diff#sha256:}
    jq --arg id "$diff" --arg p "$prev" --arg b "sha256:$blob" \
      '. + [{id: $id, parent: $p, "compressed-diff-digest": $b, "diff-digest": ("sha256:" + $id)}]' \
      "$ol/layers.json" >"$ol/layers.json.new" && mv "$ol/layers.json.new" "$ol/layers.json"
    mkdir -p "$ps/overlay/$diff"
    ln -s "../../../.layers/${blob:0:2}/$blob/layerfs" "$ps/overlay/$diff/diff"
    prev=$diff
  done < <(paste -d' ' <(layer_digests "$tag") <(diff_ids "$tag"))
  : >"$oi/images.lock"
  : >"$ol/layers.lock"
}

t_ducc_repository_as_is() {
  local D="$W/ducc-src" RO="$W/ducc-ro" out ref state
  make_ducc_repo wh "$D"
  mkdir -p "$RO"
  mount --bind "$D" "$RO"
  mount -o remount,bind,ro "$RO"
  trap 'umount -l "'"$RO"'"' EXIT
  touch "$RO/x" 2>/dev/null && fail "the bind mount is writable"
  state=$( (cd "$D" && find . -printf '%y %m %U:%G %s %T@ %p -> %l\n' | LC_ALL=C sort) | sha256sum)
  new_case
  : >"$C/storage.conf"
  pm_conf() {
    env HOME="$C/home" CONTAINERS_CONF="$E/containers.conf" CONTAINERS_REGISTRIES_CONF="$C/registries.conf" \
      PODMAN_IGNORE_CGROUPSV1_WARNING=1 CONTAINERS_STORAGE_CONF="$CONTAINERS_STORAGE_CONF" "$PODMAN" --tmpdir "$C/tmp" "$@"
  }
  # dpm_in ROOT RUN ...: podman on DUCC's repository with graphroot ROOT
  dpm_in() { pm --root "$1" --runroot "$2" --storage-driver cvmfs --storage-opt "cvmfs.ducc_repositories=$RO" "${@:3}"; }
  dpm() { dpm_in "$C/root" "$C/run" "$@"; }
  registry_stop
  # DUCC's store named as an image store, as DUCC's users configure it for
  # overlay (this failed: mkdir .../podmanStore/cvmfs-layers: read-only file
  # system), is taken as a DUCC repository; listed on demand (the default),
  # podman finds the image by name, offline, and lists it from then on.
  local pm0=(pm --root "$C/root0" --runroot "$C/run0" --storage-driver cvmfs --storage-opt "cvmfs.imagestore=$RO/podmanStore")
  out=$("${pm0[@]}" run --rm "$REG/e2e/wh:1" cat /etc/b 2>&1) || fail "DUCC's podmanStore as an image store: run: $out"
  "${pm0[@]}" images --format '{{.Repository}}:{{.Tag}} {{.ReadOnly}}' >"$C/images0.txt"
  grep -qx "$REG/e2e/wh:1 true" "$C/images0.txt" || fail "DUCC's podmanStore as an image store: $(cat "$C/images0.txt")"
  # Nothing is listed before it is asked for; a name DUCC does not hold
  # fails as usual (offline: no such image).
  dpm images --format '{{.Repository}}:{{.Tag}}' >"$C/images-before.txt"
  [ ! -s "$C/images-before.txt" ] || fail "on demand, a fresh home lists images before any is used: $(cat "$C/images-before.txt")"
  if dpm run --rm "$REG/e2e/nothing:1" true >"$C/miss.txt" 2>&1; then fail "an image DUCC does not hold ran"; fi
  # Whiteouts exact: the same listing as umoci unpack, owners aside (DUCC lost them).
  ref=$(umoci_rootfs wh)
  dpm run --rm -v "$E/list.sh:/e2e-list.sh:ro" "$REG/e2e/wh:1" sh /e2e-list.sh / "${LIST_PATHS[@]}" >"$C/container.list"
  dpm images --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.ReadOnly}}' >"$C/images.txt"
  cat "$C/images.txt"
  grep -qx "$REG/e2e/wh:1 $(image_id wh | cut -c1-12) true" "$C/images.txt" || fail "podman images does not list DUCC's image once used"
  sh "$E/list.sh" "$ref" "${LIST_PATHS[@]}" >"$C/umoci.list"
  no_owner() { sed -E 's/\|([0-7]+) [0-9]+:[0-9]+\|/|\1 owner|/' "$1"; }
  diff <(no_owner "$C/umoci.list") <(no_owner "$C/container.list") || fail "DUCC's image differs from umoci unpack (owners aside)"
  grep -q '^data/x/3|' "$C/container.list" || fail "listing incomplete"
  if grep -q '\.wh\.' "$C/container.list"; then fail "a whiteout marker is visible"; fi
  # Owners are reported as lost (every file the repository owner's).
  grep -q '^home/user|directory|700 0:0|' "$C/container.list" || fail "owners: expected the repository owner on /home/user"
  out=$(dpm run --rm "$REG/e2e/wh:1" cat /etc/b)
  [ "$out" = "b2" ] || fail "container printed '$out'"
  # The same from storage.conf, limited to the images asked for, every one
  # listed at once (ducc_listing = "all").
  cat >"$C/storage-ducc.conf" <<EOF
[storage]
driver = "cvmfs"
graphroot = "$C/root2"
runroot = "$C/run2"
[storage.options.cvmfs]
ducc_repositories = "$RO"
ducc_images = "$REG/e2e/w*"
ducc_listing = "all"
EOF
  CONTAINERS_STORAGE_CONF=$C/storage-ducc.conf pm_conf images --format '{{.Repository}}:{{.Tag}} {{.ReadOnly}}' >"$C/images2.txt"
  grep -qx "$REG/e2e/wh:1 true" "$C/images2.txt" || fail "storage.conf ducc_repositories: $(cat "$C/images2.txt")"
  # Pull downloads no layer: the layer IDs are containers/image's. Both in
  # the home that ran the image and in a fresh one that never did (there
  # the lookups by digest ask the driver, which lists the layers).
  registry_start "$W/registry" "${REG##*:}"
  local mark cfg blobs root
  cfg=$(config_digest wh)
  for root in root root3; do
    local run=$C/run${root#root}
    mark=$(registry_log_mark)
    dpm_in "$C/$root" "$run" pull "$REG/e2e/wh:1"
    registry_requests_since "$mark" | tee "$C/requests-$root.txt"
    grep -q "^GET /v2/e2e/wh/manifests/1 200" "$C/requests-$root.txt" || fail "$root: no manifest request seen"
    blobs=$(grep '/blobs/' "$C/requests-$root.txt" | grep -v "/blobs/$cfg " || true)
    [ -z "$blobs" ] || fail "$root: blobs other than the config were requested: $blobs"
    # no layer was stored locally: the pull found all of them in the DUCC store
    local lj="$C/$root/cvmfs-layers/layers.json"
    [ ! -s "$lj" ] || [ "$(jq length "$lj")" = 0 ] || fail "$root: the pull stored layers locally: $(cat "$lj")"
    out=$(dpm_in "$C/$root" "$run" run --rm "$REG/e2e/wh:1" cat /etc/a/new)
    [ "$out" = "a is a directory now" ] || fail "$root: after the pull the container printed '$out'"
  done
  dpm_in "$C/root3" "$C/run3" rm -af -t 0
  # Owners restored from the registry's layer blobs (tar headers streamed into
  # the driver home): the container then equals umoci unpack, owners included.
  "$B" owners "docker://$REG/e2e/wh:1" --tls-verify=false --root "$C/root" >"$C/owners.log" 2>&1 ||
    fail "cvmfs-podman owners: $(tail -2 "$C/owners.log")"
  cat "$C/owners.log"
  dpm run --rm -v "$E/list.sh:/e2e-list.sh:ro" "$REG/e2e/wh:1" sh /e2e-list.sh / "${LIST_PATHS[@]}" >"$C/owned.list"
  diff "$C/umoci.list" "$C/owned.list" || fail "with restored owners the container differs from umoci unpack"
  grep -q '^home/user|directory|700 1000:1000|' "$C/owned.list" || fail "owners: /home/user not 1000:1000 after cvmfs-podman owners"
  dpm rm -af -t 0
  dpm rmi -af || true
  [ "$( (cd "$D" && find . -printf '%y %m %U:%G %s %T@ %p -> %l\n' | LC_ALL=C sort) | sha256sum)" = "$state" ] || fail "the repository changed"
}

# (12b) What on-demand listing costs as DUCC's repository grows: two
# repositories as DUCC leaves them, holding 1 000 and 10 000 images (the
# e2e image and synthetic ones beside it, tests/e2e/ducc-many.py), mounted
# read-only. Interleaved rounds, each on a fresh home: the first `podman
# run` by name (offline), then `podman images` and a second run (per
# command). The store then lists the one image used, whatever the
# repository's size; `ducc_listing=all` at 10 000 is timed once beside.
t_ducc_many_images_cost() {
  local n dir ro round t0 t1 t2 t3 store count
  : >"$log_dir/ducc-many.txt"
  for n in 1000 10000; do
    dir="$W/ducc-many-$n" ro="$W/ducc-many-$n-ro"
    make_ducc_repo wh "$dir"
    python3 "$E/ducc-many.py" "$dir" $((n - 1)) "$REG/e2e/many" || fail "ducc-many.py $n"
    mkdir -p "$ro" && mount --bind "$dir" "$ro" && mount -o remount,bind,ro "$ro"
  done
  trap 'umount -l "$W/ducc-many-1000-ro" "$W/ducc-many-10000-ro" 2>/dev/null' EXIT
  registry_stop
  new_case
  secs() { date +%s.%N; }
  dur() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
  local listing
  for round in 1 2 3; do
    for n in 1000 10000; do
      for listing in on-demand all; do
        [ "$listing" = all ] && { [ "$n" = 10000 ] && [ "$round" = 1 ] || continue; }
        ro="$W/ducc-many-$n-ro"
        local root="$C/root-$n-$listing-$round" run="$C/run-$n-$listing-$round"
        mp() { pm --root "$root" --runroot "$run" --storage-driver cvmfs --storage-opt "cvmfs.ducc_repositories=$ro" \
          --storage-opt "cvmfs.ducc_listing=$listing" "$@"; }
        t0=$(secs)
        out=$(mp run --rm "$REG/e2e/wh:1" cat /etc/b 2>&1) || fail "$n images, $listing: run: $out"
        t1=$(secs)
        mp images -q >"$C/images-$n.txt"
        t2=$(secs)
        mp run --rm "$REG/e2e/wh:1" true
        t3=$(secs)
        count=$(wc -l <"$C/images-$n.txt")
        echo "    DUCC $n images, $listing, round $round: first run $(dur "$t0" "$t1")s, podman images $(dur "$t1" "$t2")s, second run $(dur "$t2" "$t3")s; $count image(s) listed" |
          tee -a "$log_dir/ducc-many.txt"
        if [ "$listing" = on-demand ]; then
          [ "$count" = 1 ] || fail "$n images on demand: podman images lists $count images (1 used)"
          store=$(find "$root/cvmfs/ducc" -mindepth 1 -maxdepth 1 -type d ! -name staging)
          [ "$(jq length "$store/cvmfs-images/images.json")" = 1 ] || fail "$n images: images.json lists $(jq length "$store/cvmfs-images/images.json")"
          [ "$(find "$store/cvmfs-images" -mindepth 1 -maxdepth 1 -type d | wc -l)" = 1 ] || fail "$n images: more than one image directory"
        else
          [ "$count" = "$n" ] || fail "$n images, all: podman images lists $count"
        fi
        mp rm -af -t 0 >/dev/null
        rm -rf "$root"
      done
    done
  done
  registry_start "$W/registry" "${REG##*:}"
}

echo "==> cases"
e2e_case "run by name with the registry stopped, podman images lists it" t_run_by_name_registry_stopped smoke
e2e_case "--storage-driver cvmfs --storage-opt without storage.conf" t_run_with_storage_opts
e2e_case "pull and run an image not in CVMFS (mixed stack)" t_pull_and_run_local_image
e2e_case "rmi, system prune -a, system reset never modify the repository" t_repo_never_modified
e2e_case "8 parallel runs; kill -9 of podman run; no leaked mounts" t_parallel_and_kill9
e2e_case "pull of a published image downloads no layer blob" t_pull_downloads_no_layer smoke
e2e_case "build FROM a CVMFS image, commit, push: layers byte-exact" t_build_commit_push smoke
e2e_case "push keeps the original blob digests of CVMFS layers" t_push_keeps_original_digests
e2e_case "save from cvmfs, load with overlay: same files" t_save_load_overlay smoke
e2e_case "whiteouts and opaque dirs match umoci unpack" t_whiteouts_match_umoci
if [ "$PODMAN_LINE" = "$BUILDAH_LINE" ]; then
  e2e_case "$buildah_case" t_buildah_from_run_commit_push
fi
e2e_case "150, 320, 500-layer stacks run with runc beside another container; mountinfo lines < 8 KiB" t_deep_stacks_with_runc
e2e_case "a repository answering its first requests after 2 s is waited for" t_slow_first_access
e2e_case "a claim-ownership client: owners still the image's, podman info says so with the fix" t_claim_ownership_view
e2e_case "podman run by name: repository round trips counted and bounded; a publish is seen" t_start_path_round_trips
e2e_case "a DUCC-only repository (read-only, no records of ours) runs by name offline" t_ducc_repository_as_is
e2e_case "DUCC on demand: 1 000 and 10 000 images, a fresh home lists only the image used" t_ducc_many_images_cost
if [ -f "$log_dir/slow-first-access.txt" ]; then
  sed 's/^/    /' "$log_dir/slow-first-access.txt"
fi
if [ -f "$log_dir/claim-ownership.txt" ]; then
  sed 's/^/    /' "$log_dir/claim-ownership.txt"
fi
if [ -f "$log_dir/deep-stacks.txt" ]; then
  sed 's/^/    mountinfo: /' "$log_dir/deep-stacks.txt"
fi

summary
