#!/usr/bin/env bash
# make bench-publish: publisher throughput against the reference pipeline,
# same image, same run:
#   ours:      cvmfs-podman publish oci:<layout> --repo <fresh dir>
#              (unpack + verify + tar-split + flat rootfs + podmanStore)
#   reference: skopeo copy oci:<layout> oci:<copy> && umoci unpack --image <copy>
# Throughput = MB of uncompressed layer data per second. Each side runs
# BENCH_RUNS times (alternating) and the best time counts. The image is built
# from directories of this machine (realistic binaries, libraries and text), in
# BENCH_LAYERS layers. Target: ours >= 1.5x the reference.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
runs=${BENCH_RUNS:-3}
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
best_ours=0 best_ref=0
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
  if [ "$best_ours" -eq 0 ] || [ "$ours" -lt "$best_ours" ]; then best_ours=$ours; fi
  if [ "$best_ref" -eq 0 ] || [ "$ref" -lt "$best_ref" ]; then best_ref=$ref; fi
done

awk -v mb="$mb" -v o="$best_ours" -v r="$best_ref" 'BEGIN {
  printf "\n%-44s %10s %12s\n", "pipeline (best of runs)", "time [s]", "MB/s"
  printf "%-44s %10.2f %12.1f\n", "cvmfs-podman publish", o / 1000, mb / (o / 1000)
  printf "%-44s %10.2f %12.1f\n", "skopeo copy + umoci unpack", r / 1000, mb / (r / 1000)
  ratio = r / o
  printf "\nratio (cvmfs-podman throughput / reference): %.2fx (target >= 1.5x): %s\n", ratio, (ratio >= 1.5 ? "met" : "NOT met")
}'
