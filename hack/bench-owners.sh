#!/usr/bin/env bash
# make bench, part "owners": what restoring the image's owners costs on a CVMFS
# client that claims ownership (CVMFS_CLAIM_OWNERSHIP=yes, CVMFS's default:
# every file shows the cvmfs2 process's uid). The bench's "large" image
# (bench/gen-image.py at BENCH_SCALE, seed BENCH_SEED) is published our way and
# mounted by the driver through bench/fuselat without delay, once as a client
# that shows the owners as published and once with -claim-uid 4242. Printed:
# a markdown table of first mount, a later mount, a container's first mount
# and the local disk of the restored owners, for both ways the driver has:
# owner images (EROFS, the default where the kernel allows) built from the
# layers' tar-splits (our publisher's layers) or from a walk of the layers
# (a store without tar-splits, as DUCC's), and metacopy copies in whiteout
# layers (cvmfs.owner_images=false), interleaved.
# BENCH_OWNERS_NET=<latency>,<Mbit/s> (e.g. 100ms,100) makes the view's
# fetches cost that (a slow client; the tar-split is downloaded, a walk reads
# only metadata), with a cold view for each claiming row.
# Needs root. The measuring program: crates/driver/examples/bench_owners.rs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
scale=${BENCH_SCALE:-1}
seed=${BENCH_SEED:-6}
W="$ROOT/build/bench/owners"
rm -rf "$W"
mkdir -p "$W/work"
trap 'rm -rf "$W"' EXIT
# The bench's own full-size images are reused when built (bench/run.sh).
G="$ROOT/build/bench/images/large-$scale-$seed"
if [ ! -f "$G/info.json" ]; then
  echo "generating the large image at scale $scale" >&2
  G="$W/large"
  python3 bench/gen-image.py large "$G" --scale "$scale" --seed "$seed" >"$G.json"
  cp "$G.json" "$G/info.json"
fi
TMPDIR="$W/work" CVMFS_CLAIM_BENCH_DIR="$G" CVMFS_CLAIM_BENCH_WORK="$W/work" \
  CVMFS_CLAIM_BENCH_ROUNDS="${BENCH_OWNERS_ROUNDS:-2}" CVMFS_CLAIM_BENCH_NET="${BENCH_OWNERS_NET:-}" \
  cargo run -q --release -p cvmfs-graphdriver --example bench_owners >"$W/out.txt"
files=$(jq -r .files "$G/info.json")
net="no delay"
[ -z "${BENCH_OWNERS_NET:-}" ] || net="fetches cost ${BENCH_OWNERS_NET%,*} round trip and ${BENCH_OWNERS_NET#*,} Mbit/s, a cold view per claiming row"
echo "Large image, BENCH_SCALE=$scale: $files files in $(jq -r .layers "$G/info.json") layers (all owned 0:0), kernel overlay over a FUSE view (bench/fuselat, $net), driver home on $(stat -f -c %T "$W/work"). Claiming-client rows interleaved, each from an empty driver home."
echo
echo "| client | restored by | first mount | later mount | container's first mount | local entries | local KiB |"
echo "|---|---|---|---|---|---|---|"
sed -n 's/^BENCH: //p' "$W/out.txt" | while read -r line; do
  declare -A v=()
  for kv in $line; do v[${kv%%=*}]=${kv#*=}; done
  case ${v[view]} in
    plain) who="owners as published (CVMFS_CLAIM_OWNERSHIP=no)"; how="nothing to restore" ;;
    claim) who="claims ownership (every file 4242:4242)"
      case ${v[path]} in
        OwnerImages) how="owner images (EROFS, one per layer), walked over FUSE" ;;
        TarSplit) how="owner images (EROFS, one per layer), from the tar-split" ;;
        *) how="metacopy copies in whiteout layers" ;;
      esac ;;
  esac
  echo "| $who | $how | ${v[first_get_s]} s | ${v[later_get_s]} s | ${v[container_first_get_s]} s | ${v[local_entries]} | ${v[local_kib]} |"
done
echo
echo "Metacopy: one local inode per image file (sparse files with \`trusted.overlay.metacopy\`). Owner images: one metadata-only EROFS file per layer, mounted file-backed; the repository is the overlay's data-only lower. Both built once per layer at the first mount and kept in the driver home."
