#!/usr/bin/env bash
# make test-publish: end-to-end tests of `cvmfs-podman publish` / `check`.
#
# Builds test images from layer specs (tests/publish/images/*.spec) into an OCI
# layout, copies them into a real docker-registry on 127.0.0.1 and into a
# docker-archive with skopeo, publishes from all three sources and checks what a
# user of the repository would: the DUCC layout and JSON, the flat rootfs against
# `umoci unpack`, the tar-split against Go's tar-split, the podmanStore through
# the patched containers-storage CLI (images, layers, a mounted container, layer
# diffs byte for byte), incremental and shared publishing, moved tags, a hostile
# corpus (each rejected with a message naming image, layer and entry, leaving no
# trace), kill -9 at random points, and parallel publishers.
#
# The cases run through hack/lib-test.sh: known failures in
# tests/publish/known-failures.txt ("<case name> — <reason>"), TEST_FILTER=<regex>
# to run some. Ends with exactly one line "N passed, N failed, N skipped".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"

log_dir="$ROOT/build/test-publish"
rm -rf "$log_dir"
# shellcheck source=hack/lib-test.sh
source "$ROOT/hack/lib-test.sh"
# PUBLISH_ONLY=<regex> (the older name) runs only the cases whose name matches.
TEST_FILTER=${TEST_FILTER:-${PUBLISH_ONLY:-}}
test_init test-publish "$ROOT/tests/publish/known-failures.txt" "$log_dir"

if [ "$(id -u)" -ne 0 ]; then
  die "must run as root (ownership is kept, the driver mounts overlayfs)"
fi
for tool in skopeo umoci docker-registry jq python3; do
  command -v "$tool" >/dev/null || die "$tool missing (make deps)"
done

# ------------------------------------------------------------------ build
echo "==> building cvmfs-podman"
cargo build --release --bin cvmfs-podman --quiet || die "building cvmfs-podman failed"
B="$ROOT/target/release/cvmfs-podman"

echo "==> building tsverify (Go tar-split reference)"
TSV="$ROOT/build/tsverify"
if ! (cd tests/publish/tsverify && GOFLAGS=-mod=mod GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off \
      go build -o "$TSV" .) >"$log_dir/tsverify-build.log" 2>&1; then
  cat "$log_dir/tsverify-build.log" >&2
  die "building tsverify failed"
fi

CSBIN="$ROOT/build/containers-storage"
# The CLI links the driver statically: a binary older than the library would
# test yesterday's driver (e.g. without the owner restoring this suite checks).
if ! "$ROOT/hack/build-lib.sh" >"$log_dir/lib-build.log" 2>&1; then
  cat "$log_dir/lib-build.log" >&2
  die "building the library failed"
fi
if [ ! -x "$CSBIN" ] || [ "${CARGO_TARGET_DIR:-$ROOT/target}/release/libcvmfs_graphdriver.a" -nt "$CSBIN" ]; then
  echo "==> building the patched containers-storage CLI (as hack/test-bats.sh does)"
  (
    source "$ROOT/hack/lib-storage.sh"
    pin_rust_lib
    module=$("$ROOT/hack/patched-storage.sh")
    cd "$module" && go build -o "$CSBIN" ./cmd/containers-storage
  ) >"$log_dir/cs-build.log" 2>&1 || { cat "$log_dir/cs-build.log" >&2; }
fi

# ------------------------------------------------------------------ fixtures
W=$(mktemp -d /tmp/test-publish.XXXXXX)
REG_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
  # containers from the storage tests may still be mounted
  grep -o " $W[^ ]*" /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

IMG=tests/publish/images
OCI="$W/oci"
make_sparse_tars() { # dir: one sparse file (6 data fragments, holes between) in every GNU tar sparse format
  mkdir -p "$1/root/data" &&
  python3 - "$1/root/data/sparse" <<'PY' &&
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(6):  # more fragments than an old GNU header holds: extension blocks
        f.seek(i * (1 << 20))
        f.write(b"fragment %d\n" % i * 100)
    f.truncate(7 << 20)
PY
  touch -d @1700000000 "$1/root/data/sparse" "$1/root/data" &&
  tar --sparse --format=gnu --owner=0 --group=0 -C "$1/root" -cf "$1/gnu.tar" data &&
  for v in 0.0 0.1 1.0; do
    tar --sparse --format=posix --sparse-version=$v --owner=0 --group=0 \
      --pax-option=delete=atime,delete=ctime -C "$1/root" -cf "$1/pax${v/./}.tar" data || return 1
  done
}
echo "==> building test images"
{
  "$B" make-oci "$OCI" --tag wh "$IMG/base.spec" "$IMG/delete.spec" "$IMG/top.spec" &&
  "$B" make-oci "$OCI" --tag shared "$IMG/base.spec" "$IMG/delete.spec" "$IMG/shared-top.spec" &&
  "$B" make-oci "$OCI" --tag zstd --compression zstd "$IMG/base.spec" "$IMG/top.spec" &&
  "$B" make-oci "$OCI" --tag gz --compression gzip "$IMG/base.spec" "$IMG/top.spec" &&
  "$B" make-oci "$OCI" --tag chmod "$IMG/chmod1.spec" "$IMG/chmod2.spec" &&
  make_sparse_tars "$W/sparse" &&
  "$B" make-oci "$OCI" --tag sparse "$W/sparse"/{gnu,pax00,pax01,pax10}.tar &&
  "$B" make-oci "$OCI" --tag chmod-base "$IMG/chmod1.spec" &&
  "$B" make-oci "$W/crash" --tag c "$IMG/base.spec" "$IMG"/crash{1,2,3,4}.spec "$IMG/big.spec" &&
  "$B" make-oci "$W/par" --tag p "$IMG"/crash{4,3}.spec "$IMG/big.spec" "$IMG/top.spec"
} >"$log_dir/fixtures.log" 2>&1 || { cat "$log_dir/fixtures.log"; die "building the test images failed"; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG="127.0.0.1:$port"
cat >"$W/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $W/registry-data
http:
  addr: $REG
log:
  level: error
EOF
docker-registry serve "$W/registry.yml" >"$log_dir/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 50); do curl -fs "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
echo "==> registry on $REG (pid $REG_PID)"
{
  skopeo copy --quiet --dest-tls-verify=false "oci:$OCI:wh" "docker://$REG/test/wh:1" &&
  skopeo copy --quiet --dest-tls-verify=false "oci:$OCI:shared" "docker://$REG/test/shared:1" &&
  skopeo copy --quiet "oci:$OCI:wh" "docker-archive:$W/wh.tar:$REG/test/wh:1"
} >"$log_dir/skopeo.log" 2>&1 || { cat "$log_dir/skopeo.log"; die "copying the test images failed"; }

# helpers --------------------------------------------------------------------
manifest_of() { # oci dir, tag -> manifest blob path
  local d
  d=$(jq -r --arg t "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | .digest' "$1/index.json")
  echo "$1/blobs/sha256/${d#sha256:}"
}
config_digest() { jq -r .config.digest "$(manifest_of "$1" "$2")"; }
layer_digests() { jq -r '.layers[].digest' "$(manifest_of "$1" "$2")"; }
diff_ids() { local c; c=$(config_digest "$1" "$2"); jq -r '.rootfs.diff_ids[]' "$1/blobs/sha256/${c#sha256:}"; }
layer_ids() { # diffIDs on stdin -> containers/image layer IDs
  python3 -c '
import hashlib, sys
p = None
for d in sys.stdin.read().split():
    h = d.split(":", 1)[1]
    p = h if p is None else hashlib.sha256((p + "+" + h).encode()).hexdigest()
    print(p)'
}
cs() { # containers-storage on a fresh graphroot with the repo as image store
  local repo=$1
  shift
  "$CSBIN" --graph "$W/cs/g" --run "$W/cs/r" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$repo/podmanStore" --storage-opt "cvmfs.repositories=$repo" "$@"
}
snap() { # a comparable listing of a tree (tests/publish/snap.py [--keep-catalogs])
  [ -d "$1" ] || { echo "snap: $1 is not a directory" >&2; return 1; }
  python3 "$ROOT/tests/publish/snap.py" "$@"
}
# what is in a tree (directory times left out: temporaries come and go in them)
tree_state() { (cd "$1" && { find . -type d -printf '%y %m %U:%G %p\n'; find . ! -type d -printf '%y %m %U:%G %s %T@ %p\n'; } | sort); }

R1="$W/repo-oci"

# ------------------------------------------------------------------ tests
# The JSON the publisher writes (DUCC metadata and manifest, the tag link,
# podmanStore's layers/images/big data, layer records with markers and flat
# tree, the --json report of publish, republish and a shared image) is checked
# field by field through typed records in crates/publisher/tests/publish_records.rs
# (make test-rust). The cases here build on the repository these publish.
t_publish_oci() {
  "$B" publish "oci:$OCI:wh" --repo "$R1" --name "$REG/test/wh:1" -q
  "$B" check "$R1"
}


layerfs_of() { # tag, index -> layerfs path
  local d
  d=$(layer_digests "$OCI" "$1" | sed -n "$(($2 + 1))p")
  d=${d#sha256:}
  echo "$R1/.layers/${d:0:2}/$d/layerfs"
}

t_raw_whiteouts_and_ownership() {
  local l0 l1
  l0=$(layerfs_of wh 0)
  l1=$(layerfs_of wh 1)
  # DUCC keeps the OCI markers as plain files, mode as in the tar
  [ "$(stat -c '%F %a %s' "$l1/etc/.wh.a")" = "regular empty file 0 0" ] || fail "etc/.wh.a: $(stat -c '%F %a %s' "$l1/etc/.wh.a")"
  [ "$(stat -c '%F %a' "$l1/data/x/.wh..wh..opq")" = "regular empty file 0" ] || fail "opaque marker"
  [ -z "$(getfattr --absolute-names -d -m- "$l1/data/x" 2>/dev/null)" ] || fail "xattrs left on data/x: $(getfattr -d -m- "$l1/data/x")"
  [ ! -e "$l1/etc/a" ] || fail "etc/a must not exist in the whiteout layer"
  # ownership kept (documented: we publish as root and keep it, DUCC does not)
  [ "$(stat -c '%u:%g %a' "$l0/home/user")" = "1000:1000 700" ] || fail "home/user: $(stat -c '%u:%g %a' "$l0/home/user")"
  [ "$(stat -c '%u:%g' "$l1/etc/b")" = "2000:2000" ] || fail "etc/b owner"
  [ "$(stat -c '%a' "$l0/bin/passwd")" = "4755" ] || fail "setuid bit lost"
  [ "$(stat -c '%F %t:%T' "$l0/dev/null")" = "character special file 1:3" ] || fail "dev/null"
  [ "$(stat -c '%i' "$l0/bin/ls")" = "$(stat -c '%i' "$l0/bin/sh")" ] || fail "hardlink bin/ls"
  [ "$(getfattr --only-values -n user.k "$l0/etc/xattr")" = "v" ] || fail "xattr user.k"
}

t_catalogs() {
  local c h
  c=$(config_digest "$OCI" wh)
  c=${c#sha256:}
  for p in .layers .flat "podmanStore" ".flat/${c:0:2}/$c"; do
    [ -f "$R1/$p/.cvmfscatalog" ] || fail "no .cvmfscatalog in $p"
  done
  # The indexes and the records are in the store's catalog (one round trip
  # less on a cold client), and the image's start links lead to its top
  # layer's record and directory.
  for p in podmanStore/cvmfs-images podmanStore/cvmfs-layers podmanStore/cvmfs; do
    [ ! -e "$R1/$p/.cvmfscatalog" ] || fail "$p must not be a catalog of its own"
  done
  [ -f "$R1/podmanStore/cvmfs/start/$c/record" ] || fail "no start link to the top layer's record of $c"
  [ -d "$R1/podmanStore/cvmfs/start/$c/layer" ] || fail "no start link to the top layer's directory of $c"
  [ ! -e "$R1/.flat/${c:0:2}/.cvmfscatalog" ] || fail ".flat/XX must not be a catalog (DUCC: each .flat/XX/<c>)"
  for h in $(layer_digests "$OCI" wh); do
    h=${h#sha256:}
    [ -f "$R1/.layers/${h:0:2}/.cvmfscatalog" ] || fail "no catalog in .layers/${h:0:2}"
    [ -f "$R1/.layers/${h:0:2}/$h/layerfs/.cvmfscatalog" ] || fail "no catalog in layerfs of $h"
  done
}


t_flat_matches_umoci() {
  rm -rf "$W/umoci"
  umoci unpack --image "$OCI:wh" "$W/umoci" >/dev/null
  diff <(snap "$W/umoci/rootfs") <(snap "$R1/$REG/test/wh:1/")
}

t_tar_split_go() {
  local d h lf want got
  for d in $(layer_digests "$OCI" wh); do
    h=${d#sha256:}
    lf="$R1/.layers/${h:0:2}/$h/layerfs"
    want=$(jq -r '.[0]["diff-digest"] + " " + (.[0]["diff-size"]|tostring)' "$R1/.layers/${h:0:2}/$h/.metadata/layers.json")
    got=$("$TSV" asm "$R1/podmanStore/cvmfs/tar-split/$h.tar-split.gz" "$lf")
    [ "$got" = "$want" ] || fail "layer $d: reassembled $got, want $want"
    gzip -dc "$OCI/blobs/sha256/$h" >"$W/layer.tar"
    "$TSV" disasm "$W/layer.tar" >"$W/go.jsonl"
    gzip -dc "$R1/podmanStore/cvmfs/tar-split/$h.tar-split.gz" >"$W/rs.jsonl"
    python3 - "$W/go.jsonl" "$W/rs.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
if a != b:
    sys.exit(f"tar-split entries differ from Go's: {len(a)} vs {len(b)} entries")
PY
  done
}

t_sparse_layers() {
  # GNU (old S with extension blocks) and PAX 0.0/0.1/1.0 sparse files: unpacked
  # expanded, and the tar-split still rebuilds each layer byte for byte (Go's
  # tar-split reassembly and check --deep)
  local r="$W/repo-sparse" d h lf want got c m
  "$B" publish "oci:$OCI:sparse" --repo "$r" -q
  "$B" check --deep "$r"
  for d in $(layer_digests "$OCI" sparse); do
    h=${d#sha256:}
    lf="$r/.layers/${h:0:2}/$h/layerfs"
    cmp "$lf/data/sparse" "$W/sparse/root/data/sparse" || fail "layer $d: data/sparse differs from the original"
    want=$(jq -r '.[0]["diff-digest"] + " " + (.[0]["diff-size"]|tostring)' "$r/.layers/${h:0:2}/$h/.metadata/layers.json")
    got=$("$TSV" asm "$r/podmanStore/cvmfs/tar-split/$h.tar-split.gz" "$lf")
    [ "$got" = "$want" ] || fail "layer $d: Go reassembles $got, want $want"
  done
  # the holes stay holes (7 MiB file, 6 small fragments)
  [ "$(du -k "$lf/data/sparse" | cut -f1)" -lt 1024 ] || fail "data/sparse is not sparse in layerfs: $(du -k "$lf/data/sparse")"
  c=$(config_digest "$OCI" sparse)
  c=${c#sha256:}
  cmp "$r/.flat/${c:0:2}/$c/data/sparse" "$W/sparse/root/data/sparse"
  cs_at cs-sparse "$r" create-container --name sp "$c" >/dev/null
  m=$(cs_at cs-sparse "$r" mount sp)
  cmp "$m/data/sparse" "$W/sparse/root/data/sparse"
  cs_at cs-sparse "$r" unmount sp >/dev/null
  cs_at cs-sparse "$r" delete-container sp >/dev/null
  # push/save: containers/storage rebuilds each layer from tar-split + layerfs
  local id i=0 ids
  mapfile -t ids < <(diff_ids "$OCI" sparse | layer_ids)
  for id in "${ids[@]}"; do
    want=$(diff_ids "$OCI" sparse | sed -n "$((i + 1))p")
    cs_at cs-sparse "$r" diff -u -f "$W/sdiff.tar" "$id"
    [ "sha256:$(sha256sum <"$W/sdiff.tar" | cut -d' ' -f1)" = "$want" ] || fail "diff of sparse layer $id is not byte-identical"
    i=$((i + 1))
  done
}


t_containers_storage() {
  [ -x "$CSBIN" ] || fail "no $CSBIN (build log: $log_dir/cs-build.log)"
  local ids cfg
  mapfile -t ids < <(diff_ids "$OCI" wh | layer_ids)
  cfg=$(config_digest "$OCI" wh)
  cs "$R1" images >"$W/cs-images.txt"
  grep -q "^${cfg#sha256:}$" "$W/cs-images.txt" || fail "image not listed: $(cat "$W/cs-images.txt")"
  grep -q "name: $REG/test/wh:1$" "$W/cs-images.txt" || fail "name not listed"
  cs "$R1" layers >"$W/cs-layers.txt"
  for id in "${ids[@]}"; do grep -q "^$id$" "$W/cs-layers.txt" || fail "layer $id not listed: $(cat "$W/cs-layers.txt")"; done
  cs "$R1" create-container --name pubtest "$REG/test/wh:1" >/dev/null
  local m
  m=$(cs "$R1" mount pubtest)
  [ "$(cat "$m/etc/hosts")" = "127.0.0.1 localhost" ] || fail "etc/hosts in the mounted container"
  [ "$(stat -c %u:%g "$m/home/user/.profile")" = "1000:1000" ] || fail "ownership in the container"
  [ -f "$m/opt/tool" ] && [ -f "$m/data/x/3" ] || fail "top-layer files missing"
  # push/save reproduce the original layer tars: the layer store rebuilds each
  # one from tar-split + the layer's files
  local i=0 want
  for id in "${ids[@]}"; do
    want=$(diff_ids "$OCI" wh | sed -n "$((i + 1))p")
    cs "$R1" diff -u -f "$W/diff.tar" "$id"
    [ "sha256:$(sha256sum <"$W/diff.tar" | cut -d' ' -f1)" = "$want" ] || fail "diff of layer $id is not byte-identical"
    i=$((i + 1))
  done
  cs "$R1" unmount pubtest >/dev/null
  cs "$R1" delete-container pubtest >/dev/null
}

# mounted_lowers MOUNT_POINT: the lower directories of the overlay on it, one a
# line, short names (lowerdir+=N) resolved through MOUNT_POINT.lowers/N.
mounted_lowers() {
  local m=$1 opt
  awk -v m="$m" '$5 == m { print $NF }' /proc/self/mountinfo | tr ',' '\n' |
    sed -n 's/^lowerdir+\{0,1\}=//p' | tr ':' '\n' | while read -r opt; do
      case $opt in
      /*) echo "$opt" ;;
      *) readlink "$m.lowers/$opt" ;;
      esac
    done
}

t_container_rootfs_exact() {
  # the correctness contract: the container sees the OCI rootfs (no .wh.* files,
  # deleted and opaque-hidden files gone), mounted from the flat tree the
  # publisher built and, with cvmfs.use_flat=false, from the layers (whose
  # records list their markers)
  rm -rf "$W/umoci"
  umoci unpack --image "$OCI:wh" "$W/umoci" >/dev/null
  local rc=0 m opts use_flat
  for use_flat in true false; do
    cs "$R1" --storage-opt "cvmfs.use_flat=$use_flat" create-container --name exact "$REG/test/wh:1" >/dev/null
    m=$(cs "$R1" --storage-opt "cvmfs.use_flat=$use_flat" mount exact)
    # The lower directories mountinfo shows: full paths, or for a deep stack
    # short links (lowerdir+=N) in a directory beside the mount point, whose
    # targets are what is mounted.
    grep -q " $m " /proc/self/mountinfo || { echo "$m is not a mount point"; rc=1; }
    opts=$(mounted_lowers "$m" | tr '\n' ' ')
    case $use_flat/$opts in
    true/*/.flat/*) ;;
    false/*/.flat/*) echo "use_flat=false mounted the flat tree: $opts"; rc=1 ;;
    false/*/layerfs*) ;;
    *) echo "use_flat=$use_flat: unexpected lowers: $opts"; rc=1 ;;
    esac
    # strict: the container sees no .wh.* markers and no CVMFS catalog marker
    diff <(snap "$W/umoci/rootfs" --keep-catalogs) <(snap "$m" --keep-catalogs) || rc=1
    cs "$R1" unmount exact >/dev/null
    cs "$R1" delete-container exact >/dev/null
  done
  return $rc
}



t_shared_layers() {
  "$B" publish "oci:$OCI:shared" --repo "$R1" --name "$REG/test/shared:1" -q
  "$B" check "$R1"
}

t_moved_tag() {
  # the tag moves to another image; the old one stays (nameless) for running containers
  "$B" publish "oci:$OCI:shared" --repo "$R1" --name "$REG/test/wh:1" --json >/dev/null
  local c1 c2
  c1=$(config_digest "$OCI" wh)
  c2=$(config_digest "$OCI" shared)
  # (images.json's names and the tag link after the move: publish_records.rs)
  [ "$(readlink "$R1/$REG/test/wh:1")" = "../../.flat/${c2:7:2}/${c2#sha256:}" ]
  "$B" check "$R1"
  cs "$R1" images >"$W/cs-m.txt"
  grep -q "${c1#sha256:}" "$W/cs-m.txt"
  # move it back for the following tests
  "$B" publish "oci:$OCI:wh" --repo "$R1" --name "$REG/test/wh:1" -q
}

t_gc() {
  # what gc reports and removes, file by file: publish_records.rs; here the
  # image store containers-storage reads afterwards
  local r="$W/repo-gc" c1 c2 top
  cp -a "$R1" "$r"
  c1=$(config_digest "$OCI" wh)
  c2=$(config_digest "$OCI" shared)
  # move wh's only name to the other image: wh becomes garbage
  "$B" publish "oci:$OCI:shared" --repo "$r" --name "$REG/test/wh:1" -q
  "$B" gc --repo "$r"
  top=$(layer_digests "$OCI" wh | tail -1)
  [ ! -e "$r/.layers/${top:7:2}/${top#sha256:}" ] || fail "the unused layer directory is still there"
  "$B" check "$r"
  cs "$r" images >"$W/cs-gc.txt"
  grep -q "${c2#sha256:}" "$W/cs-gc.txt" && ! grep -q "${c1#sha256:}" "$W/cs-gc.txt"
}

t_reuse_ducc_layers() {
  # layers unpacked by someone else (DUCC: no tar-split, ownership lost) are
  # reused: tar-split rebuilt from the blob, records say "ownership":"lost"
  local r="$W/repo-ducc" base top ids
  "$B" publish "oci:$OCI:wh" --repo "$r" -q
  base=$(layer_digests "$OCI" wh | head -1)
  base=${base#sha256:}
  rm -rf "$r/podmanStore"
  chown -R 0:0 "$r/.layers/${base:0:2}/$base/layerfs"
  # (what the records say -- written 0, ownership lost/kept, no flat tree
  # named, markers listed -- is checked in publish_records.rs)
  "$B" publish "oci:$OCI:wh" --repo "$r" -q
  local want got
  want=$(diff_ids "$OCI" wh | head -1)
  got=$("$TSV" asm "$r/podmanStore/cvmfs/tar-split/$base.tar-split.gz" "$r/.layers/${base:0:2}/$base/layerfs")
  [ "${got%% *}" = "$want" ] || fail "rebuilt tar-split gives $got"
  "$B" check "$r"
}

cs_at() { # containers-storage with its own graphroot $1 (the driver caches built layers there)
  local g=$1 repo=$2
  shift 2
  "$CSBIN" --graph "$W/$g/g" --run "$W/$g/r" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$repo/podmanStore" --storage-opt "cvmfs.repositories=$repo" "$@"
}
owner_in_container() { # graphroot, repo, image, path -> uid:gid seen in a mounted container
  local m o
  cs_at "$1" "$2" create-container --name own "$3" >/dev/null
  m=$(cs_at "$1" "$2" mount own)
  o=$(stat -c %u:%g "$m/$4")
  cs_at "$1" "$2" unmount own >/dev/null
  cs_at "$1" "$2" delete-container own >/dev/null
  echo "$o"
}

t_ducc_owners_restored() {
  # DUCC lost the owners of a layer: the publisher writes ownership.json from
  # the tar beside the layer's record, and a container shows the image's owners
  local r="$W/repo-ducc-own" base c ids own
  "$B" publish "oci:$OCI:wh" --repo "$r" -q
  base=$(layer_digests "$OCI" wh | head -1)
  base=${base#sha256:}
  c=$(config_digest "$OCI" wh)
  c=${c#sha256:}
  rm -rf "$r/podmanStore"
  chown -R 0:0 "$r/.layers/${base:0:2}/$base/layerfs"
  # (the record says "lost" and ownership.json lists the tar's owners:
  # publish_records.rs; here what a container shows and what check says)
  "$B" publish "oci:$OCI:wh" --repo "$r" -q
  mapfile -t ids < <(diff_ids "$OCI" wh | layer_ids)
  own="$r/podmanStore/cvmfs/layers/${ids[0]}/ownership.json"
  [ -f "$own" ] || fail "no ownership.json for the layer that lost its owners"
  "$B" check "$r" >"$W/own-check.out"
  ! grep -q "no .*ownership.json restores them" "$W/own-check.out" || fail "check notes lost owners: $(cat "$W/own-check.out")"
  # without the file the container shows root (the test can fail), with it the image's owner
  mv "$own" "$W/own.saved"
  [ "$(owner_in_container cs-own0 "$r" "$c" home/user/.profile)" = "0:0" ] || fail "without ownership.json the owner is not the repository's"
  "$B" check "$r" >"$W/own-check0.out"
  grep -q "lost their owners and no .*ownership.json restores them" "$W/own-check0.out"
  mv "$W/own.saved" "$own"
  got=$(owner_in_container cs-own1 "$r" "$c" home/user/.profile)
  [ "$got" = "1000:1000" ] || fail "home/user/.profile shows $got in the container, the image says 1000:1000"
  got=$(owner_in_container cs-own1 "$r" "$c" home/user)
  [ "$got" = "1000:1000" ] || fail "home/user shows $got in the container, the image says 1000:1000"
  # the owners file is kept per blob: lost beside the record, a republish restores it
  rm "$own"
  "$B" publish "oci:$OCI:wh" --repo "$r" -q
  cmp "$own" "$r/podmanStore/cvmfs/tar-split/$base.ownership.json"
  # an owners file the driver would refuse is a problem for check
  echo '{"version":1,"entries":[{"path":"no/such","uid":1,"gid":1}]}' >"$own"
  if "$B" check "$r" >"$W/own-bad.out"; then fail "check accepted an ownership.json naming a missing path"; fi
  grep -q 'entry "no/such" is not in the layer' "$W/own-bad.out"
  echo '{"version":2,"entries":[]}' >"$own"
  if "$B" check "$r" >"$W/own-bad.out"; then fail "check accepted an ownership.json of version 2"; fi
  grep -q "the driver refuses it" "$W/own-bad.out"
  cp "$r/podmanStore/cvmfs/tar-split/$base.ownership.json" "$own"
  # enable copies it into a local store; gc removes it with the layer
  "$B" enable "localhost/oci:wh" --repo "$r" --store "$W/own-store"
  cmp "$own" "$W/own-store/cvmfs/layers/${ids[0]}/ownership.json"
  # an image sharing no layer takes the tag: gc drops every layer of the old one
  "$B" publish "oci:$W/par:p" --repo "$r" --name localhost/oci:wh -q
  "$B" gc --repo "$r" >/dev/null
  [ ! -e "$own" ] && [ ! -e "$r/podmanStore/cvmfs/tar-split/$base.ownership.json" ] || fail "gc left the owners of a removed layer"
  "$B" check "$r"
}

layerfs_dirs() { # oci dir, tag, repo -> each layer's layerfs, bottom first
  local d
  for d in $(layer_digests "$1" "$2"); do
    d=${d#sha256:}
    echo "$3/.layers/${d:0:2}/$d/layerfs"
  done
}

t_flat_hardlinks_keep_layers() {
  # .flat shares regular files with layerfs by hardlink. A later layer's chmod /
  # chown re-ships the file: the flat path must then be the upper layer's inode,
  # and the lower layer's copy must keep its own mode, owner and time.
  local r="$W/repo-chmod" c l1 l2 before
  "$B" publish "oci:$OCI:chmod-base" --repo "$r" -q
  mapfile -t lf < <(layerfs_dirs "$OCI" chmod "$r")
  l1=${lf[0]}
  before=$(stat -c '%i %a %u:%g %Y %s' "$l1/srv/f")
  [ "${before#* }" = "644 0:0 1700000000 13" ] || fail "layer 1's srv/f is $before"
  "$B" publish "oci:$OCI:chmod" --repo "$r" -q
  c=$(config_digest "$OCI" chmod)
  c=${c#sha256:}
  l2=${lf[1]}
  [ "$(stat -c '%i %a %u:%g %Y %s' "$l1/srv/f")" = "$before" ] || fail "publishing the chmod layer changed layer 1's srv/f: $(stat -c '%i %a %u:%g %Y %s' "$l1/srv/f")"
  [ "$(stat -c '%a %u:%g %Y' "$r/.flat/${c:0:2}/$c/srv/f")" = "4750 1000:1000 1700000500" ]
  [ "$(stat -c %i "$r/.flat/${c:0:2}/$c/srv/f")" = "$(stat -c %i "$l2/srv/f")" ] || fail "flat srv/f is not layer 2's file"
  [ "$(stat -c %i "$r/.flat/${c:0:2}/$c/srv/keep")" = "$(stat -c %i "$l1/srv/keep")" ] || fail "flat srv/keep is not shared with layer 1"
  # the invariant for every file of a flat tree: it is the top layer's file
  python3 "$ROOT/tests/publish/flat_shares.py" "$r/.flat/${c:0:2}/$c" "${lf[@]}"
  # containers of the base image still see layer 1's owner, the others the chmod's
  [ "$(owner_in_container cs-chmod "$r" "$(config_digest "$OCI" chmod-base | cut -d: -f2)" srv/f)" = "0:0" ]
  [ "$(owner_in_container cs-chmod "$r" "$c" srv/f)" = "1000:1000" ]
  "$B" check --deep "$r"
  # the same invariant on the whiteout image (deletions, opaque dirs, a re-shipped file)
  c=$(config_digest "$OCI" wh)
  c=${c#sha256:}
  mapfile -t lf < <(layerfs_dirs "$OCI" wh "$R1")
  python3 "$ROOT/tests/publish/flat_shares.py" "$R1/.flat/${c:0:2}/$c" "${lf[@]}"
}

t_enable_local_store() {
  # podman loads only the enabled images' records, which point into the repository
  local st="$W/local-store" c1 c2
  c1=$(config_digest "$OCI" wh)
  c2=$(config_digest "$OCI" shared)
  # (what the local store's images.json/layers.json hold after enable and
  # disable: publish_records.rs; here what containers-storage makes of it)
  "$B" enable "$REG/test/wh:1" --repo "$R1" --store "$st"
  "$CSBIN" --graph "$W/cs2/g" --run "$W/cs2/r" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$st" --storage-opt "cvmfs.repositories=$R1" images >"$W/en.txt"
  grep -q "${c1#sha256:}" "$W/en.txt" && ! grep -q "${c2#sha256:}" "$W/en.txt"
  "$CSBIN" --graph "$W/cs2/g" --run "$W/cs2/r" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$st" --storage-opt "cvmfs.repositories=$R1" create-container --name en "$REG/test/wh:1" >/dev/null
  local m
  m=$("$CSBIN" --graph "$W/cs2/g" --run "$W/cs2/r" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$st" --storage-opt "cvmfs.repositories=$R1" mount en)
  [ "$(cat "$m/etc/hosts")" = "127.0.0.1 localhost" ]
  "$CSBIN" --graph "$W/cs2/g" --run "$W/cs2/r" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$st" --storage-opt "cvmfs.repositories=$R1" unmount en >/dev/null
  "$CSBIN" --graph "$W/cs2/g" --run "$W/cs2/r" --storage-driver cvmfs \
    --storage-opt "cvmfs.imagestore=$st" --storage-opt "cvmfs.repositories=$R1" delete-container en >/dev/null
}

t_zstd() {
  local r="$W/repo-zstd"
  "$B" publish "oci:$OCI:zstd" --repo "$r" -q
  "$B" check "$r"
  # (layers.json records them as zstd: publish_records.rs)
  # umoci cannot read zstd layers: compare with the same layers gzip-compressed
  rm -rf "$W/umoci"
  umoci unpack --image "$OCI:gz" "$W/umoci" >/dev/null
  diff <(snap "$W/umoci/rootfs") <(snap "$r/localhost/oci:zstd/")
}

t_docker_archive() {
  local r="$W/repo-archive"
  "$B" publish "docker-archive:$W/wh.tar" --repo "$r" --json >"$W/pa.json"
  "$B" check "$r"
  # same image and layer IDs as from the OCI layout (they depend on diffIDs only)
  local cfg
  cfg=$(config_digest "$OCI" wh)
  jq -e --arg id "${cfg#sha256:}" --arg n "$REG/test/wh:1" '.image_id == $id and .name == $n' "$W/pa.json"
  diff <(jq -r '.[].id' "$R1/podmanStore/cvmfs-layers/layers.json" | sort) \
       <( (jq -r '.[].id' "$r/podmanStore/cvmfs-layers/layers.json"; jq -r '.[].id' "$R1/podmanStore/cvmfs-layers/layers.json") | sort -u)
  diff <(snap "$R1/$REG/test/wh:1/") <(snap "$r/$REG/test/wh:1/")
  cs "$r" images >"$W/cs-a.txt"
  grep -q "${cfg#sha256:}" "$W/cs-a.txt"
}

t_registry() {
  local r="$W/repo-registry"
  "$B" publish "docker://$REG/test/wh:1" --tls-verify=false --repo "$r" --json >"$W/pr.json"
  "$B" check "$r"
  # the layers are the registry's blobs: same .layers names as the OCI layout's
  diff <(cd "$R1/.layers" && ls -d */*/ | sort | grep -f <(layer_digests "$OCI" wh | sed 's/sha256://')) \
       <(cd "$r/.layers" && ls -d */*/ | sort)
  # the manifest big data is the registry's raw bytes
  local cfg
  cfg=$(config_digest "$OCI" wh)
  curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REG/v2/test/wh/manifests/1" >"$W/reg-manifest"
  cmp "$W/reg-manifest" "$r/podmanStore/cvmfs-images/${cfg#sha256:}/manifest"
  jq -e --arg d "sha256:$(sha256sum <"$W/reg-manifest" | cut -d' ' -f1)" '.manifest_digest == $d' "$W/pr.json"
  # TLS verification on: a plain-http registry is refused with a clear error
  if "$B" publish "docker://$REG/test/wh:1" --repo "$W/repo-tls" -q 2>"$W/tls.err"; then
    fail "publish over unverified http succeeded without --tls-verify=false"
  fi
  grep -q "registry $REG/test/wh" "$W/tls.err"
}

t_registry_token_auth() {
  # a bearer-token front (challenge -> token with basic credentials -> retry)
  local pport
  pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 "$ROOT/tests/publish/token-proxy.py" "$pport" "$REG" alice:secret 2>"$W/proxy.log" &
  local ppid=$!
  for _ in $(seq 50); do curl -s "http://127.0.0.1:$pport/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  local rc=0
  (
    set -e
    # without credentials the token endpoint refuses: a clear error
    if "$B" publish "docker://127.0.0.1:$pport/test/wh:1" --tls-verify=false --repo "$W/repo-auth0" -q 2>"$W/auth.err"; then
      fail "publish without credentials succeeded"
    fi
    cat "$W/auth.err"
    grep -q "token from http://127.0.0.1:$pport/token: HTTP 401" "$W/auth.err"
    REGISTRY_AUTH=alice:secret "$B" publish "docker://127.0.0.1:$pport/test/wh:1" --tls-verify=false \
      --repo "$W/repo-auth" --name "$REG/test/wh:1" -q
    "$B" check "$W/repo-auth"
    grep -q '"GET /token?' "$W/proxy.log"
    diff <(snap "$R1/$REG/test/wh:1/") <(snap "$W/repo-auth/$REG/test/wh:1/")
  ) || rc=1
  kill "$ppid"
  wait "$ppid" 2>/dev/null || true
  return $rc
}

t_registry_tls() {
  # the registry over https with a self-signed certificate
  local tport rc=0
  tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/tls.key" -out "$W/tls.crt" -days 1 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  cat >"$W/registry-tls.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $W/registry-data
http:
  addr: 127.0.0.1:$tport
  tls:
    certificate: $W/tls.crt
    key: $W/tls.key
log:
  level: error
EOF
  cat "$W/registry-tls.yml"
  docker-registry serve "$W/registry-tls.yml" >"$W/registry-tls.log" 2>&1 &
  local tpid=$!
  for _ in $(seq 50); do curl -ks "https://127.0.0.1:$tport/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  (
    set -e
    if "$B" publish "docker://127.0.0.1:$tport/test/wh:1" --repo "$W/repo-tls0" -q 2>"$W/tls0.err"; then
      fail "an unverifiable certificate was accepted"
    fi
    cat "$W/tls0.err"
    grep -qi "certificate\|unknown issuer\|UnknownIssuer" "$W/tls0.err"
    "$B" publish "docker://127.0.0.1:$tport/test/wh:1" --tls-verify=false --repo "$W/repo-tls1" -q
    "$B" check "$W/repo-tls1"
  ) || rc=1
  kill "$tpid"
  wait "$tpid" 2>/dev/null || true
  return $rc
}

t_platform_index() {
  # an index with the host's platform and another one
  local m mdesc arch idx
  m=$(manifest_of "$OCI" wh)
  arch=$(jq -r .architecture "$OCI/blobs/sha256/$(config_digest "$OCI" wh | cut -d: -f2)")
  idx=$(jq -n --arg d "sha256:$(basename "$m")" --argjson s "$(stat -c %s "$m")" --arg a "$arch" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
      {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s, platform: {os: "linux", architecture: "s390x"}},
      {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s, platform: {os: "linux", architecture: $a}}]}')
  printf '%s' "$idx" >"$W/idx.json"
  local h
  h=$(sha256sum <"$W/idx.json" | cut -d' ' -f1)
  cp -r "$OCI" "$W/oci-multi"
  cp "$W/idx.json" "$W/oci-multi/blobs/sha256/$h"
  jq --arg d "sha256:$h" --argjson s "$(stat -c %s "$W/idx.json")" \
    '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": "multi"}}]' \
    "$OCI/index.json" >"$W/oci-multi/index.json"
  "$B" publish "oci:$W/oci-multi:multi" --repo "$W/repo-multi" --json >"$W/pm.json"
  jq -e --arg id "$(config_digest "$OCI" wh | cut -d: -f2)" '.image_id == $id' "$W/pm.json"
  if "$B" publish "oci:$W/oci-multi:multi" --platform linux/riscv64 --repo "$W/repo-multi2" -q 2>"$W/pl.err"; then
    fail "an absent platform was published"
  fi
  grep -q "no manifest for platform linux/riscv64" "$W/pl.err"
  # the same index served by the registry (a manifest list there)
  skopeo copy --quiet --all --dest-tls-verify=false "oci:$W/oci-multi:multi" "docker://$REG/test/multi:1"
  "$B" publish "docker://$REG/test/multi:1" --tls-verify=false --repo "$W/repo-multi3" --json >"$W/pm3.json"
  jq -e --arg id "$(config_digest "$OCI" wh | cut -d: -f2)" '.image_id == $id' "$W/pm3.json"
  "$B" check "$W/repo-multi3"
}

# --- hostile corpus ----------------------------------------------------------
# Each case: publishing fails, stderr names the image, the layer and (for entry
# problems) the entry, and the repository is exactly as before.
R_H="$W/repo-hostile"
hostile_setup() {
  [ -d "$R_H" ] && return 0
  "$B" publish "oci:$OCI:wh" --repo "$R_H" -q
}

expect_rejected() { # name, image ref, layer digest (or ""), expected substring, [publish flags]
  local name=$1 ref=$2 layer=$3 want=$4
  shift 4
  hostile_setup
  tree_state "$R_H" >"$W/before"
  if "$B" publish "$ref" --repo "$R_H" -q "$@" 2>"$W/err"; then
    fail "$name: publish succeeded"
  fi
  cat "$W/err"
  grep -qF -e "image $ref" -e "(from $ref)" "$W/err" || fail "$name: message does not name the image"
  [ -z "$layer" ] || grep -qF "layer $layer" "$W/err" || fail "$name: message does not name layer $layer"
  grep -qF -- "$want" "$W/err" || fail "$name: message lacks '$want'"
  tree_state "$R_H" >"$W/after"
  diff "$W/before" "$W/after" || fail "$name: the repository changed"
  [ -z "$(find "$R_H" -name '.cvmfs-podman-tmp.*')" ] || fail "$name: temporaries left behind"
  "$B" check "$R_H" >/dev/null
}

t_hostile_spec() { # a tests/publish/hostile/*.spec case
  local spec=$1 name want flags dir
  name=$(basename "$spec" .spec)
  want=$(sed -n 's/^# expect: //p' "$spec")
  flags=$(sed -n 's/^# flags: //p' "$spec")
  dir="$W/hostile/$name"
  "$B" make-oci "$dir" --tag t "$IMG/base.spec" "$spec" >/dev/null
  local layer
  layer=$(layer_digests "$dir" t | tail -1)
  # shellcheck disable=SC2086
  expect_rejected "$name" "oci:$dir:t" "$layer" "$want" $flags
}

hostile_copy() { # name -> a fresh copy of the wh layout to corrupt
  rm -rf "$W/hostile/$1"
  mkdir -p "$W/hostile"
  cp -r "$OCI" "$W/hostile/$1"
  echo "$W/hostile/$1"
}

t_truncated_gzip() {
  local d l
  d=$(hostile_copy truncated-gzip)
  l=$(layer_digests "$d" shared | sed -n 3p)
  truncate -s 100 "$d/blobs/sha256/${l#sha256:}"
  # the blob is shorter than its descriptor says: that is named before the gzip error
  expect_rejected truncated-gzip "oci:$d:shared" "$l" "shorter than the declared"
}

t_corrupt_gzip() {
  local d l f
  d=$(hostile_copy corrupt-gzip)
  l=$(layer_digests "$d" shared | sed -n 3p)
  f="$d/blobs/sha256/${l#sha256:}"
  printf '\xff\xff\xff\xff\xff\xff\xff\xff' | dd of="$f" bs=1 seek=40 conv=notrunc status=none
  # a changed blob is first of all not the blob the manifest names
  expect_rejected corrupt-gzip "oci:$d:shared" "$l" "digest mismatch"
}

t_digest_mismatch() {
  # a valid layer, but not the one the manifest names
  local d l other
  d=$(hostile_copy digest-mismatch)
  l=$(layer_digests "$d" shared | sed -n 3p)
  other=$(layer_digests "$d" wh | sed -n 3p)
  cp "$d/blobs/sha256/${other#sha256:}" "$d/blobs/sha256/${l#sha256:}"
  # the other layer is longer: refused one byte past the declared size
  expect_rejected digest-mismatch "oci:$d:shared" "$l" "longer than the declared"
}

rewrite_config() { # layout dir, tag, jq filter: a new config and manifest for the tag
  local d=$1 tag=$2 filter=$3 m c newc newm
  m=$(manifest_of "$d" "$tag")
  c=$(config_digest "$d" "$tag")
  jq -c "$filter" "$d/blobs/sha256/${c#sha256:}" >"$W/cfg"
  newc=$(sha256sum <"$W/cfg" | cut -d' ' -f1)
  cp "$W/cfg" "$d/blobs/sha256/$newc"
  jq -c --arg c "sha256:$newc" --argjson s "$(stat -c %s "$W/cfg")" '.config.digest = $c | .config.size = $s' "$m" >"$W/man"
  newm=$(sha256sum <"$W/man" | cut -d' ' -f1)
  cp "$W/man" "$d/blobs/sha256/$newm"
  jq --arg m "sha256:$newm" --argjson s "$(stat -c %s "$W/man")" --arg t "$tag" \
    '(.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t)) |= (.digest = $m | .size = $s)' \
    "$d/index.json" >"$W/idx" && mv "$W/idx" "$d/index.json"
}

t_diffid_mismatch() {
  # the config names other diffIDs than the layers have
  local d
  d=$(hostile_copy diffid-mismatch)
  rewrite_config "$d" wh '.rootfs.diff_ids[2] = .rootfs.diff_ids[0]'
  expect_rejected diffid-mismatch "oci:$d:wh" "$(layer_digests "$d" wh | sed -n 3p)" "diffID mismatch"
}

t_bad_created_time() {
  # images.json is loaded whole: a config's unparsable "created" must not go there
  local d r="$W/repo-created"
  d=$(hostile_copy bad-created)
  rewrite_config "$d" wh '.created = "yesterday"'
  "$B" publish "oci:$d:wh" --repo "$r" -q
  jq -e '.[0].created | test("^[0-9]{4}-")' "$r/podmanStore/cvmfs-images/images.json"
  cs "$r" images >"$W/cs-created.txt"
  grep -q "$(config_digest "$d" wh | cut -d: -f2)" "$W/cs-created.txt"
}

t_oversized_manifest() {
  local d m big h
  d=$(hostile_copy oversized-manifest)
  m=$(manifest_of "$d" wh)
  python3 - "$m" "$W/big" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["annotations"] = {"padding": "x" * (5 << 20)}
open(sys.argv[2], "w").write(json.dumps(m))
PY
  h=$(sha256sum <"$W/big" | cut -d' ' -f1)
  cp "$W/big" "$d/blobs/sha256/$h"
  jq --arg m "sha256:$h" --argjson s "$(stat -c %s "$W/big")" \
    '(.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="wh")) |= (.digest = $m | .size = $s)' \
    "$d/index.json" >"$W/idx" && mv "$W/idx" "$d/index.json"
  expect_rejected oversized-manifest "oci:$d:wh" "" "oversized manifest"
}

t_truncated_tar() {
  # valid gzip of a tar cut in the middle of a file's data
  local d
  d="$W/hostile/truncated-tar"
  "$B" make-oci "$d" --tag t --compression none "$IMG/base.spec" "$IMG/big.spec" >/dev/null
  local l
  l=$(layer_digests "$d" t | tail -1)
  head -c 1000000 "$d/blobs/sha256/${l#sha256:}" >"$W/cut.tar"
  rm -rf "$d"
  "$B" make-oci "$d" --tag t "$IMG/base.spec" "$W/cut.tar" >/dev/null
  expect_rejected truncated-tar "oci:$d:t" "$(layer_digests "$d" t | tail -1)" "big/f1"
}

t_not_a_tar() {
  local d
  d="$W/hostile/not-a-tar"
  head -c 4096 /dev/urandom >"$W/garbage.tar"
  "$B" make-oci "$d" --tag t "$IMG/base.spec" "$W/garbage.tar" >/dev/null
  expect_rejected not-a-tar "oci:$d:t" "$(layer_digests "$d" t | tail -1)" "tar"
}

t_missing_blob() {
  local d l
  # the shared image's top layer is not in the repository yet
  d=$(hostile_copy missing-blob)
  l=$(layer_digests "$d" shared | sed -n 3p)
  rm "$d/blobs/sha256/${l#sha256:}"
  expect_rejected missing-blob "oci:$d:shared" "$l" "No such file"
}

# --- crash and concurrency ----------------------------------------------------
t_crash() {
  local r="$W/repo-crash" full i ms
  # a full run's duration bounds the kill points
  local t0 t1
  t0=$(date +%s%N)
  "$B" publish "oci:$W/crash:c" --repo "$W/repo-timing" -q
  t1=$(date +%s%N)
  full=$(( (t1 - t0) / 1000000 ))
  echo "full publish: ${full}ms"
  for i in $(seq 20); do
    ms=$(( RANDOM % (full + 1) ))
    "$B" publish "oci:$W/crash:c" --repo "$r" -q &
    local pid=$!
    sleep "$(printf '0.%03d' "$ms")" 2>/dev/null || sleep 0
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    "$B" publish "oci:$W/crash:c" --repo "$r" -q || fail "run $i (killed after ${ms}ms): the next publish failed"
    "$B" check "$r" >"$W/check.out" || { cat "$W/check.out"; fail "run $i (killed after ${ms}ms): check failed"; }
    local left
    left=$(find "$r" -name '.cvmfs-podman-tmp.*')
    [ -z "$left" ] || fail "run $i (killed after ${ms}ms): leftovers after a completed run: $left"
    # start over half of the time, so early kill points are exercised again
    if [ $((i % 2)) -eq 0 ] && [ "$i" -lt 20 ]; then rm -rf "$r"; fi
  done
}

t_parallel() {
  local r="$W/repo-par"
  "$B" publish "oci:$W/crash:c" --repo "$r" -q &
  local a=$!
  "$B" publish "oci:$W/par:p" --repo "$r" -q &
  local b=$!
  "$B" publish "oci:$W/crash:c" --repo "$r" --name localhost/again:1 -q &
  local c=$!
  wait $a && wait $b && wait $c
  "$B" check "$r"
  jq -e 'length == 2' "$r/podmanStore/cvmfs-images/images.json"
  diff <(snap "$r/localhost/crash:c/") <(snap "$r/localhost/again:1/")
}

t_check_detects_corruption() {
  local r="$W/repo-corrupt"
  cp -a "$R1" "$r"
  "$B" check "$r" >/dev/null
  local id
  id=$(jq -r '.[0].id' "$r/podmanStore/cvmfs-layers/layers.json")
  rm "$r/podmanStore/cvmfs-layers/$id.tar-split.gz"
  echo '{' >"$r/podmanStore/cvmfs-images/images.json"
  if "$B" check "$r" >"$W/corrupt.out"; then fail "check accepted a corrupt store"; fi
  cat "$W/corrupt.out"
  grep -q "tar-split.gz is missing" "$W/corrupt.out"
  grep -q "images.json: not a JSON array" "$W/corrupt.out"
  # a marker list the layer does not match, a flat tree that is gone
  local r3="$W/repo-corrupt3" ids rec
  cp -a "$R1" "$r3"
  mapfile -t ids < <(diff_ids "$OCI" wh | layer_ids)
  rec="$r3/podmanStore/cvmfs/layers/${ids[1]}/layer.json"
  jq -c '.markers = ["etc/.wh.not-there"]' "$rec" >"$W/rec.json" && cp "$W/rec.json" "$rec"
  rm -rf "$r3/$(jq -r .flat "$r3/podmanStore/cvmfs/layers/${ids[2]}/layer.json")"
  if "$B" check "$r3" >"$W/corrupt3.out"; then fail "check accepted wrong records"; fi
  cat "$W/corrupt3.out"
  grep -q "layer ${ids[1]}: record's markers differ from .*listed but absent \[\"etc/.wh.not-there\"\]" "$W/corrupt3.out"
  grep -q "layer ${ids[2]}: record names flat tree .* which is not there" "$W/corrupt3.out"
  # --deep rebuilds each layer from tar-split + layerfs: a changed file shows
  local r2="$W/repo-corrupt2" h
  cp -a "$R1" "$r2"
  "$B" check --deep "$r2" >/dev/null
  h=$(layer_digests "$OCI" wh | head -1)
  h=${h#sha256:}
  echo "tampered" >"$r2/.layers/${h:0:2}/$h/layerfs/etc/hosts"
  if "$B" check --deep "$r2" >"$W/corrupt2.out"; then fail "check --deep missed a changed file"; fi
  cat "$W/corrupt2.out"
  grep -q "layer sha256:$h: layerfs content: file \"etc/hosts\" has 9 bytes, the layer had 20" "$W/corrupt2.out"
}

t_library_stays_light() {
  # the library podman links (the archive build-lib.sh makes and build-podman.sh
  # links) carries neither the publisher's code nor the CLI's dependencies
  "$ROOT/hack/build-lib.sh" >/dev/null
  local lib="${CARGO_TARGET_DIR:-$ROOT/target}/release/libcvmfs_graphdriver.a" n
  [ -f "$lib" ] || fail "$lib was not built"
  for dep in cvmfs_publisher cvmfs_testkit ureq rustls flate2 zstd indicatif clap_builder; do
    n=$(nm "$lib" 2>/dev/null | grep -c "$dep" || true)
    [ "$n" -eq 0 ] || fail "$lib contains $n symbols of $dep"
  done
}

echo "==> tests"
run_test "the library podman links carries none of the CLI's dependencies" t_library_stays_light
run_test "publish from an OCI layout" t_publish_oci
run_test "layerfs keeps raw whiteouts, ownership, setuid, devices, hardlinks, xattrs" t_raw_whiteouts_and_ownership
run_test "DUCC .cvmfscatalog markers" t_catalogs
run_test "flat rootfs equals umoci unpack" t_flat_matches_umoci
run_test "tar-split reassembles with Go tar-split and matches its entries" t_tar_split_go
run_test "GNU and PAX sparse files: unpacked expanded, tar-split rebuilds the layer" t_sparse_layers
run_test "containers-storage lists, mounts and diffs the published image" t_containers_storage
run_test "container rootfs equals umoci unpack (flat tree and layers)" t_container_rootfs_exact
run_test "images share layers" t_shared_layers
run_test "a moved tag keeps the old image" t_moved_tag
run_test "gc removes what only untagged images used" t_gc
run_test "layers unpacked by DUCC are reused (tar-split rebuilt, ownership lost)" t_reuse_ducc_layers
run_test "layers DUCC unpacked without owners: ownership.json restores them in a container" t_ducc_owners_restored
run_test ".flat hardlinks: a later layer's chmod/chown leaves the lower layerfs copy alone" t_flat_hardlinks_keep_layers
run_test "enable/disable: a small local store with only the images a user wants" t_enable_local_store
run_test "zstd layers" t_zstd
run_test "publish from a docker-archive" t_docker_archive
run_test "publish from a registry (docker-registry on loopback)" t_registry
run_test "registry bearer-token auth (challenge, basic credentials, token)" t_registry_token_auth
run_test "registry over https: verified by default, --tls-verify=false accepts self-signed" t_registry_tls
run_test "multi-platform index resolved for the host / --platform" t_platform_index
for spec in tests/publish/hostile/*.spec; do
  run_test "hostile: $(basename "$spec" .spec)" t_hostile_spec "$spec"
done
run_test "hostile: truncated gzip" t_truncated_gzip
run_test "hostile: corrupt gzip" t_corrupt_gzip
run_test "hostile: blob digest mismatch" t_digest_mismatch
run_test "hostile: diffID mismatch" t_diffid_mismatch
run_test "hostile: oversized manifest" t_oversized_manifest
run_test "hostile: unparsable created time in the config" t_bad_created_time
run_test "hostile: truncated tar" t_truncated_tar
run_test "hostile: not a tar" t_not_a_tar
run_test "hostile: missing blob" t_missing_blob
run_test "check detects corruption" t_check_detects_corruption
run_test "kill -9 at 20 random points, next run completes, check passes" t_crash
run_test "parallel publishers into one repository" t_parallel

summary
