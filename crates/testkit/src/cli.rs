//! Running a workspace binary from a test (the binary's path comes from the
//! calling test's `env!("CARGO_BIN_EXE_<name>")`, which only that package has).

use std::path::Path;
use std::process::Command;

/// Run `bin args…`: whether it succeeded, its stdout and its stderr.
pub fn run(bin: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run `bin args…`, which must succeed; its stdout.
pub fn run_ok(bin: &str, args: &[&str]) -> String {
    let (ok, out, err) = run(bin, args);
    assert!(ok, "{bin} {}: failed\n{err}", args.join(" "));
    out
}

/// An OCI layout `dir/oci` of the layer spec files `specs` (bottom first),
/// made by `bin make-oci`; its source argument `oci:<dir>/oci:t`.
pub fn oci_of_specs(bin: &str, dir: &Path, specs: &[&str]) -> String {
    let oci = dir.join("oci").display().to_string();
    let mut args = vec!["make-oci", &oci, "--tag", "t"];
    args.extend_from_slice(specs);
    run_ok(bin, &args);
    format!("oci:{oci}:t")
}

/// Write a layer spec `text` as `dir/name`; its path as an argument.
pub fn spec(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p.display().to_string()
}
