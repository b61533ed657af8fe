//! `make test-hostile`: inputs an attacker controls — layer tars, manifests and
//! registry responses, records in a shared repository, calls through the C ABI —
//! each run as a named case. A case passes when the input is refused (or handled)
//! with an error that names what and where, nothing outside its place changed, and
//! the repository is still consistent (`cvmfs-podman check --deep`).
//!
//! A plain binary (`harness = false`) so that every case prints its own line and
//! the run ends with the project's summary line `hostile: N passed, N failed, N skipped`.
//! Arguments filter cases by substring.

// Only the C ABI cases may use `unsafe`: they call the exports as C does.
#![deny(unsafe_code)]

mod support;

#[allow(unsafe_code)]
mod abi_cases;
mod network_cases;
mod publish_cases;
mod record_cases;
mod tar_cases;

use support::{Case, Outcome};

fn all_cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(tar_cases::cases());
    v.extend(record_cases::cases());
    v.extend(network_cases::cases());
    v.extend(abi_cases::cases());
    v.extend(publish_cases::cases());
    v
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases = all_cases();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "case name {} used twice", c.name);
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in cases {
        if !filters.is_empty() && !filters.iter().any(|f| case.name.contains(f.as_str())) {
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(case.run).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            Outcome::Fail(msg)
        });
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Outcome::Pass => {
                passed += 1;
                println!("PASS {} ({secs:.2}s)", case.name);
            }
            Outcome::Skip(why) => {
                skipped += 1;
                println!("SKIP {}: {why}", case.name);
            }
            Outcome::Fail(why) => {
                failed += 1;
                println!("FAIL {} ({secs:.2}s): {why}", case.name);
            }
        }
    }
    println!("hostile: {passed} passed, {failed} failed, {skipped} skipped");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
