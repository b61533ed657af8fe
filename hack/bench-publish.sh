#!/usr/bin/env bash
# make bench-publish: publisher throughput against the reference pipeline,
# same image, same run:
#   ours:      cvmfs-podman publish oci:<layout> --repo <fresh dir>
#              (unpack + verify + tar-split + flat rootfs + podmanStore)
#   reference: skopeo copy oci:<layout> oci:<copy> && umoci unpack --image <copy>
# Throughput = MB of uncompressed layer data per second. Each side runs
# BENCH_RUNS times (default 5, alternating); the median counts, with min–max.
# The image is built
# from directories of this machine (realistic binaries, libraries and text), in
# BENCH_LAYERS layers. Target: ours >= 1.5x the reference.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
runs=${BENCH_RUNS:-5}
dirs=(${BENCH_DIRS:-usr/bin usr/lib/python3.11 usr/share/locale usr/share/doc usr/libexec usr/share/man})

for tool in skopeo umoci; do
  command -v "$tool" >/dev/null || { echo "bench-publish: $tool missing (make deps)" >&2; exit 1; }
done
cargo build --release --bin cvmfs-podman --quiet || exit 1
B="$ROOT/target/release/cvmfs-podman"

W=$(mktemp -d /tmp/bench-publish.XXXXXX)
trap 'rm -rf "$W"' EXIT

echo "==> building a ${#dirs[@]}-layer image from: ${dirs[*]}"
layers=()
for d in "${dirs[@]}"; do
  [ -d "/$d" ] || continue
  t="$W/$(echo "$d" | tr / _).tar"
  tar -C / -cf "$t" "$d" 2>/dev/null
  layers+=("$t")
done
"$B" make-oci "$W/oci" --tag bench "${layers[@]}" >/dev/null || exit 1
bytes=0
for t in "${layers[@]}"; do bytes=$((bytes + $(stat -c %s "$t"))); done
rm -f "${layers[@]}"
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "    $mb MB uncompressed, $(du -sm "$W/oci" | cut -f1) MB compressed"

now() { date +%s%N; }
all_ours="" all_ref=""
for i in $(seq "$runs"); do
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  rm -rf "$W/repo"
  t0=$(now)
  "$B" publish "oci:$W/oci:bench" --repo "$W/repo" -q || { echo "publish failed" >&2; exit 1; }
  t1=$(now)
  ours=$(( (t1 - t0) / 1000000 ))

  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  rm -rf "$W/copy" "$W/bundle"
  t0=$(now)
  skopeo copy --quiet "oci:$W/oci:bench" "oci:$W/copy:bench" || { echo "skopeo failed" >&2; exit 1; }
  umoci unpack --image "$W/copy:bench" "$W/bundle" >/dev/null || { echo "umoci failed" >&2; exit 1; }
  t1=$(now)
  ref=$(( (t1 - t0) / 1000000 ))
  echo "    run $i: cvmfs-podman ${ours} ms, skopeo+umoci ${ref} ms"
  all_ours+=" $ours" all_ref+=" $ref"
done

# median min max of the runs (ms)
stats() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {
  m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'; }
read -r om ol oh < <(stats $all_ours)
read -r rm_ rl rh < <(stats $all_ref)
echo
echo "| pipeline ($runs runs) | time s, median (min–max) | MB/s (median) |"
echo "|---|---|---:|"
awk -v mb="$mb" -v m="$om" -v l="$ol" -v h="$oh" 'BEGIN {
  printf "| cvmfs-podman publish | %.2f (%.2f–%.2f) | %.1f |\n", m / 1000, l / 1000, h / 1000, mb / (m / 1000) }'
awk -v mb="$mb" -v m="$rm_" -v l="$rl" -v h="$rh" 'BEGIN {
  printf "| skopeo copy + umoci unpack | %.2f (%.2f–%.2f) | %.1f |\n", m / 1000, l / 1000, h / 1000, mb / (m / 1000) }'
awk -v o="$om" -v r="$rm_" 'BEGIN {
  ratio = r / o
  printf "\nratio of medians (cvmfs-podman throughput / reference): %.2fx (target >= 1.5x): %s\n", ratio, (ratio >= 1.5 ? "met" : "NOT met")
}'

# ---------------------------------------------------------------------------
# Store scale (ARCHITECTURE §5): containers/storage reads the whole indexes of
# every configured store on every command. Time `images` and a container
# create+mount+unmount+delete of one real image when the store also lists N
# other images (5 layers each; index entries cloned from the real one with
# fresh IDs, as a repository with N published images would have), against the
# same with a local store made by `cvmfs-podman enable` holding only that image.
CSBIN="$ROOT/build/containers-storage"
if [ "${BENCH_SCALE:-1}" = 1 ] && [ -x "$CSBIN" ]; then
  echo
  echo "==> store scale (containers-storage from $CSBIN)"
  "$B" make-oci "$W/small" --tag s tests/publish/images/{base,delete,top}.spec >/dev/null
  "$B" publish "oci:$W/small:s" --repo "$W/scale-repo" --name example.org/real/img:1 -q
  "$B" enable example.org/real/img:1 --repo "$W/scale-repo" --store "$W/scale-local" >/dev/null
  cp -a "$W/scale-repo/podmanStore" "$W/scale-pristine"
  ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1 || return 1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
  cs_in() { # store, args...
    local st=$1; shift
    "$CSBIN" --graph "$W/scale-g" --run "$W/scale-r" --storage-driver cvmfs \
      --storage-opt "cvmfs.imagestore=$st" --storage-opt "cvmfs.repositories=$W/scale-repo" "$@"
  }
  cycle() { # store: create, mount, unmount, delete one container
    cs_in "$1" create-container --name scale example.org/real/img:1 &&
    cs_in "$1" mount scale && cs_in "$1" unmount scale && cs_in "$1" delete-container scale
  }
  best() { # 5 runs of a timed command: "median (min–max)"
    local v="" t
    for _ in 1 2 3 4 5; do
      t=$(ms "$@") || { echo fail; return; }
      v+=" $t"
    done
    read -r m l h < <(stats $v)
    echo "$m ($l–$h)"
  }
  echo "| images in the store | images: repo [ms] | images: enabled [ms] | run cycle: repo [ms] | run cycle: enabled [ms] |"
  echo "|---:|---|---|---|---|"
  for n in ${BENCH_SCALE_N:-10 1000 10000}; do
    rm -rf "$W/scale-repo/podmanStore"
    cp -a "$W/scale-pristine" "$W/scale-repo/podmanStore"
    python3 - "$W/scale-repo/podmanStore" "$n" <<'PY'
import hashlib, json, sys
root, n = sys.argv[1], int(sys.argv[2])
ip, lp = root + "/cvmfs-images/images.json", root + "/cvmfs-layers/layers.json"
images, layers = json.load(open(ip)), json.load(open(lp))
img0, lay0 = images[0], layers[0]
h = lambda s: hashlib.sha256(s.encode()).hexdigest()
for i in range(n - 1):
    parent = None
    for j in range(5):
        l = dict(lay0)
        l["id"] = h(f"layer-{i}-{j}")
        l["diff-digest"] = "sha256:" + h(f"diff-{i}-{j}")
        l["compressed-diff-digest"] = "sha256:" + h(f"blob-{i}-{j}")
        if parent:
            l["parent"] = parent
        else:
            l.pop("parent", None)
        parent = l["id"]
        layers.append(l)
    im = dict(img0)
    im["id"] = h(f"image-{i}")
    im["digest"] = "sha256:" + h(f"manifest-{i}")
    im["names"] = [f"example.org/synthetic/img{i}:1"]
    im["layer"] = parent
    images.append(im)
json.dump(images, open(ip, "w"))
json.dump(layers, open(lp, "w"))
PY
    a=$(best cs_in "$W/scale-repo/podmanStore" images)
    b=$(best cs_in "$W/scale-local" images)
    c=$(best cycle "$W/scale-repo/podmanStore")
    d=$(best cycle "$W/scale-local")
    echo "| $n | $a | $b | $c | $d |"
  done
fi
