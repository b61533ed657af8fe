//! `make bench`'s owner-restoration row (hack/bench-owners.sh): the layer
//! tars in `$CVMFS_CLAIM_BENCH_DIR` (bench/gen-image.py's output) published
//! our way, then mounted through a view that shows the owners as published
//! and through one that claims ownership (`bench/fuselat -claim-uid 4242`):
//! first mount, a later one, a container's first mount, and the local disk
//! the restored owners take. Prints one `BENCH:` line per view. Needs root.
//! An example, not a test: it measures, and needs its input.

#[path = "../tests/cvmfs/mod.rs"]
mod cvmfs;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cvmfs::claim::{add_probes, disk_use, ClaimView};
use cvmfs::Style;
use cvmfs_format::StorePaths;
use cvmfs_graphdriver::mount::owner_image;

/// Seconds `f` took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed().as_secs_f64())
}

fn main() {
    assert!(rustix::process::geteuid().is_root(), "needs root (mounts)");
    let dir = PathBuf::from(
        std::env::var_os("CVMFS_CLAIM_BENCH_DIR")
            .expect("CVMFS_CLAIM_BENCH_DIR: bench/gen-image.py's output"),
    );
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
    let rounds: usize = std::env::var("CVMFS_CLAIM_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let plain = ClaimView::mount(&src, &repo, None);
    metacopy_row(t.path(), &repo, &store, &top, layers.len(), "plain", 0);
    drop(plain);
    // The two ways of restoring owners on a claiming client, interleaved
    // (ratios count on a shared machine), each from an empty driver home.
    let view = ClaimView::mount(&src, &repo, Some(4242));
    for round in 0..rounds {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                metacopy_row(t.path(), &repo, &store, &top, layers.len(), "claim", round);
            } else {
                erofs_row(t.path(), &repo, &store, &layers, round);
            }
        }
    }
    drop(view);
}

/// The driver's path today (metacopy copies in its whiteout layers).
fn metacopy_row(
    work: &Path,
    repo: &Path,
    store: &Path,
    top: &str,
    layers: usize,
    tag: &str,
    round: usize,
) {
    let home = work.join(format!("graph-{tag}-{round}/cvmfs"));
    let run = work.join(format!("run-{tag}-{round}"));
    let d = cvmfs_graphdriver::Driver::new(
        &home,
        &run,
        &[
            format!("cvmfs.repositories={}", repo.display()),
            format!("cvmfs.imagestore={}", store.display()),
            // full size takes longer than the default 20 s: measured, not refused
            "cvmfs.whiteout_timeout=3600".to_string(),
        ],
    )
    .unwrap();
    let (_, first) = timed(|| d.get(top, None, &[]).unwrap());
    d.put(top).unwrap();
    let (_, again) = timed(|| d.get(top, None, &[]).unwrap());
    d.put(top).unwrap();
    d.create("ctr", Some(top), true, &[]).unwrap();
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
        "BENCH: path=metacopy view={tag} round={round} layers={layers} first_get_s={first:.3} later_get_s={again:.3} container_first_get_s={ctr:.3} local_entries={entries} local_kib={}",
        bytes / 1024
    );
    d.cleanup().unwrap();
    let _ = fs::remove_dir_all(work.join(format!("graph-{tag}-{round}")));
}

/// The EROFS prototype: one metadata image per layer (built from the
/// claiming view: readdir + lstat, owners from ownership.json), each
/// mounted, and one read-only overlay over them with the repository as its
/// data-only lower.
fn erofs_row(work: &Path, repo: &Path, store: &Path, layers: &[cvmfs::Laid], round: usize) {
    let cache = work.join(format!("erofs-{round}"));
    fs::create_dir_all(cache.join("staging")).unwrap();
    let mounts = Mounts::new(&cache);
    let (_, first) = timed(|| {
        for (i, l) in layers.iter().enumerate() {
            let built = cache.join(format!("{}.erofs", l.id));
            let owners_file = StorePaths::new(store).owners_file(&l.id);
            let owners = cvmfs_format::parse_owners(&fs::read(owners_file).unwrap()).unwrap();
            let img = owner_image::layer_image(
                &repo.join(&l.path),
                Path::new(&l.path),
                Some(&owners),
                None,
            )
            .unwrap();
            let staging = cache.join("staging").join(&l.id);
            owner_image::write_image(&img, &staging, &built).unwrap();
            mounts.erofs(&built, i);
        }
        mounts.overlay(repo, layers.len());
    });
    check_view(&mounts.top(), repo, layers);
    mounts.unmount_all(layers.len());
    let (_, again) = timed(|| {
        for (i, l) in layers.iter().enumerate() {
            let built = cache.join(format!("{}.erofs", l.id));
            assert!(owner_image::image_is_sound(&built));
            mounts.erofs(&built, i);
        }
        mounts.overlay(repo, layers.len());
    });
    mounts.unmount_all(layers.len());
    // the images only (the staging and mount directories are the bench's)
    fs::remove_dir_all(cache.join("mnt")).unwrap();
    fs::remove_dir_all(cache.join("staging")).unwrap();
    let (bytes, entries) = disk_use(&cache);
    println!(
        "BENCH: path=erofs view=claim round={round} layers={} first_get_s={first:.3} later_get_s={again:.3} container_first_get_s=- local_entries={} local_kib={}",
        layers.len(),
        entries,
        bytes / 1024
    );
    let _ = fs::remove_dir_all(&cache);
}

/// Mount points of the prototype under `<cache>/mnt`.
struct Mounts(PathBuf);

impl Mounts {
    fn new(cache: &Path) -> Mounts {
        Mounts(cache.join("mnt"))
    }
    fn top(&self) -> PathBuf {
        self.0.join("merged")
    }
    fn erofs(&self, image: &Path, i: usize) {
        let at = self.0.join(i.to_string());
        fs::create_dir_all(&at).unwrap();
        // mount(2) with a file as source: file-backed EROFS (no loop
        // device), as the driver mounts it.
        rustix::mount::mount(image, &at, "erofs", rustix::mount::MountFlags::RDONLY, None)
            .unwrap_or_else(|e| panic!("mount {}: {e}", image.display()));
    }
    /// Topmost layer first; the repository as the data-only lower.
    fn overlay(&self, repo: &Path, n: usize) {
        let lowers: Vec<String> = (0..n)
            .rev()
            .map(|i| self.0.join(i.to_string()).display().to_string())
            .collect();
        let opts = format!(
            "ro,metacopy=on,redirect_dir=on,lowerdir={}::{}",
            lowers.join(":"),
            repo.display()
        );
        fs::create_dir_all(self.top()).unwrap();
        sh(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(self.top()));
    }
    fn unmount_all(&self, n: usize) {
        sh(Command::new("umount").arg(self.top()));
        for i in 0..n {
            sh(Command::new("umount").arg(self.0.join(i.to_string())));
        }
    }
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The merged view shows the image's owners and the layers' content.
fn check_view(merged: &Path, repo: &Path, layers: &[cvmfs::Laid]) {
    let owner = fs::symlink_metadata(merged.join("bench/run.sh")).unwrap();
    assert_eq!(
        (owner.uid(), owner.gid()),
        (0, 0),
        "erofs: owners as in the image"
    );
    let holder = layers
        .iter()
        .rev()
        .map(|l| repo.join(&l.path).join("bench/run.sh"))
        .find(|p| p.exists())
        .unwrap();
    let want = fs::read(holder).unwrap();
    assert_eq!(
        fs::read(merged.join("bench/run.sh")).unwrap(),
        want,
        "erofs: data from the layer"
    );
}
