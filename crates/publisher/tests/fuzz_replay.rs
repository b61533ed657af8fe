//! Replays every input a fuzz target once failed on (`fuzz/regressions/<target>/`)
//! through the same entry point `make fuzz` uses: each must return within a
//! bounded time, without a panic.

use std::time::{Duration, Instant};

use cvmfs_testkit::fuzzing::TARGETS;

/// Generous for a debug build on a loaded 2-core machine; a hang is minutes.
const PER_INPUT: Duration = Duration::from_secs(10);

#[test]
fn every_saved_fuzz_input_is_handled() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for (name, run) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let started = Instant::now();
            run(&data);
            let took = started.elapsed();
            assert!(took < PER_INPUT, "{}: took {took:?}", f.display());
            replayed += 1;
        }
    }
    // Every target has a seed corpus of saved inputs: a replay of nothing
    // would prove nothing.
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs replayed");
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (name, _) in TARGETS {
        let f = root.join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            text.contains(&format!("fuzzing::{name}(")),
            "{} does not call fuzzing::{name}",
            f.display()
        );
    }
}
