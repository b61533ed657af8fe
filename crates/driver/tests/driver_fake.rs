//! Driver behaviour with the recording mounter: the exact overlay composition,
//! mount reference counting and store/CVMFS layer rules, without root.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cvmfs_format::{CvmfsRecord, Ownership, StorePaths, StoreRecord, Whiteouts};
use cvmfs_graphdriver::mount::fake::{recording_mounter, MountCall, RecordingMounter};
use cvmfs_graphdriver::mount::Mounter;
use cvmfs_graphdriver::{Driver, ErrorCode};

const CV: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const CV2: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

struct Env {
    t: tempfile::TempDir,
    home: PathBuf,
    run: PathBuf,
    m: Arc<RecordingMounter>,
}

fn env(lowerdir_plus: bool) -> Env {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("graph/cvmfs");
    let run = t.path().join("run");
    Env {
        t,
        home,
        run,
        m: Arc::new(recording_mounter(lowerdir_plus)),
    }
}

impl Env {
    fn driver(&self, opts: &[String]) -> Driver {
        let m: Arc<dyn Mounter> = self.m.clone();
        Driver::with_mounter(&self.home, &self.run, opts, m).unwrap()
    }
    fn calls(&self) -> Vec<MountCall> {
        let c = self.m.syscalls().calls();
        self.m.syscalls().clear();
        c
    }
    fn diff(&self, id: &str) -> String {
        self.home
            .join("layers")
            .join(id)
            .join("diff")
            .display()
            .to_string()
    }
}

/// The lower directories passed: full paths as they are, short names (of a
/// deep stack) as the symlinks made just before resolve.
fn lowers(calls: &[MountCall]) -> Vec<String> {
    let mut links: Vec<(String, std::path::PathBuf)> = Vec::new();
    calls
        .iter()
        .filter_map(|c| match c {
            MountCall::Links { links: l, .. } => {
                links = l.clone();
                None
            }
            MountCall::FsconfigString { key, value }
                if key == "lowerdir+" && value.starts_with('/') =>
            {
                Some(value.clone())
            }
            MountCall::FsconfigString { key, value } if key == "lowerdir+" => Some(
                links
                    .iter()
                    .find(|(name, _)| name == value)
                    .map(|(_, t)| t.display().to_string())
                    .unwrap_or_else(|| panic!("lowerdir+={value} is not a short link made")),
            ),
            _ => None,
        })
        .collect()
}

/// The unmount calls of a `put`/`remove`: unmount, then removal of the
/// mount's short links.
fn unmounted(target: &std::path::Path) -> Vec<MountCall> {
    vec![
        MountCall::Unmount {
            target: target.to_path_buf(),
        },
        MountCall::RemoveLinks {
            dir: cvmfs_graphdriver::mount::link_dir(target),
        },
    ]
}

fn key(calls: &[MountCall], k: &str) -> Option<String> {
    calls.iter().find_map(|c| match c {
        MountCall::FsconfigString { key, value } if key == k => Some(value.clone()),
        _ => None,
    })
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn get_stacks_own_diff_as_upper_over_the_parent_chain() {
    let e = env(true);
    let d = e.driver(&[s("cvmfs.mountopt=nodev")]);
    d.create("A", None, false, &[]).unwrap();
    d.create("B", Some("A"), false, &[]).unwrap();
    d.create("C", Some("B"), true, &[]).unwrap();
    e.calls();

    let m = d.get("C", None, &[]).unwrap();
    assert_eq!(m, e.home.join("layers/C/merged"));
    let c = e.calls();
    assert_eq!(lowers(&c), vec![e.diff("B"), e.diff("A")]);
    assert_eq!(key(&c, "upperdir"), Some(e.diff("C")));
    assert_eq!(
        key(&c, "workdir"),
        Some(e.home.join("layers/C/work").display().to_string())
    );
    assert!(
        c.contains(&MountCall::Fsmount {
            attrs: vec![s("nodev")]
        }),
        "{c:?}"
    );
    assert!(c.contains(&MountCall::MoveMount { target: m.clone() }));

    // A parentless layer gets the shared empty lower.
    d.get("A", None, &[]).unwrap();
    assert_eq!(
        lowers(&e.calls()),
        vec![e.home.join("empty").display().to_string()]
    );
}

#[test]
fn ro_get_has_no_upper_and_ends_in_empty() {
    let e = env(true);
    let d = e.driver(&[]);
    d.create("A", None, false, &[]).unwrap();
    d.create("B", Some("A"), false, &[]).unwrap();
    e.calls();
    d.get("B", None, &[s("ro")]).unwrap();
    let c = e.calls();
    assert_eq!(
        lowers(&c),
        vec![
            e.diff("B"),
            e.diff("A"),
            e.home.join("empty").display().to_string()
        ]
    );
    assert_eq!(key(&c, "upperdir"), None);
    assert_eq!(key(&c, "workdir"), None);
    assert!(
        c.contains(&MountCall::Fsmount {
            attrs: vec![s("ro")]
        }),
        "{c:?}"
    );
}

/// Counts are rewritten in place (no truncation, which made ext4 flush the
/// file on every get/put): a count that loses a digit (10 -> 9) and a file
/// left by an older driver (a bare number) must still read right.
#[test]
fn mount_counts_rewritten_in_place_read_right() {
    let e = env(true);
    let d = e.driver(&[]);
    d.create("A", None, true, &[]).unwrap();
    let count = e.run.join("cvmfs/mounts/A");
    for _ in 0..10 {
        d.get("A", None, &[]).unwrap();
    }
    e.calls();
    for _ in 0..9 {
        d.put("A").unwrap();
    }
    assert!(e.calls().is_empty(), "one user left");
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "1");
    d.put("A").unwrap();
    let m = e.home.join("layers/A/merged");
    assert_eq!(e.calls(), unmounted(&m), "unmounted by the last put");
    // An older driver's file: "12" means 12 users.
    d.get("A", None, &[]).unwrap();
    fs::write(&count, "12").unwrap();
    e.calls();
    d.put("A").unwrap();
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "11");
    assert!(e.calls().is_empty(), "still in use");
}

#[test]
fn mounts_are_counted_and_remounted_after_a_crash() {
    let e = env(true);
    let d = e.driver(&[]);
    let d2 = e.driver(&[]);
    d.create("A", None, true, &[]).unwrap();
    e.calls();
    let m = d.get("A", None, &[]).unwrap();
    d2.get("A", None, &[]).unwrap();
    d.get("A", None, &[]).unwrap();
    let mounts = e
        .calls()
        .iter()
        .filter(|c| matches!(c, MountCall::MoveMount { .. }))
        .count();
    assert_eq!(mounts, 1, "one mount for three gets");
    d.put("A").unwrap();
    d2.put("A").unwrap();
    assert!(e.calls().is_empty(), "still in use");
    d.put("A").unwrap();
    assert_eq!(e.calls(), unmounted(&m));
    // Put of a layer that is not mounted is not an error.
    d.put("A").unwrap();

    d.get("A", None, &[]).unwrap();
    e.m.syscalls().forget_mount(&m); // a reboot took the mount away
    e.calls();
    d.get("A", None, &[]).unwrap();
    assert!(
        e.calls()
            .iter()
            .any(|c| matches!(c, MountCall::MoveMount { .. })),
        "remounted"
    );
    d.put("A").unwrap();
    assert!(
        !e.m.is_mounted(&m).unwrap(),
        "count restarted at 1 after the remount"
    );
}

#[test]
fn remove_unmounts_even_with_outstanding_gets() {
    let e = env(true);
    let d = e.driver(&[]);
    d.create("A", None, true, &[]).unwrap();
    let m = d.get("A", None, &[]).unwrap();
    d.get("A", None, &[]).unwrap();
    e.calls();
    d.remove("A").unwrap();
    assert_eq!(e.calls(), unmounted(&m));
    assert!(!d.exists("A").unwrap());
    d.remove("A").unwrap();
}

/// The short links in `l/` are made at create time and used by the mount(2)
/// fallback only: with lowerdir+ a get never touches them (it used to
/// re-create each one, a failing symlink(2) per layer per mount), while the
/// fallback re-creates a lost one.
#[test]
fn short_links_are_only_repaired_on_the_fallback_path() {
    for lowerdir_plus in [true, false] {
        let e = env(lowerdir_plus);
        let d = e.driver(&[]);
        d.create("A", None, false, &[]).unwrap();
        d.create("B", Some("A"), false, &[]).unwrap();
        let links = || -> Vec<PathBuf> {
            fs::read_dir(e.home.join("l"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        };
        assert_eq!(links().len(), 2, "made at create time");
        d.get("B", None, &[]).unwrap();
        d.put("B").unwrap();
        for l in links() {
            fs::remove_file(l).unwrap();
        }
        d.get("B", None, &[]).unwrap();
        let want = if lowerdir_plus { 0 } else { 1 };
        assert_eq!(
            links().len(),
            want,
            "lowerdir+ {lowerdir_plus}: links after a get"
        );
    }
}

#[test]
fn fallback_uses_short_links() {
    let e = env(false);
    let d = e.driver(&[]);
    d.create("A", None, false, &[]).unwrap();
    d.create("B", Some("A"), false, &[]).unwrap();
    e.calls();
    d.get("B", None, &[]).unwrap();
    let c = e.calls();
    let MountCall::Mount { data, .. } = c.last().unwrap() else {
        panic!("{c:?}")
    };
    let l = e.home.join("l").display().to_string();
    let lower = data
        .strip_prefix("lowerdir=")
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert!(lower.starts_with(&format!("{l}/")), "{data}");
    assert_eq!(
        fs::canonicalize(lower).unwrap(),
        fs::canonicalize(e.diff("A")).unwrap()
    );
    assert!(
        data.contains(&format!(",upperdir={}", e.diff("B"))),
        "{data}"
    );
    assert_eq!(
        d.status().iter().find(|(k, _)| k == "Mount API").unwrap().1,
        "mount(2)"
    );
}

#[test]
fn create_rules() {
    let e = env(true);
    let d = e.driver(&[]);
    let err = d.create("X", Some("missing"), false, &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::LayerUnknown);
    assert!(err.to_string().contains("parent layer missing"), "{err}");
    let err = d.create("X", None, true, &[s("size=10G")]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotSupported);
    assert!(err.to_string().contains("size=10G"), "{err}");
    assert_eq!(
        d.create("a/b", None, false, &[]).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );

    // An existing ID is replaced (a leftover the layer store does not know about).
    d.create("X", None, false, &[]).unwrap();
    fs::write(d.layer_content_dir("X").unwrap().join("old"), b"").unwrap();
    d.create("X", None, false, &[]).unwrap();
    assert!(!d.layer_content_dir("X").unwrap().join("old").exists());

    // A child's root starts as its parent's root looks.
    let p = d.layer_content_dir("X").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o711)).unwrap();
    d.create("Y", Some("X"), false, &[]).unwrap();
    let mode = fs::metadata(d.layer_content_dir("Y").unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o711);

    // Template copies the template's files.
    fs::write(d.layer_content_dir("Y").unwrap().join("t"), b"tmpl").unwrap();
    d.create_from_template("Z", "Y", Some("X"), true).unwrap();
    assert_eq!(
        fs::read(d.layer_content_dir("Z").unwrap().join("t")).unwrap(),
        b"tmpl"
    );
    assert_eq!(d.list_layers().unwrap().last().unwrap(), "X");
}

#[test]
fn diffs_need_the_direct_parent() {
    let e = env(true);
    let d = e.driver(&[]);
    d.create("A", None, false, &[]).unwrap();
    d.create("B", Some("A"), false, &[]).unwrap();
    fs::write(d.layer_content_dir("B").unwrap().join("f"), b"12345").unwrap();
    assert_eq!(d.diff_size("B", Some("A")).unwrap(), 5);
    for parent in [None, Some(""), Some("Z")] {
        assert_eq!(
            d.diff_size("B", parent).unwrap_err().code(),
            ErrorCode::NotSupported,
            "{parent:?}"
        );
        assert_eq!(
            d.changes("B", parent).unwrap_err().code(),
            ErrorCode::NotSupported
        );
        assert_eq!(
            d.diff("B", parent, None, Vec::new()).unwrap_err().code(),
            ErrorCode::NotSupported
        );
    }
    assert_eq!(d.diff_size("A", Some("")).unwrap(), 0);
    let mut tar = Vec::new();
    d.diff("B", Some("A"), None, &mut tar).unwrap();
    assert!(tar.len() >= 1024 && tar.windows(1).len() > 0);
    assert_eq!(d.changes("B", Some("A")).unwrap().len(), 1);
}

/// A CVMFS repository stand-in plus an additional image store with records.
fn cvmfs_fixture(e: &Env, whiteouts: Whiteouts) -> (PathBuf, PathBuf) {
    let repo = e.t.path().join("cvmfs/unpacked.example.org");
    let store = repo.join("podmanStore");
    let layerfs = repo.join(".layers/c0/c0ffee/layerfs");
    fs::create_dir_all(layerfs.join("etc")).unwrap();
    fs::write(layerfs.join("etc/os-release"), b"cvmfs").unwrap();
    let layerfs2 = repo.join(".layers/b0/b0b0/layerfs");
    fs::create_dir_all(&layerfs2).unwrap();
    let rec = |id: &str, path: &str, parent: Option<&str>| {
        let p = StorePaths::new(&store).record(id);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let record = CvmfsRecord {
            repository: repo.display().to_string(),
            path: path.into(),
            parent: parent.map(str::to_string),
            whiteouts,
            ownership: Ownership::Lost,
            markers: None,
            flat: None,
            owner_probes: None,
        };
        fs::write(p, record.to_json()).unwrap();
    };
    rec(CV, ".layers/c0/c0ffee/layerfs", None);
    rec(CV2, ".layers/b0/b0b0/layerfs", Some(CV));
    (repo, store)
}

#[test]
fn cvmfs_layers_are_read_only_lowers() {
    let e = env(true);
    let (repo, store) = cvmfs_fixture(&e, Whiteouts::OciRaw);
    let d = e.driver(&[format!("cvmfs.imagestore={}", store.display())]);
    assert!(d.exists(CV).unwrap());
    assert!(d.exists(CV2).unwrap());
    assert!(!d.exists(&"d".repeat(64)).unwrap());
    assert!(
        d.list_layers().unwrap().is_empty(),
        "store layers are not ours to list"
    );
    assert_eq!(d.additional_image_stores(), vec![store.clone()]);

    // A container layer on top of two CVMFS layers.
    d.create("ctr", Some(CV2), true, &[]).unwrap();
    e.calls();
    d.get("ctr", None, &[]).unwrap();
    let c = e.calls();
    assert_eq!(
        lowers(&c),
        vec![
            // Above the topmost raw layer: hides its markers and every
            // layer's CVMFS catalog marker.
            e.home
                .join(format!("aux/v2-top-{CV2}"))
                .display()
                .to_string(),
            repo.join(".layers/b0/b0b0/layerfs").display().to_string(),
            repo.join(".layers/c0/c0ffee/layerfs").display().to_string()
        ]
    );
    assert_eq!(key(&c, "upperdir"), Some(e.diff("ctr")));

    // The CVMFS layer itself mounts read-only under the run root.
    let m = d.get(CV2, None, &[]).unwrap();
    assert!(m.starts_with(&e.run), "{}", m.display());
    let c = e.calls();
    assert_eq!(key(&c, "upperdir"), None);
    assert_eq!(
        lowers(&c).len(),
        4,
        "whiteout layer, own dir, parent, empty: {c:?}"
    );
    d.put(CV2).unwrap();

    for err in [
        d.remove(CV).unwrap_err(),
        d.apply_diff(CV, std::io::empty(), &Default::default())
            .unwrap_err(),
        d.update_id_map(CV, None, None).unwrap_err(),
    ] {
        assert_eq!(err.code(), ErrorCode::ReadOnly, "{err}");
        assert!(err.to_string().contains(CV), "{err}");
    }
    let md = d.metadata(CV).unwrap();
    assert_eq!(md["Kind"], "cvmfs");
    assert!(md["Whiteouts"].starts_with("oci-raw"), "{md:?}");
    assert_eq!(md["Repository"], repo.display().to_string());
    assert_eq!(
        d.layer_content_dir(CV).unwrap(),
        repo.join(".layers/c0/c0ffee/layerfs")
    );
    assert_eq!(
        d.read_write_disk_usage(CV).unwrap().size,
        0,
        "CVMFS layers use no local disk"
    );
    let err = d.create(CV, None, false, &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::LayerExists);
}

#[test]
fn missing_repository_is_a_clear_error() {
    let e = env(true);
    let (repo, store) = cvmfs_fixture(&e, Whiteouts::Overlay);
    let d = e.driver(&[format!("cvmfs.imagestore={}", store.display())]);
    d.create("ctr", Some(CV), true, &[]).unwrap();
    // The repository goes away (unmounted): its layer directories vanish.
    fs::remove_dir_all(repo.join(".layers")).unwrap();
    let err = d.get("ctr", None, &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Repository, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("repository {}", repo.display())),
        "{msg}"
    );
    assert!(msg.contains(CV), "{msg}");
    assert!(msg.contains("layer ctr"), "{msg}");
}

#[test]
fn several_handles_and_bad_options() {
    let e = env(true);
    let _a = e.driver(&[]);
    let _b = e.driver(&[]);
    let m: Arc<dyn Mounter> = e.m.clone();
    let err = Driver::with_mounter(&e.home, &e.run, &[s("cvmfs.bogus=1")], m)
        .err()
        .unwrap();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("cvmfs.bogus"));
    let _ = Path::new("/");
}

/// A FIFO where a record should be would block a reader like a hung network
/// filesystem, until the repository limit (a minute by default): it is
/// refused at once instead, whatever the limit. (A really hung repository:
/// `hung_repository_gives_an_error_not_a_hang` in tests/cvmfs_faults.rs.)
#[test]
fn fifo_record_is_refused_at_once() {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    let e = env(true);
    let store = e.t.path().join("hung-store");
    let rec = StorePaths::new(&store).record(CV);
    fs::create_dir_all(rec.parent().unwrap()).unwrap();
    mknodat(CWD, &rec, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
    let d = e.driver(&[format!("cvmfs.imagestore={}", store.display())]);
    for _ in 0..2 {
        let start = std::time::Instant::now();
        let err = d.get(CV, None, &[]).unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(err.code(), ErrorCode::Repository, "{err}");
        assert!(
            err.to_string().contains("not a regular file (a FIFO)"),
            "{err}"
        );
        assert!(
            err.to_string().contains(&rec.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(d.exists(CV).unwrap_err().code(), ErrorCode::Repository);
    // Local layers are unaffected.
    d.create("local", None, false, &[]).unwrap();
    assert!(d.exists("local").unwrap());
}

#[test]
fn concurrent_gets_and_puts_balance() {
    let e = env(true);
    let d = Arc::new(e.driver(&[]));
    d.create("A", None, true, &[]).unwrap();
    e.calls();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let d = d.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    d.get("A", None, &[]).unwrap();
                    d.put("A").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let calls = e.calls();
    let mounts = calls
        .iter()
        .filter(|c| matches!(c, MountCall::MoveMount { .. }))
        .count();
    let unmounts = calls
        .iter()
        .filter(|c| matches!(c, MountCall::Unmount { .. }))
        .count();
    assert!(mounts >= 1);
    assert_eq!(mounts, unmounts, "every mount undone exactly once");
    assert!(!e.m.is_mounted(&e.home.join("layers/A/merged")).unwrap());
}

#[test]
fn stacks_beyond_the_overlay_limit_are_refused_clearly() {
    let e = env(true);
    let d = e.driver(&[]);
    let mut parent: Option<String> = None;
    for i in 0..=cvmfs_graphdriver::driver::MAX_LOWERS + 1 {
        let id = format!("l{i}");
        d.create(&id, parent.as_deref(), false, &[]).unwrap();
        parent = Some(id);
    }
    let top = parent.unwrap();
    let err = d.get(&top, None, &[]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotSupported, "{err}");
    assert!(
        err.to_string()
            .contains("more than overlayfs accepts (500)"),
        "{err}"
    );
    // One layer less fits exactly: 500 lowers under the upper.
    d.get("l500", None, &[]).unwrap();
}

/// Add `"flat":<rel>` to store layer `id`'s record.
fn name_flat(store: &Path, id: &str, rel: &str) {
    let p = StorePaths::new(store).record(id);
    let StoreRecord::Cvmfs { mut record, .. } =
        cvmfs_format::parse_store_record(&fs::read(&p).unwrap()).unwrap()
    else {
        panic!("{}: not a cvmfs record", p.display())
    };
    record.flat = Some(rel.to_string());
    fs::write(&p, record.to_json()).unwrap();
}

#[test]
fn a_published_flat_tree_stands_in_for_the_layers_below_it() {
    let e = env(true);
    let (repo, store) = cvmfs_fixture(&e, Whiteouts::OciRaw);
    let flat = repo.join(".flat/f1/f1a7");
    fs::create_dir_all(flat.join("etc")).unwrap();
    name_flat(&store, CV2, ".flat/f1/f1a7");
    // The base layer's record is not even read while the flat tree answers.
    let base_rec = StorePaths::new(&store).record(CV);
    let good_base = fs::read(&base_rec).unwrap();
    fs::write(&base_rec, b"{ not json").unwrap();
    let opts = [format!("cvmfs.imagestore={}", store.display())];
    let d = e.driver(&opts);
    d.create("ctr", Some(CV2), true, &[]).unwrap();
    e.calls();
    d.get("ctr", None, &[]).unwrap();
    assert_eq!(
        lowers(&e.calls()),
        vec![
            // Hides the tree's catalog marker; cached apart from the
            // layer's own whiteout layer.
            e.home
                .join(format!("aux/v2-top-{CV2}-flat"))
                .display()
                .to_string(),
            flat.display().to_string(),
        ]
    );
    d.put("ctr").unwrap();
    let md = d.metadata(CV2).unwrap();
    assert_eq!(md["LowerDir"], flat.display().to_string());
    assert!(
        md["Flat"].starts_with(&flat.display().to_string()),
        "{md:?}"
    );

    // Turned off, or gone from the repository: the layers, with the same
    // content, and then the base record is needed (and found broken).
    fs::write(&base_rec, &good_base).unwrap();
    let layers = vec![
        e.home
            .join(format!("aux/v2-top-{CV2}"))
            .display()
            .to_string(),
        repo.join(".layers/b0/b0b0/layerfs").display().to_string(),
        repo.join(".layers/c0/c0ffee/layerfs").display().to_string(),
    ];
    let off = e.driver(&[opts[0].clone(), s("cvmfs.use_flat=false")]);
    e.calls();
    off.get("ctr", None, &[]).unwrap();
    assert_eq!(lowers(&e.calls()), layers);
    off.put("ctr").unwrap();
    assert!(off.metadata(CV2).unwrap()["Flat"].contains("use_flat=false"));

    fs::remove_dir_all(&flat).unwrap();
    let d = e.driver(&opts);
    e.calls();
    d.get("ctr", None, &[]).unwrap();
    assert_eq!(lowers(&e.calls()), layers);
    d.put("ctr").unwrap();
}

#[test]
fn a_flat_tree_outside_the_repository_is_refused() {
    let e = env(true);
    let (_repo, store) = cvmfs_fixture(&e, Whiteouts::OciRaw);
    name_flat(&store, CV2, "../elsewhere");
    let d = e.driver(&[format!("cvmfs.imagestore={}", store.display())]);
    let err = d.get(CV2, None, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("flat \"../elsewhere\" leaves the repository"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{CV2}/layer.json")), "{msg}");
}

/// podman gets a local copy of a repository image store (fewer round trips
/// on a cold client) unless `cvmfs.store_views=false`, which hands it the
/// repository's store as it is (a long-running podman then sees a publish).
#[test]
fn store_views_are_local_copies_unless_turned_off() {
    let e = env(true);
    let (_repo, store) = cvmfs_fixture(&e, Whiteouts::OciRaw);
    let p = StorePaths::new(&store);
    fs::create_dir_all(p.images_dir()).unwrap();
    fs::create_dir_all(p.layers_dir()).unwrap();
    fs::write(p.images_json(), b"[]").unwrap();
    fs::write(p.layers_json(), b"[]").unwrap();
    let imagestore = format!("cvmfs.imagestore={}", store.display());
    let d = e.driver(std::slice::from_ref(&imagestore));
    let views = d.additional_image_stores();
    assert_eq!(views.len(), 1);
    assert_ne!(views[0], store, "no local copy of {}", store.display());
    assert!(
        StorePaths::new(&views[0]).images_json().is_file(),
        "the copy at {} has no images.json",
        views[0].display()
    );
    let off = e.driver(&[imagestore, "cvmfs.store_views=false".to_string()]);
    assert_eq!(off.additional_image_stores(), vec![store]);
}
