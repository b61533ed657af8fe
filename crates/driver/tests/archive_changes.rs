//! changes(): the change list of a layer against its parent chain, as the overlay
//! driver's Changes (containers/storage OverlayChanges) computes it.
//!
//! Set `CVMFS_GO_CHANGES=<binary>` to a program that prints Go's
//! `archive.OverlayChanges(lowers, rw)` as JSON (`<binary> changes RW LOWER...`) to
//! cross-check every scenario against the reference implementation as well.

#[path = "archive_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use cvmfs_graphdriver::archive::{self, Change, ChangeKind};
use support::*;

fn c(path: &str, kind: ChangeKind) -> Change {
    Change {
        path: path.to_string(),
        kind,
    }
}
use ChangeKind::{Add as A, Delete as D, Modify as M};

fn check(rw: &Path, lowers: &[PathBuf], expected: &[Change]) {
    let got = archive::changes(rw, lowers).unwrap();
    assert_eq!(got, expected);
    if let Ok(go) = std::env::var("CVMFS_GO_CHANGES") {
        let out = std::process::Command::new(go)
            .arg("changes")
            .arg(rw)
            .args(lowers)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = serde_json::to_string(&got).unwrap();
        assert_eq!(
            ours.trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
            "differs from Go"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_changes_against_a_parent() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let lower = mkdir(t.path(), "lower");
    let upper = mkdir(t.path(), "upper");
    apply_spec(
        r#"
dir /etc
file /etc/hosts "a"
file /etc/old "o"
dir /data
file /data/a "a"
dir /usr
dir /usr/bin
file /usr/bin/x "x"
"#,
        &lower,
    )
    .unwrap();
    apply_spec(
        r#"
dir /etc
file /etc/hosts "b"
file /etc/new "n"
whiteout /etc/old
dir /data
opaque /data
file /data/b "b"
dir /newdir
file /newdir/f "f"
dir /usr
"#,
        &upper,
    )
    .unwrap();
    check(
        &upper,
        std::slice::from_ref(&lower),
        &[
            // opaque directory replacing one below: deleted (and re-created)
            c("/data", D),
            c("/data/b", A),
            c("/etc/hosts", M),
            // /etc itself is unchanged, but recorded as the parent of an addition
            c("/etc", M),
            c("/etc/new", A),
            c("/etc/old", D),
            c("/newdir", A),
            c("/newdir/f", A),
            // /usr: identical directory, not reported
        ],
    );
    // without parents everything is an addition and whiteouts are deletions
    check(
        &upper,
        &[],
        &[
            c("/data", A),
            c("/data/b", A),
            c("/etc", A),
            c("/etc/hosts", A),
            c("/etc/new", A),
            c("/etc/old", D),
            c("/newdir", A),
            c("/newdir/f", A),
            c("/usr", A),
        ],
    );
    // JSON shape the C ABI returns
    let json = serde_json::to_string(&archive::changes(&upper, &[lower]).unwrap()[..2]).unwrap();
    assert_eq!(
        json,
        r#"[{"path":"/data","kind":2},{"path":"/data/b","kind":1}]"#
    );
}

#[test]
#[ignore = "needs root"]
fn privileged_changes_see_whiteouts_in_the_chain() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let l1 = mkdir(t.path(), "l1");
    let l2 = mkdir(t.path(), "l2");
    let up = mkdir(t.path(), "up");
    apply_spec(
        "file /x \"1\"\ndir /y\nfile /y/z \"1\"\ndir /o\nfile /o/f \"1\"\nfile /m \"1\"",
        &l1,
    )
    .unwrap();
    // the nearest parent deleted /x and /y, and re-created /o as an opaque directory
    apply_spec("whiteout /x\nwhiteout /y\ndir /o\nopaque /o", &l2).unwrap();
    apply_spec(
        "file /x \"3\"\ndir /y\nfile /y/z \"3\"\ndir /o\nfile /o/f \"3\"\nfile /m \"3\"",
        &up,
    )
    .unwrap();
    check(
        &up,
        &[l2, l1],
        &[
            c("/m", M),
            // Go does not look at opaque directories in the parents: /o/f exists in
            // l1, so it counts as modified (and /o, identical to l2's, is unchanged)
            c("/o/f", M),
            c("/x", A),
            c("/y", A),
            c("/y/z", A),
        ],
    );
}

#[test]
fn missing_layer_is_an_error_naming_it() {
    let err = archive::changes(Path::new("/nonexistent/layer/diff"), &[]).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/layer/diff"), "{err}");
}
