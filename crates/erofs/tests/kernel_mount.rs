//! Privileged: images this crate writes, mounted by the kernel
//! (`mount -t erofs <file> <dir>`, file-backed EROFS), show exactly the tree
//! they were built from: names, types, modes, owners, times, sizes, link
//! counts, device numbers, symlink targets and xattrs. Marked
//! `#[ignore = "needs root"]` (hack/test-rust.sh runs it with
//! `--include-ignored` as root); run without root it fails naming why.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cvmfs_erofs::{Image, Kind, Meta, NodeId};
use rustix::fs::{lgetxattr, llistxattr, lsetxattr, mknodat, FileType, Mode, XattrFlags, CWD};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (mounts): run it as root, or leave out --include-ignored"
    );
}

fn meta_of(m: &fs::Metadata) -> Meta {
    Meta {
        mode: (m.mode() & 0o7777) as u16,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec() as u32,
    }
}

fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = llistxattr(p, &mut names).unwrap();
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        let len = lgetxattr(p, name, &mut v).unwrap();
        out.insert(name.to_vec(), v[..len].to_vec());
    }
    out
}

/// An image of the tree at `src`, as the driver would build one (regular
/// files as holes).
fn image_of(src: &Path) -> Image {
    let mut img = Image::new(meta_of(&fs::symlink_metadata(src).unwrap()));
    let mut links = HashMap::new();
    let root = img.root();
    add_dir(&mut img, root, src, &mut links);
    img
}

fn add_dir(img: &mut Image, at: NodeId, dir: &Path, links: &mut HashMap<(u64, u64), NodeId>) {
    for (k, v) in xattrs(dir) {
        img.set_xattr(at, &k, &v).unwrap();
    }
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let m = fs::symlink_metadata(&p).unwrap();
        let name = p.file_name().unwrap().as_bytes();
        if !m.is_dir() && m.nlink() > 1 {
            if let Some(&t) = links.get(&(m.dev(), m.ino())) {
                img.hard_link(at, name, t).unwrap();
                continue;
            }
        }
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let (major, minor) = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink(fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec())
        } else if ft.is_char_device() {
            Kind::CharDev { major, minor }
        } else if ft.is_block_device() {
            Kind::BlockDev { major, minor }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            Kind::File { size: m.len() }
        };
        let node = img.add(at, name, meta_of(&m), kind).unwrap();
        if m.nlink() > 1 && !m.is_dir() {
            links.insert((m.dev(), m.ino()), node);
        }
        if m.is_dir() {
            add_dir(img, node, &p, links);
        } else {
            for (k, v) in xattrs(&p) {
                img.set_xattr(node, &k, &v).unwrap();
            }
        }
    }
}

/// Compares `got` (mounted image) with `want` (source) entry by entry.
fn assert_same_tree(want: &Path, got: &Path) {
    let w = fs::symlink_metadata(want).unwrap();
    let g = fs::symlink_metadata(got).unwrap();
    let what = got.display();
    assert_eq!(g.mode(), w.mode(), "{what}: mode");
    assert_eq!((g.uid(), g.gid()), (w.uid(), w.gid()), "{what}: owner");
    assert_eq!(
        (g.mtime(), g.mtime_nsec()),
        (w.mtime(), w.mtime_nsec()),
        "{what}: mtime"
    );
    assert_eq!(xattrs(got), xattrs(want), "{what}: xattrs");
    if w.is_dir() {
        let names = |d: &Path| {
            let mut v: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (wn, gn) = (names(want), names(got));
        assert_eq!(gn, wn, "{what}: entries");
        assert_eq!(g.nlink(), w.nlink(), "{what}: nlink");
        for n in wn {
            assert_same_tree(&want.join(&n), &got.join(&n));
        }
        return;
    }
    assert_eq!(g.nlink(), w.nlink(), "{what}: nlink");
    assert_eq!(g.rdev(), w.rdev(), "{what}: rdev");
    if w.file_type().is_symlink() {
        assert_eq!(fs::read_link(got).unwrap(), fs::read_link(want).unwrap());
    } else if w.is_file() {
        assert_eq!(g.len(), w.len(), "{what}: size");
        if w.len() > 0 {
            // a hole: the data lives in the data-only lower
            let data = fs::read(got).unwrap();
            assert!(data.iter().all(|&b| b == 0), "{what}: holes read as zeros");
        }
    }
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_image(img: &Image, dir: &Path) -> Mounted {
    let file = dir.join("image.erofs");
    fs::write(&file, img.to_bytes().unwrap()).unwrap();
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = Command::new("mount")
        .args(["-t", "erofs", "-o", "ro"])
        .arg(&file)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Mounted(mnt)
}

fn make_source(src: &Path) {
    fs::create_dir_all(src.join("etc/app")).unwrap();
    fs::write(src.join("etc/app/conf"), b"hello").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("big"), vec![7u8; 3 << 20]).unwrap();
    fs::hard_link(src.join("big"), src.join("etc/big-link")).unwrap();
    symlink("app/conf", src.join("etc/short")).unwrap();
    symlink("x".repeat(3000), src.join("etc/long")).unwrap();
    mknodat(
        CWD,
        src.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let dev = rustix::fs::makedev(4, 300);
    mknodat(
        CWD,
        src.join("etc/tty"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o620),
        dev,
    )
    .unwrap();
    mknodat(
        CWD,
        src.join("etc/wh"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    mknodat(
        CWD,
        src.join("blk"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(259, 1),
    )
    .unwrap();
    chown(src.join("etc/app"), Some(1000), Some(1000)).unwrap();
    chown(src.join("etc/app/conf"), Some(4_000_000), Some(70_000)).unwrap();
    fs::set_permissions(
        src.join("etc/app/conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    lsetxattr(
        src.join("etc/app/conf"),
        "trusted.overlay.metacopy",
        b"",
        XattrFlags::empty(),
    )
    .unwrap();
    lsetxattr(
        src.join("etc/app/conf"),
        "trusted.overlay.redirect",
        b"/layers/abc/etc/app/conf",
        XattrFlags::empty(),
    )
    .unwrap();
    lsetxattr(
        src.join("etc/app"),
        "trusted.overlay.opaque",
        b"y",
        XattrFlags::empty(),
    )
    .unwrap();
    lsetxattr(
        src.join("big"),
        "user.note",
        &vec![b'v'; 1000],
        XattrFlags::empty(),
    )
    .unwrap();
    lsetxattr(
        src.join("big"),
        "security.capability",
        b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        XattrFlags::empty(),
    )
    .unwrap();
    // a directory over several blocks, names of every length class
    let many = src.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..3000 {
        let name = format!("{}{i}", "n".repeat(i % 200));
        fs::write(many.join(name), b"").unwrap();
    }
    fs::create_dir(many.join("-sorts-before-dot")).unwrap();
}

#[test]
#[ignore = "needs root"]
fn the_kernel_shows_the_tree_the_image_was_built_from() {
    require_root();
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    make_source(&src);
    let img = image_of(&src);
    let m = mount_image(&img, t.path());
    assert_same_tree(&src, &m.0);
    // lookups by name (binary search over several blocks), not only readdir
    for i in (0..3000).step_by(7) {
        let name = format!("{}{i}", "n".repeat(i % 200));
        assert!(
            fs::symlink_metadata(m.0.join("many").join(&name)).is_ok(),
            "{name}"
        );
    }
    assert!(fs::symlink_metadata(m.0.join("many/nope")).is_err());
    let a = fs::symlink_metadata(m.0.join("big")).unwrap();
    let b = fs::symlink_metadata(m.0.join("etc/big-link")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard links are one inode");
}
