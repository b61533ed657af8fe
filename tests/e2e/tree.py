#!/usr/bin/env python3
"""tree.py ROOT [--exclude PATH]...: a complete, comparable listing of a tree,
for checking a container's root filesystem (seen from the host through
`podman mount`) against a reference unpack (`umoci unpack`): type, mode, owner,
size and sha256 of files, symlink targets, device numbers, hardlink groups and
xattrs (overlayfs's own trusted.overlay.* are an implementation detail of the
mount and are left out). Paths are relative to ROOT, sorted."""
import hashlib
import os
import stat
import sys


def main():
    root = sys.argv[1]
    excluded = set()
    args = sys.argv[2:]
    while args:
        if args[0] == "--exclude":
            excluded.add(args[1].strip("/"))
            args = args[2:]
        else:
            sys.exit(f"tree.py: unknown argument {args[0]}")
    first_of_inode = {}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in excluded or any(rel.startswith(e + "/") for e in excluded):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            line = [rel, oct(stat.S_IMODE(st.st_mode)), f"{st.st_uid}:{st.st_gid}"]
            if stat.S_ISREG(kind):
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                key = (st.st_dev, st.st_ino)
                group = first_of_inode.setdefault(key, rel)
                line += ["file", str(st.st_size), h.hexdigest(), "link-group=" + group]
            elif stat.S_ISDIR(kind):
                line += ["dir"]
            elif stat.S_ISLNK(kind):
                line += ["symlink", os.readlink(path)]
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                line += ["char" if stat.S_ISCHR(kind) else "block",
                         f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"]
            elif stat.S_ISFIFO(kind):
                line += ["fifo"]
            else:
                line += ["other"]
            xattrs = []
            try:
                for x in sorted(os.listxattr(path, follow_symlinks=False)):
                    if x.startswith("trusted.overlay."):
                        continue
                    xattrs.append(f"{x}={os.getxattr(path, x, follow_symlinks=False)!r}")
            except OSError:
                pass
            if xattrs:
                line.append("xattrs=" + ",".join(xattrs))
            out.append(" ".join(line))
    for line in sorted(out):
        print(line)


main()
