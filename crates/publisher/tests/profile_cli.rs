//! Start-up profiles through the `cvmfs-podman` binary (issue 16): published
//! with `profile publish` and `publish --profile-from`, validated as hostile
//! input (nothing written when refused), checked by `check`, copied by
//! `enable`, removed by `gc` with their image.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cvmfs-podman");

fn run(args: &[&str]) -> (bool, String, String) {
    cvmfs_testkit::cli::run(BIN, args)
}

use cvmfs_testkit::cli::spec;

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The image named `name` in `repo`: (image ID, layer chain top first).
fn image(repo: &Path, name: &str) -> (String, Vec<String>) {
    let images = read_json(&repo.join("podmanStore/cvmfs-images/images.json"));
    let layers = read_json(&repo.join("podmanStore/cvmfs-layers/layers.json"));
    let img = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["names"].as_array().unwrap().iter().any(|n| n == name))
        .unwrap();
    let mut chain = Vec::new();
    let mut cur = img["layer"].as_str();
    while let Some(id) = cur {
        chain.push(id.to_string());
        cur = layers
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .unwrap()["parent"]
            .as_str();
    }
    (img["id"].as_str().unwrap().to_string(), chain)
}

struct Fixture {
    _t: tempfile::TempDir,
    dir: PathBuf,
    repo: String,
    src: String,
    image: String,
    chain: Vec<String>,
}

const NAME: &str = "example.org/x/prof:1";

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().to_path_buf();
    let a = spec(
        &d,
        "a.spec",
        "dir /usr\ndir /usr/bin\nfile /usr/bin/app \"application\"\nfile /usr/lib.so \"library\"\n",
    );
    let b = spec(&d, "b.spec", "dir /etc\nfile /etc/conf \"configuration\"\n");
    let repo = d.join("repo").display().to_string();
    let src = cvmfs_testkit::cli::oci_of_specs(BIN, &d, &[&a, &b]);
    let (ok, _, err) = run(&[
        "publish",
        &src,
        "--repo",
        &repo,
        "--name",
        NAME,
        "--quiet",
        "--no-devices",
    ]);
    assert!(ok, "{err}");
    let (image, chain) = image(Path::new(&repo), NAME);
    assert_eq!(chain.len(), 2);
    Fixture {
        _t: t,
        dir: d,
        repo,
        src,
        image,
        chain,
    }
}

impl Fixture {
    /// A profile of the fixture's image: /etc/conf from the top layer, then
    /// /usr/bin/app from the base layer.
    fn profile(&self) -> Value {
        json!({
            "version": 1,
            "image": self.image,
            "top-layer": self.chain[0],
            "layers": [self.chain[0], self.chain[1]],
            "entries": [
                {"layer": 0, "path": "etc/conf", "ranges": [[0, 13]]},
                {"layer": 1, "path": "usr/bin/app", "ranges": [[0, 11]]},
            ]
        })
    }

    fn write(&self, name: &str, v: &Value) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
        p.display().to_string()
    }

    fn stored(&self) -> PathBuf {
        Path::new(&self.repo).join(format!("podmanStore/cvmfs/profiles/{}.json", self.chain[0]))
    }

    /// `profile publish` of `v` fails naming `what`, and writes nothing.
    fn refused(&self, v: &Value, what: &str) {
        let before = std::fs::read(self.stored()).ok();
        let f = self.write("bad.json", v);
        let (ok, _, err) = run(&["profile", "publish", &f, "--repo", &self.repo]);
        assert!(!ok, "accepted: {v}");
        assert!(err.contains(what), "{err:?} should name {what:?}");
        assert_eq!(std::fs::read(self.stored()).ok(), before, "{what}");
    }
}

#[test]
fn publish_check_enable_and_gc() {
    let f = fixture();
    let file = f.write("p.json", &f.profile());
    let (ok, _, err) = run(&["profile", "publish", &file, "--repo", &f.repo]);
    assert!(ok, "{err}");
    assert!(err.contains("2 files"), "{err}");
    let stored = read_json(&f.stored());
    assert_eq!(stored, f.profile());
    let (ok, out, _) = run(&["check", &f.repo]);
    assert!(ok, "{out}");
    // check reports the profile among the (metadata) files it read, whole
    let (ok, out, _) = run(&["check", "--show-fetched", &f.repo]);
    assert!(ok, "{out}");
    let size = std::fs::metadata(f.stored()).unwrap().len();
    let rel = f
        .stored()
        .strip_prefix(&f.repo)
        .unwrap()
        .display()
        .to_string();
    let line = format!("fetched: metadata {size} {rel}");
    assert!(out.lines().any(|l| l == line), "{line} not in {out}");

    // enable copies it into the local store with the image
    let local = f.dir.join("local").display().to_string();
    let (ok, _, err) = run(&["enable", NAME, "--repo", &f.repo, "--store", &local]);
    assert!(ok, "{err}");
    let copied = Path::new(&local).join(format!("cvmfs/profiles/{}.json", f.chain[0]));
    assert_eq!(read_json(&copied), f.profile());

    // a stale entry is a note, a damaged profile a problem naming the file
    let mut stale = f.profile();
    stale["entries"][1]["path"] = json!("usr/bin/gone");
    let file = f.write("stale.json", &stale);
    assert!(run(&["profile", "publish", &file, "--repo", &f.repo]).0);
    let (ok, out, _) = run(&["check", &f.repo]);
    assert!(ok, "{out}");
    assert!(out.contains("1 of 2 entries name files"), "{out}");
    std::fs::write(f.stored(), b"{\"version\":1,").unwrap();
    let (ok, out, _) = run(&["check", &f.repo]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("problem: {}", f.stored().display())),
        "{out}"
    );
    assert!(out.contains("truncated"), "{out}");

    // gc removes it with its image (the tag moves to another image)
    let c = spec(&f.dir, "c.spec", "dir /opt\nfile /opt/x \"x\"\n");
    let oci2 = f.dir.join("oci2").display().to_string();
    assert!(run(&["make-oci", &oci2, "--tag", "t", &c]).0);
    let (ok, _, err) = run(&[
        "publish",
        &format!("oci:{oci2}:t"),
        "--repo",
        &f.repo,
        "--name",
        NAME,
        "--quiet",
        "--no-devices",
    ]);
    assert!(ok, "{err}");
    assert!(f.stored().exists(), "kept while the image is there");
    let (ok, out, err) = run(&["gc", "--repo", &f.repo]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("removed image {}", f.image)), "{out}");
    assert!(!f.stored().exists(), "gc left the profile");
    let (ok, out, _) = run(&["check", &f.repo]);
    assert!(ok, "{out}");
}

#[test]
fn publish_with_profile_from() {
    let f = fixture();
    let file = f.write("p.json", &f.profile());
    // republishing the same image with its profile
    let (ok, _, err) = run(&[
        "publish",
        &f.src,
        "--repo",
        &f.repo,
        "--name",
        NAME,
        "--quiet",
        "--no-devices",
        "--profile-from",
        &file,
    ]);
    assert!(ok, "{err}");
    assert_eq!(read_json(&f.stored()), f.profile());
    // a profile recorded for another image is refused
    let mut other = f.profile();
    other["image"] = json!("e".repeat(64));
    let file = f.write("other.json", &other);
    let (ok, _, err) = run(&[
        "publish",
        &f.src,
        "--repo",
        &f.repo,
        "--name",
        NAME,
        "--quiet",
        "--no-devices",
        "--profile-from",
        &file,
    ]);
    assert!(!ok);
    assert!(err.contains("not for the image just published"), "{err}");
}

#[test]
fn hostile_profiles_are_refused_and_write_nothing() {
    let f = fixture();
    let p = f.profile();
    let with = |ptr: &str, v: Value| {
        let mut q = p.clone();
        *q.pointer_mut(ptr).unwrap() = v;
        q
    };
    f.refused(
        &with("/entries/0/path", json!("../../../etc/shadow")),
        "\"..\"",
    );
    f.refused(
        &with("/entries/0/path", json!("/etc/shadow")),
        "absolute path",
    );
    f.refused(
        &with("/entries/0/path", json!("etc//x")),
        "empty path component",
    );
    f.refused(&with("/entries/0/layer", json!(7)), "layer index 7");
    f.refused(
        &with("/entries/0/ranges/0", json!([u64::MAX, 2])),
        "past 2^64",
    );
    f.refused(&with("/version", json!(2)), "version 2 is not supported");
    f.refused(&with("/image", json!("e".repeat(64))), "is not published");
    f.refused(&with("/top-layer", json!(f.chain[1])), "has top layer");
    f.refused(
        &with("/layers/1", json!("d".repeat(64))),
        "is not a layer of image",
    );
    // malformed and truncated
    let bad = f.dir.join("trunc.json");
    std::fs::write(&bad, &serde_json::to_vec(&p).unwrap()[..40]).unwrap();
    let (ok, _, err) = run(&[
        "profile",
        "publish",
        bad.to_str().unwrap(),
        "--repo",
        &f.repo,
    ]);
    assert!(!ok && err.contains("truncated"), "{err}");
    // oversized: refused before it is read
    let big = f.dir.join("big.json");
    std::fs::write(&big, vec![b' '; (16 << 20) + 1]).unwrap();
    let (ok, _, err) = run(&[
        "profile",
        "publish",
        big.to_str().unwrap(),
        "--repo",
        &f.repo,
    ]);
    assert!(!ok && err.contains("more than"), "{err}");
    // a symlink is not followed
    let good = f.write("good.json", &p);
    let link = f.dir.join("link.json");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let (ok, _, err) = run(&[
        "profile",
        "publish",
        link.to_str().unwrap(),
        "--repo",
        &f.repo,
    ]);
    assert!(!ok && err.contains("symlink"), "{err}");
    assert!(!f.stored().exists());
    // a symlink planted for the profiles directory is not written through
    let elsewhere = f.dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(
        &elsewhere,
        Path::new(&f.repo).join("podmanStore/cvmfs/profiles"),
    )
    .unwrap();
    let (ok, _, err) = run(&["profile", "publish", &good, "--repo", &f.repo]);
    assert!(
        !ok && err.contains("a symlink where the publisher writes"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// The compressed-digest hex of layer `id` (its `.layers/XX/<d>` name).
fn blob_of(repo: &Path, id: &str) -> String {
    let layers = read_json(&repo.join("podmanStore/cvmfs-layers/layers.json"));
    let l = layers
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap();
    l["compressed-diff-digest"].as_str().unwrap()["sha256:".len()..].to_string()
}

#[test]
fn profile_from_a_fetch_log() {
    let f = fixture();
    let repo = Path::new(&f.repo);
    let top = blob_of(repo, &f.chain[0]);
    let base = blob_of(repo, &f.chain[1]);
    let layer = |d: &str, p: &str| format!("{}/.layers/{}/{d}/layerfs/{p}", f.repo, &d[..2]);
    let flat = format!("{}/.flat/{}/{}", f.repo, &f.image[..2], f.image);
    assert!(Path::new(&flat).is_dir(), "the fixture has no flat tree");
    let log = [
        format!("13\t-1\t{}", layer(&top, "etc/conf")),
        // a flat tree file: served by the base layer
        format!("11\t-1\t{flat}/usr/bin/app"),
        format!("13\t-1\t{}", layer(&top, "etc/conf")),
        // chunk 2 of 8-byte chunks
        format!("7\t2\t{}", layer(&base, "usr/lib.so")),
        format!("9\t-1\t{}/podmanStore/cvmfs-images/images.json", f.repo),
        format!("9\t-1\t{}", layer(&base, "../../../etc/passwd")),
        format!("9\t-1\t{}", layer(&"e".repeat(64), "x")),
        format!(
            "9\t-1\t/elsewhere/.layers/{}/{top}/layerfs/etc/conf",
            &top[..2]
        ),
        format!("1\t{}\t{}", i64::MAX, layer(&base, "usr/lib.so")),
        "not a log line".to_string(),
    ]
    .join("\n");
    let log_path = f.dir.join("fetched.txt");
    std::fs::write(&log_path, log).unwrap();
    let out = f.dir.join("from-log.json").display().to_string();
    let (ok, _, err) = run(&[
        "profile",
        "from-log",
        log_path.to_str().unwrap(),
        "--repo",
        &f.repo,
        "--image",
        NAME,
        "--chunk",
        "8",
        "-o",
        &out,
        "--publish",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("3 files"), "{err}");
    assert!(err.contains("from 4 log lines (6 ignored)"), "{err}");
    let expected = json!({
        "version": 1,
        "image": f.image,
        "top-layer": f.chain[0],
        "layers": [f.chain[0], f.chain[1]],
        "entries": [
            {"layer": 0, "path": "etc/conf", "ranges": [[0, 13]]},
            {"layer": 1, "path": "usr/bin/app", "ranges": [[0, 11]]},
            {"layer": 1, "path": "usr/lib.so", "ranges": [[16, 7]]},
        ]
    });
    assert_eq!(read_json(Path::new(&out)), expected);
    assert_eq!(read_json(&f.stored()), expected);
    let (ok, out, _) = run(&["check", &f.repo]);
    assert!(ok, "{out}");
}
