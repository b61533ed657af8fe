//! The `cvmfs-podman` binary end to end on an OCI layout built from layer specs:
//! publish, republish (nothing written), check, a hostile layer rejected without
//! a trace. The registry, docker-archive and containers-storage parts live in
//! `hack/test-publish.sh`.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cvmfs-podman");

fn run(args: &[&str]) -> (bool, String, String) {
    cvmfs_testkit::cli::run(BIN, args)
}

use cvmfs_testkit::cli::spec;

#[test]
#[ignore = "needs root"]
fn publish_republish_check_and_reject() {
    cvmfs_testkit::gate::require_root();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let a = spec(
        d,
        "a.spec",
        "dir /etc\nfile /etc/a \"a\" 1000:1000\nfile /etc/b \"b\"\n",
    );
    let b = spec(
        d,
        "b.spec",
        "dir /etc\nwhiteout /etc/a\nfile /etc/c \"c\"\n",
    );
    let repo = d.join("repo").display().to_string();
    let src = cvmfs_testkit::cli::oci_of_specs(BIN, d, &[&a, &b]);
    let (ok, out, err) = run(&[
        "publish",
        &src,
        "--repo",
        &repo,
        "--name",
        "example.org/x/y:1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["layers_written"], 2);
    let flat = Path::new(&repo).join("example.org/x/y:1");
    assert!(flat.join("etc/c").exists() && !flat.join("etc/a").exists());
    assert!(!flat.join("etc/.wh.a").exists());
    let (ok, out, err) = run(&[
        "publish",
        &src,
        "--repo",
        &repo,
        "--name",
        "example.org/x/y:1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["layers_written"], 0);
    assert_eq!(s["layers_skipped"], 2);
    let (ok, out, _) = run(&["check", "--deep", &repo]);
    assert!(ok, "{out}");

    // a layer escaping its root: refused, named, nothing left
    let evil = spec(d, "evil.spec", "file \"../../evil\" \"x\"\n");
    let oci2 = d.join("oci2").display().to_string();
    assert!(run(&["make-oci", &oci2, "--tag", "e", &evil]).0);
    let before = listing(Path::new(&repo));
    let src2 = format!("oci:{oci2}:e");
    let (ok, _, err) = run(&["publish", &src2, "--repo", &repo]);
    assert!(!ok);
    assert!(err.contains(&format!("(from {src2})")), "{err}");
    assert!(err.contains("layer sha256:"), "{err}");
    assert!(err.contains("entry \"../../evil\""), "{err}");
    assert_eq!(before, listing(Path::new(&repo)));
    assert!(run(&["check", &repo]).0);
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let md = e.metadata().unwrap();
            v.push(format!("{} {}", e.path().display(), md.len()));
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    v.sort();
    v
}

/// Parallel publishes of images sharing base layers into one repository: every
/// layer's origin.json names every image using it (a read-modify-write without
/// the publisher lock lost entries), and `check --deep` agrees.
#[test]
fn parallel_publishes_keep_every_origin() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let repo = d.join("repo").display().to_string();
    let base = spec(
        d,
        "base.spec",
        "dir /usr\nfile /usr/a \"a\"\nfile /usr/b \"b\"\n",
    );
    let base2 = spec(d, "base2.spec", "dir /lib\nfile /lib/c \"c\"\n");
    let srcs: Vec<String> = (0..6)
        .map(|i| {
            let own = spec(
                d,
                &format!("own{i}.spec"),
                &format!("dir /app\nfile /app/{i} \"{i}\"\n"),
            );
            let oci = d.join(format!("oci{i}")).display().to_string();
            let (ok, _, err) = run(&["make-oci", &oci, "--tag", "t", &base, &base2, &own]);
            assert!(ok, "{err}");
            format!("oci:{oci}:t")
        })
        .collect();
    let children: Vec<_> = srcs
        .iter()
        .enumerate()
        .map(|(i, src)| {
            Command::new(BIN)
                .args(["publish", src, "--repo", &repo, "--quiet", "--no-devices"])
                .args(["--name", &format!("example.org/p/img{i}:1")])
                .output_async()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let paths = cvmfs_format::RepoPaths::new(&repo);
    let images = read(&paths.store().images_json());
    let layers = read(&paths.store().layers_json());
    assert_eq!(images.as_array().unwrap().len(), 6);
    for img in images.as_array().unwrap() {
        let config = format!("sha256:{}", img["id"].as_str().unwrap());
        let mut cur = img["layer"].as_str();
        while let Some(id) = cur {
            let l = layers
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["id"] == id)
                .unwrap();
            let hex = l["compressed-diff-digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:");
            let origin = read(&cvmfs_format::RepoPaths::origin_of(&paths.layer_dir(hex)));
            assert!(
                origin["origin"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c == config.as_str()),
                "layer {hex}: origin.json {origin} misses image {config}"
            );
            cur = l["parent"].as_str();
        }
    }
    let (ok, out, _) = run(&["check", "--deep", &repo]);
    assert!(ok, "{out}");
}

trait OutputAsync {
    fn output_async(&mut self) -> std::process::Child;
}

impl OutputAsync for Command {
    /// Start with stdout and stderr captured (collected by `wait_with_output`).
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cvmfs-podman")
    }
}
