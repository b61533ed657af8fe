//! Crash-safe filesystem primitives of the publisher: everything is written under
//! a temporary name in the destination directory and renamed into place, so a
//! reader (or a crash) sees either the old state or the new one, never half of it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Error, Result};

/// Prefix of every temporary name the publisher creates. `check` reports such
/// leftovers and the next `publish` removes them.
pub const TMP_PREFIX: &str = ".cvmfs-podman-tmp.";

/// A fresh temporary path beside `dest` (same directory, so rename is atomic).
pub fn tmp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = format!(
        "{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    dest.with_file_name(format!("{TMP_PREFIX}{nonce}.{name}"))
}

/// fsync a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `data` to `dest` atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = tmp_path(dest);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dest)?;
        sync_dir(parent)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(dest, e));
    }
    Ok(())
}

/// Rename a finished temporary directory into place. If `dest` already exists
/// (a parallel publisher won the race) the temporary one is removed and `false`
/// is returned.
pub fn rename_dir_into_place(tmp: &Path, dest: &Path) -> Result<bool> {
    if let Some(p) = dest.parent() {
        fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
    }
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        tmp,
        rustix::fs::CWD,
        dest,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => {
            if let Some(p) = dest.parent() {
                let _ = sync_dir(p);
            }
            Ok(true)
        }
        Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => {
            remove_all(tmp)?;
            Ok(false)
        }
        Err(e) => Err(Error::io(
            dest,
            io::Error::from_raw_os_error(e.raw_os_error()),
        )),
    }
}

/// Remove a file or a tree; missing is fine. Never follows symlinks.
pub fn remove_all(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(md) if md.is_dir() => {
            // make sure we may descend (layers may hold 0000 directories)
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            fs::remove_dir_all(path).map_err(|e| Error::io(path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io(path, e)),
    }
}

/// Remove temporary leftovers (`TMP_PREFIX*`) of crashed runs in `dir`.
/// Only those older than `min_age` (a parallel publisher may still be writing).
pub fn sweep_tmp(dir: &Path, min_age: std::time::Duration) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if old && remove_all(&e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// An exclusive `flock` on a lock file, released on drop.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Block until the exclusive lock on `path` (created if missing) is ours.
    pub fn exclusive(path: &Path) -> Result<Lock> {
        if let Some(p) = path.parent() {
            fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(path, io::Error::from_raw_os_error(e.raw_os_error())))?;
        Ok(Lock { _file: file })
    }
}
