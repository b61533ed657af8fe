//! Hostile cases of the publisher's own records and processes: parallel
//! publishes sharing layers (lost updates of `origin.json`), names that are
//! not what they look like, file names that are not UTF-8, temporaries of
//! crashed runs, a lock held by another publisher, and records in the
//! repository replaced by an attacker with write access to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::*;

pub fn cases() -> Vec<Case> {
    vec![Case {
        name: "publish/parallel-shared-layers-keep-every-origin",
        run: parallel_origin,
    }]
}

// ---------------------------------------------------------------------------
// Helpers

/// A base layer shared by the images of a case (same bytes: same blob).
fn base_layer(i: usize) -> Vec<u8> {
    let mut t = RawTar::new().dir("usr").dir(&format!("usr/base{i}"));
    for f in 0..20 {
        t = t.file(
            &format!("usr/base{i}/f{f}"),
            format!("base {i} file {f}").as_bytes(),
        );
    }
    t.end()
}

/// An image's own top layer.
fn own_layer(tag: &str) -> Vec<u8> {
    RawTar::new()
        .dir("app")
        .file(&format!("app/{tag}"), tag.as_bytes())
        .end()
}

/// Pack `layers` into an OCI layout `oci-<label>` of the scene; the source
/// string for `publish`.
fn make_oci(s: &Scene, label: &str, layers: &[Vec<u8>]) -> String {
    let oci = s.dir.path().join(format!("oci-{label}"));
    let mut args = vec![
        "make-oci".to_string(),
        oci.display().to_string(),
        "--tag".into(),
        "t".into(),
    ];
    for (i, l) in layers.iter().enumerate() {
        let p = s.dir.path().join(format!("{label}-{i}.tar"));
        std::fs::write(&p, l).unwrap();
        args.push(p.display().to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let made = cvmfs_podman(&a);
    assert!(made.ok, "make-oci failed: {}", made.stderr);
    format!("oci:{}:t", oci.display())
}

fn publish_cmd(s: &Scene, src: &str, name: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "publish",
        src,
        "--repo",
        s.repo.to_str().unwrap(),
        "--name",
        name,
    ]);
    c
}

fn publish(s: &Scene, src: &str, name: &str) -> Run {
    let o = publish_cmd(s, src, name)
        .output()
        .expect("run cvmfs-podman");
    Run {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn spawn_publish(s: &Scene, src: &str, name: &str) -> Child {
    publish_cmd(s, src, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cvmfs-podman")
}

fn wait(c: Child) -> Run {
    let o = c.wait_with_output().expect("wait cvmfs-podman");
    Run {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_default()).unwrap_or_default()
}

fn layer_dir(repo: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    repo.join(".layers").join(&hex[..2]).join(hex)
}

/// Every (blob digest, image config digest) pair where the image uses the blob,
/// from the store's indexes.
fn uses(repo: &Path) -> Vec<(String, String)> {
    let images = read_json(&repo.join("podmanStore/cvmfs-images/images.json"));
    let layers = read_json(&repo.join("podmanStore/cvmfs-layers/layers.json"));
    let by_id = |id: &str| {
        layers
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["id"] == id)
            .cloned()
    };
    let mut out = Vec::new();
    for img in images.as_array().into_iter().flatten() {
        let config = format!("sha256:{}", img["id"].as_str().unwrap_or(""));
        let mut cur = img["layer"].as_str().map(str::to_string);
        while let Some(id) = cur {
            let Some(l) = by_id(&id) else { break };
            out.push((
                l["compressed-diff-digest"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                config.clone(),
            ));
            cur = l["parent"].as_str().map(str::to_string);
        }
    }
    out
}

/// `Err` naming the first layer whose `origin.json` misses an image using it.
fn origins_complete(repo: &Path) -> Result<(), String> {
    let pairs = uses(repo);
    ensure(!pairs.is_empty(), "no image recorded in images.json")?;
    for (blob, config) in pairs {
        let p = layer_dir(repo, &blob).join(".metadata/origin.json");
        let o = read_json(&p);
        let listed = o["origin"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c == config.as_str()));
        ensure(
            listed,
            format!(
                "{} does not name image {config} which uses layer {blob}: {o}",
                p.display()
            ),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Cases

/// Six publishers at once, images sharing two base layers: every origin.json
/// names all six images, and `check --deep` agrees.
fn parallel_origin() -> Outcome {
    outcome((|| {
        for round in 0..3 {
            let s = Scene::new("parallel");
            let base = [base_layer(0), base_layer(1)];
            let srcs: Vec<(String, String)> = (0..6)
                .map(|i| {
                    let tag = format!("r{round}i{i}");
                    let src = make_oci(
                        &s,
                        &tag,
                        &[base[0].clone(), base[1].clone(), own_layer(&tag)],
                    );
                    (src, format!("example.org/parallel/img{i}:{tag}"))
                })
                .collect();
            let children: Vec<Child> = srcs
                .iter()
                .map(|(src, n)| spawn_publish(&s, src, n))
                .collect();
            for (c, (_, n)) in children.into_iter().zip(&srcs) {
                let r = wait(c);
                ensure(r.ok, format!("publish {n}: {}", r.stderr))?;
            }
            let images = read_json(&s.repo.join("podmanStore/cvmfs-images/images.json"));
            ensure(
                images.as_array().map_or(0, Vec::len) == 6,
                format!("round {round}: images.json has not 6 images: {images}"),
            )?;
            origins_complete(&s.repo).map_err(|e| format!("round {round}: {e}"))?;
            s.canary.unchanged()?;
            s.check_deep()?;
        }
        Ok(())
    })())
}
