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
//! second part hides that layer's markers. It also hides the CVMFS catalog
//! markers ([`CATALOG_MARKERS`]) that DUCC and our publisher put at the root of
//! every `layerfs` to make it a nested catalog: they are repository artefacts,
//! not image files, and one whiteout there hides them in every layer below, so
//! they cost no whiteout layer between layers. Only the root is treated so
//! (where the publishers put them): an image file literally named
//! `/.cvmfscatalog` or `/.cvmfsautocatalog` in a raw CVMFS layer is hidden too
//! (it cannot be told apart); deeper ones are left alone. A stack of `n` raw layers therefore
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
pub const AUX_VERSION: u32 = 2;

/// Files CVMFS reads as "a nested catalog starts here" (`cvmfs_server`'s
/// explicit and automatic ones).
pub const CATALOG_MARKERS: [&str; 2] = [".cvmfscatalog", ".cvmfsautocatalog"];

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

/// Most markers one layer record may list (far above any real layer: a layer
/// deleting a whole distribution has tens of thousands).
pub const MAX_LISTED_MARKERS: usize = 4_000_000;

/// Parse and validate the `markers` list of a layer record (hostile input):
/// each entry a relative path made of plain names (no `.`, `..` or empty
/// component, no NUL) whose last name starts with `.wh.`, listed once.
/// Returns them in [`scan_markers`]'s order.
pub fn parse_marker_list(list: &[String]) -> Result<Vec<Marker>, String> {
    if list.len() > MAX_LISTED_MARKERS {
        return Err(format!(
            "{} entries, more than {MAX_LISTED_MARKERS}",
            list.len()
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let bad = |why: &str| format!("entry {i} ({p:?}): {why}");
        if p.is_empty() || p.starts_with('/') || p.contains('\0') {
            return Err(bad("not a relative path"));
        }
        let parts: Vec<&str> = p.split('/').collect();
        if parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
        {
            return Err(bad("path component is empty, \".\" or \"..\""));
        }
        let (name, dirs) = parts.split_last().expect("split gives one part");
        if !name.starts_with(WHITEOUT_PREFIX) {
            return Err(bad("the last name does not start with \".wh.\""));
        }
        if let Some(d) = dirs.iter().find(|c| c.starts_with(WHITEOUT_PREFIX)) {
            return Err(bad(&format!("directory {d:?} is a whiteout marker")));
        }
        out.push(Marker {
            dir: dirs.iter().collect(),
            name: OsString::from(*name),
        });
    }
    out.sort_by(|a, b| (&a.dir, &a.name).cmp(&(&b.dir, &b.name)));
    if let Some(w) = out.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("{:?} is listed twice", w[0].dir.join(&w[0].name)));
    }
    Ok(out)
}

/// Name of the ownership metadata file beside a layer record.
pub const OWNERSHIP_FILE: &str = "ownership.json";

/// Largest ownership file read (it comes from outside).
pub const OWNERSHIP_MAX_BYTES: u64 = 64 << 20;

/// The image's owner of one entry of a layer whose repository lost ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwners {
    version: u32,
    entries: Vec<RawOwner>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    path: String,
    uid: u32,
    gid: u32,
}

/// Parse and validate an ownership file (hostile input): version 1, every path
/// relative, made of plain names (no `.`, `..`, empty or `.wh.*` component,
/// no NUL), listed once, owners below 2^32-1. Entries owned 0:0 may be left out.
pub fn parse_owners(bytes: &[u8]) -> Result<Vec<Owner>, String> {
    if bytes.len() as u64 > OWNERSHIP_MAX_BYTES {
        return Err(format!("larger than {OWNERSHIP_MAX_BYTES} bytes"));
    }
    let raw: RawOwners =
        serde_json::from_slice(bytes).map_err(|e| format!("malformed or truncated JSON: {e}"))?;
    if raw.version != 1 {
        return Err(format!(
            "version {} is not supported (this driver reads version 1)",
            raw.version
        ));
    }
    let mut out = Vec::with_capacity(raw.entries.len());
    let mut seen = std::collections::HashSet::new();
    for (i, e) in raw.entries.into_iter().enumerate() {
        let bad = |why: &str| format!("entry {i} ({:?}): {why}", e.path);
        if e.path.is_empty() || e.path.starts_with('/') || e.path.contains('\0') {
            return Err(bad("not a relative path"));
        }
        for c in e.path.split('/') {
            if c.is_empty() || c == "." || c == ".." {
                return Err(bad("path component is empty, \".\" or \"..\""));
            }
            if c.starts_with(WHITEOUT_PREFIX) {
                return Err(bad("names a whiteout marker"));
            }
        }
        if e.uid == u32::MAX || e.gid == u32::MAX {
            return Err(bad("owner ID 4294967295 is invalid"));
        }
        if !seen.insert(e.path.clone()) {
            return Err(bad("listed twice"));
        }
        out.push(Owner {
            path: PathBuf::from(e.path),
            uid: e.uid,
            gid: e.gid,
        });
    }
    // Parents before children, so a directory's own entry makes it.
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The xattr that makes a file in a lower layer a metadata-only copy whose data
/// overlayfs takes from the same path in the layers below (needs `metacopy=on`).
const METACOPY_XATTR: &str = "trusted.overlay.metacopy";

/// Put into `aux` an entry for each owner of `layer`: a metadata-only copy
/// with the image's owner (directories, symlinks, devices and fifos as
/// themselves; regular files as sparse metacopy files, their data stays in
/// the layer). Hardlinked files stay hardlinked. Never follows a symlink in
/// the layer: every parent of a listed path must be a real directory.
fn apply_owners(aux: &Path, layer: &Path, owners: &[Owner]) -> io::Result<()> {
    use std::collections::HashMap;
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for o in owners {
        let src = layer.join(&o.path);
        let parent = o.path.parent().unwrap_or(Path::new(""));
        let mut cur = layer.to_path_buf();
        for c in parent.components() {
            cur.push(c);
            let md =
                fs::symlink_metadata(&cur).map_err(|e| ctx(e, "ownership entry parent", &cur))?;
            if !md.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "ownership entry {}: parent {} is not a directory",
                        o.path.display(),
                        cur.display()
                    ),
                ));
            }
        }
        let md = fs::symlink_metadata(&src).map_err(|e| ctx(e, "ownership entry", &src))?;
        if let Step::Covered = ensure_dir(aux, parent, layer)? {
            continue;
        }
        let dst = aux.join(&o.path);
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_dir() {
            if fs::symlink_metadata(&dst).is_err() {
                fs::create_dir(&dst).map_err(|e| ctx(e, "create", &dst))?;
            }
            copy_dir_attrs(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(|e| ctx(e, "read link", &src))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| ctx(e, "symlink", &dst))?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    fs::hard_link(first, &dst).map_err(|e| ctx(e, "link", &dst))?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), dst.clone());
            }
            let f = fs::File::create(&dst).map_err(|e| ctx(e, "create", &dst))?;
            f.set_len(md.len()).map_err(|e| ctx(e, "size", &dst))?;
            drop(f);
            fsutil::set_xattr(&dst, METACOPY_XATTR.as_bytes(), b"")
                .map_err(|e| ctx(e, "mark metacopy", &dst))?;
            copy_dir_attrs(&src, &dst)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else {
                FileType::Fifo
            };
            mknodat(CWD, &dst, kind, Mode::empty(), md.rdev() as _)
                .map_err(|e| ctx(fsutil::ioe(e), "mknod", &dst))?;
            copy_dir_attrs(&src, &dst)?;
        } else {
            continue;
        }
        // The owner after the mode copy: chown clears setuid bits, so put the
        // mode back afterwards.
        fsutil::lchown(&dst, o.uid, o.gid).map_err(|e| ctx(e, "chown", &dst))?;
        if !ft.is_symlink() {
            fsutil::chmod(&dst, md.mode()).map_err(|e| ctx(e, "chmod", &dst))?;
        }
        let times = fsutil::timestamps_of(&md);
        fsutil::set_times(&dst, &times).map_err(|e| ctx(e, "set times", &dst))?;
    }
    Ok(())
}

/// Remove everything inside directory `dir` (not `dir` itself).
fn clear_dir(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir).map_err(|e| ctx(e, "read", dir))? {
        let p = e?.path();
        fsutil::remove_all(&p).map_err(|e| ctx(e, "remove", &p))?;
    }
    Ok(())
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
    // Attributes come only from real directories of `like`: below a symlink
    // or a missing one (a record may list markers the layer does not have)
    // nothing is looked up, so no path outside the layer is ever read.
    let mut like_real = true;
    for c in rel.components() {
        cur.push(c);
        let src = like.join(&cur);
        let like_md = if like_real {
            match fs::symlink_metadata(&src) {
                Ok(md) if md.is_dir() => Some(md),
                _ => None,
            }
        } else {
            None
        };
        like_real = like_md.is_some();
        let p = aux.join(&cur);
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => return Ok(Step::Covered),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx(e, "stat", &p)),
        }
        fs::create_dir(&p).map_err(|e| ctx(e, "create", &p))?;
        if like_real {
            copy_dir_attrs(&src, &p)?;
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
///
/// With `owners` (the lower layer's ownership metadata, its repository having
/// lost it), the auxiliary layer also restores the image's owners (see
/// [`apply_owners`]; the mount then needs `metacopy=on`). The upper layer's
/// deletions act on those entries as on the layer's own.
pub fn build_aux(
    aux: &Path,
    upper: Option<(&Path, &[Marker])>,
    lower: Option<(&Path, &[Marker])>,
    owners: &[Owner],
) -> io::Result<()> {
    // The root may be the topmost copy of "/" (above the top layer): it looks
    // like the layer right below it.
    if let Some((l, _)) = lower {
        copy_dir_attrs(l, aux)?;
    } else if let Some((u, _)) = upper {
        copy_dir_attrs(u, aux)?;
    }
    if let Some((l, _)) = lower {
        apply_owners(aux, l, owners)?;
    }
    // Above the topmost raw layer: hide the catalog markers of every layer
    // below (harmless where there is none).
    if let (None, Some(_)) = (upper, lower) {
        for name in CATALOG_MARKERS {
            whiteout(&aux.join(name))?;
        }
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
                // Opacity hides the layers below this one, not this one's own
                // entries: what was put here for the lower layer must go.
                clear_dir(&dir)?;
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
    fn only_the_topmost_whiteout_layer_hides_catalog_markers() {
        let t = tempfile::tempdir().unwrap();
        let (l, top, mid) = (
            t.path().join("l"),
            t.path().join("top"),
            t.path().join("mid"),
        );
        for d in [&l, &top, &mid] {
            fs::create_dir(d).unwrap();
        }
        fs::write(l.join(".cvmfscatalog"), b"").unwrap();
        build_aux(&top, None, Some((&l, &[])), &[]).unwrap();
        for name in CATALOG_MARKERS {
            let md = fs::symlink_metadata(top.join(name)).unwrap();
            assert!(fsutil::is_whiteout(&md), "{name}");
        }
        build_aux(&mid, Some((&l, &[])), Some((&l, &[])), &[]).unwrap();
        assert_eq!(fs::read_dir(&mid).unwrap().count(), 0);
    }

    #[test]
    fn listed_markers_never_read_attributes_through_a_layer_symlink() {
        let t = tempfile::tempdir().unwrap();
        let (l, aux, outside) = (
            t.path().join("l"),
            t.path().join("aux"),
            t.path().join("outside"),
        );
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::set_permissions(outside.join("sub"), fs::Permissions::from_mode(0o711)).unwrap();
        fs::create_dir_all(l.join("real")).unwrap();
        fs::set_permissions(l.join("real"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink(&outside, l.join("a")).unwrap();
        fs::create_dir(&aux).unwrap();
        // A record may list markers the layer does not have, under a symlink.
        let listed = parse_marker_list(&["a/sub/.wh.x".into(), "real/.wh.y".into()]).unwrap();
        build_aux(&aux, None, Some((&l, &listed)), &[]).unwrap();
        let mode = |p: &str| fs::metadata(aux.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_ne!(mode("a/sub"), 0o711, "attributes read through the symlink");
        assert_eq!(
            mode("real"),
            0o750,
            "a real directory's attributes are copied"
        );
        assert!(fsutil::is_whiteout(
            &fs::symlink_metadata(aux.join("real/.wh.y")).unwrap()
        ));
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

#[cfg(test)]
mod owner_tests {
    use super::*;

    #[test]
    fn owners_parse_sorted_parents_first() {
        let o = parse_owners(
            br#"{"version":1,"entries":[{"path":"a-c","uid":1,"gid":2},{"path":"a/b","uid":3,"gid":4},{"path":"a","uid":5,"gid":6}]}"#,
        )
        .unwrap();
        let paths: Vec<_> = o.iter().map(|o| o.path.display().to_string()).collect();
        assert_eq!(paths, vec!["a", "a/b", "a-c"]);
        assert_eq!((o[1].uid, o[1].gid), (3, 4));
    }

    #[test]
    fn hostile_owner_files_are_refused() {
        for (text, needle) in [
            (&b"{"[..], "truncated"),
            (br#"{"version":1}"#, "missing field"),
            (
                br#"{"version":1,"entries":[{"path":"a//b","uid":1,"gid":1}]}"#,
                "empty",
            ),
            (
                br#"{"version":1,"entries":[{"path":"a/./b","uid":1,"gid":1}]}"#,
                "\".\"",
            ),
            (
                br#"{"version":1,"entries":[{"path":"a/\u0000","uid":1,"gid":1}]}"#,
                "relative",
            ),
            (
                br#"{"version":1,"entries":[{"path":"x","uid":1,"gid":4294967295}]}"#,
                "invalid",
            ),
            (
                br#"{"version":1,"entries":[{"path":"x","uid":1,"gid":1,"mode":7}]}"#,
                "unknown field",
            ),
        ] {
            let e = parse_owners(text).unwrap_err();
            assert!(e.contains(needle), "{}: {e}", String::from_utf8_lossy(text));
        }
        let big = vec![b' '; (OWNERSHIP_MAX_BYTES + 1) as usize];
        assert!(parse_owners(&big).unwrap_err().contains("larger than"));
    }
}
