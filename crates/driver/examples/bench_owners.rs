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
use std::path::PathBuf;
use std::time::Instant;

use cvmfs::claim::{add_probes, disk_use, ClaimView};
use cvmfs::Style;
use cvmfs_format::StorePaths;

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
    // gen-image's files are all root's: every ownership.json is empty.
    for l in &layers {
        let p = StorePaths::new(&store).owners_file(&l.id);
        let empty = cvmfs_format::OwnershipFile::new(vec![]).to_json().unwrap();
        fs::write(p, empty).unwrap();
    }
    add_probes(&store, &layers);
    // The same records without tar-splits (a store the driver must walk
    // the layers of), beside the store with them.
    let walk_store = repo.join("podmanStore-walk");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&store)
        .arg(&walk_store)
        .status()
        .unwrap();
    assert!(copied.success(), "cp -a {}", store.display());
    cvmfs::write_tar_splits(&store, &layers, &tars);
    drop(tars);
    let src = t.path().join("src");
    fs::rename(&repo, &src).unwrap();
    fs::create_dir(&repo).unwrap();
    let top = layers.last().unwrap().id.clone();
    let rounds: usize = std::env::var("CVMFS_CLAIM_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let plain = ClaimView::mount(&src, &repo, None);
    driver_row(
        t.path(),
        &repo,
        &store,
        &top,
        layers.len(),
        "plain",
        Path::Metacopy,
        0,
    );
    const PATHS: [Path; 3] = [Path::Metacopy, Path::OwnerImages, Path::TarSplit];
    drop(plain);
    // The two ways of restoring owners on a claiming client, interleaved
    // (ratios count on a shared machine), each from an empty driver home.
    // With fetches that cost (`CVMFS_CLAIM_BENCH_NET=<latency>,<Mbit/s>`),
    // each row gets a view of its own: a cold client.
    let net_arg = std::env::var("CVMFS_CLAIM_BENCH_NET").ok();
    let net = net_arg.as_deref().and_then(|n| n.split_once(','));
    let mut view = Some(ClaimView::mount_with(&src, &repo, Some(4242), net));
    for round in 0..rounds {
        for k in 0..PATHS.len() {
            let path = PATHS[(round + k) % PATHS.len()];
            let store = match path {
                Path::TarSplit => &store,
                _ => &walk_store,
            };
            if net.is_some() {
                drop(view.take());
                view = Some(ClaimView::mount_with(&src, &repo, Some(4242), net));
            }
            driver_row(
                t.path(),
                &repo,
                store,
                &top,
                layers.len(),
                "claim",
                path,
                round,
            );
        }
    }
    drop(view);
}

/// How the driver restores owners.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// Metadata-only copies in its whiteout layers (`cvmfs.owner_images=false`).
    Metacopy,
    /// One EROFS image per layer, built from a walk of the layer (a store
    /// without tar-splits).
    OwnerImages,
    /// One EROFS image per layer, built from the layer's tar-split.
    TarSplit,
}

/// First mount, a later one and a container's first mount of `top` by a
/// driver with an empty home, and the local disk its restored owners take.
#[allow(clippy::too_many_arguments)]
fn driver_row(
    work: &std::path::Path,
    repo: &std::path::Path,
    store: &std::path::Path,
    top: &str,
    layers: usize,
    tag: &str,
    path: Path,
    round: usize,
) {
    let name = format!("{tag}-{path:?}-{round}");
    let home = work.join(format!("graph-{name}/cvmfs"));
    let run = work.join(format!("run-{name}"));
    let d = cvmfs_graphdriver::Driver::new(
        &home,
        &run,
        &[
            format!("cvmfs.repositories={}", repo.display()),
            format!("cvmfs.imagestore={}", store.display()),
            // full size takes longer than the default 20 s: measured, not refused
            "cvmfs.whiteout_timeout=3600".to_string(),
            format!("cvmfs.owner_images={}", !matches!(path, Path::Metacopy)),
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
        "{name}: owners as in the image"
    );
    assert!(
        !fs::read(m.join("bench/run.sh")).unwrap().is_empty(),
        "{name}: data"
    );
    d.put("ctr").unwrap();
    d.remove("ctr").unwrap();
    let (bytes, entries) = disk_use(&home.join("aux"));
    if let Path::TarSplit = path {
        let from_split = fs::read_dir(home.join("aux"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("-ts")
            })
            .count();
        assert_eq!(from_split, layers, "{name}: every image from a tar-split");
    }
    println!(
        "BENCH: path={path:?} view={tag} round={round} layers={layers} first_get_s={first:.3} later_get_s={again:.3} container_first_get_s={ctr:.3} local_entries={entries} local_kib={}",
        bytes / 1024
    );
    d.cleanup().unwrap();
    let _ = fs::remove_dir_all(work.join(format!("graph-{name}")));
}
