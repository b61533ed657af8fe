//! Tests of the publisher's library half: tar-split recording (against the
//! archive itself, fed in odd chunk sizes), layer IDs, unpacking into a DUCC
//! `layerfs` with raw whiteouts, flattening, and the podman store indexes.

use std::collections::HashMap;
use std::io::Read;

use cvmfs_format::{flat_rel, CvmfsRecord, MarkerList, StoreRecord, Whiteouts};
use cvmfs_publisher::layer_spec;
use cvmfs_publisher::podman::{self, NewImage, NewLayer, StorePaths};
use cvmfs_publisher::tarsplit::{self, Crc64};
use cvmfs_publisher::{flat, layer, layer_ids};
use serde_json::Value;

const SPEC: &str = r#"
dir /etc 0755
file /etc/hosts 0644 1000:1000 "127.0.0.1 localhost\n"
file /etc/big 0644 size=70000
hardlink /etc/hosts2 => etc/hosts
symlink /bin -> usr/bin
char /dev/null 1:3 0666
whiteout /etc/old
opaque /data
file /data/new 0600 "n"
file "dir/with a very long name that needs a pax or gnu extension header because it is longer than one hundred bytes in total/file" 0644 "long"
"#;

fn b64d(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        } as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// A reader that yields at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl std::io::Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Record the tar-split of `tar` read in `chunk`-byte pieces; return the JSON entries.
fn split(tar: &[u8], chunk: usize) -> Vec<Value> {
    let (out, _) = tarsplit::record(Chunked { data: tar, chunk }, Vec::new()).expect("tar-split");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Contents of regular files by tar name, read with the `tar` crate.
fn contents(tar: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut m = HashMap::new();
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        m.insert(name, v);
    }
    m
}

#[test]
fn tar_split_reassembles_the_archive_byte_for_byte() {
    let mut tar = layer_spec::spec_to_tar(SPEC).unwrap();
    tar.extend_from_slice(&[0u8; 3000]); // trailing padding after the end blocks
    let files = contents(&tar);
    for chunk in [1, 7, 511, 512, 513, 4096, 1 << 20] {
        let entries = split(&tar, chunk);
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e["position"], i as u64);
            match e["type"].as_u64().unwrap() {
                2 => out.extend(b64d(e["payload"].as_str().unwrap())),
                1 => {
                    let name = e["name"].as_str().unwrap();
                    let size = e["size"].as_u64().unwrap_or(0);
                    if size > 0 {
                        let data = &files[name];
                        assert_eq!(data.len() as u64, size, "{name}");
                        let mut c = Crc64::new();
                        c.update(data);
                        assert_eq!(b64d(e["payload"].as_str().unwrap()), c.sum().to_be_bytes());
                        out.extend_from_slice(data);
                    } else {
                        assert!(e["payload"].is_null());
                    }
                }
                t => panic!("type {t}"),
            }
        }
        assert_eq!(out, tar, "chunk size {chunk}");
    }
}

#[test]
fn crc64_matches_go_iso() {
    // Go: crc64.Checksum([]byte("hello world"), crc64.MakeTable(crc64.ISO))
    let mut c = Crc64::new();
    c.update(b"hello world");
    assert_eq!(c.sum(), 0xb9cf_3f57_2ad9_ac3e);
}

#[test]
fn tar_split_rejects_duplicates_and_truncation() {
    let dup = layer_spec::spec_to_tar("file /a \"1\"\nfile /a \"2\"\n").unwrap();
    assert!(tarsplit::record(&dup[..], Vec::new())
        .unwrap_err()
        .contains("duplicate"));
    let tar = layer_spec::spec_to_tar("file /a size=5000\n").unwrap();
    let e = tarsplit::record(&tar[..2000], Vec::new()).unwrap_err();
    assert!(e.contains("truncated") && e.contains("\"a\""), "{e}");
}

#[test]
fn layer_ids_follow_containers_image() {
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    let ids = layer_ids(&[&a, &b]);
    assert_eq!(ids[0], "a".repeat(64));
    // sha256("aaa…a+bbb…b")
    use sha2::Digest;
    let want = layer::hex(&sha2::Sha256::digest(
        format!("{}+{}", "a".repeat(64), "b".repeat(64)).as_bytes(),
    ));
    assert_eq!(ids[1], want);
}

#[test]
#[ignore = "needs root"]
fn unpack_keeps_raw_whiteouts_and_flatten_applies_them() {
    cvmfs_testkit::gate::require_root();
    let t = tempfile::tempdir().unwrap();
    let l1 = layer_spec::spec_to_tar(
        "dir /etc\nfile /etc/old \"x\"\nfile /etc/keep \"k\" 1000:1000\ndir /data\nfile /data/gone \"g\"\n",
    )
    .unwrap();
    let l2 = layer_spec::spec_to_tar(SPEC).unwrap();
    let mut dirs = Vec::new();
    for (i, tar) in [l1, l2].iter().enumerate() {
        let d = t.path().join(format!("l{i}"));
        std::fs::create_dir(&d).unwrap();
        let (u, ts) = layer::unpack(&tar[..], &d.join("layerfs"), Vec::new(), false).unwrap();
        use sha2::Digest;
        assert_eq!(
            u.diff_id,
            format!("sha256:{}", layer::hex(&sha2::Sha256::digest(tar)))
        );
        assert_eq!(u.diff_size, tar.len() as u64);
        assert!(!ts.is_empty());
        dirs.push(d.join("layerfs"));
    }
    let wh = std::fs::symlink_metadata(dirs[1].join("etc/.wh.old")).unwrap();
    assert!(wh.is_file(), "the whiteout stays a regular file");
    assert!(dirs[1].join("data/.wh..wh..opq").is_file());
    assert!(!dirs[1].join("etc/old").exists());
    let flat_dir = t.path().join("flat");
    std::fs::create_dir(&flat_dir).unwrap();
    for d in &dirs {
        flat::merge_layer(d, &flat_dir).unwrap();
    }
    assert!(!flat_dir.join("etc/old").exists(), "whiteout applied");
    assert!(!flat_dir.join("etc/.wh.old").exists());
    assert!(!flat_dir.join("data/gone").exists(), "opaque dir applied");
    assert!(flat_dir.join("data/new").exists());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(flat_dir.join("etc/keep")).unwrap().uid(),
        1000
    );
    assert_eq!(
        std::fs::metadata(flat_dir.join("etc/hosts")).unwrap().ino(),
        std::fs::metadata(flat_dir.join("etc/hosts2"))
            .unwrap()
            .ino()
    );
}

/// A parentless layer `id` (diffID 1…1, blob 2…2) for store tests.
fn base_layer(
    id: &str,
    tar_split: &std::path::Path,
    markers: Option<Vec<String>>,
    flat: Option<String>,
) -> NewLayer {
    NewLayer {
        id: id.to_string(),
        parent: None,
        compressed_digest: format!("sha256:{}", "2".repeat(64)),
        compressed_size: 10,
        diff_digest: format!("sha256:{}", "1".repeat(64)),
        diff_size: 20,
        compression: podman::COMPRESSION_GZIP,
        uids: [0].into(),
        gids: [0].into(),
        path: format!(".layers/22/{}/layerfs", "2".repeat(64)),
        tar_split: tar_split.to_path_buf(),
        ownership_kept: true,
        owners: None,
        markers,
        flat,
        owner_probes: None,
    }
}

#[test]
fn store_commit_is_incremental_and_moves_names() {
    let t = tempfile::tempdir().unwrap();
    let store = StorePaths::new(t.path().join("podmanStore"));
    let ts = t.path().join("ts.gz");
    std::fs::write(&ts, b"tar-split").unwrap();
    let ids = layer_ids(&[&format!("sha256:{}", "1".repeat(64))]);
    let layer = base_layer(&ids[0], &ts, None, None);
    let img = |id: &str, cfg: &str| NewImage {
        id: id.into(),
        names: vec!["example.org/a:1".into()],
        top_layer: ids[0].clone(),
        manifest: b"{}".to_vec(),
        config: cfg.as_bytes().to_vec(),
        created: "2023-11-14T22:13:20Z".into(),
        start_files: Vec::new(),
    };
    let c = podman::commit(
        &store,
        "/cvmfs/x",
        std::slice::from_ref(&layer),
        &img(&"c".repeat(64), "1"),
        &[],
    )
    .unwrap();
    assert_eq!(c.layers_added.len(), 1);
    let c = podman::commit(
        &store,
        "/cvmfs/x",
        &[layer],
        &img(&"d".repeat(64), "2"),
        &[],
    )
    .unwrap();
    assert!(c.layers_added.is_empty() && c.layers_existing.len() == 1);
    assert_eq!(c.names_moved_from, vec!["c".repeat(64)]);
    let images: Value =
        serde_json::from_slice(&std::fs::read(store.images_json()).unwrap()).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 2);
    assert_eq!(images[0]["names"], serde_json::json!([]));
    assert_eq!(images[1]["names"], serde_json::json!(["example.org/a:1"]));
    let rec = read_record(&store, &ids[0]);
    assert_eq!(rec.whiteouts, Whiteouts::OciRaw);
    assert!(store.images_lock().exists() && store.layers_lock().exists());
    // Each image's start links lead to its top layer's record and, from
    // `<repository>/podmanStore`, to its layer directory.
    for id in ["c".repeat(64), "d".repeat(64)] {
        let dir = store.start_dir(&id);
        let record = std::fs::read(dir.join("record")).unwrap();
        assert_eq!(record, std::fs::read(store.record(&ids[0])).unwrap());
        assert_eq!(
            cvmfs_format::paths::parse_start_layer_target(
                std::fs::read_link(dir.join("layer"))
                    .unwrap()
                    .to_str()
                    .unwrap()
            ),
            Some(format!(".layers/22/{}/layerfs", "2".repeat(64)).into())
        );
    }
    // The nameless image goes with gc, and its links with it.
    let gone = podman::gc(&store, None, false).unwrap();
    assert_eq!(gone.images, vec!["c".repeat(64)]);
    assert!(std::fs::symlink_metadata(store.start_dir(&"c".repeat(64))).is_err());
    assert!(store.start_dir(&"d".repeat(64)).join("record").is_file());
}

/// The top layer's record directory links to the start links of the image
/// last published on it; when gc removes that image, the link names a kept
/// image with the same top layer, or goes.
#[test]
fn the_record_start_link_follows_the_last_image_and_gc() {
    let t = tempfile::tempdir().unwrap();
    let store = StorePaths::new(t.path().join("podmanStore"));
    let ts = t.path().join("ts.gz");
    std::fs::write(&ts, b"tar-split").unwrap();
    let ids = layer_ids(&[&format!("sha256:{}", "1".repeat(64))]);
    let other = layer_ids(&[&format!("sha256:{}", "3".repeat(64))]);
    let (c, d, e) = ("c".repeat(64), "d".repeat(64), "e".repeat(64));
    let img = |id: &str, name: &str, top: &str| NewImage {
        id: id.into(),
        names: vec![name.into()],
        top_layer: top.into(),
        manifest: b"{}".to_vec(),
        config: id.as_bytes().to_vec(),
        created: "2023-11-14T22:13:20Z".into(),
        start_files: Vec::new(),
    };
    let shared = base_layer(&ids[0], &ts, None, None);
    let mut own = base_layer(&other[0], &ts, None, None);
    own.diff_digest = format!("sha256:{}", "3".repeat(64));
    let link = store.record_dir(&ids[0]).join("start");
    let target = || std::fs::read_link(&link).ok();
    let commit = |l: &NewLayer, i: &NewImage| {
        podman::commit(&store, "/cvmfs/x", std::slice::from_ref(l), i, &[]).unwrap()
    };
    commit(&shared, &img(&d, "example.org/b:1", &ids[0]));
    assert_eq!(target(), Some(format!("../../start/{d}").into()));
    commit(&shared, &img(&c, "example.org/a:1", &ids[0]));
    assert_eq!(target(), Some(format!("../../start/{c}").into()));
    // c loses its name to an image on another layer: gc removes it
    commit(&own, &img(&e, "example.org/a:1", &other[0]));
    let gone = podman::gc(&store, None, false).unwrap();
    assert_eq!(gone.images, vec![c.clone()]);
    assert_eq!(target(), Some(format!("../../start/{d}").into()));
    // d goes too (its name moved): the link goes with no image left on it
    commit(&own, &img(&e, "example.org/b:1", &other[0]));
    podman::gc(&store, None, false).unwrap();
    assert_eq!(target(), None);
}

#[test]
fn records_gain_marker_lists_and_flat_trees_and_gc_keeps_them_true() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let store = StorePaths::new(repo.join("podmanStore"));
    let ts = t.path().join("ts.gz");
    std::fs::write(&ts, b"tar-split").unwrap();
    let ids = layer_ids(&[&format!("sha256:{}", "1".repeat(64))]);
    let (c, d) = ("c".repeat(64), "d".repeat(64));
    let flat_of = |cfg: &str| flat_rel(cfg);
    let layer = |markers, flat| base_layer(&ids[0], &ts, markers, flat);
    let img = |id: &str| NewImage {
        id: id.into(),
        names: vec!["example.org/a:1".into()],
        top_layer: ids[0].clone(),
        manifest: b"{}".to_vec(),
        config: id.as_bytes().to_vec(),
        created: "2023-11-14T22:13:20Z".into(),
        start_files: Vec::new(),
    };
    let record = || read_record(&store, &ids[0]);
    let listed = Some(MarkerList(vec![".wh.x".into()]));
    // An old record (no list, no flat tree) gains both when published again.
    podman::commit(&store, "/cvmfs/x", &[layer(None, None)], &img(&c), &[]).unwrap();
    assert!(record().markers.is_none() && record().flat.is_none());
    std::fs::create_dir_all(repo.join(flat_of(&c))).unwrap();
    std::fs::create_dir_all(store.flat_built(&c).parent().unwrap()).unwrap();
    std::fs::write(store.flat_built(&c), b"{}").unwrap();
    let with = layer(Some(vec![".wh.x".into()]), Some(flat_of(&c)));
    podman::commit(&store, "/cvmfs/x", &[with], &img(&c), &[]).unwrap();
    assert_eq!(record().markers, listed);
    assert_eq!(record().flat, Some(flat_of(&c)));
    // Another image with the same layers and no flat tree of its own keeps
    // the record's; the name moves to it, so `c` becomes garbage.
    podman::commit(&store, "/cvmfs/x", &[layer(None, None)], &img(&d), &[]).unwrap();
    assert_eq!(record().flat, Some(flat_of(&c)));
    assert_eq!(record().markers, listed);
    let rep = podman::gc(&store, Some(&repo), false).unwrap();
    assert_eq!(rep.images, vec![c.clone()]);
    assert!(!repo.join(flat_of(&c)).exists() && !store.flat_built(&c).exists());
    assert!(
        record().flat.is_none(),
        "the record names a removed tree: {:?}",
        record()
    );
    // With a tree of its own, the kept image's replaces a removed one.
    std::fs::create_dir_all(repo.join(flat_of(&d))).unwrap();
    std::fs::write(store.flat_built(&d), b"{}").unwrap();
    let e = "e".repeat(64);
    std::fs::create_dir_all(repo.join(flat_of(&e))).unwrap();
    std::fs::write(store.flat_built(&e), b"{}").unwrap();
    podman::commit(
        &store,
        "/cvmfs/x",
        &[layer(None, Some(flat_of(&e)))],
        &img(&e),
        &[],
    )
    .unwrap();
    assert_eq!(record().flat, Some(flat_of(&e)));
    podman::commit(&store, "/cvmfs/x", &[layer(None, None)], &img(&d), &[]).unwrap();
    podman::gc(&store, Some(&repo), false).unwrap();
    assert_eq!(record().flat, Some(flat_of(&d)));
}

/// Layer `id`'s record in `store`, read as the driver reads it.
fn read_record(store: &StorePaths, id: &str) -> CvmfsRecord {
    let bytes = std::fs::read(store.record(id)).unwrap();
    match cvmfs_format::parse_store_record(&bytes).unwrap() {
        StoreRecord::Cvmfs { record, .. } => record,
        other => panic!("layer {id}: {other:?}"),
    }
}

/// A symlink planted for `cvmfs/start` would lead the start links' writes
/// elsewhere: the commit is refused and nothing is written there.
#[test]
fn a_planted_start_directory_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = StorePaths::new(t.path().join("podmanStore"));
    let ts = t.path().join("ts.gz");
    std::fs::write(&ts, b"tar-split").unwrap();
    let ids = layer_ids(&[&format!("sha256:{}", "1".repeat(64))]);
    let canary = t.path().join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::create_dir_all(store.cvmfs_dir()).unwrap();
    std::os::unix::fs::symlink(&canary, store.cvmfs_dir().join("start")).unwrap();
    let img = NewImage {
        id: "c".repeat(64),
        names: vec!["example.org/a:1".into()],
        top_layer: ids[0].clone(),
        manifest: b"{}".to_vec(),
        config: b"1".to_vec(),
        created: "2023-11-14T22:13:20Z".into(),
        start_files: Vec::new(),
    };
    let layer = base_layer(&ids[0], &ts, None, None);
    let e = podman::commit(&store, "/cvmfs/x", &[layer], &img, &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("a symlink where the publisher writes records"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);
    // refused before anything was written
    assert!(!store.record(&ids[0]).exists());
}
