//! Restoring the image's owners with one metadata-only EROFS image per CVMFS
//! layer (issue 13, "Correct owners whatever the client says").
//!
//! The image holds the layer's whole tree as the image has it: every entry
//! with the image's owner (`ownership.json`, 0:0 when not listed), the mode,
//! times and xattrs the repository shows; directories, symlinks, devices and
//! fifos as themselves; regular files as holes of the right size carrying
//! `trusted.overlay.metacopy` and an absolute `trusted.overlay.redirect` to
//! the same file in the repository, mounted as a data-only lower
//! (`datadir+`). The layer's raw `.wh.<name>` markers become overlay
//! whiteouts (0/0 character devices) and `.wh..wh..opq` the opaque xattr on
//! its directory; the root's CVMFS catalog markers are left out. So the
//! mounted image replaces both the CVMFS layer directory and the whiteout
//! layer above it in a stack: `n` layers take `n` lowers plus one data-only
//! lower, whatever the client reports as owners.
//!
//! Cost: one directory read per directory and one `lstat` (plus the xattr
//! list) per entry of the layer, all catalog operations on CVMFS (no file
//! content is read), and one local file per layer.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use cvmfs_erofs::{Image, Kind, Meta, NodeId};

use super::whiteouts::{Owner, CATALOG_MARKERS};
use crate::archive::fsutil;
use crate::archive::WHITEOUT_PREFIX;

/// Version of the image content; part of every cache key so a driver writing
/// another content never mounts an old image.
pub const IMAGE_VERSION: u32 = 1;

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
pub(crate) const METACOPY: &[u8] = b"trusted.overlay.metacopy";
pub(crate) const REDIRECT: &[u8] = b"trusted.overlay.redirect";
const OPAQUE: &[u8] = b"trusted.overlay.opaque";

pub(crate) fn ctx(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

pub(crate) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The metadata image of `layer` whose regular files redirect to
/// `/<data_path>/<path in the layer>` (`data_path`: the layer directory
/// relative to the data-only lower), owners as `owners` list them (0:0
/// otherwise; `None`: as the repository shows them, for a layer without
/// ownership metadata that shares a stack with restored ones). Every listed
/// path must be found by the walk (which never follows a symlink). Gives up
/// at `deadline`.
pub fn layer_image(
    layer: &Path,
    data_path: &Path,
    owners: Option<&[Owner]>,
    deadline: Option<Instant>,
) -> io::Result<Image> {
    let mut listed: HashMap<&Path, (u32, u32)> = owners
        .unwrap_or_default()
        .iter()
        .map(|o| (o.path.as_path(), (o.uid, o.gid)))
        .collect();
    let root_md = fs::symlink_metadata(layer).map_err(|e| ctx(e, "stat", layer))?;
    let as_shown = owners.is_none();
    let shown = |md: &fs::Metadata| (md.uid(), md.gid());
    let root_owner = match listed.remove(Path::new("")) {
        Some(o) => o,
        None if as_shown => shown(&root_md),
        None => (0, 0),
    };
    let mut img = Image::new(meta_of(&root_md, root_owner));
    let root = img.root();
    set_xattrs(&mut img, root, layer)?;
    let mut walk = Walk {
        layer,
        redirect_base: Path::new("/").join(data_path),
        listed,
        as_shown,
        links: HashMap::new(),
        seen: 0,
        deadline,
    };
    let mut todo = vec![(PathBuf::new(), root)];
    while let Some((rel, node)) = todo.pop() {
        walk.add_dir(&mut img, &rel, node, &mut todo)?;
    }
    if let Some(p) = walk.listed.keys().min() {
        return Err(invalid(format!(
            "ownership entry {}: {}",
            p.display(),
            why_unreached(layer, p)
        )));
    }
    Ok(img)
}

/// Why listed path `rel` was not met by the walk of `layer` (which follows
/// no symlink): a parent that is no real directory, or no such entry.
fn why_unreached(layer: &Path, rel: &Path) -> String {
    let mut at = PathBuf::new();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        at.push(c);
        let real_dir = fs::symlink_metadata(layer.join(&at)).is_ok_and(|m| m.is_dir());
        if !real_dir {
            return format!(
                "parent {} is not a directory of the layer reached without a symlink",
                layer.join(&at).display()
            );
        }
    }
    format!("{} is not in the layer", layer.join(rel).display())
}

/// State of one walk over a layer.
struct Walk<'a> {
    layer: &'a Path,
    redirect_base: PathBuf,
    /// Listed owners not met yet.
    listed: HashMap<&'a Path, (u32, u32)>,
    /// Owners not listed are the shown ones (else 0:0).
    as_shown: bool,
    /// First node of each multiply-linked file, by (device, inode).
    links: HashMap<(u64, u64), NodeId>,
    seen: usize,
    deadline: Option<Instant>,
}

impl Walk<'_> {
    /// Adds the entries of directory `rel` (image node `node`); queues its
    /// subdirectories in `todo`.
    fn add_dir(
        &mut self,
        img: &mut Image,
        rel: &Path,
        node: NodeId,
        todo: &mut Vec<(PathBuf, NodeId)>,
    ) -> io::Result<()> {
        let at = self.layer.join(rel);
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(&at)
            .map_err(|e| ctx(e, "read", &at))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| ctx(e, "read", &at))?;
        names.sort();
        let mut markers = Vec::new();
        for name in names {
            self.tick()?;
            let bytes = name.as_bytes();
            if bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                markers.push(name);
                continue;
            }
            if rel.as_os_str().is_empty() && CATALOG_MARKERS.iter().any(|m| name == OsStr::new(m)) {
                continue;
            }
            let child_rel = rel.join(&name);
            if let Some(dir) = self.add_entry(img, node, &child_rel)? {
                todo.push((child_rel, dir));
            }
        }
        for m in markers {
            apply_marker(img, node, &m.as_bytes()[WHITEOUT_PREFIX.len()..])
                .map_err(|e| invalid(format!("{}: {e}", at.join(&m).display())))?;
        }
        Ok(())
    }

    /// Adds entry `rel` under `parent`; returns its node when it is a
    /// directory (to be walked).
    fn add_entry(
        &mut self,
        img: &mut Image,
        parent: NodeId,
        rel: &Path,
    ) -> io::Result<Option<NodeId>> {
        let src = self.layer.join(rel);
        let name = rel.file_name().unwrap_or_default().as_bytes();
        let md = match fs::symlink_metadata(&src) {
            Ok(md) => md,
            // Listed but gone when looked up: nothing to show.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ctx(e, "stat", &src)),
        };
        let owner = match self.listed.remove(rel) {
            Some(o) => o,
            None if self.as_shown => (md.uid(), md.gid()),
            None => (0, 0),
        };
        let ft = md.file_type();
        if ft.is_file() && md.nlink() > 1 {
            if let Some(&first) = self.links.get(&(md.dev(), md.ino())) {
                img.hard_link(parent, name, first).map_err(image_error)?;
                return Ok(None);
            }
        }
        let kind = kind_of(&md, &src)?;
        let node = img
            .add(parent, name, meta_of(&md, owner), kind)
            .map_err(image_error)?;
        if !ft.is_symlink() {
            set_xattrs(img, node, &src)?;
        }
        if ft.is_file() && md.len() > 0 {
            let redirect = self.redirect_base.join(rel);
            img.set_xattr(node, METACOPY, b"").map_err(image_error)?;
            img.set_xattr(node, REDIRECT, redirect.as_os_str().as_bytes())
                .map_err(image_error)?;
        }
        if ft.is_file() && md.nlink() > 1 {
            self.links.insert((md.dev(), md.ino()), node);
        }
        Ok(ft.is_dir().then_some(node))
    }

    fn tick(&mut self) -> io::Result<()> {
        self.seen += 1;
        match self.deadline {
            Some(d) if self.seen % 1024 == 0 && Instant::now() >= d => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "gave up building the owner image of {} after {} entries (time limit reached: raise cvmfs.whiteout_timeout)",
                    self.layer.display(),
                    self.seen
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `.wh.<name>` in directory `dir`: `name` deleted below (a whiteout
/// device), or the directory opaque for `.wh..wh..opq`. A name the layer
/// also has as a directory becomes opaque (deleted, then re-created); a
/// non-directory of that name already hides what is below.
pub(crate) fn apply_marker(
    img: &mut Image,
    dir: NodeId,
    target: &[u8],
) -> Result<(), cvmfs_erofs::Error> {
    if [WHITEOUT_PREFIX.as_bytes(), target].concat() == OPAQUE_MARKER {
        return img.set_xattr(dir, OPAQUE, b"y");
    }
    match img.child(dir, target) {
        Some(n) if *img.kind(n) == Kind::Dir => img.set_xattr(n, OPAQUE, b"y"),
        Some(_) => Ok(()),
        None => {
            let whiteout = Meta {
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: 0,
                mtime_nsec: 0,
            };
            let dev = Kind::CharDev { major: 0, minor: 0 };
            img.add(dir, target, whiteout, dev).map(|_| ())
        }
    }
}

fn image_error(e: cvmfs_erofs::Error) -> io::Error {
    invalid(e.to_string())
}

pub(crate) fn meta_of(md: &fs::Metadata, (uid, gid): (u32, u32)) -> Meta {
    Meta {
        mode: (md.mode() & 0o7777) as u16,
        uid,
        gid,
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
    }
}

fn kind_of(md: &fs::Metadata, src: &Path) -> io::Result<Kind> {
    let ft = md.file_type();
    let dev = || (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
    Ok(if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        let t = fs::read_link(src).map_err(|e| ctx(e, "read link", src))?;
        Kind::Symlink(t.into_os_string().into_vec())
    } else if ft.is_char_device() {
        let (major, minor) = dev();
        Kind::CharDev { major, minor }
    } else if ft.is_block_device() {
        let (major, minor) = dev();
        Kind::BlockDev { major, minor }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else {
        Kind::File { size: md.len() }
    })
}

/// The xattrs of `src` but overlay's own, on `node`.
pub(crate) fn set_xattrs(img: &mut Image, node: NodeId, src: &Path) -> io::Result<()> {
    for name in fsutil::list_xattrs(src).map_err(|e| ctx(e, "list xattrs of", src))? {
        if crate::rootless::is_overlay_xattr(&name) {
            continue;
        }
        if let Some(v) = fsutil::get_xattr(src, &name).map_err(|e| ctx(e, "read xattr of", src))? {
            img.set_xattr(node, &name, &v).map_err(image_error)?;
        }
    }
    Ok(())
}

/// Writes `img` to `staging`, makes it durable and renames it to `built`
/// (an equal image someone else finished first is kept). A crash leaves at
/// most the staging file.
pub fn write_image(img: &Image, staging: &Path, built: &Path) -> io::Result<()> {
    let bytes = img.to_bytes().map_err(image_error)?;
    let written = (|| {
        let mut f = fs::File::create_new(staging)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(staging);
        return Err(ctx(e, "write owner image", staging));
    }
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        staging,
        rustix::fs::CWD,
        built,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => {
            let _ = fs::remove_file(staging);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(staging);
            Err(ctx(fsutil::ioe(e), "publish owner image", built))
        }
    }
}

/// Whether `path` holds an image this driver wrote, whole: its superblock
/// and its length agree. A damaged one is rebuilt, never mounted.
pub fn image_is_sound(path: &Path) -> bool {
    let check = || -> io::Result<bool> {
        let mut f = fs::File::open(path)?;
        let len = f.metadata()?.len();
        let mut head = vec![0u8; 2048];
        f.read_exact(&mut head)?;
        Ok(cvmfs_erofs::check_image(&head, len).is_ok())
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(path: &str, uid: u32) -> Owner {
        Owner {
            path: PathBuf::from(path),
            uid,
            gid: uid,
        }
    }

    /// A layer as a publisher lays it out: raw markers, a catalog marker.
    fn layer() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let l = t.path();
        fs::create_dir_all(l.join("etc/app")).unwrap();
        fs::create_dir_all(l.join("opt/redone")).unwrap();
        fs::write(l.join("etc/app/conf"), b"data").unwrap();
        fs::write(l.join("etc/empty"), b"").unwrap();
        fs::write(l.join("etc/.wh.gone"), b"").unwrap();
        fs::write(l.join("etc/app/.wh..wh..opq"), b"").unwrap();
        fs::write(l.join("opt/.wh.redone"), b"").unwrap();
        fs::write(l.join(".cvmfscatalog"), b"").unwrap();
        std::os::unix::fs::symlink("etc", l.join("link")).unwrap();
        t
    }

    #[test]
    fn markers_become_overlay_whiteouts_and_files_redirect_into_the_data_lower() {
        let t = layer();
        let owners = [owner("etc/app", 1000), owner("etc/app/conf", 1001)];
        let img = layer_image(t.path(), Path::new("layers/L"), Some(&owners), None).unwrap();
        let root = img.root();
        assert!(
            img.child(root, b".cvmfscatalog").is_none(),
            "catalog marker left out"
        );
        let etc = img.child(root, b"etc").unwrap();
        let gone = img.child(etc, b"gone").expect("a whiteout for .wh.gone");
        assert_eq!(*img.kind(gone), Kind::CharDev { major: 0, minor: 0 });
        assert!(img.child(etc, b".wh.gone").is_none(), "no raw marker");
        let app = img.child(etc, b"app").unwrap();
        assert_eq!(img.xattr(app, OPAQUE), Some(&b"y"[..]));
        assert_eq!(img.meta(app).uid, 1000);
        let conf = img.child(app, b"conf").unwrap();
        assert_eq!(img.meta(conf).uid, 1001);
        assert_eq!(img.xattr(conf, METACOPY), Some(&b""[..]));
        assert_eq!(
            img.xattr(conf, REDIRECT),
            Some(&b"/layers/L/etc/app/conf"[..])
        );
        let empty = img.child(etc, b"empty").unwrap();
        assert_eq!(
            img.xattr(empty, METACOPY),
            None,
            "an empty file needs no data"
        );
        assert_eq!(img.meta(etc).uid, 0, "unlisted entries are root's");
        // deleted and re-created: the directory hides what is below
        let opt = img.child(root, b"opt").unwrap();
        let redone = img.child(opt, b"redone").unwrap();
        assert_eq!(*img.kind(redone), Kind::Dir);
        assert_eq!(img.xattr(redone, OPAQUE), Some(&b"y"[..]));
        let link = img.child(root, b"link").unwrap();
        assert_eq!(*img.kind(link), Kind::Symlink(b"etc".to_vec()));
    }

    #[test]
    fn listed_owners_must_be_entries_reached_without_a_symlink() {
        let t = layer();
        for bad in ["etc/missing", "link/app"] {
            let owners = [owner(bad, 5)];
            let Err(e) = layer_image(t.path(), Path::new("L"), Some(&owners), None) else {
                panic!("{bad}: accepted");
            };
            assert!(
                e.to_string().contains(&format!("ownership entry {bad}")),
                "{e}"
            );
        }
    }

    #[test]
    fn without_ownership_metadata_owners_are_as_shown() {
        let t = layer();
        let img = layer_image(t.path(), Path::new("L"), None, None).unwrap();
        let etc = img.child(img.root(), b"etc").unwrap();
        let shown = fs::metadata(t.path().join("etc")).unwrap().uid();
        assert_eq!(img.meta(etc).uid, shown);
    }

    #[test]
    fn a_damaged_or_missing_image_is_not_sound() {
        let t = layer();
        let img = layer_image(t.path(), Path::new("L"), Some(&[]), None).unwrap();
        let built = t.path().join("img.erofs");
        write_image(&img, &t.path().join("staging"), &built).unwrap();
        assert!(image_is_sound(&built));
        assert!(!t.path().join("staging").exists());
        let bytes = fs::read(&built).unwrap();
        fs::write(&built, &bytes[..bytes.len() - 1]).unwrap();
        assert!(!image_is_sound(&built), "truncated");
        let mut bad = bytes.clone();
        bad[1024] ^= 0xff;
        fs::write(&built, &bad).unwrap();
        assert!(!image_is_sound(&built), "superblock damaged");
        assert!(!image_is_sound(&t.path().join("none.erofs")));
    }
}
