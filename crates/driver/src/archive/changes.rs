//! Change lists of a layer against its parent chain, the semantics of
//! containers/storage `OverlayChanges` (used by the overlay driver's Changes).

use std::collections::HashSet;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fsutil;
use super::{ArchiveError, Change, ChangeKind};

pub(crate) fn overlay_changes(
    diff_dir: &Path,
    lower_dirs: &[PathBuf],
) -> Result<Vec<Change>, ArchiveError> {
    let mut w = Walker {
        rw: diff_dir,
        lowers: lower_dirs,
        changes: Vec::new(),
        changed_dirs: HashSet::new(),
    };
    std::fs::symlink_metadata(diff_dir).map_err(|e| ArchiveError::io(diff_dir, e))?;
    w.walk_dir("")?;
    Ok(w.changes)
}

struct Walker<'a> {
    rw: &'a Path,
    lowers: &'a [PathBuf],
    changes: Vec<Change>,
    changed_dirs: HashSet<String>,
}

/// `lstat` that reports a missing path (or a non-directory in the way) as `None`.
fn lstat_opt(p: &Path) -> Result<Option<Metadata>, ArchiveError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(ArchiveError::io(p, e)),
    }
}

/// `path` joined under `root`; `path` is absolute-style ("/a/b").
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Parents of "/a/b/c", nearest first: "/a/b", "/a".
fn parents(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = path;
    std::iter::from_fn(move || {
        let i = cur.rfind('/')?;
        if i == 0 {
            return None;
        }
        cur = &cur[..i];
        Some(cur)
    })
}

fn lower_is_whiteout(layer: &Path, path: &str) -> Result<bool, ArchiveError> {
    Ok(lstat_opt(&under(layer, path))?.is_some_and(|m| fsutil::is_whiteout(&m)))
}

/// Same mtime, allowing for tar's whole-second precision on either side.
fn same_fs_time(a: &Metadata, b: &Metadata) -> bool {
    a.mtime() == b.mtime()
        && (a.mtime_nsec() == b.mtime_nsec() || a.mtime_nsec() == 0 || b.mtime_nsec() == 0)
}

impl Walker<'_> {
    fn walk_dir(&mut self, rel: &str) -> Result<(), ArchiveError> {
        let dir = under(self.rw, rel);
        let names = match fsutil::sorted_names(&dir) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ArchiveError::io(&dir, e)),
        };
        for name in names {
            let path = format!("{rel}/{}", name.to_string_lossy());
            let full = dir.join(&name);
            let Some(md) = lstat_opt(&full)? else {
                continue;
            };
            self.visit(&path, &full, &md)?;
            if md.is_dir() {
                self.walk_dir(&path)?;
            }
        }
        Ok(())
    }

    fn visit(&mut self, path: &str, full: &Path, md: &Metadata) -> Result<(), ArchiveError> {
        let kind = if self.deleted_here(path, full, md)? {
            ChangeKind::Delete
        } else {
            match self.existed_below(path, md)? {
                Existed::No => ChangeKind::Add,
                Existed::Yes => ChangeKind::Modify,
                // A directory identical to the one below is only a parent of changes;
                // it is recorded if something inside it changes.
                Existed::SameDir => return Ok(()),
            }
        };
        if md.is_dir() {
            self.changed_dirs.insert(path.to_string());
        }
        if kind != ChangeKind::Modify {
            // Record unrecorded parents (outermost first) so that a consumer can
            // restore their metadata.
            let missing: Vec<String> = parents(path)
                .filter(|p| !self.changed_dirs.contains(*p))
                .map(str::to_string)
                .collect();
            for p in missing.into_iter().rev() {
                self.changed_dirs.insert(p.clone());
                self.changes.push(Change {
                    path: p,
                    kind: ChangeKind::Modify,
                });
            }
        }
        self.changes.push(Change {
            path: path.to_string(),
            kind,
        });
        Ok(())
    }

    /// A whiteout deletes its name; an opaque directory that replaces one visible
    /// below deletes it (and is then re-created with this layer's content).
    fn deleted_here(&self, path: &str, full: &Path, md: &Metadata) -> Result<bool, ArchiveError> {
        if fsutil::is_whiteout(md) {
            return Ok(true);
        }
        if !md.is_dir() || !fsutil::is_opaque_dir(full)? {
            return Ok(false);
        }
        for layer in self.lowers {
            if let Some(lm) = lstat_opt(&under(layer, path))? {
                return Ok(!fsutil::is_whiteout(&lm));
            }
            for p in parents(path) {
                if lower_is_whiteout(layer, p)? {
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }

    fn existed_below(&self, path: &str, md: &Metadata) -> Result<Existed, ArchiveError> {
        for layer in self.lowers {
            // A whiteout below for the path or a parent: what was there is gone, so
            // this is new.
            if lower_is_whiteout(layer, path)? {
                return Ok(Existed::No);
            }
            for p in parents(path) {
                if lower_is_whiteout(layer, p)? {
                    return Ok(Existed::No);
                }
            }
            if let Some(lm) = lstat_opt(&under(layer, path))? {
                if lm.is_dir()
                    && md.is_dir()
                    && lm.len() == md.len()
                    && lm.mode() == md.mode()
                    && same_fs_time(md, &lm)
                {
                    return Ok(Existed::SameDir);
                }
                return Ok(Existed::Yes);
            }
        }
        Ok(Existed::No)
    }
}

enum Existed {
    No,
    Yes,
    SameDir,
}

#[cfg(test)]
mod tests {
    use super::parents;

    #[test]
    fn parents_nearest_first() {
        assert_eq!(parents("/a/b/c").collect::<Vec<_>>(), vec!["/a/b", "/a"]);
        assert_eq!(parents("/a").count(), 0);
    }
}
