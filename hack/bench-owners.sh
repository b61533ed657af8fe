#!/usr/bin/env bash
# make bench, part "owners": what restoring the image's owners costs on a CVMFS
# client that claims ownership (CVMFS_CLAIM_OWNERSHIP=yes, CVMFS's default:
# every file shows the cvmfs2 process's uid). The bench's "large" image
# (bench/gen-image.py at BENCH_SCALE, seed BENCH_SEED) is published our way and
# mounted by the driver through bench/fuselat without delay, once as a client
# that shows the owners as published and once with -claim-uid 4242. Printed:
# a markdown table of first mount, a later mount, a container's first mount
# and the local disk of the driver's whiteout layers (metadata copies).
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
echo "generating the large image at scale $scale" >&2
python3 bench/gen-image.py large "$W/large" --scale "$scale" --seed "$seed" >"$W/info.json"
TMPDIR="$W/work" CVMFS_CLAIM_BENCH_DIR="$W/large" CVMFS_CLAIM_BENCH_WORK="$W/work" \
  cargo run -q -p cvmfs-graphdriver --example bench_owners >"$W/out.txt"
files=$(jq -r .files "$W/info.json")
echo "Large image, BENCH_SCALE=$scale: $files files in $(jq -r .layers "$W/info.json") layers (all owned 0:0), kernel overlay over a FUSE view (bench/fuselat, no delay), driver home on $(stat -f -c %T "$W/work")."
echo
echo "| client | first mount | later mount | container's first mount | whiteout layers: entries | blocks (KiB) |"
echo "|---|---|---|---|---|---|"
sed -n 's/^BENCH: //p' "$W/out.txt" | while read -r line; do
  declare -A v=()
  for kv in $line; do v[${kv%%=*}]=${kv#*=}; done
  case ${v[view]} in
    plain) who="owners as published (CVMFS_CLAIM_OWNERSHIP=no)" ;;
    claim) who="claims ownership (every file 4242:4242): every entry restored" ;;
  esac
  echo "| $who | ${v[first_get_s]} s | ${v[later_get_s]} s | ${v[container_first_get_s]} s | ${v[aux_entries]} | ${v[aux_kib]} |"
done
echo
echo "Each restored entry is a metadata-only copy (regular files: sparse, \`trusted.overlay.metacopy\`): one local inode per image file, built once per layer at the first mount and kept in the driver home."
