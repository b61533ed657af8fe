//! Honouring raw OCI whiteouts (`.wh.<name>`, `.wh..wh..opq` kept as plain files,
//! as DUCC leaves them in `layerfs`) with kernel overlayfs, without touching or
//! copying the layer.
//!
//! Overlayfs understands only its own whiteouts: a 0/0 character device hides a
//! name from the layers *below* the layer holding it, and a directory with
//! `trusted.overlay.opaque=y` hides everything below it. So between two stacked
//! CVMFS layers `U` (upper) and `D` (its parent) we place one small generated
//! *auxiliary* lower directory holding:
//!
//! * for every `.wh.<x>` in `U`: a whiteout device at `x`, and for every
//!   `.wh..wh..opq` in `U` the opaque xattr on its directory — they act on `D`
//!   and below, never on `U` itself, so a name deleted and re-created in `U`
//!   keeps `U`'s new entry;
//! * for every marker file in `D`: a whiteout device with the marker's own
//!   name, hiding the marker (placed directly above `D`, so nothing else is
//!   hidden: no real file can be called `.wh.*` in an OCI layer).
//!
//! Above the topmost raw layer of a stack, an auxiliary directory with only the
//! second part hides that layer's markers. A stack of `n` raw layers therefore
//! takes at most `2n + 1` lowers (layers without markers need none).
//!
//! A directory in an auxiliary layer is seen by overlay as a merged directory
//! whose attributes come from the topmost layer that has it. The directories
//! made for the marker-hiding part may be topmost (when `U` lacks them), so they
//! copy `D`'s mode, owner, times and xattrs; the ones made for `U`'s deletions
//! always lie under `U`'s own copy of that directory.
//!
//! Each auxiliary directory is built once, in the driver's staging area, and
//! renamed into `<home>/aux/<key>` (atomic; a crashed build leaves only a staging
//! entry, which `Store::recover` removes). The key names the layers it is built
//! from, and layer IDs name fixed content, so a built directory never goes stale.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{mknodat, FileType, Mode, CWD};

use crate::archive::fsutil;
use crate::archive::{OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// Version of the auxiliary directory format; part of every key so a driver
/// with a different format never reuses an old build.
pub const AUX_VERSION: u32 = 1;

/// One marker file found in a raw layer: its directory (relative) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub dir: PathBuf,
    pub name: OsString,
}

impl Marker {
    pub fn is_opaque(&self) -> bool {
        self.name.as_bytes() == WHITEOUT_OPAQUE.as_bytes()
    }
    /// The name a `.wh.<x>` marker deletes (`None` for the opaque marker).
    pub fn deleted(&self) -> Option<&OsStr> {
        if self.is_opaque() {
            return None;
        }
        let b = self.name.as_bytes();
        let x = &b[WHITEOUT_PREFIX.len()..];
        if x.is_empty() || x == b"." || x == b".." || x.contains(&b'/') {
            return None;
        }
        Some(OsStr::from_bytes(x))
    }
}

/// Every `.wh.*` file under `root`, in a deterministic order. Symlinks are never
/// followed; only directory entries are read (no per-file stat), which on CVMFS
/// costs catalog lookups only.
pub fn scan_markers(root: &Path) -> io::Result<Vec<Marker>> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<(OsString, fs::FileType)> = fs::read_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
            .map(|e| e.and_then(|e| Ok((e.file_name(), e.file_type()?))))
            .collect::<io::Result<_>>()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in entries {
            if ft.is_dir() {
                todo.push(rel.join(&name));
            } else if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
                out.push(Marker {
                    dir: rel.clone(),
                    name,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.dir, &a.name).cmp(&(&b.dir, &b.name)));
    Ok(out)
}

fn ctx(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

/// Give `dst` the mode, owner, times and xattrs (but overlay's own) of `src`.
fn copy_dir_attrs(src: &Path, dst: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(src).map_err(|e| ctx(e, "stat", src))?;
    fsutil::lchown(dst, md.uid(), md.gid()).map_err(|e| ctx(e, "chown", dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| ctx(e, "chmod", dst))?;
    for name in fsutil::list_xattrs(src).map_err(|e| ctx(e, "list xattrs of", src))? {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        if let Some(v) = fsutil::get_xattr(src, &name).map_err(|e| ctx(e, "read xattr of", src))? {
            fsutil::set_xattr(dst, &name, &v).map_err(|e| ctx(e, "set xattr on", dst))?;
        }
    }
    Ok(())
}

enum Step {
    Made,
    /// An ancestor is a whiteout: everything below is deleted already.
    Covered,
}

/// Make directory `rel` (and its parents) in `aux`, each new one with the
/// attributes of the same directory in `like` (when it has it).
fn ensure_dir(aux: &Path, rel: &Path, like: &Path) -> io::Result<Step> {
    let mut cur = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        let p = aux.join(&cur);
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => return Ok(Step::Covered),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx(e, "stat", &p)),
        }
        fs::create_dir(&p).map_err(|e| ctx(e, "create", &p))?;
        let src = like.join(&cur);
        match fs::symlink_metadata(&src) {
            Ok(md) if md.is_dir() => copy_dir_attrs(&src, &p)?,
            _ => {}
        }
    }
    Ok(Step::Made)
}

fn whiteout(p: &Path) -> io::Result<()> {
    fsutil::remove_all(p).map_err(|e| ctx(e, "remove", p))?;
    mknodat(CWD, p, FileType::CharacterDevice, Mode::empty(), 0)
        .map_err(|e| ctx(fsutil::ioe(e), "create whiteout", p))
}

/// Build, in the empty directory `aux`, the auxiliary layer that goes between
/// raw layer `upper` (its markers act below it) and raw layer `lower` (whose
/// markers it hides). Either may be absent.
pub fn build_aux(
    aux: &Path,
    upper: Option<(&Path, &[Marker])>,
    lower: Option<(&Path, &[Marker])>,
) -> io::Result<()> {
    // The root may be the topmost copy of "/" (above the top layer): it looks
    // like the layer right below it.
    if let Some((l, _)) = lower {
        copy_dir_attrs(l, aux)?;
    } else if let Some((u, _)) = upper {
        copy_dir_attrs(u, aux)?;
    }
    // Hide the lower layer's marker files themselves.
    if let Some((l, markers)) = lower {
        for m in markers {
            if let Step::Made = ensure_dir(aux, &m.dir, l)? {
                whiteout(&aux.join(&m.dir).join(&m.name))?;
            }
        }
    }
    // Apply the upper layer's deletions to everything below it. A deletion of
    // a directory replaces whatever was made inside it above (it hides it all).
    if let Some((u, markers)) = upper {
        for m in markers {
            let like = match lower {
                Some((l, _)) => l,
                None => u,
            };
            if let Step::Covered = ensure_dir(aux, &m.dir, like)? {
                continue;
            }
            let dir = aux.join(&m.dir);
            if m.is_opaque() {
                fsutil::set_xattr(&dir, OVERLAY_OPAQUE_XATTR.as_bytes(), b"y")
                    .map_err(|e| ctx(e, "mark opaque", &dir))?;
            } else if let Some(x) = m.deleted() {
                whiteout(&dir.join(x))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_at_every_depth_and_symlinks_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("a/b/c")).unwrap();
        fs::write(r.join(".wh.top"), b"").unwrap();
        fs::write(r.join("a/b/c/.wh..wh..opq"), b"").unwrap();
        fs::write(r.join("a/.wh.x"), b"").unwrap();
        fs::write(r.join("a/plain"), b"").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("a/link")).unwrap();
        let m = scan_markers(r).unwrap();
        let got: Vec<String> = m
            .iter()
            .map(|m| m.dir.join(&m.name).display().to_string())
            .collect();
        assert_eq!(got, vec![".wh.top", "a/.wh.x", "a/b/c/.wh..wh..opq"]);
        assert!(m[2].is_opaque());
        assert_eq!(m[1].deleted(), Some(OsStr::new("x")));
    }

    #[test]
    fn odd_marker_names_delete_nothing() {
        for n in [".wh.", ".wh..", ".wh..."] {
            let m = Marker {
                dir: PathBuf::new(),
                name: n.into(),
            };
            assert_eq!(m.deleted(), None, "{n}");
        }
    }
}
