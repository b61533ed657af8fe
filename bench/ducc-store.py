#!/usr/bin/env python3
"""Write DUCC's podmanStore (an overlay additional image store of symlinks) for
images already published in a repository, the way DUCC's podman.go does it
(ARCHITECTURE §3), into a directory of our choosing inside the repository
(our publisher owns <repo>/podmanStore).

    ducc-store.py REPO STOREDIR NAME=MANIFEST_JSON CONFIG_JSON [...]

NAME is registry/repository:tag; MANIFEST_JSON the registry's manifest and
CONFIG_JSON the image config (files). Layer IDs are diffIDs, each
overlay/<diffID>/diff is a relative symlink to .layers/XX/<d>/layerfs, `link`
holds a 26-character name with overlay/l/<name> -> ../<diffID>/diff, `lower`
lists the link names below (top first), overlay-images/<c>/manifest is a
symlink to the .metadata manifest DUCC keeps and the config sits beside it
under "=" + base64("sha256:<c>").
"""
import base64
import datetime
import hashlib
import json
import os
import sys

repo, store = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
for sub in ("overlay/l", "overlay-images", "overlay-layers"):
    os.makedirs(os.path.join(store, sub), exist_ok=True)
now = datetime.datetime.now(datetime.timezone.utc).isoformat()
layers, images = [], []


def rel_symlink(target, link):
    if os.path.lexists(link):
        return
    os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


for i in range(0, len(args), 2):
    name, mpath = args[i].split("=", 1)
    cpath = args[i + 1]
    manifest = json.load(open(mpath))
    config_bytes = open(cpath, "rb").read()
    config = json.loads(config_bytes)
    diff_ids = [d.split(":")[1] for d in config["rootfs"]["diff_ids"]]
    parent, lowers = "", []
    for desc, did in zip(manifest["layers"], diff_ids):
        d = desc["digest"].split(":")[1]
        ldir = os.path.join(store, "overlay", did)
        os.makedirs(ldir, exist_ok=True)
        rel_symlink(os.path.join(repo, ".layers", d[:2], d, "layerfs"), os.path.join(ldir, "diff"))
        # A stable 26-character link name (DUCC draws a random one).
        lid = base64.b32encode(hashlib.sha256(did.encode()).digest()).decode()[:26]
        with open(os.path.join(ldir, "link"), "w") as f:
            f.write(lid)
        rel_symlink(os.path.join(ldir, "diff"), os.path.join(store, "overlay", "l", lid))
        if lowers:
            with open(os.path.join(ldir, "lower"), "w") as f:
                f.write(":".join("l/" + x for x in reversed(lowers)))
        meta = json.load(open(os.path.join(repo, ".layers", d[:2], d, ".metadata", "layers.json")))[0]
        layers.append({
            "id": did, "parent": parent or None, "created": now,
            "compressed-diff-digest": desc["digest"], "compressed-size": desc["size"],
            "diff-digest": "sha256:" + did, "diff-size": meta.get("diff-size"),
        })
        layers[-1] = {k: v for k, v in layers[-1].items() if v is not None}
        parent = did
        lowers.append(lid)
    c = manifest["config"]["digest"].split(":")[1]
    idir = os.path.join(store, "overlay-images", c)
    os.makedirs(idir, exist_ok=True)
    reg_repo, tag = name.rsplit(":", 1)
    rel_symlink(os.path.join(repo, ".metadata", reg_repo + ":" + tag, "manifest.json"), os.path.join(idir, "manifest"))
    key = "=" + base64.b64encode(("sha256:" + c).encode()).decode()
    with open(os.path.join(idir, key), "wb") as f:
        f.write(config_bytes)
    images.append({"id": c, "names": [name], "layer": parent, "created": now})

json.dump(layers, open(os.path.join(store, "overlay-layers", "layers.json"), "w"), indent=1)
json.dump(images, open(os.path.join(store, "overlay-images", "images.json"), "w"), indent=1)
for lock in ("overlay-layers/layers.lock", "overlay-images/images.lock"):
    open(os.path.join(store, lock), "a").close()
