//! Concurrent calls on one driver handle, with real overlay mounts (root only:
//! each test is `#[ignore = "needs root"]`, run with `--include-ignored` as root).
//!
//! Issue 10 found 8 threads racing create/get/put/remove on one ID leaving
//! 20–30 overlay mounts under `staging/*-rm-<id>/merged` while `cleanup`
//! reported success. These tests race the operations and then check what a
//! user would: nothing mounted below the driver home or run root, nothing
//! left in `staging/`, and `cleanup` succeeding.

use std::path::PathBuf;
use std::sync::Arc;

use cvmfs_graphdriver::Driver;

use cvmfs_testkit::abi_stress;

use abi_stress::{mounts_below, Rng, Scratch};

struct Env {
    _scratch: Scratch,
    home: PathBuf,
    run: PathBuf,
}

fn env() -> Env {
    let scratch = Scratch::new("cvmfs-driver-stress");
    let home = scratch.dir.path().join("graph/cvmfs");
    let run = scratch.dir.path().join("run");
    Env {
        _scratch: scratch,
        home,
        run,
    }
}

/// What must hold after any sequence of calls followed by removing every layer
/// and `cleanup`.
fn assert_nothing_left(d: &Driver, e: &Env) {
    let before = mounts_below(&e.home);
    d.cleanup()
        .unwrap_or_else(|err| panic!("cleanup failed with {before:?} mounted: {err}"));
    assert_eq!(
        mounts_below(&e.home),
        Vec::<String>::new(),
        "mounts left below the home"
    );
    assert_eq!(
        mounts_below(&e.run),
        Vec::<String>::new(),
        "mounts left below the run root"
    );
    for id in d.list_layers().unwrap() {
        d.remove(&id).unwrap();
    }
    let staging: Vec<_> = std::fs::read_dir(e.home.join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(staging.is_empty(), "staging entries left: {staging:?}");
}

#[test]
#[ignore = "needs root"]
fn privileged_eight_threads_racing_on_one_id_leak_no_mount() {
    cvmfs_testkit::gate::require_root();
    let seed = abi_stress::seed();
    println!("seed {seed} (rerun with CVMFS_STRESS_SEED={seed})");
    let e = env();
    let d = Arc::new(Driver::new(&e.home, &e.run, &[] as &[&str]).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x2545F4914F6CDD1D));
                for _ in 0..300 {
                    // Errors are expected (get of a layer just removed, ...);
                    // only what is left behind matters here.
                    let _ = match rng.below(4) {
                        0 => d.create("racy", None, true, &[]),
                        1 => d.get("racy", None, &[]).map(|_| ()),
                        2 => d.put("racy"),
                        _ => d.remove("racy"),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    d.remove("racy").unwrap();
    assert_eq!(
        mounts_below(&e.home),
        Vec::<String>::new(),
        "mounts left after remove"
    );
    assert_nothing_left(&d, &e);
}

#[test]
#[ignore = "needs root"]
fn privileged_abi_eight_threads_thousand_random_operations() {
    cvmfs_testkit::gate::require_root();
    let seed = abi_stress::seed();
    println!("seed {seed} (rerun with CVMFS_STRESS_SEED={seed})");
    match abi_stress::run(seed) {
        Ok(summary) => println!("{summary}"),
        Err(why) => panic!("seed {seed}: {why}"),
    }
}

fn mount_tmpfs(at: &std::path::Path) {
    std::fs::create_dir_all(at).unwrap();
    rustix::mount::mount(
        "tmpfs",
        at,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=1m",
    )
    .unwrap();
}

#[test]
#[ignore = "needs root"]
fn privileged_cleanup_unmounts_stacked_and_staging_mounts() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let d = Driver::new(&e.home, &e.run, &[] as &[&str]).unwrap();
    d.create("L", None, true, &[]).unwrap();
    let merged = d.get("L", None, &[]).unwrap();
    // What the old race left: a mount renamed into staging/, and two mounts
    // stacked on one point (mountinfo lists that point once per mount).
    let leaked = e.home.join("staging/1-1-rm-L/merged");
    mount_tmpfs(&leaked);
    mount_tmpfs(&merged);
    assert_eq!(mounts_below(&e.home).len(), 3);
    d.cleanup().unwrap();
    assert_eq!(mounts_below(&e.home), Vec::<String>::new());
    // The counts start again from nothing: one get, one put, unmounted.
    d.get("L", None, &[]).unwrap();
    d.put("L").unwrap();
    assert_eq!(mounts_below(&e.home), Vec::<String>::new());
    d.remove("L").unwrap();
}

#[test]
#[ignore = "needs root"]
fn privileged_cleanup_fails_naming_what_stays_mounted() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    // A mounter whose unmount does nothing: the mount below stays, and
    // cleanup must say so instead of returning success.
    let fake = Arc::new(cvmfs_graphdriver::mount::fake::recording_mounter(true));
    let d = Driver::with_mounter(&e.home, &e.run, &[] as &[&str], fake).unwrap();
    let stuck = e.home.join("staging/1-2-rm-X/merged");
    mount_tmpfs(&stuck);
    let err = d.cleanup().unwrap_err();
    assert_eq!(err.code(), cvmfs_graphdriver::ErrorCode::Busy, "{err}");
    let canonical = std::fs::canonicalize(&stuck).unwrap();
    assert!(
        err.to_string().contains(canonical.to_str().unwrap()),
        "{err}"
    );
    // The scratch guard detaches it.
}

#[test]
#[ignore = "needs root"]
fn privileged_remove_refuses_while_something_stays_mounted_inside() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let fake = Arc::new(cvmfs_graphdriver::mount::fake::recording_mounter(true));
    let d = Driver::with_mounter(&e.home, &e.run, &[] as &[&str], fake).unwrap();
    d.create("L", None, true, &[]).unwrap();
    // Mounted by someone else inside the layer, and not unmountable here.
    let inside = d.layer_content_dir("L").unwrap().join("sub");
    mount_tmpfs(&inside);
    std::fs::write(inside.join("precious"), b"keep").unwrap();
    let err = d.remove("L").unwrap_err();
    assert_eq!(err.code(), cvmfs_graphdriver::ErrorCode::Busy, "{err}");
    assert!(err.to_string().contains("layer L: remove"), "{err}");
    assert!(d.exists("L").unwrap(), "nothing removed");
    assert_eq!(std::fs::read(inside.join("precious")).unwrap(), b"keep");
    // Once it is gone, remove works.
    rustix::mount::unmount(&inside, rustix::mount::UnmountFlags::DETACH).unwrap();
    d.remove("L").unwrap();
    assert!(!d.exists("L").unwrap());
}
