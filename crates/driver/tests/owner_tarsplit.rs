//! Owner images built from a layer's tar-split against the same layer's
//! image built from a walk (`mount::owner_tarsplit` vs
//! `mount::owner_image`): for every layer of the corpus (hardlinks,
//! symlinks, devices, fifos, xattrs, opaque directories, whiteouts, setuid,
//! 1000:1000 owners, long names) both images are mounted by the kernel and
//! compared entry by entry, every field a container sees. Hostile tar-splits
//! (truncated, lying sizes, missing parents, other owners) are refused with
//! an error naming the file. The mount test needs root and EROFS.

mod cvmfs;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cvmfs::{corpus, Laid, Style};
use cvmfs_erofs::Image;
use cvmfs_format::StorePaths;
use cvmfs_graphdriver::mount::owner_image::layer_image;
use cvmfs_graphdriver::mount::owner_tarsplit::layer_image_from_tar_split;
use cvmfs_graphdriver::mount::whiteouts::{parse_owners, Owner};
use cvmfs_publisher::layer_spec;

const REDIRECT: &[u8] = b"trusted.overlay.redirect";

/// A repository holding `specs` laid out by our publisher, with each
/// layer's `ownership.json` and tar-split.
struct Repo {
    t: tempfile::TempDir,
    repo: PathBuf,
    store: PathBuf,
    layers: Vec<Laid>,
    tars: Vec<Vec<u8>>,
}

fn repo_of(specs: &[String]) -> Repo {
    let t = tempfile::Builder::new()
        .prefix("owner-tarsplit")
        .tempdir_in("/var/tmp")
        .unwrap();
    let tars: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| layer_spec::spec_to_tar(s).unwrap())
        .collect();
    let repo = t.path().join("repo");
    let store = repo.join("podmanStore");
    let (layers, _) = cvmfs::publish_as(&repo, &store, &tars, Style::PublisherListed);
    cvmfs::write_owners(&store, &layers, specs);
    cvmfs::write_tar_splits(&store, &layers, &tars);
    Repo {
        t,
        repo,
        store,
        layers,
        tars,
    }
}

impl Repo {
    fn owners(&self, i: usize) -> Vec<Owner> {
        let p = StorePaths::new(&self.store).owners_file(&self.layers[i].id);
        parse_owners(&fs::read(p).unwrap()).unwrap()
    }
    fn split(&self, i: usize) -> PathBuf {
        StorePaths::new(&self.store).tar_split(&self.layers[i].id)
    }
    fn walk_image(&self, i: usize) -> Image {
        let l = &self.layers[i];
        layer_image(
            &self.repo.join(&l.path),
            Path::new(&l.path),
            Some(&self.owners(i)),
            None,
        )
        .unwrap()
    }
    fn split_image(&self, i: usize) -> std::io::Result<Image> {
        let l = &self.layers[i];
        layer_image_from_tar_split(
            &self.repo.join(&l.path),
            Path::new(&l.path),
            &self.split(i),
            &self.owners(i),
            None,
        )
    }
}

fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut names).unwrap();
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, name, &mut v).unwrap();
        out.insert(name.to_vec(), v[..len].to_vec());
    }
    out
}

/// Compares two mounted images entry by entry. Redirects may name another
/// link of the same file (the walk takes the first name in sorted order,
/// the tar its link target): they must reach the same file of `data`.
/// Hardlinks must group the same names (`inodes`: walk inode -> split inode).
fn assert_same(walk: &Path, split: &Path, data: &Path, inodes: &mut HashMap<u64, u64>) {
    let (w, s) = (
        fs::symlink_metadata(walk).unwrap(),
        fs::symlink_metadata(split).unwrap(),
    );
    let what = split.display();
    assert_eq!(s.mode(), w.mode(), "{what}: mode");
    assert_eq!((s.uid(), s.gid()), (w.uid(), w.gid()), "{what}: owner");
    let times = |m: &fs::Metadata| (m.mtime(), m.mtime_nsec());
    assert_eq!(times(&s), times(&w), "{what}: mtime");
    assert_eq!(s.nlink(), w.nlink(), "{what}: nlink");
    assert_eq!(s.rdev(), w.rdev(), "{what}: rdev");
    assert_eq!(s.len(), w.len(), "{what}: size");
    let (mut wx, mut sx) = (xattrs(walk), xattrs(split));
    let target = |x: &mut BTreeMap<Vec<u8>, Vec<u8>>| {
        x.remove(REDIRECT).map(|r| {
            let p = data.join(String::from_utf8(r).unwrap().trim_start_matches('/'));
            let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (m.dev(), m.ino())
        })
    };
    assert_eq!(target(&mut sx), target(&mut wx), "{what}: redirect target");
    assert_eq!(sx, wx, "{what}: xattrs");
    if w.file_type().is_symlink() {
        assert_eq!(fs::read_link(split).unwrap(), fs::read_link(walk).unwrap());
    }
    if w.is_file() && w.nlink() > 1 {
        let seen = *inodes.entry(w.ino()).or_insert(s.ino());
        assert_eq!(seen, s.ino(), "{what}: hardlinks group other names");
    }
    if w.is_dir() {
        let names = |d: &Path| {
            let mut v: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let wn = names(walk);
        assert_eq!(names(split), wn, "{what}: entries");
        for n in wn {
            assert_same(&walk.join(&n), &split.join(&n), data, inodes);
        }
    }
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount(img: &Image, dir: &Path, name: &str) -> Mounted {
    let file = dir.join(format!("{name}.erofs"));
    fs::write(&file, img.to_bytes().unwrap()).unwrap();
    let mnt = dir.join(name);
    fs::create_dir(&mnt).unwrap();
    let out = Command::new("mount")
        .args(["-t", "erofs", "-o", "ro"])
        .arg(&file)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Mounted(mnt)
}

#[test]
#[ignore = "needs root"]
fn images_from_the_tar_split_show_what_images_from_a_walk_show() {
    cvmfs_testkit::gate::require_root();
    assert!(
        fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\terofs\n")),
        "no EROFS in this kernel: owner images cannot be compared here"
    );
    let mut compared = 0;
    for image in corpus::images() {
        let r = repo_of(&image.layers);
        for i in 0..r.layers.len() {
            let what = format!("{} layer {i}", image.name);
            let split = r.split_image(i).unwrap_or_else(|e| panic!("{what}: {e}"));
            let walk = r.walk_image(i);
            let dir = r.t.path().join(format!("m{i}"));
            fs::create_dir(&dir).unwrap();
            let (w, s) = (mount(&walk, &dir, "walk"), mount(&split, &dir, "split"));
            assert_same(&w.0, &s.0, &r.repo, &mut HashMap::new());
            compared += 1;
        }
    }
    assert!(compared > 50, "{compared} layers compared");
}

/// One layer with a bit of everything, 1000:1000 owners included.
fn small() -> Repo {
    let spec = "dir /etc\nfile /etc/a 0644 1000:1000 \"a\"\nhardlink /etc/b => /etc/a\ndir /d 0755 1000:1000\nwhiteout /gone\nfile /d/f \"f\"";
    repo_of(&[spec.to_string()])
}

fn lines(gz: &[u8]) -> Vec<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .unwrap();
    text.lines().map(str::to_string).collect()
}

fn gzip(lines: &[String]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for l in lines {
        writeln!(gz, "{l}").unwrap();
    }
    gz.finish().unwrap()
}

/// The error of building from the tar-split rewritten by `change`.
fn refused(change: impl FnOnce(&Repo, Vec<u8>) -> Vec<u8>) -> String {
    let r = small();
    let bytes = fs::read(r.split(0)).unwrap();
    fs::write(r.split(0), change(&r, bytes)).unwrap();
    match r.split_image(0) {
        Ok(_) => panic!("accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&r.split(0).display().to_string()), "{msg}");
            msg
        }
    }
}

#[test]
fn a_sound_tar_split_is_accepted() {
    let r = small();
    let img = r.split_image(0).unwrap();
    let etc = img.child(img.root(), b"etc").unwrap();
    let a = img.child(etc, b"a").unwrap();
    assert_eq!(img.meta(a).uid, 1000);
    assert_eq!(img.child(etc, b"b"), Some(a), "one inode for both names");
    let gone = img.child(img.root(), b"gone").unwrap();
    assert_eq!(
        *img.kind(gone),
        cvmfs_erofs::Kind::CharDev { major: 0, minor: 0 }
    );
    assert!(r.tars[0].len() > 512);
}

#[test]
fn a_directory_named_after_its_content_takes_its_header() {
    // the unpacker makes `a` for `a/b`, then applies `a`'s header to it
    let r = repo_of(&["file /a/b \"x\"\ndir /a 0750 1000:1000\nfile /c/d \"y\"".to_string()]);
    let (split, walk) = (r.split_image(0).unwrap(), r.walk_image(0));
    for img in [&split, &walk] {
        let a = img.child(img.root(), b"a").unwrap();
        assert_eq!((img.meta(a).uid, img.meta(a).mode), (1000, 0o750));
    }
    let c = |img: &Image| img.meta(img.child(img.root(), b"c").unwrap());
    assert_eq!(
        c(&split),
        c(&walk),
        "a directory no header names: as laid out"
    );
}

#[test]
fn a_truncated_tar_split_is_refused() {
    let msg = refused(|_, b| b[..b.len() / 2].to_vec());
    assert!(msg.contains("tar-split"), "{msg}");
}

#[test]
fn a_file_line_with_another_size_is_refused() {
    for size in [2u64, 1 << 40] {
        let msg = refused(|_, b| {
            let l: Vec<String> = lines(&b)
                .into_iter()
                .map(|l| l.replace(r#""size":1,"#, &format!(r#""size":{size},"#)))
                .collect();
            gzip(&l)
        });
        assert!(
            msg.contains("file line") || msg.contains("after the end") || msg.contains("offset"),
            "{size}: {msg}"
        );
    }
}

#[test]
fn lines_that_are_not_a_tar_split_are_refused() {
    let msg = refused(|_, _| gzip(&["{\"type\":9}".to_string()]));
    assert!(msg.contains("line 1: unknown line type 9"), "{msg}");
    let msg = refused(|_, _| gzip(&["not json".to_string()]));
    assert!(msg.contains("line 1"), "{msg}");
    let msg = refused(|_, _| b"not gzip".to_vec());
    assert!(msg.contains("tar-split"), "{msg}");
}

#[test]
fn owners_other_than_the_ownership_metadata_are_refused() {
    let msg = refused(|r, b| {
        let p = StorePaths::new(&r.store).owners_file(&r.layers[0].id);
        let text = fs::read_to_string(&p).unwrap().replace("1000", "1001");
        fs::write(p, text).unwrap();
        b
    });
    assert!(
        msg.contains("differs from the layer's ownership metadata"),
        "{msg}"
    );
}

#[test]
fn entries_without_their_parent_or_twice_are_refused() {
    for (spec_tar, why) in [
        (tar_of(&[("x/y", b'0')]), "nor a directory of the layer"),
        (tar_of(&[("f", b'0'), ("f", b'0')]), "named twice"),
        (
            tar_of(&[("f", b'0'), ("f/g", b'0')]),
            "parent is not a directory",
        ),
        (tar_of(&[("l", b'1')]), "hardlink target"),
    ] {
        // the recorder refuses duplicates: the lines are written by hand
        let msg = refused(|_, _| gzip(&raw_tar_split(&spec_tar)));
        assert!(msg.contains(why), "{why}: {msg}");
    }
}

/// A tar of empty entries `(name, type)` (a hardlink to `nowhere`).
fn tar_of(entries: &[(&str, u8)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, t) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::new(*t));
        if *t == b'1' {
            h.set_link_name("nowhere").unwrap();
        }
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// tar-split lines for `tar` written as the format has them: each header
/// a segment, each entry a file line (the publisher's recorder would refuse
/// a duplicate name itself).
fn raw_tar_split(tar: &[u8]) -> Vec<String> {
    use base64_lines::b64;
    let mut out = Vec::new();
    let mut at = 0;
    let mut pos = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            out.push(format!(
                r#"{{"payload":"{}","position":{pos},"type":2}}"#,
                b64(&tar[at..])
            ));
            break;
        }
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        out.push(format!(
            r#"{{"payload":"{}","position":{pos},"type":2}}"#,
            b64(h)
        ));
        pos += 1;
        out.push(format!(
            r#"{{"name":"{name}","payload":null,"position":{pos},"type":1}}"#
        ));
        pos += 1;
        at += 512;
    }
    out
}

mod base64_lines {
    pub fn b64(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in data.chunks(3) {
            let n = c.len();
            let v = u32::from(c[0]) << 16
                | u32::from(*c.get(1).unwrap_or(&0)) << 8
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= n {
                    s.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}
