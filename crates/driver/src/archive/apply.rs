//! Applying an OCI layer tar to a local layer directory (overlay form), hardened
//! against hostile archives.
//!
//! Every entry name is cleaned lexically and must stay beneath the destination (a
//! leading `/` means the layer root; a `..` that would climb above it is rejected).
//! Parents are resolved one component at a time with `O_NOFOLLOW` directory opens from
//! a descriptor of the destination, so a symlink already in the tree (for instance one
//! created by an earlier entry of the same tar) is never traversed; missing parents
//! are created. Objects are then created relative to the parent's descriptor.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use sha2::{Digest, Sha256};

use super::dirtimes::DirTimes;
use super::fsutil::{self, ioe, ts};
use super::tarparse::{self, TarEntry, TarError, TarReader, TarTime};
use super::{ApplyOptions, ArchiveError, IdMappings, WHITEOUT_OPAQUE};

const WH_PREFIX: &[u8] = super::WHITEOUT_PREFIX.as_bytes();
/// AUFS metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`, ...) start with this.
const WH_META_PREFIX: &[u8] = b".wh..wh.";
const OVERRIDE_XATTR: &str = "user.containers.override_stat";

impl From<TarError> for ArchiveError {
    fn from(e: TarError) -> Self {
        ArchiveError::bad(e.entry, e.reason)
    }
}

/// Lexically clean a tar name into components beneath the root.
/// `None` when a `..` would climb above the root.
fn clean_components(name: &[u8]) -> Option<Vec<Vec<u8>>> {
    tarparse::clean_components(name).map(|v| v.into_iter().map(<[u8]>::to_vec).collect())
}

/// A fixed-size digest of a layer path: the set of paths this tar created is
/// kept as digests, so memory does not grow with the length of names.
type PathKey = [u8; 16];

fn path_key(rel: &[u8]) -> PathKey {
    let d = Sha256::digest(rel);
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

fn join(components: &[Vec<u8>]) -> Vec<u8> {
    components.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// What an entry asks us to create, after whiteout handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// The parts of an entry's header we use.
struct Meta {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TarTime,
    atime: TarTime,
    dev: (u32, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where a node is created: its parent directory, name, full path and the
/// entry's name as the error messages show it.
struct NodeAt<'a> {
    pfd: &'a OwnedFd,
    name: &'a [u8],
    path: &'a Path,
    display: &'a str,
}

/// A regular file (or, under force_mask, the plain file standing in for a
/// device) and, for a real regular file, its content from the stream.
fn write_file<R: Read>(
    tar: &mut TarReader<'_, R>,
    entry: &TarEntry,
    with_content: bool,
    at: &NodeAt<'_>,
) -> Result<(), ArchiveError> {
    let fd = rustix::fs::openat(
        at.pfd,
        os(at.name),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| ArchiveError::io(at.path, ioe(e)))?;
    let mut f = std::fs::File::from(fd);
    if !with_content {
        return Ok(());
    }
    // A failed read names the stream's problem, not the file's.
    let content_err = |tar: &TarReader<'_, R>, e: ArchiveError| match tar.failure() {
        Some(t) => ArchiveError::from(t.clone()),
        None => e,
    };
    match &entry.sparse {
        Some(map) => {
            write_sparse(tar, &mut f, map, at.display, at.path).map_err(|e| content_err(tar, e))
        }
        None => {
            let n = copy_data(tar, &mut f)
                .map_err(|e| content_err(tar, ArchiveError::io(at.path, e)))?;
            if n != entry.stored {
                return Err(ArchiveError::bad(
                    at.display,
                    format!("truncated tar: {n} of {} content bytes", entry.stored),
                ));
            }
            Ok(())
        }
    }
}

/// The entry's own xattrs. overlayfs state comes only from OCI whiteouts,
/// never from a tar's xattrs; SELinux labels are the mount's business (as Go
/// ignores them); a filesystem without xattrs keeps the file without them.
fn set_entry_xattrs(path: &Path, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), ArchiveError> {
    for (k, v) in xattrs {
        if k == b"security.selinux"
            || k.starts_with(b"trusted.overlay.")
            || k.starts_with(b"user.overlay.")
        {
            continue;
        }
        match fsutil::set_xattr(path, k, v) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => {
                return Err(ArchiveError::io(
                    path,
                    io::Error::new(
                        e.kind(),
                        format!("setting xattr {}: {e}", String::from_utf8_lossy(k)),
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Under force_mask, the real owner, mode and type go into the override xattr.
fn set_override_xattr(path: &Path, meta: &Meta) -> Result<(), ArchiveError> {
    let typ = match meta.kind {
        Kind::Dir => "dir".to_string(),
        Kind::Char => format!("char-{}-{}", meta.dev.0, meta.dev.1),
        Kind::Block => format!("block-{}-{}", meta.dev.0, meta.dev.1),
        Kind::Fifo => "pipe".to_string(),
        _ => "file".to_string(),
    };
    let v = format!("{}:{}:{:04o}:{typ}", meta.uid, meta.gid, meta.mode);
    fsutil::set_xattr(path, OVERRIDE_XATTR.as_bytes(), v.as_bytes())
        .map_err(|e| ArchiveError::io(path, e))
}

struct Applier<'a> {
    dest: &'a Path,
    dest_fd: OwnedFd,
    opts: &'a ApplyOptions,
    mappings: Option<&'a IdMappings>,
    /// Keep OCI whiteouts as the tar's `.wh.*` marker files (DUCC's `layerfs`
    /// form) instead of converting them to overlay form.
    raw_whiteouts: bool,
    /// Paths (relative, '/'-joined) created by this tar, including implicit
    /// parents, as digests.
    unpacked: HashSet<PathKey>,
    /// Directories whose times are set once everything inside them exists.
    dirs: DirTimes,
    /// The last resolved parent, reused while nothing has been removed.
    cache: Option<(Vec<Vec<u8>>, OwnedFd)>,
    root_override: Option<String>,
}

/// Why resolving a parent failed.
enum ResolveError {
    Fatal(ArchiveError),
    /// A component is an overlay whiteout (a name deleted earlier in this layer).
    Whiteout,
}

impl From<ArchiveError> for ResolveError {
    fn from(e: ArchiveError) -> Self {
        ResolveError::Fatal(e)
    }
}

/// Most bytes read after the end-of-archive marker (record padding, so that a
/// writer on the other end of a pipe does not fail with EPIPE); the rest of
/// the stream is left unread.
const MAX_TRAILER: u64 = 1 << 20;

/// Apply the tar `reader` to `dest`, stopping at the end-of-archive marker.
pub(crate) fn apply<R: Read>(
    reader: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<(), ArchiveError> {
    let mut tar = TarReader::new(reader);
    apply_entries(&mut tar, dest, opts, false)?;
    let rest = tar.into_inner();
    io::copy(&mut rest.take(MAX_TRAILER), &mut io::sink())
        .map_err(|e| ArchiveError::bad("<end of archive>", format!("reading tar: {e}")))?;
    Ok(())
}

/// Apply every entry `tar` yields to `dest` (overlay form, or DUCC's raw
/// whiteout markers with `raw_whiteouts`). Returns once the parser has seen
/// the end of the archive; nothing after it is read.
pub(crate) fn apply_entries<R: Read>(
    tar: &mut TarReader<'_, R>,
    dest: &Path,
    opts: &ApplyOptions,
    raw_whiteouts: bool,
) -> Result<(), ArchiveError> {
    let dest_fd = rustix::fs::openat(
        rustix::fs::CWD,
        dest,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ArchiveError::io(dest, ioe(e)))?;
    let mut a = Applier {
        dest,
        dest_fd,
        opts,
        mappings: opts.mappings.as_ref().filter(|m| !m.is_identity()),
        raw_whiteouts,
        unpacked: HashSet::new(),
        dirs: DirTimes::default(),
        cache: None,
        root_override: None,
    };
    while let Some(entry) = tar.next_entry()? {
        a.entry(tar, &entry)?;
    }
    a.finish()
}

impl Applier<'_> {
    fn host_ids(&self, uid: u64, gid: u64, display: &str) -> Result<(u32, u32), ArchiveError> {
        // (u32::MAX is chown's "leave unchanged", never a real owner.)
        let uid = u32::try_from(uid)
            .ok()
            .filter(|u| *u != u32::MAX)
            .ok_or_else(|| ArchiveError::bad(display, format!("uid {uid} out of range")))?;
        let gid = u32::try_from(gid)
            .ok()
            .filter(|g| *g != u32::MAX)
            .ok_or_else(|| ArchiveError::bad(display, format!("gid {gid} out of range")))?;
        match self.mappings {
            None => Ok((uid, gid)),
            Some(m) => m
                .to_host(uid, gid)
                .map_err(|source| ArchiveError::IdMapping {
                    path: display.to_string(),
                    source,
                }),
        }
    }

    fn path_of(&self, comps: &[Vec<u8>]) -> PathBuf {
        let mut p = self.dest.to_path_buf();
        for c in comps {
            p.push(os(c));
        }
        p
    }

    /// Open the directory `comps` beneath the destination without following any
    /// symlink, creating missing directories when `create` is set.
    fn open_dir(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
        display: &str,
    ) -> Result<OwnedFd, ResolveError> {
        if let Some((cached, fd)) = &self.cache {
            if cached.as_slice() == comps {
                return Ok(fd.try_clone().map_err(|e| ArchiveError::io(self.dest, e))?);
            }
        }
        let mut cur = self
            .dest_fd
            .try_clone()
            .map_err(|e| ArchiveError::io(self.dest, e))?;
        for (i, c) in comps.iter().enumerate() {
            let next = match fsutil::open_child_dir(&cur, c) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    // Implicit parent, as Go creates it: 0755, owned by the container's root.
                    let path = self.path_of(&comps[..=i]);
                    rustix::fs::mkdirat(&cur, os(c), Mode::from_raw_mode(0o755))
                        .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
                    let fd = fsutil::open_child_dir(&cur, c)
                        .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
                    // explicit mode: mkdir's is subject to the process umask
                    rustix::fs::chmodat(&cur, os(c), Mode::from_raw_mode(0o755), AtFlags::empty())
                        .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
                    if self.opts.force_mask.is_none() {
                        let (u, g) = self.mappings.map(|m| m.root_pair()).unwrap_or((0, 0));
                        self.chown_at(&cur, c, u, g, &path)?;
                    }
                    self.unpacked.insert(path_key(&join(&comps[..=i])));
                    fd
                }
                Err(rustix::io::Errno::NOENT) => {
                    return Err(ArchiveError::bad(
                        display,
                        format!(
                            "{} does not exist",
                            String::from_utf8_lossy(&join(&comps[..=i]))
                        ),
                    )
                    .into())
                }
                Err(e) => {
                    let shown = String::from_utf8_lossy(&join(&comps[..=i])).into_owned();
                    return match rustix::fs::statat(&cur, os(c), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            let ft = FileType::from_raw_mode(st.st_mode as _);
                            if ft == FileType::Symlink {
                                Err(ArchiveError::bad(
                                    display,
                                    format!("parent {shown} is a symlink; refusing to follow it"),
                                )
                                .into())
                            } else if ft == FileType::CharacterDevice && st.st_rdev == 0 {
                                Err(ResolveError::Whiteout)
                            } else {
                                Err(ArchiveError::bad(
                                    display,
                                    format!("parent {shown} is not a directory"),
                                )
                                .into())
                            }
                        }
                        Err(_) => Err(ArchiveError::io(self.path_of(&comps[..=i]), ioe(e)).into()),
                    };
                }
            };
            cur = next;
        }
        let keep = cur
            .try_clone()
            .map_err(|e| ArchiveError::io(self.dest, e))?;
        self.cache = Some((comps.to_vec(), keep));
        Ok(cur)
    }

    fn parent_fd(&mut self, comps: &[Vec<u8>], display: &str) -> Result<OwnedFd, ArchiveError> {
        match self.open_dir(&comps[..comps.len() - 1], true, display) {
            Ok(fd) => Ok(fd),
            Err(ResolveError::Fatal(e)) => Err(e),
            Err(ResolveError::Whiteout) => Err(ArchiveError::bad(
                display,
                "a parent directory was deleted (whiteout) in this layer",
            )),
        }
    }

    fn chown_at(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        uid: u32,
        gid: u32,
        path: &Path,
    ) -> Result<(), ArchiveError> {
        if uid == u32::MAX || gid == u32::MAX {
            return Err(ArchiveError::io(
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "owner ID 4294967295 is invalid",
                ),
            ));
        }
        match rustix::fs::chownat(
            dir,
            os(name),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => Ok(()),
            Err(_) if self.opts.ignore_chown_errors => Ok(()),
            Err(e) => Err(ArchiveError::io(path, ioe(e))),
        }
    }

    /// Remove an existing entry (anything may be below it).
    fn remove(&mut self, path: &Path) -> Result<(), ArchiveError> {
        self.cache = None;
        fsutil::remove_all(path).map_err(|e| ArchiveError::io(path, e))
    }

    fn entry<R: Read>(
        &mut self,
        tar: &mut TarReader<'_, R>,
        entry: &TarEntry,
    ) -> Result<(), ArchiveError> {
        if entry.typeflag == b'g' {
            return Ok(());
        }
        let display = entry.display();
        let display = display.as_str();
        let name = entry.name.as_slice();
        let comps = clean_components(name)
            .ok_or_else(|| ArchiveError::bad(display, "path escapes the layer root"))?;
        // Beyond PATH_MAX no tool could use the file; refusing early also bounds how
        // deep a hostile archive can nest directories.
        if comps.iter().map(|c| c.len() + 1).sum::<usize>() >= 4096 {
            return Err(ArchiveError::bad(display, "path longer than PATH_MAX"));
        }

        // Root entry: Go's Unpack leaves the destination's own metadata alone.
        if comps.is_empty() {
            if entry.typeflag == b'5' {
                if self.opts.force_mask.is_some() {
                    let (u, g) = self.host_ids(entry.uid, entry.gid, display)?;
                    let mode = entry.mode & 0o7777;
                    self.root_override = Some(format!("{u}:{g}:{mode:04o}:dir"));
                }
                return Ok(());
            }
            return Err(ArchiveError::bad(
                display,
                "entry would replace the layer root",
            ));
        }
        // AUFS metadata (hardlink stash etc.) is not part of the layer's content.
        if comps[0].starts_with(WH_META_PREFIX)
            && !(comps.len() == 1 && comps[0] == WHITEOUT_OPAQUE.as_bytes())
        {
            return Ok(());
        }
        if let Some(c) = comps[..comps.len() - 1]
            .iter()
            .find(|c| c.starts_with(WH_PREFIX))
        {
            return Err(ArchiveError::bad(
                display,
                format!(
                    "whiteout name {:?} used as a directory",
                    String::from_utf8_lossy(c)
                ),
            ));
        }
        let base = comps[comps.len() - 1].clone();

        if base.starts_with(WH_PREFIX) && !matches!(entry.typeflag, b'0' | b'7') {
            return Err(ArchiveError::bad(
                display,
                "a whiteout marker must be a regular file",
            ));
        }
        if self.raw_whiteouts && base.starts_with(WH_PREFIX) {
            // DUCC's layerfs keeps the markers as the files the tar has.
            if base != WHITEOUT_OPAQUE.as_bytes() && base.starts_with(WH_META_PREFIX) {
                return Ok(());
            }
            let orig = &base[WH_PREFIX.len()..];
            if base != WHITEOUT_OPAQUE.as_bytes()
                && (orig.is_empty() || orig == b"." || orig == b"..")
            {
                return Err(ArchiveError::bad(display, "invalid whiteout name"));
            }
            return self.create(tar, entry, &comps, display);
        }
        if base == WHITEOUT_OPAQUE.as_bytes() {
            return self.opaque(&comps[..comps.len() - 1], display);
        }
        if let Some(orig) = base.strip_prefix(WH_PREFIX) {
            if orig.is_empty() || orig == b"." || orig == b".." || orig.starts_with(WH_PREFIX) {
                return Err(ArchiveError::bad(display, "invalid whiteout name"));
            }
            let (u, g) = self.host_ids(entry.uid, entry.gid, display)?;
            let mut target = comps[..comps.len() - 1].to_vec();
            target.push(orig.to_vec());
            return self.whiteout(&target, u, g, entry.mtime.sec, display);
        }
        self.create(tar, entry, &comps, display)
    }

    /// `<dir>/.wh..wh..opq`: hide everything the lower layers have in `dir`.
    fn opaque(&mut self, dir: &[Vec<u8>], display: &str) -> Result<(), ArchiveError> {
        match self.open_dir(dir, true, display) {
            Ok(_) => {}
            Err(ResolveError::Fatal(e)) => return Err(e),
            Err(ResolveError::Whiteout) => return Ok(()),
        }
        let path = self.path_of(dir);
        // user.overlay.opaque in a user namespace.
        fsutil::set_xattr(&path, crate::rootless::opaque_xattr().as_bytes(), b"y")
            .map_err(|e| ArchiveError::io(&path, e))?;
        // Content that was in the destination before this tar belongs to the layers
        // the directory now hides; what this tar created stays.
        self.clear_not_unpacked(&path, &join(dir))
    }

    fn clear_not_unpacked(&mut self, path: &Path, rel: &[u8]) -> Result<(), ArchiveError> {
        for name in fsutil::sorted_names(path).map_err(|e| ArchiveError::io(path, e))? {
            let mut crel = rel.to_vec();
            if !crel.is_empty() {
                crel.push(b'/');
            }
            crel.extend_from_slice(name.as_bytes());
            let cpath = path.join(&name);
            if !self.unpacked.contains(&path_key(&crel)) {
                self.remove(&cpath)?;
            } else if std::fs::symlink_metadata(&cpath)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                self.clear_not_unpacked(&cpath, &crel)?;
            }
        }
        Ok(())
    }

    /// `.wh.<name>`: a 0/0 character device `<name>` hides the lower layers' `<name>`.
    fn whiteout(
        &mut self,
        target: &[Vec<u8>],
        uid: u32,
        gid: u32,
        mtime: i64,
        display: &str,
    ) -> Result<(), ArchiveError> {
        let rel = join(target);
        // OCI: a whiteout only applies to lower layers; a sibling from this same
        // layer stays (and hides the lower one anyway).
        if self.unpacked.contains(&path_key(&rel)) {
            return Ok(());
        }
        let pfd = match self.open_dir(&target[..target.len() - 1], true, display) {
            Ok(fd) => fd,
            Err(ResolveError::Fatal(e)) => return Err(e),
            // `rm -rf /foo/bar` can produce `.wh.foo` and `foo/.wh.bar`: nothing to do.
            Err(ResolveError::Whiteout) => return Ok(()),
        };
        let name = &target[target.len() - 1];
        let path = self.path_of(target);
        if rustix::fs::statat(&pfd, os(name), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            self.remove(&path)?;
        }
        rustix::fs::mknodat(&pfd, os(name), FileType::CharacterDevice, Mode::empty(), 0)
            .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
        self.chown_at(&pfd, name, uid, gid, &path)?;
        // The marker's time, so that applying the same tar twice gives the same tree
        // (Go leaves the creation time).
        let t = ts(mtime, 0);
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(&pfd, os(name), &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ArchiveError::io(&path, ioe(e)))
    }

    fn meta(&self, entry: &TarEntry, display: &str) -> Result<Meta, ArchiveError> {
        let kind = match entry.typeflag {
            b'0' | b'7' | b'S' => Kind::File,
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink,
            b'1' => Kind::Hardlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'6' => Kind::Fifo,
            other => {
                return Err(ArchiveError::Unsupported {
                    what: format!("entry {display:?}: tar entry type {:?}", other as char),
                })
            }
        };
        let (uid, gid) = self.host_ids(entry.uid, entry.gid, display)?;
        let mtime = entry.mtime;
        let dev = if matches!(kind, Kind::Char | Kind::Block) {
            (entry.devmajor, entry.devminor)
        } else {
            (0, 0)
        };
        // Access time is never before modification time (as Go applies it).
        let atime = match entry.atime {
            Some(a) if a >= mtime => a,
            _ => mtime,
        };
        Ok(Meta {
            kind,
            mode: entry.mode & 0o7777,
            uid,
            gid,
            mtime,
            atime,
            dev,
            xattrs: entry.xattrs.clone(),
        })
    }

    /// Create one entry: replace what is there (a directory over a directory
    /// merges), make the node with its content, then owner, mode, xattrs, times.
    fn create<R: Read>(
        &mut self,
        tar: &mut TarReader<'_, R>,
        entry: &TarEntry,
        comps: &[Vec<u8>],
        display: &str,
    ) -> Result<(), ArchiveError> {
        let meta = self.meta(entry, display)?;
        let mut kind = meta.kind;
        let force = self.opts.force_mask;
        if force.is_some() && !matches!(kind, Kind::Dir | Kind::Symlink | Kind::Hardlink) {
            // force_mask stores devices and fifos as plain files; the real type goes
            // into the override xattr.
            kind = Kind::File;
        }
        let pfd = self.parent_fd(comps, display)?;
        let name = &comps[comps.len() - 1];
        let path = self.path_of(comps);
        let rel = join(comps);

        if let Ok(st) = rustix::fs::statat(&pfd, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            let is_dir = FileType::from_raw_mode(st.st_mode as _) == FileType::Directory;
            if !(is_dir && kind == Kind::Dir) {
                self.remove(&path)?;
            }
        }
        let perm = Mode::from_raw_mode(force.unwrap_or(meta.mode) & 0o7777);
        let at = NodeAt {
            pfd: &pfd,
            name,
            path: &path,
            display,
        };
        self.make_node(tar, entry, &meta, kind, perm, &at)?;
        self.unpacked.insert(path_key(&rel));
        self.apply_metadata(&meta, kind, perm, &at, rel)
    }

    /// The node itself, with a regular file's content.
    fn make_node<R: Read>(
        &mut self,
        tar: &mut TarReader<'_, R>,
        entry: &TarEntry,
        meta: &Meta,
        kind: Kind,
        perm: Mode,
        at: &NodeAt<'_>,
    ) -> Result<(), ArchiveError> {
        let (pfd, name, path) = (at.pfd, at.name, at.path);
        let mk = |ft: FileType, dev: rustix::fs::Dev| {
            rustix::fs::mknodat(pfd, os(name), ft, perm, dev)
                .map_err(|e| ArchiveError::io(path, ioe(e)))
        };
        match kind {
            Kind::Dir => match rustix::fs::mkdirat(pfd, os(name), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(ArchiveError::io(path, ioe(e))),
            },
            Kind::File => write_file(tar, entry, meta.kind == Kind::File, at)?,
            Kind::Symlink => {
                let target = &entry.linkname;
                if target.is_empty() {
                    return Err(ArchiveError::bad(at.display, "symlink without a target"));
                }
                // The target is stored as is and never followed here, so it may point
                // anywhere (it is resolved inside the container's root at run time).
                rustix::fs::symlinkat(os(target), pfd, os(name))
                    .map_err(|e| ArchiveError::io(path, ioe(e)))?;
            }
            Kind::Hardlink => self.hardlink(entry, pfd, name, path, at.display)?,
            Kind::Char => mk(
                FileType::CharacterDevice,
                rustix::fs::makedev(meta.dev.0, meta.dev.1),
            )?,
            Kind::Block => mk(
                FileType::BlockDevice,
                rustix::fs::makedev(meta.dev.0, meta.dev.1),
            )?,
            Kind::Fifo => mk(FileType::Fifo, 0)?,
        }
        Ok(())
    }

    /// Owner, mode, xattrs, the force_mask override and times of a created node.
    fn apply_metadata(
        &mut self,
        meta: &Meta,
        kind: Kind,
        perm: Mode,
        at: &NodeAt<'_>,
        rel: Vec<u8>,
    ) -> Result<(), ArchiveError> {
        let (pfd, name, path) = (at.pfd, at.name, at.path);
        let force = self.opts.force_mask;
        // A hardlink's header applies to the shared inode, as Go's chrooted Untar does
        // (chown always; mode and times unless the target is a symlink). Writers put
        // the file's own metadata there, so this normally changes nothing.
        let on_symlink = match kind {
            Kind::Symlink => true,
            Kind::Hardlink => rustix::fs::statat(pfd, os(name), AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode as _) == FileType::Symlink)
                .unwrap_or(true),
            _ => false,
        };
        // Owner first: chown clears setuid/setgid, so the mode comes after it.
        if force.is_none() {
            self.chown_at(pfd, name, meta.uid, meta.gid, path)?;
        }
        if !on_symlink && (kind != Kind::Hardlink || force.is_none()) {
            rustix::fs::chmodat(pfd, os(name), perm, AtFlags::empty())
                .map_err(|e| ArchiveError::io(path, ioe(e)))?;
        }
        set_entry_xattrs(path, &meta.xattrs)?;
        if force.is_some() && matches!(kind, Kind::File | Kind::Dir) {
            set_override_xattr(path, meta)?;
        }
        let times = Timestamps {
            last_access: ts(meta.atime.sec, i64::from(meta.atime.nsec)),
            last_modification: ts(meta.mtime.sec, i64::from(meta.mtime.nsec)),
        };
        match kind {
            Kind::Dir => self
                .dirs
                .push(rel, times)
                .map_err(|e| ArchiveError::io(path, e))?,
            Kind::Hardlink if on_symlink => {}
            _ => rustix::fs::utimensat(pfd, os(name), &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| ArchiveError::io(path, ioe(e)))?,
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        entry: &TarEntry,
        pfd: &OwnedFd,
        name: &[u8],
        path: &Path,
        display: &str,
    ) -> Result<(), ArchiveError> {
        let link = entry.linkname.clone();
        if link.is_empty() {
            return Err(ArchiveError::bad(display, "hardlink without a target"));
        }
        let shown = String::from_utf8_lossy(&link).into_owned();
        let tcomps = clean_components(&link).ok_or_else(|| {
            ArchiveError::bad(
                display,
                format!("hardlink target {shown:?} escapes the layer root"),
            )
        })?;
        if tcomps.is_empty() {
            return Err(ArchiveError::bad(display, "hardlink to the layer root"));
        }
        // A marker is not content: linking to it would copy a deletion (overlay
        // form: a 0/0 device) or a marker file under another name.
        if tcomps.iter().any(|c| c.starts_with(WH_PREFIX)) {
            return Err(ArchiveError::bad(
                display,
                format!("hardlink target {shown:?} is a whiteout marker"),
            ));
        }
        let tdir = match self.open_dir(&tcomps[..tcomps.len() - 1], false, display) {
            Ok(fd) => fd,
            Err(ResolveError::Whiteout) => {
                return Err(ArchiveError::bad(
                    display,
                    format!("hardlink target {shown:?} does not exist"),
                ))
            }
            Err(ResolveError::Fatal(ArchiveError::BadEntry { reason, .. })) => {
                return Err(ArchiveError::bad(
                    display,
                    format!("hardlink target {shown:?}: {reason}"),
                ))
            }
            Err(ResolveError::Fatal(e)) => return Err(e),
        };
        let tname = &tcomps[tcomps.len() - 1];
        match rustix::fs::statat(&tdir, os(tname), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory => {
                return Err(ArchiveError::bad(
                    display,
                    format!("hardlink target {shown:?} is a directory"),
                ))
            }
            Ok(_) => {}
            Err(_) => {
                return Err(ArchiveError::bad(
                    display,
                    format!("hardlink target {shown:?} does not exist"),
                ))
            }
        }
        rustix::fs::linkat(&tdir, os(tname), pfd, os(name), AtFlags::empty())
            .map_err(|e| ArchiveError::io(path, ioe(e)))
    }

    /// Set a directory's times unless a later entry replaced it or a parent: it
    /// is resolved again and touched only if still a directory reached without
    /// symlinks.
    fn set_dir_times(&mut self, rel: &[u8], times: &Timestamps) -> Result<(), ArchiveError> {
        let comps: Vec<Vec<u8>> = rel.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
        let (parent, name) = comps.split_at(comps.len() - 1);
        let Ok(pfd) = self.open_dir(parent, false, "") else {
            return Ok(());
        };
        match rustix::fs::statat(&pfd, os(&name[0]), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory => {}
            _ => return Ok(()),
        }
        rustix::fs::utimensat(&pfd, os(&name[0]), times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ArchiveError::io(self.path_of(&comps), ioe(e)))
    }

    /// Directory times (now that their content exists) and the root override xattr.
    fn finish(mut self) -> Result<(), ArchiveError> {
        let dirs = std::mem::take(&mut self.dirs);
        // In tar order, as Go does: the last entry for a directory sets its times.
        let mut failed = None;
        dirs.for_each(|rel, times| {
            if let Err(e) = self.set_dir_times(rel, times) {
                failed.get_or_insert(e);
            }
            Ok(())
        })
        .map_err(|e| ArchiveError::io(self.dest, e))?;
        if let Some(e) = failed {
            return Err(e);
        }
        if self.opts.force_mask.is_some() {
            let v = self
                .root_override
                .take()
                .unwrap_or_else(|| "0:0:0755:dir".to_string());
            fsutil::set_xattr(self.dest, OVERRIDE_XATTR.as_bytes(), v.as_bytes())
                .map_err(|e| ArchiveError::io(self.dest, e))?;
        }
        Ok(())
    }
}

/// Write a sparse file: each segment's bytes at its offset, holes left as holes.
fn write_sparse(
    r: &mut dyn Read,
    f: &mut std::fs::File,
    map: &tarparse::SparseMap,
    display: &str,
    path: &Path,
) -> Result<(), ArchiveError> {
    use std::io::{Seek, SeekFrom};
    for &(off, len) in &map.segments {
        f.seek(SeekFrom::Start(off))
            .map_err(|e| ArchiveError::io(path, e))?;
        let n = io::copy(&mut r.take(len), f).map_err(|e| ArchiveError::io(path, e))?;
        if n != len {
            return Err(ArchiveError::bad(
                display,
                "truncated tar: inside sparse data",
            ));
        }
    }
    f.set_len(map.real_size)
        .map_err(|e| ArchiveError::io(path, e))
}

/// Copy an entry's content, returning how many bytes it had.
fn copy_data(r: &mut dyn Read, w: &mut std::fs::File) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_keeps_names_beneath_the_root() {
        let c = |s: &str| {
            clean_components(s.as_bytes())
                .map(|v| join(&v))
                .map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(c("a/b/../c/./d/"), Some("a/c/d".into()));
        assert_eq!(c("/../../x"), None);
    }
}
