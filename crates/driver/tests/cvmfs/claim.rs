//! A claim-ownership client for the tests: `bench/fuselat -claim-uid U`
//! reports every entry as owned by `U:U` (see `cvmfs_claim.rs`), and what
//! the tests and the owner-restoration bench do with it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cvmfs_format::{OwnerEntry, OwnerProbes, StorePaths};

/// Build bench/fuselat once per test binary run.
pub fn fuselat() -> PathBuf {
    // (examples have no CARGO_TARGET_TMPDIR)
    let out = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(d) => Path::new(d).join("fuselat-claim"),
        None => std::env::temp_dir().join(format!("fuselat-claim-{}", std::process::id())),
    };
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        cvmfs_testkit::fuselat::build(&out).expect("Go, to build bench/fuselat");
    });
    out
}

/// A claiming-client view of `src` at `at`; unmounted and stopped (by its
/// PID) on drop.
pub struct ClaimView {
    child: Child,
    at: PathBuf,
}

impl ClaimView {
    /// `uid`: the owner every entry shows (`None`: owners as published).
    pub fn mount(src: &Path, at: &Path, uid: Option<u32>) -> ClaimView {
        Self::mount_with(src, at, uid, None)
    }

    /// [`ClaimView::mount`] with fetches costing `net`: (round trip per
    /// fetched object, e.g. `100ms`; bandwidth in Mbit/s). `None`: free.
    pub fn mount_with(
        src: &Path,
        at: &Path,
        uid: Option<u32>,
        net: Option<(&str, &str)>,
    ) -> ClaimView {
        let (latency, bandwidth) = net.unwrap_or(("0", "0"));
        let mut cmd = Command::new(fuselat());
        cmd.args(["-latency", latency, "-bandwidth", bandwidth]);
        if let Some(u) = uid {
            cmd.args(["-claim-uid", &u.to_string()]);
        }
        let child = cmd.arg(src).arg(at).spawn().unwrap();
        let view = ClaimView {
            child,
            at: at.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !at.join("podmanStore").exists() {
            assert!(Instant::now() < deadline, "the FUSE view did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        view
    }
}

impl Drop for ClaimView {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.at, rustix::mount::UnmountFlags::DETACH);
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Add to each record the `owner-probes` our publisher writes: the layer
/// root and up to seven entries not owned 0:0, with their owners as
/// published (the image's: the layers kept them).
pub fn add_probes(store: &Path, layers: &[super::Laid]) {
    let paths = StorePaths::new(store);
    for l in layers {
        let owners =
            cvmfs_format::parse_owners(&fs::read(paths.owners_file(&l.id)).unwrap()).unwrap();
        let mut entries = vec![OwnerEntry {
            gid: 0,
            path: String::new(),
            uid: 0,
        }];
        entries.extend(owners.iter().take(7).map(|o| OwnerEntry {
            gid: o.gid,
            path: o.path.display().to_string(),
            uid: o.uid,
        }));
        let p = paths.record(&l.id);
        let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        rec["owner-probes"] = serde_json::to_value(OwnerProbes::new(entries)).unwrap();
        fs::write(&p, serde_json::to_vec(&rec).unwrap()).unwrap();
    }
}

/// Blocks and entries under `dir` (what the owner restoration costs on disk).
pub fn disk_use(dir: &Path) -> (u64, u64) {
    let (mut blocks, mut n) = (0, 0);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            blocks += md.blocks();
            n += 1;
            if md.is_dir() {
                todo.push(e.path());
            }
        }
    }
    (blocks * 512, n)
}
