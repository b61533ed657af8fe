//! Writing tars: a small ustar/PAX writer (byte-exact names, PAX records for long
//! names and xattrs, as Go's archive/tar produces) and the overlay -> OCI conversion of
//! a layer's diff directory.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::fsutil;
use super::{ArchiveError, IdMappings, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// Tar entry types we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// Everything one entry's header says.
#[derive(Debug, Clone)]
pub struct Header {
    /// Name inside the archive, relative, directories ending in '/'.
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Content length (regular files only).
    pub size: u64,
    /// Symlink target or hardlink target name.
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Header {
    pub fn new(name: impl Into<Vec<u8>>, kind: Kind) -> Header {
        Header {
            name: name.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }
}

/// One PAX record: "<len> <key>=<value>\n", where <len> counts itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Split a name into ustar (prefix, name) fields, if it fits.
fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    // The name part must be non-empty and fit in 100 bytes, the prefix in 155.
    for i in (0..name.len()).rev() {
        if name[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i + 1 < name.len() {
            return Some((&name[..i], &name[i + 1..]));
        }
    }
    None
}

/// A streaming tar writer.
pub struct TarWriter<W: Write> {
    w: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> Self {
        TarWriter { w }
    }

    fn raw_header(
        &mut self,
        h: &Header,
        name: &[u8],
        prefix: &[u8],
        link: &[u8],
        size: u64,
    ) -> io::Result<()> {
        let mut t = tar::Header::new_ustar();
        {
            let old = t.as_old_mut();
            let n = name.len().min(100);
            old.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            old.linkname[..l].copy_from_slice(&link[..l]);
        }
        if let Some(u) = t.as_ustar_mut() {
            u.prefix[..prefix.len()].copy_from_slice(prefix);
        }
        t.set_mode(h.mode & 0o7777);
        t.set_uid(u64::from(h.uid));
        t.set_gid(u64::from(h.gid));
        t.set_mtime(h.mtime.max(0) as u64);
        t.set_size(size);
        t.set_entry_type(tar::EntryType::new(h.kind.flag()));
        if matches!(h.kind, Kind::Char | Kind::Block) {
            t.set_device_major(h.dev_major)?;
            t.set_device_minor(h.dev_minor)?;
        }
        t.set_cksum();
        self.w.write_all(t.as_bytes())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (512 - (len % 512) as usize) % 512;
        self.w.write_all(&[0u8; 512][..rem])
    }

    /// Write one entry; `data` must yield exactly `h.size` bytes for a regular file.
    pub fn append(&mut self, h: &Header, data: &mut dyn Read) -> io::Result<()> {
        let mut pax = Vec::new();
        let split = ustar_split(&h.name);
        if split.is_none() {
            pax_record(&mut pax, b"path", &h.name);
        }
        if h.link.len() > 100 {
            pax_record(&mut pax, b"linkpath", &h.link);
        }
        for (k, v) in &h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let mut t = tar::Header::new_ustar();
            t.as_old_mut().name[..14].copy_from_slice(b"././@PaxHeader");
            t.set_mode(0o644);
            t.set_uid(0);
            t.set_gid(0);
            t.set_mtime(h.mtime.max(0) as u64);
            t.set_size(pax.len() as u64);
            t.set_entry_type(tar::EntryType::XHeader);
            t.set_cksum();
            self.w.write_all(t.as_bytes())?;
            self.w.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let (prefix, name) = split.unwrap_or((&[], &h.name[..h.name.len().min(100)]));
        let size = if h.kind == Kind::File { h.size } else { 0 };
        self.raw_header(h, name, prefix, &h.link, size)?;
        if size > 0 {
            let copied = io::copy(&mut data.take(size), &mut self.w)?;
            if copied != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: content shrank while archiving ({copied} of {size} bytes)",
                        String::from_utf8_lossy(&h.name)
                    ),
                ));
            }
            self.pad(size)?;
        }
        Ok(())
    }

    /// Write the end-of-archive marker and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&[0u8; 1024])?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Xattrs that travel in layer tars, as Go's TarWithOptions selects them:
/// file capabilities, IMA signatures and `user.*` except overlayfs' own.
fn exported_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in fsutil::list_xattrs(path)? {
        let keep = name == b"security.capability"
            || name == b"security.ima"
            || (name.starts_with(b"user.")
                && !name.starts_with(b"user.overlay.")
                && !name.starts_with(b"user.fuseoverlayfs."));
        if !keep {
            continue;
        }
        if let Some(v) = fsutil::get_xattr(path, &name)? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether an upper-directory entry is one of the duplicates fuse-overlayfs
/// keeps beside its markers (issue 15 hook, `cvmfs.mount_program`): a 0/0
/// whiteout device whose own name starts with `.wh.` (it would become the
/// unrepresentable `.wh..wh.<x>`; fuse-overlayfs makes `.wh..opq` ones), and
/// the `.wh..wh..opq` file of a directory whose xattr already marks it
/// opaque (its marker is written once, from the xattr). A `.wh.*` regular
/// file otherwise goes out as it is: fuse-overlayfs' raw whiteout.
fn fuse_overlayfs_shadow(
    dir: &Path,
    name: &std::ffi::OsStr,
    md: &std::fs::Metadata,
) -> Result<bool, ArchiveError> {
    let name = name.as_bytes();
    if fsutil::is_whiteout(md) && name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Ok(true);
    }
    if name == WHITEOUT_OPAQUE.as_bytes() && md.file_type().is_file() {
        return fsutil::is_opaque_dir(dir);
    }
    Ok(false)
}

pub fn write_diff_tar<W: Write>(
    diff_dir: &Path,
    mappings: Option<&IdMappings>,
    w: W,
) -> Result<(), ArchiveError> {
    let mut d = DiffWriter {
        tw: TarWriter::new(w),
        mappings: mappings.filter(|m| !m.is_identity()),
        seen: HashMap::new(),
        root: diff_dir,
    };
    let md = std::fs::symlink_metadata(diff_dir).map_err(|e| ArchiveError::io(diff_dir, e))?;
    if fsutil::is_opaque_dir(diff_dir)? {
        d.opaque_marker(b"", &md)?;
    }
    d.walk(diff_dir, b"")?;
    d.tw.finish().map_err(|e| ArchiveError::io(diff_dir, e))?;
    Ok(())
}

struct DiffWriter<'a, W: Write> {
    tw: TarWriter<W>,
    mappings: Option<&'a IdMappings>,
    /// (dev, ino) of multiply-linked files already written -> their tar name.
    seen: HashMap<(u64, u64), Vec<u8>>,
    root: &'a Path,
}

impl<W: Write> DiffWriter<'_, W> {
    fn owner(&self, path: &Path, md: &std::fs::Metadata) -> Result<(u32, u32), ArchiveError> {
        match self.mappings {
            None => Ok((md.uid(), md.gid())),
            Some(m) => {
                m.to_container(md.uid(), md.gid())
                    .map_err(|source| ArchiveError::IdMapping {
                        path: path.display().to_string(),
                        source,
                    })
            }
        }
    }

    fn put(&mut self, h: &Header, data: &mut dyn Read, path: &Path) -> Result<(), ArchiveError> {
        self.tw
            .append(h, data)
            .map_err(|e| ArchiveError::io(path, e))
    }

    /// `<dir>/.wh..wh..opq`, owned and permissioned like the directory.
    fn opaque_marker(
        &mut self,
        dir_name: &[u8],
        md: &std::fs::Metadata,
    ) -> Result<(), ArchiveError> {
        let mut name = dir_name.to_vec();
        name.extend_from_slice(WHITEOUT_OPAQUE.as_bytes());
        let mut h = Header::new(name, Kind::File);
        h.mode = md.mode() & 0o777;
        (h.uid, h.gid) = self.owner(self.root, md)?;
        h.mtime = md.mtime();
        let root = self.root;
        self.put(&h, &mut io::empty(), root)
    }

    fn walk(&mut self, dir: &Path, prefix: &[u8]) -> Result<(), ArchiveError> {
        // A running container may remove files while we walk: like Go, leave out
        // what vanished instead of failing the whole diff.
        let names = match fsutil::sorted_names(dir) {
            Ok(n) => n,
            Err(e) if gone(&e) && dir != self.root => return Ok(()),
            Err(e) => return Err(ArchiveError::io(dir, e)),
        };
        for name in names {
            self.walk_entry(dir, prefix, &name)?;
        }
        Ok(())
    }

    /// One directory entry: a whiteout, or a node (and a directory's contents).
    fn walk_entry(
        &mut self,
        dir: &Path,
        prefix: &[u8],
        name: &std::ffi::OsStr,
    ) -> Result<(), ArchiveError> {
        let path = dir.join(name);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(ArchiveError::io(&path, e)),
        };
        if fuse_overlayfs_shadow(dir, name, &md)? {
            return Ok(());
        }
        if fsutil::is_whiteout(&md) {
            let mut wh = prefix.to_vec();
            wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            wh.extend_from_slice(name.as_bytes());
            let mut h = Header::new(wh, Kind::File);
            // A whiteout's owner carries no meaning; do not fail over it.
            (h.uid, h.gid) = self.owner(&path, &md).unwrap_or((0, 0));
            h.mtime = md.mtime();
            return self.put(&h, &mut io::empty(), &path);
        }
        // Sockets cannot be archived (Go skips them too).
        let Some(kind) = kind_of(md.file_type()) else {
            return Ok(());
        };
        let mut rel = prefix.to_vec();
        rel.extend_from_slice(name.as_bytes());
        let Some(h) = self.node_header(&path, &md, rel.clone(), kind)? else {
            return Ok(());
        };
        if h.kind == Kind::File && h.size > 0 {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if gone(&e) => return Ok(()),
                Err(e) => return Err(ArchiveError::io(&path, e)),
            };
            self.put(&h, &mut f, &path)?;
        } else {
            self.put(&h, &mut io::empty(), &path)?;
        }
        // Only a name that made it into the archive can be a later link's target.
        if kind != Kind::Dir && md.nlink() > 1 && h.kind != Kind::Hardlink {
            self.seen.insert((md.dev(), md.ino()), rel);
        }
        if kind == Kind::Dir {
            if fsutil::is_opaque_dir(&path)? {
                self.opaque_marker(&h.name.clone(), &md)?;
            }
            self.walk(&path, &h.name)?;
        }
        Ok(())
    }

    /// The header of a node; `None` when it vanished while being read. A
    /// second name of an inode already archived becomes a hardlink.
    fn node_header(
        &mut self,
        path: &Path,
        md: &std::fs::Metadata,
        rel: Vec<u8>,
        kind: Kind,
    ) -> Result<Option<Header>, ArchiveError> {
        let mut h = Header::new(rel, kind);
        h.mode = md.mode() & 0o7777;
        (h.uid, h.gid) = self.owner(path, md)?;
        h.mtime = md.mtime();
        h.xattrs = match exported_xattrs(path) {
            Ok(x) => x,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(ArchiveError::io(path, e)),
        };
        match kind {
            Kind::Dir => h.name.push(b'/'),
            Kind::File => h.size = md.len(),
            Kind::Symlink => match std::fs::read_link(path) {
                Ok(t) => h.link = t.into_os_string().into_vec(),
                Err(e) if gone(&e) => return Ok(None),
                Err(e) => return Err(ArchiveError::io(path, e)),
            },
            Kind::Char | Kind::Block => {
                h.dev_major = rustix::fs::major(md.rdev() as _);
                h.dev_minor = rustix::fs::minor(md.rdev() as _);
            }
            _ => {}
        }
        if kind != Kind::Dir && md.nlink() > 1 {
            if let Some(first) = self.seen.get(&(md.dev(), md.ino())) {
                h.kind = Kind::Hardlink;
                h.link = first.clone();
                h.size = 0;
            }
        }
        Ok(Some(h))
    }
}

/// The archive kind of a file type; `None` for sockets, which are not archived.
fn kind_of(ft: std::fs::FileType) -> Option<Kind> {
    Some(if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_socket() {
        return None;
    } else {
        Kind::Fifo
    })
}

/// The entry disappeared (or its parent was replaced) since it was listed.
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"x");
        assert_eq!(v, b"9 path=x\n");
        let mut v = Vec::new();
        pax_record(&mut v, b"k", &[b'a'; 93]);
        // 1+1+1+93+1 = 97 bytes of rest, plus "100" would be 100; "99" gives 99 ≠ 99+2
        let s = String::from_utf8(v.clone()).unwrap();
        let n: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, v.len());
    }

    #[test]
    fn ustar_split_uses_prefix() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let (p, n) = ustar_split(long.as_bytes()).unwrap();
        assert_eq!(p.len(), 120);
        assert_eq!(n.len(), 90);
        assert!(ustar_split("x".repeat(101).as_bytes()).is_none());
    }
}
