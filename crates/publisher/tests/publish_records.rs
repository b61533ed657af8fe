//! The JSON files `cvmfs-podman publish` writes, checked field by field through
//! typed records: DUCC's `.layers/<d>/.metadata/{layers,origin}.json` and
//! `.metadata/<name>/manifest.json`, the tag link, podmanStore's
//! `layers.json`/`images.json` and big data, our layer records (`layer.json`:
//! markers, flat tree), the flat note, and the `--json` report of publish and
//! republish. These were `jq` assertions in hack/test-publish.sh; the
//! end-to-end parts (containers-storage, umoci, Go tar-split, registries,
//! hostile inputs, crashes) stay there.
//!
//! The record types live in [`shapes`], local to this test, until the format
//! crate (`cvmfs_format`) exports the typed records both programs share: then
//! `shapes` becomes a `use cvmfs_format::...` and the assertions stay as they
//! are. Types that pin a file's whole shape use `deny_unknown_fields`, so an
//! added or renamed field fails here as it failed the `keys ==` checks.
//!
//! Publishing keeps ownership, which needs root: every test is ignored
//! without it (hack/test-rust.sh runs them with --include-ignored as root).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_cvmfs-podman");
const NAME_WH: &str = "registry.test/test/wh:1";
const NAME_SHARED: &str = "registry.test/test/shared:1";

/// The files' shapes, as the repository holds them.
mod shapes {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    /// One entry of DUCC's `.layers/<d>/.metadata/layers.json` (an array of one).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct DuccLayer {
        pub compressed_diff_digest: String,
        pub created: String,
        pub diff_digest: String,
        pub diff_size: u64,
        pub id: String,
    }

    /// DUCC's `.layers/<d>/.metadata/origin.json`: the configs using the layer.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct DuccOrigin {
        pub origin: Vec<String>,
    }

    /// DUCC's `.metadata/<name>/manifest.json` (Go field names).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "PascalCase")]
    pub struct DuccManifest {
        pub schema_version: u32,
        pub media_type: String,
        pub config: DuccDescriptor,
        pub layers: Vec<DuccDescriptor>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "PascalCase")]
    pub struct DuccDescriptor {
        pub media_type: String,
        pub size: u64,
        pub digest: String,
    }

    /// An entry of podmanStore's `cvmfs-layers/layers.json` (containers/storage
    /// writes more fields; these are the ones the publisher fills in).
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub struct StoreLayer {
        pub id: String,
        pub parent: Option<String>,
        pub compression: u8,
        pub compressed_size: u64,
        pub diff_size: u64,
        pub compressed_diff_digest: String,
    }

    /// An entry of podmanStore's `cvmfs-images/images.json`.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub struct StoreImage {
        pub id: String,
        pub layer: String,
        #[serde(default)]
        pub names: Vec<String>,
        pub digest: String,
        pub created: String,
        pub big_data_names: Vec<String>,
        pub big_data_digests: BTreeMap<String, String>,
    }

    /// Our record `podmanStore/cvmfs/layers/<id>/layer.json`, read by the driver.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct LayerRecord {
        pub version: u32,
        pub kind: String,
        pub repository: String,
        pub path: String,
        pub parent: Option<String>,
        pub whiteouts: String,
        pub ownership: String,
        pub markers: Option<Vec<String>>,
        pub flat: Option<String>,
        #[serde(rename = "owner-probes", default)]
        pub owner_probes: Option<serde_json::Value>,
    }

    /// `podmanStore/cvmfs/flat/<c>.json`: this publisher built the flat tree.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FlatNote {
        pub version: u32,
        #[serde(rename = "built-by")]
        pub built_by: String,
        pub layers: Vec<String>,
    }

    /// What `publish --json` prints.
    #[derive(Debug, Deserialize)]
    pub struct PublishReport {
        pub image_id: String,
        pub name: String,
        pub layers_written: usize,
        pub layers_skipped: usize,
        pub flat: String,
    }

    /// `podmanStore/cvmfs/layers/<id>/ownership.json`: the owners a layer
    /// unpacked without them (by DUCC) had in its tar.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Ownership {
        pub version: u32,
        pub entries: Vec<OwnershipEntry>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct OwnershipEntry {
        pub path: String,
        pub uid: u32,
        pub gid: u32,
    }

    /// What `gc --json` prints.
    #[derive(Debug, Deserialize)]
    pub struct GcReport {
        pub images: Vec<String>,
        pub layers: Vec<String>,
        pub layer_dirs: Vec<String>,
        pub flat_dirs: Vec<String>,
    }

    /// The parts of an OCI image layout the tests read.
    #[derive(Debug, Deserialize)]
    pub struct OciIndex {
        pub manifests: Vec<OciDescriptor>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct OciDescriptor {
        pub media_type: String,
        pub digest: String,
        pub size: u64,
        #[serde(default)]
        pub annotations: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct OciManifest {
        pub schema_version: u32,
        pub media_type: String,
        pub config: OciDescriptor,
        pub layers: Vec<OciDescriptor>,
    }

    #[derive(Debug, Deserialize)]
    pub struct OciConfig {
        pub rootfs: OciRootfs,
    }

    #[derive(Debug, Deserialize)]
    pub struct OciRootfs {
        pub diff_ids: Vec<String>,
    }
}

use shapes::*;

/// An image of the test layout, with what the checks derive from it.
struct Image {
    manifest_bytes: Vec<u8>,
    manifest: OciManifest,
    config: String,
    diff_ids: Vec<String>,
    /// containers/image layer IDs (chain IDs), bottom first.
    layer_ids: Vec<String>,
}

impl Image {
    fn config_hex(&self) -> &str {
        hex(&self.config)
    }
    fn layer_hex(&self, i: usize) -> &str {
        hex(&self.manifest.layers[i].digest)
    }
}

struct Fixture {
    _t: tempfile::TempDir,
    oci: PathBuf,
    repo: PathBuf,
    wh: Image,
    shared: Image,
}

impl Fixture {
    /// The test images of hack/test-publish.sh (`wh`: base, whiteouts, top;
    /// `shared`: the same two lower layers under another top), `wh` published
    /// into a fresh repository.
    fn published() -> Fixture {
        cvmfs_testkit::gate::require_root();
        let t = tempfile::Builder::new()
            .prefix("publish-records")
            .tempdir()
            .unwrap();
        let oci = t.path().join("oci");
        let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/publish/images");
        for (tag, top) in [("wh", "top.spec"), ("shared", "shared-top.spec")] {
            let mut args = vec![
                "make-oci".into(),
                path_str(&oci),
                "--tag".into(),
                tag.into(),
            ];
            for s in ["base.spec", "delete.spec", top] {
                args.push(path_str(&specs.join(s)));
            }
            cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        let repo = t.path().join("repo");
        let f = Fixture {
            wh: image(&oci, "wh"),
            shared: image(&oci, "shared"),
            oci,
            repo,
            _t: t,
        };
        let report = f.publish("wh", NAME_WH);
        assert_eq!(
            (
                report.layers_written,
                report.layers_skipped,
                report.flat.as_str()
            ),
            (3, 0, "written"),
            "first publish: {report:?}"
        );
        assert_eq!(report.image_id, f.wh.config_hex());
        assert_eq!(report.name, NAME_WH);
        f.check();
        f
    }

    fn publish(&self, tag: &str, name: &str) -> PublishReport {
        let src = format!("oci:{}:{tag}", self.oci.display());
        let out = cli(&[
            "publish",
            &src,
            "--repo",
            &path_str(&self.repo),
            "--name",
            name,
            "--json",
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("publish --json: {e}: {out}"))
    }

    fn check(&self) {
        cli(&["check", &path_str(&self.repo)]);
    }

    fn layer_dir(&self, hex: &str) -> PathBuf {
        self.repo.join(".layers").join(&hex[..2]).join(hex)
    }

    fn store(&self) -> PathBuf {
        self.repo.join("podmanStore")
    }

    fn record_path(&self, layer_id: &str) -> PathBuf {
        self.store()
            .join("cvmfs/layers")
            .join(layer_id)
            .join("layer.json")
    }

    /// The record's fields as the file spells them, after checking that the
    /// driver's reader (`cvmfs_format::record`) accepts the file and that
    /// the writer type gives back exactly its bytes.
    fn record(&self, layer_id: &str) -> LayerRecord {
        let path = self.record_path(layer_id);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match cvmfs_format::record::parse_store_record(&bytes) {
            Ok(cvmfs_format::record::StoreRecord::Cvmfs { record, .. }) => assert_eq!(
                record.to_json().as_bytes(),
                &bytes[..],
                "{}: not what CvmfsRecord writes",
                path.display()
            ),
            Ok(other) => panic!("{}: not a cvmfs record: {other:?}", path.display()),
            Err(e) => panic!("{}: the driver refuses it: {e}", path.display()),
        }
        read_json(&path)
    }
}

#[test]
#[ignore = "needs root"]
fn ducc_layer_metadata_names_each_blob() {
    let f = Fixture::published();
    for (i, desc) in f.wh.manifest.layers.iter().enumerate() {
        let dir = f.layer_dir(f.wh.layer_hex(i));
        assert!(
            dir.join("layerfs").is_dir(),
            "missing {}/layerfs",
            dir.display()
        );
        let entries: Vec<DuccLayer> = read_json(&dir.join(".metadata/layers.json"));
        let [e] = &entries[..] else {
            panic!(
                "layer {i}: layers.json holds {} entries, not 1",
                entries.len()
            );
        };
        assert_eq!(e.compressed_diff_digest, desc.digest, "layer {i}");
        assert_eq!(e.diff_digest, f.wh.diff_ids[i], "layer {i}");
        assert_eq!(e.id, hex(&f.wh.diff_ids[i]), "layer {i}");
        assert!(
            is_rfc3339_utc(&e.created),
            "layer {i}: created {:?}",
            e.created
        );
        // diff-size is the uncompressed tar's size
        let blob = f.oci.join("blobs/sha256").join(f.wh.layer_hex(i));
        assert_eq!(e.diff_size, gunzipped_size(&blob), "layer {i}: diff-size");
        let origin: DuccOrigin = read_json(&dir.join(".metadata/origin.json"));
        assert_eq!(
            origin.origin,
            std::slice::from_ref(&f.wh.config),
            "layer {i}: origin.json"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn tag_link_and_ducc_manifest() {
    let f = Fixture::published();
    let c = f.wh.config_hex();
    let link = f.repo.join(NAME_WH);
    let target =
        fs::read_link(&link).unwrap_or_else(|e| panic!("tag link {}: {e}", link.display()));
    assert_eq!(target, Path::new("../../.flat").join(&c[..2]).join(c));
    assert!(link.is_dir(), "the tag link does not resolve");
    let m: DuccManifest = read_json(&f.repo.join(".metadata").join(NAME_WH).join("manifest.json"));
    let src = &f.wh.manifest;
    assert_eq!(m.schema_version, src.schema_version);
    assert_eq!(m.media_type, src.media_type);
    assert_eq!(m.config, ducc_descriptor(&src.config));
    let want: Vec<_> = src.layers.iter().map(ducc_descriptor).collect();
    assert_eq!(m.layers, want);
}

#[test]
#[ignore = "needs root"]
fn podman_store_lists_layers_images_and_big_data() {
    let f = Fixture::published();
    let ids = &f.wh.layer_ids;
    let layers: Vec<StoreLayer> = read_json(&f.store().join("cvmfs-layers/layers.json"));
    let mut got: Vec<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want, "layers.json ids");
    for l in &layers {
        let i = ids.iter().position(|id| *id == l.id).unwrap();
        let parent = i.checked_sub(1).map(|p| ids[p].clone());
        assert_eq!(l.parent, parent, "layer {i}: parent");
        assert_eq!(l.compression, 2, "layer {i}: compression (gzip)");
        assert!(
            l.compressed_size > 0 && l.diff_size > 0,
            "layer {i}: sizes {l:?}"
        );
        assert!(
            l.compressed_diff_digest.starts_with("sha256:"),
            "layer {i}: {l:?}"
        );
    }
    let images: Vec<StoreImage> = read_json(&f.store().join("cvmfs-images/images.json"));
    let [img] = &images[..] else {
        panic!("images.json holds {} images, not 1", images.len());
    };
    let md = format!("sha256:{}", sha256_hex(&f.wh.manifest_bytes));
    assert_eq!(img.id, f.wh.config_hex());
    assert_eq!(img.layer, ids[2]);
    assert_eq!(img.names, [NAME_WH]);
    assert_eq!(img.digest, md);
    assert!(
        img.created.get(4..5) == Some("-"),
        "created {:?}",
        img.created
    );
    let mut names = img.big_data_names.clone();
    names.sort();
    let mut want = vec![
        "manifest".to_string(),
        format!("manifest-{md}"),
        f.wh.config.clone(),
    ];
    want.sort();
    assert_eq!(names, want, "big-data-names");
    assert_eq!(img.big_data_digests.get(&f.wh.config), Some(&f.wh.config));
    // the big data files hold the original bytes (names base64-encoded, as
    // containers/storage spells them)
    let dir = f.store().join("cvmfs-images").join(f.wh.config_hex());
    assert_eq!(fs::read(dir.join("manifest")).unwrap(), f.wh.manifest_bytes);
    let config_blob = fs::read(f.oci.join("blobs/sha256").join(f.wh.config_hex())).unwrap();
    assert_eq!(
        fs::read(dir.join(big_data_file(&f.wh.config))).unwrap(),
        config_blob
    );
    let manifest_key = format!("manifest-{md}");
    assert_eq!(
        fs::read(dir.join(big_data_file(&manifest_key))).unwrap(),
        f.wh.manifest_bytes
    );
    assert!(f.store().join("cvmfs-images/images.lock").is_file());
    assert!(f.store().join("cvmfs-layers/layers.lock").is_file());
    for id in ids {
        let ts = f
            .store()
            .join("cvmfs-layers")
            .join(format!("{id}.tar-split.gz"));
        assert!(
            fs::metadata(&ts).map(|m| m.len() > 0).unwrap_or(false),
            "no tar-split for {id}"
        );
    }
    // the middle layer's record, field by field
    let rec = f.record(&ids[1]);
    let want = LayerRecord {
        version: 1,
        kind: "cvmfs".into(),
        repository: path_str(&fs::canonicalize(&f.repo).unwrap()),
        path: format!(
            ".layers/{}/{}/layerfs",
            &f.wh.layer_hex(1)[..2],
            f.wh.layer_hex(1)
        ),
        parent: Some(ids[0].clone()),
        whiteouts: "oci-raw".into(),
        ownership: "kept".into(),
        markers: rec.markers.clone(),
        flat: None,
        owner_probes: rec.owner_probes.clone(),
    };
    assert_eq!(rec, want);
    // the owners of the layer root (and of entries not root's) as unpacked
    let probes = rec.owner_probes.expect("owner probes");
    assert_eq!(probes["version"], 1);
    assert_eq!(probes["entries"][0]["path"], "", "{probes}");
}

#[test]
#[ignore = "needs root"]
fn records_list_markers_and_only_the_top_names_the_flat_tree() {
    let f = Fixture::published();
    let c = f.wh.config_hex();
    let flat = format!(".flat/{}/{c}", &c[..2]);
    let top = f.wh.layer_ids.len() - 1;
    for (i, id) in f.wh.layer_ids.iter().enumerate() {
        let rec = f.record(id);
        let layerfs = f.layer_dir(f.wh.layer_hex(i)).join("layerfs");
        assert_eq!(
            rec.markers,
            Some(markers_in(&layerfs)),
            "layer {i}: markers"
        );
        let want_flat = (i == top).then(|| flat.clone());
        assert_eq!(rec.flat, want_flat, "layer {i}: flat");
    }
    let note: FlatNote = read_json(&f.store().join("cvmfs/flat").join(format!("{c}.json")));
    assert_eq!(note.version, 1);
    assert!(
        note.built_by.starts_with("cvmfs-podman publish"),
        "{note:?}"
    );
    let blobs: Vec<&str> =
        f.wh.manifest
            .layers
            .iter()
            .map(|l| l.digest.as_str())
            .collect();
    assert_eq!(note.layers.len(), 3, "{note:?}");
    for l in &note.layers {
        assert!(
            blobs
                .iter()
                .any(|b| b.ends_with(l.trim_start_matches("sha256:"))),
            "{l} is no layer of the image"
        );
    }
    // records written before lists and flat trees existed gain them on republish
    let path = f.record_path(&f.wh.layer_ids[top]);
    let mut old: serde_json::Map<String, serde_json::Value> = read_json(&path);
    old.remove("markers");
    old.remove("flat");
    fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
    f.publish("wh", NAME_WH);
    let rec = f.record(&f.wh.layer_ids[top]);
    assert_eq!(rec.flat, Some(flat));
    assert!(
        rec.markers.is_some(),
        "republish did not restore the markers: {rec:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn republish_writes_nothing_and_shared_layers_are_recorded_once() {
    let f = Fixture::published();
    let before = tree_times(&[f.repo.join(".layers"), f.repo.join(".flat")]);
    let again = f.publish("wh", NAME_WH);
    assert_eq!(
        (
            again.layers_written,
            again.layers_skipped,
            again.flat.as_str()
        ),
        (0, 3, "exists, skipped"),
        "republish: {again:?}"
    );
    let after = tree_times(&[f.repo.join(".layers"), f.repo.join(".flat")]);
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, t)| before.get(*p) != Some(t) && !is_two_hex_dir(p))
        .map(|(p, _)| p)
        .collect();
    assert!(changed.is_empty(), "republish touched: {changed:?}");
    f.check();
    // a second image over the same two lower layers writes only its top
    let shared = f.publish("shared", NAME_SHARED);
    assert_eq!(
        (shared.layers_written, shared.layers_skipped),
        (1, 2),
        "{shared:?}"
    );
    let origin: DuccOrigin = read_json(
        &f.layer_dir(f.shared.layer_hex(0))
            .join(".metadata/origin.json"),
    );
    assert_eq!(
        origin.origin,
        [f.wh.config.clone(), f.shared.config.clone()]
    );
    let layers: Vec<StoreLayer> = read_json(&f.store().join("cvmfs-layers/layers.json"));
    assert_eq!(layers.len(), 4, "layers.json: {layers:?}");
    let images: Vec<StoreImage> = read_json(&f.store().join("cvmfs-images/images.json"));
    assert_eq!(images.len(), 2, "images.json: {images:?}");
    f.check();
}

#[test]
#[ignore = "needs root"]
fn zstd_layers_are_recorded_as_zstd() {
    let f = Fixture::published();
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/publish/images");
    let oci = path_str(&f.oci);
    let (base, top) = (specs.join("base.spec"), specs.join("top.spec"));
    cli(&[
        "make-oci",
        &oci,
        "--tag",
        "zstd",
        "--compression",
        "zstd",
        &path_str(&base),
        &path_str(&top),
    ]);
    // a repository of its own: in wh's, the same layers are already recorded gzip'd
    let repo = f.repo.with_file_name("repo-zstd");
    cli(&[
        "publish",
        &format!("oci:{oci}:zstd"),
        "--repo",
        &path_str(&repo),
        "-q",
    ]);
    let layers: Vec<StoreLayer> = read_json(&repo.join("podmanStore/cvmfs-layers/layers.json"));
    assert_eq!(layers.len(), 2, "{layers:?}");
    for l in &layers {
        assert_eq!(l.compression, 4, "layer {}: compression (zstd)", l.id);
    }
    cli(&["check", &path_str(&repo)]);
}

#[test]
#[ignore = "needs root"]
fn gc_removes_what_only_untagged_images_used() {
    let f = Fixture::published();
    f.publish("shared", NAME_SHARED);
    // wh's only name moves to the other image: wh becomes garbage
    f.publish("shared", NAME_WH);
    let repo = path_str(&f.repo);
    let c1 = f.wh.config_hex();
    // the tag moved: the old image stays, nameless, for running containers
    let images: Vec<StoreImage> = read_json(&f.store().join("cvmfs-images/images.json"));
    let names_of = |c: &str| {
        let mut names = images.iter().find(|i| i.id == c).map(|i| i.names.clone());
        if let Some(n) = names.as_mut() {
            n.sort();
        }
        names
    };
    assert_eq!(names_of(c1), Some(vec![]), "{images:?}");
    let c2 = f.shared.config_hex();
    assert_eq!(
        names_of(c2),
        Some(vec![NAME_SHARED.to_string(), NAME_WH.to_string()])
    );
    let link = fs::read_link(f.repo.join(NAME_WH)).unwrap();
    assert_eq!(link, Path::new("../../.flat").join(&c2[..2]).join(c2));
    let dry = cli(&["gc", "--repo", &repo, "--dry-run"]);
    assert!(
        dry.contains(&format!("would remove image {c1}")),
        "gc --dry-run: {dry}"
    );
    assert!(
        f.repo.join(".flat").join(&c1[..2]).join(c1).is_dir(),
        "the dry run removed the flat tree"
    );
    let out = cli(&["gc", "--repo", &repo, "--json"]);
    let gc: GcReport =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("gc --json: {e}: {out}"));
    assert_eq!(gc.images, [c1]);
    assert_eq!(
        (gc.layers.len(), gc.layer_dirs.len(), gc.flat_dirs.len()),
        (1, 1, 1),
        "{gc:?}"
    );
    assert!(
        !f.layer_dir(f.wh.layer_hex(2)).exists(),
        "the unused layer directory is still there"
    );
    assert!(
        !f.repo.join(".flat").join(&c1[..2]).join(c1).exists(),
        "the unused flat tree is still there"
    );
    assert!(
        !f.store()
            .join("cvmfs/flat")
            .join(format!("{c1}.json"))
            .exists(),
        "the flat note is still there"
    );
    let origin: DuccOrigin =
        read_json(&f.layer_dir(f.wh.layer_hex(0)).join(".metadata/origin.json"));
    assert_eq!(origin.origin, std::slice::from_ref(&f.shared.config));
    f.check();
    let out = cli(&["gc", "--repo", &repo, "--json"]);
    let again: GcReport = serde_json::from_str(&out).unwrap();
    assert!(
        again.images.is_empty() && again.layers.is_empty(),
        "second gc: {again:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn layers_ducc_unpacked_are_reused_and_their_owners_recorded() {
    let f = Fixture::published();
    // as DUCC leaves them: no podmanStore, the base layer's owners lost
    fs::remove_dir_all(f.store()).unwrap();
    let base = f.layer_dir(f.wh.layer_hex(0)).join("layerfs");
    chown_tree_to_root(&base);
    let report = f.publish("wh", NAME_WH);
    assert_eq!(report.layers_written, 0, "{report:?}");
    let ids = &f.wh.layer_ids;
    let records: Vec<LayerRecord> = ids.iter().map(|id| f.record(id)).collect();
    assert_eq!(records[0].ownership, "lost");
    assert_eq!(records[1].ownership, "kept");
    assert!(records[0].markers.is_some(), "{:?}", records[0]);
    // a flat tree this store has no note of building is never named
    assert_eq!(records[2].flat, None, "{:?}", records[2]);
    // the owners the tar had, beside the record of the layer that lost them
    let own: Ownership = read_json(&f.record_path(&ids[0]).with_file_name("ownership.json"));
    assert_eq!(own.version, 1);
    let mut entries: Vec<(String, u32, u32)> = own
        .entries
        .into_iter()
        .map(|e| (e.path, e.uid, e.gid))
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("home/user".to_string(), 1000, 1000),
            ("home/user/.profile".to_string(), 1000, 1000)
        ]
    );
    // A layer that kept its owners has the file too (the driver reads it
    // only on a client that claims ownership), and its record the owners of
    // a few entries as published, for detecting such a client.
    let kept = f.record_path(&ids[1]).with_file_name("ownership.json");
    let kept = cvmfs_format::parse_owners(&fs::read(&kept).unwrap()).unwrap();
    assert!(kept.iter().all(|o| (o.uid, o.gid) != (0, 0)), "{kept:?}");
    f.check();
}

#[test]
#[ignore = "needs root"]
fn enable_and_disable_keep_a_small_local_store() {
    let f = Fixture::published();
    f.publish("shared", NAME_SHARED);
    let store = f.repo.with_file_name("local-store");
    let (repo, st) = (path_str(&f.repo), path_str(&store));
    let images = |want: &Image| {
        let images: Vec<StoreImage> = read_json(&store.join("cvmfs-images/images.json"));
        let ids: Vec<&str> = images.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, [want.config_hex()]);
    };
    let layer_count =
        || read_json::<Vec<StoreLayer>>(&store.join("cvmfs-layers/layers.json")).len();
    cli(&["enable", NAME_WH, "--repo", &repo, "--store", &st]);
    images(&f.wh);
    assert_eq!(layer_count(), 3);
    // a second image shares two layers: they are recorded once
    cli(&["enable", NAME_SHARED, "--repo", &repo, "--store", &st]);
    assert_eq!(layer_count(), 4);
    cli(&["disable", NAME_WH, "--store", &st]);
    images(&f.shared);
    assert_eq!(layer_count(), 3);
    let c1 = f.wh.config_hex();
    assert!(
        f.repo.join(".flat").join(&c1[..2]).join(c1).is_dir(),
        "disable touched the repository"
    );
    let o = Command::new(BIN)
        .args([
            "enable",
            "registry.test/test/nothere:1",
            "--repo",
            &repo,
            "--store",
            &st,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "enabled a missing image");
    assert!(
        err.contains("no image named registry.test/test/nothere:1"),
        "{err}"
    );
}

// ---------------------------------------------------------------- helpers

fn cli(args: &[&str]) -> String {
    cvmfs_testkit::cli::run_ok(BIN, args)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> T {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: {}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_string()
}

fn hex(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The image `tag` of the OCI layout `oci`.
fn image(oci: &Path, tag: &str) -> Image {
    let index: OciIndex = read_json(&oci.join("index.json"));
    let desc = index
        .manifests
        .iter()
        .find(|m| {
            m.annotations
                .get("org.opencontainers.image.ref.name")
                .map(String::as_str)
                == Some(tag)
        })
        .unwrap_or_else(|| panic!("no tag {tag} in {}", oci.display()));
    let blobs = oci.join("blobs/sha256");
    let manifest_bytes = fs::read(blobs.join(hex(&desc.digest))).unwrap();
    let manifest: OciManifest = serde_json::from_slice(&manifest_bytes).unwrap();
    let config: OciConfig = read_json(&blobs.join(hex(&manifest.config.digest)));
    let diff_ids = config.rootfs.diff_ids;
    Image {
        config: manifest.config.digest.clone(),
        layer_ids: chain_ids(&diff_ids),
        diff_ids,
        manifest_bytes,
        manifest,
    }
}

/// containers/image layer IDs: the first diffID's hex, then
/// sha256("<parent id>+<diffID hex>").
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for d in diff_ids {
        let id = match ids.last() {
            None => hex(d).to_string(),
            Some(p) => sha256_hex(format!("{p}+{}", hex(d)).as_bytes()),
        };
        ids.push(id);
    }
    ids
}

fn ducc_descriptor(d: &OciDescriptor) -> DuccDescriptor {
    DuccDescriptor {
        media_type: d.media_type.clone(),
        size: d.size,
        digest: d.digest.clone(),
    }
}

/// containers/storage's file name of a big data item: "=" + base64(key).
fn big_data_file(key: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("=");
    for chunk in key.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn gunzipped_size(path: &Path) -> u64 {
    let mut d = flate2::read::GzDecoder::new(fs::File::open(path).unwrap());
    let mut n = 0u64;
    let mut buf = [0u8; 1 << 16];
    loop {
        match d.read(&mut buf).unwrap() {
            0 => return n,
            k => n += k as u64,
        }
    }
}

/// "YYYY-MM-DDThh:mm:ss[.frac]Z", as the jq check's regex had it.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && s.ends_with('Z')
        && s[11..s.len() - 1]
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b':' || c == b'.')
}

/// The OCI whiteout markers (`.wh.*` files) below `layerfs`, sorted bytewise.
fn markers_in(layerfs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![layerfs.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".wh.") {
                out.push(path_str(e.path().strip_prefix(layerfs).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Every path below `roots` with its modification time (ns).
fn tree_times(roots: &[PathBuf]) -> BTreeMap<PathBuf, i128> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = roots.to_vec();
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        out.insert(
            p.clone(),
            i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        );
        if md.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

/// `.layers/XX`: its time changes when a temporary comes and goes in it.
fn is_two_hex_dir(p: &Path) -> bool {
    let parent_is_layers = p.parent().and_then(Path::file_name).map(|n| n == ".layers");
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_is_layers == Some(true) && name.len() == 2 && name.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Every entry below `dir` (and `dir`) owned by 0:0, as DUCC unpacks layers.
fn chown_tree_to_root(dir: &Path) {
    std::os::unix::fs::lchown(dir, Some(0), Some(0)).unwrap();
    if fs::symlink_metadata(dir).unwrap().is_dir() {
        for e in fs::read_dir(dir).unwrap() {
            chown_tree_to_root(&e.unwrap().path());
        }
    }
}
