//! CVMFS layers through the real kernel: a plain directory stands in for a
//! repository, an additional image store holds the records. Needs root (mounts).

use std::fs;
use std::path::Path;

use cvmfs_format::{CvmfsRecord, Ownership, StorePaths, Whiteouts};
use cvmfs_graphdriver::{Driver, ErrorCode};
use rustix::fs::{mknodat, FileType, Mode, CWD};

const L1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const L2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn record(store: &Path, repo: &Path, id: &str, path: &str, parent: Option<&str>) {
    let p = StorePaths::new(store).record(id);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let record = CvmfsRecord {
        repository: repo.display().to_string(),
        path: path.into(),
        parent: parent.map(str::to_string),
        whiteouts: Whiteouts::Overlay,
        ownership: Ownership::Kept,
        markers: None,
        flat: None,
        owner_probes: None,
    };
    fs::write(p, record.to_json()).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root"]
fn privileged_local_layer_on_cvmfs_layers() {
    cvmfs_testkit::gate::require_root();
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("cvmfs/repo.example.org");
    let store = t.path().join("store");
    let l1 = repo.join(".layers/11/one/layerfs");
    let l2 = repo.join(".layers/22/two/layerfs");
    fs::create_dir_all(l1.join("etc")).unwrap();
    fs::write(l1.join("etc/a"), b"a").unwrap();
    fs::write(l1.join("etc/b"), b"b").unwrap();
    fs::create_dir_all(l2.join("etc")).unwrap();
    // Overlay-form whiteout of /etc/a in the upper CVMFS layer.
    mknodat(
        CWD,
        l2.join("etc/a"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    fs::write(l2.join("etc/c"), b"c").unwrap();
    record(&store, &repo, L1, ".layers/11/one/layerfs", None);
    record(&store, &repo, L2, ".layers/22/two/layerfs", Some(L1));

    let d = Driver::new(
        &t.path().join("graph/cvmfs"),
        &t.path().join("run"),
        &[
            format!("cvmfs.repositories={}", repo.display()),
            format!("cvmfs.imagestore={}", store.display()),
        ],
    )
    .unwrap();
    d.create("ctr", Some(L2), true, &[]).unwrap();
    let m = d.get("ctr", None, &[]).unwrap();
    assert_eq!(names(&m.join("etc")), vec!["b", "c"]);
    fs::write(m.join("etc/b"), b"changed").unwrap();
    d.put("ctr").unwrap();
    // The repository is never written: the change went to the local upper.
    assert_eq!(fs::read(l1.join("etc/b")).unwrap(), b"b");
    assert_eq!(
        fs::read(d.layer_content_dir("ctr").unwrap().join("etc/b")).unwrap(),
        b"changed"
    );

    // The CVMFS layer itself mounts read-only.
    let m = d.get(L2, None, &[]).unwrap();
    assert_eq!(names(&m.join("etc")), vec!["b", "c"]);
    let err = fs::write(m.join("x"), b"").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    d.put(L2).unwrap();
    assert_eq!(d.remove(L2).unwrap_err().code(), ErrorCode::ReadOnly);
    d.remove("ctr").unwrap();
    d.cleanup().unwrap();
}
