#!/usr/bin/env python3
"""flat_shares.py FLAT LAYERFS... (bottom first): every regular file of the flat
rootfs must be the file of the topmost layer that has its path, either that very
inode (shared by hardlink) or a copy with identical metadata; and no layer file
may be shared with a flat path other layers replace. Prints one line per fault."""
import os
import stat
import sys

flat, layers = sys.argv[1], sys.argv[2:]


def present(lf, rel):
    """lstat of rel in layer lf, every parent a real directory (no symlink followed)."""
    cur = lf
    parts = rel.split("/")
    for i, c in enumerate(parts):
        cur = os.path.join(cur, c)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return None
        if i + 1 < len(parts) and not stat.S_ISDIR(st.st_mode):
            return None
    return st


faults = 0
for root, dirs, files in os.walk(flat):
    for n in files:
        p = os.path.join(root, n)
        rel = os.path.relpath(p, flat)
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode) or rel == ".cvmfscatalog":
            continue
        top = None
        for lf in layers:
            if present(lf, rel) is not None:
                top = os.path.join(lf, rel)
        if top is None:
            print(f"{rel}: in the flat rootfs but in no layer")
            faults += 1
            continue
        lt = os.lstat(top)
        want = (lt.st_mode, lt.st_uid, lt.st_gid, lt.st_size, lt.st_mtime_ns)
        have = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
        if want != have:
            print(f"{rel}: flat {have} but the top layer's file {top} has {want}")
            faults += 1
        # a lower layer's copy shadowed by the top one must not be the flat file
        for lf in layers:
            q = os.path.join(lf, rel)
            qs = present(lf, rel)
            if q != top and qs is not None and (qs.st_ino, qs.st_dev) == (st.st_ino, st.st_dev):
                print(f"{rel}: flat file is the inode of the shadowed {q}")
                faults += 1
sys.exit(1 if faults else 0)
