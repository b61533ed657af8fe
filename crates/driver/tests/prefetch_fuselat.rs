//! Start-up profile prefetch through the real kernel (issue 16): the layer
//! directories sit behind `bench/fuselat`, a FUSE view that answers like a
//! cold CVMFS client (every object fetched once, a round trip each, at most
//! 16 fetches at once, later readers of an object in flight wait for it).
//! A container reads its files one after another, as a job's start does;
//! with the image's profile published the driver has fetched them in
//! parallel by then. Needs root (mounts) and Go (to build fuselat).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cvmfs_graphdriver::Driver;

const L1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const L2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const IMAGE: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const FILES_L1: usize = 120;
const FILES_L2: usize = 30;
const FILE_BYTES: usize = 48 << 10;
const LATENCY_MS: u64 = 20;

/// Build bench/fuselat once per test binary run; `None` (SKIP) without Go.
fn fuselat() -> Option<PathBuf> {
    cvmfs_testkit::fuselat::build(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuselat"))
}

/// A fuselat mount of `src` at `mnt`, unmounted (by its PID) on drop.
struct View {
    child: Child,
    mnt: PathBuf,
    stats: PathBuf,
}

impl View {
    fn mount(bin: &Path, src: &Path, mnt: &Path, stats: &Path) -> View {
        fs::create_dir_all(mnt).unwrap();
        let child = Command::new(bin)
            .args(["-latency", &format!("{LATENCY_MS}ms"), "-bandwidth", "0"])
            .args(["-parallel", "16", "-stats"])
            .arg(stats)
            .arg(src)
            .arg(mnt)
            .spawn()
            .unwrap();
        let v = View {
            child,
            mnt: mnt.to_path_buf(),
            stats: stats.to_path_buf(),
        };
        let parent = fs::metadata(mnt.parent().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        use std::os::unix::fs::MetadataExt;
        while fs::metadata(mnt).map(|m| m.dev()).ok() == Some(parent.dev()) {
            assert!(Instant::now() < deadline, "fuselat did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        v
    }

    /// (fetches, bytes fetched) so far.
    fn fetched(&self) -> (u64, u64) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::USR1,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&self.stats).unwrap()).unwrap();
        (
            v["fetches"].as_u64().unwrap(),
            v["bytes_fetched"].as_u64().unwrap(),
        )
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // A failed test may leave containers mounted on top of the view, and
        // fuselat only exits once nothing uses its mount: detach them all
        // (everything mounted below the test's directory), then the view.
        let root = self.mnt.parent().unwrap().parent().unwrap();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for point in info.lines().filter_map(|l| l.split(' ').nth(4)) {
            let point = Path::new(point);
            if point.starts_with(root) && point != self.mnt {
                let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::DETACH);
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Fixture {
    t: tempfile::TempDir,
    src: PathBuf,
    store: PathBuf,
    /// Every file of the image, in the order the "job" reads them.
    files: Vec<String>,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("repo-data");
    let store = t.path().join("store");
    let l1 = src.join(".layers/11/one/layerfs");
    let l2 = src.join(".layers/22/two/layerfs");
    fs::create_dir_all(l1.join("usr/lib")).unwrap();
    fs::create_dir_all(l2.join("app")).unwrap();
    let mut files = Vec::new();
    for i in 0..FILES_L2 {
        let p = format!("app/g{i:03}");
        fs::write(l2.join(&p), vec![i as u8; FILE_BYTES]).unwrap();
        files.push(p);
    }
    for i in 0..FILES_L1 {
        let p = format!("usr/lib/f{i:03}");
        fs::write(l1.join(&p), vec![i as u8; FILE_BYTES]).unwrap();
        files.push(p);
    }
    // A symlink out of the repository: listed by a hostile profile, never read.
    std::os::unix::fs::symlink("/etc/passwd", l1.join("usr/lib/escape")).unwrap();
    Fixture {
        t,
        src,
        store,
        files,
    }
}

impl Fixture {
    /// Records for both layers pointing into the view at `view`.
    fn records(&self, view: &Path) {
        for (id, path, parent) in [
            (L1, ".layers/11/one/layerfs", "null".to_string()),
            (L2, ".layers/22/two/layerfs", format!("\"{L1}\"")),
        ] {
            let p = self.store.join("cvmfs/layers").join(id).join("layer.json");
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(
                p,
                format!(
                    r#"{{"version":1,"kind":"cvmfs","repository":"{}","path":"{path}","parent":{parent},"whiteouts":"overlay","ownership":"kept"}}"#,
                    view.display()
                ),
            )
            .unwrap();
        }
    }

    /// Publish a profile listing `files` (whole files), plus `extra` entries.
    fn profile(&self, files: &[String], extra: &[serde_json::Value]) {
        let mut entries: Vec<serde_json::Value> = files
            .iter()
            .map(|f| {
                let layer = if f.starts_with("app/") { 0 } else { 1 };
                serde_json::json!({"layer": layer, "path": f, "ranges": [[0, FILE_BYTES]]})
            })
            .collect();
        entries.extend(extra.iter().cloned());
        let p = serde_json::json!({
            "version": 1, "image": IMAGE, "top-layer": L2, "layers": [L2, L1],
            "entries": entries,
        });
        let dest = self.store.join(format!("cvmfs/profiles/{L2}.json"));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(dest, serde_json::to_vec(&p).unwrap()).unwrap();
    }

    fn driver(&self, name: &str, view: &Path, opts: &[&str]) -> Driver {
        let mut o = vec![
            format!("cvmfs.repositories={}", view.display()),
            format!("cvmfs.imagestore={}", self.store.display()),
        ];
        o.extend(opts.iter().map(|s| s.to_string()));
        Driver::new(
            &self.t.path().join(name).join("graph/cvmfs"),
            &self.t.path().join(name).join("run"),
            &o,
        )
        .unwrap()
    }
}

/// Read every file through the container's mount, one after another, and
/// check the content; returns the time it took.
fn read_in_order(merged: &Path, files: &[String]) -> Duration {
    let start = Instant::now();
    for f in files {
        let b = fs::read(merged.join(f)).unwrap();
        assert_eq!(b.len(), FILE_BYTES, "{f}");
    }
    start.elapsed()
}

/// Wait until the prefetch report of `ctr` leaves "running"; its metadata line.
fn finished(d: &Driver, ctr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m: BTreeMap<String, String> = d.metadata(ctr).unwrap();
        if let Some(p) = m.get("Prefetch").filter(|p| !p.starts_with("running")) {
            return p.clone();
        }
        assert!(Instant::now() < deadline, "prefetch still running: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_prefetch_makes_cold_start_parallel() {
    cvmfs_testkit::gate::require_root();
    let Some(bin) = fuselat() else {
        println!("SKIP: privileged_prefetch_makes_cold_start_parallel: cannot build bench/fuselat (no Go?)");
        return;
    };
    let f = fixture();
    let view_path = f.t.path().join("cvmfs/repo.example.org");
    f.records(&view_path);
    f.profile(
        &f.files,
        &[serde_json::json!({"layer": 1, "path": "usr/lib/escape", "ranges": [[0, 100]]})],
    );
    let total = (f.files.len() * FILE_BYTES) as u64;

    // Without prefetch: one fetch after another.
    let off = {
        let view = View::mount(&bin, &f.src, &view_path, &f.t.path().join("s1.json"));
        let d = f.driver("off", &view_path, &["cvmfs.prefetch=off"]);
        d.create("ctr", Some(L2), true, &[]).unwrap();
        let m = d.get("ctr", None, &[]).unwrap();
        let took = read_in_order(&m, &f.files);
        assert!(!d.metadata("ctr").unwrap().contains_key("Prefetch"));
        d.put("ctr").unwrap();
        assert_eq!(view.fetched(), (f.files.len() as u64, total));
        took
    };

    // With the profile: get returns at once; while the container starts
    // (STARTUP) one reader fetches the head of the profile, then all of them
    // run, and the container's reads find the files fetched.
    let view = View::mount(&bin, &f.src, &view_path, &f.t.path().join("s2.json"));
    let d = f.driver("on", &view_path, &[]);
    d.create("ctr", Some(L2), true, &[]).unwrap();
    let t0 = Instant::now();
    let m = d.get("ctr", None, &[]).unwrap();
    let get_took = t0.elapsed();
    let half = cvmfs_graphdriver::prefetch::STARTUP / 2;
    std::thread::sleep(half.saturating_sub(t0.elapsed()));
    let (while_starting, _) = view.fetched();
    let one_reader = half.as_millis() as u64 / LATENCY_MS + 2;
    assert!(
        while_starting <= one_reader,
        "{while_starting} files fetched in the first {half:?}: more than one reader"
    );
    std::thread::sleep(cvmfs_graphdriver::prefetch::STARTUP.saturating_sub(t0.elapsed()));
    let on = read_in_order(&m, &f.files);
    let summary = finished(&d, "ctr");
    println!(
        "cold read of {} files behind {LATENCY_MS} ms per fetch: {:.2} s without prefetch, {:.2} s with, started after the container's start (get {:.3} s; {while_starting} fetched in its first half); {summary}",
        f.files.len(),
        off.as_secs_f64(),
        on.as_secs_f64(),
        get_took.as_secs_f64()
    );
    let n = f.files.len();
    assert!(
        off >= Duration::from_millis(LATENCY_MS * n as u64),
        "the view did not delay: {off:?}"
    );
    assert!(on * 3 < off, "prefetch did not help: {on:?} vs {off:?}");
    assert!(
        get_took < Duration::from_millis(LATENCY_MS * 5),
        "get waited for the prefetch: {get_took:?}"
    );
    assert!(
        summary.starts_with(&format!("done: {n}/{} files", n + 1)),
        "{summary}"
    );
    assert!(
        summary.contains("(1 skipped"),
        "the escaping symlink: {summary}"
    );
    // Every object was fetched once: by the prefetch or the job, never both.
    assert_eq!(view.fetched(), (n as u64, total));
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert!(
        status["Prefetch"].starts_with("on (8 threads"),
        "{status:?}"
    );
    assert!(
        status["Prefetch Last"].contains(&format!("layer ctr: done: {n}/")),
        "{status:?}"
    );
    d.put("ctr").unwrap();
    d.remove("ctr").unwrap();
    drop(view);

    // A budget stops it; so does the container's put.
    let view = View::mount(&bin, &f.src, &view_path, &f.t.path().join("s3.json"));
    let budget = 10 * FILE_BYTES;
    let d = f.driver(
        "budget",
        &view_path,
        &[&format!("cvmfs.prefetch_max_bytes={budget}")],
    );
    d.create("ctr", Some(L2), true, &[]).unwrap();
    d.get("ctr", None, &[]).unwrap();
    let summary = finished(&d, "ctr");
    assert!(summary.starts_with("stopped: budget"), "{summary}");
    assert!(summary.contains("/7.0 MiB"), "{summary}");
    assert!(view.fetched().1 <= budget as u64, "read past the budget");
    d.put("ctr").unwrap();
    let d = f.driver("stop", &view_path, &["cvmfs.prefetch_threads=1"]);
    d.create("ctr", Some(L2), true, &[]).unwrap();
    d.get("ctr", None, &[]).unwrap();
    std::thread::sleep(Duration::from_millis(LATENCY_MS * 5));
    d.put("ctr").unwrap();
    let summary = finished(&d, "ctr");
    let read: usize = summary
        .strip_prefix("stopped: unmounted or driver shut down: ")
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(read < n / 2, "put did not stop it: {summary}");
}

#[test]
#[ignore = "needs root"]
fn privileged_refused_profile_is_reported_and_harmless() {
    cvmfs_testkit::gate::require_root();
    let f = fixture();
    // A plain directory stands in for the repository here.
    f.records(&f.src);
    let dest = f.store.join(format!("cvmfs/profiles/{L2}.json"));
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(
        &dest,
        format!(
            r#"{{"version":1,"image":"{IMAGE}","top-layer":"{L2}","layers":["{L2}"],"entries":[{{"layer":0,"path":"../../../../etc/passwd","ranges":[[0,10]]}}]}}"#
        ),
    )
    .unwrap();
    let d = f.driver("refused", &f.src, &[]);
    d.create("ctr", Some(L2), true, &[]).unwrap();
    let m = d.get("ctr", None, &[]).unwrap();
    assert_eq!(read_in_order(&m, &f.files[..3]).as_secs(), 0);
    let summary = finished(&d, "ctr");
    assert!(
        summary.starts_with("refused: profile: entry 0"),
        "{summary}"
    );
    assert!(summary.contains("\"..\""), "{summary}");
    d.put("ctr").unwrap();
}

/// Without a profile, the image's start links (`cvmfs/layers/<top>/start` to
/// `cvmfs/start/<image>/exec-N`, as the publisher writes them) name what a
/// container runs first: `get` has them fetched, each on its own thread; a
/// link leaving the repository is skipped; `cvmfs.prefetch=off` reads none.
#[test]
#[ignore = "needs root"]
fn privileged_start_links_are_fetched_without_a_profile() {
    cvmfs_testkit::gate::require_root();
    let Some(bin) = fuselat() else {
        println!("SKIP: privileged_start_links_are_fetched_without_a_profile: cannot build bench/fuselat (no Go?)");
        return;
    };
    let f = fixture();
    let view_path = f.t.path().join("cvmfs/repo.example.org");
    f.records(&view_path);
    let record_dir = f.store.join("cvmfs/layers").join(L2);
    std::os::unix::fs::symlink(format!("../../start/{IMAGE}"), record_dir.join("start")).unwrap();
    let start = f.store.join("cvmfs/start").join(IMAGE);
    fs::create_dir_all(&start).unwrap();
    let execs = [
        ".layers/22/two/layerfs/app/g000",
        ".layers/11/one/layerfs/usr/lib/f000",
        ".layers/11/one/layerfs/usr/lib/escape",
    ];
    for (i, rel) in execs.iter().enumerate() {
        std::os::unix::fs::symlink(
            format!("../../../../{rel}"),
            start.join(format!("exec-{i}")),
        )
        .unwrap();
    }
    let first = ["app/g000".to_string(), "usr/lib/f000".to_string()];

    let view = View::mount(&bin, &f.src, &view_path, &f.t.path().join("s1.json"));
    let d = f.driver("off", &view_path, &["cvmfs.prefetch=off"]);
    d.create("ctr", Some(L2), true, &[]).unwrap();
    d.get("ctr", None, &[]).unwrap();
    std::thread::sleep(Duration::from_millis(LATENCY_MS * 5));
    assert_eq!(view.fetched(), (0, 0), "read with cvmfs.prefetch=off");
    d.put("ctr").unwrap();
    drop(view);

    let view = View::mount(&bin, &f.src, &view_path, &f.t.path().join("s2.json"));
    let d = f.driver("on", &view_path, &[]);
    d.create("ctr", Some(L2), true, &[]).unwrap();
    let m = d.get("ctr", None, &[]).unwrap();
    let summary = finished(&d, "ctr");
    assert!(
        summary.starts_with("done: 2/3 files")
            && summary.contains("(1 skipped; profile none; the start links of image"),
        "{summary}"
    );
    assert_eq!(view.fetched(), (2, 2 * FILE_BYTES as u64));
    // the container's reads find them fetched
    read_in_order(&m, &first);
    assert_eq!(view.fetched(), (2, 2 * FILE_BYTES as u64));
    println!("start links without a profile: {summary}");
    d.put("ctr").unwrap();
}
