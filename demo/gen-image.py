#!/usr/bin/env python3
"""Generate the demo's sample "scientific" image as an OCI image layout.

    demo/gen-image.py OUT_DIR TAG SIZE_MB

The image looks like what physics experiments put on CVMFS: a software stack of
thousands of small files, a large set of calibration data, and a small analysis
entrypoint that reads only a few of those files. Its four layers:

  1. base      Debian's static busybox (the only executable the image needs)
  2. software  /opt/sim/4.2.1: ~4000 libraries, headers, python modules, tables
               (about 10 % of the bytes)
  3. calib     /data/calib: 24 runs x 10 large calibration files (about 90 %)
  4. analysis  /opt/analysis/run.sh (the entrypoint) and /etc/analysis.conf,
               which names the 3 calibration files and 1 geometry table it reads

File contents are pseudo-random bytes from a seeded generator, so the image is
the same on every machine (same digests) yet incompressible, like real detector
data, and no two files are equal (nothing can be deduplicated away). Layers are
written uncompressed to a temporary tar, then compressed with `zstd -1` (fast;
gzip would take minutes on 1 GiB of random bytes). The expected checksum of the
inputs the entrypoint reads goes into OUT_DIR/expected.txt so the demo can check
the container's answer.
"""

import hashlib
import io
import json
import os
import platform
import random
import subprocess
import sys
import tarfile

MTIME = 1700000000
CHUNK = 1 << 20


class HashingWriter:
    """A file wrapper that hashes what tarfile writes: the layer's diff_id."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()

    def write(self, b):
        self.h.update(b)
        return self.f.write(b)

    def tell(self):
        return self.f.tell()


class RandomReader:
    """A file-like source of `size` deterministic pseudo-random bytes."""

    def __init__(self, seed, size):
        # Seeded by a string: the same bytes on every Python version.
        self.rng = random.Random(repr(seed))
        self.left = size
        self.sha = hashlib.sha256()

    def read(self, n=-1):
        if n < 0 or n > self.left:
            n = self.left
        out = bytearray()
        while len(out) < n:
            k = min(CHUNK, n - len(out))
            out += self.rng.randbytes(k)
        self.left -= n
        self.sha.update(out)
        return bytes(out)


class Layer:
    def __init__(self, path):
        self.path = path
        self.raw = open(path, "wb")
        self.hw = HashingWriter(self.raw)
        self.tar = tarfile.open(fileobj=self.hw, mode="w|", format=tarfile.PAX_FORMAT)
        self.bytes = 0
        self.files = 0

    def _info(self, name, kind, mode):
        ti = tarfile.TarInfo(name.lstrip("/"))
        ti.type = kind
        ti.mode = mode
        ti.mtime = MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def dir(self, name, mode=0o755):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def data(self, name, content, mode=0o644):
        ti = self._info(name, tarfile.REGTYPE, mode)
        ti.size = len(content)
        self.tar.addfile(ti, io.BytesIO(content))
        self.bytes += len(content)
        self.files += 1

    def random(self, name, seed, size, mode=0o644):
        """A file of pseudo-random bytes; returns its sha256."""
        ti = self._info(name, tarfile.REGTYPE, mode)
        ti.size = size
        src = RandomReader(seed, size)
        self.tar.addfile(ti, src)
        self.bytes += size
        self.files += 1
        return src.sha

    def close(self):
        self.tar.close()
        self.raw.close()
        return "sha256:" + self.hw.h.hexdigest()


def put_blob(out, data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs/sha256", hexd), "wb") as f:
        f.write(data)
    return "sha256:" + hexd


def compress_layer(out, layer):
    """zstd the layer tar into the blob directory; returns its descriptor."""
    tmp = layer.path + ".zst"
    subprocess.run(["zstd", "-1", "-T0", "-q", "-f", "--rm", layer.path, "-o", tmp], check=True)
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while True:
            b = f.read(8 * CHUNK)
            if not b:
                break
            h.update(b)
    size = os.path.getsize(tmp)
    os.rename(tmp, os.path.join(out, "blobs/sha256", h.hexdigest()))
    return {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
        "digest": "sha256:" + h.hexdigest(),
        "size": size,
    }


def main():
    out, tag, size_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
    total = max(size_mb, 16) << 20
    os.makedirs(os.path.join(out, "blobs/sha256"), exist_ok=True)
    tmp = os.path.join(out, "tmp")
    os.makedirs(tmp, exist_ok=True)
    layers, diff_ids, history = [], [], []

    def finish(layer, what):
        diff_ids.append(layer.close())
        layers.append(compress_layer(out, layer))
        history.append({"created": "2023-11-14T22:13:20Z", "created_by": what})
        print(f"  layer {len(layers)}: {what}: {layer.files} files, {layer.bytes >> 20} MiB", flush=True)

    # 1. base: busybox and the applets the entrypoint calls.
    base = Layer(os.path.join(tmp, "base.tar"))
    for d in ("/bin", "/etc", "/tmp", "/proc", "/sys", "/dev"):
        base.dir(d, 0o1777 if d == "/tmp" else 0o755)
    with open("/bin/busybox", "rb") as f:
        base.data("/bin/busybox", f.read(), 0o755)
    for a in ("sh", "cat", "echo", "sha256sum", "wc", "cut", "head", "date", "ls", "awk"):
        base.symlink("/bin/" + a, "busybox")
    base.data("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    base.data("/etc/group", b"root:x:0:\n")
    finish(base, "base: busybox-static")

    # 2. software: a fake simulation toolkit, many small files.
    sw = Layer(os.path.join(tmp, "software.tar"))
    sw_budget = total // 10
    n_sw = 4000
    avg = max(sw_budget // n_sw, 512)
    prefix = "/opt/sim/4.2.1"
    sw.dir("/opt")
    sw.dir("/opt/sim")
    sw.dir(prefix)
    rng = random.Random(42)
    kinds = [("lib", "libSim{:04d}.so"), ("include/sim", "Sim{:04d}.h"),
             ("python/sim", "mod{:04d}.py"), ("share/tables", "table{:04d}.dat")]
    made = set()
    for i in range(n_sw):
        sub, pat = kinds[i % len(kinds)]
        group = f"{prefix}/{sub}/g{(i // len(kinds)) % 20:02d}"
        for j in range(2, len(group.split("/")) + 1):
            d = "/".join(group.split("/")[:j])
            if d.startswith(prefix + "/") and d not in made:
                sw.dir(d)
                made.add(d)
        # Sizes spread from 1/8 to 15/8 of the average, like real installs.
        size = avg * rng.randint(1, 15) // 8
        name = f"{group}/{pat.format(i)}"
        sw.random(name, ("sw", i), size, 0o755 if sub == "lib" else 0o644)
    # The detector geometry the analysis reads, in the share tree too.
    geo_name = f"{prefix}/share/geometry/detector.gdml"
    sw.dir(f"{prefix}/share/geometry")
    geo_sha = sw.random(geo_name, "geometry", max(avg * 4, 4096))
    sw.data(f"{prefix}/VERSION", b"sim 4.2.1 (demo build)\n")
    finish(sw, f"software: {prefix}")

    # 3. calib: the large data files.
    cal = Layer(os.path.join(tmp, "calib.tar"))
    runs, per_run = 24, 10
    cal_budget = total - sw_budget - (3 << 20)
    fsize = max(cal_budget // (runs * per_run), 4096)
    cal.dir("/data")
    cal.dir("/data/calib")
    shas = {}
    for r in range(runs):
        rd = f"/data/calib/run{1000 + r}"
        cal.dir(rd)
        cal.data(f"{rd}/RUNINFO", f"run {1000 + r}\nfiles {per_run}\n".encode())
        for k in range(per_run):
            name = f"{rd}/ecal-{k:02d}.cal"
            shas[name] = cal.random(name, ("cal", r, k), fsize)
    finish(cal, "calib: /data/calib")

    # 4. analysis: the entrypoint and its configuration.
    inputs = ["/data/calib/run1003/ecal-04.cal", "/data/calib/run1011/ecal-07.cal",
              "/data/calib/run1019/ecal-02.cal"]
    expected = hashlib.sha256()
    for n in inputs:
        expected.update(shas[n].hexdigest().encode() + b"\n")
    expected.update(geo_sha.hexdigest().encode() + b"\n")
    ana = Layer(os.path.join(tmp, "analysis.tar"))
    ana.dir("/opt/analysis")
    conf = (
        "# analysis.conf: what the demo analysis reads\n"
        f"GEOMETRY={geo_name}\n"
        f"INPUTS=\"{' '.join(inputs)}\"\n"
    )
    ana.data("/etc/analysis.conf", conf.encode())
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.sh"), "rb") as f:
        ana.data("/opt/analysis/run.sh", f.read(), 0o755)
    finish(ana, "analysis: /opt/analysis/run.sh")

    arch = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}.get(
        platform.machine(), platform.machine())
    config = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/sh", "/opt/analysis/run.sh"],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": "cvmfs-graphdriver demo analysis"},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    cbytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put_blob(out, cbytes), "size": len(cbytes)},
        "layers": layers,
    }
    mbytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put_blob(out, mbytes),
            "size": len(mbytes),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(out, "expected.txt"), "w") as f:
        f.write(expected.hexdigest() + "\n")
    stats = {
        "files": base.files + sw.files + cal.files + ana.files,
        "bytes": base.bytes + sw.bytes + cal.bytes + ana.bytes,
        "input_bytes": fsize * len(inputs) + max(avg * 4, 4096) + len(conf),
        "compressed": sum(d["size"] for d in layers),
    }
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump(stats, f)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
