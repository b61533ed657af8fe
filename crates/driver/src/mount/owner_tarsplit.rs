//! Owner images built from the layer's tar-split (issue 13 item 2): the same
//! image as [`owner_image::layer_image`] makes from a walk of the layer, read
//! from one gzip file instead of a lookup, a stat and an xattr list per entry
//! over the repository's FUSE mount.
//!
//! The tar-split (`podmanStore/cvmfs-layers/<id>.tar-split.gz`, written by
//! our publisher while it unpacked the layer) holds every header block of the
//! layer's tar as raw segments and each entry's content only as a size. The
//! headers are put back in a stream, with zeros for the contents, and read by
//! the driver's one tar parser ([`crate::archive::tarparse`]): names, types,
//! modes, owners, times, link targets, devices and PAX xattrs come out as the
//! unpacker saw them. Nothing else of the layer is read but its root (stat
//! and xattrs, as the walk does: the unpacker leaves the root's metadata to
//! the publisher).
//!
//! **Checked, because the file comes from a shared repository**: gzip and
//! JSON well formed, lines bounded ([`MAX_LINE`]), entries bounded
//! ([`MAX_ENTRIES`]), every header parsed by the hardened parser (names
//! cleaned and kept beneath the layer, `PATH_MAX`), each file line naming the
//! entry its header gives with the header's size, no entry after the
//! archive's end; every entry's parent a directory named before it, no name
//! twice, whiteout markers as the unpacker accepts them, a hardlink only to
//! a regular file named before it and with that file's metadata, owners equal
//! to the layer's `ownership.json` (0:0 when not listed), every listed owner
//! met. Anything else (a tar the unpacker would have handled differently:
//! implicit parents, replaced entries, links to non-files) is an error naming
//! the tar-split, the entry and its offset; the driver then walks the layer
//! instead (`owner_mounts`), so an unusual tar costs time, never a wrong
//! image.
//!
//! **What a lying tar-split can do**: describe another tree than the layer
//! directory holds. It can only give entries metadata (names, modes,
//! owners, xattrs, devices) — which the same publisher already controls
//! through the layer itself and `ownership.json` — and data redirects into
//! the layer's own directory of the repository: a redirect names a path
//! inside the data-only lower (the repository), so a file the layer does not
//! have reads as an I/O error in the container, never data from outside the
//! repository. Owners must match `ownership.json`, so a stale tar-split of
//! another layer is refused unless the two agree on every owner.
//!
//! Differences from the walk, both in favour of the image: hardlinks the
//! repository split into separate files (CernVM-FS keeps hardlinks only
//! within a directory) are one inode again, and xattrs the repository did not
//! store (`CVMFS_INCLUDE_XATTRS`) are the tar's.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cvmfs_erofs::{Image, Kind, Meta, NodeId};
use cvmfs_format::tarsplit::{TarSplitEntry, ENTRY_FILE, ENTRY_SEGMENT};

use super::owner_image::{apply_marker, ctx, invalid, meta_of, set_xattrs, METACOPY, REDIRECT};
use super::whiteouts::{Owner, CATALOG_MARKERS};
use crate::archive::tarparse::{clean_components, TarEntry, TarReader};
use crate::archive::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// Version of what this builder makes from a tar-split; part of the cache
/// key beside [`super::owner_image::IMAGE_VERSION`], so images built from a
/// tar-split and from a walk are never taken for one another.
pub const TARSPLIT_VERSION: u32 = 1;
/// Most tar entries read from one tar-split: the image holds at most
/// [`cvmfs_erofs::MAX_ENTRIES`] nodes; markers, links and AUFS names that
/// make no node of their own get as many again.
pub const MAX_ENTRIES: usize = 2 * cvmfs_erofs::MAX_ENTRIES;
/// Longest line accepted (a segment holds at most a 1 MiB extension header
/// or 1 MiB of sparse data, base64).
pub const MAX_LINE: usize = 4 << 20;
/// File lines read ahead of the parser before the stream is called broken.
const MAX_PENDING: usize = 64;
/// AUFS metadata names: not part of the layer (the unpacker drops them).
const WH_META_PREFIX: &[u8] = b".wh..wh.";

/// The metadata image of `layer` (regular files redirecting to
/// `/<data_path>/<path>`) built from its tar-split `tar_split_gz`, owners as
/// `owners` lists them. Gives up at `deadline` (`TimedOut`). Any other error
/// means the tar-split cannot stand for the layer: walk it instead.
pub fn layer_image_from_tar_split(
    layer: &Path,
    data_path: &Path,
    tar_split_gz: &Path,
    owners: &[Owner],
    deadline: Option<Instant>,
) -> io::Result<Image> {
    let file = fs::File::open(tar_split_gz).map_err(|e| ctx(e, "open tar-split", tar_split_gz))?;
    let md = file
        .metadata()
        .map_err(|e| ctx(e, "stat tar-split", tar_split_gz))?;
    if !md.is_file() {
        return Err(invalid(format!(
            "tar-split {}: not a regular file",
            tar_split_gz.display()
        )));
    }
    let gz = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let stream = SplitStream::new(
        BufReader::with_capacity(1 << 20, gz),
        tar_split_gz,
        deadline,
    );
    let root_md = fs::symlink_metadata(layer).map_err(|e| ctx(e, "stat", layer))?;
    let mut listed: HashMap<&Path, (u32, u32)> = owners
        .iter()
        .map(|o| (o.path.as_path(), (o.uid, o.gid)))
        .collect();
    let root_owner = listed.remove(Path::new("")).unwrap_or((0, 0));
    let mut img = Image::new(meta_of(&root_md, root_owner));
    let root = img.root();
    set_xattrs(&mut img, root, layer)?;
    let mut b = Builder {
        img,
        layer,
        implicit: HashMap::new(),
        redirect_base: Path::new("/").join(data_path),
        listed,
        dirs: HashMap::from([(Vec::new(), root)]),
        files: HashMap::new(),
        markers: Vec::new(),
    };
    read_entries(&mut b, stream, tar_split_gz)?;
    b.finish(tar_split_gz)
}

/// Every entry of the tar-split into `b`, each file line checked against
/// the header it follows.
fn read_entries(
    b: &mut Builder<'_>,
    stream: SplitStream<impl BufRead>,
    path: &Path,
) -> io::Result<()> {
    let mut tar = TarReader::new(stream);
    let mut previous: Option<(Vec<u8>, u64)> = None;
    let mut count = 0usize;
    loop {
        let entry = match tar.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                let timed_out = tar.inner_mut().timed_out;
                let kind = match timed_out {
                    true => io::ErrorKind::TimedOut,
                    false => io::ErrorKind::InvalidData,
                };
                let msg = format!(
                    "tar-split {} at offset {}: {e}",
                    path.display(),
                    tar.offset()
                );
                return Err(io::Error::new(kind, msg));
            }
        };
        count += 1;
        if count > MAX_ENTRIES {
            return Err(invalid(format!(
                "tar-split {}: more than {MAX_ENTRIES} entries",
                path.display()
            )));
        }
        // The file line of the previous entry lies before this header.
        if let Some(p) = previous.take() {
            tar.inner_mut().expect_file(&p)?;
        }
        b.add(&entry).map_err(|why| {
            invalid(format!(
                "tar-split {}: entry {:?} at offset {}: {why}",
                path.display(),
                entry.display(),
                entry.offset
            ))
        })?;
        let size = if entry.sparse.is_some() {
            0
        } else {
            entry.size
        };
        previous = Some((entry.name, size));
    }
    let mut stream = tar.into_inner();
    stream.drain()?;
    if let Some(p) = previous {
        stream.expect_file(&p)?;
    }
    match stream.files.front() {
        Some((name, _)) => Err(stream.broken(format!(
            "file line {:?} without a tar entry",
            String::from_utf8_lossy(name)
        ))),
        None => Ok(()),
    }
}

/// The image being built, with what later entries refer to.
struct Builder<'a> {
    img: Image,
    layer: &'a Path,
    /// Directories the tar did not name (yet), by path: the unpacker made
    /// them.
    implicit: HashMap<NodeId, Vec<u8>>,
    redirect_base: PathBuf,
    /// Listed owners not met yet.
    listed: HashMap<&'a Path, (u32, u32)>,
    /// Directories by path in the layer (`""`: the root).
    dirs: HashMap<Vec<u8>, NodeId>,
    /// Regular files by path (hardlink targets).
    files: HashMap<Vec<u8>, NodeId>,
    /// Raw whiteout markers: directory, name after `.wh.`, marker path.
    markers: Vec<(NodeId, Vec<u8>, Vec<u8>)>,
}

impl Builder<'_> {
    /// Adds one entry as the unpacker lays it out (for the entries this
    /// builder accepts: see the module's documentation).
    fn add(&mut self, e: &TarEntry) -> Result<(), String> {
        if e.typeflag == b'g' {
            return Ok(());
        }
        let comps = clean_components(&e.name).ok_or("path escapes the layer root")?;
        if comps.iter().map(|c| c.len() + 1).sum::<usize>() >= 4096 {
            return Err("path longer than PATH_MAX".into());
        }
        let Some((&base, dirs)) = comps.split_last() else {
            return match e.typeflag {
                b'5' => Ok(()),
                _ => Err("entry would replace the layer root".into()),
            };
        };
        let opaque = WHITEOUT_OPAQUE.as_bytes();
        let wh = WHITEOUT_PREFIX.as_bytes();
        let aufs = |c: &[u8]| c.starts_with(WH_META_PREFIX) && c != opaque;
        if aufs(comps[0]) || aufs(base) {
            return Ok(());
        }
        if dirs.iter().any(|c| c.starts_with(wh)) {
            return Err("a whiteout name used as a directory".into());
        }
        if dirs.is_empty() && CATALOG_MARKERS.iter().any(|m| m.as_bytes() == base) {
            return Ok(());
        }
        let parent = self.parent(dirs)?;
        let rel = comps.join(&b'/');
        if let Some(node) = self.img.child(parent, base) {
            return match self.implicit.remove(&node).is_some() && e.typeflag == b'5' {
                true => self.name_implicit(e, node, &rel),
                false => Err("named twice".into()),
            };
        }
        if base.starts_with(wh) {
            return self.marker(e, parent, base, rel);
        }
        if e.typeflag == b'1' {
            return self.hard_link(e, parent, base, rel);
        }
        self.add_node(e, parent, base, rel)
    }

    /// The directory `dirs`; one the tar did not name before is taken as
    /// the unpacker made it (it exists in the layer: one lookup each).
    fn parent(&mut self, dirs: &[&[u8]]) -> Result<NodeId, String> {
        let rel = dirs.join(&b'/');
        if let Some(&node) = self.dirs.get(&rel) {
            return Ok(node);
        }
        let (&name, above) = dirs.split_last().ok_or("no root")?;
        let up = self.parent(above)?;
        if self.img.child(up, name).is_some() {
            return Err("its parent is not a directory".into());
        }
        let path = self.layer.join(OsStr::from_bytes(&rel));
        let md = fs::symlink_metadata(&path).map_err(|e| {
            format!(
                "its parent is not in the tar, nor a directory of the layer: {}: {e}",
                path.display()
            )
        })?;
        if !md.is_dir() {
            return Err(format!(
                "its parent is not in the tar, nor a directory of the layer: {}",
                path.display()
            ));
        }
        // still listed: a header naming it later is checked against it
        let owner = self
            .listed
            .get(Path::new(OsStr::from_bytes(&rel)))
            .copied()
            .unwrap_or((0, 0));
        let node = self
            .img
            .add(up, name, meta_of(&md, owner), Kind::Dir)
            .map_err(|e| e.to_string())?;
        set_xattrs(&mut self.img, node, &path).map_err(|e| e.to_string())?;
        self.implicit.insert(node, rel.clone());
        self.dirs.insert(rel, node);
        Ok(node)
    }

    /// A directory the unpacker made before the tar named it: the header's
    /// owner, mode, time and xattrs (merged into what it has).
    fn name_implicit(&mut self, e: &TarEntry, node: NodeId, rel: &[u8]) -> Result<(), String> {
        let (uid, gid) = self.owner(e, rel)?;
        let meta = Meta {
            mode: (e.mode & 0o7777) as u16,
            uid,
            gid,
            mtime: e.mtime.sec,
            mtime_nsec: e.mtime.nsec,
        };
        self.img.set_meta(node, meta);
        for (k, v) in kept_xattrs(e) {
            self.img.set_xattr(node, k, v).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A raw `.wh.` marker: applied once every entry is in.
    fn marker(
        &mut self,
        e: &TarEntry,
        dir: NodeId,
        base: &[u8],
        rel: Vec<u8>,
    ) -> Result<(), String> {
        if !matches!(e.typeflag, b'0' | b'7') {
            return Err("a whiteout marker must be a regular file".into());
        }
        let target = &base[WHITEOUT_PREFIX.len()..];
        if base != WHITEOUT_OPAQUE.as_bytes() && matches!(target, b"" | b"." | b"..") {
            return Err("invalid whiteout name".into());
        }
        self.markers.push((dir, target.to_vec(), rel));
        Ok(())
    }

    /// A directory, file, symlink, device or fifo.
    fn add_node(
        &mut self,
        e: &TarEntry,
        parent: NodeId,
        base: &[u8],
        rel: Vec<u8>,
    ) -> Result<(), String> {
        let kind = kind_of(e)?;
        let (uid, gid) = self.owner(e, &rel)?;
        // lstat shows every symlink as 0777, whatever its header says
        let mode = match kind {
            Kind::Symlink(_) => 0o777,
            _ => (e.mode & 0o7777) as u16,
        };
        let meta = Meta {
            mode,
            uid,
            gid,
            mtime: e.mtime.sec,
            mtime_nsec: e.mtime.nsec,
        };
        let is_symlink = matches!(kind, Kind::Symlink(_));
        let size = match kind {
            Kind::File { size } => Some(size),
            _ => None,
        };
        let is_dir = kind == Kind::Dir;
        let node = self
            .img
            .add(parent, base, meta, kind)
            .map_err(|e| e.to_string())?;
        if !is_symlink {
            for (k, v) in kept_xattrs(e) {
                self.img.set_xattr(node, k, v).map_err(|e| e.to_string())?;
            }
        }
        if size.is_some_and(|s| s > 0) {
            let redirect = self.redirect_base.join(OsStr::from_bytes(&rel));
            let set = |img: &mut Image, k, v: &[u8]| img.set_xattr(node, k, v);
            set(&mut self.img, METACOPY, b"")
                .and_then(|_| set(&mut self.img, REDIRECT, redirect.as_os_str().as_bytes()))
                .map_err(|e| e.to_string())?;
        }
        match (is_dir, size) {
            (true, _) => self.dirs.insert(rel, node),
            (false, Some(_)) => self.files.insert(rel, node),
            _ => None,
        };
        Ok(())
    }

    /// Another name of a regular file named before, with its metadata (the
    /// unpacker would apply a link header's own to the shared inode: such a
    /// tar is left to the walk).
    fn hard_link(
        &mut self,
        e: &TarEntry,
        parent: NodeId,
        base: &[u8],
        rel: Vec<u8>,
    ) -> Result<(), String> {
        let target = clean_components(&e.linkname)
            .map(|c| c.join(&b'/'))
            .ok_or("hardlink target escapes the layer root")?;
        let node = *self
            .files
            .get(&target)
            .ok_or("hardlink target is not a regular file named before it")?;
        let have = self.img.meta(node);
        let header = (
            (e.mode & 0o7777) as u16,
            e.uid,
            e.gid,
            e.mtime.sec,
            e.mtime.nsec,
        );
        let target_meta = (
            have.mode,
            u64::from(have.uid),
            u64::from(have.gid),
            have.mtime,
            have.mtime_nsec,
        );
        if header != target_meta {
            return Err("hardlink header gives its target other metadata".into());
        }
        if kept_xattrs(e).any(|(k, v)| self.img.xattr(node, k) != Some(v)) {
            return Err("hardlink header gives its target other xattrs".into());
        }
        self.listed.remove(Path::new(OsStr::from_bytes(&rel)));
        self.img
            .hard_link(parent, base, node)
            .map_err(|e| e.to_string())?;
        self.files.insert(rel, node);
        Ok(())
    }

    /// The header's owner, which must be the one `ownership.json` lists
    /// (0:0 when not listed).
    fn owner(&mut self, e: &TarEntry, rel: &[u8]) -> Result<(u32, u32), String> {
        let listed = self
            .listed
            .remove(Path::new(OsStr::from_bytes(rel)))
            .unwrap_or((0, 0));
        let header = (u32::try_from(e.uid).ok(), u32::try_from(e.gid).ok());
        if header != (Some(listed.0), Some(listed.1)) {
            return Err(format!(
                "owner {}:{} differs from the layer's ownership metadata ({}:{})",
                e.uid, e.gid, listed.0, listed.1
            ));
        }
        Ok(listed)
    }

    /// The markers applied; every listed owner must have been met.
    fn finish(mut self, path: &Path) -> io::Result<Image> {
        for rel in self.implicit.values() {
            self.listed.remove(Path::new(OsStr::from_bytes(rel)));
        }
        for (dir, target, rel) in &self.markers {
            apply_marker(&mut self.img, *dir, target).map_err(|e| {
                invalid(format!(
                    "tar-split {}: marker {:?}: {e}",
                    path.display(),
                    String::from_utf8_lossy(rel)
                ))
            })?;
        }
        if let Some(p) = self.listed.keys().min() {
            return Err(invalid(format!(
                "tar-split {}: ownership entry {} is not an entry of the tar",
                path.display(),
                p.display()
            )));
        }
        Ok(self.img)
    }
}

fn kind_of(e: &TarEntry) -> Result<Kind, String> {
    Ok(match e.typeflag {
        _ if e.sparse.is_some() => Kind::File { size: e.size },
        b'0' | b'7' => Kind::File { size: e.size },
        b'5' => Kind::Dir,
        b'2' if e.linkname.is_empty() => return Err("symlink without a target".into()),
        b'2' => Kind::Symlink(e.linkname.clone()),
        b'3' => Kind::CharDev {
            major: e.devmajor,
            minor: e.devminor,
        },
        b'4' => Kind::BlockDev {
            major: e.devmajor,
            minor: e.devminor,
        },
        b'6' => Kind::Fifo,
        t => return Err(format!("tar entry type {:?} not supported", t as char)),
    })
}

/// The entry's xattrs the unpacker sets (overlay state and SELinux labels
/// never come from a tar).
fn kept_xattrs(e: &TarEntry) -> impl Iterator<Item = (&[u8], &[u8])> {
    e.xattrs
        .iter()
        .filter(|(k, _)| {
            k != b"security.selinux"
                && !k.starts_with(b"trusted.overlay.")
                && !k.starts_with(b"user.overlay.")
        })
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
}

/// The tar stream a tar-split describes, contents as zeros: raw segments as
/// they are, each file line as `size` zero bytes. File lines are queued for
/// [`SplitStream::expect_file`].
struct SplitStream<R> {
    lines: R,
    path: PathBuf,
    line_no: u64,
    segment: Vec<u8>,
    at: usize,
    zeros: u64,
    files: VecDeque<(Vec<u8>, u64)>,
    deadline: Option<Instant>,
    timed_out: bool,
    line: Vec<u8>,
}

impl<R: BufRead> SplitStream<R> {
    fn new(lines: R, path: &Path, deadline: Option<Instant>) -> Self {
        SplitStream {
            lines,
            path: path.to_path_buf(),
            line_no: 0,
            segment: Vec::new(),
            at: 0,
            zeros: 0,
            files: VecDeque::new(),
            deadline,
            timed_out: false,
            line: Vec::new(),
        }
    }

    fn broken(&self, why: String) -> io::Error {
        invalid(format!(
            "tar-split {} line {}: {why}",
            self.path.display(),
            self.line_no
        ))
    }

    fn check_time(&mut self) -> io::Result<()> {
        match self.deadline {
            Some(d) if Instant::now() >= d => {
                self.timed_out = true;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "gave up reading tar-split {} at line {} (time limit reached: raise cvmfs.whiteout_timeout)",
                        self.path.display(),
                        self.line_no
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Reads the next line into the stream; false at the end.
    fn next_line(&mut self) -> io::Result<bool> {
        self.line.clear();
        let limit = (MAX_LINE + 1) as u64;
        let n = (&mut self.lines)
            .take(limit)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| self.broken(format!("reading: {e}")))?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        if self.line_no % 4096 == 0 {
            self.check_time()?;
        }
        if n > MAX_LINE {
            return Err(self.broken(format!("longer than {MAX_LINE} bytes")));
        }
        let e: TarSplitEntry =
            serde_json::from_slice(&self.line).map_err(|e| self.broken(e.to_string()))?;
        match e.kind {
            ENTRY_SEGMENT => {
                let payload = e.payload.as_deref().unwrap_or("");
                self.segment = base64_decode(payload)
                    .ok_or_else(|| self.broken("segment payload is not base64".into()))?;
                self.at = 0;
            }
            ENTRY_FILE => {
                let name = match (e.name, e.name_raw) {
                    (Some(n), _) => n.into_bytes(),
                    (None, Some(raw)) => base64_decode(&raw)
                        .ok_or_else(|| self.broken("name_raw is not base64".into()))?,
                    (None, None) => Vec::new(),
                };
                let size = e.size.unwrap_or(0);
                if self.files.len() >= MAX_PENDING {
                    return Err(self.broken("file lines do not follow their headers".into()));
                }
                self.files.push_back((name, size));
                self.zeros = size;
            }
            other => return Err(self.broken(format!("unknown line type {other}"))),
        }
        Ok(true)
    }

    /// The next queued file line must be `name` with `size` bytes.
    fn expect_file(&mut self, (name, size): &(Vec<u8>, u64)) -> io::Result<()> {
        match self.files.pop_front() {
            Some((n, s)) if n == *name && s == *size => Ok(()),
            Some((n, s)) => Err(self.broken(format!(
                "file line {:?} ({s} bytes) where the headers give {:?} ({size} bytes)",
                String::from_utf8_lossy(&n),
                String::from_utf8_lossy(name)
            ))),
            None => Err(self.broken(format!(
                "no file line for {:?}",
                String::from_utf8_lossy(name)
            ))),
        }
    }

    /// Reads what follows the end of the archive: zeros only (padding); a
    /// file line there is kept for the caller to refuse. A tar-split that
    /// ends its archive early (zeros read as the end marker) is refused here.
    fn drain(&mut self) -> io::Result<()> {
        loop {
            let rest = &self.segment[self.at..];
            if self.zeros > 0 || rest.iter().any(|b| *b != 0) {
                return Err(self.broken("data after the end of the archive".into()));
            }
            self.at = self.segment.len();
            if !self.next_line()? {
                return Ok(());
            }
        }
    }
}

impl<R: BufRead> Read for SplitStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.segment.len() {
                let n = buf.len().min(self.segment.len() - self.at);
                buf[..n].copy_from_slice(&self.segment[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.zeros > 0 {
                let n = (buf.len() as u64).min(self.zeros) as usize;
                buf[..n].fill(0);
                self.zeros -= n as u64;
                if self.zeros > 0 && (self.zeros >> 26) != ((self.zeros + n as u64) >> 26) {
                    // every 64 MiB of a large (or lying) size
                    self.check_time()?;
                }
                return Ok(n);
            }
            if !self.next_line()? {
                return Ok(0);
            }
        }
    }
}

/// Standard base64 with padding (what tar-split writes); `None` when not.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const fn table() -> [u8; 256] {
        let a = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 64 {
            t[a[i] as usize] = i as u8;
            i += 1;
        }
        t
    }
    const T: [u8; 256] = table();
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return None;
    }
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body {
        let v = T[c as usize];
        if v == 0xff {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // leftover bits must be zero padding
    if acc != 0 {
        return None;
    }
    Some(out)
}
