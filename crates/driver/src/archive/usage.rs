//! Disk usage of a tree, the semantics of containers/storage `pkg/directory.Usage`.
//!
//! The walk is descriptor-relative (`openat`/`fstatat` by single names, never
//! following symlinks), so names as deep as a layer may hold (PATH_MAX below the
//! layer root, more with the root's own path) are measured like any other.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::fsutil::ioe;
use super::{ArchiveError, DirUsage};

pub(crate) fn dir_usage(dir: &Path) -> Result<DirUsage, ArchiveError> {
    let mut seen = HashSet::new();
    let mut usage = DirUsage::default();
    // The root itself must exist; entries vanishing during the walk are skipped,
    // as Go does for a container that is still running.
    let st = rustix::fs::lstat(dir).map_err(|e| ArchiveError::io(dir, ioe(e)))?;
    seen.insert((st.st_dev, st.st_ino));
    if FileType::from_raw_mode(st.st_mode as _) != FileType::Directory {
        usage.size += st.st_size as u64;
    } else {
        let fd = open_dir(rustix::fs::CWD, dir.as_os_str())
            .map_err(|e| ArchiveError::io(dir, ioe(e)))?;
        visit(&fd, dir, &mut seen, &mut usage)?;
    }
    usage.inodes = seen.len() as u64;
    Ok(usage)
}

fn open_dir<Fd: rustix::fd::AsFd>(at: Fd, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Count everything below the open directory `fd` (`path` only for messages).
fn visit(
    fd: &OwnedFd,
    path: &Path,
    seen: &mut HashSet<(u64, u64)>,
    usage: &mut DirUsage,
) -> Result<(), ArchiveError> {
    let names: Vec<Vec<u8>> = {
        let dir = rustix::fs::Dir::read_from(fd).map_err(|e| ArchiveError::io(path, ioe(e)))?;
        let mut names = Vec::new();
        for ent in dir {
            let ent = ent.map_err(|e| ArchiveError::io(path, ioe(e)))?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        names
    };
    for name in names {
        let name = OsStr::from_bytes(&name);
        let child = || -> PathBuf { path.join(name) };
        let st = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(ArchiveError::io(child(), ioe(e))),
        };
        // Count each inode once: hardlinked files are stored once.
        if !seen.insert((st.st_dev, st.st_ino)) {
            continue;
        }
        if FileType::from_raw_mode(st.st_mode as _) != FileType::Directory {
            usage.size += st.st_size as u64;
            continue;
        }
        match open_dir(fd, name) {
            Ok(cfd) => visit(&cfd, &child(), seen, usage)?,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(ArchiveError::io(child(), ioe(e))),
        }
    }
    Ok(())
}
