//! A CVMFS client that claims ownership (`CVMFS_CLAIM_OWNERSHIP=yes`,
//! CVMFS's default) reports every file as owned by its own uid. The driver
//! must notice it (owner probes in the records, or the layer root for older
//! records), say so in its status with the fix, and still show the image's
//! owners. Needs root (mounts) and `fuse-overlayfs`.
//!
//! **The emulated client** is the project's FUSE view `bench/fuselat` with
//! `-claim-uid U`: it reports every entry as owned by `U:U`, as a client
//! whose `cvmfs2` runs as uid `U` does, and passes names through as they are
//! (fuse-overlayfs's `squash_to_uid=` would do the owners too, but takes the
//! raw `.wh.*` files of the layers for its own whiteouts and hides them).
//! Being a FUSE mount, the kernel's overlay stacks on it as on `cvmfs2`.
//! Without Go to build the view, the tests fail (they are privileged ones,
//! run by `make test-cvmfs` where Go is present).

mod cvmfs;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cvmfs::Style;
use cvmfs_format::{OwnerEntry, OwnerProbes, StorePaths};
use cvmfs_publisher::layer_spec;

/// Build bench/fuselat once per test binary run.
fn fuselat() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuselat-claim");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/fuselat");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let go = ["/usr/local/go/bin/go", "go"]
            .into_iter()
            .find(|g| Command::new(g).arg("version").output().is_ok())
            .expect("Go, to build bench/fuselat");
        let ok = Command::new(go)
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GOFLAGS", "-mod=mod")
            .status()
            .unwrap()
            .success();
        assert!(ok, "building bench/fuselat failed");
    });
    out
}

/// A claiming-client view of `src` at `at`; unmounted and stopped (by its
/// PID) on drop.
struct ClaimView {
    child: Child,
    at: PathBuf,
}

impl ClaimView {
    /// `uid`: the owner every entry shows (`None`: owners as published).
    fn mount(src: &Path, at: &Path, uid: Option<u32>) -> ClaimView {
        let mut cmd = Command::new(fuselat());
        cmd.args(["-latency", "0", "-bandwidth", "0"]);
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
fn add_probes(store: &Path, layers: &[cvmfs::Laid]) {
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

struct Published {
    t: tempfile::TempDir,
    repo: PathBuf,
    src: PathBuf,
    top: String,
    want: String,
    layers: usize,
}

/// Corpus image `name` published our way (owners kept, markers listed,
/// `ownership.json` for every layer), probes added when `probes`, then moved
/// to `src`: the repository's path is where a view of it gets mounted.
fn published(name: &str, probes: bool) -> Published {
    let t = tempfile::Builder::new()
        .prefix("cvmfs-claim")
        .tempdir()
        .unwrap();
    let image = cvmfs::corpus::images()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap();
    let (tars, want) = cvmfs::corpus_image(t.path(), name);
    let repo = t.path().join("cvmfs/claim.example.org");
    let store = repo.join("podmanStore");
    let (layers, _) = cvmfs::publish_as(&repo, &store, &tars, Style::PublisherListed);
    cvmfs::write_owners(&store, &layers, &image.layers);
    if probes {
        add_probes(&store, &layers);
    }
    let src = t.path().join("src");
    fs::rename(&repo, &src).unwrap();
    fs::create_dir(&repo).unwrap();
    Published {
        top: layers.last().unwrap().id.clone(),
        layers: layers.len(),
        t,
        repo,
        src,
        want,
    }
}

impl Published {
    fn driver(&self, tag: &str) -> cvmfs_graphdriver::Driver {
        cvmfs::repo_driver(
            &self.t.path().join(format!("graph-{tag}/cvmfs")),
            &self.t.path().join(format!("run-{tag}")),
            &self.repo,
            &self.repo.join("podmanStore"),
        )
    }

    fn home(&self, tag: &str) -> PathBuf {
        self.t.path().join(format!("graph-{tag}/cvmfs"))
    }
}

fn status_of(d: &cvmfs_graphdriver::Driver) -> String {
    d.status()
        .into_iter()
        .find(|(k, _)| k == "CVMFS Client Owners")
        .map(|(_, v)| v)
        .expect("a CVMFS Client Owners status line")
}

/// The image through the driver, read-only and in a container (writable):
/// both must be the reference, owners included.
fn assert_exact(p: &Published, d: &cvmfs_graphdriver::Driver, what: &str) {
    let m = d.get(&p.top, None, &[]).unwrap();
    let got = layer_spec::snapshot(&m).unwrap();
    d.put(&p.top).unwrap();
    assert!(
        got == p.want,
        "{what}, read-only:\n{}",
        cvmfs::diff_lines(&p.want, &got)
    );
    d.create("ctr", Some(&p.top), true, &[]).unwrap();
    let m = d.get("ctr", None, &[]).unwrap();
    let got = layer_spec::snapshot(&m).unwrap();
    d.put("ctr").unwrap();
    d.remove("ctr").unwrap();
    assert!(
        got == p.want,
        "{what}, container:\n{}",
        cvmfs::diff_lines(&p.want, &got)
    );
}

/// Blocks and entries under `dir` (what the owner restoration costs on disk).
fn disk_use(dir: &Path) -> (u64, u64) {
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

#[test]
#[ignore = "needs root"]
fn a_client_showing_its_own_uid_is_noticed_and_the_owners_restored() {
    cvmfs_testkit::gate::require_root();
    for name in ["opaque-then-more", "hardlinks", "devices-and-fifos"] {
        let p = published(name, true);
        // The view shows every entry as 4242's, as a client whose cvmfs2
        // runs as the cvmfs user does.
        let view = ClaimView::mount(&p.src, &p.repo, Some(4242));
        assert_eq!(
            fs::metadata(p.repo.join("podmanStore")).unwrap().uid(),
            4242
        );
        let d = p.driver("claim");
        let start = Instant::now();
        assert_exact(&p, &d, name);
        let first = start.elapsed();
        let s = status_of(&d);
        assert!(
            s.contains(&format!("{}: the client does not show", p.repo.display()))
                && s.contains("shown as 4242:4242")
                && s.contains("fix: set CVMFS_CLAIM_OWNERSHIP=no in /etc/cvmfs/config.d/claim.example.org.local"),
            "{name}: {s}"
        );
        let (bytes, entries) = disk_use(&p.home("claim").join("aux"));
        println!(
            "MEASURE: claim-ownership view, {name} ({} layers): first get+container {:.3}s, whiteout layers {entries} entries, {} KiB",
            p.layers,
            first.as_secs_f64(),
            bytes / 1024
        );
        d.cleanup().unwrap();
        drop(view);
    }
}

#[test]
#[ignore = "needs root"]
fn a_client_claiming_as_root_and_records_without_probes() {
    cvmfs_testkit::gate::require_root();
    // cvmfs2 running as root shows every entry as 0:0: only the entries not
    // root's in the image differ (the 1000:1000 ones), found by a probe.
    let p = published("opaque-then-more", true);
    let view = ClaimView::mount(&p.src, &p.repo, Some(0));
    let d = p.driver("root");
    assert_exact(&p, &d, "claiming as root");
    let s = status_of(&d);
    assert!(s.contains("1000:1000 as published, shown as 0:0"), "{s}");
    d.cleanup().unwrap();
    drop(view);
    // Records of an older publisher (no probes): the layer root of a layer
    // that kept its owners is expected to be root's.
    let p = published("opaque-then-more", false);
    let view = ClaimView::mount(&p.src, &p.repo, Some(4242));
    let d = p.driver("old");
    assert_exact(&p, &d, "records without probes");
    let s = status_of(&d);
    assert!(
        s.contains("the layer root of layer") && s.contains("0:0 as published, shown as 4242:4242"),
        "{s}"
    );
    d.cleanup().unwrap();
    drop(view);
}

#[test]
#[ignore = "needs root"]
fn a_client_showing_the_owners_as_published_changes_nothing() {
    cvmfs_testkit::gate::require_root();
    let p = published("opaque-then-more", true);
    let view = ClaimView::mount(&p.src, &p.repo, None);
    let d = p.driver("plain");
    assert_exact(&p, &d, "plain view");
    assert_eq!(
        status_of(&d),
        "as published for every repository used so far"
    );
    // Nothing restored: no metadata copies in the whiteout layers.
    let own = fs::read_dir(p.home("plain").join("aux"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("-own")
        })
        .count();
    assert_eq!(own, 0);
    d.cleanup().unwrap();
    drop(view);
}

/// Seconds `f` took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed().as_secs_f64())
}

/// `make bench`'s owner-restoration row (hack/bench-owners.sh): the layer
/// tars in `$CVMFS_CLAIM_BENCH_DIR` (bench/gen-image.py's output) published
/// our way, then mounted through a plain view and through a claiming one:
/// first mount, a later one, a container's first mount, and the local disk
/// the restored owners take. Prints one `BENCH:` line per view.
#[test]
#[ignore = "needs root and CVMFS_CLAIM_BENCH_DIR (hack/bench-owners.sh)"]
fn bench_owner_restoration() {
    cvmfs_testkit::gate::require_root();
    let dir = PathBuf::from(cvmfs_testkit::gate::require_env("CVMFS_CLAIM_BENCH_DIR"));
    let mut tar_paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    tar_paths.sort();
    let tars: Vec<Vec<u8>> = tar_paths.iter().map(|p| fs::read(p).unwrap()).collect();
    let t = tempfile::Builder::new()
        .prefix("cvmfs-claim-bench")
        .tempdir_in(std::env::var_os("CVMFS_CLAIM_BENCH_WORK").unwrap_or("/var/tmp".into()))
        .unwrap();
    let repo = t.path().join("cvmfs/bench.example.org");
    let store = repo.join("podmanStore");
    let (layers, _) = cvmfs::publish_as(&repo, &store, &tars, Style::PublisherListed);
    drop(tars);
    // gen-image's files are all root's: every ownership.json is empty.
    for l in &layers {
        let p = StorePaths::new(&store).owners_file(&l.id);
        let empty = cvmfs_format::OwnershipFile::new(vec![]).to_json().unwrap();
        fs::write(p, empty).unwrap();
    }
    add_probes(&store, &layers);
    let src = t.path().join("src");
    fs::rename(&repo, &src).unwrap();
    fs::create_dir(&repo).unwrap();
    let top = layers.last().unwrap().id.clone();
    for (tag, uid) in [("plain", None), ("claim", Some(4242))] {
        let view = ClaimView::mount(&src, &repo, uid);
        let home = t.path().join(format!("graph-{tag}/cvmfs"));
        let d = cvmfs::repo_driver(&home, &t.path().join(format!("run-{tag}")), &repo, &store);
        let (_, first) = timed(|| d.get(&top, None, &[]).unwrap());
        d.put(&top).unwrap();
        let (_, again) = timed(|| d.get(&top, None, &[]).unwrap());
        d.put(&top).unwrap();
        d.create("ctr", Some(&top), true, &[]).unwrap();
        let (m, ctr) = timed(|| d.get("ctr", None, &[]).unwrap());
        let owner = fs::symlink_metadata(m.join("bench/run.sh")).unwrap();
        assert_eq!(
            (owner.uid(), owner.gid()),
            (0, 0),
            "{tag}: owners as in the image"
        );
        d.put("ctr").unwrap();
        d.remove("ctr").unwrap();
        let (bytes, entries) = disk_use(&home.join("aux"));
        println!(
            "BENCH: view={tag} layers={} first_get_s={first:.3} later_get_s={again:.3} container_first_get_s={ctr:.3} aux_entries={entries} aux_kib={}",
            layers.len(),
            bytes / 1024
        );
        d.cleanup().unwrap();
        drop(view);
    }
}
