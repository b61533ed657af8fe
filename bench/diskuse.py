#!/usr/bin/env python3
"""Local disk a container run used: diskuse.py DIR...  -> bytes

The apparent size (as `du -sb`) of every file and directory under the given
directories, each inode counted once, staying on the file system of the
first directory. Directories on other file systems are not entered: container
rootfs mounts (overlay, fuse-overlayfs), our nested mounts, shm tmpfs. A bind
mount of the same file system *is* entered: the overlay driver bind-mounts
graphroot/overlay onto itself while a container runs, and `du -x` would miss
the pulled image there. Missing directories count 0.
"""
import os
import sys

seen = set()
total = 0
dev = None
for top in sys.argv[1:]:
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        continue
    if dev is None:
        dev = st.st_dev
    for root, dirs, files in os.walk(top):
        keep = []
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue  # went away while we looked
            if st.st_dev != dev:
                continue  # another file system: a mount, not local disk use
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
            if name in dirs and not os.path.islink(p):
                keep.append(name)
        dirs[:] = keep
        st = os.lstat(root)
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
print(total)
