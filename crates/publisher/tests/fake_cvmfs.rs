//! `cvmfs-podman publish --cvmfs-transaction` against the emulated stratum 0
//! (`tests/fake-cvmfs/cvmfs_server`: what CernVM-FS 2.12 was measured to do,
//! issue 12), so that CI catches the failures a real repository showed:
//! markers dropped by a transaction's publish, owners lost or `nobody`
//! directories from ingest, a transaction left open, lost updates between
//! publishers. Needs root (overlay mounts, owners, devices).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cvmfs_testkit::rawtar::{Hdr, RawTar};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_cvmfs-podman");
const REPO: &str = "fake.test";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An emulated stratum 0 in a temp dir, its `cvmfs_server` first on PATH.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        Fake::with_xattrs(false)
    }
    /// `include_xattrs`: the repository's server.conf sets CVMFS_INCLUDE_XATTRS=true.
    fn with_xattrs(include_xattrs: bool) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let f = Fake { dir };
        std::fs::create_dir(f.root().join("repositories.d")).unwrap();
        let o = f
            .cmd("cvmfs_server")
            .args(["mkfs", REPO])
            .env("FAKE_CVMFS_INCLUDE_XATTRS", include_xattrs.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        f
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn cmd(&self, program: &str) -> Command {
        let fake = workspace().join("tests/fake-cvmfs");
        let path = format!(
            "{}:{}",
            fake.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new(program);
        c.env("PATH", path).env("FAKE_CVMFS_ROOT", self.root()).env(
            "CVMFS_PODMAN_REPOSITORIES_D",
            self.root().join("repositories.d"),
        );
        c
    }
    /// The published revision (what a client would read).
    fn published(&self) -> PathBuf {
        self.root().join("spool").join(REPO).join("rdonly")
    }
    fn union(&self) -> PathBuf {
        self.root().join("cvmfs").join(REPO)
    }
    fn in_transaction(&self) -> bool {
        self.root()
            .join("spool")
            .join(REPO)
            .join("in_transaction.lock")
            .exists()
    }
    fn server(&self, args: &[&str]) -> Output {
        self.cmd("cvmfs_server")
            .args(args)
            .arg(REPO)
            .output()
            .unwrap()
    }
    fn publish(&self, oci: &str, ns: &str, name: &str) -> Output {
        self.cmd(BIN)
            .args([
                "publish",
                oci,
                "--name",
                name,
                "--cvmfs-transaction",
                REPO,
                "--repo",
            ])
            .arg(self.union().join(ns))
            .output()
            .unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if self.in_transaction() {
            let _ = self.server(&["abort", "-f"]);
        }
    }
}

fn ok(o: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{what} failed: {err}");
    err
}

/// An OCI layout (tag `t`) from the whiteout e2e image plus a raw layer with a
/// non-UTF-8 name, a same-directory hardlink pair, a 1000:1000 file and a
/// character device 1:3.
fn image(dir: &Path, extra: &str) -> String {
    let e2e = workspace().join("tests/e2e/images");
    let name = b"opt/caf\xe9-latin1";
    let raw = RawTar::new()
        .dir("opt/")
        .entry(&Hdr::new(name, b'0', 3), b"l1\n")
        .entry(
            &Hdr {
                uid: 1000,
                gid: 1000,
                ..Hdr::new(b"opt/own", b'0', 2)
            },
            b"o\n",
        )
        .entry(&Hdr::new(b"opt/pair1", b'0', 2), b"p\n")
        .entry(
            &Hdr {
                linkname: b"opt/pair1".to_vec(),
                ..Hdr::new(b"opt/pair2", b'1', 0)
            },
            b"",
        )
        .entry(
            &Hdr {
                devmajor: 1,
                devminor: 3,
                ..Hdr::new(b"opt/null", b'3', 0)
            },
            b"",
        )
        .file("opt/extra", extra.as_bytes())
        .end();
    let raw_path = dir.join("raw.tar");
    std::fs::write(&raw_path, raw).unwrap();
    let oci = dir.join(format!("oci-{extra}"));
    let mut args: Vec<PathBuf> = ["wh-base.spec", "wh-delete.spec", "wh-top.spec"]
        .iter()
        .map(|s| e2e.join(s))
        .collect();
    args.push(raw_path);
    let o = Command::new(BIN)
        .arg("make-oci")
        .arg(&oci)
        .args(["--tag", "t"])
        .args(&args)
        .output()
        .unwrap();
    ok(&o, "make-oci");
    format!("oci:{}:t", oci.display())
}

/// Every entry below `root`: type, mode, owner, size, content hash, link
/// target, device; not times or xattrs (ingest stores no xattrs; publish
/// times differ between two publishes).
fn tree(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let what = if ft.is_dir() {
                stack.push(p.clone());
                "d".to_string()
            } else if ft.is_symlink() {
                format!("l {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                let h = Sha256::digest(std::fs::read(&p).unwrap());
                format!("f {} {:x}", md.len(), h)
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("c {}", md.rdev())
            } else {
                "p".to_string()
            };
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let line = format!("{what} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid());
            out.insert(rel, line);
        }
    }
    out
}

/// The parts of a published tree that do not carry publish times.
fn comparable(t: BTreeMap<Vec<u8>, String>) -> BTreeMap<Vec<u8>, String> {
    t.into_iter()
        .filter(|(k, _)| {
            (k.starts_with(b".layers/") && k.windows(7).any(|w| w == b"layerfs"))
                || k.starts_with(b".flat/")
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn ingest_publish_equals_the_plain_directory_publish() {
    cvmfs_testkit::gate::require_root();
    let fake = Fake::new();
    let t = tempfile::tempdir().unwrap();
    let oci = image(t.path(), "one");
    let plain = t.path().join("plain");
    let o = Command::new(BIN)
        .args(["publish", "-q", &oci, "--name", "local/wh:1", "--repo"])
        .arg(&plain)
        .output()
        .unwrap();
    ok(&o, "plain publish");
    let err = ok(
        &fake.publish(&oci, "ns/wh", "local/wh:1"),
        "publish through ingest",
    );
    assert!(err.contains("ingested"), "no ingest summary: {err}");
    assert!(
        err.contains("extended attributes"),
        "xattr loss not reported: {err}"
    );
    assert!(!fake.in_transaction(), "a transaction was left open");

    let published = fake.published().join("ns/wh");
    let want = comparable(tree(&plain));
    let have = comparable(tree(&published));
    let markers = want
        .keys()
        .filter(|k| k.windows(4).any(|w| w == b".wh."))
        .count();
    assert!(markers >= 5, "the image has raw markers: {markers}");
    let diff: Vec<_> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, v)| format!("{} {v} -> {:?}", String::from_utf8_lossy(k), have.get(k)))
        .chain(
            have.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("extra {}", String::from_utf8_lossy(k))),
        )
        .collect();
    assert!(
        diff.is_empty(),
        "published tree differs from the plain one:\n{}",
        diff.join("\n")
    );
    // every directory from the repository root keeps a real owner (none is
    // an ingest-created `nobody`)
    let nobody: Vec<_> = tree(&fake.published())
        .into_iter()
        .filter(|(_, v)| v.ends_with("65534:65534"))
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect();
    assert!(nobody.is_empty(), "ingest-created directories: {nobody:?}");
    let o = Command::new(BIN)
        .arg("check")
        .arg(&published)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "check: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
#[ignore = "needs root"]
fn second_image_is_incremental_and_keeps_the_first() {
    cvmfs_testkit::gate::require_root();
    let fake = Fake::new();
    let t = tempfile::tempdir().unwrap();
    ok(
        &fake.publish(&image(t.path(), "one"), "ns", "local/a:1"),
        "first publish",
    );
    let err = ok(
        &fake.publish(&image(t.path(), "two"), "ns", "local/b:1"),
        "second publish",
    );
    // the three wh layers are reused, only the raw layer is new; the files
    // the new flat tree links to were copied up, and are not ingested again
    assert!(err.contains("exists, skipped"), "{err}");
    let left_out: usize = err
        .split_once(" unchanged copies left out")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of unchanged copies in: {err}"));
    assert!(
        left_out >= 20,
        "only {left_out} copied-up entries left out: {err}"
    );
    let images = std::fs::read_to_string(
        fake.published()
            .join("ns/podmanStore/cvmfs-images/images.json"),
    )
    .unwrap();
    for n in ["docker.io/local/a:1", "docker.io/local/b:1"] {
        assert!(images.contains(n), "{n} missing from images.json");
    }
    let o = Command::new(BIN)
        .arg("check")
        .arg(fake.published().join("ns"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "check: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Pins the emulation to what was measured: writing through a transaction and
/// publishing loses every raw marker (and a 0/0 device cannot be made there).
#[test]
#[ignore = "needs root"]
fn a_transaction_publish_drops_markers_as_cvmfs_does() {
    cvmfs_testkit::gate::require_root();
    let fake = Fake::new();
    ok(&fake.server(&["transaction"]), "transaction");
    let u = fake.union();
    std::fs::create_dir_all(u.join("d/etc")).unwrap();
    std::fs::write(u.join("d/etc/.wh.a"), b"").unwrap();
    std::fs::write(u.join("d/etc/b"), b"b").unwrap();
    let mknod = rustix::fs::mknodat(
        rustix::fs::CWD,
        u.join("d/etc/dev"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    );
    assert_eq!(
        mknod,
        Err(rustix::io::Errno::PERM),
        "overlayfs refuses 0/0 devices"
    );
    let o = fake.server(&["publish"]);
    let err = ok(&o, "publish");
    assert!(
        err.contains("should be deleted, but was not found"),
        "{err}"
    );
    assert!(fake.published().join("d/etc/b").exists());
    assert!(
        !fake.published().join("d/etc/.wh.a").exists(),
        "the marker survived the publish"
    );
}

#[test]
#[ignore = "needs root"]
fn a_foreign_transaction_is_refused_by_name() {
    cvmfs_testkit::gate::require_root();
    let fake = Fake::new();
    let t = tempfile::tempdir().unwrap();
    ok(&fake.server(&["transaction"]), "transaction");
    let o = fake.publish(&image(t.path(), "one"), "ns", "local/a:1");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("is in a transaction someone else opened"),
        "{err}"
    );
    assert!(
        fake.in_transaction(),
        "someone else's transaction must stay open"
    );
    ok(&fake.server(&["abort", "-f"]), "abort");
}

/// kill -9 of the publisher's process group while the ingest runs: nothing is
/// published, the transaction stays open; the next publish aborts it and
/// succeeds.
#[test]
#[ignore = "needs root"]
fn a_killed_ingest_is_aborted_by_the_next_publish() {
    cvmfs_testkit::gate::require_root();
    use std::os::unix::process::CommandExt;
    let fake = Fake::new();
    let t = tempfile::tempdir().unwrap();
    let oci = image(t.path(), "one");
    let mut c = fake.cmd(BIN);
    c.args([
        "publish",
        "-q",
        &oci,
        "--name",
        "local/a:1",
        "--cvmfs-transaction",
        REPO,
        "--repo",
    ])
    .arg(fake.union().join("ns"))
    .env("FAKE_CVMFS_INGEST_SLEEP", "30")
    .stderr(Stdio::null())
    .process_group(0);
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !fake.in_transaction() {
        assert!(
            std::time::Instant::now() < deadline,
            "the ingest never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pgid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL).unwrap();
    let _ = child.wait();
    assert!(
        fake.in_transaction(),
        "the killed ingest left no transaction"
    );
    assert!(
        !fake.published().join("ns").exists(),
        "a killed ingest published something"
    );

    let err = ok(
        &fake.publish(&oci, "ns", "local/a:1"),
        "publish after the kill",
    );
    assert!(
        err.contains("aborting the transaction a killed publish left open"),
        "{err}"
    );
    assert!(!fake.in_transaction());
    let o = Command::new(BIN)
        .arg("check")
        .arg(fake.published().join("ns"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "check: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    // the staging overlay of the killed run is gone
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&fake.root().display().to_string()),
        "a staging overlay is still mounted"
    );
}

/// Two publishers at once: the second waits for the first (and says so), and
/// both images end up in the store (no lost update of images.json).
#[test]
#[ignore = "needs root"]
fn concurrent_publishers_are_serialised() {
    cvmfs_testkit::gate::require_root();
    let fake = Fake::new();
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (image(t.path(), "one"), image(t.path(), "two"));
    let spawn = |oci: &str, name: &str| {
        fake.cmd(BIN)
            .args([
                "publish",
                "-q",
                oci,
                "--name",
                name,
                "--cvmfs-transaction",
                REPO,
                "--repo",
            ])
            .arg(fake.union().join("ns"))
            .env("FAKE_CVMFS_INGEST_SLEEP", "2")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(&a, "local/a:1");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second = spawn(&b, "local/b:1");
    let (o1, o2) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    ok(&o1, "first publisher");
    ok(&o2, "second publisher");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o1.stderr),
        String::from_utf8_lossy(&o2.stderr)
    );
    assert!(said.contains("waiting for the publisher lock"), "{said}");
    let images = std::fs::read_to_string(
        fake.published()
            .join("ns/podmanStore/cvmfs-images/images.json"),
    )
    .unwrap();
    for n in ["docker.io/local/a:1", "docker.io/local/b:1"] {
        assert!(images.contains(n), "{n} lost from images.json");
    }
}

/// With CVMFS_INCLUDE_XATTRS=true the attributes the ingest drops are set in
/// a second revision; without it the publisher says they are lost.
#[test]
#[ignore = "needs root"]
fn xattrs_follow_the_repository_configuration() {
    cvmfs_testkit::gate::require_root();
    let t = tempfile::tempdir().unwrap();
    let oci = image(t.path(), "one");
    for keep in [true, false] {
        let fake = Fake::with_xattrs(keep);
        let err = ok(&fake.publish(&oci, "ns", "local/a:1"), "publish");
        let ns = fake.published().join("ns");
        let attrs: Vec<PathBuf> = tree(&ns)
            .into_keys()
            .filter(|k| k.ends_with(b"x/attr"))
            .map(|k| ns.join(std::ffi::OsStr::from_bytes(&k)))
            .collect();
        assert_eq!(attrs.len(), 2, "x/attr in the layer and in the flat tree");
        for p in &attrs {
            let v = cvmfs_graphdriver::archive::fsutil::get_xattr(p, b"user.k").unwrap();
            let want = keep.then(|| b"v".to_vec());
            assert_eq!(v, want, "{} (CVMFS_INCLUDE_XATTRS={keep})", p.display());
        }
        assert_eq!(err.contains("does not keep them"), !keep, "{err}");
        assert!(!fake.in_transaction());
    }
}

/// Pins the emulated ingest to what was measured: with `-k` the tar's owners
/// stay and directories the tar does not name get uid/gid -1 (65534 on a
/// client); without `-k` everything belongs to the repository owner; raw
/// `.wh.*` files are kept; hardlinks are split.
#[test]
#[ignore = "needs root"]
fn the_emulated_ingest_behaves_as_measured() {
    cvmfs_testkit::gate::require_root();
    use std::io::Write;
    let fake = Fake::new();
    let tar = RawTar::new()
        .entry(
            &Hdr {
                uid: 1000,
                gid: 1000,
                ..Hdr::new(b"d/own", b'0', 2)
            },
            b"o\n",
        )
        .entry(&Hdr::new(b"d/.wh.gone", b'0', 0), b"")
        .entry(
            &Hdr {
                linkname: b"d/own".to_vec(),
                ..Hdr::new(b"d/link", b'1', 0)
            },
            b"",
        )
        .end();
    for (base, keep) in [("k", true), ("nok", false)] {
        let mut args = vec!["ingest", "-t", "-", "-b", base];
        if keep {
            args.push("-k");
        }
        let mut c = fake
            .cmd("cvmfs_server")
            .args(&args)
            .arg(REPO)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(&tar).unwrap();
        ok(&c.wait_with_output().unwrap(), "fake ingest");
    }
    let owner = |p: &str| {
        let md = std::fs::symlink_metadata(fake.published().join(p)).unwrap();
        (md.uid(), md.gid(), md.nlink())
    };
    assert_eq!(owner("k"), (65534, 65534, 3), "-b component with -k");
    assert_eq!(owner("k/d"), (65534, 65534, 2), "unnamed parent with -k");
    assert_eq!(
        owner("k/d/own"),
        (1000, 1000, 1),
        "owner kept with -k, link split"
    );
    assert_eq!(owner("k/d/link"), (1000, 1000, 1));
    assert_eq!(owner("k/d/.wh.gone").0, 0, "marker kept");
    assert_eq!(owner("nok/d").0, 0, "without -k: the repository owner");
    assert_eq!(
        owner("nok/d/own"),
        (0, 0, 1),
        "without -k: the repository owner"
    );
    assert!(!fake.in_transaction());
}
