//! Building the project's FUSE view `bench/fuselat` (latency model, fetch log,
//! claim-ownership mode) for the tests that mount it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Build `bench/fuselat` into `out`; `None` when there is no Go toolchain or
/// the build fails (the caller decides between SKIP and failure).
pub fn build(out: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/fuselat");
    let go = ["/usr/local/go/bin/go", "go"]
        .into_iter()
        .find(|g| Command::new(g).arg("version").output().is_ok())?;
    let ok = Command::new(go)
        .args(["build", "-o"])
        .arg(out)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod")
        .status()
        .ok()?
        .success();
    ok.then(|| out.to_path_buf())
}
