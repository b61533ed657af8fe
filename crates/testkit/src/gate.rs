//! Gating of tests that need something a plain `cargo test` may not have.
//!
//! A test that needs root (real overlay mounts, chown to other owners) is
//! marked `#[ignore = "needs root"]`: a `cargo test` run reports it as
//! *ignored*, never as passed. `hack/test-rust.sh` and `hack/test-cvmfs.sh`
//! run as root with `-- --include-ignored`, so there they run. The test's
//! first line is [`require_root`], which turns an `--include-ignored` run
//! without root into a failure naming the reason instead of a pile of EPERMs.
//!
//! A test that needs an external helper (the Go reference programs the test
//! scripts build) is ignored the same way and names its helper through
//! [`require_env`], which fails when the variable is unset.

/// Whether the tests run as root (effective UID 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Fails the calling test unless it runs as root. Call it first in every
/// `#[ignore = "needs root"]` test.
#[track_caller]
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (real mounts or ownership): run it as root, \
         or leave out --include-ignored"
    );
}

/// The value of the environment variable `var`, which names a helper the
/// test scripts build (e.g. `CVMFS_GO_ARCHIVE`, built by hack/test-rust.sh);
/// fails the calling test when it is unset or empty.
#[track_caller]
pub fn require_env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "this test needs {var} (the helper hack/test-rust.sh builds and exports): \
             set it, or leave out --include-ignored"
        ),
    }
}
