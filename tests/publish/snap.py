#!/usr/bin/env python3
"""Print a canonical listing of a directory tree, to compare root filesystems:
type, mode, owner, size, content hash, symlink target, device numbers, xattrs,
and the hardlink peer (first path, in sorted order, with the same inode inside
the tree -- link counts are not compared, files may share inodes with trees
outside). CVMFS catalog markers (.cvmfscatalog) are ignored unless
--keep-catalogs is given (a container must not see them)."""
import hashlib
import os
import stat
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
keep_catalogs = "--keep-catalogs" in sys.argv
root = args[0]
entries = []
for dirpath, dirnames, filenames in os.walk(root):
    for n in dirnames + filenames:
        p = os.path.join(dirpath, n)
        rel = os.path.relpath(p, root)
        if n == ".cvmfscatalog" and not keep_catalogs:
            continue
        entries.append((rel, os.lstat(p)))
entries.sort()
first = {}
for rel, st in entries:
    if not stat.S_ISDIR(st.st_mode):
        first.setdefault((st.st_dev, st.st_ino), rel)
for rel, st in entries:
    p = os.path.join(root, rel)
    m = st.st_mode
    line = [rel, oct(stat.S_IMODE(m)), f"{st.st_uid}:{st.st_gid}"]
    if stat.S_ISDIR(m):
        line.insert(1, "dir")
    elif stat.S_ISLNK(m):
        line[1:1] = ["symlink"]
        line.append("-> " + os.readlink(p))
    elif stat.S_ISREG(m):
        line[1:1] = ["file"]
        h = hashlib.md5()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        line += [str(st.st_size), h.hexdigest()]
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        line[1:1] = ["char" if stat.S_ISCHR(m) else "block"]
        line.append(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    elif stat.S_ISFIFO(m):
        line[1:1] = ["fifo"]
    else:
        line[1:1] = ["other"]
    if not stat.S_ISDIR(m):
        peer = first[(st.st_dev, st.st_ino)]
        if peer != rel:
            line.append("link=" + peer)
    try:
        for x in sorted(os.listxattr(p, follow_symlinks=False)):
            if x.startswith("user.") or x.startswith("trusted."):
                line.append(f"{x}={os.getxattr(p, x, follow_symlinks=False)!r}")
    except OSError:
        pass
    print(" ".join(line))
