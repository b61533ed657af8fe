//! Local layers through the real kernel: these tests mount overlays, so they need
//! root: each is `#[ignore = "needs root"]`, so a plain `cargo test` reports it as
//! ignored; hack/test-rust.sh runs them with `--include-ignored` as root.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cvmfs_graphdriver::{Driver, ErrorCode};

struct Env {
    _t: tempfile::TempDir,
    home: PathBuf,
    run: PathBuf,
}

fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("graph/cvmfs");
    let run = t.path().join("run");
    Env { _t: t, home, run }
}

impl Env {
    fn driver(&self) -> Driver {
        Driver::new(&self.home, &self.run, &[] as &[&str]).unwrap()
    }
}

fn is_mount_point(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[test]
#[ignore = "needs root"]
fn privileged_create_get_put_remove() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let d = e.driver();
    d.create("Base", None, true, &[]).unwrap();
    let m = d.get("Base", None, &[]).unwrap();
    assert!(is_mount_point(&m), "{} mounted", m.display());
    let md = fs::metadata(&m).unwrap();
    assert_eq!(
        md.permissions().mode() & 0o7777,
        0o555,
        "fresh root is 0555"
    );
    assert_eq!((md.uid(), md.gid()), (0, 0));
    fs::write(m.join("hello"), b"world").unwrap();
    d.put("Base").unwrap();
    assert!(!is_mount_point(&m));
    // Written through the mount, stored in the layer's own diff dir.
    assert_eq!(
        fs::read(d.layer_content_dir("Base").unwrap().join("hello")).unwrap(),
        b"world"
    );

    d.create("Snap", Some("Base"), false, &[]).unwrap();
    let m2 = d.get("Snap", None, &[]).unwrap();
    assert_eq!(fs::read(m2.join("hello")).unwrap(), b"world");
    fs::remove_file(m2.join("hello")).unwrap();
    fs::write(m2.join("new"), b"n").unwrap();
    d.put("Snap").unwrap();
    let changes = d.changes("Snap", Some("Base")).unwrap();
    let mut got: Vec<(String, u8)> = changes
        .iter()
        .map(|c| (c.path.clone(), c.kind as u8))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("/hello".to_string(), 2), ("/new".to_string(), 1)]
    );
    // Not the direct parent: the caller must use the naive diff.
    assert_eq!(
        d.changes("Snap", None).unwrap_err().code(),
        ErrorCode::NotSupported
    );

    // Removing unmounts even when gets are outstanding.
    let m2 = d.get("Snap", None, &[]).unwrap();
    d.get("Snap", None, &[]).unwrap();
    d.remove("Snap").unwrap();
    assert!(!is_mount_point(&m2));
    assert!(!d.exists("Snap").unwrap());
    d.remove("Snap").unwrap();
    d.remove("Base").unwrap();
    assert!(d.list_layers().unwrap().is_empty());
}

#[test]
#[ignore = "needs root"]
fn privileged_refcounts_are_shared_between_handles() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let a = e.driver();
    let b = e.driver();
    a.create("L", None, true, &[]).unwrap();
    let m = a.get("L", None, &[]).unwrap();
    assert_eq!(b.get("L", None, &[]).unwrap(), m);
    a.put("L").unwrap();
    assert!(is_mount_point(&m), "still used through handle b");
    b.put("L").unwrap();
    assert!(!is_mount_point(&m));
    // Put of a layer that is not mounted is fine; of an unknown layer it is not.
    a.put("L").unwrap();
    assert_eq!(a.put("nope").unwrap_err().code(), ErrorCode::LayerUnknown);
    assert_eq!(
        a.get("nope", None, &[]).unwrap_err().code(),
        ErrorCode::LayerUnknown
    );
    a.remove("L").unwrap();
}

#[test]
#[ignore = "needs root"]
fn privileged_remount_after_crash_and_cleanup() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let d = e.driver();
    d.create("L", None, true, &[]).unwrap();
    let m = d.get("L", None, &[]).unwrap();
    // Simulate a reboot: the mount is gone but the count file says 1.
    rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH).unwrap();
    let d2 = e.driver();
    let m2 = d2.get("L", None, &[]).unwrap();
    assert_eq!(m, m2);
    assert!(
        is_mount_point(&m),
        "remounted although the count said mounted"
    );
    d2.get("L", None, &[]).unwrap();
    d2.cleanup().unwrap();
    assert!(!is_mount_point(&m), "cleanup unmounts");
    // After cleanup the count is reset: one get + one put leaves it unmounted.
    d2.get("L", None, &[]).unwrap();
    d2.put("L").unwrap();
    assert!(!is_mount_point(&m));
    d2.remove("L").unwrap();
}

#[test]
#[ignore = "needs root"]
fn privileged_read_only_get_has_no_upper() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let d = e.driver();
    d.create("L", None, true, &[]).unwrap();
    let m = d.get("L", None, &[]).unwrap();
    fs::write(m.join("f"), b"1").unwrap();
    d.put("L").unwrap();
    let m = d.get("L", None, &["ro".to_string()]).unwrap();
    assert_eq!(fs::read(m.join("f")).unwrap(), b"1");
    let err = fs::write(m.join("g"), b"2").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    d.put("L").unwrap();
    d.remove("L").unwrap();
}

#[test]
#[ignore = "needs root"]
fn privileged_deep_stack_of_120_layers() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let d = e.driver();
    let mut parent: Option<String> = None;
    for i in 0..120 {
        // Long IDs, as containers/storage uses: 120 × 64 bytes is far beyond one page.
        let id = format!("{i:064x}");
        d.create(&id, parent.as_deref(), false, &[]).unwrap();
        fs::write(
            d.layer_content_dir(&id).unwrap().join(format!("f{i}")),
            i.to_string(),
        )
        .unwrap();
        parent = Some(id);
    }
    let top = parent.unwrap();
    let m = d.get(&top, None, &[]).unwrap();
    for i in [0, 1, 60, 119] {
        assert_eq!(
            fs::read_to_string(m.join(format!("f{i}"))).unwrap(),
            i.to_string()
        );
    }
    let status = d.status();
    assert!(
        status
            .iter()
            .any(|(k, v)| k == "Mount API" && v == "fsconfig lowerdir+"),
        "{status:?}"
    );
    d.put(&top).unwrap();
    for id in d.list_layers().unwrap() {
        d.remove(&id).unwrap();
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_update_id_map_shifts_the_whole_stack() {
    cvmfs_testkit::gate::require_root();
    use cvmfs_graphdriver::archive::{IdMap, IdMappings};
    let e = env();
    let d = e.driver();
    d.create("base", None, false, &[]).unwrap();
    let diff = d.layer_content_dir("base").unwrap();
    fs::write(diff.join("f"), b"x").unwrap();
    std::os::unix::fs::chown(diff.join("f"), Some(1), Some(2)).unwrap();
    d.create("child", Some("base"), false, &[]).unwrap();
    let map = IdMappings {
        uids: vec![IdMap {
            container_id: 0,
            host_id: 100000,
            size: 65536,
        }],
        gids: vec![IdMap {
            container_id: 0,
            host_id: 200000,
            size: 65536,
        }],
    };
    d.update_id_map("child", None, Some(&map)).unwrap();
    let m = d.get("child", None, &[]).unwrap();
    let md = fs::metadata(m.join("f")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (100001, 200002),
        "parent file seen shifted"
    );
    assert_eq!(fs::read(m.join("f")).unwrap(), b"x");
    d.put("child").unwrap();
    // The parent is untouched, and the child's own diff holds no changes.
    let md = fs::metadata(diff.join("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1, 2));
    assert!(fs::read_dir(d.layer_content_dir("child").unwrap())
        .unwrap()
        .next()
        .is_none());
    assert!(d.changes("child", Some("base")).unwrap().is_empty());
    let dirs = d.layer_content_dirs("child").unwrap();
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    assert!(
        dirs[0].ends_with("child/diff")
            && dirs[1].ends_with("child/diff1")
            && dirs[2].ends_with("base/diff")
    );
    assert!(
        dirs[1].join("f").exists(),
        "the re-owned copy is found through the content dirs"
    );
    let meta = d.metadata("child").unwrap();
    assert!(meta["LowerDir"].contains("/child/diff1:"), "{meta:?}");

    // Mapping back (to_container = the same map, to_host = identity) restores the IDs.
    d.update_id_map("child", Some(&map), None).unwrap();
    let m = d.get("child", None, &[]).unwrap();
    let md = fs::metadata(m.join("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1, 2));
    d.put("child").unwrap();

    // A mapped parentless layer's root belongs to the mapped root.
    d.create_mapped("m", None, true, &[], Some(&map)).unwrap();
    let md = fs::metadata(d.get("m", None, &[]).unwrap()).unwrap();
    assert_eq!((md.uid(), md.gid()), (100000, 200000));
    d.put("m").unwrap();
    for id in d.list_layers().unwrap() {
        d.remove(&id).unwrap();
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_mount2_fallback_with_short_links() {
    cvmfs_testkit::gate::require_root();
    use cvmfs_graphdriver::mount::{MountApi, Mounter, OverlayMounter, RealSyscalls};
    use std::sync::Arc;
    let e = env();
    // As on a kernel without fsconfig lowerdir+ (before 6.8).
    let m: Arc<dyn Mounter> = Arc::new(OverlayMounter::with_api(RealSyscalls, MountApi::Legacy));
    let d = Driver::with_mounter(&e.home, &e.run, &[] as &[&str], m).unwrap();
    let mut parent: Option<String> = None;
    // 40 layers × a 64-byte ID would overflow one page with full paths; the
    // short links in l/ keep it well below.
    for i in 0..40 {
        let id = format!("{:064x}", i + 1000);
        d.create(&id, parent.as_deref(), false, &[]).unwrap();
        fs::write(
            d.layer_content_dir(&id).unwrap().join(format!("f{i}")),
            b"x",
        )
        .unwrap();
        parent = Some(id);
    }
    let top = parent.unwrap();
    let mnt = d.get(&top, None, &[]).unwrap();
    assert!(is_mount_point(&mnt));
    assert!(mnt.join("f0").exists() && mnt.join("f39").exists());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(mnt.to_str().unwrap()))
        .unwrap();
    assert!(
        line.contains(&format!("{}/l/", e.home.display())),
        "lowers via short links: {line}"
    );
    assert_eq!(
        d.status().iter().find(|(k, _)| k == "Mount API").unwrap().1,
        "mount(2)"
    );
    d.put(&top).unwrap();
    assert!(!is_mount_point(&mnt));
    for id in d.list_layers().unwrap() {
        d.remove(&id).unwrap();
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_home_on_overlayfs_is_a_prerequisites_error() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let d = e.driver();
    d.create("c", None, true, &[]).unwrap();
    // The merged view of a layer is an overlayfs: a graph root there (as inside
    // a container) cannot hold overlay upper directories.
    let m = d.get("c", None, &[]).unwrap();
    let err = Driver::new(&m.join("graph/cvmfs"), &e.run, &[] as &[&str])
        .err()
        .unwrap();
    assert_eq!(err.code(), ErrorCode::Prerequisites, "{err}");
    assert!(err.to_string().contains("is on overlayfs"), "{err}");
    d.put("c").unwrap();
    d.remove("c").unwrap();
}

#[test]
#[ignore = "needs root"]
fn privileged_cleanup_through_a_symlinked_home() {
    cvmfs_testkit::gate::require_root();
    let e = env();
    let real = e.home.parent().unwrap().join("real");
    fs::create_dir_all(&real).unwrap();
    let link = e.home.parent().unwrap().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let d = Driver::new(&link.join("cvmfs"), &e.run, &[] as &[&str]).unwrap();
    d.create("a", None, true, &[]).unwrap();
    let m = d.get("a", None, &[]).unwrap();
    let resolved = fs::canonicalize(&m).unwrap();
    assert!(is_mount_point(&resolved));
    d.cleanup().unwrap();
    assert!(
        !is_mount_point(&resolved),
        "cleanup found the mount under the resolved home"
    );
    d.remove("a").unwrap();
}
