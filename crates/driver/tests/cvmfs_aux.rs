//! The generated whiteout layers of raw-whiteout CVMFS layers: built once,
//! shared by concurrent users, rebuilt after a crash or when deleted, and never
//! half-visible. Needs root (mounts).

mod cvmfs;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cvmfs::{corpus, Style};
use cvmfs_graphdriver::Driver;
use cvmfs_publisher::layer_spec;

struct Fx {
    t: tempfile::TempDir,
    top: String,
    want: String,
    opts: Vec<String>,
}

fn fixture() -> Fx {
    let t = tempfile::Builder::new()
        .prefix("cvmfs-aux")
        .tempdir()
        .unwrap();
    let (tars, want) = cvmfs::corpus_image(t.path(), "opaque-then-more");
    let repo = t.path().join("cvmfs/r");
    let store = repo.join("podmanStore");
    let layers = cvmfs::lay_out(&repo, &tars, Style::Publisher);
    cvmfs::write_records(&store, &repo, &layers, "kept");
    let opts = vec![
        format!("cvmfs.repositories={}", repo.display()),
        format!("cvmfs.imagestore={}", store.display()),
    ];
    Fx {
        top: layers.last().unwrap().id.clone(),
        t,
        want,
        opts,
    }
}

impl Fx {
    fn home(&self) -> PathBuf {
        self.t.path().join("graph/cvmfs")
    }
    fn driver(&self) -> Driver {
        Driver::new(&self.home(), &self.t.path().join("run"), &self.opts).unwrap()
    }
    fn view(&self, d: &Driver) -> String {
        let m = d.get(&self.top, None, &[]).unwrap();
        let s = layer_spec::snapshot(&m).unwrap();
        d.put(&self.top).unwrap();
        s
    }
}

fn aux_entries(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(home.join("aux"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root"]
fn built_once_and_reused() {
    cvmfs_testkit::gate::require_root();
    let f = fixture();
    let d = f.driver();
    assert_eq!(f.view(&d), f.want);
    let first = aux_entries(&f.home());
    // A second mount (another handle) builds nothing new: same entries,
    // same inodes.
    assert!(!first.is_empty());
    let inode = |n: &str| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(f.home().join("aux").join(n)).unwrap().ino()
    };
    let before: Vec<u64> = first.iter().map(|n| inode(n)).collect();
    assert_eq!(f.view(&f.driver()), f.want);
    assert_eq!(aux_entries(&f.home()), first);
    let after: Vec<u64> = first.iter().map(|n| inode(n)).collect();
    assert_eq!(before, after, "not rebuilt");
    d.cleanup().unwrap();
}

#[test]
#[ignore = "needs root"]
fn crash_leftovers_are_removed_and_deleted_builds_rebuilt() {
    cvmfs_testkit::gate::require_root();
    let f = fixture();
    let d = f.driver();
    assert_eq!(f.view(&d), f.want);
    d.cleanup().unwrap();
    drop(d);
    // A build that crashed half-way: its staging directory (named after a
    // process that no longer exists) holds a partial tree. The final name
    // only ever appears by rename, so nothing partial is under aux/.
    let staging = f.home().join("staging/999999999-0-aux-v1-partial");
    fs::create_dir_all(staging.join("etc")).unwrap();
    fs::write(staging.join("etc/half"), b"").unwrap();
    // Someone deleted the cache (or a disk clean-up did).
    for e in fs::read_dir(f.home().join("aux")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    let d = f.driver();
    assert!(!staging.exists(), "crash leftover removed at start");
    assert_eq!(f.view(&d), f.want, "rebuilt and still right");
    assert!(!aux_entries(&f.home()).is_empty());
    d.cleanup().unwrap();
}

#[test]
#[ignore = "needs root"]
fn concurrent_first_mounts_agree() {
    cvmfs_testkit::gate::require_root();
    let f = Arc::new(fixture());
    // Several handles (as several podman processes would have) race to build
    // the same whiteout layers; each build is staged privately and renamed
    // without replacing, so all see one complete result.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let f = f.clone();
            std::thread::spawn(move || {
                let d = f.driver();
                let id = format!("ctr{i}");
                d.create(&id, Some(&f.top), true, &[]).unwrap();
                let m = d.get(&id, None, &[]).unwrap();
                let s = layer_spec::snapshot(&m).unwrap();
                d.put(&id).unwrap();
                d.remove(&id).unwrap();
                s
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), f.want);
    }
    let staging: Vec<_> = fs::read_dir(f.home().join("staging")).unwrap().collect();
    assert!(staging.is_empty(), "losers removed their copies");
    f.driver().cleanup().unwrap();
}

/// Restored owners on a read-only stack of 300 layers: with metacopy
/// whiteout layers too deep for one mount (the split bottom part and the
/// stack above both use metacopy, and the metadata-only copies right above
/// the nested mount take their data from it); with owner images one mount.
#[test]
#[ignore = "needs root"]
fn restored_owners_across_a_split_stack() {
    cvmfs_testkit::gate::require_root();
    let t = tempfile::Builder::new()
        .prefix("cvmfs-aux")
        .tempdir()
        .unwrap();
    let image = corpus::many_layers("300-layers", 300);
    let tars: Vec<Vec<u8>> = image
        .layers
        .iter()
        .map(|s| layer_spec::spec_to_tar(s).unwrap())
        .collect();
    let want = layer_spec::snapshot(&cvmfs::umoci_reference(&t.path().join("ref"), &tars)).unwrap();
    let repo = t.path().join("cvmfs/r");
    let store = repo.join("podmanStore");
    let layers = cvmfs::lay_out(&repo, &tars, Style::DuccOwners);
    cvmfs::write_records(&store, &repo, &layers, "lost");
    cvmfs::write_owners(&store, &layers, &image.layers);
    let d = cvmfs::repo_driver(
        &t.path().join("graph/cvmfs"),
        &t.path().join("run"),
        &repo,
        &store,
    );
    let top = &layers.last().unwrap().id;
    let m = d.get(top, None, &[]).unwrap();
    let got = layer_spec::snapshot(&m).unwrap();
    // Mount points only, not their short links (`<name>.lowers`).
    let nested = fs::read_dir(t.path().join("run/cvmfs/nested"))
        .map(|r| {
            r.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".lowers"))
                .count()
        })
        .unwrap_or(0);
    d.put(top).unwrap();
    d.cleanup().unwrap();
    // Owner images (one lower per layer, no whiteout layers) fit 300
    // layers in one mount; metacopy whiteout layers need two per layer.
    let erofs = fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\terofs\n"));
    let split = if erofs { 0 } else { 1 };
    assert_eq!(nested, split, "the stack was split (owner images: {erofs})");
    assert!(got == want, "{}", cvmfs::diff_lines(&want, &got));
}
