# shellcheck shell=bash
# Helpers shared by the scripts that use the real CernVM-FS set up by
# ../shared/real-cvmfs/ (hack/test-real-cvmfs.sh, bench/real-rtt.sh).

# real_cvmfs_client_conf CACHE REPO PROXY [LINE...]: write CACHE/client.conf for
# a private client of REPO (its own cache, no shared cache, no quota, as
# ../shared/real-cvmfs/client-mount.sh) fetching through PROXY (DIRECT or a
# URL); extra LINEs (e.g. CVMFS_KCACHE_TIMEOUT=60) are appended. Owners are
# shown as published (CVMFS_CLAIM_OWNERSHIP=no); a case that needs the
# default client edits that line.
real_cvmfs_client_conf() {
  local cache=$1 repo=$2 proxy=$3 nfiles=16384 hard
  shift 3
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$nfiles" ]; then nfiles=$hard; fi
  {
    echo "CVMFS_SERVER_URL=http://127.0.0.1/cvmfs/@fqrn@"
    echo "CVMFS_HTTP_PROXY=$proxy"
    echo "CVMFS_PUBLIC_KEY=/etc/cvmfs/keys/$repo.pub"
    echo "CVMFS_CACHE_BASE=$cache"
    echo "CVMFS_SHARED_CACHE=no"
    echo "CVMFS_QUOTA_LIMIT=-1"
    echo "CVMFS_NFILES=$nfiles"
    echo "CVMFS_USER=root"
    echo "CVMFS_RELOAD_SOCKETS=$cache"
    echo "CVMFS_CLAIM_OWNERSHIP=no"
    for line in "$@"; do echo "$line"; done
  } >"$cache/client.conf"
}
