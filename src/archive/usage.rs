//! Disk usage of a tree, the semantics of containers/storage `pkg/directory.Usage`.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{ArchiveError, DirUsage};

pub(crate) fn dir_usage(dir: &Path) -> Result<DirUsage, ArchiveError> {
    let mut seen = HashSet::new();
    let mut usage = DirUsage::default();
    // The root itself must exist; entries vanishing during the walk are skipped,
    // as Go does for a container that is still running.
    let md = std::fs::symlink_metadata(dir).map_err(|e| ArchiveError::io(dir, e))?;
    visit(dir, &md, &mut seen, &mut usage)?;
    usage.inodes = seen.len() as u64;
    Ok(usage)
}

fn visit(
    path: &Path,
    md: &std::fs::Metadata,
    seen: &mut HashSet<(u64, u64)>,
    usage: &mut DirUsage,
) -> Result<(), ArchiveError> {
    // Count each inode once: hardlinked files are stored once.
    if !seen.insert((md.dev(), md.ino())) {
        return Ok(());
    }
    if !md.is_dir() {
        usage.size += md.len();
        return Ok(());
    }
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ArchiveError::io(path, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| ArchiveError::io(path, e))?;
        let child = ent.path();
        let cmd = match std::fs::symlink_metadata(&child) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ArchiveError::io(&child, e)),
        };
        visit(&child, &cmd, seen, usage)?;
    }
    Ok(())
}
