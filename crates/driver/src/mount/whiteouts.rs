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
use std::time::Instant;

use rustix::fs::{mknodat, FileType, Mode, CWD};

use crate::archive::fsutil;
use crate::archive::WHITEOUT_PREFIX;

/// Version of the auxiliary directory format; part of every key so a driver
/// with a different format never reuses an old build.
pub const AUX_VERSION: u32 = 2;

/// Files CVMFS reads as "a nested catalog starts here" (`cvmfs_server`'s
/// explicit and automatic ones).
pub const CATALOG_MARKERS: [&str; 2] = [".cvmfscatalog", ".cvmfsautocatalog"];

pub use cvmfs_format::markers::{
    deserialize_marker_list, parse_marker_list, parse_marker_list_json, Marker, MAX_LISTED_MARKERS,
    MAX_MARKER_DIRS,
};
pub use cvmfs_format::ownership::{parse_owners, Owner, MAX_OWNER_ENTRIES, OWNERSHIP_MAX_BYTES};
pub use cvmfs_format::paths::OWNERSHIP_FILE;

/// Every `.wh.*` file under `root`, in a deterministic order. Symlinks are never
/// followed; only directory entries are read (no per-file stat), which on CVMFS
/// costs catalog lookups only.
pub fn scan_markers(root: &Path) -> io::Result<Vec<Marker>> {
    scan_markers_until(root, None)
}

/// [`scan_markers`], giving up at `deadline` and after
/// [`MAX_LISTED_MARKERS`] markers (a layer with more is refused, as a record
/// listing more would be).
pub fn scan_markers_until(root: &Path, deadline: Option<Instant>) -> io::Result<Vec<Marker>> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        check_deadline(deadline, || {
            format!("looking for markers in {}", root.display())
        })?;
        if out.len() > MAX_LISTED_MARKERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: more than {MAX_LISTED_MARKERS} whiteout markers",
                    root.display()
                ),
            ));
        }
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

/// `Err(TimedOut)` once `deadline` has passed, saying what was being done.
fn check_deadline(deadline: Option<Instant>, doing: impl FnOnce() -> String) -> io::Result<()> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "gave up {} (time limit for building whiteout layers reached: raise cvmfs.whiteout_timeout; a client that claims ownership makes every owner need restoring, see podman info)",
                doing()
            ),
        )),
        _ => Ok(()),
    }
}

/// The xattr that makes a file in a lower layer a metadata-only copy whose data
/// overlayfs takes from the same path in the layers below (needs `metacopy=on`).
const METACOPY_XATTR: &str = "trusted.overlay.metacopy";

/// Which owners an auxiliary layer restores for the layer below it.
#[derive(Debug, Clone, Copy)]
pub enum Restore<'a> {
    /// Only the entries listed (the layer shows every other entry as 0:0,
    /// which is their owner in the image): a repository that lost the
    /// owners as root, or a client that claims ownership as root.
    Listed(&'a [Owner]),
    /// Every entry whose owner as shown differs from the image's (the
    /// listed one, else 0:0): a client that shows another owner (its own
    /// uid with `CVMFS_CLAIM_OWNERSHIP=yes`). Walks the whole layer.
    Every(&'a [Owner]),
}

/// Put into `aux` an entry for each owner of `layer`: a metadata-only copy
/// with the image's owner (directories, symlinks, devices and fifos as
/// themselves; regular files as sparse metacopy files, their data stays in
/// the layer). Hardlinked files stay hardlinked. Never follows a symlink in
/// the layer: every parent of a listed path must be a real directory.
fn apply_owners(
    aux: &Path,
    layer: &Path,
    owners: &[Owner],
    deadline: Option<Instant>,
) -> io::Result<()> {
    use rustix::fs::{openat2, OFlags, ResolveFlags};
    let mut copied = Copied::default();
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = rustix::fs::open(layer, dir_flags, Mode::empty())
        .map_err(|e| ctx(fsutil::ioe(e), "open layer", layer))?;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    // The parent last checked: entries come sorted, siblings in a row.
    let mut checked_parent: Option<&Path> = None;
    for (i, o) in owners.iter().enumerate() {
        check_deadline(deadline, || {
            format!(
                "restoring owners of {} after {i} of {} entries",
                layer.display(),
                owners.len()
            )
        })?;
        let src = layer.join(&o.path);
        let parent = o.path.parent().unwrap_or(Path::new(""));
        // Every parent a real directory of the layer: reached from it
        // without any symlink, so nothing outside the layer is ever read.
        if checked_parent != Some(parent) && !parent.as_os_str().is_empty() {
            openat2(&root, parent, dir_flags, Mode::empty(), resolve).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "ownership entry {}: parent {} is not a directory of the layer reached without a symlink ({e})",
                        o.path.display(),
                        layer.join(parent).display()
                    ),
                )
            })?;
        }
        checked_parent = Some(parent);
        let md = fs::symlink_metadata(&src).map_err(|e| ctx(e, "ownership entry", &src))?;
        copy_owned(aux, layer, &o.path, &md, (o.uid, o.gid), &mut copied)?;
    }
    Ok(())
}

/// What copying entries remembers between entries.
#[derive(Default)]
struct Copied {
    /// Files already copied, by (device, inode): hardlinks stay hardlinks.
    links: std::collections::HashMap<(u64, u64), PathBuf>,
    /// The parent directory last made sure of in `aux` (entries come
    /// directory by directory: one walk of its path per directory).
    parent: Option<PathBuf>,
}

/// Put into `aux` a metadata-only copy of entry `rel` of `layer` (whose
/// `lstat` is `md`) owned by `owner` (see [`apply_owners`]).
fn copy_owned(
    aux: &Path,
    layer: &Path,
    rel: &Path,
    md: &fs::Metadata,
    owner: (u32, u32),
    copied: &mut Copied,
) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let src = layer.join(rel);
    let parent = rel.parent().unwrap_or(Path::new(""));
    if copied.parent.as_deref() != Some(parent) {
        if let Step::Covered = ensure_dir(aux, parent, layer)? {
            return Ok(());
        }
        copied.parent = Some(parent.to_path_buf());
    }
    let dst = aux.join(rel);
    let ft = md.file_type();
    if ft.is_dir() {
        if fs::symlink_metadata(&dst).is_err() {
            fs::create_dir(&dst).map_err(|e| ctx(e, "create", &dst))?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(&src).map_err(|e| ctx(e, "read link", &src))?;
        std::os::unix::fs::symlink(&target, &dst).map_err(|e| ctx(e, "symlink", &dst))?;
    } else if ft.is_file() {
        if md.nlink() > 1 {
            if let Some(first) = copied.links.get(&(md.dev(), md.ino())) {
                return fs::hard_link(first, &dst).map_err(|e| ctx(e, "link", &dst));
            }
            copied.links.insert((md.dev(), md.ino()), dst.clone());
        }
        let f = fs::File::create(&dst).map_err(|e| ctx(e, "create", &dst))?;
        f.set_len(md.len()).map_err(|e| ctx(e, "size", &dst))?;
        drop(f);
        fsutil::set_xattr(&dst, METACOPY_XATTR.as_bytes(), b"")
            .map_err(|e| ctx(e, "mark metacopy", &dst))?;
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
    } else {
        return Ok(());
    }
    // The owner first: chown clears setuid bits and file capabilities, so
    // the mode and the xattrs come after it.
    fsutil::lchown(&dst, owner.0, owner.1).map_err(|e| ctx(e, "chown", &dst))?;
    if !ft.is_symlink() {
        fsutil::chmod(&dst, md.mode()).map_err(|e| ctx(e, "chmod", &dst))?;
        copy_xattrs(&src, &dst)?;
    }
    let times = fsutil::timestamps_of(md);
    fsutil::set_times(&dst, &times).map_err(|e| ctx(e, "set times", &dst))
}

/// [`Restore::Every`]: walk all of `layer` (directory entries and one
/// `lstat` each, never following a symlink, skipping raw whiteout markers
/// and the root's catalog markers) and copy, owned by the image's owner,
/// every entry shown with another one. Directories are copied before what
/// they contain, so a parent made in `aux` already has its right owner.
fn apply_every_owner(
    aux: &Path,
    layer: &Path,
    listed: &[Owner],
    deadline: Option<Instant>,
) -> io::Result<()> {
    let image: std::collections::HashMap<&Path, (u32, u32)> = listed
        .iter()
        .map(|o| (o.path.as_path(), (o.uid, o.gid)))
        .collect();
    let owner_of = |rel: &Path| image.get(rel).copied().unwrap_or((0, 0));
    let root_md = fs::symlink_metadata(layer).map_err(|e| ctx(e, "stat", layer))?;
    if (root_md.uid(), root_md.gid()) != owner_of(Path::new("")) {
        let (uid, gid) = owner_of(Path::new(""));
        fsutil::lchown(aux, uid, gid).map_err(|e| ctx(e, "chown", aux))?;
        fsutil::chmod(aux, root_md.mode()).map_err(|e| ctx(e, "chmod", aux))?;
    }
    let mut copied = Copied::default();
    let mut todo = vec![PathBuf::new()];
    let mut seen = 0usize;
    while let Some(dir) = todo.pop() {
        let at = layer.join(&dir);
        let mut names: Vec<OsString> = fs::read_dir(&at)
            .map_err(|e| ctx(e, "read", &at))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| ctx(e, "read", &at))?;
        names.sort();
        for name in names {
            seen += 1;
            if seen % 1024 == 0 {
                check_deadline(deadline, || {
                    format!(
                        "restoring every owner of {} after {seen} entries",
                        layer.display()
                    )
                })?;
            }
            let marker = name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes());
            let catalog =
                dir.as_os_str().is_empty() && CATALOG_MARKERS.iter().any(|m| name == OsStr::new(m));
            if marker || catalog {
                continue;
            }
            let rel = dir.join(&name);
            let md = match fs::symlink_metadata(layer.join(&rel)) {
                Ok(md) => md,
                // Listed but not there when looked up: nothing to show, so
                // nothing to restore.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ctx(e, "stat", &layer.join(&rel))),
            };
            let want = owner_of(&rel);
            if (md.uid(), md.gid()) != want {
                copy_owned(aux, layer, &rel, &md, want, &mut copied)?;
            }
            if md.file_type().is_dir() {
                todo.push(rel);
            }
        }
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
    // rootless, an unmapped owner cannot be given.
    let (uid, gid) = crate::rootless::settable_owner(md.uid(), md.gid());
    fsutil::lchown(dst, uid, gid).map_err(|e| ctx(e, "chown", dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| ctx(e, "chmod", dst))?;
    copy_xattrs(src, dst)
}

/// Give `dst` the xattrs of `src` but overlay's own.
fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    for name in fsutil::list_xattrs(src).map_err(|e| ctx(e, "list xattrs of", src))? {
        // user.overlay.* too when rootless.
        if crate::rootless::is_overlay_xattr(&name) {
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

/// A 0/0 character device at `p`, replacing whatever is there (one system
/// call when nothing is, as for almost every marker).
fn whiteout(p: &Path) -> io::Result<()> {
    let make = || mknodat(CWD, p, FileType::CharacterDevice, Mode::empty(), 0);
    match make() {
        Err(rustix::io::Errno::EXIST) => {
            fsutil::remove_all(p).map_err(|e| ctx(e, "remove", p))?;
            make()
        }
        r => r,
    }
    .map_err(|e| ctx(fsutil::ioe(e), "create whiteout", p))
}

/// [`ensure_dir`] remembering the last directory made: markers come sorted
/// by directory, so a run of markers in one directory costs one walk.
struct DirCache<'a> {
    aux: &'a Path,
    last: Option<(PathBuf, bool)>,
}

impl DirCache<'_> {
    /// Whether `rel` exists in the auxiliary layer as a directory (made with
    /// the attributes of `like`'s), `false` when a whiteout covers it.
    fn ensure(&mut self, rel: &Path, like: &Path) -> io::Result<bool> {
        if let Some((dir, made)) = &self.last {
            if dir == rel {
                return Ok(*made);
            }
        }
        let made = matches!(ensure_dir(self.aux, rel, like)?, Step::Made);
        self.last = Some((rel.to_path_buf(), made));
        Ok(made)
    }

    /// Forget the cached directory (after it may have been replaced).
    fn forget(&mut self) {
        self.last = None;
    }
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
    build_aux_until(aux, upper, lower, owners, None)
}

/// The markers of `markers` that are there in `layer`, checking that each
/// is a non-directory whose directory is reached from the layer without any
/// symlink (`openat2` `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). A record
/// lists exactly the layer's marker files, so a list naming others is
/// corrupt or hostile; checking it first costs one lookup per marker
/// (cheap next to making a device for each) and refuses invented lists
/// before any work is done for them. The one exception: AUFS metadata
/// (`.wh..wh.<x>` but the opaque marker), which our publisher lists but
/// does not unpack (DUCC keeps it), is left out when it is absent.
pub fn verify_markers(
    layer: &Path,
    markers: &[Marker],
    deadline: Option<Instant>,
) -> io::Result<Vec<Marker>> {
    let mut present = Vec::with_capacity(markers.len());
    use rustix::fs::{openat2, statat, AtFlags, OFlags, ResolveFlags};
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = rustix::fs::open(layer, dir_flags, Mode::empty())
        .map_err(|e| ctx(fsutil::ioe(e), "open layer", layer))?;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let mut dir: Option<(&Path, std::os::fd::OwnedFd)> = None;
    for (i, m) in markers.iter().enumerate() {
        if i % 256 == 0 {
            check_deadline(deadline, || {
                format!(
                    "checking markers of {} ({i} of {})",
                    layer.display(),
                    markers.len()
                )
            })?;
        }
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "marker {} is listed but {why} in layer {}",
                    m.dir.join(&m.name).display(),
                    layer.display()
                ),
            )
        };
        if dir.as_ref().map(|d| d.0) != Some(m.dir.as_path()) {
            let rel = if m.dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                m.dir.as_path()
            };
            let fd = openat2(&root, rel, dir_flags, Mode::empty(), resolve).map_err(|e| {
                bad(format!(
                    "its directory cannot be reached without leaving the layer or a symlink ({e})"
                ))
            })?;
            dir = Some((&m.dir, fd));
        }
        let (_, fd) = dir.as_ref().expect("set above");
        let st = match statat(fd, m.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) if m.is_aufs_metadata() => continue,
            Err(e) => return Err(bad(format!("is not there ({e})"))),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(bad("is a directory".into()));
        }
        present.push(m.clone());
    }
    Ok(present)
}

/// [`build_aux`], giving up with `TimedOut` at `deadline`: the lists come
/// from records, and a whiteout layer is built inside a podman call.
pub fn build_aux_until(
    aux: &Path,
    upper: Option<(&Path, &[Marker])>,
    lower: Option<(&Path, &[Marker])>,
    owners: &[Owner],
    deadline: Option<Instant>,
) -> io::Result<()> {
    build_aux_restoring(aux, upper, lower, Restore::Listed(owners), deadline)
}

/// [`build_aux_until`] restoring the lower layer's owners as `restore` says.
pub fn build_aux_restoring(
    aux: &Path,
    upper: Option<(&Path, &[Marker])>,
    lower: Option<(&Path, &[Marker])>,
    restore: Restore,
    deadline: Option<Instant>,
) -> io::Result<()> {
    let checked = |side: Option<(&Path, &[Marker])>| -> io::Result<Option<(PathBuf, Vec<Marker>)>> {
        side.map(|(layer, markers)| {
            Ok((
                layer.to_path_buf(),
                verify_markers(layer, markers, deadline)?,
            ))
        })
        .transpose()
    };
    let (upper_checked, lower_checked) = (checked(upper)?, checked(lower)?);
    let upper = upper_checked
        .as_ref()
        .map(|(p, m)| (p.as_path(), m.as_slice()));
    let lower = lower_checked
        .as_ref()
        .map(|(p, m)| (p.as_path(), m.as_slice()));
    let step = |done: usize, of: usize, whose: &Path| {
        check_deadline(deadline, || {
            format!(
                "building a whiteout layer after {done} of {of} markers of {}",
                whose.display()
            )
        })
    };
    // The root may be the topmost copy of "/" (above the top layer): it looks
    // like the layer right below it.
    if let Some((l, _)) = lower {
        copy_dir_attrs(l, aux)?;
    } else if let Some((u, _)) = upper {
        copy_dir_attrs(u, aux)?;
    }
    match (lower, restore) {
        (Some((l, _)), Restore::Listed(owners)) => apply_owners(aux, l, owners, deadline)?,
        (Some((l, _)), Restore::Every(listed)) => apply_every_owner(aux, l, listed, deadline)?,
        (None, _) => {}
    }
    // Above the topmost raw layer: hide the catalog markers of every layer
    // below (harmless where there is none).
    if let (None, Some(_)) = (upper, lower) {
        for name in CATALOG_MARKERS {
            whiteout(&aux.join(name))?;
        }
    }
    // Hide the lower layer's marker files themselves.
    let mut dirs = DirCache { aux, last: None };
    if let Some((l, markers)) = lower {
        for (i, m) in markers.iter().enumerate() {
            step(i, markers.len(), l)?;
            if dirs.ensure(&m.dir, l)? {
                whiteout(&aux.join(&m.dir).join(&m.name))?;
            }
        }
    }
    dirs.forget();
    // Apply the upper layer's deletions to everything below it. A deletion of
    // a directory replaces whatever was made inside it above (it hides it all).
    if let Some((u, markers)) = upper {
        for (i, m) in markers.iter().enumerate() {
            step(i, markers.len(), u)?;
            let like = match lower {
                Some((l, _)) => l,
                None => u,
            };
            if !dirs.ensure(&m.dir, like)? {
                continue;
            }
            // (A deletion here never replaces the cached directory itself:
            // it acts inside it; markers of deeper directories walk anew.)
            let dir = aux.join(&m.dir);
            if m.is_opaque() {
                // Opacity hides the layers below this one, not this one's own
                // entries: what was put here for the lower layer must go.
                clear_dir(&dir)?;
                // user.overlay.opaque in a user namespace.
                fsutil::set_xattr(&dir, crate::rootless::opaque_xattr().as_bytes(), b"y")
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
        fs::write(outside.join("sub/.wh.x"), b"").unwrap();
        fs::write(l.join("real/.wh.y"), b"").unwrap();
        // A hostile record lists a marker under a symlink leading out of the
        // layer: refused before anything is built or read through it.
        let listed = parse_marker_list(&["a/sub/.wh.x".into(), "real/.wh.y".into()]).unwrap();
        let e = build_aux(&aux, None, Some((&l, &listed)), &[]).unwrap_err();
        assert!(
            e.to_string().contains("marker a/sub/.wh.x is listed but"),
            "{e}"
        );
        assert_eq!(fs::read_dir(&aux).unwrap().count(), 0, "nothing built");
        // The markers the layer has are fine, and attributes of real
        // directories are copied.
        let listed = parse_marker_list(&["real/.wh.y".into()]).unwrap();
        build_aux(&aux, None, Some((&l, &listed)), &[]).unwrap();
        let mode = |p: &str| fs::metadata(aux.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode("real"),
            0o750,
            "a real directory's attributes are copied"
        );
        assert!(fsutil::is_whiteout(
            &fs::symlink_metadata(aux.join("real/.wh.y")).unwrap()
        ));
        // Invented markers (not in the layer) are refused too.
        for bad in ["real/.wh.nothere", "missing/.wh.x", "real"] {
            let listed = vec![Marker {
                dir: Path::new(bad).parent().unwrap().into(),
                name: Path::new(bad).file_name().unwrap().into(),
            }];
            let e = verify_markers(&l, &listed, None).unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        // Except AUFS metadata our publisher lists but does not unpack.
        let listed = parse_marker_list(&["real/.wh..wh.plnk".into(), "real/.wh.y".into()]).unwrap();
        assert_eq!(verify_markers(&l, &listed, None).unwrap(), listed[1..]);
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
mod bound_tests {
    use super::*;

    #[test]
    fn a_passed_deadline_stops_building_and_scanning_with_what_was_done() {
        let t = tempfile::tempdir().unwrap();
        let (l, aux) = (t.path().join("l"), t.path().join("aux"));
        fs::create_dir_all(l.join("d")).unwrap();
        fs::write(l.join("d/.wh.x"), b"").unwrap();
        fs::create_dir(&aux).unwrap();
        let listed = parse_marker_list(&["d/.wh.x".into()]).unwrap();
        let past = Some(Instant::now());
        let e = build_aux_until(&aux, None, Some((&l, &listed)), &[], past).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("time limit"), "{e}");
        let e = scan_markers_until(&l, past).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        // Without a deadline both work.
        build_aux_until(&aux, None, Some((&l, &listed)), &[], None).unwrap();
        assert_eq!(scan_markers_until(&l, None).unwrap(), listed);
    }
}
