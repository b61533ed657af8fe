//! Small filesystem helpers shared by the archive operations: xattrs on paths that
//! are never followed, whiteout detection, recursive removal and timestamps.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::fs::{Timespec, Timestamps, XattrFlags};

use super::ArchiveError;

/// `io::Error` from a rustix errno.
pub fn ioe(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// True for an overlayfs whiteout: a character device with device number 0/0.
pub fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Names of all xattrs of `path` (not following a final symlink). A filesystem
/// without xattr support has none.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    loop {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(ioe(e)),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(|n| n.to_vec())
                    .collect());
            }
            // the list grew between the two calls
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(ioe(e)),
        }
    }
}

/// Value of one xattr, `None` when it is not set (or xattrs are unsupported).
pub fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    loop {
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(ioe(e)),
        };
        if size == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(ioe(e)),
        }
    }
}

/// Set one xattr on `path` itself (a final symlink is not followed).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(path, OsStr::from_bytes(name), value, XattrFlags::empty()).map_err(ioe)
}

/// True when `path` is a directory marked opaque for overlayfs.
pub fn is_opaque_dir(path: &Path) -> Result<bool, ArchiveError> {
    // user.overlay.opaque in a user namespace.
    let v = get_xattr(path, crate::rootless::opaque_xattr().as_bytes())
        .map_err(|e| ArchiveError::io(path, e))?;
    Ok(v.as_deref() == Some(b"y"))
}

/// Remove `path` and, for a directory, everything below it, never following symlinks.
/// A missing path is not an error.
pub fn remove_all(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Open the directory `name` inside `dir` for walking by name: one component
/// (not empty, `.`, `..` or containing `/`), never following a symlink. Every
/// walk from a layer root by names that come from layer content goes through
/// here, so no name can climb out or be redirected.
pub fn open_child_dir(
    dir: &std::os::fd::OwnedFd,
    name: &[u8],
) -> Result<std::os::fd::OwnedFd, rustix::io::Errno> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(rustix::io::Errno::INVAL);
    }
    rustix::fs::openat(
        dir,
        OsStr::from_bytes(name),
        rustix::fs::OFlags::PATH
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

/// A timestamp from seconds and nanoseconds.
pub fn ts(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

/// Access and modification times of `md`, for copying them elsewhere.
pub fn timestamps_of(md: &Metadata) -> Timestamps {
    Timestamps {
        last_access: ts(md.atime(), md.atime_nsec()),
        last_modification: ts(md.mtime(), md.mtime_nsec()),
    }
}

/// Set atime/mtime on `path` without following a final symlink.
pub fn set_times(path: &Path, times: &Timestamps) -> io::Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(ioe)
}

/// `lchown(path, uid, gid)`.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    // -1 means "leave unchanged" to the kernel; it is never a real owner.
    if uid == u32::MAX || gid == u32::MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "owner ID 4294967295 is invalid",
        ));
    }
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(ioe)
}

/// `chmod(path, mode)` including setuid/setgid/sticky; never call it on a symlink.
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    rustix::fs::chmodat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(mode & 0o7777),
        rustix::fs::AtFlags::empty(),
    )
    .map_err(ioe)
}

/// Sorted names of the entries of a directory (byte order, as Go's walkers use).
pub fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        names.push(e?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}
