#!/usr/bin/env bash
# hack/measure-rootless.sh: what an unprivileged user may do on this kernel
# for rootless podman with the cvmfs driver (docs/rootless.md records the
# results and which kernels take which path). Run as root: it creates a
# throw-away user, a root-owned stand-in repository (a plain directory and
# the same tree as squashfs), and runs hack/rootless-probe.py as that user
# inside `unshare --user --map-root-user --mount`. Removes both afterwards.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "measure-rootless: run as root (it creates a test user)" >&2; exit 2; }
for t in python3 unshare setpriv mksquashfs squashfuse fuse-overlayfs fusermount3; do
  command -v "$t" >/dev/null || { echo "measure-rootless: $t missing (make deps)" >&2; exit 2; }
done
user=cvmfs-rl-probe
W=$(mktemp -d /tmp/measure-rootless.XXXXXX)
chmod 755 "$W"
cleanup() {
  grep -o " $W[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$W"
  id "$user" >/dev/null 2>&1 && userdel -r "$user" >/dev/null 2>&1
}
trap cleanup EXIT
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
uid=$(id -u "$user")

# The stand-in repository: layer a (raw OCI whiteouts, as DUCC leaves them)
# over layer b, all owned by root.
R="$W/repo"
mkdir -p "$R/a/dir" "$R/b/dir" "$R/b/dir2"
: >"$R/a/.wh.gone"; : >"$R/a/dir/.wh..wh..opq"; echo top >"$R/a/top"
echo gone >"$R/b/gone"; echo keep >"$R/b/keep"; echo old >"$R/b/dir/old"
echo g >"$R/b/dir2/gone2"; echo s >"$R/b/dir2/stay"
chmod -R a+rX "$R"
mksquashfs "$R" "$R.sqfs" -quiet -noappend >/dev/null
T="$W/user"
mkdir -p "$T"; chown "$uid:$uid" "$T"

echo "kernel $(uname -r), $(fuse-overlayfs --version 2>/dev/null | grep -m1 fuse-overlayfs)"
printf 'mknod 0/0 whiteout as the user, no namespace: '
if setpriv --reuid="$uid" --regid="$uid" --init-groups /usr/bin/python3 -c \
  "import os,sys; os.mknod(sys.argv[1], 0o600|0o020000, os.makedev(0,0))" "$T/plain-wh" 2>/dev/null; then
  echo "ok ($(stat -c '%F %t:%T' "$T/plain-wh"))"
else
  echo FAIL
fi
fuse_mode=$(stat -c %a /dev/fuse 2>/dev/null || echo missing)
echo "/dev/fuse mode: $fuse_mode (distributions' udev rules make it 666; FUSE needs it open to the user)"
probe() {
  # A nested namespace to ID-map with (its uid 1000 is the outer namespace's 0).
  setpriv --reuid="$uid" --regid="$uid" --init-groups -- \
    unshare --user --map-root-user --mount --propagation private -- bash -c '
      unshare --user --map-user=1000 --map-group=1000 sleep 60 & holder=$!
      sleep 0.3
      /usr/bin/python3 "$1" "$2" "$3" "$holder"
      kill "$holder"' _ "$ROOT/hack/rootless-probe.py" "$T" "$R"
}
probe
if [ "$fuse_mode" != 666 ] && [ "$fuse_mode" != missing ]; then
  echo "--- again with /dev/fuse 666 (restored to $fuse_mode afterwards): the FUSE probes"
  trap 'chmod "$fuse_mode" /dev/fuse; cleanup' EXIT
  chmod 666 /dev/fuse
  rm -rf "${T:?}"/*
  probe | grep -iE 'fuse'
fi
