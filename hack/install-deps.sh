#!/usr/bin/env bash
# Install the system packages the build and the test suites need, from Debian's
# archive: only the missing ones (one dpkg-query per package, well under a
# second when all are there, so `make test` can call it on every run). Nothing
# is stopped or changed unless it was installed by this run.
set -euo pipefail

packages=(
  bats            # runs the storage module's tests/*.bats
  jq              # used by the bats helpers and our scripts
  attr            # getfattr/setfattr for whiteout checks
  pkg-config      # cgo finds the Rust library through cvmfs_graphdriver.pc
  libgpgme-dev libassuan-dev libbtrfs-dev libseccomp-dev libdevmapper-dev  # cgo deps of the storage/podman build
  fuse-overlayfs
  skopeo umoci    # reference tools
  runc conmon     # container runtime pieces for podman
  netavark        # podman 5 refuses to start without its network backend (even for --network none)
  libsqlite3-dev  # podman's database, linked from Debian (build tag libsqlite3)
  busybox-static  # a static executable for the end-to-end test images
  docker-registry # a real registry on 127.0.0.1 for pull tests
  squashfs-tools  # make demo: the published tree as a loop-mounted image, to count the bytes read
  zstd            # make demo: compresses the sample image's layers
  uidmap          # rootless podman (make test-rootless): newuidmap/newgidmap for subordinate IDs
  squashfuse      # hack/measure-rootless.sh: a FUSE repository stand-in
  gcc libc6-dev linux-libc-dev  # make idmap-helper: the setuid cvmfs-idmap-view (C, libc only)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The docker-registry package starts a service on :5000; our tests start their own
# registry on 127.0.0.1 with a random port, so keep the packaged one out of the way
# -- only when this run installed it (a registry already there is the admin's).
[[ " ${missing[*]} " == *" docker-registry "* ]] || exit 0
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
# Stopped through its init script (by its pid file), never by name: a by-name kill
# would also end a registry another test suite started.
if [ -x /etc/init.d/docker-registry ]; then
  /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi
