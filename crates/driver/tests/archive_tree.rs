//! copy_tree, remap_ownership and dir_usage on real trees.

#[path = "archive_support/mod.rs"]
mod support;

use std::os::unix::fs::MetadataExt;

use cvmfs_graphdriver::archive::{self, IdMap, IdMappings};
use support::*;

const TEMPLATE: &str = r#"
dir /etc 0755
file /etc/hosts 0644 1000:1000 "127.0.0.1 localhost\n"
xattr /etc/hosts user.note=hello
hardlink /etc/hosts2 => /etc/hosts
file /etc/sudo 04755 0:0 "suid"
symlink /etc/link -> hosts 3:4
dir /dev
char /dev/null 1:3 0666
block /dev/loop0 7:0 0660 0:6
fifo /dev/fifo 0600
whiteout /gone
opaque /data
dir /data 0700 1000:1000 mtime=1500000000
file /data/big size=100000
"#;

#[test]
#[ignore = "needs root"]
fn privileged_copy_tree_preserves_everything() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let src = mkdir(t.path(), "src");
    apply_spec(TEMPLATE, &src).unwrap();
    // an xattr that only a local tree carries (never in tars)
    rustix::fs::lsetxattr(
        src.join("etc"),
        "trusted.custom",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();

    // into a missing destination and into an existing empty one
    for name in ["fresh", "existing"] {
        let dst = t.path().join(name);
        if name == "existing" {
            std::fs::create_dir(&dst).unwrap();
        }
        archive::copy_tree(&src, &dst).unwrap();
        assert_eq!(snap(&src), snap(&dst), "{name}");
        let md = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
        assert_eq!(
            md("etc/hosts").ino(),
            md("etc/hosts2").ino(),
            "hardlinks stay linked"
        );
        assert_ne!(
            md("etc/hosts").ino(),
            std::fs::metadata(src.join("etc/hosts")).unwrap().ino()
        );
        assert!(is_whiteout(&dst.join("gone")));
        assert_eq!(
            xattr(&dst.join("data"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            xattr(&dst.join("etc"), "trusted.custom").as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(md("data").mtime(), 1_500_000_000);
        assert_eq!(md("").mode() & 0o7777, 0o711, "root metadata copied");
        assert_eq!(
            archive::dir_usage(&dst).unwrap(),
            archive::dir_usage(&src).unwrap()
        );
    }
    // a file in the way is an error naming it
    let f = t.path().join("file");
    std::fs::write(&f, "x").unwrap();
    let err = archive::copy_tree(&src, &f).unwrap_err();
    assert!(err.to_string().contains("file"), "{err}");
}

fn userns(host_uid: u32, host_gid: u32) -> IdMappings {
    IdMappings {
        uids: vec![IdMap {
            container_id: 0,
            host_id: host_uid,
            size: 65536,
        }],
        gids: vec![IdMap {
            container_id: 0,
            host_id: host_gid,
            size: 65536,
        }],
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_remap_ownership_moves_between_mappings() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let d = mkdir(t.path(), "d");
    apply_spec(TEMPLATE, &d).unwrap();
    let before = snap(&d);
    let owner = |p: &str| {
        let md = std::fs::symlink_metadata(d.join(p)).unwrap();
        (md.uid(), md.gid())
    };
    let root_owner = owner("");

    // identity -> a user namespace
    let a = userns(100000, 200000);
    archive::remap_ownership(&d, None, Some(&a)).unwrap();
    assert_eq!(owner("etc/hosts"), (101000, 201000));
    assert_eq!(owner("etc/hosts2"), (101000, 201000));
    assert_eq!(
        owner("etc/link"),
        (100003, 200004),
        "symlinks re-owned themselves"
    );
    assert_eq!(owner("dev/loop0"), (100000, 200006));
    assert_eq!(
        owner(""),
        root_owner,
        "the root directory is left alone, as in Go"
    );
    let md = std::fs::metadata(d.join("etc/sudo")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4755, "setuid restored after chown");

    // one namespace -> another
    let b = userns(300000, 300000);
    archive::remap_ownership(&d, Some(&a), Some(&b)).unwrap();
    assert_eq!(owner("etc/hosts"), (301000, 301000));
    assert_eq!(owner("etc/sudo"), (300000, 300000));

    // and back to the host's identity: the tree is as before
    archive::remap_ownership(&d, Some(&b), None).unwrap();
    assert_eq!(snap(&d), before);

    // an owner the source mapping cannot express is an error naming the file
    archive::remap_ownership(&d, None, Some(&a)).unwrap();
    std::os::unix::fs::lchown(d.join("etc/hosts"), Some(5), Some(5)).unwrap();
    let err = archive::remap_ownership(&d, Some(&a), None).unwrap_err();
    assert!(err.to_string().contains("etc/hosts"), "{err}");
}

#[test]
fn dir_usage_counts_hardlinks_once() {
    let t = tmp();
    let d = mkdir(t.path(), "d");
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/a"), vec![0u8; 1000]).unwrap();
    std::fs::hard_link(d.join("sub/a"), d.join("b")).unwrap();
    std::fs::write(d.join("c"), vec![0u8; 24]).unwrap();
    std::os::unix::fs::symlink("sub/a", d.join("l")).unwrap();
    let u = archive::dir_usage(&d).unwrap();
    // a (=b) + c + the symlink's target length; directories count no bytes
    assert_eq!(u.size, 1000 + 24 + 5);
    // root, sub, a/b, c, l
    assert_eq!(u.inodes, 5);
    assert_eq!(archive::dir_size(&d).unwrap(), u.size);
    assert!(archive::dir_usage(&d.join("missing")).is_err());
}

/// Unmounts on drop, so a failing assertion does not leak a mount.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_remap_through_overlay_keeps_hardlinks() {
    cvmfs_testkit::gate::require_root();
    // UpdateLayerIDMap re-owns a layer through its overlay mount: copy-up must not
    // split hardlinked names (overlay with index=off breaks them on copy-up).
    let t = tmp();
    let lower = mkdir(t.path(), "lower");
    let upper = mkdir(t.path(), "upper");
    let work = mkdir(t.path(), "work");
    let merged = mkdir(t.path(), "merged");
    apply_spec(
        "dir /d\nfile /d/a 0644 1000:1000 \"shared\"\nhardlink /d/b => /d/a\nhardlink /c => /d/a",
        &lower,
    )
    .unwrap();
    let data = format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        lower.display(),
        upper.display(),
        work.display()
    );
    let data = std::ffi::CString::new(data).unwrap();
    rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .unwrap();
    let _guard = Mounted(merged.clone());
    archive::remap_ownership(&merged, None, Some(&userns(100000, 100000))).unwrap();
    let md = |p: &str| std::fs::symlink_metadata(merged.join(p)).unwrap();
    for p in ["d/a", "d/b", "c"] {
        assert_eq!((md(p).uid(), md(p).gid()), (101000, 101000), "{p}");
    }
    assert_eq!(md("d/a").ino(), md("d/b").ino());
    assert_eq!(md("d/a").ino(), md("c").ino());
    // the lower layer is untouched
    assert_eq!(std::fs::metadata(lower.join("d/a")).unwrap().uid(), 1000);
}
