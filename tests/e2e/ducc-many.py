#!/usr/bin/env python3
"""Add N synthetic images to a DUCC repository's legacy podmanStore, as DUCC
records an image it converted: a config under overlay-images/<c>/ named
"=" + base64("sha256:<c>"), a `manifest` link to .metadata/<name>/manifest.json,
an entry in overlay-images/images.json (id = config digest, names, top
layer = its diffID) and the layer in overlay-layers/layers.json (id = diffID,
parent diffID, compressed digest and sizes).

    ducc-many.py REPO N NAME_PREFIX

Each image i is the repository's first image plus one layer of its own
(diffID sha256("ducc-many-diff-<i>")); its layer tree is not written (the
driver reads an image's layers when it is used, never when it is listed),
nor its manifest copy (only the link, as for a copy not fetched yet).
"""
import base64
import copy
import hashlib
import json
import os
import sys

repo, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
oi = os.path.join(repo, "podmanStore", "overlay-images")
ol = os.path.join(repo, "podmanStore", "overlay-layers")
images = json.load(open(os.path.join(oi, "images.json")))
layers = json.load(open(os.path.join(ol, "layers.json")))
template = images[0]
cfg_name = "=" + base64.b64encode(("sha256:" + template["id"]).encode()).decode()
config = json.load(open(os.path.join(oi, template["id"], cfg_name)))
for i in range(n):
    diff = hashlib.sha256(f"ducc-many-diff-{i}".encode()).hexdigest()
    blob = hashlib.sha256(f"ducc-many-blob-{i}".encode()).hexdigest()
    c = copy.deepcopy(config)
    c["rootfs"]["diff_ids"].append("sha256:" + diff)
    data = json.dumps(c, separators=(",", ":")).encode()
    cid = hashlib.sha256(data).hexdigest()
    name = f"{prefix}{i}:1"
    d = os.path.join(oi, cid)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "=" + base64.b64encode(("sha256:" + cid).encode()).decode()), "wb") as f:
        f.write(data)
    os.symlink(f"../../../.metadata/{name}/manifest.json", os.path.join(d, "manifest"))
    images.append({"id": cid, "names": [name], "layer": diff, "created": "2024-01-02T03:04:05Z"})
    layers.append({"id": diff, "parent": template["layer"], "compressed-diff-digest": "sha256:" + blob,
                   "compressed-size": 1234, "diff-digest": "sha256:" + diff, "diff-size": 10240})
for path, value in ((os.path.join(oi, "images.json"), images), (os.path.join(ol, "layers.json"), layers)):
    with open(path + ".new", "w") as f:
        json.dump(value, f)
    os.rename(path + ".new", path)
