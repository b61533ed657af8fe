#!/usr/bin/env python3
"""Probes of what an unprivileged user may do on this kernel, for
hack/measure-rootless.sh (which prepares the directories and runs this as the
test user inside `unshare --user --map-root-user --mount`). Each probe prints
one line "name: ok|FAIL (detail)".

`rootless-probe.py idmap SRC DST USERNS` instead makes one ID-mapped bind
mount (hack/test-rootless.sh, as root: the privileged-helper design). Only the Python standard library: raw
system calls for the new mount API, which util-linux 2.38 cannot drive.
"""
import ctypes, errno, os, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
SYS_open_tree, SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_mount_setattr = 428, 429, 430, 431, 432, 442
OPEN_TREE_CLONE, AT_RECURSIVE, MOVE_MOUNT_F_EMPTY_PATH, AT_EMPTY_PATH = 1, 0x8000, 4, 0x1000
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
MOUNT_ATTR_IDMAP = 0x00100000


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def sc(*args):
    r = libc.syscall(*args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def idmap_mount(src, dst, userns_path):
    """Clone the mount at src, ID-map it with the namespace at userns_path,
    attach it at dst."""
    fd = sc(SYS_open_tree, -100, src.encode(), OPEN_TREE_CLONE | AT_RECURSIVE)
    ns = os.open(userns_path, os.O_RDONLY)
    attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, ns)
    try:
        sc(SYS_mount_setattr, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
        sc(SYS_move_mount, fd, b"", -100, dst.encode(), MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(ns)
        os.close(fd)


def fsconfig_overlay(lowers, target, flags=("userxattr",)):
    fd = sc(SYS_fsopen, b"overlay", 0)
    try:
        for f in flags:
            sc(SYS_fsconfig, fd, FSCONFIG_SET_FLAG, f.encode(), None, 0)
        for l in lowers:
            sc(SYS_fsconfig, fd, FSCONFIG_SET_STRING, b"lowerdir+", l.encode(), 0)
        sc(SYS_fsconfig, fd, FSCONFIG_CMD_CREATE, None, None, 0)
        m = sc(SYS_fsmount, fd, 0, 0)
        sc(SYS_move_mount, m, b"", -100, target.encode(), MOVE_MOUNT_F_EMPTY_PATH)
        os.close(m)
    finally:
        os.close(fd)


def report(name, fn):
    try:
        detail = fn()
        print(f"{name}: ok{' (' + detail + ')' if detail else ''}")
    except Exception as e:  # a probe's failure is its result
        print(f"{name}: FAIL ({e})")


def umount(p):
    subprocess.run(["umount", "-l", p], stderr=subprocess.DEVNULL)


def main():
    t = sys.argv[1]          # a directory the user owns
    repo = sys.argv[2]       # root-owned directories: repo/a (lower), repo/b (below)
    ns_holder = sys.argv[3]  # pid of a process in a nested user namespace (uid 1000 -> our 0)
    p = lambda *a: os.path.join(t, *a)
    for d in ("m", "aux", "x", "w", "up", "wk", "idm", "sq", "sqm", "ovm"):
        os.makedirs(p(d), exist_ok=True)

    def mknod_whiteout():
        os.mknod(p("aux", "gone"), 0o600 | 0o020000, os.makedev(0, 0))
    report("mknod 0/0 whiteout inside the user namespace", mknod_whiteout)

    def set_user_opaque():
        os.makedirs(p("aux", "dir"), exist_ok=True)
        os.setxattr(p("aux", "dir"), "user.overlay.opaque", b"y")
    report("setxattr user.overlay.opaque on an own directory", set_user_opaque)

    def set_trusted():
        os.setxattr(p("aux", "dir"), "trusted.overlay.opaque", b"y")
    report("setxattr trusted.overlay.opaque inside the user namespace", set_trusted)

    def xattr_whiteout():
        os.makedirs(p("x", "dir2"), exist_ok=True)
        open(p("x", "dir2", "gone2"), "w").close()
        os.setxattr(p("x", "dir2", "gone2"), "user.overlay.whiteout", b"y")
        os.setxattr(p("x", "dir2"), "user.overlay.opaque", b"x")
    report("make an xattr whiteout (user.overlay.whiteout, parent user.overlay.opaque=x)", xattr_whiteout)

    def mount_plain():
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={repo}/a:{repo}/b", p("m")], check=True, capture_output=True)
        umount(p("m"))
    report("overlay in the user namespace without userxattr", mount_plain)

    def mount_ux(lowers, opts="userxattr"):
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"{opts},lowerdir={':'.join(lowers)}", p("m")], check=True,
                       capture_output=True, text=True)

    def overlay_ux():
        mount_ux([f"{repo}/a", f"{repo}/b"])
        names = sorted(os.listdir(p("m")))
        umount(p("m"))
        return "merged: " + " ".join(names)
    report("overlay in the user namespace with userxattr (repository lowers)", overlay_ux)

    def chardev_hides():
        mount_ux([p("aux"), f"{repo}/b"])
        seen = os.path.exists(p("m", "gone"))
        dir_entries = sorted(os.listdir(p("m", "dir")))
        umount(p("m"))
        if seen:
            raise RuntimeError("0/0 device did not hide b/gone")
        if dir_entries:
            raise RuntimeError(f"user.overlay.opaque=y ignored: dir holds {dir_entries}")
        return "0/0 device hides b/gone; user.overlay.opaque=y hides b/dir/*"
    report("user-made whiteout layer honoured (0/0 device, user.overlay.opaque)", chardev_hides)

    def xattr_whiteout_hides():
        mount_ux([p("x"), f"{repo}/b"])
        names = sorted(os.listdir(p("m", "dir2")))
        umount(p("m"))
        if "gone2" in names:
            raise RuntimeError(f"not honoured: dir2 holds {names}")
        return "dir2: " + " ".join(names)
    report("xattr whiteout honoured in a lower", xattr_whiteout_hides)

    def metacopy():
        mount_ux([f"{repo}/a", f"{repo}/b"], "userxattr,metacopy=on")
        umount(p("m"))
    report("overlay userxattr,metacopy=on (rootful restores owners with metacopy)", metacopy)

    def copy_up():
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"userxattr,lowerdir={repo}/b,upperdir={p('up')},workdir={p('wk')}", p("m")],
                       check=True, capture_output=True, text=True)
        try:
            st = os.stat(p("m", "keep"))
            with open(p("m", "keep"), "a") as f:
                f.write("x")
            return f"owner seen {st.st_uid}:{st.st_gid}"
        finally:
            umount(p("m"))
    report("write (copy-up) a root-owned repository file through a userns overlay", copy_up)

    def fsconfig():
        fsconfig_overlay([f"{repo}/a", f"{repo}/b"], p("m"))
        umount(p("m"))
    report("fsconfig lowerdir+ in the user namespace", fsconfig)

    def owner_seen():
        st = os.stat(f"{repo}/b/keep")
        return f"{repo}/b/keep (host 0:0) seen as {st.st_uid}:{st.st_gid}"
    report("owner of a host-root file inside the namespace", owner_seen)

    userns = f"/proc/{ns_holder}/ns/user"
    def idmap_dir():
        idmap_mount(f"{repo}", p("idm"), userns)
        umount(p("idm"))
    report("ID-mapped mount of the repository directory (ext4, host mount)", idmap_dir)

    def idmap_fuse():
        subprocess.run(["squashfuse", f"{repo}.sqfs", p("sq")], check=True, capture_output=True, text=True)
        try:
            idmap_mount(p("sq"), p("sqm"), userns)
            umount(p("sqm"))
        finally:
            subprocess.run(["fusermount3", "-u", p("sq")], stderr=subprocess.DEVNULL)
    report("ID-mapped mount of a squashfuse (FUSE) mount made in the namespace", idmap_fuse)

    def overlay_on_fuse():
        subprocess.run(["squashfuse", f"{repo}.sqfs", p("sq")], check=True, capture_output=True, text=True)
        try:
            mount_ux([f"{p('sq')}/a", f"{p('sq')}/b"])
            umount(p("m"))
        finally:
            subprocess.run(["fusermount3", "-u", p("sq")], stderr=subprocess.DEVNULL)
    report("userns overlay with lowers on a squashfuse mount", overlay_on_fuse)

    def idmap_overlay():
        mount_ux([f"{repo}/a", f"{repo}/b"])
        try:
            idmap_mount(p("m"), p("ovm"), userns)
            umount(p("ovm"))
        finally:
            umount(p("m"))
    report("ID-mapped mount of the userns overlay mount itself", idmap_overlay)

    def fuse_overlayfs():
        r = subprocess.run(["fuse-overlayfs", "-o", f"lowerdir={repo}/a:{repo}/b", p("m")],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr.strip())
        try:
            root = sorted(os.listdir(p("m")))
            d = sorted(os.listdir(p("m", "dir")))
        finally:
            subprocess.run(["fusermount3", "-u", p("m")], stderr=subprocess.DEVNULL)
        if any(n.startswith(".wh.") for n in root + d) or "gone" in root or d:
            raise RuntimeError(f"raw whiteouts not honoured: / {root} /dir {d}")
        return "/: " + " ".join(root) + "; raw .wh.gone and .wh..wh..opq honoured"
    report("fuse-overlayfs in the namespace, raw .wh.* lowers", fuse_overlayfs)

    def fuse_overlayfs_squash():
        r = subprocess.run(["fuse-overlayfs", "-o", f"squash_to_root,lowerdir={repo}/b", p("m")],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr.strip())
        try:
            st = os.stat(p("m", "keep"))
        finally:
            subprocess.run(["fusermount3", "-u", p("m")], stderr=subprocess.DEVNULL)
        return f"keep seen as {st.st_uid}:{st.st_gid}"
    report("fuse-overlayfs squash_to_root (owners of host-root files)", fuse_overlayfs_squash)


if __name__ == "__main__":
    if sys.argv[1:2] == ["idmap"] and len(sys.argv) == 5:
        idmap_mount(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
