# Sourced by the scripts that run podman (test-e2e.sh, demo.sh, bench/run.sh).
#
# Podman 6 exits at its start ("Cgroups v1 not supported") unless
# /sys/fs/cgroup is a cgroup v2 hierarchy; podman 5 runs on either. A host
# still booted with its controllers on cgroup v1 hierarchies (such as the VM
# this project's CI runs on) can nevertheless mount cgroup2: there it holds
# only the controllers no v1 hierarchy has taken (hugetlb, typically), which is
# all a container without resource limits needs.
#
# reexec_with_cgroup2 PODMAN_VERSION SCRIPT [ARGS...]: for podman 6 or newer on
# such a host, re-execute SCRIPT in a private mount namespace with cgroup2
# mounted on /sys/fs/cgroup. The whole script runs in that one namespace, so
# every podman call, the overlay mounts podman makes and the script's own
# checks of /proc/self/mounts see the same mounts; the host's /sys/fs/cgroup
# is not touched, and the namespace ends with the script's last process.
# Returns (does nothing) when no re-execution is needed.
reexec_with_cgroup2() {
  local version=$1 major
  shift
  major=${version#v}
  major=${major%%.*}
  [ "$major" -ge 6 ] 2>/dev/null || return 0
  [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ] && return 0
  if [ -n "${CVMFS_GRAPHDRIVER_CGROUP2_NS:-}" ]; then
    echo "reexec_with_cgroup2: /sys/fs/cgroup is still not cgroup2 inside the namespace" >&2
    return 1
  fi
  grep -qw cgroup2 /proc/filesystems || {
    echo "podman $version needs cgroup v2, and this kernel has no cgroup2 file system" >&2
    return 1
  }
  echo "==> podman $version needs cgroup v2; /sys/fs/cgroup is cgroup v1 here: running in a private mount namespace with cgroup2 on /sys/fs/cgroup" >&2
  export CVMFS_GRAPHDRIVER_CGROUP2_NS=1
  # The script by absolute path: the caller may have changed directory.
  local script=$1
  shift
  [ -f "$script" ] && script=$(realpath "$script")
  # Without a pids controller there, podman must not set its default pids
  # limit (cgroup2_lacks_pids below): hack/cgroup2-nopids.conf says so.
  export CVMFS_GRAPHDRIVER_NOPIDS_CONF
  CVMFS_GRAPHDRIVER_NOPIDS_CONF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cgroup2-nopids.conf
  # The namespace's copies of a CernVM-FS stratum 0's mounts (/cvmfs/<repo>
  # and its rdonly branch) would pin them for the whole run and make every
  # publish meanwhile fail to remount ("umount: ...rdonly: target is busy"):
  # they are detached in the namespace first (nothing here reads them).
  exec unshare --mount --propagation private -- bash -c '
    awk '"'"'$2 ~ "^/cvmfs/" || $2 ~ "^/var/spool/cvmfs/" { print $2 }'"'"' /proc/self/mounts | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null; done
    mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 1
    if ! grep -qw pids /sys/fs/cgroup/cgroup.controllers; then
      if [ -n "${CONTAINERS_CONF_OVERRIDE:-}" ]; then
        echo "cgroup2 has no pids controller; CONTAINERS_CONF_OVERRIDE is set already, so set pids_limit = 0 in it" >&2
      else
        export CONTAINERS_CONF_OVERRIDE=$CVMFS_GRAPHDRIVER_NOPIDS_CONF
      fi
    fi
    exec "$0" "$@"' "$script" "$@"
}

# reexec_primary_with_cgroup2 SCRIPT [ARGS...]: the same for the primary
# line's podman (build/bin/podman), for scripts that run only that one.
reexec_primary_with_cgroup2() {
  local root version
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  version=$(
    source "$root/hack/versions.env"
    line=PODMAN${DEFAULT_PODMAN_LINE}_VERSION
    echo "${!line}"
  )
  reexec_with_cgroup2 "$version" "$@"
}

# (reexec_with_cgroup2 handles this itself; scripts that test more than one
# podman line use it to report what they run with.)
# cgroup2_lacks_pids: true when /sys/fs/cgroup is cgroup v2 without the pids
# controller (it stays bound to its v1 hierarchy in the namespace above).
# runc then cannot apply podman's default pids limit (pids_limit = 2048 in
# containers.conf: "openat2 .../pids.max: no such file or directory"), so the
# pids_limit = 0 (no limit) must come from a CONTAINERS_CONF_OVERRIDE file.
cgroup2_lacks_pids() {
  [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ] &&
    ! grep -qw pids /sys/fs/cgroup/cgroup.controllers
}
