//! A repository holding only what DUCC writes (its layers, `.metadata`
//! manifest copies and legacy `podmanStore/overlay-images`), none of our
//! records: with `cvmfs.ducc_repositories` the driver synthesises a store
//! for it in its home (src/ducc.rs) and mounts its images exactly.

use std::fs;
use std::path::{Path, PathBuf};

use cvmfs_format::ducc::{layers_json, manifest_json, Descriptor, LayerInfo, Manifest};
use cvmfs_format::{parse_store_record, RepoPaths, StorePaths};
use cvmfs_graphdriver::ducc::{big_data_file_name, layer_id, synthesise};
use cvmfs_graphdriver::Driver;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NAME: &str = "127.0.0.1:5000/test/wh:1";

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// One DUCC layer: its unpacked tree (raw OCI markers as plain files, a
/// `.cvmfscatalog` at the root, as DUCC ingests it) and `.metadata/layers.json`.
fn ducc_layer(repo: &Path, blob: &str, diff: &str, files: &[(&str, &str)]) {
    let dir = RepoPaths::new(repo).layer_dir(blob);
    let fs_root = RepoPaths::layerfs_of(&dir);
    fs::create_dir_all(&fs_root).unwrap();
    fs::write(fs_root.join(".cvmfscatalog"), b"").unwrap();
    for (path, content) in files {
        let p = fs_root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let info = LayerInfo {
        id: diff.into(),
        created: "2024-01-02T03:04:05Z".into(),
        compressed_diff_digest: format!("sha256:{blob}"),
        diff_digest: format!("sha256:{diff}"),
        diff_size: 10240,
    };
    let meta = RepoPaths::layer_info_of(&dir);
    fs::create_dir_all(meta.parent().unwrap()).unwrap();
    fs::write(meta, layers_json(&info)).unwrap();
}

/// A DUCC image: config in `overlay-images/<id>/`, manifest copy, listed in
/// DUCC's `images.json`. Returns the image ID and the layer IDs podman uses.
fn ducc_image(repo: &Path, name: &str, layers: &[(&str, &str)]) -> (String, Vec<String>) {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| format!("sha256:{d}")).collect();
    let config = serde_json::to_vec(&json!({
        "created": "2024-01-02T03:04:05Z", "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let id = sha(&config);
    let images = repo.join("podmanStore/overlay-images");
    let cfg = images
        .join(&id)
        .join(big_data_file_name(&format!("sha256:{id}")));
    fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    fs::write(cfg, &config).unwrap();
    let desc = |mt: &str, size: i64, d: &str| Descriptor {
        media_type: mt.into(),
        size,
        digest: format!("sha256:{d}"),
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        config: desc(
            "application/vnd.oci.image.config.v1+json",
            config.len() as i64,
            &id,
        ),
        layers: layers
            .iter()
            .map(|(b, _)| desc("application/vnd.oci.image.layer.v1.tar+gzip", 123, b))
            .collect(),
    };
    let m = RepoPaths::new(repo).manifest_copy(name);
    fs::create_dir_all(m.parent().unwrap()).unwrap();
    fs::write(m, manifest_json(&manifest)).unwrap();
    let index = images.join("images.json");
    let mut list: Vec<Value> = fs::read(&index)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or_default();
    list.push(
        json!({"id": id, "names": [name], "layer": layers.last().unwrap().1,
                     "created": "2024-01-02T03:04:05Z"}),
    );
    fs::write(index, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
    let mut ids: Vec<String> = Vec::new();
    for (_, d) in layers {
        ids.push(layer_id(ids.last().map(String::as_str), d));
    }
    (id, ids)
}

/// The image the e2e case uses too: a base layer, and a layer deleting
/// `/etc/a` and making `/data/x` opaque with raw markers.
fn wh_repo(root: &Path) -> (PathBuf, String, Vec<String>, [String; 2]) {
    let repo = root.join("cvmfs/ducc.example.org");
    let (b1, d1, b2, d2) = (sha(b"blob1"), sha(b"diff1"), sha(b"blob2"), sha(b"diff2"));
    ducc_layer(
        &repo,
        &b1,
        &d1,
        &[
            ("etc/a", "a"),
            ("etc/b", "b"),
            ("data/x/1", "1"),
            ("data/x/2", "2"),
        ],
    );
    ducc_layer(
        &repo,
        &b2,
        &d2,
        &[
            ("etc/.wh.a", ""),
            ("data/x/.wh..wh..opq", ""),
            ("data/x/3", "3"),
        ],
    );
    let (id, ids) = ducc_image(&repo, NAME, &[(&b1, &d1), (&b2, &d2)]);
    (repo, id, ids, [b1, b2])
}

/// Every path and its content under `dir`, to show the repository unchanged.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
                out.push((p, Vec::new()));
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn open(root: &Path, repo: &Path) -> Driver {
    Driver::new(
        &root.join("graph/cvmfs"),
        &root.join("run"),
        &[format!("cvmfs.ducc_repositories={}", repo.display())],
    )
    .unwrap()
}

#[test]
fn a_ducc_repository_becomes_a_store_with_podmans_layer_ids() {
    let t = tempfile::tempdir().unwrap();
    let (repo, id, ids, blobs) = wh_repo(t.path());
    let before = snapshot(&repo);
    let d = open(t.path(), &repo);
    let stores = d.additional_image_stores();
    assert_eq!(stores.len(), 1, "{stores:?}");
    assert!(
        stores[0].starts_with(t.path().join("graph/cvmfs/ducc")),
        "{stores:?}"
    );
    let store = StorePaths::new(&stores[0]);

    let images: Vec<Value> =
        serde_json::from_slice(&fs::read(store.images_json()).unwrap()).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["id"], json!(id));
    assert_eq!(images[0]["names"], json!([NAME]));
    assert_eq!(images[0]["layer"], json!(ids[1]));
    // the config is served as podman stores it, byte for byte DUCC's
    let cfg = store
        .image_dir(&id)
        .join(big_data_file_name(&format!("sha256:{id}")));
    assert_eq!(sha(&fs::read(cfg).unwrap()), id);
    let manifest: Value =
        serde_json::from_slice(&fs::read(store.image_dir(&id).join("manifest")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["digest"], json!(format!("sha256:{id}")));

    let layers: Vec<Value> =
        serde_json::from_slice(&fs::read(store.layers_json()).unwrap()).unwrap();
    let got: Vec<&str> = layers.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(ids[0], sha(b"diff1"), "a base layer's ID is its diffID");
    assert_eq!(layers[1]["parent"], json!(ids[0]));
    assert_eq!(
        layers[1]["compressed-diff-digest"],
        json!(format!("sha256:{}", blobs[1]))
    );
    assert_eq!(
        layers[1]["diff-digest"],
        json!(format!("sha256:{}", sha(b"diff2")))
    );
    assert!(fs::metadata(store.layers_lock()).unwrap().is_file());

    let rec = parse_store_record(&fs::read(store.record(&ids[1])).unwrap()).unwrap();
    assert!(
        format!("{rec:?}").contains(&format!(".layers/{}/{}/layerfs", &blobs[1][..2], blobs[1])),
        "{rec:?}"
    );
    let meta = d.metadata(&ids[1]).unwrap();
    assert!(meta["Ownership"].starts_with("lost"), "{meta:?}");
    assert_eq!(snapshot(&repo), before, "the repository is never written");
}

#[test]
fn the_store_is_rebuilt_only_when_ducc_publishes() {
    let t = tempfile::tempdir().unwrap();
    let (repo, first_id, _, _) = wh_repo(t.path());
    let home = t.path().join("graph/cvmfs");
    let first = open(t.path(), &repo).additional_image_stores();
    let again = synthesise(&home, &repo, &[]).unwrap();
    assert!(!again.built, "same publication: reused");
    assert_eq!(vec![again.store.clone()], first);

    // DUCC publishes a second image and a broken one (config not matching
    // its ID): a new store lists the good ones and names the broken one.
    let b3 = sha(b"blob3");
    ducc_layer(&repo, &b3, &sha(b"diff3"), &[("new", "n")]);
    let (id2, _) = ducc_image(
        &repo,
        "127.0.0.1:5000/test/other:2",
        &[(&b3, &sha(b"diff3"))],
    );
    let b4 = sha(b"blob4");
    ducc_layer(&repo, &b4, &sha(b"diff4"), &[("other", "o")]);
    let (bad, _) = ducc_image(&repo, "127.0.0.1:5000/test/bad:1", &[(&b4, &sha(b"diff4"))]);
    let cfg = repo
        .join("podmanStore/overlay-images")
        .join(&bad)
        .join(big_data_file_name(&format!("sha256:{bad}")));
    fs::write(cfg, b"{\"tampered\":true}").unwrap();
    // The image already built is content-addressed: taken from the previous
    // store, not read again from the repository (here its config is gone).
    fs::remove_dir_all(repo.join("podmanStore/overlay-images").join(&first_id)).unwrap();
    let next = synthesise(&home, &repo, &[]).unwrap();
    assert!(next.built);
    assert_ne!(next.store, again.store);
    assert_eq!(next.skipped.len(), 1, "{:?}", next.skipped);
    assert!(
        next.skipped[0].contains("does not hash to the image ID"),
        "{:?}",
        next.skipped
    );
    let images: Vec<Value> =
        serde_json::from_slice(&fs::read(StorePaths::new(&next.store).images_json()).unwrap())
            .unwrap();
    let ids: Vec<&str> = images.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id2.as_str()));
    assert!(
        ids.contains(&first_id.as_str()),
        "the earlier image was not reused"
    );
    // nothing left in staging
    assert_eq!(fs::read_dir(home.join("staging")).unwrap().count(), 0);
}

#[test]
fn an_unreadable_ducc_repository_does_not_stop_the_driver() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("cvmfs/missing.example.org");
    fs::create_dir_all(&repo).unwrap();
    let d = open(t.path(), &repo);
    assert!(d.additional_image_stores().is_empty());
}

#[test]
#[ignore = "needs root"]
fn privileged_a_ducc_image_mounts_with_its_whiteouts_applied() {
    cvmfs_testkit::gate::require_root();
    let t = tempfile::tempdir().unwrap();
    let (repo, _, ids, _) = wh_repo(t.path());
    let d = open(t.path(), &repo);
    d.create("ctr", Some(&ids[1]), true, &[]).unwrap();
    let m = d.get("ctr", None, &[]).unwrap();
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&m.join("etc")), ["b"]);
    assert_eq!(names(&m.join("data/x")), ["3"]);
    assert_eq!(names(&m), ["data", "etc"]);
    d.put("ctr").unwrap();
    d.remove("ctr").unwrap();
}

/// What synthesis costs as DUCC's repository grows (local disk, warm cache):
/// built once per DUCC publication, then one `stat` per `Init`.
#[test]
fn measure_synthesis_against_repository_size() {
    for n in [10usize, 1000] {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("cvmfs/many.example.org");
        let (base_blob, base_diff) = (sha(b"base-blob"), sha(b"base-diff"));
        ducc_layer(&repo, &base_blob, &base_diff, &[("etc/os-release", "x")]);
        for i in 0..n {
            let (b, d) = (
                sha(format!("blob{i}").as_bytes()),
                sha(format!("diff{i}").as_bytes()),
            );
            ducc_layer(&repo, &b, &d, &[("app", "a")]);
            ducc_image(
                &repo,
                &format!("reg.example.org/app{i}:1"),
                &[(&base_blob, &base_diff), (&b, &d)],
            );
        }
        let home = t.path().join("graph/cvmfs");
        fs::create_dir_all(home.join("staging")).unwrap();
        let start = std::time::Instant::now();
        let built = synthesise(&home, &repo, &[]).unwrap();
        let first = start.elapsed();
        assert!(
            built.built && built.skipped.is_empty(),
            "{:?}",
            built.skipped
        );
        let start = std::time::Instant::now();
        assert!(!synthesise(&home, &repo, &[]).unwrap().built);
        let again = start.elapsed();
        // DUCC publishes one more image: only it is read from the repository
        let (b, d) = (sha(b"one-more-blob"), sha(b"one-more-diff"));
        ducc_layer(&repo, &b, &d, &[("app", "b")]);
        ducc_image(
            &repo,
            "reg.example.org/one-more:1",
            &[(&base_blob, &base_diff), (&b, &d)],
        );
        let start = std::time::Instant::now();
        let next = synthesise(&home, &repo, &[]).unwrap();
        let incremental = start.elapsed();
        assert!(next.built);
        let store = StorePaths::new(&built.store);
        let index = fs::metadata(store.images_json()).unwrap().len()
            + fs::metadata(store.layers_json()).unwrap().len();
        println!(
            "MEASURE: ducc synthesis, {n} images: first {:.3} s, unchanged {:.6} s, one image more {:.3} s, images.json+layers.json {index} bytes",
            first.as_secs_f64(),
            again.as_secs_f64(),
            incremental.as_secs_f64()
        );
    }
}

#[test]
fn ducc_images_lists_only_the_images_asked_for() {
    let t = tempfile::tempdir().unwrap();
    let (repo, id, _, _) = wh_repo(t.path());
    let b3 = sha(b"blob3");
    ducc_layer(&repo, &b3, &sha(b"diff3"), &[("new", "n")]);
    let (other, _) = ducc_image(&repo, "reg.example.org/other:2", &[(&b3, &sha(b"diff3"))]);
    let d = Driver::new(
        &t.path().join("graph/cvmfs"),
        &t.path().join("run"),
        &[
            format!("cvmfs.ducc_repositories={}", repo.display()),
            "cvmfs.ducc_images=127.0.0.1:5000/test/*".to_string(),
        ],
    )
    .unwrap();
    let store = StorePaths::new(&d.additional_image_stores()[0]);
    let images: Vec<Value> =
        serde_json::from_slice(&fs::read(store.images_json()).unwrap()).unwrap();
    let ids: Vec<&str> = images.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [id.as_str()],
        "only the matching image ({other} is not asked for)"
    );
    // its other layers are not listed either
    let layers: Vec<Value> =
        serde_json::from_slice(&fs::read(store.layers_json()).unwrap()).unwrap();
    assert_eq!(layers.len(), 2);
    // another pattern is another store
    let all = synthesise(&t.path().join("graph/cvmfs"), &repo, &[]).unwrap();
    assert!(all.built);
    assert_ne!(all.store, store.root);
}

#[test]
fn duccs_podman_store_listed_as_an_image_store_is_taken_as_a_ducc_repository() {
    let t = tempfile::tempdir().unwrap();
    let (repo, id, _, _) = wh_repo(t.path());
    let d = Driver::new(
        &t.path().join("graph/cvmfs"),
        &t.path().join("run"),
        &[format!("cvmfs.imagestore={}/podmanStore", repo.display())],
    )
    .unwrap();
    let stores = d.additional_image_stores();
    assert_eq!(stores.len(), 1, "{stores:?}");
    assert!(
        stores[0].starts_with(t.path().join("graph/cvmfs/ducc")),
        "{stores:?}"
    );
    let images: Vec<Value> =
        serde_json::from_slice(&fs::read(StorePaths::new(&stores[0]).images_json()).unwrap())
            .unwrap();
    assert_eq!(images[0]["id"], json!(id));
    // a store of ours (with cvmfs-layers) is left alone
    fs::create_dir_all(repo.join("podmanStore/cvmfs-layers")).unwrap();
    let d = Driver::new(
        &t.path().join("graph2/cvmfs"),
        &t.path().join("run2"),
        &[format!("cvmfs.imagestore={}/podmanStore", repo.display())],
    )
    .unwrap();
    assert_eq!(d.additional_image_stores(), vec![repo.join("podmanStore")]);
}
