#!/usr/bin/env python3
"""Generate a benchmark image's layers as tar files, reproducibly from a seed.

    gen-image.py KIND OUTDIR [--scale S] [--seed N]

KIND "large": 4 GiB in 200 000 files over 20 layers; "deep": 1 GiB in 50 000
files over 50 layers, each layer above the first deleting a few files of the
ones below (whiteouts). --scale multiplies bytes and files (not layers).

Writes OUTDIR/layer-NN.tar (bottom first; layer 00 holds busybox and the
entrypoint) and OUTDIR/info.json (files, bytes, bytes the entrypoint reads).

File sizes are log-normal (many small files, a few large ones, as in a
software stack), capped at 256 MiB. Contents are half random, half a repeated
pattern per 4 KiB block, so gzip gets roughly 2:1 as on real binaries and data.

The entrypoint /bench/run.sh prints "bench: started" first, then reads the
files listed in /bench/readlist (chosen at random until about 3% of the
image's bytes) with one `cat` per batch, and prints "bench: done N files".
"""
import argparse
import io
import json
import math
import os
import random
import shutil
import tarfile

KINDS = {
    "large": dict(bytes=4 << 30, files=200_000, layers=20, deletes=0),
    "deep": dict(bytes=1 << 30, files=50_000, layers=50, deletes=3),
}
MTIME = 1700000000
POOL = 64 << 20
READ_FRACTION = 0.03


def make_pool(rng):
    out = bytearray()
    pattern = b"science-data-0123456789 " * 86  # 2064 bytes
    while len(out) < POOL:
        out += rng.randbytes(2048)
        out += pattern[:2048]
    return bytes(out)


def sizes_for(rng, n, total):
    raw = [rng.lognormvariate(0, 2.0) for _ in range(n)]
    k = total / sum(raw)
    cap = 256 << 20
    s = [max(0, min(cap, int(x * k))) for x in raw]
    # The cap and rounding lose a little; give it to the largest files.
    missing = total - sum(s)
    order = sorted(range(n), key=lambda i: -s[i])
    i = 0
    while missing > 0 and n:
        j = order[i % n]
        add = min(missing, cap - s[j])
        s[j] += add
        missing -= add
        i += 1
        if i > 4 * n:
            break
    return s


def tarinfo(name, kind, size=0, mode=0o644, link=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.linkname = link
    return ti


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("outdir")
    ap.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("BENCH_SEED", "6")))
    ap.add_argument("--busybox", default=shutil.which("busybox") or "/bin/busybox")
    a = ap.parse_args()
    k = KINDS[a.kind]
    rng = random.Random(f"{a.kind}-{a.seed}")
    nfiles = max(k["layers"] * 10, int(k["files"] * a.scale))
    total = max(nfiles * 1024, int(k["bytes"] * a.scale))
    nl = k["layers"]
    pool = make_pool(rng)
    sizes = sizes_for(rng, nfiles, total)

    # Place files: layer, then a directory tree of ~100 files per directory.
    files = []  # (layer, path, size, pool offset)
    for i, size in enumerate(sizes):
        layer = 1 + (i * (nl - 1)) // nfiles if nl > 1 else 0
        d = i // 100
        path = f"opt/sw/l{layer:02d}/d{d // 50:04d}/d{d % 50:02d}/f{i:06d}.dat"
        files.append((layer, path, size, rng.randrange(0, POOL)))

    # Deletions (deep image): each layer above 1 removes a few files of the layer below.
    deleted = set()
    deletes = {}
    for layer in range(2, nl):
        below = [f for f in files if f[0] == layer - 1 and f[1] not in deleted]
        picks = rng.sample(below, min(k["deletes"], len(below)))
        deletes[layer] = [p[1] for p in picks]
        deleted.update(p[1] for p in picks)

    # The files the entrypoint reads: random live files until ~3% of the bytes.
    live = [f for f in files if f[1] not in deleted]
    target = int(READ_FRACTION * sum(f[2] for f in live))
    order = live[:]
    rng.shuffle(order)
    readlist, got = [], 0
    for f in order:
        if got >= target:
            break
        if got + f[2] > target * 1.2 and f[2] > target * 0.2:
            continue  # no single giant file that overshoots
        readlist.append(f[1])
        got += f[2]

    os.makedirs(a.outdir, exist_ok=True)
    bb = open(a.busybox, "rb").read()
    script = (
        "#!/bin/sh\n"
        "echo 'bench: started'\n"
        "n=$(wc -l < /bench/readlist)\n"
        "xargs cat < /bench/readlist > /dev/null || exit 1\n"
        'echo "bench: done $n files"\n'
    ).encode()
    rl = ("".join("/" + p + "\n" for p in readlist)).encode()

    for layer in range(nl):
        path = os.path.join(a.outdir, f"layer-{layer:02d}.tar")
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
            made = set()

            def mkdirs(p):
                parts = p.split("/")[:-1]
                for j in range(1, len(parts) + 1):
                    d = "/".join(parts[:j])
                    if d not in made:
                        made.add(d)
                        t.addfile(tarinfo(d, tarfile.DIRTYPE, mode=0o755))

            if layer == 0:
                t.addfile(tarinfo("bin", tarfile.DIRTYPE, mode=0o755))
                made.add("bin")
                t.addfile(tarinfo("bin/busybox", tarfile.REGTYPE, len(bb), 0o755), io.BytesIO(bb))
                for app in ("sh", "cat", "xargs", "wc", "echo", "ls", "true"):
                    t.addfile(tarinfo(f"bin/{app}", tarfile.SYMTYPE, link="busybox"))
            if layer == nl - 1:
                mkdirs("bench/x")
                t.addfile(tarinfo("bench/run.sh", tarfile.REGTYPE, len(script), 0o755), io.BytesIO(script))
                t.addfile(tarinfo("bench/readlist", tarfile.REGTYPE, len(rl)), io.BytesIO(rl))
            for p in deletes.get(layer, []):
                d, base = p.rsplit("/", 1)
                mkdirs(p)
                t.addfile(tarinfo(f"{d}/.wh.{base}", tarfile.REGTYPE))
            for fl, p, size, off in files:
                if fl != layer:
                    continue
                mkdirs(p)
                t.addfile(tarinfo(p, tarfile.REGTYPE, size), PoolReader(pool, off, size))
    info = dict(
        kind=a.kind, seed=a.seed, scale=a.scale, layers=nl, files=len(live),
        bytes=sum(f[2] for f in live), read_files=len(readlist), read_bytes=got,
    )
    with open(os.path.join(a.outdir, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


class PoolReader(io.RawIOBase):
    """size bytes from the pool starting at off, wrapping around."""

    def __init__(self, pool, off, size):
        self.pool, self.off, self.left = pool, off, size

    def readable(self):
        return True

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        if n < 0 or n > self.left:
            n = self.left
        parts = []
        self.left -= n
        while n > 0:
            m = min(n, len(self.pool) - self.off)
            parts.append(self.pool[self.off:self.off + m])
            self.off = (self.off + m) % len(self.pool)
            n -= m
        return b"".join(parts)


if __name__ == "__main__":
    main()
