//! Re-owning a layer tree for a new ID mapping (UpdateLayerIDMap), the semantics of
//! containers/storage `ChownPathByMaps`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fsutil;
use super::{ArchiveError, IdMappings};

/// The kernel's overflow IDs, used for IDs the target mapping cannot express (Go's
/// `ToHostOverflow`).
fn overflow_id(file: &str) -> u32 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

pub(crate) fn remap_ownership(
    dir: &Path,
    to_container: Option<&IdMappings>,
    to_host: Option<&IdMappings>,
) -> Result<(), ArchiveError> {
    let to_container = to_container.filter(|m| !m.is_identity());
    let to_host = to_host.filter(|m| !m.is_identity());
    if to_container.is_none() && to_host.is_none() {
        return Ok(());
    }
    let mut r = Remapper {
        to_container,
        to_host,
        seen: HashMap::new(),
        overflow: (
            overflow_id("/proc/sys/kernel/overflowuid"),
            overflow_id("/proc/sys/kernel/overflowgid"),
        ),
    };
    // Like Go, the root directory itself is left alone: its owner belongs to the
    // driver, not to the image.
    r.walk_children(dir)
}

struct Remapper<'a> {
    to_container: Option<&'a IdMappings>,
    to_host: Option<&'a IdMappings>,
    /// Inodes already re-owned -> the first name seen for each.
    seen: HashMap<(u64, u64), PathBuf>,
    overflow: (u32, u32),
}

impl Remapper<'_> {
    fn walk_children(&mut self, dir: &Path) -> Result<(), ArchiveError> {
        let names = fsutil::sorted_names(dir).map_err(|e| ArchiveError::io(dir, e))?;
        for name in names {
            let path = dir.join(&name);
            let md = std::fs::symlink_metadata(&path).map_err(|e| ArchiveError::io(&path, e))?;
            self.remap_one(&path, &md)?;
            if md.is_dir() {
                self.walk_children(&path)?;
            }
        }
        Ok(())
    }

    fn remap_one(&mut self, path: &Path, md: &std::fs::Metadata) -> Result<(), ArchiveError> {
        // A hardlinked inode is re-owned once, not once per name. Through an overlay
        // mount, re-owning the first name copied the file up and (with index=off)
        // split it from its other names, which still show the lower inode: point
        // them at the re-owned copy, as Go's chowner does, to keep them linked.
        if let Some(first) = self.seen.get(&(md.dev(), md.ino())) {
            if md.nlink() > 1 && !md.is_dir() {
                let same = std::fs::symlink_metadata(first)
                    .map(|f| f.dev() == md.dev() && f.ino() == md.ino())
                    .unwrap_or(false);
                if !same {
                    std::fs::remove_file(path).map_err(|e| ArchiveError::io(path, e))?;
                    std::fs::hard_link(first, path).map_err(|e| ArchiveError::io(path, e))?;
                }
            }
            return Ok(());
        }
        self.seen.insert((md.dev(), md.ino()), path.to_path_buf());
        let (mut uid, mut gid) = (md.uid(), md.gid());
        if let Some(m) = self.to_container {
            match m.to_container(uid, gid) {
                Ok(p) => (uid, gid) = p,
                // 0:0 stays 0:0 when unmapped: Go tolerates parent layers that should
                // have had a mapped root but did not.
                Err(_) if uid == 0 && gid == 0 => {}
                Err(source) => {
                    return Err(ArchiveError::IdMapping {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        }
        if let Some(m) = self.to_host {
            let root = m.root_pair();
            let u = if uid == root.0 {
                root.0
            } else {
                m.to_host(uid, 0).map(|p| p.0).unwrap_or(self.overflow.0)
            };
            let g = if gid == root.1 {
                root.1
            } else {
                m.to_host(0, gid).map(|p| p.1).unwrap_or(self.overflow.1)
            };
            (uid, gid) = (u, g);
        }
        if uid == md.uid() && gid == md.gid() {
            return Ok(());
        }
        // chown drops file capabilities and setuid/setgid bits: save and restore them.
        let cap = fsutil::get_xattr(path, b"security.capability")
            .map_err(|e| ArchiveError::io(path, e))?;
        fsutil::lchown(path, uid, gid).map_err(|e| ArchiveError::io(path, e))?;
        if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
            fsutil::chmod(path, md.mode()).map_err(|e| ArchiveError::io(path, e))?;
        }
        if let Some(cap) = cap {
            fsutil::set_xattr(path, b"security.capability", &cap)
                .map_err(|e| ArchiveError::io(path, e))?;
        }
        Ok(())
    }
}
