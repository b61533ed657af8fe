#!/usr/bin/env bash
# make test-rootless: the patched podman (build/bin/podman, the primary line)
# run by an ordinary user with `--storage-driver cvmfs`, against a repository
# published by root with `cvmfs-podman publish` from a docker-registry on
# 127.0.0.1 (as in hack/test-e2e.sh). Issue 15; docs/rootless.md.
#
# Creates two throw-away users: cvmfs-rl-sub with /etc/subuid and /etc/subgid
# ranges and cvmfs-rl-nosub without. Each runs podman as itself (setpriv, a
# clean environment, HOME in /home/<user>) with the storage under
# ~/.local/share/containers and ~/.config/containers/storage.conf as podman
# users keep it (README "Rootless"). Both users, their subordinate ranges,
# their processes (by PID) and the work directory are removed at the end.
#
#   hack/test-rootless.sh [PATTERN]   only the cases whose name matches the regex PATTERN
#
# Ends with exactly one line "N passed, N failed, N skipped" (hack/lib-test.sh). Cases listed in
# tests/e2e/rootless-known-failures.txt ("<case name> — <reason>") are known gaps:
# they count as skipped, with the reason printed; one that passes fails the run.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
# shellcheck source=tests/lib/registry.bash
source "$ROOT/tests/lib/registry.bash"
# shellcheck source=hack/lib-storage.sh
source "$ROOT/hack/lib-storage.sh"
# shellcheck source=hack/lib-cgroup2.sh
source "$ROOT/hack/lib-cgroup2.sh"

E="$ROOT/tests/e2e"
log_dir="$ROOT/build/test-rootless"
SUB_USER=cvmfs-rl-sub NOSUB_USER=cvmfs-rl-nosub
SUB_RANGE_START=3100000 SUB_RANGE_SIZE=65536

# The cases run through hack/lib-test.sh: known failures in
# tests/e2e/rootless-known-failures.txt ("<case name> — <reason>"), counted as
# skipped with their reason; TEST_FILTER=<regex> runs a subset.
# shellcheck source=hack/lib-test.sh
source "$ROOT/hack/lib-test.sh"
[ -z "${1:-}" ] || TEST_FILTER=$1
test_init test-rootless "$E/rootless-known-failures.txt" "$log_dir"
# a case that stopped the registry must not fail the next ones
registry_back() {
  curl -fs --max-time 2 "http://$REG/v2/" >/dev/null 2>&1 || registry_start "$W/registry" "${REG##*:}" || true
}
TEST_AFTER_CASE=registry_back

[ "$(id -u)" -eq 0 ] || { echo "test-rootless: SKIP: must run as root (it creates test users)"; record_result "rootless suite" skip "needs root"; summary; exit 0; }
for tool in skopeo umoci docker-registry jq python3 curl conmon runc busybox tar setpriv useradd newuidmap newgidmap; do
  command -v "$tool" >/dev/null || die "$tool missing (make deps)"
done
reexec_with_cgroup2 "$PODMAN_VERSION" "$0" "$@" || die "podman $PODMAN_VERSION cannot run on this host"
mkdir -p "$log_dir"

# ------------------------------------------------------------------ build
if [ ! -x "$PODMAN_BINARY" ]; then
  echo "==> make podman"
  "$ROOT/hack/build-podman.sh" >"$log_dir/build-podman.log" 2>&1 || { tail -n 40 "$log_dir/build-podman.log"; die "building podman failed"; }
fi
cargo build --release --bin cvmfs-podman --quiet || die "building cvmfs-podman failed"
B="$ROOT/target/release/cvmfs-podman"
make -s -C "$ROOT" idmap-helper >"$log_dir/idmap-helper.log" 2>&1 || { cat "$log_dir/idmap-helper.log"; die "building cvmfs-idmap-view failed"; }

# ------------------------------------------------------------------ users, fixtures
W=$(mktemp -d /tmp/test-rootless.XXXXXX)
chmod 755 "$W"
R="$W/repo"
# The test users' binaries: a copy the users can read wherever the worktree is.
mkdir -p "$W/bin"
cp "$PODMAN_BINARY" "$W/bin/podman"
PODMAN="$W/bin/podman"
# The privileged helper as `make install-idmap-helper` installs it (setuid
# root), its configuration listing this suite's repository, the user's script.
install -o root -g root -m 4755 "$ROOT/build/bin/cvmfs-idmap-view" "$W/bin/cvmfs-idmap-view"
install -m 755 "$ROOT/hack/cvmfs-rootless-setup" "$W/bin/cvmfs-rootless-setup"
HELPER="$W/bin/cvmfs-idmap-view"
HELPER_CONF=/etc/containers/cvmfs-idmap-view.conf
[ -e "$HELPER_CONF" ] && cp -a "$HELPER_CONF" "$W/idmap-view.conf.saved"
mkdir -p /etc/containers
printf '# test-rootless\n%s\n' "$R" >"$HELPER_CONF"
chmod 644 "$HELPER_CONF"

user_pids() { ps -o pid= -u "$1" 2>/dev/null | tr -d ' '; }
remove_user() {
  local u=$1 pid
  id "$u" >/dev/null 2>&1 || return 0
  # podman's rootless pause process and any conmon left: by PID, as that user's.
  for pid in $(user_pids "$u"); do kill -9 "$pid" 2>/dev/null; done
  sleep 0.2
  userdel -r "$u" >/dev/null 2>&1
  sed -i "/^$u:/d" /etc/subuid /etc/subgid
}
cleanup() {
  local u
  for u in "$SUB_USER" "$NOSUB_USER"; do
    id "$u" >/dev/null 2>&1 && as_user "$u" podman system reset -f >/dev/null 2>&1
    remove_user "$u"
  done
  registry_stop
  [ -s "$W/fuse-mode.saved" ] && chmod "$(cat "$W/fuse-mode.saved")" /dev/fuse
  if [ -e "$W/idmap-view.conf.saved" ]; then cp -a "$W/idmap-view.conf.saved" "$HELPER_CONF"; else rm -f "$HELPER_CONF"; fi
  grep -o " $W[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

make_user() { # NAME [subordinate range start]
  local u=$1 start=${2:-}
  remove_user "$u"
  useradd --create-home --shell /bin/bash "$u" || return 1
  # useradd may allocate subordinate ranges itself (login.defs SUB_UID_MIN):
  # only the ones this suite gives count.
  sed -i "/^$u:/d" /etc/subuid /etc/subgid
  if [ -n "$start" ]; then
    echo "$u:$start:$SUB_RANGE_SIZE" >>/etc/subuid
    echo "$u:$start:$SUB_RANGE_SIZE" >>/etc/subgid
  fi
  local h
  h=$(getent passwd "$u" | cut -d: -f6)
  # The user's own configuration, as README "Rootless" shows it: no graphroot
  # (podman's rootless default ~/.local/share/containers/storage), the
  # repository's store as an additional image store.
  install -d -o "$u" -g "$u" "$h/.config" "$h/.config/containers"
  cat >"$h/.config/containers/storage.conf" <<EOF
[storage]
driver = "cvmfs"

[storage.options]
additionalimagestores = ["$R/podmanStore"]

[storage.options.cvmfs]
repositories = "$R"
EOF
  sed -e "s|@REGISTRY@|$REG|" "$E/registries.conf.in" >"$h/.config/containers/registries.conf"
  cp "$E/policy.json" "$h/.config/containers/policy.json"
  cp "$E/containers.conf" "$h/.config/containers/containers.conf"
  chown -R "$u:$u" "$h/.config"
  install -d -m 700 -o "$u" -g "$u" "$W/run-$u"
}

# as_user USER CMD...: CMD as USER with a clean login-like environment;
# `podman` means the patched podman.
as_user() {
  local u=$1 h uid
  shift
  h=$(getent passwd "$u" | cut -d: -f6)
  uid=$(id -u "$u")
  [ "$1" = podman ] && { shift; set -- "$PODMAN" "$@"; }
  (cd / && setpriv --reuid="$uid" --regid="$(id -g "$u")" --init-groups -- env -i \
    HOME="$h" USER="$u" LOGNAME="$u" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    XDG_RUNTIME_DIR="$W/run-$u" PODMAN_IGNORE_CGROUPSV1_WARNING=1 ${USER_ENV:-} \
    ${CONTAINERS_CONF_OVERRIDE:+CONTAINERS_CONF_OVERRIDE=$CONTAINERS_CONF_OVERRIDE} "$@")
}

echo "==> fixtures in $W"
(
  set -e
  mkdir -p "$W/bb/bin"
  cp /bin/busybox "$W/bb/bin/busybox"
  for a in sh cat ls find stat echo sleep true test mkdir rm sort cut awk readlink sha256sum id; do
    ln -s busybox "$W/bb/bin/$a"
  done
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -cf "$W/busybox.tar" -C "$W/bb" bin
  I="$E/images"
  "$B" make-oci "$W/oci" --tag tiny "$W/busybox.tar" "$I/app.spec"
  "$B" make-oci "$W/oci" --tag wh "$W/busybox.tar" "$I/wh-base.spec" "$I/wh-delete.spec" "$I/wh-top.spec"
) >"$log_dir/fixtures.log" 2>&1 || { cat "$log_dir/fixtures.log"; die "building the test images failed"; }
registry_start "$W/registry" || die "cannot start docker-registry"
(
  set -e
  for t in tiny wh; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$W/oci:$t" "docker://$REG/e2e/$t:1"
    "$B" publish "docker://$REG/e2e/$t:1" --tls-verify=false --repo "$R" -q
  done
  "$B" check "$R"
) >"$log_dir/publish.log" 2>&1 || { cat "$log_dir/publish.log"; die "publishing the test images failed"; }
make_user "$SUB_USER" "$SUB_RANGE_START" >"$log_dir/users.log" 2>&1 || { cat "$log_dir/users.log"; die "cannot create $SUB_USER"; }
make_user "$NOSUB_USER" >>"$log_dir/users.log" 2>&1 || { cat "$log_dir/users.log"; die "cannot create $NOSUB_USER"; }
echo "    users $SUB_USER (subordinate IDs $SUB_RANGE_START+$SUB_RANGE_SIZE) and $NOSUB_USER (none); registry $REG"

pm() { as_user "$SUB_USER" podman "$@"; }
repo_state() {
  (
    cd "$R"
    find . -printf '%y %m %U:%G %s %T@ %p -> %l\n' | LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -d' ' -f1
}
umoci_rootfs() {
  local d="$W/umoci-$1"
  [ -d "$d/rootfs" ] || umoci unpack --image "$W/oci:$1" "$d" >/dev/null
  echo "$d/rootfs"
}
LIST_PATHS=(app bin data etc gone home opt x)

# ------------------------------------------------------------------ cases
t_run_by_name_offline() {
  registry_stop
  local out
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/hello.txt)
  [ "$out" = "hello from cvmfs" ] || fail "container printed '$out'"
  pm images --format '{{.Repository}}:{{.Tag}} {{.ReadOnly}}' | tee "$W/images.txt"
  grep -qx "$REG/e2e/tiny:1 true" "$W/images.txt" || fail "the published image is not listed read-only"
  # The storage is the user's, under ~/.local/share/containers.
  local h
  h=$(getent passwd "$SUB_USER" | cut -d: -f6)
  [ "$(pm info --format '{{.Store.GraphRoot}}')" = "$h/.local/share/containers/storage" ] || fail "graphroot is not the rootless default"
  [ -d "$h/.local/share/containers/storage/cvmfs" ] || fail "no driver home under the user's graphroot"
  [ "$(stat -c %U "$h/.local/share/containers/storage/cvmfs")" = "$SUB_USER" ] || fail "driver home not owned by the user"
}

t_info_names_rootless_path() {
  pm info --format '{{json .Store.GraphStatus}}' | tee "$W/status.json"
  jq -e 'to_entries | map(select(.key | test("[Rr]ootless"))) | length > 0' "$W/status.json" >/dev/null ||
    fail "podman info's driver status does not say which rootless path (kernel overlay/fuse-overlayfs, ID mapping) is in use"
}

t_ownership() {
  local out
  out=$(pm run --rm "$REG/e2e/tiny:1" stat -c '%u:%g %a %n' /app/data/1 /app/hello.txt)
  echo "$out"
  grep -qx '1000:1000 644 /app/data/1' <<<"$out" || fail "the 1000:1000 file shows as $(sed -n 1p <<<"$out")"
  grep -qx '0:0 644 /app/hello.txt' <<<"$out" || fail "a root file shows as $(sed -n 2p <<<"$out")"
  out=$(pm run --rm "$REG/e2e/wh:1" stat -c '%u:%g %a' /x/passwd)
  [ "$out" = "0:0 4755" ] || fail "the setuid binary shows as $out, not 0:0 4755"
  # Container root may change an image file (copy-up), as with overlay.
  pm run --rm "$REG/e2e/tiny:1" sh -c 'echo more >> /app/hello.txt && cat /app/hello.txt' | tee "$W/append.txt"
  [ "$(tail -n 1 "$W/append.txt")" = more ] || fail "container root cannot write to an image file"
}

t_whiteouts_match_umoci() {
  local ref
  ref=$(umoci_rootfs wh)
  sh "$E/list.sh" "$ref" "${LIST_PATHS[@]}" >"$W/umoci.list"
  # The container's root filesystem as the user's namespace sees it (podman
  # mount works there only), without starting the container: names, types and
  # contents show the whiteouts whatever the owners are.
  pm create --name w "$REG/e2e/wh:1" true
  pm unshare bash -c 'm=$("$0" mount w) && sh "$1" "$m" "${@:2}"; rc=$?; "$0" umount w >/dev/null; exit $rc' \
    "$PODMAN" "$E/list.sh" "${LIST_PATHS[@]}" >"$W/mounted.list"
  pm rm -f w
  diff <(cut -d'|' -f1,2,4 "$W/umoci.list") <(cut -d'|' -f1,2,4 "$W/mounted.list") ||
    fail "names/types/contents of the mounted rootfs differ from umoci unpack (whiteouts)"
  grep -q '^data/x/3|' "$W/mounted.list" || fail "listing incomplete"
}

# Inside a running container, with owners and modes.
t_container_matches_umoci() {
  local ref
  ref=$(umoci_rootfs wh)
  sh "$E/list.sh" "$ref" "${LIST_PATHS[@]}" >"$W/umoci.list"
  pm run --rm -v "$E/list.sh:/e2e-list.sh:ro" "$REG/e2e/wh:1" sh /e2e-list.sh / "${LIST_PATHS[@]}" >"$W/container.list"
  diff "$W/umoci.list" "$W/container.list" || fail "modes/owners in the container differ from umoci unpack"
}

t_build_commit() {
  local ctx="$W/ctx"
  mkdir -p "$ctx"
  printf 'FROM %s\nRUN echo built > /built.txt && rm /app/hello.txt\n' "$REG/e2e/tiny:1" >"$ctx/Containerfile"
  chmod -R a+rX "$ctx"
  pm build --network none --pull=never -t localhost/rl/built:1 "$ctx"
  [ "$(pm run --rm localhost/rl/built:1 cat /built.txt)" = built ] || fail "built image content"
  pm run --rm localhost/rl/built:1 sh -c 'test ! -e /app/hello.txt' || fail "a file deleted by RUN is visible"
  pm run --name c1 "$REG/e2e/tiny:1" sh -c 'echo committed > /committed.txt; rm /app/data/1'
  pm commit c1 localhost/rl/committed:1
  [ "$(pm run --rm localhost/rl/committed:1 cat /committed.txt)" = committed ] || fail "committed content"
  pm run --rm localhost/rl/committed:1 sh -c 'test ! -e /app/data/1' || fail "a deleted file is visible after commit"
  pm rm -f c1
}

t_parallel_runs() {
  local i pids=() rc=0
  for i in 1 2 3 4 5 6; do
    pm run --rm "$REG/e2e/tiny:1" sh -c "cat /app/hello.txt; echo $i > /run/me; cat /run/me" >"$W/par$i.out" 2>"$W/par$i.err" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || { echo "run $((i + 1)) failed"; rc=1; }; done
  for i in 1 2 3 4 5 6; do
    cat "$W/par$i.out" "$W/par$i.err"
    [ "$(cat "$W/par$i.out")" = "$(printf 'hello from cvmfs\n%s' "$i")" ] || { echo "run $i printed the wrong thing"; rc=1; }
  done
  [ "$rc" -eq 0 ] || fail "parallel runs failed"
  [ -z "$(pm ps -aq)" ] || fail "containers left"
}

t_reset_leaves_repository() {
  local before after out
  before=$(repo_state)
  # (Writes into the image are the ownership case's; this one needs a container.)
  pm run --name keep "$REG/e2e/tiny:1" sh -c 'echo x > /run/new'
  pm rmi -af || true
  pm system reset -f
  after=$(repo_state)
  [ "$before" = "$after" ] || fail "the repository changed: $before -> $after"
  out=$(pm run --rm "$REG/e2e/tiny:1" cat /app/hello.txt)
  [ "$out" = "hello from cvmfs" ] || fail "after reset the container printed '$out'"
  [ "$(repo_state)" = "$before" ] || fail "the repository changed after the last run"
}

t_no_subordinate_ids() {
  local out rc=0
  out=$(as_user "$NOSUB_USER" podman run --rm "$REG/e2e/tiny:1" cat /app/hello.txt 2>"$W/nosub.err") || rc=$?
  cat "$W/nosub.err"
  if [ "$rc" -eq 0 ]; then
    [ "$out" = "hello from cvmfs" ] || fail "single-ID run printed '$out'"
  else
    # The error podman ends with (not a warning before it) must say what is missing.
    grep '^Error:' "$W/nosub.err" | grep -q "/etc/subuid" || fail "the error without subordinate IDs does not name /etc/subuid"
    grep '^Error:' "$W/nosub.err" | grep -q "$NOSUB_USER" || fail "the error does not name the user missing from /etc/subuid"
  fi
  # The helper maps what a single ID can: host root's files show as root and
  # are writable; it says which /etc/subuid entry is missing.
  setup_as "$NOSUB_USER" 2>"$W/nosub-setup.err" || { cat "$W/nosub-setup.err"; fail "set-up without subordinate IDs failed"; }
  cat "$W/nosub-setup.err"
  grep -q "/etc/subuid has no entry for user $NOSUB_USER" "$W/nosub-setup.err" || fail "the helper does not name the missing /etc/subuid entry"
  out=$(as_user "$NOSUB_USER" podman run --rm "$REG/e2e/tiny:1" sh -c 'stat -c "%u:%g %n" /app/hello.txt /app/data/1; echo more >> /app/hello.txt; tail -n 1 /app/hello.txt')
  echo "$out"
  grep -qx '0:0 /app/hello.txt' <<<"$out" || fail "single-ID view: a root file shows as $(sed -n 1p <<<"$out")"
  grep -qx '65534:65534 /app/data/1' <<<"$out" || fail "single-ID view: a 1000:1000 file shows as $(sed -n 2p <<<"$out")"
  [ "$(tail -n 1 <<<"$out")" = more ] || fail "single-ID view: container root cannot write to a root file"
  as_user "$NOSUB_USER" podman info --format '{{json .Store.GraphStatus}}' | jq -er '."Rootless Ownership"' | tee "$W/nosub-info.txt"
  grep -q "^single-ID mapping (no /etc/subuid entry" "$W/nosub-info.txt" || fail "podman info does not say the mapping is single-ID"
}

# The user's own set-up (README "Rootless"): the setuid helper attaches an
# ID-mapped view of the repository in podman's namespace; podman info says so.
setup_as() { # USER
  as_user "$1" env PODMAN="$PODMAN" CVMFS_IDMAP_VIEW="$HELPER" "$W/bin/cvmfs-rootless-setup"
}
view_of() { # USER
  local n=${R#/}
  n=${n//%/%25}
  echo "$W/run-$1/cvmfs-idmapped/${n//\//%2F}"
}
t_setup_attaches_view() {
  setup_as "$SUB_USER" | tee "$W/setup.out"
  grep -q "ID-mapped read-only view at $(view_of "$SUB_USER")" "$W/setup.out" || fail "the helper did not report the view"
  pm info --format '{{json .Store.GraphStatus}}' | tee "$W/status.json"
  jq -er '.Rootless' "$W/status.json" | grep -qF "ID-mapped views: $R at $(view_of "$SUB_USER")" ||
    fail "podman info does not name the view in use"
  jq -er '."Rootless Ownership"' "$W/status.json" | grep -qF "as in the image for $R" ||
    fail "podman info does not say owners are right through the view"
  # A second run leaves the view as it is (no mount stacked on it).
  setup_as "$SUB_USER" | grep -q "view already at" || fail "a second set-up did not find the view"
}

# The user is all-powerful in its own mount namespace, but the view must stay
# read-only, nosuid, nodev there: through it the user's IDs are the files'
# owners, so a writable view would let it write the repository as root.
t_view_stays_read_only() {
  local view
  setup_as "$SUB_USER" >/dev/null
  view=$(view_of "$SUB_USER")
  local clear_ro='import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64), ("prop", ctypes.c_uint64), ("ns", ctypes.c_uint64)]
a = Attr(0, 0x1 | 0x2 | 0x4, 0, 0)  # clear RDONLY, NOSUID, NODEV
r = libc.syscall(442, -100, sys.argv[1].encode(), 0, ctypes.byref(a), ctypes.sizeof(a))
print("mount_setattr", r, os.strerror(ctypes.get_errno()))
sys.exit(0 if r == 0 else 1)'
  if pm unshare python3 -c "$clear_ro" "$view"; then fail "the user cleared the view's read-only flag"; fi
  if pm unshare mount -o remount,bind,rw "$view"; then fail "the user remounted the view read-write"; fi
  if pm unshare sh -c 'echo x > "$1/written-by-user"' sh "$view"; then fail "the user wrote into the repository through the view"; fi
  [ ! -e "$R/written-by-user" ] || fail "a file appeared in the repository"
}

# What the setuid helper must refuse, each with a message saying why.
t_helper_refuses() {
  local pid other view h
  setup_as "$SUB_USER" # (idempotent) the namespace and a view to refuse stacking on
  pid=$(cat "$W/run-$SUB_USER/libpod/tmp/pause.pid")
  view=$(view_of "$SUB_USER")
  h=$(getent passwd "$SUB_USER" | cut -d: -f6)
  refused() { # EXPECTED-MESSAGE ARGS...: as the user, must fail saying EXPECTED
    local want=$1 out rc=0
    shift
    out=$(as_user "$SUB_USER" "$HELPER" "$@" 2>&1) || rc=$?
    echo "$* -> $out"
    [ "$rc" -ne 0 ] || fail "helper accepted: $*"
    grep -qF -- "$want" <<<"$out" || fail "helper's message for '$*' does not say '$want': $out"
  }
  as_user "$SUB_USER" mkdir -p "$h/t" "$h/u"
  as_user "$SUB_USER" ln -sfn "$h/t" "$h/link"
  refused "is not listed in $HELPER_CONF" "$pid" /etc "$h/t"
  # A process of the user's in the initial user namespace: nothing to map through.
  as_user "$SUB_USER" sleep 30 &
  local plain=$! sleeper
  sleep 0.3
  sleeper=$(pgrep -P "$plain" -x sleep || echo "$plain")
  refused "is not in a user namespace" "$sleeper" "$R" "$h/t"
  kill "$sleeper" "$plain" 2>/dev/null || true
  as_user "$NOSUB_USER" podman unshare true
  other=$(cat "$W/run-$NOSUB_USER/libpod/tmp/pause.pid")
  refused "was created by uid $(id -u "$NOSUB_USER"), not by you" "$other" "$R" "$h/t"
  refused "not a directory owned by you" "$pid" "$R" /tmp
  refused "reached without symlinks" "$pid" "$R" "$h/link"
  refused "already a mount point" "$pid" "$R" "$view"
  refused "not an absolute path" "$pid" "$R" t
  refused "not a process ID" "1x" "$R" "$h/t"
  refused "only root runs it" --serve
  # Without the setuid bit it cannot do anything.
  install -m 755 "$HELPER" "$W/bin/helper-plain"
  local out rc=0
  out=$(as_user "$SUB_USER" "$W/bin/helper-plain" "$pid" "$R" "$h/u" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] && grep -q "not running as root" <<<"$out" || fail "a helper without setuid: $out"
  # Nothing was attached by the refused calls.
  ! pm unshare mountpoint -q "$h/t" || fail "a refused call attached a view"
}

# fuse-overlayfs instead of kernel overlay (cvmfs.mount_program; automatic on
# kernels before 5.11): its own graphroot, /dev/fuse open to users as
# distributions make it (restored after).
t_fuse_overlayfs() {
  command -v fuse-overlayfs >/dev/null || fail "fuse-overlayfs missing (make deps)"
  local h conf ref
  h=$(getent passwd "$SUB_USER" | cut -d: -f6)
  conf="$h/.config/containers/storage-fuse.conf"
  cat >"$conf" <<EOF
[storage]
driver = "cvmfs"
graphroot = "$h/.local/share/containers/storage-fuse"
runroot = "$W/run-$SUB_USER/containers-fuse"

[storage.options]
additionalimagestores = ["$R/podmanStore"]

[storage.options.cvmfs]
repositories = "$R"
mount_program = "$(command -v fuse-overlayfs)"
EOF
  chown "$SUB_USER:" "$conf"
  [ -s "$W/fuse-mode.saved" ] || stat -c %a /dev/fuse >"$W/fuse-mode.saved"
  chmod 666 /dev/fuse
  setup_as "$SUB_USER" >/dev/null
  pmf() { USER_ENV="CONTAINERS_STORAGE_CONF=$conf" pm "$@"; }
  pmf info --format '{{json .Store.GraphStatus}}' | tee "$W/fuse-status.json"
  jq -er '."Mount API"' "$W/fuse-status.json" | grep -q "FUSE mount program .*fuse-overlayfs (configured" || fail "Mount API does not name fuse-overlayfs"
  jq -er '.Rootless' "$W/fuse-status.json" | grep -q "^FUSE mount program" || fail "Rootless does not name the FUSE path"
  ref=$(umoci_rootfs wh)
  sh "$E/list.sh" "$ref" "${LIST_PATHS[@]}" >"$W/umoci.list"
  pmf run --rm -v "$E/list.sh:/e2e-list.sh:ro" "$REG/e2e/wh:1" sh -c 'grep -w fuse.fuse-overlayfs /proc/self/mountinfo | grep -q " / / " && sh /e2e-list.sh / "$@"' sh "${LIST_PATHS[@]}" >"$W/fuse.list" ||
    fail "the container's root is not a fuse-overlayfs mount, or listing failed"
  diff "$W/umoci.list" "$W/fuse.list" || fail "fuse-overlayfs: the container differs from umoci unpack"
  pmf run --name cf "$REG/e2e/tiny:1" sh -c 'echo more >> /app/hello.txt; rm /app/data/1'
  # (for the log: what fuse-overlayfs left in the upper directory)
  pmf unshare find "$(pmf inspect cf --format '{{.GraphDriver.Data.UpperDir}}')" -printf '%y %m %u:%g %p\n' || true
  pmf unshare sh -c 'getfattr -d -m - -R "$1" 2>/dev/null' sh "$(pmf inspect cf --format '{{.GraphDriver.Data.UpperDir}}')" || true
  pmf commit cf localhost/rl/fuse:1
  pmf run --rm localhost/rl/fuse:1 sh -c 'test ! -e /app/data/1 && tail -n 1 /app/hello.txt' | tee "$W/fuse-commit.txt"
  [ "$(cat "$W/fuse-commit.txt")" = more ] || fail "fuse-overlayfs: committed changes are not what the container did"
  pmf rm -f cf
  pmf rmi -f localhost/rl/fuse:1 >/dev/null
}

# The automatic set-up (docs/rootless.md): with the root view service
# listening (`cvmfs-idmap-view --serve` per connection, as systemd's
# helper/systemd/cvmfs-idmap-view.socket runs it; here systemd-socket-activate
# plays systemd), the driver asks for the view itself: no cvmfs-rootless-setup.
t_automatic_view() {
  command -v systemd-socket-activate >/dev/null || fail "systemd-socket-activate missing (Debian systemd)"
  local view sock="$W/view.sock" pid out
  view=$(view_of "$SUB_USER")
  pm unshare true
  pm unshare sh -c "! mountpoint -q '$view' || umount '$view'"
  pm unshare mountpoint -q "$view" && fail "could not detach the view to start without one"
  # Without a service: no view, owners unmapped, no message.
  out=$(USER_ENV="CVMFS_IDMAP_VIEW_SOCKET=$sock" pm run --rm "$REG/e2e/tiny:1" stat -c '%u:%g' /app/data/1 2>"$W/auto0.err") || true
  [ "$out" = "65534:65534" ] || fail "without a view the 1000:1000 file shows as '$out': $(tail -3 "$W/auto0.err")"
  grep -q 'view service' "$W/auto0.err" && fail "a message although no service is installed: $(cat "$W/auto0.err")"
  systemd-socket-activate -l "$sock" --inetd -a "$HELPER" --serve 2>"$W/activate.log" &
  pid=$!
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  chmod 666 "$sock"
  # The service checks the connecting process: one outside a user namespace
  # (this python) is refused, with the reason on the connection.
  out=$(as_user "$SUB_USER" python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\0" + sys.argv[3].encode() + b"\0")
answer = b""
while chunk := s.recv(4096):
    answer += chunk
print(answer.decode().strip())' "$sock" "$R" "$view") || true
  echo "a request from outside a user namespace -> $out"
  grep -q "^error: process [0-9]* is not in a user namespace" <<<"$out" ||
    { kill "$pid"; fail "the service did not refuse a process outside a user namespace: '$out'"; }
  out=$(USER_ENV="CVMFS_IDMAP_VIEW_SOCKET=$sock" pm run --rm "$REG/e2e/tiny:1" stat -c '%u:%g' /app/data/1 2>"$W/auto.err") || true
  cat "$W/auto.err"
  [ "$out" = "1000:1000" ] || { kill "$pid"; fail "with the view service the 1000:1000 file shows as '$out' (service log: $(tail -3 "$W/activate.log"))"; }
  pm unshare mountpoint -q "$view" || { kill "$pid"; fail "no view at $view after the automatic set-up"; }
  # Later commands find the view (no second request: the service is gone).
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$sock"
  out=$(pm run --rm "$REG/e2e/tiny:1" stat -c '%u:%g' /app/data/1 2>"$W/auto2.err") || true
  [ "$out" = "1000:1000" ] || fail "the next run does not use the view: '$out'"
  pm info --format '{{json .Store.GraphStatus}}' | jq -er '."Rootless Ownership"' | grep -qF "as in the image for $R" ||
    fail "podman info does not say owners are right through the automatic view"
}

# A repository on a FUSE mount that refuses ID mapping, as the CVMFS client's
# does (cvmfs2 2.12 does not announce FUSE_ALLOW_IDMAP; bench/fuselat, a
# read-only pass-through without it, stands in for the client here; the real
# client is make test-real-cvmfs's rootless/*): the helper refuses it and says
# what to do; through root's cvmfs-idmap-fuse over it, listed after the
# repository in the helper's configuration, the owners are right.
t_fuse_repository_through_idmap_fuse() {
  local F="$W/fuserepo" src="$W/fuse-src" fv="$W/fuseview" out
  FUSE_PIDS=()
  local conf="$W/fuse-storage.conf" h
  h=$(getent passwd "$SUB_USER" | cut -d: -f6)
  stop_fuse() { # (an EXIT trap of the case's subshell: globals only)
    pm system migrate >/dev/null 2>&1 || true # ends the pause process holding the view
    local p
    for p in "${FUSE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    umount -l "$W/fuseview" "$W/fuserepo" 2>/dev/null || true
    cp "$W/idmap-view.conf.suite" "$HELPER_CONF" || true
  }
  trap stop_fuse EXIT
  cp "$HELPER_CONF" "$W/idmap-view.conf.suite"
  (cd "$ROOT/bench/fuselat" && GOFLAGS=-mod=mod go build -o "$W/bin/fuselat" .) || fail "building bench/fuselat failed"
  make -s -C "$ROOT" idmap-fuse || fail "building cvmfs-idmap-fuse failed"
  mkdir -p "$F" "$fv"
  "$B" publish -q --repo "$F" "oci:$W/oci:tiny" --name localhost/fuse/tiny:1 || fail "publishing into $F failed"
  mv "$F" "$src" && mkdir -m 755 "$F"
  "$W/bin/fuselat" -latency 0 -bandwidth 0 "$src" "$F" 2>"$W/fuselat.log" & FUSE_PIDS+=($!)
  "$ROOT/build/bin/cvmfs-idmap-fuse" "$F" "$fv" 2>"$W/idmap-fuse.log" & FUSE_PIDS+=($!)
  for _ in $(seq 50); do mountpoint -q "$F" && mountpoint -q "$fv" && break; sleep 0.1; done
  mountpoint -q "$fv" || fail "the FUSE mounts did not come up: $(cat "$W/fuselat.log" "$W/idmap-fuse.log")"
  install -d -o "$SUB_USER" -g "$SUB_USER" "$W/fuse-user"
  printf '[storage]\ndriver = "cvmfs"\ngraphroot = "%s/root"\nrunroot = "%s/run"\n[storage.options]\nadditionalimagestores = ["%s/podmanStore"]\n[storage.options.cvmfs]\nrepositories = "%s"\n' \
    "$W/fuse-user" "$W/fuse-user" "$F" "$F" >"$conf"
  chmod 644 "$conf"
  # podman's namespace must see the new mounts: a new pause process.
  pm system migrate >/dev/null 2>&1
  pm unshare true
  printf '%s\n' "$F" >"$HELPER_CONF"
  out=$(as_user "$SUB_USER" env PODMAN="$PODMAN" CVMFS_IDMAP_VIEW="$HELPER" "$W/bin/cvmfs-rootless-setup" "$F" 2>&1) && fail "the helper ID-mapped a FUSE mount that refuses it: $out"
  echo "$out"
  grep -q "does not support ID-mapped mounts: .*runs cvmfs-idmap-fuse over it" <<<"$out" || fail "the helper does not say what to do: $out"
  printf '%s %s\n' "$F" "$fv" >"$HELPER_CONF"
  as_user "$SUB_USER" env PODMAN="$PODMAN" CVMFS_IDMAP_VIEW="$HELPER" "$W/bin/cvmfs-rootless-setup" "$F" || fail "set-up through cvmfs-idmap-fuse failed"
  out=$(USER_ENV="CONTAINERS_STORAGE_CONF=$conf" pm run --rm localhost/fuse/tiny:1 stat -c '%u:%g %n' /app/data/1 /app/hello.txt) || true
  echo "$out"
  [ "$out" = "$(printf '1000:1000 /app/data/1\n0:0 /app/hello.txt')" ] || fail "owners through cvmfs-idmap-fuse: '$out'"
  [ "$(USER_ENV="CONTAINERS_STORAGE_CONF=$conf" pm run --rm localhost/fuse/tiny:1 cat /app/hello.txt)" = "hello from cvmfs" ] ||
    fail "content through cvmfs-idmap-fuse"
}

run_test "run by name offline from the repository, storage under ~/.local/share" t_run_by_name_offline
run_test "podman info driver status names the rootless path" t_info_names_rootless_path
run_test "cvmfs-rootless-setup attaches an ID-mapped view, podman info names it" t_setup_attaches_view
run_test "the setuid helper refuses other namespaces, unlisted repositories, targets not owned" t_helper_refuses
run_test "the view stays read-only, nosuid, nodev for the user" t_view_stays_read_only
run_test "owners: a 1000:1000 file, a setuid binary, root files writable by container root" t_ownership
run_test "whiteouts and opaque dirs match umoci unpack (podman mount)" t_whiteouts_match_umoci
run_test "a running container matches umoci unpack, owners and modes too" t_container_matches_umoci
run_test "build and commit on top of a CVMFS image" t_build_commit
run_test "fuse-overlayfs (cvmfs.mount_program): container matches umoci unpack, commit on top" t_fuse_overlayfs
run_test "6 parallel runs" t_parallel_runs
run_test "podman system reset leaves the repository alone" t_reset_leaves_repository
run_test "a user without subordinate IDs: a working run or an error naming /etc/subuid" t_no_subordinate_ids
run_test "automatic view: the driver asks the root view service (cvmfs-idmap-view --serve)" t_automatic_view
run_test "a repository on a FUSE mount that refuses ID mapping: owners right through cvmfs-idmap-fuse" t_fuse_repository_through_idmap_fuse
# A measurement, not a case: time to first output of `run` (median of 5),
# rootless against rootful on the same repository and podman.
median_run_seconds() { # podman-invoking function
  local i t
  for i in 1 2 3 4 5; do
    t=$(date +%s.%N)
    "$@" run --rm "$REG/e2e/tiny:1" cat /app/hello.txt | head -c1 >/dev/null
    echo "$(date +%s.%N) - $t" | bc
  done | sort -n | sed -n 3p
}
rootful_pm() {
  env HOME="$W/rootful-home" CONTAINERS_CONF="$E/containers.conf" CONTAINERS_STORAGE_CONF="$W/rootful.conf" \
    CONTAINERS_REGISTRIES_CONF="$(getent passwd "$SUB_USER" | cut -d: -f6)/.config/containers/registries.conf" \
    PODMAN_IGNORE_CGROUPSV1_WARNING=1 "$PODMAN" "$@"
}
if [ -z "$TEST_FILTER" ] && command -v bc >/dev/null; then
  mkdir -p "$W/rootful-home"
  sed -e "s|@GRAPHROOT@|$W/rootful-root|; s|@RUNROOT@|$W/rootful-run|; s|@REPO@|$R|g" "$E/storage.conf.in" >"$W/rootful.conf"
  pm run --rm "$REG/e2e/tiny:1" true >/dev/null 2>&1
  rootful_pm run --rm "$REG/e2e/tiny:1" true >/dev/null 2>&1
  rl=$(median_run_seconds pm 2>/dev/null)
  rf=$(median_run_seconds rootful_pm 2>/dev/null)
  echo "    time to first output (median of 5, tiny image): rootless ${rl}s, rootful ${rf}s, ratio $(echo "scale=2; $rl / $rf" | bc)"
  rootful_pm system reset -f >/dev/null 2>&1
fi
# non-zero when anything failed
summary
