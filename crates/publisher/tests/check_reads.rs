//! What `cvmfs-podman check` reads the content of, as it reports it: on a
//! client mount every file read is a file the client fetches, so plain
//! `check` must read only metadata (indexes, records, DUCC's metadata,
//! configs) and never a file of a `layerfs` or flat tree or a tar-split;
//! `check --deep` reads each tar-split and each non-empty layer file once,
//! whole. The report is checked against what the publish wrote.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cvmfs_format::RepoPaths;
use cvmfs_testkit::cli::spec;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cvmfs-podman");

fn run(args: &[&str]) -> (bool, String, String) {
    cvmfs_testkit::cli::run(BIN, args)
}

/// A two-layer image (a deletion, a 300 000-byte file, empty files)
/// published into a plain directory; returns the repository.
fn published(d: &Path) -> String {
    let a = spec(
        d,
        "a.spec",
        "dir /etc\nfile /etc/a \"aaaa\"\nfile /etc/empty\ndir /opt\nfile /opt/big size=300000\n",
    );
    let b = spec(
        d,
        "b.spec",
        "dir /etc\nwhiteout /etc/a\nfile /etc/c \"cc\"\nsymlink /etc/l -> c\n",
    );
    publish_specs(d, &[&a, &b], "example.org/x/y:1")
}

/// The image of layer spec files `specs` (bottom first) published as `name`
/// into `d/repo`; returns the repository.
fn publish_specs(d: &Path, specs: &[&str], name: &str) -> String {
    let repo = d.join("repo").display().to_string();
    let src = cvmfs_testkit::cli::oci_of_specs(BIN, d, specs);
    let (ok, _, err) = run(&["publish", &src, "--repo", &repo, "--name", name]);
    assert!(ok, "{err}");
    repo
}

/// `check --json` with `extra` arguments: its `content_read` as path → (kind, bytes).
fn content_read(repo: &str, extra: &[&str]) -> (Value, BTreeMap<String, (String, u64)>) {
    let mut args = vec!["check", "--json"];
    args.extend_from_slice(extra);
    args.push(repo);
    let (ok, out, err) = run(&args);
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let list = v["content_read"]["list"].as_array().unwrap();
    let by_path: BTreeMap<String, (String, u64)> = list
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(by_path.len(), list.len(), "a file listed twice: {list:?}");
    assert_eq!(v["content_read"]["files"], list.len());
    let sum: u64 = by_path.values().map(|(_, b)| b).sum();
    assert_eq!(v["content_read"]["bytes"], sum);
    (v, by_path)
}

/// The layer directories `.layers/XX/<hex>` of `repo`.
fn layer_dirs(repo: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for xx in fs::read_dir(RepoPaths::new(repo).layers_dir()).unwrap() {
        let xx = xx.unwrap().path();
        if !xx.is_dir() {
            continue; // DUCC's files beside the XX directories
        }
        for d in fs::read_dir(xx).unwrap() {
            let d = d.unwrap().path();
            if d.is_dir() {
                v.push(d); // not the .cvmfscatalog marker beside them
            }
        }
    }
    v
}

/// The regular files of `dir` with content (relative to `repo`) and their sizes.
fn non_empty_files(repo: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            non_empty_files(repo, &e.path(), out);
        } else if m.is_file() && m.len() > 0 {
            let rel = e.path().strip_prefix(repo).unwrap().display().to_string();
            out.insert(rel, m.len());
        }
    }
}

#[test]
fn plain_check_reads_only_metadata_whole() {
    let t = tempfile::tempdir().unwrap();
    let repo = published(t.path());
    let root = Path::new(&repo);
    let (v, reads) = content_read(&repo, &[]);
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    assert_eq!(
        v["content_read"]["by_kind"],
        serde_json::json!({"metadata": reads.len()})
    );
    for (p, (_, bytes)) in &reads {
        assert!(
            !p.contains("/layerfs/") && !p.starts_with(".flat/") && !p.contains("tar-split"),
            "plain check read the content of {p}"
        );
        let size = fs::metadata(root.join(p)).unwrap().len();
        assert_eq!(*bytes, size, "{p}: read {bytes} of {size} bytes");
    }
    // what it must read: the indexes, each layer's record and DUCC metadata
    let store = RepoPaths::new(root).store();
    let mut must = vec![store.images_json(), store.layers_json()];
    for d in layer_dirs(root) {
        must.push(RepoPaths::layer_info_of(&d));
        must.push(RepoPaths::origin_of(&d));
    }
    for l in cvmfs_publisher::podman::read_index(&store.layers_json()).unwrap() {
        must.push(store.record(l["id"].as_str().unwrap()));
    }
    assert_eq!(must.len(), 2 + 2 * 2 + 2);
    for m in must {
        let rel = m.strip_prefix(root).unwrap().display().to_string();
        assert!(reads.contains_key(&rel), "{rel} not reported: {reads:?}");
    }
    let total: u64 = reads.values().map(|(_, b)| b).sum();
    assert!(total < 64 << 10, "plain check read {total} bytes");
}

#[test]
fn deep_check_reads_each_tar_split_and_layer_file_once() {
    let t = tempfile::tempdir().unwrap();
    let repo = published(t.path());
    let root = Path::new(&repo);
    let (v, reads) = content_read(&repo, &["--deep"]);
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    let (plain_v, plain) = content_read(&repo, &[]);
    assert_eq!(plain_v["problems"], serde_json::json!([]));
    let of_kind = |k: &str| -> BTreeMap<String, u64> {
        reads
            .iter()
            .filter(|(_, (kind, _))| kind == k)
            .map(|(p, (_, b))| (p.clone(), *b))
            .collect()
    };
    // the layer files: exactly the non-empty files of every layerfs, whole
    let mut want = BTreeMap::new();
    for d in layer_dirs(root) {
        non_empty_files(root, &RepoPaths::layerfs_of(&d), &mut want);
    }
    assert!(want.values().any(|&s| s == 300_000), "{want:?}");
    assert_eq!(of_kind("layer-file"), want);
    // one tar-split per layer, read to its end
    let ts = of_kind("tar-split");
    assert_eq!(ts.len(), 2, "{ts:?}");
    for (p, bytes) in &ts {
        assert_eq!(*bytes, fs::metadata(root.join(p)).unwrap().len(), "{p}");
    }
    // and the metadata plain check reads, nothing else
    assert_eq!(of_kind("metadata").len(), plain.len());
    assert_eq!(reads.len(), plain.len() + ts.len() + want.len());
}

#[test]
fn text_output_sums_up_and_lists_on_request() {
    let t = tempfile::tempdir().unwrap();
    let repo = published(t.path());
    let (v, reads) = content_read(&repo, &[]);
    let (ok, out, _) = run(&["check", &repo]);
    assert!(ok, "{out}");
    let summary = format!(
        "read content of {} files, {} bytes ({} metadata); --show-fetched lists them",
        reads.len(),
        v["content_read"]["bytes"],
        reads.len()
    );
    assert!(out.lines().any(|l| l == summary), "{out}");
    assert!(!out.contains("fetched: "), "{out}");
    let (ok, out, _) = run(&["check", "--show-fetched", &repo]);
    assert!(ok, "{out}");
    let listed: Vec<&str> = out.lines().filter(|l| l.starts_with("fetched: ")).collect();
    assert_eq!(listed.len(), reads.len(), "{out}");
    for (p, (kind, bytes)) in &reads {
        let line = format!("fetched: {kind} {bytes} {p}");
        assert!(listed.contains(&line.as_str()), "{line} missing: {out}");
    }
    // the verdict stays the last line
    assert!(
        out.lines().last().unwrap().contains(": consistent ("),
        "{out}"
    );
}

/// The start directory of the one image published into `repo`.
fn the_start_dir(repo: &str) -> PathBuf {
    let start = Path::new(repo).join("podmanStore/cvmfs/start");
    fs::read_dir(&start)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// The start links a publish writes pass `check`; one naming another layer's
/// record, or leading out of the repository, is reported.
#[test]
fn check_reports_start_links_that_do_not_lead_to_the_top_layer() {
    let t = tempfile::tempdir().unwrap();
    let repo = published(t.path());
    let (ok, out, err) = run(&["check", &repo]);
    assert!(ok, "{out}{err}");
    let dir = the_start_dir(&repo);
    let relink = |name: &str, target: &str| {
        fs::remove_file(dir.join(name)).unwrap();
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    };
    relink(
        "record",
        &format!("../../layers/{}/layer.json", "0".repeat(64)),
    );
    relink("layer", "../../../../../etc");
    let (ok, out, err) = run(&["check", &repo]);
    let text = format!("{out}{err}");
    assert!(!ok, "{text}");
    assert!(text.contains("does not link to its top layer"), "{text}");
    assert!(
        text.contains("does not link to a layer directory"),
        "{text}"
    );
}

/// A publish links what a container of the image runs first (its command
/// `/bin/sh`, a symlink, resolved to the flat tree's `bin/busybox`); `check`
/// reports an `exec-N` link that leads anywhere but to a file of the
/// repository.
#[test]
fn exec_start_links_name_the_command_s_file_and_check_refuses_others() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let layer = spec(
        d,
        "sh.spec",
        "dir /bin\nfile /bin/busybox 0755 \"\\x7fELF\"\nsymlink /bin/sh -> busybox\n",
    );
    let repo = publish_specs(d, &[&layer], "example.org/sh:1");
    let dir = the_start_dir(&repo);
    let exec0 = dir.join("exec-0");
    assert_eq!(fs::read(&exec0).unwrap(), b"\x7fELF", "{}", exec0.display());
    let target = fs::read_link(&exec0).unwrap();
    assert!(
        target.to_str().unwrap().starts_with("../../../../.flat/")
            && target.ends_with("bin/busybox"),
        "{target:?}"
    );
    assert!(fs::symlink_metadata(dir.join("exec-1")).is_err());
    let (ok, out, err) = run(&["check", &repo]);
    assert!(ok, "{out}{err}");
    fs::remove_file(&exec0).unwrap();
    std::os::unix::fs::symlink("../../../../../etc/passwd", &exec0).unwrap();
    let (ok, out, err) = run(&["check", &repo]);
    let text = format!("{out}{err}");
    assert!(!ok, "{text}");
    assert!(
        text.contains("exec-0: does not link to a regular file"),
        "{text}"
    );
}
