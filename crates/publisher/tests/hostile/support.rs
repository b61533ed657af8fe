//! What every hostile case uses: the case type, a canary tree outside the
//! repository that must come out of every case unchanged, raw tar crafting, and
//! running the publisher and the checker.
#![allow(dead_code)]

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub use cvmfs_testkit::rawtar::{pax_record, Hdr, RawTar};

/// One named hostile input and what must happen to it.
pub struct Case {
    pub name: &'static str,
    pub run: fn() -> Outcome,
}

pub enum Outcome {
    Pass,
    Fail(String),
    /// Could not run here (e.g. not root): reported as skipped, never as passed.
    Skip(String),
}

/// `Outcome` from a check that returns `Err(reason)` on failure.
pub fn outcome(r: Result<(), String>) -> Outcome {
    match r {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}

pub use cvmfs_testkit::gate::is_root;

/// Fails the case with `msg` unless `cond` holds.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg.into())
    }
}

pub fn tmp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cvmfs-hostile-{prefix}"))
        .tempdir()
        .unwrap()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_cvmfs-podman");

/// Output of one `cvmfs-podman` run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn cvmfs_podman(args: &[&str]) -> Run {
    let o = Command::new(BIN)
        .args(args)
        .output()
        .expect("run cvmfs-podman");
    Run {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// The canary: a tree beside the repository with the things a confused
// publisher or driver would touch (whiteout devices, opaque xattrs, setuid
// files, marker files). Compared byte for byte before and after every case.

pub struct Canary {
    pub root: PathBuf,
    before: String,
}

impl Canary {
    /// Build the canary tree at `root` (created). Devices and trusted.* xattrs
    /// need root; without root the tree has files, dirs and symlinks only.
    pub fn new(root: &Path) -> Canary {
        let d = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        let f = |p: &str, data: &str, mode: u32| {
            let path = root.join(p);
            std::fs::write(&path, data).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        };
        d("etc");
        d("data/x");
        d("opaque");
        f("etc/a", "a", 0o644);
        f("etc/.wh.b", "", 0o000);
        f("data/x/1", "1", 0o4755);
        f("opaque/.wh..wh..opq", "", 0o000);
        std::os::unix::fs::symlink("../etc/a", root.join("data/link")).unwrap();
        if is_root() {
            for p in ["etc/deleted", "data/x/gone"] {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &root.join(p),
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .unwrap();
            }
            rustix::fs::setxattr(
                &root.join("opaque"),
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
            rustix::fs::chown(
                &root.join("etc/a"),
                Some(rustix::fs::Uid::from_raw(1000)),
                Some(rustix::fs::Gid::from_raw(1000)),
            )
            .unwrap();
        }
        let before = describe_tree(root);
        Canary {
            root: root.to_path_buf(),
            before,
        }
    }

    /// `Err` naming what differs when anything in the canary tree changed.
    pub fn unchanged(&self) -> Result<(), String> {
        let now = describe_tree(&self.root);
        if now == self.before {
            return Ok(());
        }
        let old: Vec<&str> = self.before.lines().collect();
        let new: Vec<&str> = now.lines().collect();
        let gone: Vec<&&str> = old.iter().filter(|l| !new.contains(l)).collect();
        let added: Vec<&&str> = new.iter().filter(|l| !old.contains(l)).collect();
        Err(format!(
            "canary tree {} changed: was {gone:?}, now {added:?}",
            self.root.display()
        ))
    }
}

/// One line per entry below `root`: path, type, mode, owner, rdev, size,
/// content hash and every xattr, sorted, symlinks not followed.
pub fn describe_tree(root: &Path) -> String {
    let mut lines = Vec::new();
    walk(root, root, &mut lines);
    lines.sort();
    lines.join("\n")
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        out.push(format!("{} <unreadable>", dir.display()));
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_char_device() {
            "c"
        } else if ft.is_file() {
            "f"
        } else {
            "o"
        };
        let content = if ft.is_file() {
            format!("{:x}", fnv(&std::fs::read(&p).unwrap_or_default()))
        } else if ft.is_symlink() {
            std::fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {kind} {:o} {}:{} rdev={} size={} {content} xattrs={:?}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.rdev(),
            if ft.is_dir() { 0 } else { md.size() },
            xattrs(&p)
        ));
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Every xattr of `p` (not followed) with its value, sorted.
pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut val = vec![0u8; 65536];
        let v = match rustix::fs::lgetxattr(p, name.as_str(), &mut val[..]) {
            Ok(len) => val[..len].to_vec(),
            Err(_) => b"<unreadable>".to_vec(),
        };
        out.push((name, v));
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// Publishing crafted layers and checking the repository afterwards.

/// A scratch area: `repo/` (the repository), `canary/` beside it, `oci/`.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub canary: Canary,
}

impl Scene {
    pub fn new(name: &str) -> Scene {
        let dir = tmp(name);
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let canary = Canary::new(&dir.path().join("canary"));
        Scene { dir, repo, canary }
    }

    /// The canary's path as seen from inside the repository's layer directories
    /// (`.layers/XX/<d>/layerfs`), for names that try to climb out.
    pub fn climb_to_canary(&self) -> String {
        "../../../../canary".into()
    }

    /// Pack `layers` (uncompressed tars) into an OCI layout and publish it as
    /// `name` into the repository.
    pub fn publish(&self, name: &str, layers: &[Vec<u8>]) -> Run {
        let oci = self.dir.path().join(format!("oci-{}", sanitize(name)));
        let mut args = vec![
            "make-oci".to_string(),
            oci.display().to_string(),
            "--tag".into(),
            "t".into(),
        ];
        for (i, l) in layers.iter().enumerate() {
            let p = self.dir.path().join(format!("{}-{i}.tar", sanitize(name)));
            std::fs::write(&p, l).unwrap();
            args.push(p.display().to_string());
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let made = cvmfs_podman(&a);
        assert!(made.ok, "make-oci failed: {}", made.stderr);
        let src = format!("oci:{}:t", oci.display());
        cvmfs_podman(&[
            "publish",
            &src,
            "--repo",
            self.repo.to_str().unwrap(),
            "--name",
            name,
        ])
    }

    /// `Err` unless `cvmfs-podman check --deep` calls the repository consistent.
    pub fn check_deep(&self) -> Result<(), String> {
        let r = cvmfs_podman(&["check", "--deep", self.repo.to_str().unwrap()]);
        ensure(r.ok, format!("check --deep: {}{}", r.stdout, r.stderr))
    }

    /// The three assertions of a refused publish: it failed with an error naming
    /// every string of `names` (image, layer, entry), the canary is unchanged,
    /// and the repository is consistent.
    pub fn refused(&self, run: &Run, names: &[&str]) -> Result<(), String> {
        ensure(!run.ok, format!("publish succeeded: {}", run.stdout))?;
        for n in names {
            ensure(
                run.stderr.contains(n),
                format!("error does not name {n:?}: {}", run.stderr.trim()),
            )?;
        }
        self.canary.unchanged()?;
        self.check_deep()
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
