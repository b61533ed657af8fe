//! Crash-safe filesystem primitives of the publisher: everything is written under
//! a temporary name in the destination directory and renamed into place, so a
//! reader (or a crash) sees either the old state or the new one, never half of it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cvmfs_format::{paths, RepoPaths};

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

/// `Err` naming the place when a directory on the way from `root` down to
/// `path` is a symlink or not a directory: the publisher writes there, and a
/// symlink planted in the repository must not lead its writes elsewhere.
/// Components that do not exist yet are fine (they are created as directories).
pub fn check_real_dirs(root: &Path, path: &Path) -> Result<()> {
    let rel = path.strip_prefix(root).map_err(|_| {
        Error::msg(format!(
            "{} is not below {}",
            path.display(),
            root.display()
        ))
    })?;
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {}
            Ok(md) if md.file_type().is_symlink() => {
                return Err(Error::msg(format!(
                    "{}: a symlink where the publisher writes records (refused; remove it)",
                    cur.display()
                )))
            }
            Ok(_) => {
                return Err(Error::msg(format!(
                    "{}: not a directory where the publisher writes records (refused; remove it)",
                    cur.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&cur, e)),
        }
    }
    Ok(())
}

/// Every publisher temporary (`TMP_PREFIX*`) in the places the publisher writes
/// records: `.layers/XX/`, `.layers/XX/<d>/.metadata/`, `.flat/XX/`, `.metadata/**`,
/// the tag link directories and `podmanStore/**`. Never inside a `layerfs` or a
/// flat tree: image content may hold such names, and they are not ours.
pub fn find_tmp(repo: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    // levels below .layers: 1 = XX, 2 = <d>, 3 = .metadata (never layerfs)
    let layer_records = |p: &Path, level: usize| {
        level == 3 && p.file_name() != Some(std::ffi::OsStr::new(paths::METADATA_DIR))
    };
    let r = RepoPaths::new(repo);
    walk_tmp(&r.layers_dir(), 3, &layer_records, &mut found);
    found.extend(find_tmp_in(&r.flat_root(), 1));
    found.extend(find_tmp_in(&r.metadata_root(), 64));
    found.extend(find_tmp_in(&r.store().root, 4));
    // tag links live in the top-level directories named after registries
    if let Ok(rd) = fs::read_dir(repo) {
        for e in rd.flatten() {
            let name = e.file_name();
            let n = name.as_encoded_bytes();
            if n.starts_with(TMP_PREFIX.as_bytes()) {
                found.push(e.path());
            } else if !n.starts_with(b".")
                && n != paths::STORE_DIR_NAME.as_bytes()
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                found.extend(find_tmp_in(&e.path(), 64));
            }
        }
    }
    found
}

/// Every publisher temporary in `dir` and `depth` levels of real directories below.
pub fn find_tmp_in(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk_tmp(dir, depth, &|_, _| false, &mut found);
    found
}

/// Collect temporaries in `dir` and, `depth` levels down, in its real (not
/// symlinked) subdirectories for which `skip(subdir, level)` is false.
fn walk_tmp(
    dir: &Path,
    depth: usize,
    skip: &dyn Fn(&Path, usize) -> bool,
    found: &mut Vec<PathBuf>,
) {
    fn go(
        dir: &Path,
        level: usize,
        depth: usize,
        skip: &dyn Fn(&Path, usize) -> bool,
        found: &mut Vec<PathBuf>,
    ) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name()
                .as_encoded_bytes()
                .starts_with(TMP_PREFIX.as_bytes())
            {
                found.push(p);
            } else if level < depth
                && e.file_type().is_ok_and(|t| t.is_dir())
                && !skip(&p, level + 1)
            {
                go(&p, level + 1, depth, skip, found);
            }
        }
    }
    go(dir, 0, depth, skip, found)
}

/// The pid a temporary's name carries (`.cvmfs-podman-tmp.<pid>.<ns>.<name>`).
pub fn tmp_owner(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(TMP_PREFIX)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// True while process `pid` is a running publisher (the same program as this
/// one; a pid reused by another program does not keep a leftover alive).
pub fn publisher_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let comm = |p: &str| fs::read(format!("/proc/{p}/comm")).ok();
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// Remove the temporaries [`find_tmp`] finds whose publisher is gone (a
/// running one may still be writing them). Returns what was removed.
pub fn sweep_repo(repo: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for p in find_tmp(repo) {
        let alive = tmp_owner(&p).is_some_and(publisher_alive);
        if !alive && remove_all(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// Read a record file of the repository: a regular file, not followed when
/// it is a symlink, never blocking on a FIFO, at most `max` bytes.
pub fn read_record(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other("is a symlink (refused)"),
            _ => e,
        })?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(io::Error::other("not a regular file (refused)"));
    }
    if md.len() > max {
        return Err(io::Error::other(format!(
            "{} bytes, more than the {max} a record may have (refused)",
            md.len()
        )));
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::other(format!(
            "more than the {max} bytes a record may have (refused)"
        )));
    }
    Ok(buf)
}

/// An exclusive `flock` on a lock file, released on drop (also when the
/// process dies: a lock file left by a killed publisher holds nothing).
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Block until the exclusive lock on `path` (created if missing) is ours.
    pub fn exclusive(path: &Path) -> Result<Lock> {
        let file = open_lock_file(path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(path, io::Error::from_raw_os_error(e.raw_os_error())))?;
        Ok(Lock { _file: file })
    }

    /// The publisher lock: like [`Lock::exclusive`], but while another process
    /// holds it say so on stderr, naming that process (from `/proc/locks`:
    /// nothing is written into the lock file, so taking it changes nothing
    /// in the repository).
    pub fn publisher(path: &Path) -> Result<Lock> {
        use rustix::fs::FlockOperation;
        let file = open_lock_file(path)?;
        let lock_err =
            |e: rustix::io::Errno| Error::io(path, io::Error::from_raw_os_error(e.raw_os_error()));
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let holder = flock_holder(&file)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into());
                eprintln!(
                    "cvmfs-podman: waiting for the publisher lock {} held by pid {holder}",
                    path.display()
                );
                rustix::fs::flock(&file, FlockOperation::LockExclusive).map_err(lock_err)?;
            }
            Err(e) => return Err(lock_err(e)),
        }
        Ok(Lock { _file: file })
    }
}

/// The pid holding a `flock` on `file`, from `/proc/locks` (lines such as
/// `1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF`; waiters have `->`).
fn flock_holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let md = file.metadata().ok()?;
    let dev = rustix::fs::Dev::from(md.dev());
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        md.ino()
    );
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

fn open_lock_file(path: &Path) -> Result<File> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"").unwrap();
    }

    #[test]
    fn temporaries_are_found_in_record_places_only() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let tmp = |dir: &str| r.join(dir).join(format!("{TMP_PREFIX}1.2.x"));
        let records = [
            ".layers",
            ".layers/ab",
            ".layers/ab/abcd/.metadata",
            ".flat/ab",
            ".metadata/reg.io/a/b:1",
            "reg.io/a",
            "podmanStore/cvmfs/flat",
            "podmanStore/cvmfs/layers/abcd",
        ];
        let content = [
            ".layers/ab/abcd/layerfs",
            ".flat/ab/abcd",
            ".flat/ab/abcd/etc",
        ];
        for d in records.iter().chain(&content) {
            touch(&tmp(d));
        }
        let mut found = find_tmp(r);
        found.sort();
        let mut want: Vec<PathBuf> = records.iter().map(|d| tmp(d)).collect();
        want.sort();
        assert_eq!(found, want);
        assert_eq!(tmp_owner(&want[0]), Some(1));
    }

    #[test]
    fn symlinked_directories_on_the_way_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/tmp", r.join("a/link")).unwrap();
        assert!(check_real_dirs(r, &r.join("a/b/new/deeper")).is_ok());
        let e = check_real_dirs(r, &r.join("a/link/x")).unwrap_err();
        assert!(e.to_string().contains("a/link: a symlink"), "{e}");
    }

    #[test]
    fn records_are_not_read_through_symlinks_fifos_or_past_the_cap() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, b"12345").unwrap();
        assert_eq!(read_record(&f, 5).unwrap(), b"12345");
        assert!(read_record(&f, 4)
            .unwrap_err()
            .to_string()
            .contains("more than"));
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(read_record(&l, 5)
            .unwrap_err()
            .to_string()
            .contains("symlink"));
        let p = t.path().join("p");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(read_record(&p, 5)
            .unwrap_err()
            .to_string()
            .contains("regular"));
    }
}
