#!/bin/sh
# list.sh ROOT PATH...: a comparable listing of the trees PATH... under ROOT, made
# with busybox only, so the very same script runs inside a test container (ROOT
# /) and on the host against a reference rootfs (umoci unpack). One line per
# entry: path|type|mode uid:gid|size and sha256 (files), target (symlinks),
# major:minor (devices)|hardlink group (the first path sharing the inode).
# The files podman itself mounts into every container are left out.
cd "$1" || exit 1
shift
busybox find "$@" 2>/dev/null | busybox sort | while IFS= read -r p; do
  case "$p" in
    etc/hosts | etc/hostname | etc/resolv.conf | etc/mtab | run/.containerenv | run/secrets | run/secrets/*) continue ;;
  esac
  t=$(busybox stat -c %F "$p")
  case "$t" in
    regular*) extra="$(busybox stat -c %s "$p") $(busybox sha256sum <"$p" | busybox cut -c1-64)" ;;
    symbolic*) extra="-> $(busybox readlink "$p")" ;;
    character* | block*) extra=$(busybox stat -c %t:%T "$p") ;;
    *) extra= ;;
  esac
  echo "$(busybox stat -c %i "$p")|$p|$t|$(busybox stat -c '%a %u:%g' "$p")|$extra"
done | busybox awk -F'|' '{
  ino = $1; sub(/^[^|]*\|/, "")
  if ($3 ~ /^regular/) { if (!(ino in first)) first[ino] = $2; print $0 "|" first[ino] }
  else print $0 "|"
}'
