# Sourced by hack/test-podman-system.sh (which sets PODMAN, T, WORK, SUITE,
# TEST_IMAGE, TEST_IMAGE_TAG, REPO, NOPIDS): patching our copy of podman's
# test/system, building its test image offline, and one run of the suite.

# patch_suite DIR: the two changes our copy of helpers.bash needs, each checked.
#  - podman_storage_driver() dies on any driver but overlay and vfs; cvmfs is
#    accepted too (the tests that ask compare against vfs, and cvmfs, like
#    overlay, is not vfs).
#  - gen-cert-pair (TLS for the remote tests, made by every setup_suite) asks
#    openssl for -quiet, which OpenSSL 3.0 does not know; dropped, and 2048-bit
#    keys instead of 4096 (4 keys per file and run; only podman-remote uses them).
#  - _prefetch loads the cached test image with skopeo, whose stock build has
#    no cvmfs driver; the podman under test loads it instead (same archive,
#    same image ID, in every run, so the runs stay comparable).
patch_suite() {
  local h="$1/helpers.bash"
  python3 - "$h" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
edits = [
    ("        vfs)     ;;\n",
     "        vfs)     ;;\n        cvmfs)   ;;  # cvmfs-graphdriver: hack/lib-podman-system.sh\n"),
    ("    -quiet \\\n", ""),
    ("    -newkey rsa:4096 -keyout", "    -newkey rsa:2048 -keyout"),
    ('    cmd="skopeo copy --all oci-archive:$cachepath containers-storage:$want"\n',
     '    # cvmfs-graphdriver: stock skopeo has no cvmfs driver (hack/lib-podman-system.sh)\n'
     '    cmd="$PODMAN $_PODMAN_TEST_OPTS load -q -i $cachepath"\n'),
]
for old, new in edits:
    if text.count(old) != 1:
        sys.exit(f"{path}: expected exactly one {old.strip()!r}")
    text = text.replace(old, new)
open(path, "w").write(text)
EOF
}

# write_configs DIR RUN RUNDIR: containers.conf, storage.conf and
# policy.json/registries.conf (the host's, copied) for one run in DIR.
write_configs() {
  local dir=$1 run=$2 rundir=$3
  mkdir -p "$dir" "$rundir/root" "$rundir/runroot" "$rundir/libpod-tmp"
  cp -a "$T/host-etc/." "$dir/"
  [ -f "$dir/policy.json" ] || echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$dir/policy.json"
  # runc (crun is not installed), cgroupfs and file events (no systemd or
  # journald here), no firewall rules for networks (no iptables or nft).
  cat >"$dir/containers.conf" <<EOF
[containers]
log_driver = "k8s-file"
# The installed netavark cannot read the network options podman 6 sends
# ("invalid type: sequence, expected a map"), so no network by default.
netns = "none"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
${NOPIDS:+pids_limit = 0}

[engine]
# The catatonit stand-in (tests/podman-system/catatonit-pause.c) for the pods'
# pause image, then the distribution's helpers (netavark).
helper_binaries_dir = ["$T/bin", "/usr/lib/podman", "/usr/libexec/podman"]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "$rundir/libpod-tmp"

[engine.runtimes]
runc = ["/usr/bin/runc", "/usr/sbin/runc"]

[network]
firewall_driver = "none"
EOF
  local driver=overlay
  [[ "$run" != cvmfs* ]] || driver=cvmfs
  printf '[storage]\ndriver = "%s"\ngraphroot = "%s"\nrunroot = "%s"\n' \
    "$driver" "$rundir/root" "$rundir/runroot" >"$dir/storage.conf"
  if [ "$run" = overlay-repo ]; then
    printf '\n[storage.options]\nadditionalimagestores = ["%s"]\n' "$OVERLAY_RO_STORE" >>"$dir/storage.conf"
  fi
  if [ "$run" = cvmfs-repo ]; then
    cat >>"$dir/storage.conf" <<EOF

[storage.options]
additionalimagestores = ["$REPO/podmanStore"]

[storage.options.cvmfs]
repositories = "$REPO"
EOF
  fi
}

# build_test_image DIR ARCHIVE OCIDIR NONLOCAL_ARCHIVE (call with set -e, not as a condition): the stand-in for quay.io/libpod/testimage
# (test/system/build-testimage: alpine plus a few files) from Debian's static
# busybox, built by the podman under test on an overlay store of its own, saved
# as the oci-archive the suite's cache expects and as an OCI layout to publish.
build_test_image() {
  local dir=$1 archive=$2 ocidir=$3 nonlocal_archive=$4
  write_configs "$dir/etc" overlay "$dir/store"
  make_test_rootfs "$dir/rootfs"
  tar --numeric-owner --owner=0 --group=0 -C "$dir/rootfs" -cf "$dir/rootfs.tar" .
  # Two builds, as upstream does: the first keeps the files' own times
  # (testimage-id's 1600000000 is checked by 'run --tz'), the second sets a
  # fixed creation time on the history and the config.
  local created_z created_t
  created_z=$(tag_date)
  created_t=$(date -d "$created_z" +%s)
  printf 'FROM scratch\nADD rootfs.tar /\n' >"$dir/Containerfile1"
  cat >"$dir/Containerfile2" <<EOF
FROM localhost/interim-image:latest
LABEL created_by=test/system/build-testimage
LABEL created_at=$created_z
WORKDIR /home/podman
CMD ["/bin/echo", "This container is intended for podman CI testing"]
EOF
  local pm=(env CONTAINERS_CONF="$dir/etc/containers.conf" CONTAINERS_STORAGE_CONF="$dir/etc/storage.conf"
    "$PODMAN")
  "${pm[@]}" build --squash-all -f "$dir/Containerfile1" -t localhost/interim-image "$dir"
  "${pm[@]}" build --timestamp="$created_t" --squash -f "$dir/Containerfile2" -t "$TEST_IMAGE" "$dir"
  "${pm[@]}" push "$TEST_IMAGE" "oci-archive:$archive:$TEST_IMAGE"
  "${pm[@]}" push "$TEST_IMAGE" "oci:$ocidir:testimage"
  # The "non-local" image (PODMAN_NONLOCAL_IMAGE_FQN) some tests _prefetch,
  # upstream a busybox they only run `true` in: busybox alone, another image ID.
  mkdir -p "$dir/nonlocal/bin"
  cp /bin/busybox "$dir/nonlocal/bin/busybox"
  ln -s busybox "$dir/nonlocal/bin/true"
  ln -s busybox "$dir/nonlocal/bin/sh"
  find "$dir/nonlocal" -exec touch -h --date="$created_z" {} +
  tar --numeric-owner --owner=0 --group=0 -C "$dir/nonlocal" -cf "$dir/nonlocal.tar" .
  printf 'FROM scratch\nADD nonlocal.tar /\n' >"$dir/Containerfile3"
  "${pm[@]}" build --timestamp="$created_t" -f "$dir/Containerfile3" -t "$NONLOCAL_IMAGE" "$dir"
  "${pm[@]}" push "$NONLOCAL_IMAGE" "oci-archive:$nonlocal_archive:$NONLOCAL_IMAGE"
  # ... and ":multiimage" (120-load saves and loads it with the non-local one),
  # upstream an older test image: the same busybox plus a file, a third image ID.
  local multi="$TEST_IMAGE_REPO:multiimage"
  echo multiimage >"$dir/multiimage"
  printf 'FROM %s\nCOPY multiimage /multiimage\n' "$NONLOCAL_IMAGE" >"$dir/Containerfile4"
  "${pm[@]}" build --timestamp="$created_t" -f "$dir/Containerfile4" -t "$multi" "$dir"
  "${pm[@]}" push "$multi" "oci-archive:$(dirname "$archive")/${multi//[\/:]/--}.tar:$multi"
  "${pm[@]}" run --rm "$TEST_IMAGE" sh -c 'cat /home/podman/testimage-id; id nobody'
  # The control for cvmfs-repo: the same image in a read-only overlay store.
  "${pm[@]}" --root "$OVERLAY_RO_STORE" --runroot "$dir/ro-runroot" load -i "$archive"
  "${pm[@]}" --root "$OVERLAY_RO_STORE" --runroot "$dir/ro-runroot" images
  "${pm[@]}" system reset -f
}

# tag_date: the test image's tag (YYYYMMDD) as a time, its creation time here.
tag_date() {
  echo "${TEST_IMAGE_TAG:0:4}-${TEST_IMAGE_TAG:4:2}-${TEST_IMAGE_TAG:6:2}T00:00:00Z"
}

# make_test_rootfs DIR: what the suite uses of alpine: busybox with every
# applet, the usual users and groups, /etc/os-release, and upstream's files
# under /home/podman (testimage-id, pause, healthcheck, bytecheck).
make_test_rootfs() {
  local r=$1 applet
  # alpine's top-level tree (065-cp works in /srv, for one).
  mkdir -p "$r"/{bin,sbin,lib,usr/bin,usr/sbin,usr/lib,usr/local,etc,home/podman,root,tmp,run,proc,sys,dev} \
    "$r"/{srv,mnt,opt,media} "$r"/var/{tmp,cache,lib,log,spool,opt,empty}
  chmod 1777 "$r/tmp" "$r/var/tmp"
  cp /bin/busybox "$r/bin/busybox"
  for applet in $(busybox --list-full); do
    [ -e "$r/$applet" ] || [ -L "$r/$applet" ] || ln -s /bin/busybox "$r/$applet"
  done
  # alpine's busybox-extras (httpd, used by the tests) is in this busybox.
  ln -s busybox "$r/bin/busybox-extras"
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'bin:x:1:1:bin:/bin:/sbin/nologin' \
    'daemon:x:2:2:daemon:/sbin:/sbin/nologin' 'nobody:x:65534:65534:nobody:/:/sbin/nologin' >"$r/etc/passwd"
  printf '%s\n' 'root:!::0:::::' 'nobody:!::0:::::' >"$r/etc/shadow"
  chmod 640 "$r/etc/shadow"
  printf '%s\n' 'root:x:0:root' 'bin:x:1:root,bin,daemon' 'daemon:x:2:root,bin,daemon' \
    'wheel:x:10:root' 'nobody:x:65534:' >"$r/etc/group"
  write_test_scripts "$r"
  # alpine's /etc/mtab and /etc/services (140-diff removes the latter).
  ln -s ../proc/mounts "$r/etc/mtab"
  printf '%s\n' 'ssh 22/tcp' 'http 80/tcp www' >"$r/etc/services"
  printf '%s\n' 'NAME="busybox stand-in for the podman system test image"' 'ID=busybox' >"$r/etc/os-release"
  chmod 755 "$r/home/podman/pause" "$r/home/podman/healthcheck" "$r/home/podman/bytecheck"
  # Fixed times on every file, as an image's files have them ...
  find "$r" -exec touch -h --date="@$(date -d "$(tag_date)" +%s)" {} +
  # ... and 1600000000 on testimage-id, which 'run --tz' checks.
  echo "$TEST_IMAGE_TAG" >"$r/home/podman/testimage-id"
  touch --date=@1600000000 "$r/home/podman/testimage-id"
}

# write_test_scripts DIR: upstream's helper scripts for the test image, written
# anew: pause (a pod's --infra-command; tests look for its greeting),
# healthcheck (unhealthy while /uh-oh exists, or once for /uh-oh-only-once),
# bytecheck (size, md5 and first and last eight bytes of stdin).
write_test_scripts() {
  local r=$1
  # pause: used as a pod's --infra-command; the tests look for its greeting.
  cat >"$r/home/podman/pause" <<'EOF'
#!/bin/sh
trap 'exit 0' TERM
echo Confirmed: testimage pause invoked as $0
while :; do sleep 0.1; done
EOF
  # healthcheck: unhealthy while /uh-oh exists, or once for /uh-oh-only-once.
  cat >"$r/home/podman/healthcheck" <<'EOF'
#!/bin/sh
if test -e /uh-oh || test -e /uh-oh-only-once; then
    echo "Uh-oh on stdout!"
    echo "Uh-oh on stderr!" >&2
    rm -f /uh-oh-only-once
    exit 1
fi
echo "Life is Good on stdout"
echo "Life is Good on stderr" >&2
EOF
  # bytecheck: size, md5 and the first and last eight bytes of stdin.
  cat >"$r/home/podman/bytecheck" <<'EOF'
#!/bin/sh
f=$(mktemp bytecheck.XXXXXXX)
cat >"$f"
echo size=$(stat -c %s "$f") hash=$(md5sum <"$f") head=$(head -c8 "$f" | od -An -tx1) tail=$(tail -c8 "$f" | od -An -tx1)
rm -f "$f"
EOF
}

# run_suite RUN FILE...: every FILE with bats under RUN's /etc/containers; TAP
# output and seconds per file in $WORK/logs/RUN/.
run_suite() {
  local run=$1 f start
  shift
  local rundir="$T/runs/$run" logs="$WORK/logs/$run"
  mkdir -p "$logs"
  write_configs "$rundir/etc" "$run" "$rundir" || return 1
  mount --bind "$rundir/etc" /etc/containers || return 1
  echo "==> run $run: $(grep -m1 '^driver' "$rundir/etc/storage.conf")$(sed -n 's/^additionalimagestores = \["\(.*\)"\]$/, the test image in the read-only store \1/p' "$rundir/etc/storage.conf")"
  check_store "$run" >"$logs/store-before.txt" 2>&1 || { cat "$logs/store-before.txt"; return 1; }
  : >"$logs/times"
  for f in "$@"; do
    start=$SECONDS
    (cd "$SUITE" && PODMAN=$PODMAN timeout -k 30 "${PODMAN_SYSTEM_FILE_TIMEOUT:-1800}" bats --tap "$f") >"$logs/$f.tap" 2>&1
    echo "$f $((SECONDS - start))" >>"$logs/times"
    printf '    %-28s %3d ok, %3d not ok (%d skip) %4ds\n' "$f" \
      "$(grep -c '^ok ' "$logs/$f.tap")" "$(grep -c '^not ok ' "$logs/$f.tap")" \
      "$(grep -c '^ok .* # skip' "$logs/$f.tap")" "$((SECONDS - start))"
  done
  # The CVMFS copy must still be the one the suite used at the end.
  if ! check_store "$run" >"$logs/store-after.txt" 2>&1; then
    echo "    run $run: the store is not as configured after the suite:"
    sed 's/^/      /' "$logs/store-after.txt"
    touch "$logs/store-after.failed" # counted as a failure by podman-system-tally.py
  fi
  "$PODMAN" pod rm -af -t 0 >/dev/null 2>&1
  "$PODMAN" rm -af -t 0 >/dev/null 2>&1
  "$PODMAN" system reset -f >"$logs/reset.log" 2>&1
  umount /etc/containers
  grep -o " $rundir[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  return 0
}

# check_store RUN: podman uses the driver RUN names, and in the -repo runs the
# test image is (still) the read-only one, not only a local copy.
check_store() {
  local run=$1 want=overlay driver ro
  [[ "$run" != cvmfs* ]] || want=cvmfs
  driver=$("$PODMAN" info --format '{{.Store.GraphDriverName}}') || return 1
  echo "driver: $driver"
  [ "$driver" = "$want" ] || { echo "podman uses $driver, not $want"; return 1; }
  [[ "$run" == *-repo ]] || return 0
  # A tag added by a test "pulls up" a copy of the record into the writable
  # store (containers/storage updateNames); the read-only one must remain.
  ro=$("$PODMAN" images --format '{{.ReadOnly}}' "$TEST_IMAGE") || return 1
  echo "$TEST_IMAGE read-only: $ro"
  grep -qx true <<<"$ro" || { echo "$TEST_IMAGE is not in the read-only store any more"; return 1; }
}
