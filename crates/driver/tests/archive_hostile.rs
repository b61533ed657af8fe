//! Hostile and malformed layer tars: each must fail with an error naming the entry,
//! and nothing may be written outside the destination.

#[path = "archive_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use cvmfs_graphdriver::archive::{self, ApplyOptions, ArchiveError};
use cvmfs_publisher::layer_spec;
use support::*;

/// Owners in these specs are 0:0; without root, chown to them is skipped so that the
/// checks (which are about paths, not owners) run unprivileged too.
fn unpriv() -> ApplyOptions {
    ApplyOptions {
        ignore_chown_errors: true,
        ..Default::default()
    }
}

fn apply_unpriv(spec: &str, dest: &Path) -> Result<u64, ArchiveError> {
    apply_spec_with(spec, dest, &unpriv())
}

/// Apply `spec` into `<tmp>/a/b/dest` and expect a BadEntry naming `entry`. Returns
/// the temp dir so callers can inspect it; asserts that nothing but `a/b/dest/...`
/// and the `outside` directory exists in it, and that `outside` is still empty.
fn expect_rejected(spec: &str, entry: &str) -> tempfile::TempDir {
    let t = tmp();
    let dest = mkdir(t.path(), "a/b/dest");
    mkdir(t.path(), "outside");
    let spec = spec.replace("@OUT@", t.path().join("outside").to_str().unwrap());
    let err = apply_unpriv(&spec, &dest).expect_err("hostile tar must be rejected");
    match &err {
        ArchiveError::BadEntry { entry: e, reason } => {
            assert_eq!(e, entry, "error names the entry (reason: {reason})");
        }
        other => panic!("expected BadEntry for {entry:?}, got {other:?}"),
    }
    assert!(
        err.to_string().contains(entry),
        "message {err} names the entry"
    );
    for p in tree(t.path()) {
        assert!(
            p == "a" || p == "a/b" || p.starts_with("a/b/dest") || p == "outside",
            "unexpected path {p} outside the destination"
        );
    }
    assert!(tree(&t.path().join("outside")).is_empty());
    t
}

#[test]
fn dotdot_escape_is_rejected() {
    expect_rejected("file \"../x\" \"pwned\"", "../x");
    expect_rejected("file \"a/../../x\" \"pwned\"", "a/../../x");
    expect_rejected("dir \"../../../outside/d\"", "../../../outside/d/");
}

#[test]
fn absolute_path_escape_is_rejected() {
    expect_rejected("file \"/../../x\" \"pwned\"", "/../../x");
    expect_rejected(
        "file \"/../../../outside/x\" \"pwned\"",
        "/../../../outside/x",
    );
}

#[test]
fn absolute_paths_are_relative_to_the_root() {
    // Go treats a leading '/' as the layer root: that is legitimate, not an escape.
    let t = tmp();
    let dest = mkdir(t.path(), "dest");
    apply_unpriv("file \"/etc/motd\" \"hi\"\nfile \"./x/../y\" \"y\"", &dest).unwrap();
    assert_eq!(std::fs::read(dest.join("etc/motd")).unwrap(), b"hi");
    assert_eq!(std::fs::read(dest.join("y")).unwrap(), b"y");
}

#[test]
fn symlink_parent_escape_is_rejected() {
    // a symlink created by the tar itself, pointing outside, then used as a parent
    expect_rejected("symlink /l -> @OUT@\nfile /l/x \"pwned\"", "l/x");
    expect_rejected("symlink /l -> ../../../outside\nfile /l/x \"pwned\"", "l/x");
    expect_rejected("symlink /l -> @OUT@\ndir /l/sub", "l/sub/");
    expect_rejected("symlink /l -> @OUT@\nwhiteout /l/x", "l/.wh.x");
    expect_rejected("symlink /l -> @OUT@\nopaque /l", "l/.wh..wh..opq");
    // symlink in the middle of a longer path
    expect_rejected(
        "dir /d\nsymlink /d/l -> @OUT@\nfile /d/l/e/f \"pwned\"",
        "d/l/e/f",
    );
}

#[test]
fn symlink_to_root_then_etc_passwd_is_rejected() {
    // First with a harmless name under /tmp, then the classic /etc/passwd: if the
    // first let anything through, the test stops before touching /etc.
    let probe = format!("cvmfs-archive-escape-probe-{}", std::process::id());
    expect_rejected(
        &format!("symlink /a -> /\nfile /a/tmp/{probe} \"pwned\""),
        &format!("a/tmp/{probe}"),
    );
    assert!(!Path::new("/tmp").join(&probe).exists());
    let before = std::fs::read("/etc/passwd").unwrap();
    expect_rejected(
        "symlink /a -> /\nfile /a/etc/passwd \"pwned\"",
        "a/etc/passwd",
    );
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
}

#[test]
fn preexisting_symlink_in_dest_is_not_followed() {
    let t = tmp();
    let dest = mkdir(t.path(), "dest");
    let outside = mkdir(t.path(), "outside");
    std::os::unix::fs::symlink(&outside, dest.join("l")).unwrap();
    let err = apply_unpriv("file /l/x \"pwned\"", &dest).unwrap_err();
    assert!(
        matches!(err, ArchiveError::BadEntry { ref entry, .. } if entry == "l/x"),
        "{err}"
    );
    assert!(tree(&outside).is_empty());
    // replacing the symlink itself is fine: it is removed, not followed
    apply_unpriv("dir /l", &dest).unwrap();
    assert!(std::fs::symlink_metadata(dest.join("l")).unwrap().is_dir());
    assert!(outside.exists());
}

#[test]
fn hardlink_escape_is_rejected() {
    expect_rejected("hardlink /h => \"../x\"", "h");
    expect_rejected("hardlink /h => \"/../../../outside/x\"", "h");
    // through a symlinked parent
    expect_rejected("symlink /l -> @OUT@\nhardlink /h => /l/x", "h");
}

#[test]
fn hardlink_to_missing_target_is_rejected() {
    expect_rejected("hardlink /h => /nothing", "h");
    expect_rejected("dir /d\nhardlink /h => /d/nothing", "h");
    expect_rejected("hardlink /h => /no/such/dir/f", "h");
    expect_rejected("dir /d\nhardlink /h => /d", "h");
}

#[test]
fn bad_whiteout_names_are_rejected() {
    expect_rejected("file \".wh.../x\"", ".wh.../x");
    expect_rejected("file \"d/.wh..\"", "d/.wh..");
    expect_rejected("file \".wh.\"", ".wh.");
    expect_rejected("file \"d/.wh..wh.x\"", "d/.wh..wh.x");
}

#[test]
fn replacing_the_root_is_rejected() {
    expect_rejected("file \".\" \"x\"", ".");
    expect_rejected("symlink \"./\" -> @OUT@", "./");
}

fn truncated(tar: &[u8], keep: usize) -> Result<u64, ArchiveError> {
    let t = tmp();
    let dest = mkdir(t.path(), "dest");
    archive::apply_tar(&tar[..keep], &dest, &unpriv())
}

#[test]
fn truncated_tar_is_an_error_not_a_partial_success() {
    let tar = layer_spec::spec_to_tar("dir /d\nfile /d/f size=3000\nfile /g \"g\"").unwrap();
    // headers: d/ at 0, d/f at 512 with content 1024..4024 (padded to 4096), g at 4096
    let cases = [
        (2000, "d/f"), // inside the content
        (4050, "d/f"), // inside the padding
        (4300, "d/f"), // inside the next header
    ];
    for (keep, name) in cases {
        let err = truncated(&tar, keep).expect_err(&format!("cut at {keep} must fail"));
        match &err {
            ArchiveError::BadEntry { entry, reason } => {
                assert!(
                    entry.contains(name),
                    "cut at {keep}: entry {entry:?} reason {reason}"
                );
                assert!(reason.contains("truncated"), "cut at {keep}: {reason}");
            }
            other => panic!("cut at {keep}: {other:?}"),
        }
    }
    // a stream that stops at a header boundary without end-of-archive blocks is a
    // complete archive for Go's archive/tar too: everything before it is applied
    for keep in [5120, 4096] {
        let t = tmp();
        let dest = mkdir(t.path(), "dest");
        archive::apply_tar(&tar[..keep], &dest, &unpriv())
            .unwrap_or_else(|e| panic!("cut at {keep} after an entry: {e}"));
        assert_eq!(std::fs::metadata(dest.join("d/f")).unwrap().len(), 3000);
        assert_eq!(dest.join("g").exists(), keep == 5120, "cut at {keep}");
    }
    // the complete archive, and one with only the first end block, apply fine
    assert!(truncated(&tar, tar.len()).is_ok());
    assert!(truncated(&tar, tar.len() - 512).is_ok());
}

#[test]
fn corrupt_header_is_an_error() {
    let mut tar = layer_spec::spec_to_tar("file /a \"x\"\nfile /b \"y\"").unwrap();
    tar[1024 + 148] ^= 0x55; // checksum of the second header
    let err = truncated(&tar, tar.len()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::BadEntry { ref entry, .. } if entry.contains('a')),
        "{err}"
    );
}

#[test]
#[ignore = "needs root"]
fn privileged_overlay_xattrs_in_a_tar_are_ignored() {
    cvmfs_testkit::gate::require_root();
    // overlayfs state must come only from OCI whiteouts: a tar cannot redirect or
    // make a directory opaque through PAX xattrs.
    let t = tmp();
    let dest = mkdir(t.path(), "dest");
    apply_spec(
        "dir /d\nxattr /d trusted.overlay.opaque=y\nxattr /d trusted.overlay.redirect=/etc\nxattr /d user.ok=1",
        &dest,
    )
    .unwrap();
    assert_eq!(xattr(&dest.join("d"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&dest.join("d"), "trusted.overlay.redirect"), None);
    assert_eq!(
        xattr(&dest.join("d"), "user.ok").as_deref(),
        Some(&b"1"[..])
    );
}

#[test]
fn invalid_owner_ids_are_rejected() {
    // 4294967295 is chown's "unchanged" marker, not an owner
    expect_rejected("file /x 0644 4294967295:0", "x");
    expect_rejected("file /x 0644 0:4294967295", "x");
}

#[test]
fn overlong_paths_are_rejected() {
    let deep = "d/".repeat(2100);
    expect_rejected(&format!("file \"{deep}f\""), &format!("{deep}f"));
}

#[test]
fn mutated_archives_never_panic_or_escape() {
    // Flip bytes of a valid layer (headers, PAX records, content) with fixed seeds:
    // every result must be Ok or an error, never a panic, and nothing may appear
    // outside the destination.
    let base = layer_spec::spec_to_tar(&format!(
        "dir /d 0755\nfile /d/{} 0644 1000:1000 \"content\"\nxattr /d/{} user.k=v\n\
         symlink /d/l -> ../x\nhardlink /h => /d/{}\nwhiteout /d/w\nopaque /d\nfifo /p\n\
         char /c 1:3\nfile /z size=700",
        "n".repeat(120),
        "n".repeat(120),
        "n".repeat(120)
    ))
    .unwrap();
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut tar = base.clone();
        for _ in 0..(1 + next() % 8) {
            let i = (next() % tar.len() as u64) as usize;
            tar[i] = match next() % 4 {
                0 => 0,
                1 => b'/',
                2 => b'.',
                _ => next() as u8,
            };
        }
        let t = tmp();
        let dest = mkdir(t.path(), "a/b/dest");
        let r = std::panic::catch_unwind(|| archive::apply_tar(&tar[..], &dest, &unpriv()));
        assert!(r.is_ok(), "round {round}: apply panicked");
        for p in tree(t.path()) {
            assert!(
                p == "a" || p == "a/b" || p.starts_with("a/b/dest"),
                "round {round}: {p} outside the destination"
            );
        }
    }
}

#[test]
fn names_deeper_than_path_max_with_the_destination_apply_and_measure() {
    // the destination's own path plus the entry's name exceed PATH_MAX: nothing
    // may resolve a whole path (issue 10: "File name too long" from the size walk)
    let t = tmp();
    let base: PathBuf = (0..18).fold(t.path().to_path_buf(), |p, i| {
        p.join(format!("{i:02}{}", "p".repeat(110)))
    });
    let dest = mkdir(&base, "dest");
    let name: String = (0..12)
        .map(|i| format!("{i:02}{}", "n".repeat(240)))
        .collect::<Vec<_>>()
        .join("/");
    assert!(dest.as_os_str().len() + name.len() > 4096);
    let size = apply_unpriv(&format!("file \"{name}\" \"hello\"\n"), &dest)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(size, 5);
}
