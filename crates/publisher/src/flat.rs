//! Building `.flat/XX/<config digest>/`: the image's root filesystem with every
//! layer applied in order, whiteouts honoured and ownership kept.
//!
//! It is built from the layers' `layerfs` directories (raw `.wh.*` markers), with
//! overlayfs semantics: a marker deletes the name from the layers below, an opaque
//! marker empties the directory of what the layers below put there, a directory
//! merges with a directory below and replaces anything else, and every other entry
//! replaces what was there. Unlike DUCC's flat tree, this is the true OCI root
//! filesystem: no setuid bits are dropped and nothing is added.
//! Regular files are hardlinks to the layer's files (no data is copied): safe
//! because a flat regular file is always the topmost layer's inode (OCI re-ships
//! a file whose mode or owner changes) and linked files never get metadata
//! applied (docs/store-format.md, *Hardlinks*). On a
//! real repository CernVM-FS stores content by hash anyway; a hardlink across
//! directories becomes independent files with the same content there.
//! The destination is a private temporary directory, and we only ever descend
//! into directories we checked with `lstat`, so no symlink is followed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fsx::remove_all;
use super::{Error, Result};
use cvmfs_graphdriver::archive::{
    copy, fsutil, ArchiveError, OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX,
};

/// Merge the layer directory `layer` into the flat tree `flat` (an existing dir).
pub fn merge_layer(layer: &Path, flat: &Path) -> Result<()> {
    merge_layer_named(layer, flat, None)
}

/// [`merge_layer`], knowing which paths the layer's tar names (`named`, as
/// [`named_paths`] gives them). A directory of `layer` the tar does not name
/// is a parent the unpacker created (with the publish time): where the flat
/// tree already has that directory it keeps its attributes and times, as
/// `umoci unpack` and containers/storage leave them.
pub fn merge_layer_named(
    layer: &Path,
    flat: &Path,
    named: Option<&HashSet<Vec<u8>>>,
) -> Result<()> {
    let mut m = Merger {
        links: HashMap::new(),
        dirs: Vec::new(),
        named,
    };
    m.merge_dir(layer, flat, b"")?;
    let md = fs::symlink_metadata(layer).map_err(|e| Error::io(layer, e))?;
    m.meta(layer, flat, &md)?;
    m.dirs.push((flat.to_path_buf(), md));
    for (p, md) in m.dirs.iter().rev() {
        set_times(p, md)?;
    }
    Ok(())
}

struct Merger<'a> {
    links: HashMap<(u64, u64), PathBuf>,
    dirs: Vec<(PathBuf, fs::Metadata)>,
    named: Option<&'a HashSet<Vec<u8>>>,
}

/// The directories of `layer` that its tar names, from its tar-split file
/// (gzip, JSON lines; `name` or base64 `name_raw` of each entry), cleaned and
/// relative (`./usr/lib/` → `usr/lib`). `None` when there is no tar-split
/// file. Only directories matter to the merge, so only they are kept: memory
/// grows with the layer's directories, not with its entries (a layer of
/// 100 000 long names stays small).
pub fn named_paths(tar_split_gz: &Path, layer: &Path) -> Result<Option<HashSet<Vec<u8>>>> {
    use std::io::BufRead;
    let f = match fs::File::open(tar_split_gz) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(tar_split_gz, e)),
    };
    let dirs = layer_dirs(layer)?;
    let mut names = HashSet::new();
    let r = io::BufReader::new(flate2::read::GzDecoder::new(f));
    for line in r.lines() {
        let line = line.map_err(|e| Error::io(tar_split_gz, e))?;
        let e: cvmfs_format::tarsplit::TarSplitEntry = serde_json::from_str(&line)
            .map_err(|e| Error::msg(format!("{}: {e}", tar_split_gz.display())))?;
        if e.kind != 1 {
            continue;
        }
        let name = match (e.name, e.name_raw) {
            (Some(n), _) => n.into_bytes(),
            (None, Some(raw)) => base64_decode(&raw).ok_or_else(|| {
                Error::msg(format!("{}: bad name_raw {raw:?}", tar_split_gz.display()))
            })?,
            _ => continue,
        };
        let clean = crate::tarsplit::go_clean(&name);
        let rel = clean.strip_prefix(b"/").unwrap_or(&clean);
        if let Some(d) = dirs.get(rel) {
            names.insert(d.clone());
        }
    }
    Ok(Some(names))
}

/// Every directory below `layer`, relative to it (symlinks not followed).
fn layer_dirs(layer: &Path) -> Result<HashSet<Vec<u8>>> {
    let mut dirs = HashSet::new();
    let mut todo = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let dir = layer.join(std::ffi::OsStr::from_bytes(&rel));
        for ent in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let ent = ent.map_err(|e| Error::io(&dir, e))?;
            if ent
                .file_type()
                .map_err(|e| Error::io(&ent.path(), e))?
                .is_dir()
            {
                let name = ent.file_name();
                let child = [
                    &rel[..],
                    if rel.is_empty() { b"" } else { b"/" },
                    name.as_bytes(),
                ]
                .concat();
                dirs.insert(child.clone());
                todo.push(child);
            }
        }
    }
    Ok(dirs)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = acc << 6 | A.iter().position(|a| *a == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn set_times(p: &Path, md: &fs::Metadata) -> Result<()> {
    fsutil::set_times(p, &fsutil::timestamps_of(md)).map_err(|e| Error::io(p, e))
}

/// The opaque marker is overlay state of a layer directory, not part of the rootfs.
const FLAT_SKIPPED_XATTRS: &[&[u8]] = &[OVERLAY_OPAQUE_XATTR.as_bytes()];

fn archive_err(e: ArchiveError) -> Error {
    Error(e.to_string())
}

fn sorted(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    v.sort();
    Ok(v)
}

impl Merger<'_> {
    fn merge_dir(&mut self, src: &Path, dst: &Path, rel: &[u8]) -> Result<()> {
        let names = sorted(src)?;
        // deletions first: they refer to what the lower layers left
        if names
            .iter()
            .any(|n| n.as_bytes() == WHITEOUT_OPAQUE.as_bytes())
        {
            for n in sorted(dst)? {
                remove_all(&dst.join(n))?;
            }
        }
        for n in &names {
            let b = n.as_bytes();
            if b.starts_with(WHITEOUT_PREFIX.as_bytes()) && !b.starts_with(b".wh..wh.") {
                let victim = &b[WHITEOUT_PREFIX.len()..];
                if victim.is_empty() || victim == b"." || victim == b".." {
                    continue;
                }
                remove_all(&dst.join(std::ffi::OsStr::from_bytes(victim)))?;
            }
        }
        for n in &names {
            if n.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
                continue;
            }
            let s = src.join(n);
            let d = dst.join(n);
            let md = fs::symlink_metadata(&s).map_err(|e| Error::io(&s, e))?;
            let existing = fs::symlink_metadata(&d).ok();
            if md.is_dir() {
                let child = [rel, if rel.is_empty() { b"" } else { b"/" }, n.as_bytes()].concat();
                match existing {
                    Some(x) if x.is_dir() && self.named.is_some_and(|k| !k.contains(&child)) => {
                        // an implicit parent over the flat tree's directory:
                        // that one stays, times included
                        self.merge_dir(&s, &d, &child)?;
                        self.dirs.push((d, x));
                        continue;
                    }
                    Some(x) if x.is_dir() => {}
                    Some(_) => {
                        remove_all(&d)?;
                        fs::create_dir(&d).map_err(|e| Error::io(&d, e))?;
                    }
                    None => fs::create_dir(&d).map_err(|e| Error::io(&d, e))?,
                }
                self.merge_dir(&s, &d, &child)?;
                self.meta(&s, &d, &md)?;
                self.dirs.push((d, md));
                continue;
            }
            if existing.is_some() {
                remove_all(&d)?;
            }
            self.copy_leaf(&s, &d, &md)?;
        }
        Ok(())
    }

    fn copy_leaf(&mut self, s: &Path, d: &Path, md: &fs::Metadata) -> Result<()> {
        if md.file_type().is_file() {
            // A regular file is shared with its layer by a hardlink: same content,
            // owner, mode, times and xattrs, no second copy (hardlinks inside the
            // layer stay hardlinks, as they share the source inode). Copy only
            // across filesystems.
            match fs::hard_link(s, d) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {}
                Err(e) => return Err(Error::io(d, e)),
            }
        }
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                if fs::symlink_metadata(first).is_ok() {
                    return fs::hard_link(first, d).map_err(|e| Error::io(d, e));
                }
            }
            self.links.insert((md.dev(), md.ino()), d.to_path_buf());
        }
        copy::copy_node(s, d, md, FLAT_SKIPPED_XATTRS).map_err(archive_err)
    }

    /// Owner, then mode (chown clears setuid), then xattrs. A directory
    /// merged over a lower one takes all of its attributes from the upper
    /// layer, as overlay shows it: xattrs only the lower one had go.
    fn meta(&self, s: &Path, d: &Path, md: &fs::Metadata) -> Result<()> {
        let keep = fsutil::list_xattrs(s).map_err(|e| Error::io(s, e))?;
        for name in fsutil::list_xattrs(d).map_err(|e| Error::io(d, e))? {
            if keep.contains(&name) || name == b"security.selinux" {
                continue;
            }
            let cname = std::ffi::OsStr::from_bytes(&name);
            match rustix::fs::lremovexattr(d, cname) {
                Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                Err(e) => {
                    return Err(Error::io(
                        d,
                        io::Error::new(
                            io::Error::from_raw_os_error(e.raw_os_error()).kind(),
                            format!("removing xattr {}: {e}", String::from_utf8_lossy(&name)),
                        ),
                    ))
                }
            }
        }
        copy::copy_metadata(s, d, md, FLAT_SKIPPED_XATTRS).map_err(archive_err)
    }
}
