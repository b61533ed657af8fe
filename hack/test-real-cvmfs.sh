#!/usr/bin/env bash
# make test-real-cvmfs: the publisher against a REAL CernVM-FS stratum 0 (issue 12).
#
# Not part of `make test`: it needs `cvmfs_server` with a configured repository
# (../shared/real-cvmfs/setup.sh builds and configures one). Without one it prints a
# line saying so and "0 passed, 0 failed, 1 skipped".
#
# For each test image it publishes with `cvmfs-podman publish --cvmfs-transaction REPO`
# (staged locally, then one `cvmfs_server ingest`) into REPO/<namespace>/<image>,
# publishes the same image into a plain directory, and reads the result back through a
# separate client mount (own config and cache under the test's temp dir, unmounted at
# the end) to compare what a user of the repository would see:
#   <image>/publish-ingest       the publish succeeds and leaves no transaction open
#   <image>/layerfs-equal        every layer's layerfs equals the plain-directory
#                                publish entry by entry (names incl. .wh.* markers,
#                                types, modes, owners, content hashes; xattrs when the
#                                repository has CVMFS_INCLUDE_XATTRS=true, else the
#                                publisher must have said they are not kept)
#   <image>/hardlinks            no hardlink warnings; every hardlink of the plain
#                                publish is there with its content (CVMFS stores no
#                                hardlinks through ingest: each link is its own file)
#   <image>/flat-equals-umoci    the flat tree equals `umoci unpack`, mtimes included
#                                (hardlink peers and xattrs as above)
#   <image>/check                `cvmfs-podman check` on the client mount is clean
#   <image>/check-fetches-metadata, <image>/check-deep-fetches: what check and check --deep
#                                make a cold client fetch (see test_check_fetches)
# and for the repository: no directory of ours owned by nobody (ingest-created),
# a publish killed during its ingest (crash/*), two publishers at once (concurrent/*),
# and DUCC's `convert-single-image` of one of them into the same repository (times of
# both, DUCC's layerfs against ours: see test_ducc), and owners where the repository
# is read, with the patched podman (`make podman`; SKIP without it): through the
# publishing machine's own /cvmfs/REPO and through a default client that claims
# ownership (owners/*, see test_owners; on the default client every owner image
# must come from the layer's tar-split).
# When the transaction publish fails, the comparison cases report that (they do not
# fall back to something else). Known failures are NOT hidden: each case ends
# PASS or FAIL with the reason.
#
# Environment: REAL_CVMFS_ONLY=WORD (only the parts named so), REAL_CVMFS_REPO (default test.local), REAL_CVMFS_KEEP=1 keeps the
# published trees in the repository (default: removed with one `ingest -d`),
# REAL_CVMFS_KEEP_TMP=1 keeps the temp dir (logs, diffs), REAL_CVMFS_ONLY=ducc runs only
# the DUCC cases, REAL_CVMFS_WAIT seconds to wait for another user's open transaction (default 300).
# Ends with exactly one line "N passed, N failed, N skipped".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib-real-cvmfs.sh
source "$ROOT/hack/lib-real-cvmfs.sh"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
REPO=${REAL_CVMFS_REPO:-test.local}

passed=0 failed=0 skipped=0
summary() { echo "$passed passed, $failed failed, $skipped skipped"; }
skip_all() { echo "test-real-cvmfs: $*"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }

command -v cvmfs_server >/dev/null || skip_all "no cvmfs_server installed (see ../shared/real-cvmfs/README.md)"
[ -d "/etc/cvmfs/repositories.d/$REPO" ] || skip_all "repository $REPO is not configured on this machine (REAL_CVMFS_REPO)"
[ "$(id -u)" -eq 0 ] || skip_all "must run as root (transactions, client mounts, ownership)"
for tool in cvmfs2 umoci python3 jq; do
  command -v "$tool" >/dev/null || { echo "test-real-cvmfs: $tool missing" >&2; failed=1; summary; exit 1; }
done

echo "==> building cvmfs-podman"
cargo build --release --bin cvmfs-podman --quiet || { failed=1; summary; exit 1; }
# The cases run build/bin/podman: rebuild it when the driver changed (a no-op
# when up to date), or they would test an older driver without saying so.
echo "==> make podman"
podman_log=$(mktemp /tmp/test-real-cvmfs-podman.XXXXXX)
if ! PATH="/usr/local/go/bin:$PATH" "$ROOT/hack/build-podman.sh" >"$podman_log" 2>&1; then
  tail -n 20 "$podman_log"
  rm -f "$podman_log"
  failed=1; summary; exit 1
fi
echo "    $(grep -E 'up to date|built in' "$podman_log" | tail -1)"
rm -f "$podman_log"
B="$ROOT/target/release/cvmfs-podman"
TREE="$ROOT/tests/real-cvmfs/tree.py"
echo "CVMFS: $(cvmfs2 --version 2>&1 | head -1), repository $REPO, $(date -u '+%Y-%m-%d %H:%M UTC')"

W=$(mktemp -d /tmp/test-real-cvmfs.XXXXXX)
NS="real-cvmfs-test/$(date -u +%Y%m%dT%H%M%S)-$$"
MNT="$W/client/mnt"
CACHE="$W/client/cache"
mounted=0

in_transaction() { cvmfs_server list 2>/dev/null | grep -E "^$REPO " | grep -q 'in transaction'; }

cleanup() {
  declare -F rootless_cleanup >/dev/null && rootless_cleanup
  if [ "$mounted" = 1 ]; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  if [ -n "${COLD_MNT:-}" ]; then umount "$COLD_MNT" 2>/dev/null || umount -l "$COLD_MNT"; fi
  if [ -n "${SLOW_MNT:-}" ]; then umount "$SLOW_MNT" 2>/dev/null || umount -l "$SLOW_MNT"; fi
  if [ -n "${SLOW_PROXY_PID:-}" ]; then kill "$SLOW_PROXY_PID" 2>/dev/null; fi
  if [ -n "${REG_PID:-}" ]; then registry_stop; fi
  if [ "${REAL_CVMFS_KEEP:-0}" != 1 ] && ! in_transaction; then
    cvmfs_server ingest -d "$NS" "$REPO" >"$W/cleanup.log" 2>&1 ||
      echo "note: could not remove $NS from $REPO (log $W/cleanup.log)"
  fi
  if [ "${REAL_CVMFS_KEEP_TMP:-0}" = 1 ]; then echo "logs kept in $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

# A client of REPO with its own config and cache (as ../shared/real-cvmfs/client-mount.sh):
# the test's client at $MNT, or one at MOUNTPOINT with CACHE_DIR (then the caller unmounts it).
client_mount() {
  local mnt=${1:-$MNT} cache=${2:-$CACHE}
  mkdir -p "$mnt" "$cache"
  real_cvmfs_client_conf "$cache" "$REPO" DIRECT
  if [ "$mnt" != "$MNT" ]; then
    cvmfs2 -o "config=$cache/client.conf,allow_other" "$REPO" "$mnt" >"$W/client-mount.log" 2>&1
    return
  fi
  cvmfs2 -o "config=$cache/client.conf,allow_other" "$REPO" "$MNT" >"$W/client-mount.log" 2>&1 && mounted=1
}

# case NAME REASON...: REASON empty = PASS.
report() {
  local name=$1
  shift
  if [ -z "$*" ]; then
    echo "PASS: $name"
    passed=$((passed + 1))
  else
    echo "FAIL: $name: $*"
    failed=$((failed + 1))
  fi
}

# xattrs are kept only with CVMFS_INCLUDE_XATTRS=true in the repository's server.conf
# (`ingest` never stores them; the publisher sets them in a transaction then). Without
# it, listings are compared without xattrs and the publisher must have said so.
XATTRS_KEPT=0
grep -q '^CVMFS_INCLUDE_XATTRS=true' "/etc/cvmfs/repositories.d/$REPO/server.conf" && XATTRS_KEPT=1
xattr_filter() { if [ "$XATTRS_KEPT" = 1 ]; then cat; else sed 's/ \[[^]]*\]/ []/'; fi; }
xattr_hint() {
  if grep -q '\[[^]]' "$1" && [ "$XATTRS_KEPT" = 0 ]; then
    echo " (xattrs: $REPO's server.conf has no CVMFS_INCLUDE_XATTRS=true)"
  fi
}
# The publisher warned that xattrs are lost when the repository does not keep them.
xattr_warning_missing() {
  local plain=$1 log=$2
  if [ "$XATTRS_KEPT" = 0 ] && python3 "$TREE" "$plain" | grep -q ' \[[^]]' &&
    ! grep -q 'does not keep them' "$log"; then
    echo "the image has xattrs, $REPO does not keep them, and the publisher did not say so"
  fi
}

# At most the first N lines of a diff, indented, for a FAIL reason.
excerpt() { sed -n '1,'"${2:-12}"'p' "$1" | sed 's/^/      /'; }

wait_for_repository() {
  local waited=0
  while in_transaction; do
    [ "$waited" -ge "${REAL_CVMFS_WAIT:-300}" ] && return 1
    sleep 5
    waited=$((waited + 5))
  done
}

# ------------------------------------------------------------------ images
# wh: deletions, an opaque directory, a 1000:1000 directory, setuid, hardlinks (one
#     removed again by a whiteout, one pair in /opt), symlinks, a fifo, an xattr.
# nodel: no whiteouts: ownership, setuid, a hardlink pair, a 1:3 device, fifo, xattr.
# dirtimes: upper layers that change directories without naming them (a file added,
#     a file deleted): the flat directories must keep the mtime the lower tar gave them.
I_E2E=tests/e2e/images I_PUB=tests/publish/images
mkdir -p "$W/specs"
cat >"$W/specs/dirtimes-1.spec" <<'EOF'
dir /usr 0755
dir /usr/lib 0755
file /usr/lib/a 0644 "a\n"
file /usr/lib/b 0644 "b\n"
dir /var 0755
dir /var/lib 0755
file /var/lib/state 0644 "s\n"
EOF
cat >"$W/specs/dirtimes-2.spec" <<'EOF'
whiteout /usr/lib/a
file /var/lib/new 0644 "n\n"
EOF
# raw: a tar no spec can express: a non-UTF-8 name, a same-directory hardlink pair, a
#     1000:1000 file, a 1:3 character device, xattrs user.k and trusted.t (PAX).
python3 - "$W/specs/raw.tar" <<'EOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as t:
    def add(name, data=b"", **kw):
        i = tarfile.TarInfo(name)
        i.mtime, i.mode, i.size = 1700000000, kw.pop("mode", 0o644), len(data)
        for k, v in kw.items():
            setattr(i, k, v)
        t.addfile(i, io.BytesIO(data) if data else None)
    add("opt/", type=tarfile.DIRTYPE, mode=0o755)
    add(b"opt/caf\xe9-latin1".decode("utf-8", "surrogateescape"), b"latin1\n")
    add("opt/own", b"own\n", uid=1000, gid=1000)
    add("opt/pair1", b"pair\n")
    add("opt/pair2", type=tarfile.LNKTYPE, linkname="opt/pair1")
    add("opt/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
    add("opt/attrs", b"x\n", pax_headers={"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.t": "t"})
EOF
declare -A IMAGES=(
  [wh]="$I_E2E/wh-base.spec $I_E2E/wh-delete.spec $I_E2E/wh-top.spec"
  [nodel]="$I_PUB/base.spec"
  [dirtimes]="$W/specs/dirtimes-1.spec $W/specs/dirtimes-2.spec"
  [raw]="$I_PUB/base.spec $W/specs/raw.tar"
)

test_image() {
  local img=$1 specs=$2
  local oci="$W/oci-$img" plain="$W/plain-$img" dest="/cvmfs/$REPO/$NS/$img"
  # shellcheck disable=SC2086
  "$B" make-oci "$oci" --tag "$img" $specs >"$W/make-oci-$img.log" 2>&1 || {
    report "$img/make-oci" "make-oci failed: $(tail -1 "$W/make-oci-$img.log")"
    return
  }
  mkdir -p "$plain"
  "$B" publish -q --repo "$plain" "oci:$oci:$img" --name "local/$img:1" >"$W/plain-$img.log" 2>&1 || {
    report "$img/plain-publish" "$(tail -1 "$W/plain-$img.log")"
    return
  }

  # 1. through a transaction of the real repository
  local reason="" t0 t1
  if ! wait_for_repository; then
    reason="$REPO stayed in another transaction for ${REAL_CVMFS_WAIT:-300} s"
  else
    t0=$(date +%s.%N)
    if ! "$B" publish -q --repo "$dest" "oci:$oci:$img" --name "local/$img:1" \
      --cvmfs-transaction "$REPO" >"$W/txn-$img.log" 2>&1; then
      reason="publish failed: $(grep -v lsusb "$W/txn-$img.log" | tail -1)"
    fi
    t1=$(date +%s.%N)
    echo "     $img: publish --cvmfs-transaction (staging + 1 ingest) took $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
    local markers_lost
    markers_lost=$(grep -c "should be deleted, but was not found" "$W/txn-$img.log")
    [ "$markers_lost" -gt 0 ] && reason="cvmfs_server read $markers_lost .wh.* names as deletions"
    if in_transaction; then
      cvmfs_server abort -f "$REPO" >/dev/null 2>&1
      reason="${reason:+$reason; }the publish left $REPO in a transaction (aborted by the test)"
    fi
  fi
  report "$img/publish-ingest" "$reason"
  if [ -n "$reason" ]; then
    for c in layerfs-equal hardlinks flat-equals-umoci check check-fetches-metadata check-deep-fetches; do
      report "$img/$c" "nothing to compare: the transaction publish failed"
    done
    return
  fi

  # The client may still have the previous revision: remount it.
  if [ "$mounted" = 1 ]; then umount "$MNT" && mounted=0; fi
  client_mount || { report "$img/client-mount" "$(tail -1 "$W/client-mount.log")"; return; }
  local seen="$MNT/$NS/$img"

  # 2. every layerfs, entry by entry
  local d diffs="" diff_out="$W/diff-$img-layerfs.txt"
  : >"$diff_out"
  for d in "$plain"/.layers/*/*/; do
    local rel=${d#"$plain"/}
    if ! diff <(python3 "$TREE" "$plain/$rel/layerfs" | xattr_filter) \
      <(python3 "$TREE" "$seen/$rel/layerfs" | xattr_filter) >>"$diff_out" 2>&1; then
      diffs="$diffs ${rel%/}"
    fi
  done
  if [ -n "$diffs" ]; then
    reason="layerfs differs from the plain-directory publish in$diffs$(xattr_hint "$diff_out") (< plain, > repository):
$(excerpt "$diff_out" 16)"
  else
    reason=$(xattr_warning_missing "$plain" "$W/txn-$img.log")
  fi
  report "$img/layerfs-equal" "$reason"

  # 3. hardlinks: ingest stores each link as its own file (content stored once); the
  #    publish must not flood the log, and every link must be there with its content
  #    (layerfs-equal compared contents; here the counts and the warnings)
  local links warnings
  links=$(python3 "$TREE" --peers "$plain" | grep -c 'hardlink-of=')
  warnings=$(grep -c 'linkcount > 1' "$W/txn-$img.log")
  if [ "$warnings" -gt 0 ]; then
    reason="$warnings hardlink warning lines"
  else
    reason=""
    echo "     $img: $links hardlinks of the plain publish stored as separate files (ingest keeps none)"
  fi
  report "$img/hardlinks" "$reason"

  # 4. the flat tree against umoci unpack, mtimes included
  local config flat
  config=$(jq -r '.config.digest' "$oci/blobs/sha256/$(jq -r '.manifests[0].digest' "$oci/index.json" | cut -d: -f2)" | cut -d: -f2)
  flat="$seen/.flat/${config:0:2}/$config"
  rm -rf "$W/umoci-$img"
  umoci unpack --image "$oci:$img" "$W/umoci-$img" >/dev/null 2>&1
  diff_out="$W/diff-$img-flat.txt"
  if [ ! -d "$flat" ]; then
    reason="no flat tree at .flat/${config:0:2}/$config"
  elif ! diff <(python3 "$TREE" --mtime-from-oci "$oci" "$W/umoci-$img/rootfs" | xattr_filter) \
    <(python3 "$TREE" --mtime-from-oci "$oci" --exclude .cvmfscatalog "$flat" | xattr_filter) >"$diff_out" 2>&1; then
    reason="flat tree differs from umoci unpack$(xattr_hint "$diff_out") (< umoci, > repository):
$(excerpt "$diff_out" 16)"
  else
    reason=""
  fi
  report "$img/flat-equals-umoci" "$reason"

  # 5. check, read-only, on the client mount
  if "$B" check "$seen" >"$W/check-$img.log" 2>&1; then
    reason=""
  else
    reason="check on the client mount failed:
$(excerpt "$W/check-$img.log" 10)"
  fi
  report "$img/check" "$reason"
  test_check_fetches "$img"
}

# What `check` makes a cold client fetch, against what it says it read (issue 12):
#   <image>/check-fetches-metadata  plain check on a client with an empty cache reads only
#                                   metadata (its report), under 1 MiB, and the client
#                                   downloads no more files than the catalogs it loads plus
#                                   the files check reports
#   <image>/check-deep-fetches      check --deep then reports the tar-splits and layer files
#                                   too, and the client's new downloads are no more than those
# Counters are the client's xattrs: ndownload (files downloaded, catalogs included), nclg
# (catalogs loaded), rx (kB received); the numbers are printed for results.md.
test_check_fetches() {
  local img=$1
  COLD_MNT="$W/cold-$img/mnt"
  local cache="$W/cold-$img/cache" seen="$W/cold-$img/mnt/$NS/$img"
  client_mount "$COLD_MNT" "$cache" || {
    report "$img/check-fetches-metadata" "cold client mount failed: $(tail -1 "$W/client-mount.log")"
    COLD_MNT=""
    return
  }
  local dl0 clg0 rx0 dl1 clg1 rx1 dl2 rx2 reason=""
  read -r dl0 clg0 rx0 <<<"$(cold_counters)"
  "$B" check --json "$seen" >"$W/check-fetch-$img.json" 2>"$W/check-fetch-$img.err" ||
    reason="check failed: $(head -c 300 "$W/check-fetch-$img.json")"
  read -r dl1 clg1 rx1 <<<"$(cold_counters)"
  local files bytes kinds
  files=$(jq '.content_read.files' "$W/check-fetch-$img.json" 2>/dev/null || echo -1)
  bytes=$(jq '.content_read.bytes' "$W/check-fetch-$img.json" 2>/dev/null || echo -1)
  kinds=$(jq -c '.content_read.by_kind | keys' "$W/check-fetch-$img.json" 2>/dev/null)
  echo "     $img: check on a cold client: reported $files files, $bytes bytes read;" \
    "client downloaded $((dl1 - dl0)) files ($((clg1 - clg0)) catalogs), $((rx1 - rx0)) kB"
  if [ -z "$reason" ]; then
    if [ "$kinds" != '["metadata"]' ]; then
      reason="plain check read more than metadata: $kinds"
    elif [ "$bytes" -ge 1048576 ]; then
      reason="plain check read $bytes bytes of metadata"
    elif [ $((dl1 - dl0)) -gt $((clg1 - clg0 + files)) ]; then
      reason="the client downloaded $((dl1 - dl0)) files for $((clg1 - clg0)) catalogs and $files reported files"
    fi
  fi
  report "$img/check-fetches-metadata" "$reason"

  reason=""
  "$B" check --deep --json "$seen" >"$W/check-deep-$img.json" 2>"$W/check-deep-$img.err" ||
    reason="check --deep failed: $(head -c 300 "$W/check-deep-$img.json")"
  read -r dl2 _ rx2 <<<"$(cold_counters)"
  local dfiles dbytes layer_files
  dfiles=$(jq '.content_read.files' "$W/check-deep-$img.json" 2>/dev/null || echo -1)
  dbytes=$(jq '.content_read.bytes' "$W/check-deep-$img.json" 2>/dev/null || echo -1)
  layer_files=$(jq '.content_read.by_kind["layer-file"] // 0' "$W/check-deep-$img.json" 2>/dev/null || echo -1)
  echo "     $img: check --deep after it: reported $dfiles files, $dbytes bytes read" \
    "($layer_files layer files); client downloaded $((dl2 - dl1)) more files, $((rx2 - rx1)) kB"
  if [ -z "$reason" ]; then
    if [ "$(jq '.content_read.by_kind["tar-split"] // 0' "$W/check-deep-$img.json")" -lt 1 ]; then
      reason="check --deep reports no tar-split read"
    elif [ $((dl2 - dl1)) -gt $((dfiles - files)) ]; then
      reason="the client downloaded $((dl2 - dl1)) files for $((dfiles - files)) more reported files"
    fi
  fi
  report "$img/check-deep-fetches" "$reason"
  umount "$COLD_MNT" 2>/dev/null || umount -l "$COLD_MNT"
  COLD_MNT=""
}

# The cold client's counters: files downloaded, catalogs loaded, kB received.
cold_counters() {
  echo "$(attr -qg ndownload "$COLD_MNT") $(attr -qg nclg "$COLD_MNT") $(attr -qg rx "$COLD_MNT")"
}

# DUCC on the same image, from a registry on 127.0.0.1, into the same repository.
# Every layer gets this run's id, so DUCC cannot skip layers an earlier run ingested
# (ours always writes everything: its namespace is new). Cases:
#   ducc/convert-single-image  DUCC succeeds; both publish times are printed
#   ducc/layerfs-names         DUCC's layerfs and ours (through the transaction) have
#                              the same entries (names, types, modes; owners are not
#                              compared: DUCC ingests without -k)
test_ducc() {
  if ! command -v cvmfs_ducc >/dev/null || ! command -v docker-registry >/dev/null ||
    ! command -v skopeo >/dev/null; then
    echo "SKIP: ducc/*: cvmfs_ducc, docker-registry or skopeo not installed"
    skipped=$((skipped + 1))
    return
  fi
  # shellcheck source=tests/lib/registry.bash
  source "$ROOT/tests/lib/registry.bash"
  registry_start "$W/registry" >"$W/registry-start.log" 2>&1 || {
    report ducc/registry "$(tail -1 "$W/registry-start.log")"
    return
  }
  local id spec specs="" oci="$W/oci-ducc" name="rt/wh-$(date -u +%H%M%S)-$$"
  id=$(basename "$NS")
  # busybox first, so that the DUCC-only cases can run something in the image
  if command -v busybox >/dev/null; then
    mkdir -p "$W/bb/bin"
    cp "$(command -v busybox)" "$W/bb/bin/busybox"
    for spec in sh cat ls find sort stat sha256sum cut readlink awk; do ln -sf busybox "$W/bb/bin/$spec"; done
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -cf "$W/busybox.tar" -C "$W/bb" bin
    specs="$W/busybox.tar"
  fi
  for spec in ${IMAGES[wh]}; do
    { cat "$spec"; echo "file /.run-id-$(basename "$spec" .spec) 0644 \"$id\\n\""; } >"$W/specs/ducc-$(basename "$spec")"
    specs="$specs $W/specs/ducc-$(basename "$spec")"
  done
  local reason="" t0 t1 t2 t3 dest="/cvmfs/$REPO/$NS/ducc-ours"
  # shellcheck disable=SC2086
  "$B" make-oci "$oci" --tag t $specs >"$W/make-oci-ducc.log" 2>&1 &&
    skopeo copy --quiet --dest-tls-verify=false "oci:$oci:t" "docker://$REG/$name:1" >"$W/skopeo.log" 2>&1 ||
    reason="could not build or push the image: $(tail -1 "$W/skopeo.log" "$W/make-oci-ducc.log" 2>/dev/null | tail -1)"
  if [ -z "$reason" ] && ! wait_for_repository; then reason="$REPO stayed in another transaction"; fi
  if [ -z "$reason" ]; then
    sync
    t0=$(date +%s.%N)
    mkdir -p "$W/ducc-tmp"
    # DUCC exits 0 after some errors (e.g. a missing -t directory): read its log too
    if ! cvmfs_ducc -t "$W/ducc-tmp" convert-single-image "http://$REG/$name:1" "$REPO" >"$W/ducc.log" 2>&1 ||
      grep -q 'level=error' "$W/ducc.log"; then
      reason="cvmfs_ducc failed: $(grep 'level=error' "$W/ducc.log" | tail -1)"
    fi
    t1=$(date +%s.%N)
    if in_transaction; then
      cvmfs_server abort -f "$REPO" >/dev/null 2>&1
      reason="${reason:+$reason; }DUCC left $REPO in a transaction (aborted by the test)"
    fi
  fi
  if [ -z "$reason" ]; then
    sync
    t2=$(date +%s.%N)
    "$B" publish -q --repo "$dest" "docker://$REG/$name:1" --tls-verify=false \
      --cvmfs-transaction "$REPO" >"$W/ducc-ours.log" 2>&1 ||
      reason="our publish of the same image failed: $(tail -1 "$W/ducc-ours.log")"
    t3=$(date +%s.%N)
    echo "     publish times, same image, same registry: DUCC convert-single-image" \
      "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s" \
      "($(grep -c 'msg="\[cvmfs_server publish' "$W/ducc.log") publishes + $(grep -c 'msg="\[cvmfs_server ingest' "$W/ducc.log") ingests)," \
      "ours --cvmfs-transaction $(awk -v a="$t2" -v b="$t3" 'BEGIN{printf "%.1f", b-a}') s (1 ingest)"
  fi
  registry_stop
  report ducc/convert-single-image "$reason"
  [ -z "$reason" ] && DUCC_IMAGE="$REG/$name:1" DUCC_OCI="$oci"
  if [ -n "$reason" ]; then
    report ducc/layerfs-names "nothing to compare: $reason"
    return
  fi
  if [ "$mounted" = 1 ]; then umount "$MNT" && mounted=0; fi
  client_mount || { report ducc/layerfs-names "client mount failed"; return; }
  local d rel diffs="" diff_out="$W/diff-ducc-layerfs.txt"
  : >"$diff_out"
  for d in "$MNT/$NS/ducc-ours"/.layers/*/*/; do
    rel=${d#"$MNT/$NS/ducc-ours"/}
    diff <(python3 "$TREE" --exclude .cvmfscatalog "$MNT/$rel/layerfs" | awk '{$4=""; print}') \
      <(python3 "$TREE" --exclude .cvmfscatalog "$d/layerfs" | awk '{$4=""; print}') >>"$diff_out" 2>&1 ||
      diffs="$diffs ${rel%/}"
  done
  if [ -n "$diffs" ]; then
    reason="our layerfs differs from DUCC's in$diffs (< DUCC, > ours):
$(excerpt "$diff_out" 12)"
  fi
  report ducc/layerfs-names "$reason"
}

# ------------------------------------------------------- DUCC's repository as it is
# (issue 13 item 1) The image test_ducc had DUCC convert, run by name with only a client
# mount of the repository: `podman --storage-driver cvmfs` with
# cvmfs.ducc_repositories=<client mount>, the registry stopped (offline), a fresh
# graphroot, nothing written to the repository. Cases:
#   ducc-only/names          DUCC spells the name as podman does for a registry host:port:
#                            .metadata/<host:port>/<path>:<tag>/manifest.json and that name
#                            in podmanStore/overlay-images/images.json
#   ducc-only/run-by-name    a fresh home lists no image (on demand), podman runs it by
#                            name, then lists it read-only; the container's
#                            tree equals `umoci unpack` owners aside (DUCC drops owners):
#                            whiteouts exact, no .wh.* visible
#   ducc-only/slow-client    the same from a second client with an empty cache behind
#                            delayproxy.py (2 s per request): no false failure
DUCC_PODMAN="$ROOT/build/bin/podman"
ducc_podman() { # repository graph-dir podman-args...
  local repo=$1 g=$2
  shift 2
  mkdir -p "$g/tmp" "$g/home"
  [ -f "$g/storage.conf" ] || : >"$g/storage.conf"
  printf '[registries.search]\nregistries = []\n' >"$g/registries.conf"
  # podman 6 needs cgroup v2: on a cgroup v1 host each command runs in its own
  # short-lived mount namespace with cgroup2 mounted (as hack/lib-cgroup2.sh
  # does for whole suites; the stratum 0's transactions stay outside it).
  local wrap=()
  if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    wrap=(unshare --mount --propagation private -- sh -c 'mount -t cgroup2 cgroup2 /sys/fs/cgroup &&
      { grep -qw pids /sys/fs/cgroup/cgroup.controllers || export CONTAINERS_CONF_OVERRIDE="$0"; } && exec "$@"'
      "$ROOT/hack/cgroup2-nopids.conf")
  fi
  "${wrap[@]}" env HOME="$g/home" CONTAINERS_CONF="$ROOT/tests/e2e/containers.conf" CONTAINERS_STORAGE_CONF="$g/storage.conf" \
    CONTAINERS_REGISTRIES_CONF="$g/registries.conf" PODMAN_IGNORE_CGROUPSV1_WARNING=1 \
    "$DUCC_PODMAN" --tmpdir "$g/tmp" --root "$g/root" --runroot "$g/run" --storage-driver cvmfs \
    --storage-opt "cvmfs.ducc_repositories=$repo" "$@"
}

# The container's listing of the image against umoci unpack's, owners aside; empty when
# equal, else the reason.
ducc_listing_differs() { # repository graph-dir
  local repo=$1 g=$2 paths="etc data x home gone"
  mkdir -p "$g"
  ducc_podman "$repo" "$g" run --rm -v "$ROOT/tests/e2e/list.sh:/e2e-list.sh:ro" "$DUCC_IMAGE" \
    sh /e2e-list.sh / $paths >"$g/container.list" 2>"$g/run.err" ||
    { echo "podman run failed: $(grep -v '^cvmfs: ' "$g/run.err" | tail -2)"; return; }
  rm -rf "$W/umoci-ducc-only"
  umoci unpack --image "$DUCC_OCI:t" "$W/umoci-ducc-only" >/dev/null 2>&1
  # shellcheck disable=SC2086
  sh "$ROOT/tests/e2e/list.sh" "$W/umoci-ducc-only/rootfs" $paths >"$g/umoci.list"
  no_owner() { sed -E 's/\|([0-7]+) [0-9]+:[0-9]+\|/|\1 owner|/' "$1"; }
  if ! diff <(no_owner "$g/umoci.list") <(no_owner "$g/container.list") >"$g/list.diff"; then
    echo "the container differs from umoci unpack, owners aside (< umoci, > container):
$(excerpt "$g/list.diff" 12)"
  elif grep -q '\.wh\.' "$g/container.list"; then
    echo "a whiteout marker is visible"
  elif ! grep -q '^etc/b|' "$g/container.list"; then
    echo "listing incomplete: $(wc -l <"$g/container.list") lines"
  fi
}

test_ducc_only() {
  if [ -z "${DUCC_IMAGE:-}" ]; then
    report ducc-only/run-by-name "no image: ducc/convert-single-image did not succeed"
    return
  fi
  if [ ! -x "$DUCC_PODMAN" ] || ! command -v busybox >/dev/null; then
    echo "SKIP: ducc-only/*: no $DUCC_PODMAN (make podman) or no busybox"
    skipped=$((skipped + 1))
    return
  fi
  if [ "$mounted" = 1 ]; then umount "$MNT" && mounted=0; fi
  client_mount || { report ducc-only/run-by-name "client mount failed"; return; }
  local reason="" host=${DUCC_IMAGE%%/*}
  [ -f "$MNT/.metadata/$DUCC_IMAGE/manifest.json" ] || reason="no .metadata/$DUCC_IMAGE/manifest.json"
  jq -e --arg n "$DUCC_IMAGE" 'any(.[]; (.names // []) | index($n))' \
    "$MNT/podmanStore/overlay-images/images.json" >/dev/null ||
    reason="${reason:+$reason; }$DUCC_IMAGE not in podmanStore/overlay-images/images.json"
  echo "     DUCC's names: .metadata/$host/… and images.json \"$DUCC_IMAGE\" (podman's spelling of a host:port reference)"
  report ducc-only/names "$reason"

  local g="$W/ducc-only" t0 t1 listed
  mkdir -p "$g"
  # Listed on demand (the default): a fresh home lists nothing, the run by
  # name finds the image (containers/storage asks the driver), then podman
  # images lists it read-only.
  t0=$(date +%s.%N)
  listed=$(ducc_podman "$MNT" "$g" images --format '{{.Repository}}:{{.Tag}} {{.ReadOnly}}' 2>"$g/images.err")
  t1=$(date +%s.%N)
  echo "     podman images with cvmfs.ducc_repositories (first, builds the lookup tables):" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s, $(grep -c . <<<"$listed") images listed (on demand: none used yet)"
  reason=""
  [ -z "$listed" ] || reason="a fresh home lists images before any is used: $(head -3 <<<"$listed")"
  if [ -z "$reason" ]; then
    t0=$(date +%s.%N)
    reason=$(ducc_listing_differs "$MNT" "$g")
    t1=$(date +%s.%N)
    echo "     podman run of $DUCC_IMAGE by name, offline: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s"
  fi
  if [ -z "$reason" ]; then
    listed=$(ducc_podman "$MNT" "$g" images --format '{{.Repository}}:{{.Tag}} {{.ReadOnly}}' 2>"$g/images.err")
    grep -qx "$DUCC_IMAGE true" <<<"$listed" ||
      reason="podman images does not list $DUCC_IMAGE read-only once used: $(head -3 <<<"$listed") $(tail -1 "$g/images.err")"
  fi
  ducc_podman "$MNT" "$g" rm -af -t 0 >/dev/null 2>&1
  report ducc-only/run-by-name "$reason"
}

test_ducc_only_slow_client() {
  [ -n "${DUCC_IMAGE:-}" ] && [ -x "$DUCC_PODMAN" ] && command -v busybox >/dev/null || return
  local proxy_port=3139 mnt="$W/slow/mnt" cache="$W/slow/cache" reason="" t0 t1 took
  mkdir -p "$mnt" "$cache"
  python3 /work/shared/real-cvmfs/delayproxy.py --port "$proxy_port" --delay-ms 2000 \
    --log "$W/slow/proxy.log" >"$W/slow/proxy.out" 2>&1 &
  SLOW_PROXY_PID=$!
  sleep 1
  # as client_mount, with an empty cache and the proxy
  local hard nfiles=16384
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$nfiles" ]; then nfiles=$hard; fi
  sed -e "s|^CVMFS_HTTP_PROXY=.*|CVMFS_HTTP_PROXY=http://127.0.0.1:$proxy_port|" \
    -e "s|^CVMFS_CACHE_BASE=.*|CVMFS_CACHE_BASE=$cache|" -e "s|^CVMFS_RELOAD_SOCKETS=.*|CVMFS_RELOAD_SOCKETS=$cache|" \
    "$CACHE/client.conf" >"$cache/client.conf"
  t0=$(date +%s.%N)
  if ! cvmfs2 -o "config=$cache/client.conf,allow_other" "$REPO" "$mnt" >"$W/slow/mount.log" 2>&1; then
    report ducc-only/slow-client "slow client mount failed: $(tail -1 "$W/slow/mount.log")"
  else
    SLOW_MNT=$mnt
    reason=$(ducc_listing_differs "$mnt" "$W/slow/graph")
    t1=$(date +%s.%N)
    took=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
    echo "     slow client (2 s per request, empty cache): mount + podman run by name $took s," \
      "$(grep -c . "$W/slow/proxy.log" 2>/dev/null || echo '?') proxied requests," \
      "$(grep -c '^cvmfs: ' "$W/slow/graph/run.err" 2>/dev/null) progress lines"
    grep '^cvmfs: ' "$W/slow/graph/run.err" 2>/dev/null | head -3 | sed 's/^/       /'
    ducc_podman "$mnt" "$W/slow/graph" rm -af -t 0 >/dev/null 2>&1
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
    SLOW_MNT=""
    report ducc-only/slow-client "$reason"
  fi
  kill "$SLOW_PROXY_PID" 2>/dev/null
  wait "$SLOW_PROXY_PID" 2>/dev/null
  SLOW_PROXY_PID=""
}

# Directories ingest created itself (uid/gid -1, 65534 on a client) would block later
# transactions below them: none may exist in what we published.
test_no_nobody() {
  local nobody
  nobody=$(find "$MNT/$NS" -maxdepth 12 \( -uid 65534 -o -gid 65534 \) 2>/dev/null | head -5)
  if [ -z "$nobody" ]; then report repository/no-nobody-directories ""; else
    report repository/no-nobody-directories "owned by nobody: $nobody"; fi
}

# kill -9 of the publisher's process group while `cvmfs_server ingest` runs (a 60 MB
# layer keeps it busy): the repository is left in a transaction with nothing of the
# image visible; the next publish aborts that transaction, succeeds, and
# `cvmfs_server check` finds no problems.
test_crash() {
  local oci="$W/oci-crash" dest="/cvmfs/$REPO/$NS/crash" reason=""
  printf 'dir /big 0755\nfile /big/blob 0644 size=62914560\nfile /big/id 0644 "%s\\n"\n' "$NS" >"$W/specs/crash.spec"
  "$B" make-oci "$oci" --tag c "$W/specs/crash.spec" >/dev/null 2>&1 || { report crash/kill-during-ingest "make-oci failed"; return; }
  wait_for_repository || { report crash/kill-during-ingest "$REPO stayed in another transaction"; return; }
  setsid "$B" publish -q --repo "$dest" "oci:$oci:c" --name local/crash:1 --cvmfs-transaction "$REPO" \
    >"$W/crash-1.log" 2>&1 &
  local pid=$! waited=0
  until in_transaction || [ "$waited" -ge 600 ]; do sleep 0.1; waited=$((waited + 1)); done
  # Kill once the ingest itself runs (a fixed second was sometimes after its end
  # on an idle machine): a `cvmfs_server ingest` in the publisher's process group.
  waited=0
  until ps -eo pgid=,args= | awk -v g="$pid" '$1 == g && /cvmfs_server ingest/ {f = 1} END {exit !f}' ||
    [ "$waited" -ge 600 ]; do
    sleep 0.05
    waited=$((waited + 1))
  done
  sleep 0.2
  kill -9 -- "-$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  sleep 1
  in_transaction || reason="the killed publish left no transaction (ingest already done?)"
  [ -e "/var/spool/cvmfs/$REPO/rdonly/$NS/crash" ] && reason="${reason:+$reason; }the killed ingest published something"
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$B" publish --repo "$dest" "oci:$oci:c" --name local/crash:1 --cvmfs-transaction "$REPO" >"$W/crash-2.log" 2>&1; then
    reason="${reason:+$reason; }the next publish failed: $(tail -1 "$W/crash-2.log")"
  elif ! grep -q 'aborting the transaction a killed publish left open' "$W/crash-2.log"; then
    reason="${reason:+$reason; }the next publish did not say it aborted the transaction"
  fi
  t1=$(date +%s.%N)
  echo "     crash: the publish after the kill took $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
  in_transaction && { cvmfs_server abort -f "$REPO" >/dev/null 2>&1; reason="${reason:+$reason; }left in a transaction"; }
  report crash/kill-during-ingest "$reason"
  if cvmfs_server check "$REPO" >"$W/crash-check.log" 2>&1 && ! grep -qi 'error\|problem found' "$W/crash-check.log"; then
    report crash/cvmfs-server-check ""
  else
    report crash/cvmfs-server-check "$(grep -vi lsusb "$W/crash-check.log" | tail -3)"
  fi
}

# Two publishers into one repository at once: one waits for the other and says so;
# both images are in the store afterwards (no lost update of images.json).
test_concurrent() {
  local dest="/cvmfs/$REPO/$NS/concurrent" reason=""
  wait_for_repository || { report concurrent/two-publishers "$REPO stayed in another transaction"; return; }
  "$B" publish -q --repo "$dest" "oci:$W/oci-wh:wh" --name local/a:1 --cvmfs-transaction "$REPO" >"$W/conc-a.log" 2>&1 &
  local a=$!
  sleep 0.2
  "$B" publish -q --repo "$dest" "oci:$W/oci-nodel:nodel" --name local/b:1 --cvmfs-transaction "$REPO" >"$W/conc-b.log" 2>&1 &
  local b=$!
  wait "$a" || reason="the first publisher failed: $(tail -1 "$W/conc-a.log")"
  wait "$b" || reason="${reason:+$reason; }the second publisher failed: $(tail -1 "$W/conc-b.log")"
  grep -q 'waiting for the publisher lock' "$W/conc-a.log" "$W/conc-b.log" ||
    reason="${reason:+$reason; }neither publisher waited for the other"
  if [ "$mounted" = 1 ]; then umount "$MNT" && mounted=0; fi
  client_mount || { report concurrent/two-publishers "client mount failed"; return; }
  local n
  for n in docker.io/local/a:1 docker.io/local/b:1; do
    grep -q "\"$n\"" "$MNT/$NS/concurrent/podmanStore/cvmfs-images/images.json" 2>/dev/null ||
      reason="${reason:+$reason; }$n is not in images.json"
  done
  report concurrent/two-publishers "$reason"
}

# Owners where the repository is read (issue 13 items 2 and 3): the wh image (a
# 1000:1000 home, a 2000:2000 file, a 1000:100 tool, a setuid binary) published
# through a transaction, then a container of it made and mounted by the patched
# podman (build/bin/podman, `make podman`; no runtime needed) with the cvmfs driver:
#   owners/publishing-machine  through the server's own /cvmfs/REPO, an overlay over
#                              its client mount (which shows the owners as
#                              published): the image's owners, a container mounted
#                              on that overlay, and `podman info` reports nothing
#   owners/default-client      through a separate client with CVMFS_CLAIM_OWNERSHIP=yes
#                              (CVMFS's default), bound over /cvmfs/REPO in a private
#                              mount namespace: the same
owners_in_container() { # NAME STATUS_FILE: podman ($OWN/pm) creates, mounts, stats
  local name=$1 out m p
  out=$("$OWN/pm" create --name "$name" "local/owners:1" /bin/true >/dev/null &&
    m=$("$OWN/pm" mount "$name") &&
    for p in home/user/.profile x/passwd etc/b opt/tool; do stat -c "%u:%g %a /$p" "$m/$p"; done)
  echo "$out"
  "$OWN/pm" info --format '{{json .Store.GraphStatus}}' >"$2" 2>&1
  "$OWN/pm" rm -f "$name" >/dev/null 2>&1
}
# in_podman_ns [BIND_FROM]: the shell text that, run by `unshare -m`, mounts
# cgroup2 on /sys/fs/cgroup (podman 6 refuses cgroup v1, hack/lib-cgroup2.sh)
# and, with BIND_FROM, binds it over /cvmfs/REPO. Only the podman calls run in
# such a short-lived namespace: one that outlives them would hold the
# repository's rdonly mount and block the next ingest's remount.
in_podman_ns() {
  local nopids
  nopids="$ROOT/hack/cgroup2-nopids.conf"
  echo "set -e; if [ \"\$(stat -fc %T /sys/fs/cgroup)\" != cgroup2fs ]; then mount -t cgroup2 cgroup2 /sys/fs/cgroup;" \
    "grep -qw pids /sys/fs/cgroup/cgroup.controllers || export CONTAINERS_CONF_OVERRIDE='$nopids'; fi;" \
    "${1:+mount --bind '$1' '/cvmfs/$REPO';} set +e; $(declare -f owners_in_container);"
}
owners_reason() { # OUTPUT STATUS_FILE STATUS_PATTERN -> why the owners case fails (empty: it passes)
  local want="1000:1000 640 /home/user/.profile
0:0 4755 /x/passwd
2000:2000 600 /etc/b
1000:100 755 /opt/tool"
  if [ "$1" != "$want" ]; then
    echo "owners in the container: $(echo "$1" | tr '\n' ';') (expected $(echo "$want" | tr '\n' ';'))"
  elif ! jq -r '."CVMFS Client Owners"' "$2" 2>/dev/null | grep -q "$3"; then
    echo "podman info's CVMFS Client Owners is not '$3': $(head -c 300 "$2")"
  fi
}
test_owners() {
  local P="$ROOT/build/bin/podman" dest="/cvmfs/$REPO/$NS/owners" reason="" out
  if [ ! -x "$P" ]; then
    echo "SKIP: owners/*: no patched podman at $P (make podman)"
    skipped=$((skipped + 1))
    return
  fi
  # shellcheck disable=SC2086
  "$B" make-oci "$W/oci-owners" --tag owners ${IMAGES[wh]} >"$W/make-oci-owners.log" 2>&1 ||
    reason="make-oci failed: $(tail -1 "$W/make-oci-owners.log")"
  if [ -z "$reason" ] && ! wait_for_repository; then reason="$REPO stayed in another transaction"; fi
  if [ -z "$reason" ]; then
    "$B" publish -q --repo "$dest" "oci:$W/oci-owners:owners" --name "local/owners:1" \
      --cvmfs-transaction "$REPO" >"$W/txn-owners.log" 2>&1 ||
      reason="publish failed: $(tail -1 "$W/txn-owners.log")"
  fi
  if [ -n "$reason" ]; then
    report owners/publishing-machine "$reason"
    report owners/default-client "$reason"
    return
  fi
  OWN="$W/owners"
  mkdir -p "$OWN/home"
  printf '[storage]\ndriver = "cvmfs"\ngraphroot = "%s"\nrunroot = "%s"\n[storage.options]\nadditionalimagestores = ["%s"]\n[storage.options.cvmfs]\nrepositories = "%s"\n' \
    "$OWN/root" "$OWN/run" "$dest/podmanStore" "$dest" >"$OWN/storage.conf"
  printf '#!/bin/sh\nexec env HOME=%s CONTAINERS_CONF=%s CONTAINERS_STORAGE_CONF=%s %s "$@"\n' \
    "$OWN/home" "$ROOT/tests/e2e/containers.conf" "$OWN/storage.conf" "$P" >"$OWN/pm"
  chmod +x "$OWN/pm"
  out=$(OWN=$OWN unshare -m --propagation private bash -c \
    "$(in_podman_ns) owners_in_container own-server '$OWN/server-status.json'" 2>"$OWN/server.err") ||
    reason="podman create/mount failed: $(tail -2 "$OWN/server.err" | tr '\n' ' ')"
  # The server's own client shows the owners as published (measured: 2.12,
  # repository owned by root): nothing to restore, and nothing reported.
  [ -n "$reason" ] || reason=$(owners_reason "$out" "$OWN/server-status.json" '^as published')
  echo "     publishing machine: CVMFS Client Owners: $(jq -r '."CVMFS Client Owners"' "$OWN/server-status.json" 2>/dev/null | cut -c1-240)"
  report owners/publishing-machine "$reason"
  rm -rf "$OWN/root" "$OWN/run"
  # A default client: CVMFS_CLAIM_OWNERSHIP=yes (its cvmfs2 runs as root here).
  reason=""
  local cmnt="$W/claim-client/mnt" ccache="$W/claim-client/cache"
  client_mount "$cmnt" "$ccache" || true
  if ! mountpoint -q "$cmnt"; then
    report owners/default-client "client mount failed: $(tail -1 "$W/client-mount.log")"
    return
  fi
  umount "$cmnt"
  sed -i 's/^CVMFS_CLAIM_OWNERSHIP=no/CVMFS_CLAIM_OWNERSHIP=yes/' "$ccache/client.conf"
  if ! cvmfs2 -o "config=$ccache/client.conf,allow_other" "$REPO" "$cmnt" >"$W/client-mount.log" 2>&1; then
    report owners/default-client "client mount (claim ownership) failed: $(tail -1 "$W/client-mount.log")"
    return
  fi
  out=$(OWN=$OWN unshare -m --propagation private bash -c \
    "$(in_podman_ns "$cmnt") owners_in_container own-client '$OWN/client-status.json'" \
    2>"$OWN/client.err") || reason="podman create/mount failed: $(tail -2 "$OWN/client.err" | tr '\n' ' ')"
  [ -n "$reason" ] || reason=$(owners_reason "$out" "$OWN/client-status.json" 'fix: set CVMFS_CLAIM_OWNERSHIP=no')
  echo "     default client: CVMFS Client Owners: $(jq -r '."CVMFS Client Owners"' "$OWN/client-status.json" 2>/dev/null | cut -c1-240)"
  # How the driver restored them: owner images (EROFS, where the kernel has
  # it) or metacopy copies in whiteout layers.
  local images from_split
  images=$(find "$OWN/root/cvmfs/aux" -maxdepth 1 -name '*.erofs' 2>/dev/null | wc -l)
  from_split=$(find "$OWN/root/cvmfs/aux" -maxdepth 1 -name '*-ts1-*.erofs' 2>/dev/null | wc -l)
  echo "     default client: owner images in the driver home: $images ($from_split from the layers' tar-splits), whiteout layers: $(find "$OWN/root/cvmfs/aux" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)"
  # Our publisher wrote a tar-split per layer: every image is built from it
  # (a walk instead says why on stderr).
  if [ -z "$reason" ] && [ "$images" -gt 0 ] && [ "$from_split" -ne "$images" ]; then
    reason="owner images walked instead of built from the tar-split: $(grep -m1 'walking the layer instead' "$OWN/client.err" | cut -c1-300)"
  fi
  report owners/default-client "$reason"
  rm -rf "$OWN/root" "$OWN/run"
  umount "$cmnt" 2>/dev/null || umount -l "$cmnt"
}

# Rootless podman on a real client (issue 15): the wh image over busybox,
# published through a transaction, run by an unprivileged user with
# subordinate IDs, reading a separate client mount (CVMFS_CLAIM_OWNERSHIP=no)
# bound on /cvmfs/REPO in podman's mount namespace:
#   rootless/client-refuses-idmap  the setuid helper (cvmfs-idmap-view) cannot
#                                  ID-map the cvmfs2 FUSE mount (EINVAL: cvmfs2
#                                  does not announce FUSE_ALLOW_IDMAP) and says
#                                  what to do; a PASS records that this is still
#                                  so (a FAIL here means the client now allows it)
#   rootless/idmap-fuse-owners     through cvmfs-idmap-fuse (root's ID-mappable
#                                  pass-through over the client, listed after the
#                                  repository in the helper's configuration) a
#                                  running container shows the image's owners and
#                                  modes and podman info says the view is in use
# and prints the time of `podman run` through the view against a run reading
# the client without a view (both rootless, alternated, page cache dropped).
# The helper is built with its configuration in the test's directory (the
# system's /etc/containers/cvmfs-idmap-view.conf is left alone). The user's
# processes (podman's pause process holds a copy of the mounts) are ended by
# PID at the end; podman runs in a short-lived private mount namespace without
# the copies of /cvmfs/REPO and its rdonly mount, so nothing of ours holds the
# server's mounts (the next ingest remounts them).
RL_USER=cvmfs-rc-rl
RL_SUB_START=3600000
rootless_cleanup() {
  [ -n "${RL:-}" ] || return 0
  local pid
  if id "$RL_USER" >/dev/null 2>&1; then
    for pid in $(ps -o pid= -u "$RL_USER" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    sleep 0.3
    userdel -r "$RL_USER" >/dev/null 2>&1
  fi
  sed -i "/^$RL_USER:/d" /etc/subuid /etc/subgid
  [ -n "${RL_FUSE_PID:-}" ] && kill "$RL_FUSE_PID" 2>/dev/null && sleep 0.3
  umount "$RL/idmap" 2>/dev/null || umount -l "$RL/idmap" 2>/dev/null
  umount "$RL/client/mnt" 2>/dev/null || umount -l "$RL/client/mnt" 2>/dev/null
  if [ "${REAL_CVMFS_KEEP_TMP:-0}" = 1 ]; then echo "rootless logs kept in $RL"; else rm -rf "$RL"; fi
  RL=""
}
rl_as_user() { # CMD...: as the test user, login-like environment
  local h
  h=$(getent passwd "$RL_USER" | cut -d: -f6)
  (cd / && setpriv --reuid="$(id -u "$RL_USER")" --regid="$(id -g "$RL_USER")" --init-groups -- env -i \
    HOME="$h" USER="$RL_USER" PATH="$RL/bin:/usr/local/bin:/usr/bin:/bin" XDG_RUNTIME_DIR="$RL/run" \
    PODMAN_IGNORE_CGROUPSV1_WARNING=1 ${CONTAINERS_CONF_OVERRIDE:+CONTAINERS_CONF_OVERRIDE=$CONTAINERS_CONF_OVERRIDE} "$@")
}
# rl_in_ns SCRIPT: SCRIPT (bash, with rl_as_user and $RL) in a short-lived
# private mount namespace with cgroup2, without the copies of the server's
# /cvmfs/REPO and its rdonly mount, and the test's client bound on /cvmfs/REPO
# (the path the records name).
rl_in_ns() {
  RL=$RL RL_USER=$RL_USER unshare -m --propagation private bash -c \
    "$(in_podman_ns) umount -l '/cvmfs/$REPO' '/var/spool/cvmfs/$REPO/rdonly' 2>/dev/null;
     mount --bind '$RL/client/mnt' '/cvmfs/$REPO' || exit 1; $(declare -f rl_as_user); $1"
}
rl_make_user() { # REPOSITORY
  id "$RL_USER" >/dev/null 2>&1 && userdel -r "$RL_USER" >/dev/null 2>&1
  useradd --create-home --shell /bin/bash "$RL_USER" || return 1
  sed -i "/^$RL_USER:/d" /etc/subuid /etc/subgid
  echo "$RL_USER:$RL_SUB_START:65536" >>/etc/subuid
  echo "$RL_USER:$RL_SUB_START:65536" >>/etc/subgid
  local h
  h=$(getent passwd "$RL_USER" | cut -d: -f6)
  install -d -o "$RL_USER" -g "$RL_USER" "$h/.config" "$h/.config/containers"
  printf '[storage]\ndriver = "cvmfs"\n\n[storage.options]\nadditionalimagestores = ["%s/podmanStore"]\n\n[storage.options.cvmfs]\nrepositories = "%s"\n' \
    "$1" "$1" >"$h/.config/containers/storage.conf"
  cp "$ROOT/tests/e2e/policy.json" "$ROOT/tests/e2e/containers.conf" "$h/.config/containers/"
  printf 'unqualified-search-registries = []\n' >"$h/.config/containers/registries.conf"
  chown -R "$RL_USER:$RL_USER" "$h/.config"
  install -d -m 700 -o "$RL_USER" -g "$RL_USER" "$RL/run"
}
rl_helper_conf() { # LINE: the helper's configuration
  printf '# test-real-cvmfs rootless\n%s\n' "$1" >"$RL/idmap-view.conf"
  chmod 644 "$RL/idmap-view.conf"
}
rl_fixtures() { # -> the OCI image at $RL/oci:rl (busybox + the wh layers)
  mkdir -p "$RL/bb/bin"
  cp /bin/busybox "$RL/bb/bin/busybox"
  local a
  for a in sh cat stat true; do ln -s busybox "$RL/bb/bin/$a"; done
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -cf "$RL/busybox.tar" -C "$RL/bb" bin
  # shellcheck disable=SC2086
  "$B" make-oci "$RL/oci" --tag rl "$RL/busybox.tar" ${IMAGES[wh]}
}
test_rootless() {
  local P="$ROOT/build/bin/podman" dest="/cvmfs/$REPO/$NS/rootless" reason="" tool
  for tool in setpriv useradd newuidmap newgidmap busybox cc; do
    command -v "$tool" >/dev/null || { echo "SKIP: rootless/*: $tool missing (make deps)"; skipped=$((skipped + 1)); return; }
  done
  if [ ! -x "$P" ]; then
    echo "SKIP: rootless/*: no patched podman at $P (make podman)"
    skipped=$((skipped + 1))
    return
  fi
  RL=$(mktemp -d /tmp/real-cvmfs-rootless.XXXXXX)
  chmod 755 "$RL"
  mkdir -p "$RL/bin"
  cp "$P" "$RL/bin/podman"
  install -m 755 "$ROOT/hack/cvmfs-rootless-setup" "$RL/bin/cvmfs-rootless-setup"
  cc -O2 -Wall -Werror -DCONFIG_PATH="\"$RL/idmap-view.conf\"" -o "$RL/bin/cvmfs-idmap-view" \
    "$ROOT/helper/cvmfs-idmap-view.c" >"$RL/build.log" 2>&1 && chmod 4755 "$RL/bin/cvmfs-idmap-view" &&
    make -s -C "$ROOT" idmap-fuse >>"$RL/build.log" 2>&1 || reason="building the helpers failed: $(tail -3 "$RL/build.log")"
  [ -n "$reason" ] || rl_fixtures >"$RL/fixtures.log" 2>&1 || reason="building the image failed: $(tail -2 "$RL/fixtures.log")"
  if [ -z "$reason" ] && ! wait_for_repository; then reason="$REPO stayed in another transaction"; fi
  if [ -z "$reason" ]; then
    "$B" publish -q --repo "$dest" "oci:$RL/oci:rl" --name "local/rl:1" \
      --cvmfs-transaction "$REPO" >"$RL/txn.log" 2>&1 || reason="publish failed: $(grep -v -e dmesg -e '^ *$' "$RL/txn.log" | tail -2 | tr '\n' ' ')"
  fi
  local cmnt="$RL/client/mnt"
  if [ -z "$reason" ]; then
    client_mount "$cmnt" "$RL/client/cache" || reason="client mount failed: $(tail -1 "$W/client-mount.log")"
  fi
  [ -n "$reason" ] || rl_make_user "$dest" >"$RL/user.log" 2>&1 || reason="cannot create $RL_USER: $(tail -1 "$RL/user.log")"
  if [ -n "$reason" ]; then
    report rootless/client-refuses-idmap "$reason"
    report rootless/idmap-fuse-owners "$reason"
    rootless_cleanup
    return
  fi
  test_rootless_client_refuses "$dest"
  test_rootless_idmap_fuse "$dest"
  rootless_cleanup
}
test_rootless_client_refuses() { # REPOSITORY (/cvmfs/REPO/..., the client there)
  local reason="" out
  rl_helper_conf "$1"
  out=$(rl_in_ns 'rl_as_user cvmfs-rootless-setup 2>&1; echo "rc=$?"')
  echo "$out" | sed 's/^/     /'
  if echo "$out" | grep -q '^rc=0$'; then
    reason="the helper ID-mapped the cvmfs2 FUSE mount: the client allows ID mapping now (cvmfs-idmap-fuse is not needed with it; update docs/rootless.md)"
  elif ! echo "$out" | grep -q 'does not support ID-mapped mounts.*cvmfs-idmap-fuse'; then
    reason="the helper failed without saying that the client mount cannot be ID-mapped and what to do: $(echo "$out" | tail -2 | tr '\n' ' ')"
  fi
  report rootless/client-refuses-idmap "$reason"
}
# Owners and modes (owners_reason's), and /etc/c, deleted by a whiteout, absent.
rl_run_owners='rl_as_user podman run --rm --network none local/rl:1 sh -c "stat -c \"%u:%g %a %n\" /home/user/.profile /x/passwd /etc/b /opt/tool; test ! -e /etc/c || echo /etc/c is visible"'
test_rootless_idmap_fuse() { # REPOSITORY (/cvmfs/REPO/..., the client there)
  local reason="" out view
  mkdir -p "$RL/idmap"
  # As helper/systemd/cvmfs-idmap-fuse@.service runs it (-passthrough: the
  # client's own FUSE mount below, so containers stack on it).
  "$ROOT/build/bin/cvmfs-idmap-fuse" -passthrough "$cmnt" "$RL/idmap" 2>"$RL/idmap-fuse.log" &
  RL_FUSE_PID=$!
  for _ in $(seq 50); do mountpoint -q "$RL/idmap" && break; sleep 0.1; done
  if ! mountpoint -q "$RL/idmap"; then
    report rootless/idmap-fuse-owners "cvmfs-idmap-fuse did not mount: $(tail -2 "$RL/idmap-fuse.log")"
    return
  fi
  rl_helper_conf "$1 $RL/idmap/$NS/rootless"
  view="$RL/run/cvmfs-idmapped/$(echo "${1#/}" | sed 's/%/%25/g; s|/|%2F|g')"
  out=$(rl_in_ns "rl_as_user cvmfs-rootless-setup >&2 && $rl_run_owners && rl_as_user podman info --format '{{json .Store.GraphStatus}}' >'$RL/status.json'" 2>"$RL/run.err") ||
    reason="set-up or run failed: $(tail -3 "$RL/run.err" | tr '\n' ' ')"
  sed 's/^/     /' "$RL/run.err" | grep -v '^     $' | head -5
  echo "$out" | sed 's/^/     /'
  local want="1000:1000 640 /home/user/.profile
0:0 4755 /x/passwd
2000:2000 600 /etc/b
1000:100 755 /opt/tool"
  [ -n "$reason" ] || [ "$out" = "$want" ] ||
    reason="the container shows: $(echo "$out" | tr '\n' ';') (expected $(echo "$want" | tr '\n' ';'))"
  if [ -z "$reason" ] && ! jq -r '."Rootless Ownership"' "$RL/status.json" | grep -q 'ID-mapped view'; then
    reason="podman info's Rootless Ownership does not name the view: $(head -c 300 "$RL/status.json")"
  fi
  report rootless/idmap-fuse-owners "$reason"
  [ -z "$reason" ] && rl_time_view_against_plain "$view"
}
# The time of `podman run` (the owners command above, to its exit) through
# the view and reading the client without one, alternated; the view is
# detached in podman's namespace for the plain runs and attached again.
rl_time_view_against_plain() { # VIEW
  local r t0 t1 v=() p=()
  for r in 1 2 3; do
    sync; echo 3 >/proc/sys/vm/drop_caches
    t0=$(date +%s.%N); rl_in_ns "$rl_run_owners" >/dev/null 2>&1; t1=$(date +%s.%N)
    v+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')")
    rl_in_ns "rl_as_user podman unshare umount '$1'" >/dev/null 2>&1
    sync; echo 3 >/proc/sys/vm/drop_caches
    t0=$(date +%s.%N); rl_in_ns "$rl_run_owners" >/dev/null 2>&1; t1=$(date +%s.%N)
    p+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')")
    rl_in_ns "rl_as_user cvmfs-rootless-setup" >/dev/null 2>&1
  done
  echo "     podman run (rootless, cold page cache) through cvmfs-idmap-fuse: ${v[*]} s; the client without a view: ${p[*]} s"
}

# REAL_CVMFS_ONLY=WORD runs only the parts whose name contains WORD (images by
# name, no_nobody, crash, concurrent, owners, rootless, ducc: ducc/* and ducc-only/*).
want() { [ -z "${REAL_CVMFS_ONLY:-}" ] || [[ "$1" == *"$REAL_CVMFS_ONLY"* ]]; }
for img in wh nodel dirtimes raw; do
  want "$img" && test_image "$img" "${IMAGES[$img]}"
done
want no_nobody && test_no_nobody
want crash && test_crash
want concurrent && test_concurrent
want owners && test_owners
want rootless && test_rootless
if want ducc; then
  # REAL_CVMFS_DUCC_IMAGE=<name> REAL_CVMFS_DUCC_OCI=<oci dir> (a kept earlier run's
  # conversion, REAL_CVMFS_KEEP_TMP=1) skips DUCC's conversion for the ducc-only cases.
  if [ -n "${REAL_CVMFS_DUCC_IMAGE:-}" ]; then
    DUCC_IMAGE=$REAL_CVMFS_DUCC_IMAGE DUCC_OCI=$REAL_CVMFS_DUCC_OCI
    client_mount || report client-mount "$(tail -1 "$W/client-mount.log")"
  else
    test_ducc
  fi
  test_ducc_only
  test_ducc_only_slow_client
fi

summary
[ "$failed" -eq 0 ]
