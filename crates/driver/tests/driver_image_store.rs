//! A separate image store (storage.conf `imagestore`): one driver handle keeps
//! image (read-only) layers in `<imagestore>/cvmfs` and container layers in
//! its home, and finds each layer in either, as the overlay driver does.
//! With the recording mounter: no root needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cvmfs_graphdriver::mount::fake::recording_mounter;
use cvmfs_graphdriver::mount::Mounter;
use cvmfs_graphdriver::Driver;

struct Env {
    _t: tempfile::TempDir,
    home: PathBuf,
    images: PathBuf,
    run: PathBuf,
}

fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    Env {
        home: t.path().join("graph/cvmfs"),
        images: t.path().join("images"),
        run: t.path().join("run"),
        _t: t,
    }
}

impl Env {
    fn driver(&self, separate: Option<&Path>) -> Driver {
        let m: Arc<dyn Mounter> = Arc::new(recording_mounter(true));
        let opts: Vec<String> = separate
            .map(|p| format!("cvmfs.separate_image_store={}", p.display()))
            .into_iter()
            .collect();
        Driver::with_mounter(&self.home, &self.run, &opts, m).unwrap()
    }
    fn image_home(&self) -> PathBuf {
        self.images.join("cvmfs")
    }
}

fn diff(home: &Path, id: &str) -> String {
    home.join("layers")
        .join(id)
        .join("diff")
        .display()
        .to_string()
}

#[test]
fn image_layers_go_to_the_image_store_and_container_layers_stay_home() {
    let e = env();
    let d = e.driver(Some(&e.images));
    d.create("base", None, false, &[]).unwrap();
    d.create("app", Some("base"), false, &[]).unwrap();
    d.create("ctr", Some("app"), true, &[]).unwrap();
    assert!(e.image_home().join("layers/base/diff").is_dir());
    assert!(e.image_home().join("layers/app/diff").is_dir());
    assert!(!e.home.join("layers/base").exists());
    assert!(e.home.join("layers/ctr/diff").is_dir());
    assert!(!e.image_home().join("layers/ctr").exists());

    let ctr = d.metadata("ctr").unwrap();
    assert_eq!(ctr["Kind"], "local");
    assert_eq!(ctr["UpperDir"], diff(&e.home, "ctr"));
    assert_eq!(
        ctr["LowerDir"],
        format!(
            "{}:{}",
            diff(&e.image_home(), "app"),
            diff(&e.image_home(), "base")
        )
    );
    let app = d.metadata("app").unwrap();
    assert_eq!(
        app["Kind"], "local",
        "an image store layer is the driver's own"
    );
    assert_eq!(app["UpperDir"], diff(&e.image_home(), "app"));

    assert!(d.exists("base").unwrap() && d.exists("ctr").unwrap());
    assert!(!d.exists("nothing").unwrap());
    assert_eq!(d.list_layers().unwrap(), vec!["ctr", "app", "base"]);
    assert!(d.additional_image_stores().is_empty());
    let status = d.status();
    assert!(
        status.contains(&("Image Store".to_string(), e.images.display().to_string())),
        "{status:?}"
    );
}

#[test]
fn every_operation_finds_the_layer_in_its_home() {
    let e = env();
    let d = e.driver(Some(&e.images));
    d.create("img", None, false, &[]).unwrap();
    d.create("ctr", Some("img"), true, &[]).unwrap();

    // Mount points live in the layer's own home.
    let m = d.get("img", None, &[]).unwrap();
    assert_eq!(m, e.image_home().join("layers/img/merged"));
    d.put("img").unwrap();
    let m = d.get("ctr", None, &[]).unwrap();
    assert_eq!(m, e.home.join("layers/ctr/merged"));
    d.put("ctr").unwrap();

    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    };
    d.apply_diff("img", &tar[..], &Default::default()).unwrap();
    assert_eq!(
        std::fs::read(e.image_home().join("layers/img/diff/f")).unwrap(),
        b"hi"
    );
    assert_eq!(
        d.layer_content_dir("img").unwrap(),
        e.image_home().join("layers/img/diff")
    );
    assert_eq!(d.diff_size("img", None).unwrap(), 2);

    // A leftover of the same ID in the other home is replaced, not duplicated.
    d.create("ctr", None, false, &[]).unwrap();
    assert!(!e.home.join("layers/ctr").exists());
    assert!(e.image_home().join("layers/ctr").is_dir());

    d.remove("ctr").unwrap();
    d.remove("img").unwrap();
    assert!(!e.image_home().join("layers/img").exists());
    assert!(!d.exists("img").unwrap());
    d.remove("img").unwrap();
}

#[test]
fn without_or_at_the_graph_root_there_is_one_home() {
    let e = env();
    for d in [e.driver(None), e.driver(Some(e.home.parent().unwrap()))] {
        d.create("img", None, false, &[]).unwrap();
        assert!(e.home.join("layers/img/diff").is_dir());
        assert!(!e.image_home().exists());
        assert!(!d.status().iter().any(|(k, _)| k == "Image Store"));
        d.remove("img").unwrap();
    }
}

#[test]
fn a_relative_image_store_is_refused() {
    let e = env();
    let m: Arc<dyn Mounter> = Arc::new(recording_mounter(true));
    let err = Driver::with_mounter(&e.home, &e.run, &["cvmfs.separate_image_store=images"], m)
        .err()
        .expect("a relative path is refused");
    assert!(err.to_string().contains("not an absolute path"), "{err}");
}
