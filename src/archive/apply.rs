//! Applying an OCI layer tar to a local layer directory (overlay form), hardened
//! against hostile archives.
//!
//! Every entry name is cleaned lexically and must stay beneath the destination (a
//! leading `/` means the layer root; a `..` that would climb above it is rejected).
//! Parents are resolved one component at a time with `O_NOFOLLOW` directory opens from
//! a descriptor of the destination, so a symlink already in the tree (for instance one
//! created by an earlier entry of the same tar) is never traversed; missing parents
//! are created. Objects are then created relative to the parent's descriptor.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};

use super::fsutil::{self, ioe, ts};
use super::{ApplyOptions, ArchiveError, IdMappings, OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE};

const WH_PREFIX: &[u8] = super::WHITEOUT_PREFIX.as_bytes();
/// AUFS metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`, ...) start with this.
const WH_META_PREFIX: &[u8] = b".wh..wh.";
const OVERRIDE_XATTR: &str = "user.containers.override_stat";

/// Counts the bytes the tar parser consumed and remembers the last 512 of them, to
/// tell a proper end-of-archive block from a stream that just stops.
struct CountingReader<R> {
    inner: R,
    state: Rc<RefCell<Tail>>,
}

#[derive(Default)]
struct Tail {
    total: u64,
    last: Vec<u8>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.borrow_mut();
        st.total += n as u64;
        if n >= 512 {
            st.last.clear();
            st.last.extend_from_slice(&buf[n - 512..n]);
        } else {
            st.last.extend_from_slice(&buf[..n]);
            let len = st.last.len();
            if len > 512 {
                st.last.drain(..len - 512);
            }
        }
        Ok(n)
    }
}

/// Lexically clean a tar name into components beneath the root.
/// `None` when a `..` would climb above the root.
fn clean_components(name: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c.to_vec()),
        }
    }
    Some(out)
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
    mtime: Timespec2,
    atime: Timespec2,
    dev: (u32, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone, Copy)]
struct Timespec2 {
    sec: i64,
    nsec: i64,
}

/// Parse a PAX time "123", "123.456", "-1.5".
fn parse_pax_time(v: &[u8]) -> Option<Timespec2> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = int.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nsec += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    if neg {
        if nsec > 0 {
            Some(Timespec2 {
                sec: -sec - 1,
                nsec: 1_000_000_000 - nsec,
            })
        } else {
            Some(Timespec2 { sec: -sec, nsec: 0 })
        }
    } else {
        Some(Timespec2 { sec, nsec })
    }
}

struct Applier<'a> {
    dest: &'a Path,
    dest_fd: OwnedFd,
    opts: &'a ApplyOptions,
    mappings: Option<&'a IdMappings>,
    /// Paths (relative, '/'-joined) created by this tar, including implicit parents.
    unpacked: HashSet<Vec<u8>>,
    /// Directories whose times are set once everything inside them exists.
    dirs: Vec<(Vec<Vec<u8>>, Timestamps)>,
    /// The last resolved parent, reused while nothing has been removed.
    cache: Option<(Vec<Vec<u8>>, OwnedFd)>,
    root_override: Option<String>,
    /// PAX records of the entry being applied.
    pax: Vec<(Vec<u8>, Vec<u8>)>,
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

pub(crate) fn apply<R: Read>(
    reader: R,
    dest: &Path,
    opts: &ApplyOptions,
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
        unpacked: HashSet::new(),
        dirs: Vec::new(),
        cache: None,
        root_override: None,
        pax: Vec::new(),
    };
    let state = Rc::new(RefCell::new(Tail::default()));
    let mut ar = tar::Archive::new(CountingReader {
        inner: reader,
        state: state.clone(),
    });
    let last_name = Cell::new(String::from("<start of archive>"));
    let entries = ar
        .entries()
        .map_err(|e| ArchiveError::bad(last_name.take(), format!("malformed tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            ArchiveError::bad(
                format!("after {}", last_name.take()),
                format!("truncated or malformed tar: {e}"),
            )
        })?;
        let mut pax = Vec::new();
        let exts = entry.pax_extensions().map_err(|e| {
            ArchiveError::bad(
                format!("after {}", last_name.take()),
                format!("malformed PAX header: {e}"),
            )
        })?;
        for ext in exts.into_iter().flatten() {
            let ext = ext.map_err(|e| {
                ArchiveError::bad(
                    format!("after {}", last_name.take()),
                    format!("malformed PAX record: {e}"),
                )
            })?;
            pax.push((ext.key_bytes().to_vec(), ext.value_bytes().to_vec()));
        }
        // PAX sparse files (GNU formats 0.1 and 1.0) carry their real name apart.
        let name = match pax_get(&pax, b"GNU.sparse.name") {
            Some(n) => n.to_vec(),
            None => entry.path_bytes().into_owned(),
        };
        let display = String::from_utf8_lossy(&name).into_owned();
        last_name.set(display.clone());
        a.pax = pax;
        a.entry(&mut entry, &name, &display)?;
        // Read whatever the entry has left so that a short stream is noticed here,
        // not silently taken for the end of the archive.
        io::copy(&mut entry, &mut io::sink()).map_err(|e| {
            ArchiveError::bad(display.as_str(), format!("reading tar content: {e}"))
        })?;
        // For old GNU sparse files `size()` is the expanded size; what the archive
        // holds is the header's size field.
        let stored = if entry.header().entry_type().is_gnu_sparse() {
            entry.header().entry_size().unwrap_or(0)
        } else {
            entry.size()
        };
        let end = entry.raw_file_position().saturating_add(stored);
        if state.borrow().total < end {
            return Err(ArchiveError::bad(
                display.as_str(),
                "truncated tar: the stream ends inside this entry's content",
            ));
        }
    }
    {
        let st = state.borrow();
        // A stream that stops exactly at a header boundary (after the last entry's
        // padded content) is accepted like Go's archive/tar does: some image tools
        // omit the end-of-archive blocks, and blob digests are verified upstream.
        // Every entry's content was checked complete above, and a partial header
        // is a parse error, so only a cut inside padding or a header reaches here.
        let clean_end =
            st.total % 512 == 0 || (st.last.len() == 512 && st.last.iter().all(|b| *b == 0));
        if !clean_end {
            return Err(ArchiveError::bad(
                format!("after {}", last_name.take()),
                "truncated tar: the stream ends without an end-of-archive block",
            ));
        }
    }
    // Consume the rest (second end block, record padding) so that a writer on the
    // other end of a pipe does not fail with EPIPE.
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| ArchiveError::bad("<end of archive>", format!("reading tar: {e}")))?;
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
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&cur, os(c), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    // Implicit parent, as Go creates it: 0755, owned by the container's root.
                    let path = self.path_of(&comps[..=i]);
                    rustix::fs::mkdirat(&cur, os(c), Mode::from_raw_mode(0o755))
                        .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
                    let fd = rustix::fs::openat(&cur, os(c), flags, Mode::empty())
                        .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
                    // explicit mode: mkdir's is subject to the process umask
                    rustix::fs::chmodat(&cur, os(c), Mode::from_raw_mode(0o755), AtFlags::empty())
                        .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
                    if self.opts.force_mask.is_none() {
                        let (u, g) = self.mappings.map(|m| m.root_pair()).unwrap_or((0, 0));
                        self.chown_at(&cur, c, u, g, &path)?;
                    }
                    self.unpacked.insert(join(&comps[..=i]));
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
        entry: &mut tar::Entry<'_, R>,
        name: &[u8],
        display: &str,
    ) -> Result<(), ArchiveError> {
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            return Ok(());
        }
        let comps = clean_components(name)
            .ok_or_else(|| ArchiveError::bad(display, "path escapes the layer root"))?;
        // Beyond PATH_MAX no tool could use the file; refusing early also bounds how
        // deep a hostile archive can nest directories.
        if comps.iter().map(|c| c.len() + 1).sum::<usize>() >= 4096 {
            return Err(ArchiveError::bad(display, "path longer than PATH_MAX"));
        }

        // Root entry: Go's Unpack leaves the destination's own metadata alone.
        if comps.is_empty() {
            if etype.is_dir() {
                if self.opts.force_mask.is_some() {
                    let h = entry.header();
                    let (u, g) =
                        self.host_ids(h.uid().unwrap_or(0), h.gid().unwrap_or(0), display)?;
                    let mode = h.mode().unwrap_or(0o755) & 0o7777;
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

        if base == WHITEOUT_OPAQUE.as_bytes() {
            return self.opaque(&comps[..comps.len() - 1], display);
        }
        if let Some(orig) = base.strip_prefix(WH_PREFIX) {
            if orig.is_empty() || orig == b"." || orig == b".." || orig.starts_with(WH_PREFIX) {
                return Err(ArchiveError::bad(display, "invalid whiteout name"));
            }
            let h = entry.header();
            let (u, g) = self.host_ids(h.uid().unwrap_or(0), h.gid().unwrap_or(0), display)?;
            let mtime = h.mtime().unwrap_or(0) as i64;
            let mut target = comps[..comps.len() - 1].to_vec();
            target.push(orig.to_vec());
            return self.whiteout(&target, u, g, mtime, display);
        }
        self.create(entry, &comps, display)
    }

    /// `<dir>/.wh..wh..opq`: hide everything the lower layers have in `dir`.
    fn opaque(&mut self, dir: &[Vec<u8>], display: &str) -> Result<(), ArchiveError> {
        match self.open_dir(dir, true, display) {
            Ok(_) => {}
            Err(ResolveError::Fatal(e)) => return Err(e),
            Err(ResolveError::Whiteout) => return Ok(()),
        }
        let path = self.path_of(dir);
        fsutil::set_xattr(&path, OVERLAY_OPAQUE_XATTR.as_bytes(), b"y")
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
            if !self.unpacked.contains(&crel) {
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
        if self.unpacked.contains(&rel) {
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

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        display: &str,
    ) -> Result<Meta, ArchiveError> {
        use tar::EntryType as T;
        let bad =
            |what: &str, e: io::Error| ArchiveError::bad(display, format!("bad {what} field: {e}"));
        let h = entry.header();
        let et = h.entry_type();
        let name_is_dir = entry.path_bytes().ends_with(b"/");
        let kind = match et {
            T::Regular | T::Continuous | T::GNUSparse if name_is_dir => Kind::Dir,
            T::Regular | T::Continuous | T::GNUSparse => Kind::File,
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink,
            T::Link => Kind::Hardlink,
            T::Char => Kind::Char,
            T::Block => Kind::Block,
            T::Fifo => Kind::Fifo,
            other => {
                return Err(ArchiveError::Unsupported {
                    what: format!(
                        "entry {display:?}: tar entry type {:?}",
                        other.as_byte() as char
                    ),
                })
            }
        };
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let (uid, gid) = self.host_ids(
            h.uid().map_err(|e| bad("uid", e))?,
            h.gid().map_err(|e| bad("gid", e))?,
            display,
        )?;
        let mut mtime = Timespec2 {
            sec: h.mtime().map_err(|e| bad("mtime", e))? as i64,
            nsec: 0,
        };
        let mut atime = None;
        if let Some(g) = h.as_gnu() {
            if let Ok(a) = g.atime() {
                if a != 0 {
                    atime = Some(Timespec2 {
                        sec: a as i64,
                        nsec: 0,
                    });
                }
            }
        }
        let dev = if matches!(kind, Kind::Char | Kind::Block) {
            (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        let mut xattrs = Vec::new();
        for (key, value) in &self.pax {
            if key == b"mtime" {
                if let Some(t) = parse_pax_time(value) {
                    mtime = t;
                }
            } else if key == b"atime" {
                atime = parse_pax_time(value);
            } else if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((x.to_vec(), value.clone()));
            }
        }
        // Access time is never before modification time (as Go applies it).
        let atime = match atime {
            Some(a) if (a.sec, a.nsec) >= (mtime.sec, mtime.nsec) => a,
            _ => mtime,
        };
        Ok(Meta {
            kind,
            mode,
            uid,
            gid,
            mtime,
            atime,
            dev,
            xattrs,
        })
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
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

        // Replace what is there, except that a directory over a directory merges.
        if let Ok(st) = rustix::fs::statat(&pfd, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            let is_dir = FileType::from_raw_mode(st.st_mode as _) == FileType::Directory;
            if !(is_dir && kind == Kind::Dir) {
                self.remove(&path)?;
            }
        }
        let perm = Mode::from_raw_mode(force.unwrap_or(meta.mode) & 0o7777);
        let mk = |ft: FileType, dev: rustix::fs::Dev| {
            rustix::fs::mknodat(&pfd, os(name), ft, perm, dev)
                .map_err(|e| ArchiveError::io(&path, ioe(e)))
        };
        match kind {
            Kind::Dir => match rustix::fs::mkdirat(&pfd, os(name), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(ArchiveError::io(&path, ioe(e))),
            },
            Kind::File => {
                let fd = rustix::fs::openat(
                    &pfd,
                    os(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
                let mut f = std::fs::File::from(fd);
                let sparse = sparse_info(&self.pax).map_err(|r| ArchiveError::bad(display, r))?;
                if let (Some(sp), Kind::File) = (sparse, meta.kind) {
                    let stored = entry.size();
                    write_sparse(entry, &mut f, sp, stored, display, &path)?;
                } else if meta.kind == Kind::File {
                    let expected = if entry.header().entry_type().is_gnu_sparse() {
                        entry
                            .header()
                            .as_gnu()
                            .and_then(|g| g.real_size().ok())
                            .unwrap_or(0)
                    } else {
                        entry.size()
                    };
                    let holes = entry.header().entry_type().is_gnu_sparse();
                    let n =
                        copy_data(entry, &mut f, holes).map_err(|e| ArchiveError::io(&path, e))?;
                    if n != expected {
                        return Err(ArchiveError::bad(
                            display,
                            format!("truncated tar: {n} of {expected} content bytes"),
                        ));
                    }
                }
            }
            Kind::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ArchiveError::bad(display, "symlink without a target"))?
                    .into_owned();
                // The target is stored as is and never followed here, so it may point
                // anywhere (it is resolved inside the container's root at run time).
                rustix::fs::symlinkat(os(&target), &pfd, os(name))
                    .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
            }
            Kind::Hardlink => self.hardlink(entry, &pfd, name, &path, display)?,
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
        self.unpacked.insert(rel);

        // A hardlink's header applies to the shared inode, as Go's chrooted Untar does
        // (chown always; mode and times unless the target is a symlink). Writers put
        // the file's own metadata there, so this normally changes nothing.
        let on_symlink = match kind {
            Kind::Symlink => true,
            Kind::Hardlink => rustix::fs::statat(&pfd, os(name), AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode as _) == FileType::Symlink)
                .unwrap_or(true),
            _ => false,
        };
        // Owner first: chown clears setuid/setgid, so the mode comes after it.
        if force.is_none() {
            self.chown_at(&pfd, name, meta.uid, meta.gid, &path)?;
        }
        if !on_symlink && !(kind == Kind::Hardlink && force.is_some()) {
            rustix::fs::chmodat(&pfd, os(name), perm, AtFlags::empty())
                .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
        }
        for (k, v) in &meta.xattrs {
            // overlayfs state comes only from OCI whiteouts, never from a tar's xattrs;
            // SELinux labels are the mount's business (as Go ignores them).
            if k == b"security.selinux"
                || k.starts_with(b"trusted.overlay.")
                || k.starts_with(b"user.overlay.")
            {
                continue;
            }
            match fsutil::set_xattr(&path, k, v) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
                Err(e) => {
                    return Err(ArchiveError::io(
                        &path,
                        io::Error::new(
                            e.kind(),
                            format!("setting xattr {}: {e}", String::from_utf8_lossy(k)),
                        ),
                    ))
                }
            }
        }
        if force.is_some() && matches!(kind, Kind::File | Kind::Dir) {
            let typ = match meta.kind {
                Kind::Dir => "dir".to_string(),
                Kind::Char => format!("char-{}-{}", meta.dev.0, meta.dev.1),
                Kind::Block => format!("block-{}-{}", meta.dev.0, meta.dev.1),
                Kind::Fifo => "pipe".to_string(),
                _ => "file".to_string(),
            };
            let v = format!("{}:{}:{:04o}:{typ}", meta.uid, meta.gid, meta.mode);
            fsutil::set_xattr(&path, OVERRIDE_XATTR.as_bytes(), v.as_bytes())
                .map_err(|e| ArchiveError::io(&path, e))?;
        }
        let times = Timestamps {
            last_access: ts(meta.atime.sec, meta.atime.nsec),
            last_modification: ts(meta.mtime.sec, meta.mtime.nsec),
        };
        match kind {
            Kind::Dir => self.dirs.push((comps.to_vec(), times)),
            Kind::Hardlink if on_symlink => {}
            _ => rustix::fs::utimensat(&pfd, os(name), &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| ArchiveError::io(&path, ioe(e)))?,
        }
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pfd: &OwnedFd,
        name: &[u8],
        path: &Path,
        display: &str,
    ) -> Result<(), ArchiveError> {
        let link = entry
            .link_name_bytes()
            .ok_or_else(|| ArchiveError::bad(display, "hardlink without a target"))?
            .into_owned();
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

    /// Directory times (now that their content exists) and the root override xattr.
    fn finish(mut self) -> Result<(), ArchiveError> {
        let dirs = std::mem::take(&mut self.dirs);
        // In tar order, as Go does: the last entry for a directory sets its times.
        for (comps, times) in dirs.iter() {
            // A later entry may have replaced the directory or a parent: resolve again
            // and touch it only if it is still a directory reached without symlinks.
            let (parent, name) = comps.split_at(comps.len() - 1);
            let Ok(pfd) = self.open_dir(parent, false, "") else {
                continue;
            };
            match rustix::fs::statat(&pfd, os(&name[0]), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory => {}
                _ => continue,
            }
            let path = self.path_of(comps);
            rustix::fs::utimensat(&pfd, os(&name[0]), times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| ArchiveError::io(&path, ioe(e)))?;
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

fn pax_get<'a>(pax: &'a [(Vec<u8>, Vec<u8>)], key: &[u8]) -> Option<&'a [u8]> {
    pax.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// A PAX-format sparse file: its real size and data map (`None`: format 1.0, where
/// the map leads the entry's data).
struct Sparse {
    real_size: u64,
    map: Option<Vec<(u64, u64)>>,
}

/// Recognise the GNU PAX sparse formats 0.0, 0.1 and 1.0 (Go's archive/tar reads
/// them all; without this a sparse file would land as its raw sparse data).
fn sparse_info(pax: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<Sparse>, String> {
    let major = pax_get(pax, b"GNU.sparse.major");
    let real = pax_get(pax, b"GNU.sparse.realsize").or_else(|| pax_get(pax, b"GNU.sparse.size"));
    let has_old = pax.iter().any(|(k, _)| k == b"GNU.sparse.offset");
    let map01 = pax_get(pax, b"GNU.sparse.map");
    if major.is_none() && map01.is_none() && !has_old {
        return Ok(None);
    }
    let real_size = real
        .and_then(parse_u64)
        .ok_or("sparse file without a valid real size")?;
    if let Some(m) = major {
        if m != b"1" {
            return Err(format!(
                "unsupported GNU sparse format {}",
                String::from_utf8_lossy(m)
            ));
        }
        return Ok(Some(Sparse {
            real_size,
            map: None,
        }));
    }
    let nums: Vec<u64> = if let Some(m) = map01 {
        if m.is_empty() {
            Vec::new()
        } else {
            m.split(|c| *c == b',')
                .map(parse_u64)
                .collect::<Option<_>>()
                .ok_or("bad GNU.sparse.map")?
        }
    } else {
        pax.iter()
            .filter(|(k, _)| k == b"GNU.sparse.offset" || k == b"GNU.sparse.numbytes")
            .map(|(_, v)| parse_u64(v))
            .collect::<Option<_>>()
            .ok_or("bad GNU.sparse.offset/numbytes")?
    };
    if nums.len() % 2 != 0 {
        return Err("odd number of sparse map values".into());
    }
    Ok(Some(Sparse {
        real_size,
        map: Some(nums.chunks(2).map(|c| (c[0], c[1])).collect()),
    }))
}

/// Read one decimal number terminated by '\n' from a format 1.0 sparse map.
fn read_map_number(r: &mut dyn Read, consumed: &mut u64) -> Option<u64> {
    let mut digits = Vec::new();
    loop {
        let mut b = [0u8];
        if r.read(&mut b).ok()? != 1 {
            return None;
        }
        *consumed += 1;
        if b[0] == b'\n' {
            return parse_u64(&digits);
        }
        if digits.len() > 20 {
            return None;
        }
        digits.push(b[0]);
    }
}

/// Write a PAX sparse file: data segments at their offsets, holes left as holes.
fn write_sparse(
    r: &mut dyn Read,
    f: &mut std::fs::File,
    sp: Sparse,
    stored: u64,
    display: &str,
    path: &Path,
) -> Result<(), ArchiveError> {
    use std::io::{Seek, SeekFrom};
    let bad = |why: &str| ArchiveError::bad(display, format!("bad sparse file: {why}"));
    let mut consumed = 0u64;
    let map = match sp.map {
        Some(m) => m,
        None => {
            let n = read_map_number(r, &mut consumed).ok_or_else(|| bad("unreadable map"))?;
            if n > stored / 2 + 1 {
                return Err(bad("map longer than the entry"));
            }
            let mut m = Vec::new();
            for _ in 0..n {
                let off = read_map_number(r, &mut consumed).ok_or_else(|| bad("unreadable map"))?;
                let len = read_map_number(r, &mut consumed).ok_or_else(|| bad("unreadable map"))?;
                m.push((off, len));
            }
            // the map is padded to a block
            let pad = (512 - consumed % 512) % 512;
            let skipped = io::copy(&mut r.take(pad), &mut io::sink())
                .map_err(|e| ArchiveError::io(path, e))?;
            if skipped != pad {
                return Err(ArchiveError::bad(
                    display,
                    "truncated tar: inside a sparse map",
                ));
            }
            consumed += pad;
            m
        }
    };
    let mut last_end = 0u64;
    for (off, len) in map {
        let end = off
            .checked_add(len)
            .ok_or_else(|| bad("segment overflows"))?;
        if off < last_end || end > sp.real_size {
            return Err(bad("segments overlap or exceed the real size"));
        }
        last_end = end;
        f.seek(SeekFrom::Start(off))
            .map_err(|e| ArchiveError::io(path, e))?;
        let n = io::copy(&mut r.take(len), f).map_err(|e| ArchiveError::io(path, e))?;
        consumed += n;
        if n != len {
            return Err(ArchiveError::bad(
                display,
                "truncated tar: inside sparse data",
            ));
        }
    }
    if consumed != stored {
        return Err(bad("data size does not match the map"));
    }
    f.set_len(sp.real_size)
        .map_err(|e| ArchiveError::io(path, e))
}

/// Copy an entry's content, returning how many bytes it had. With `holes`, blocks of
/// zeros are skipped so that a sparse file stays sparse.
fn copy_data(r: &mut dyn Read, w: &mut std::fs::File, holes: bool) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if holes {
            for piece in buf[..k].chunks(4096) {
                if piece.iter().all(|b| *b == 0) {
                    w.seek(SeekFrom::Current(piece.len() as i64))?;
                } else {
                    w.write_all(piece)?;
                }
            }
        } else {
            w.write_all(&buf[..k])?;
        }
        n += k as u64;
    }
    if holes {
        // a trailing hole needs the length set explicitly
        w.set_len(n)?;
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
        assert_eq!(c("/etc/passwd"), Some("etc/passwd".into()));
        assert_eq!(c("./"), Some("".into()));
        assert_eq!(c("../x"), None);
        assert_eq!(c("/../../x"), None);
        assert_eq!(c("a/../../x"), None);
        assert_eq!(c("a/..b"), Some("a/..b".into()));
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.25").unwrap();
        assert_eq!((t.sec, t.nsec), (1700000000, 250_000_000));
        let t = parse_pax_time(b"-1.5").unwrap();
        assert_eq!((t.sec, t.nsec), (-2, 500_000_000));
        assert!(parse_pax_time(b"x").is_none());
    }
}
