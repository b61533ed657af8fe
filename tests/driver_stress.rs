//! Concurrent calls on one driver handle, with real overlay mounts (root only;
//! without root each test prints `SKIP: <test>: needs root`).
//!
//! Issue 10 found 8 threads racing create/get/put/remove on one ID leaving
//! 20–30 overlay mounts under `staging/*-rm-<id>/merged` while `cleanup`
//! reported success. These tests race the operations and then check what a
//! user would: nothing mounted below the driver home or run root, nothing
//! left in `staging/`, and `cleanup` succeeding.

use std::path::PathBuf;
use std::sync::Arc;

use cvmfs_graphdriver::Driver;

#[path = "hostile/abi_stress.rs"]
mod abi_stress;

fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        true
    } else {
        println!("SKIP: {test}: needs root");
        false
    }
}

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
fn privileged_eight_threads_racing_on_one_id_leak_no_mount() {
    if !root_or_skip("privileged_eight_threads_racing_on_one_id_leak_no_mount") {
        return;
    }
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
fn privileged_abi_eight_threads_thousand_random_operations() {
    if !root_or_skip("privileged_abi_eight_threads_thousand_random_operations") {
        return;
    }
    let seed = abi_stress::seed();
    println!("seed {seed} (rerun with CVMFS_STRESS_SEED={seed})");
    match abi_stress::run(seed) {
        Ok(summary) => println!("{summary}"),
        Err(why) => panic!("seed {seed}: {why}"),
    }
}
