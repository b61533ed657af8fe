//! The kernel side of [`Syscalls`](super::Syscalls), via rustix, so this module needs no raw pointers.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount, unmount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use super::{MountAttrs, Syscalls};

/// Real system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSyscalls;

fn attr_flags(a: MountAttrs) -> MountAttrFlags {
    let mut f = MountAttrFlags::empty();
    if a.read_only {
        f |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    if a.nodev {
        f |= MountAttrFlags::MOUNT_ATTR_NODEV;
    }
    if a.nosuid {
        f |= MountAttrFlags::MOUNT_ATTR_NOSUID;
    }
    if a.noexec {
        f |= MountAttrFlags::MOUNT_ATTR_NOEXEC;
    }
    // The atime settings are one field, not independent bits.
    if a.noatime {
        f |= MountAttrFlags::MOUNT_ATTR_NOATIME;
    } else if a.strictatime {
        f |= MountAttrFlags::MOUNT_ATTR_STRICTATIME;
    } else if a.relatime {
        f |= MountAttrFlags::MOUNT_ATTR_RELATIME;
    }
    if a.nodiratime {
        f |= MountAttrFlags::MOUNT_ATTR_NODIRATIME;
    }
    f
}

fn mount_flags(a: MountAttrs) -> MountFlags {
    let mut f = MountFlags::empty();
    for (set, flag) in [
        (a.read_only, MountFlags::RDONLY),
        (a.nodev, MountFlags::NODEV),
        (a.nosuid, MountFlags::NOSUID),
        (a.noexec, MountFlags::NOEXEC),
        (a.noatime, MountFlags::NOATIME),
        (a.nodiratime, MountFlags::NODIRATIME),
        (a.relatime, MountFlags::RELATIME),
        (a.strictatime, MountFlags::STRICTATIME),
    ] {
        if set {
            f |= flag;
        }
    }
    f
}

impl Syscalls for RealSyscalls {
    type Context = OwnedFd;

    fn fsopen(&self, fstype: &str) -> io::Result<OwnedFd> {
        Ok(fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?)
    }

    fn fsconfig_flag(&self, ctx: &OwnedFd, key: &str) -> io::Result<()> {
        Ok(fsconfig_set_flag(ctx, key)?)
    }

    fn fsconfig_string(&self, ctx: &OwnedFd, key: &str, value: &str) -> io::Result<()> {
        Ok(fsconfig_set_string(ctx, key, value)?)
    }

    fn fsconfig_create(&self, ctx: &OwnedFd) -> io::Result<()> {
        Ok(fsconfig_create(ctx)?)
    }

    fn context_log(&self, ctx: &OwnedFd) -> Vec<String> {
        // The kernel queues "e overlay: ..." lines on the context; reading them
        // turns a bare EINVAL into a message naming the offending directory.
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        for _ in 0..16 {
            match rustix::io::read(ctx, &mut buf) {
                Ok(n) if n > 0 => {
                    let line = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                    out.push(line.strip_prefix("e ").unwrap_or(&line).to_string());
                }
                _ => break,
            }
        }
        out
    }

    fn fsmount_move(&self, ctx: &OwnedFd, attrs: MountAttrs, target: &Path) -> io::Result<()> {
        let mnt = fsmount(ctx, FsMountFlags::FSMOUNT_CLOEXEC, attr_flags(attrs))?;
        move_mount(
            &mnt,
            "",
            CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )?;
        Ok(())
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        attrs: MountAttrs,
        data: &str,
    ) -> io::Result<()> {
        let data =
            std::ffi::CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(rustix::mount::mount(
            source,
            target,
            fstype,
            mount_flags(attrs),
            data.as_c_str(),
        )?)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        // Lazy, as the overlay driver does: a process still inside the mount
        // (a shell in a container being removed) must not make Put fail.
        Ok(unmount(target, UnmountFlags::DETACH)?)
    }

    fn make_links(&self, dir: &Path, links: &[(String, PathBuf)]) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        for (name, target) in links {
            std::os::unix::fs::symlink(target, dir.join(name))?;
        }
        Ok(())
    }

    fn remove_links(&self, dir: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn in_dir<R: Send>(&self, dir: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        // A thread of its own, detached from the process's working
        // directory: the caller (podman) has many threads and relies on its
        // own working directory.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    crate::ffi::unshare_thread_fs()?;
                    rustix::process::chdir(dir)?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("mount thread panicked")))
        })
    }

    fn is_mounted(&self, target: &Path) -> io::Result<bool> {
        match statx(
            CWD,
            target,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        ) {
            Ok(st) => {
                if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
                    return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
                }
                // Old kernel without STATX_ATTR_MOUNT_ROOT: ask mountinfo.
                let target = std::fs::canonicalize(target)?;
                Ok(mount_points_under(&target)?.iter().any(|m| m == &target))
            }
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Undo mountinfo's octal escapes (`\040` for space, ...).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text: mount points equal to or below `prefix`, deepest first
/// (the order to unmount them in).
pub fn parse_mount_points_under(mountinfo: &str, prefix: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape(f)))
        .filter(|p| p.starts_with(prefix))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Mount points at or below `prefix` in this process's mount namespace, deepest first.
pub fn mount_points_under(prefix: &Path) -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mount_points_under(&text, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing_unescapes_and_orders_deepest_first() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /var/lib/c/cvmfs/layers/a\\040b/merged rw - overlay overlay rw,lowerdir+=x
91 22 0:51 / /var/lib/c/cvmfs rw - tmpfs tmpfs rw
92 22 0:52 / /var/lib/c/cvmfs2/x rw - tmpfs tmpfs rw
";
        let v = parse_mount_points_under(text, Path::new("/var/lib/c/cvmfs"));
        assert_eq!(
            v,
            vec![
                PathBuf::from("/var/lib/c/cvmfs/layers/a b/merged"),
                PathBuf::from("/var/lib/c/cvmfs")
            ]
        );
    }

    #[test]
    fn is_mounted_sees_the_root_and_not_a_plain_dir() {
        assert!(RealSyscalls.is_mounted(Path::new("/proc")).unwrap());
        let t = tempfile::tempdir().unwrap();
        assert!(!RealSyscalls.is_mounted(t.path()).unwrap());
        assert!(!RealSyscalls.is_mounted(&t.path().join("missing")).unwrap());
    }
}
