#!/usr/bin/env bash
# bench/rootless.sh: time to first output of the large and deep images run
# by name from the repository, rootless (a throw-away user with subordinate
# IDs, its ID-mapped view attached by cvmfs-idmap-view, docs/rootless.md)
# against rootful, same podman, same repository (a plain local directory),
# page cache dropped before each run, the two alternated run by run. Prints
# one markdown table; hack/bench.sh puts it in bench/results.md (part
# "rootless"). Issue 15's target: rootless / rootful <= 1.2x.
#
# Environment: BENCH_SCALE (default 1), BENCH_SEED (6), BENCH_RUNS (5),
# BENCH_IMAGES ("large deep"), BENCH_SKIP_BUILD=1 as in bench/run.sh.
# BENCH_ROOTLESS_CLIENT=fuse serves the repository through bench/fuselat
# (no delay: a FUSE mount that, like the CVMFS client's, refuses ID mapping)
# for both sides, and the rootless view is ID-mapped through cvmfs-idmap-fuse
# over it (docs/rootless.md): the cost of the second FUSE hop;
# BENCH_IDMAP_FUSE_FLAGS (e.g. -passthrough) are cvmfs-idmap-fuse's options.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
# shellcheck source=tests/lib/registry.bash
source "$ROOT/tests/lib/registry.bash"

scale=${BENCH_SCALE:-1}
seed=${BENCH_SEED:-6}
runs=${BENCH_RUNS:-5}
images=${BENCH_IMAGES:-large deep}
BENCH_USER=cvmfs-bench-rl
SUB_START=3300000

die() { echo "bench-rootless: $*" >&2; exit 1; }
log() { echo "$*" >&2; }
[ "$(id -u)" -eq 0 ] || die "must run as root (it creates a user and installs the setuid helper)"
# shellcheck source=hack/lib-cgroup2.sh
source "$ROOT/hack/lib-cgroup2.sh"
reexec_primary_with_cgroup2 "$0" "$@" || die "podman cannot run on this host"
for tool in skopeo docker-registry jq python3 setpriv useradd newuidmap newgidmap busybox; do
  command -v "$tool" >/dev/null || die "$tool missing (make deps)"
done

L="$ROOT/build/bench"
mkdir -p "$L"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  "$ROOT/hack/build-podman.sh" >"$L/build-podman-rl.log" 2>&1 || { tail -n 10 "$L/build-podman-rl.log" >&2; die "building podman failed"; }
fi
cargo build --release --bin cvmfs-podman --quiet || die "building cvmfs-podman failed"
make -s idmap-helper >/dev/null || die "building cvmfs-idmap-view failed"
B="$ROOT/target/release/cvmfs-podman"

W=$(mktemp -d /tmp/bench-rootless.XXXXXX)
chmod 755 "$W"
R="$W/repo"
HELPER_CONF=/etc/containers/cvmfs-idmap-view.conf
mkdir -p "$W/bin"
cp build/bin/podman "$W/bin/podman"
install -o root -g root -m 4755 build/bin/cvmfs-idmap-view "$W/bin/cvmfs-idmap-view"
install -m 755 hack/cvmfs-rootless-setup "$W/bin/cvmfs-rootless-setup"
PODMAN="$W/bin/podman"

remove_user() {
  id "$BENCH_USER" >/dev/null 2>&1 || return 0
  local pid
  for pid in $(ps -o pid= -u "$BENCH_USER" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  sleep 0.2
  userdel -r "$BENCH_USER" >/dev/null 2>&1
  sed -i "/^$BENCH_USER:/d" /etc/subuid /etc/subgid
}
FUSE_PIDS=()
cleanup() {
  remove_user
  registry_stop
  local p
  for p in "${FUSE_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  if [ -e "$W/idmap-view.conf.saved" ]; then cp -a "$W/idmap-view.conf.saved" "$HELPER_CONF"; else rm -f "$HELPER_CONF"; fi
  grep -o " $W[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

# ------------------------------------------------------------------ images
registry_start "$W/registry" || die "cannot start docker-registry"
for img in $images; do
  G="$L/images/$img-$scale-$seed"
  if [ ! -f "$G/info.json" ]; then
    log "==> generating $img (scale $scale, seed $seed)"
    rm -rf "$G"
    python3 bench/gen-image.py "$img" "$G" --scale "$scale" --seed "$seed" >&2 || die "generating $img failed"
  fi
  [ -f "$G/oci/index.json" ] || "$B" make-oci "$G/oci" --tag "$img" "$G"/layer-*.tar >&2 || die "make-oci $img failed"
  skopeo copy --quiet --dest-tls-verify=false "oci:$G/oci:$img" "docker://$REG/bench/$img:1" || die "pushing $img failed"
  "$B" publish "docker://$REG/bench/$img:1" --tls-verify=false --repo "$R" -q >&2 || die "publishing $img failed"
done
registry_stop

client=${BENCH_ROOTLESS_CLIENT:-dir}
view_line=$R
if [ "$client" = fuse ]; then
  # The published tree moves below the FUSE mount that takes its path.
  export PATH="/usr/local/go/bin:$PATH"
  (cd bench/fuselat && GOFLAGS=-mod=mod go build -o "$W/bin/fuselat" .) || die "building bench/fuselat failed"
  make -s idmap-fuse || die "building cvmfs-idmap-fuse failed"
  mv "$R" "$W/repo-src" && mkdir -m 755 "$R" "$W/idmap"
  "$W/bin/fuselat" -latency 0 -bandwidth 0 "$W/repo-src" "$R" 2>"$W/fuselat.log" & FUSE_PIDS+=($!)
  # shellcheck disable=SC2086
  "$ROOT/build/bin/cvmfs-idmap-fuse" ${BENCH_IDMAP_FUSE_FLAGS:-} "$R" "$W/idmap" 2>"$W/idmap-fuse.log" & FUSE_PIDS+=($!)
  for _ in $(seq 100); do mountpoint -q "$R" && mountpoint -q "$W/idmap" && break; sleep 0.1; done
  mountpoint -q "$W/idmap" || die "the FUSE mounts did not come up: $(cat "$W/fuselat.log" "$W/idmap-fuse.log")"
  view_line="$R $W/idmap"
elif [ "$client" != dir ]; then
  die "BENCH_ROOTLESS_CLIENT=$client: dir or fuse"
fi

# ------------------------------------------------------------------ the user
[ -e "$HELPER_CONF" ] && cp -a "$HELPER_CONF" "$W/idmap-view.conf.saved"
mkdir -p /etc/containers
printf '# bench/rootless.sh\n%s\n' "$view_line" >"$HELPER_CONF"
chmod 644 "$HELPER_CONF"
remove_user
useradd --create-home --shell /bin/bash "$BENCH_USER" || die "cannot create $BENCH_USER"
sed -i "/^$BENCH_USER:/d" /etc/subuid /etc/subgid
echo "$BENCH_USER:$SUB_START:65536" >>/etc/subuid
echo "$BENCH_USER:$SUB_START:65536" >>/etc/subgid
H=$(getent passwd "$BENCH_USER" | cut -d: -f6)
E="$ROOT/tests/e2e"
install -d -o "$BENCH_USER" -g "$BENCH_USER" "$H/.config" "$H/.config/containers"
printf '[storage]\ndriver = "cvmfs"\n\n[storage.options]\nadditionalimagestores = ["%s/podmanStore"]\n\n[storage.options.cvmfs]\nrepositories = "%s"\n' \
  "$R" "$R" >"$H/.config/containers/storage.conf"
cp "$E/policy.json" "$E/containers.conf" "$H/.config/containers/"
printf 'unqualified-search-registries = []\n' >"$H/.config/containers/registries.conf"
chown -R "$BENCH_USER:$BENCH_USER" "$H/.config"
install -d -m 700 -o "$BENCH_USER" -g "$BENCH_USER" "$W/run-user"
UID_=$(id -u "$BENCH_USER") GID_=$(id -g "$BENCH_USER")
as_user() {
  (cd / && setpriv --reuid="$UID_" --regid="$GID_" --init-groups -- env -i HOME="$H" USER="$BENCH_USER" \
    PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="$W/run-user" PODMAN_IGNORE_CGROUPSV1_WARNING=1 \
    ${CONTAINERS_CONF_OVERRIDE:+CONTAINERS_CONF_OVERRIDE=$CONTAINERS_CONF_OVERRIDE} "$@")
}
as_user env PODMAN="$PODMAN" CVMFS_IDMAP_VIEW="$W/bin/cvmfs-idmap-view" "$W/bin/cvmfs-rootless-setup" >&2 ||
  die "cvmfs-rootless-setup failed"

# Rootful: the e2e storage.conf (graphroot in $W, the same repository).
sed -e "s|@GRAPHROOT@|$W/rootful-root|; s|@RUNROOT@|$W/rootful-run|; s|@REPO@|$R|g" "$E/storage.conf.in" >"$W/rootful.conf"
printf 'unqualified-search-registries = []\n' >"$W/registries.conf"
ROOTFUL="env HOME=$W CONTAINERS_CONF=$E/containers.conf CONTAINERS_STORAGE_CONF=$W/rootful.conf CONTAINERS_REGISTRIES_CONF=$W/registries.conf PODMAN_IGNORE_CGROUPSV1_WARNING=1 $PODMAN"
# The user's podman as one shell command for measure.py.
ROOTLESS="cd / && setpriv --reuid=$UID_ --regid=$GID_ --init-groups -- env -i HOME=$H USER=$BENCH_USER PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR=$W/run-user PODMAN_IGNORE_CGROUPSV1_WARNING=1 ${CONTAINERS_CONF_OVERRIDE:+CONTAINERS_CONF_OVERRIDE=$CONTAINERS_CONF_OVERRIDE} $PODMAN"

one_run() { # PODMAN-COMMAND IMG -> seconds to first output and to exit, or "-"
  local pm=$1 ref="$REG/bench/$2:1" j
  sync
  echo 3 >/proc/sys/vm/drop_caches
  j=$(python3 bench/measure.py "bench: started" "$pm run --rm --network none $ref /bench/run.sh")
  [ "$(jq -r .rc <<<"$j")" = 0 ] || log "    run failed: $(jq -r .out <<<"$j" | tail -n 5)"
  jq -r '"\(.first_s // "-") \(if .rc == 0 then .total_s else "-" end)"' <<<"$j"
}
median() { printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{v[NR] = $1} END { if (NR == 0) print "-"; else printf "%.2f %.2f %.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
echo "| image | rootful first output s (min–max) | rootless first output s (min–max) | rootless / rootful | rootful exit s | rootless exit s | exit ratio |"
echo "|---|---|---|---|---|---|---|"
for img in $images; do
  log "==> $img: $runs runs, rootful and rootless alternated"
  rf=() rl=() rfx=() rlx=()
  for r in $(seq "$runs"); do
    read -r a b <<<"$(one_run "$ROOTFUL" "$img")"
    rf+=("$a") rfx+=("$b")
    read -r a b <<<"$(one_run "$ROOTLESS" "$img")"
    rl+=("$a") rlx+=("$b")
    log "    run $r: rootful ${rf[-1]}s (exit ${rfx[-1]}s) rootless ${rl[-1]}s (exit ${rlx[-1]}s)"
  done
  read -r fm fl fh <<<"$(median "${rf[@]}")"
  read -r lm ll lh <<<"$(median "${rl[@]}")"
  read -r fxm _ _ <<<"$(median "${rfx[@]}")"
  read -r lxm _ _ <<<"$(median "${rlx[@]}")"
  first_ratio=$(ratio "$lm" "$fm")
  verdict=$(awk -v v="$first_ratio" 'BEGIN { if (v == "-") print "not measured"; else print (v <= 1.2 ? "met" : "**missed**") }')
  G="$L/images/$img-$scale-$seed"
  echo "| $img ($(jq -r '"\(.layers) layers, \(.files) files, \(.bytes / 1048576 | floor) MiB"' "$G/info.json")) | $fm ($fl–$fh) | $lm ($ll–$lh) | ${first_ratio}x (target <= 1.2x: $verdict) | $fxm | $lxm | $(ratio "$lxm" "$fxm")x |"
done
echo
if [ "$client" = fuse ]; then
  where="repository a plain local directory served by bench/fuselat (no delay; a FUSE mount that refuses ID mapping, like a CVMFS client's) to both; the rootless view ID-maps cvmfs-idmap-fuse ${BENCH_IDMAP_FUSE_FLAGS:-}over it (a second FUSE hop)"
else
  where="repository a plain local directory"
fi
echo "Rootless: kernel overlay in the user's podman namespace, repository read through the ID-mapped view (owners as in the image); BENCH_SCALE=$scale, median of $runs, page cache dropped before each run, $where."
