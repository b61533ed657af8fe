//! Copying a layer tree with everything overlayfs and containers care about
//! (CreateFromTemplate; the overlay driver uses `copy.DirCopy` for it).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode};

use super::fsutil::{self, ioe};
use super::ArchiveError;

pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), ArchiveError> {
    let md = std::fs::symlink_metadata(src).map_err(|e| ArchiveError::io(src, e))?;
    if !md.is_dir() {
        return Err(ArchiveError::io(
            src,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
        ));
    }
    match std::fs::symlink_metadata(dst) {
        Ok(d) if d.is_dir() => {}
        Ok(_) => {
            return Err(ArchiveError::io(
                dst,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ),
            ))
        }
        Err(_) => std::fs::create_dir(dst).map_err(|e| ArchiveError::io(dst, e))?,
    }
    let mut c = Copier {
        links: HashMap::new(),
        dirs: Vec::new(),
    };
    c.copy_dir_contents(src, dst)?;
    copy_metadata(src, dst, &md, &[])?;
    c.dirs.push((dst.to_path_buf(), md));
    // Directory times last: creating their entries changed them.
    for (path, md) in c.dirs.iter().rev() {
        fsutil::set_times(path, &fsutil::timestamps_of(md))
            .map_err(|e| ArchiveError::io(path, e))?;
    }
    Ok(())
}

struct Copier {
    /// (dev, ino) of a multiply-linked source inode -> its first copy.
    links: HashMap<(u64, u64), PathBuf>,
    dirs: Vec<(PathBuf, Metadata)>,
}

impl Copier {
    fn copy_dir_contents(&mut self, src: &Path, dst: &Path) -> Result<(), ArchiveError> {
        for name in fsutil::sorted_names(src).map_err(|e| ArchiveError::io(src, e))? {
            let s = src.join(&name);
            let d = dst.join(&name);
            let md = std::fs::symlink_metadata(&s).map_err(|e| ArchiveError::io(&s, e))?;
            self.copy_entry(&s, &d, md)?;
        }
        Ok(())
    }

    fn copy_entry(&mut self, s: &Path, d: &Path, md: Metadata) -> Result<(), ArchiveError> {
        let ft = md.file_type();
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                std::fs::hard_link(first, d).map_err(|e| ArchiveError::io(d, e))?;
                return Ok(());
            }
            self.links.insert((md.dev(), md.ino()), d.to_path_buf());
        }
        if ft.is_dir() {
            std::fs::create_dir(d).map_err(|e| ArchiveError::io(d, e))?;
            self.copy_dir_contents(s, d)?;
            copy_metadata(s, d, &md, &[])?;
            self.dirs.push((d.to_path_buf(), md));
            return Ok(());
        }
        copy_node(s, d, &md, &[])
    }
}

/// Create `d` as a copy of the non-directory `s` (content, link target or device
/// node), then give it `s`'s owner, mode, xattrs (less `skip_xattrs`) and times.
/// Hardlink bookkeeping is the caller's: this always makes a new inode.
pub fn copy_node(
    s: &Path,
    d: &Path,
    md: &Metadata,
    skip_xattrs: &[&[u8]],
) -> Result<(), ArchiveError> {
    let ft = md.file_type();
    let perm = Mode::from_raw_mode(md.mode() & 0o7777);
    let mk = |ft: FileType| {
        rustix::fs::mknodat(rustix::fs::CWD, d, ft, perm, md.rdev() as _)
            .map_err(|e| ArchiveError::io(d, ioe(e)))
    };
    if ft.is_file() {
        let mut from = std::fs::File::open(s).map_err(|e| ArchiveError::io(s, e))?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(d)
            .map_err(|e| ArchiveError::io(d, e))?;
        // std uses copy_file_range/sendfile here, so reflinks and sparse files stay cheap.
        std::io::copy(&mut from, &mut to).map_err(|e| ArchiveError::io(d, e))?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(s).map_err(|e| ArchiveError::io(s, e))?;
        std::os::unix::fs::symlink(&target, d).map_err(|e| ArchiveError::io(d, e))?;
    } else if ft.is_char_device() {
        mk(FileType::CharacterDevice)?;
    } else if ft.is_block_device() {
        mk(FileType::BlockDevice)?;
    } else if ft.is_fifo() {
        mk(FileType::Fifo)?;
    } else if ft.is_socket() {
        mk(FileType::Socket)?;
    }
    copy_metadata(s, d, md, skip_xattrs)?;
    fsutil::set_times(d, &fsutil::timestamps_of(md)).map_err(|e| ArchiveError::io(d, e))
}

/// Owner, mode (after chown, which clears setuid bits) and every xattr of `s` onto
/// `d`, except the SELinux label (the destination's business) and `skip_xattrs`.
pub fn copy_metadata(
    s: &Path,
    d: &Path,
    md: &Metadata,
    skip_xattrs: &[&[u8]],
) -> Result<(), ArchiveError> {
    fsutil::lchown(d, md.uid(), md.gid()).map_err(|e| ArchiveError::io(d, e))?;
    if !md.file_type().is_symlink() {
        fsutil::chmod(d, md.mode()).map_err(|e| ArchiveError::io(d, e))?;
    }
    for name in fsutil::list_xattrs(s).map_err(|e| ArchiveError::io(s, e))? {
        if name == b"security.selinux" || skip_xattrs.contains(&name.as_slice()) {
            continue;
        }
        let Some(value) = fsutil::get_xattr(s, &name).map_err(|e| ArchiveError::io(s, e))? else {
            continue;
        };
        match fsutil::set_xattr(d, &name, &value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => {
                return Err(ArchiveError::io(
                    d,
                    std::io::Error::new(
                        e.kind(),
                        format!("setting xattr {}: {e}", String::from_utf8_lossy(&name)),
                    ),
                ))
            }
        }
    }
    Ok(())
}
