#!/usr/bin/env python3
"""tree.py [--mtime | --mtime-from-oci OCIDIR] [--nlink] [--peers] [--exclude NAME]... DIR: one line per entry below DIR, sorted.

Each line: path (non-UTF-8 bytes escaped as \\xNN), type, mode (octal, incl. setuid),
uid:gid, size, content sha256 (regular files) or link target / rdev, xattrs other than
the CVMFS client's magic ones, and with --mtime the mtime, with --nlink the link count,
with --mtime-from-oci the mtime only of paths some layer of the OCI layout's first image
names (a directory no tar mentions gets the time of whoever unpacks it), with --peers
the hardlink peer (first path in sorted order with the same inode inside DIR;
link counts also count links from outside DIR, peers do not).
Two trees are equal entry by entry when their listings are byte-identical (`diff`).
"""
import hashlib, json, os, stat, sys, tarfile

def tar_paths(oci):
    """Every path (as escaped text) an entry of one of the image's layer tars names."""
    blob = lambda d: os.path.join(oci, "blobs", *d.split(":"))
    index = json.load(open(os.path.join(oci, "index.json")))
    manifest = json.load(open(blob(index["manifests"][0]["digest"])))
    paths = set()
    for layer in manifest["layers"]:
        with tarfile.open(blob(layer["digest"]), "r:*", encoding="utf-8", errors="surrogateescape") as t:
            for m in t:
                name = os.path.normpath(b"/" + os.fsencode(m.name)).lstrip(b"/")
                paths.add(esc(name) if name else ".")
    return paths

def esc(b):
    return b.decode("utf-8", "backslashreplace")

def xattrs(p):
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return ""
    out = []
    for n in sorted(names):
        if n.startswith("user.") and not n.startswith("user.k"):
            continue  # cvmfs client magic xattrs (user.revision, user.hash, ...)
        try:
            out.append("%s=%s" % (n, esc(os.getxattr(p, n, follow_symlinks=False))))
        except OSError:
            out.append(n + "=?")
    return ",".join(out)

def main():
    args = sys.argv[1:]
    mtime = nlink = peers = False
    exclude = set()
    mtime_paths = None
    while args and args[0].startswith("--"):
        a = args.pop(0)
        if a == "--mtime": mtime = True
        elif a == "--nlink": nlink = True
        elif a == "--peers": peers = True
        elif a == "--mtime-from-oci": mtime_paths = tar_paths(args.pop(0))
        elif a == "--exclude": exclude.add(os.fsencode(args.pop(0)))
    root = os.fsencode(args[0])
    lines = []
    first = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in exclude]
        for name in dirs + [f for f in files if f not in exclude]:
            p = os.path.join(d, name)
            st = os.lstat(p)
            rel = esc(os.path.relpath(p, root))
            m = st.st_mode
            kind = "d" if stat.S_ISDIR(m) else "f" if stat.S_ISREG(m) else "l" if stat.S_ISLNK(m) \
                else "c" if stat.S_ISCHR(m) else "b" if stat.S_ISBLK(m) else "p" if stat.S_ISFIFO(m) else "?"
            what = ""
            if kind == "f":
                with open(p, "rb") as fh:
                    what = hashlib.sha256(fh.read()).hexdigest()[:16]
            elif kind == "l":
                what = "-> " + esc(os.readlink(p))
            elif kind in "cb":
                what = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
            size = st.st_size if kind == "f" else 0
            line = "%s %s %04o %d:%d %d %s [%s]" % (rel, kind, stat.S_IMODE(m), st.st_uid, st.st_gid,
                                                  size, what, xattrs(p))
            if kind != "l" and (mtime or (mtime_paths is not None and rel in mtime_paths)):
                line += " mtime=%d" % st.st_mtime
            if nlink and kind != "d":
                line += " nlink=%d" % st.st_nlink
            lines.append((rel, line, None if kind == "d" else (st.st_dev, st.st_ino)))
    lines.sort()
    for rel, line, ino in lines:
        if peers and ino is not None:
            peer = first.setdefault(ino, rel)
            if peer != rel:
                line += " hardlink-of=" + peer
        print(line)

main()
