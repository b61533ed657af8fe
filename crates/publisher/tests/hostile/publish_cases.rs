//! Hostile cases of the publisher's own records and processes: parallel
//! publishes sharing layers (lost updates of `origin.json`), names that are
//! not what they look like, file names that are not UTF-8, temporaries of
//! crashed runs, a lock held by another publisher, and records in the
//! repository replaced by an attacker with write access to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::*;

pub fn cases() -> Vec<Case> {
    let c = |name, run| Case { name, run };
    vec![
        c(
            "publish/parallel-shared-layers-keep-every-origin",
            parallel_origin,
        ),
        c(
            "publish/parallel-same-tag-link-agrees-with-store",
            parallel_same_tag,
        ),
        c("publish/name-kelvin-sign-lookalike", name_kelvin),
        c("publish/name-upper-case", name_upper_case),
        c("publish/name-empty-component-and-digest", name_malformed),
        c("publish/non-utf8-file-names-check-deep", non_utf8_names),
        c("publish/temporaries-swept-under-lock", temporaries_swept),
        c(
            "publish/tmp-named-files-in-layer-survive-sweep",
            tmp_named_content,
        ),
        c("publish/second-publisher-waits-for-lock", waits_for_lock),
        c("publish/stale-lock-of-dead-pid", stale_lock),
        c("publish/kill-9-mid-layer-then-republish", killed_mid_layer),
        c("publish/tag-link-redirected-outside", tag_link_outside),
        c("publish/origin-json-missing-an-image", origin_missing_image),
        c("publish/origin-json-huge", origin_huge),
        c("publish/origin-json-malformed", origin_malformed),
        c("publish/origin-json-symlink-to-canary", origin_symlink),
        c(
            "publish/layer-metadata-dir-symlink-outside",
            metadata_dir_symlink,
        ),
        c(
            "publish/manifest-copy-symlink-to-shadow",
            manifest_copy_symlink,
        ),
        c("publish/flat-dir-replaced-by-symlink", flat_symlink),
        c("publish/store-image-dir-symlink-outside", store_dir_symlink),
        c("publish/images-json-corrupted", images_json_corrupted),
        c(
            "publish/default-names-collide-after-sanitising",
            sanitised_collision,
        ),
        c("publish/docker-archive-repotag-lookalike", archive_repotag),
        c("publish/planted-lookalike-tag-link", planted_lookalike_link),
        c(
            "publish/refused-image-changes-nothing",
            refused_changes_nothing,
        ),
        c("publish/same-layer-other-compression", other_compression),
        c(
            "publish/gc-during-unpack-keeps-live-temporaries",
            gc_during_unpack,
        ),
        c("publish/images-lock-symlink-to-canary", images_lock_symlink),
        c(
            "publish/publisher-lock-symlink-to-canary",
            publisher_lock_symlink,
        ),
    ]
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
    make_oci_with(s, label, layers, "gzip")
}

fn make_oci_with(s: &Scene, label: &str, layers: &[Vec<u8>], compression: &str) -> String {
    let oci = s.dir.path().join(format!("oci-{label}"));
    let mut args = vec![
        "make-oci".to_string(),
        oci.display().to_string(),
        "--tag".into(),
        "t".into(),
        "--compression".into(),
        compression.into(),
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
    cvmfs_format::RepoPaths::new(repo).layer_dir(hex)
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
        let p = cvmfs_format::RepoPaths::origin_of(&layer_dir(repo, &blob));
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

/// A scene with one image published: (scene, source, name).
fn published(label: &str) -> (Scene, String, String) {
    let s = Scene::new(label);
    let src = make_oci(&s, "one", &[base_layer(0), own_layer("one")]);
    let name = format!("example.org/hostile/{label}:1");
    let r = publish(&s, &src, &name);
    assert!(r.ok, "publish {name}: {}", r.stderr);
    (s, src, name)
}

/// The compressed digests of the layers the store records for `name`'s image.
fn image_blobs(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = uses(repo).into_iter().map(|(b, _)| b).collect();
    v.sort();
    v.dedup();
    v
}

fn image_ids(repo: &Path) -> Vec<String> {
    read_json(&repo.join("podmanStore/cvmfs-images/images.json"))
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect()
}

fn check(s: &Scene) -> Run {
    cvmfs_podman(&["check", "--deep", s.repo.to_str().unwrap()])
}

/// `check` reports a problem naming every string of `names`.
fn check_reports(s: &Scene, names: &[&str]) -> Result<(), String> {
    let r = check(s);
    ensure(!r.ok, format!("check says consistent: {}", r.stdout))?;
    for n in names {
        ensure(
            r.stdout
                .lines()
                .any(|l| l.starts_with("problem:") && l.contains(n)),
            format!("check names no problem with {n:?}: {}", r.stdout),
        )?;
    }
    Ok(())
}

fn gc(s: &Scene) -> Run {
    cvmfs_podman(&["gc", "--repo", s.repo.to_str().unwrap()])
}

/// Every `.cvmfs-podman-tmp.*` below the repository (content included).
fn temporaries(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".cvmfs-podman-tmp.")
            {
                out.push(e.path());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A pid no process has (above the kernel's pid_max).
const DEAD_PID: u32 = 4_194_305;

fn publish_fails_with_name(name: &str, says: &str) -> Result<(), String> {
    let s = Scene::new("name");
    let src = make_oci(&s, "n", &[base_layer(0)]);
    let before = describe_tree(&s.repo);
    let r = publish(&s, &src, name);
    ensure(!r.ok, format!("publish as {name:?} succeeded"))?;
    ensure(
        r.stderr.contains(&format!("{name:?}")) && r.stderr.contains(says),
        format!(
            "the error does not name {name:?} and {says:?}: {}",
            r.stderr.trim()
        ),
    )?;
    ensure(describe_tree(&s.repo) == before, "the repository changed")?;
    s.canary.unchanged()?;
    s.check_deep()
}

fn name_kelvin() -> Outcome {
    // "\u{212A}" looks like K and lower-cases to k
    outcome(
        publish_fails_with_name("\u{212A}.com/x/y:1", "U+212A")
            .and_then(|()| publish_fails_with_name("example.org/\u{212A}ey:1", "not ASCII")),
    )
}

fn name_upper_case() -> Outcome {
    outcome(
        publish_fails_with_name("example.org/Hostile/app:1", "upper case")
            .and_then(|()| publish_fails_with_name("Example.ORG/hostile/app:1", "upper case")),
    )
}

fn name_malformed() -> Outcome {
    outcome((|| {
        publish_fails_with_name("example.org/a//b:1", "empty")?;
        publish_fails_with_name("example.org/a-/b:1", "\"a-\"")?;
        publish_fails_with_name("example.org/a:.hidden", "tag")?;
        publish_fails_with_name(
            "example.org/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "digest",
        )?;
        publish_fails_with_name(&format!("example.org/{}:1", "a".repeat(260)), "255")
    })())
}

/// File and directory names that are not UTF-8 are published, and
/// `check --deep` rebuilds the layer from them (it reported them changed).
fn non_utf8_names() -> Outcome {
    outcome((|| {
        let s = Scene::new("nonutf8");
        let tar = RawTar::new()
            .dir("d")
            .entry(&Hdr::new(b"d/\xff\xfe", b'0', 5), b"bytes")
            .entry(&Hdr::new(b"\xe9t\xe9", b'5', 0), b"")
            .entry(&Hdr::new(b"\xe9t\xe9/f\x80", b'0', 3), b"abc")
            .end();
        let r = s.publish("example.org/hostile/nonutf8:1", &[tar]);
        ensure(r.ok, format!("publish: {}", r.stderr))?;
        let flat = s.repo.join("example.org/hostile/nonutf8:1");
        use std::os::unix::ffi::OsStrExt;
        let f = flat.join(std::ffi::OsStr::from_bytes(b"d/\xff\xfe"));
        ensure(
            std::fs::read(&f).ok().as_deref() == Some(b"bytes"),
            format!("{} is not in the flat tree", f.display()),
        )?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// Leftovers of dead publishers everywhere the publisher writes records
/// (podmanStore/cvmfs/flat among them): check reports each with the command
/// that removes it; the next publish removes them, and so does gc.
fn temporaries_swept() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("tmps");
        let blob = image_blobs(&s.repo)[0].clone();
        let id = image_ids(&s.repo)[0].clone();
        let plant = |rel: String| {
            let p = s.repo.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"partial").unwrap();
            p
        };
        let t = format!(".cvmfs-podman-tmp.{DEAD_PID}.1");
        let planted = [
            plant(format!("podmanStore/cvmfs/flat/{t}.{id}.json")),
            plant(format!("podmanStore/cvmfs-images/{id}/{t}.manifest")),
            plant(format!(
                ".metadata/example.org/hostile/tmps:1/{t}.manifest.json"
            )),
            plant(format!("example.org/hostile/{t}.tmps:1")),
            plant(format!(
                "{}/.metadata/{t}.origin.json",
                layer_dir(Path::new(""), &blob).display()
            )),
        ];
        let r = check(&s);
        ensure(r.ok, format!("leftovers are not problems: {}", r.stdout))?;
        for p in &planted {
            let line = r
                .stdout
                .lines()
                .find(|l| l.contains(&p.display().to_string()));
            ensure(
                line.is_some_and(|l| l.contains("cvmfs-podman gc") && l.contains("publish")),
                format!(
                    "check does not report {} with what removes it: {}",
                    p.display(),
                    r.stdout
                ),
            )?;
        }
        // the next publish (of another image) sweeps them
        let src2 = make_oci(&s, "two", &[own_layer("two")]);
        let r = publish(&s, &src2, "example.org/hostile/other:1");
        ensure(r.ok, format!("publish: {}", r.stderr))?;
        let left = temporaries(&s.repo);
        ensure(left.is_empty(), format!("publish left {left:?}"))?;
        // and gc
        let again = plant(format!("podmanStore/cvmfs/flat/{t}.again.json"));
        let g = gc(&s);
        ensure(
            g.ok && g.stdout.contains("removed leftover"),
            format!("gc: {}{}", g.stdout, g.stderr),
        )?;
        ensure(!again.exists(), format!("gc left {}", again.display()))?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// A layer's own files named like publisher temporaries are content: no
/// sweep touches them.
fn tmp_named_content() -> Outcome {
    outcome((|| {
        let s = Scene::new("tmpnamed");
        let name = format!(".cvmfs-podman-tmp.{DEAD_PID}.1.x");
        let tar = RawTar::new()
            .file(&name, b"content")
            .dir("sub")
            .file(&format!("sub/{name}"), b"content")
            .end();
        let r = s.publish("example.org/hostile/tmpnamed:1", &[tar]);
        ensure(r.ok, format!("publish: {}", r.stderr))?;
        let src2 = make_oci(&s, "two", &[own_layer("two")]);
        ensure(
            publish(&s, &src2, "example.org/hostile/other:1").ok,
            "second publish failed",
        )?;
        ensure(gc(&s).ok, "gc failed")?;
        let flat = s.repo.join("example.org/hostile/tmpnamed:1");
        for p in [flat.join(&name), flat.join("sub").join(&name)] {
            ensure(p.exists(), format!("{} was swept", p.display()))?;
        }
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// Hold the publisher lock as another publisher would.
fn hold_lock(repo: &Path) -> std::fs::File {
    let p = repo.join("podmanStore/cvmfs/publisher.lock");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
    f
}

/// A second publisher blocks while the lock is held, says by whom, and
/// finishes once it is released.
fn waits_for_lock() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("lockwait");
        let lock = hold_lock(&s.repo);
        let src2 = make_oci(&s, "two", &[base_layer(0), own_layer("two")]);
        let mut child = spawn_publish(&s, &src2, "example.org/hostile/waiter:1");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let still = child.try_wait().unwrap().is_none();
        if !still {
            let r = wait(child);
            return Err(format!("publish did not wait for the lock: {}", r.stderr));
        }
        drop(lock);
        let r = wait(child);
        ensure(
            r.ok,
            format!("publish after the lock was released: {}", r.stderr),
        )?;
        ensure(
            r.stderr.contains("waiting for the publisher lock")
                && r.stderr
                    .contains(&format!("held by pid {}", std::process::id())),
            format!("no waiting message naming the holder: {}", r.stderr),
        )?;
        origins_complete(&s.repo)?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// A lock file left by a killed publisher (its pid inside, no flock held)
/// holds nothing.
fn stale_lock() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("stalelock");
        let p = s.repo.join("podmanStore/cvmfs/publisher.lock");
        std::fs::write(&p, format!("{DEAD_PID}\n")).unwrap();
        let src2 = make_oci(&s, "two", &[own_layer("two")]);
        let started = std::time::Instant::now();
        let r = publish(&s, &src2, "example.org/hostile/after-stale:1");
        ensure(r.ok, format!("publish: {}", r.stderr))?;
        ensure(
            !r.stderr.contains("waiting"),
            format!("waited on a stale lock: {}", r.stderr),
        )?;
        ensure(started.elapsed().as_secs() < 30, "publish took too long")?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// A layer big enough to catch its publisher halfway through (published
/// uncompressed, so it is the writing that takes time).
fn big_layer() -> Vec<u8> {
    let mut t = RawTar::new().dir("big");
    for i in 0..8u8 {
        t = t.file(&format!("big/f{i}"), &vec![i; 1 << 20]);
    }
    t.end()
}

/// `kill -9` of a publisher while it unpacks a layer: its temporaries stay,
/// check calls the tree consistent and names them, a republish removes them
/// and completes.
fn killed_mid_layer() -> Outcome {
    outcome((|| {
        let s = Scene::new("killed");
        let src = make_oci_with(&s, "big", &[base_layer(0), big_layer()], "none");
        let name = "example.org/hostile/killed:1";
        let mut child = spawn_publish(&s, &src, name);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut killed = false;
        while std::time::Instant::now() < deadline {
            let unpacking = std::fs::read_dir(cvmfs_format::RepoPaths::new(&s.repo).layers_dir())
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".cvmfs-podman-tmp.")
                        && e.file_type().is_ok_and(|t| t.is_dir())
                });
            if unpacking {
                child.kill().unwrap();
                killed = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = child.wait();
        ensure(
            killed,
            "the publisher finished before it could be killed mid-layer",
        )?;
        ensure(
            !temporaries(&s.repo).is_empty(),
            "a killed publisher left no temporaries?",
        )?;
        let r = check(&s);
        ensure(
            r.ok && r.stdout.contains("leftover of an interrupted publish"),
            format!("check: {}", r.stdout),
        )?;
        let r = publish(&s, &src, name);
        ensure(r.ok, format!("republish: {}", r.stderr))?;
        let left = temporaries(&s.repo);
        ensure(left.is_empty(), format!("republish left {left:?}"))?;
        origins_complete(&s.repo)?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// The tag link replaced by one to a directory outside: check names the
/// link, a republish points it back, nothing outside changed.
fn tag_link_outside() -> Outcome {
    outcome((|| {
        let (s, src, name) = published("taglink");
        let link = s.repo.join(&name);
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(s.canary.root.join("etc"), &link).unwrap();
        check_reports(&s, &[&link.display().to_string()])?;
        let r = publish(&s, &src, &name);
        ensure(r.ok, format!("republish: {}", r.stderr))?;
        let t = std::fs::read_link(&link).unwrap();
        ensure(
            t.is_relative() && t.to_string_lossy().contains(".flat/"),
            format!("link now {}", t.display()),
        )?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// Two images on one layer, one dropped from its origin.json (as the lost
/// update did): check names layer and image, gc repairs it.
fn origin_missing_image() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("originmiss");
        let src2 = make_oci(&s, "two", &[base_layer(0), own_layer("two")]);
        ensure(
            publish(&s, &src2, "example.org/hostile/two:1").ok,
            "second publish failed",
        )?;
        let base = image_blobs(&s.repo)
            .into_iter()
            .find(|b| uses(&s.repo).iter().filter(|(x, _)| x == b).count() == 2)
            .ok_or("no shared layer")?;
        let op = cvmfs_format::RepoPaths::origin_of(&layer_dir(&s.repo, &base));
        let mut o = read_json(&op);
        let dropped = o["origin"].as_array_mut().unwrap().pop().unwrap();
        std::fs::write(&op, o.to_string()).unwrap();
        check_reports(&s, &[&base, dropped.as_str().unwrap()])?;
        let g = gc(&s);
        ensure(
            g.ok && g.stdout.contains("repaired"),
            format!("gc: {}{}", g.stdout, g.stderr),
        )?;
        origins_complete(&s.repo)?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// An origin.json far larger than any record (sparse, 1 GiB): refused by
/// size without reading it, reported by name, rebuilt by a republish.
fn origin_huge() -> Outcome {
    outcome((|| {
        let (s, src, name) = published("originhuge");
        let blob = image_blobs(&s.repo)[0].clone();
        let op = cvmfs_format::RepoPaths::origin_of(&layer_dir(&s.repo, &blob));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&op)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let started = std::time::Instant::now();
        check_reports(&s, &[&op.display().to_string()])?;
        ensure(started.elapsed().as_secs() < 10, "check read the huge file")?;
        let r = publish(&s, &src, &name);
        ensure(r.ok, format!("republish: {}", r.stderr))?;
        ensure(
            r.stderr.contains(&op.display().to_string()),
            format!(
                "republish did not say it rebuilt {}: {}",
                op.display(),
                r.stderr
            ),
        )?;
        origins_complete(&s.repo)?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// A malformed origin.json: reported by name, gc keeps the layer (who uses
/// it is unknown) and rebuilds the file from the store.
fn origin_malformed() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("originbad");
        let blob = image_blobs(&s.repo)[0].clone();
        let op = cvmfs_format::RepoPaths::origin_of(&layer_dir(&s.repo, &blob));
        std::fs::write(&op, br#"{"origin":["../../../../canary"]}"#).unwrap();
        check_reports(&s, &[&op.display().to_string()])?;
        let g = gc(&s);
        ensure(g.ok, format!("gc: {}{}", g.stdout, g.stderr))?;
        ensure(
            cvmfs_format::RepoPaths::layerfs_of(&layer_dir(&s.repo, &blob)).is_dir(),
            "gc removed the layer",
        )?;
        origins_complete(&s.repo)?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// origin.json a symlink to a file outside: never read through, never
/// written through; a republish replaces the link by a file.
fn origin_symlink() -> Outcome {
    outcome((|| {
        let (s, src, name) = published("originlink");
        let blob = image_blobs(&s.repo)[0].clone();
        let op = cvmfs_format::RepoPaths::origin_of(&layer_dir(&s.repo, &blob));
        std::fs::remove_file(&op).unwrap();
        std::os::unix::fs::symlink(s.canary.root.join("etc/a"), &op).unwrap();
        check_reports(&s, &[&op.display().to_string(), "symlink"])?;
        let r = publish(&s, &src, &name);
        ensure(r.ok, format!("republish: {}", r.stderr))?;
        ensure(
            !std::fs::symlink_metadata(&op)
                .unwrap()
                .file_type()
                .is_symlink(),
            "origin.json is still a symlink",
        )?;
        origins_complete(&s.repo)?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// A layer's `.metadata` directory replaced by a symlink to a directory
/// outside: a publish reusing the layer refuses to write through it, naming
/// it; nothing outside changes; check names it.
fn metadata_dir_symlink() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("metalink");
        let blob = blob_of(&s.repo, &base_layer(0))?;
        let md = cvmfs_format::RepoPaths::metadata_of(&layer_dir(&s.repo, &blob));
        // outside, with what the layer's .metadata had: the publisher finds
        // the layer as it expects and would write origin.json there
        let outside = s.dir.path().join("outside-metadata");
        std::fs::rename(&md, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &md).unwrap();
        let outside_before = describe_tree(&outside);
        let src2 = make_oci(&s, "two", &[base_layer(0), own_layer("two")]);
        let r = publish(&s, &src2, "example.org/hostile/metalink2:1");
        ensure(!r.ok, "publish wrote through a symlinked .metadata")?;
        ensure(
            r.stderr.contains(&md.display().to_string()),
            format!("error does not name {}: {}", md.display(), r.stderr),
        )?;
        ensure(
            describe_tree(&outside) == outside_before,
            format!("{} changed", outside.display()),
        )?;
        s.canary.unchanged()?;
        // fine to read through for check, but named as not a directory
        check_reports(&s, &[&md.display().to_string()])
    })())
}

/// The blob digest the store records for the layer whose tar is `tar`.
fn blob_of(repo: &Path, tar: &[u8]) -> Result<String, String> {
    let diff = format!("sha256:{}", sha256_hex(tar));
    read_json(&repo.join("podmanStore/cvmfs-layers/layers.json"))
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["diff-digest"] == diff.as_str())
        .and_then(|l| l["compressed-diff-digest"].as_str().map(str::to_string))
        .ok_or_else(|| format!("no layer with diffID {diff} in layers.json"))
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The manifest copy a symlink to a secret file: check refuses to read it
/// (names it, not its content), a republish replaces it, the target is
/// untouched.
fn manifest_copy_symlink() -> Outcome {
    outcome((|| {
        let (s, src, name) = published("manifestlink");
        let mp = cvmfs_format::RepoPaths::new(&s.repo).manifest_copy(&name);
        std::fs::remove_file(&mp).unwrap();
        std::os::unix::fs::symlink(s.canary.root.join("etc/a"), &mp).unwrap();
        check_reports(&s, &[&mp.display().to_string(), "symlink"])?;
        let r = publish(&s, &src, &name);
        ensure(r.ok, format!("republish: {}", r.stderr))?;
        ensure(
            !std::fs::symlink_metadata(&mp)
                .unwrap()
                .file_type()
                .is_symlink(),
            "manifest.json is still a symlink",
        )?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// `.flat/XX/<c>` replaced by a symlink to a directory outside: the tag link
/// would lead there; a republish rebuilds the tree in place (warning naming
/// it), the outside is untouched.
fn flat_symlink() -> Outcome {
    outcome((|| {
        let (s, src, name) = published("flatlink");
        let id = image_ids(&s.repo)[0].clone();
        let flat = cvmfs_format::RepoPaths::new(&s.repo).flat_dir(&id);
        let tmp = s.dir.path().join("moved-flat");
        std::fs::rename(&flat, &tmp).unwrap();
        std::os::unix::fs::symlink(s.canary.root.join("etc"), &flat).unwrap();
        check_reports(&s, &[&s.repo.join(&name).display().to_string()])?;
        let r = publish(&s, &src, &name);
        ensure(r.ok, format!("republish: {}", r.stderr))?;
        ensure(
            r.stderr.contains(&flat.display().to_string()),
            format!("no warning naming {}: {}", flat.display(), r.stderr),
        )?;
        ensure(
            std::fs::symlink_metadata(&flat).unwrap().is_dir(),
            "the flat tree is not a directory again",
        )?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// The image's directory in podmanStore a symlink to a directory outside:
/// a republish refuses to write big data through it, naming it.
fn store_dir_symlink() -> Outcome {
    outcome((|| {
        let (s, src, name) = published("storelink");
        let id = image_ids(&s.repo)[0].clone();
        let dir = s.repo.join("podmanStore/cvmfs-images").join(&id);
        std::fs::remove_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(s.canary.root.join("data"), &dir).unwrap();
        let r = publish(&s, &src, &name);
        ensure(!r.ok, "publish wrote through a symlinked image directory")?;
        ensure(
            r.stderr.contains(&dir.display().to_string()) && r.stderr.contains(&src),
            format!(
                "error does not name {} and the image: {}",
                dir.display(),
                r.stderr
            ),
        )?;
        s.canary.unchanged()?;
        check_reports(&s, &[&id])
    })())
}

/// images.json garbage: a publish refuses (naming the file) before it
/// places anything; check names the file.
fn images_json_corrupted() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("imagesjson");
        let ij = s.repo.join("podmanStore/cvmfs-images/images.json");
        std::fs::write(&ij, b"[{\"id\": ").unwrap();
        let layers_before = describe_tree(&cvmfs_format::RepoPaths::new(&s.repo).layers_dir());
        let src2 = make_oci(&s, "two", &[own_layer("two")]);
        let r = publish(&s, &src2, "example.org/hostile/two:1");
        ensure(!r.ok, "publish over a corrupt images.json succeeded")?;
        ensure(
            r.stderr.contains(&ij.display().to_string()) && r.stderr.contains(&src2),
            format!(
                "error does not name {} and image {src2}: {}",
                ij.display(),
                r.stderr
            ),
        )?;
        ensure(
            describe_tree(&cvmfs_format::RepoPaths::new(&s.repo).layers_dir()) == layers_before,
            "layers were placed anyway",
        )?;
        ensure(temporaries(&s.repo).is_empty(), "temporaries left")?;
        s.canary.unchanged()?;
        check_reports(&s, &[&ij.display().to_string()])
    })())
}

/// Parallel publishes of different images under one tag: whichever wins,
/// the tag link and images.json name the same image.
fn parallel_same_tag() -> Outcome {
    outcome((|| {
        let s = Scene::new("sametag");
        let name = "example.org/hostile/contested:1";
        let srcs: Vec<String> = (0..4)
            .map(|i| {
                make_oci(
                    &s,
                    &format!("c{i}"),
                    &[base_layer(0), own_layer(&format!("c{i}"))],
                )
            })
            .collect();
        for round in 0..3 {
            let children: Vec<Child> = srcs
                .iter()
                .map(|src| spawn_publish(&s, src, name))
                .collect();
            for c in children {
                let r = wait(c);
                ensure(r.ok, format!("round {round}: {}", r.stderr))?;
            }
            let images = read_json(&s.repo.join("podmanStore/cvmfs-images/images.json"));
            let holder = images
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| {
                    i["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|x| x == name))
                })
                .and_then(|i| i["id"].as_str())
                .ok_or("no image holds the name")?
                .to_string();
            let t = std::fs::read_link(s.repo.join(name)).unwrap();
            ensure(
                t.ends_with(&holder),
                format!(
                    "round {round}: link {} but images.json gives the name to {holder}",
                    t.display()
                ),
            )?;
            s.check_deep()?;
        }
        s.canary.unchanged()
    })())
}

/// Two OCI directories whose names sanitise to the same default name: both
/// publish (the second takes the tag, as a moved tag does), the store and
/// the tag link agree, gc removes the first.
fn sanitised_collision() -> Outcome {
    outcome((|| {
        let s = Scene::new("collide");
        let a = make_oci(&s, "My App", &[own_layer("a")]);
        let b = make_oci(&s, "my-app", &[own_layer("b")]);
        let pub_default =
            |src: &str| cvmfs_podman(&["publish", src, "--repo", s.repo.to_str().unwrap()]);
        let r = pub_default(&a);
        ensure(r.ok, format!("publish {a}: {}", r.stderr))?;
        let r = pub_default(&b);
        ensure(r.ok, format!("publish {b}: {}", r.stderr))?;
        let link = s.repo.join("localhost/oci-my-app:t");
        ensure(
            std::fs::read_link(&link).is_ok(),
            format!("no tag link {}", link.display()),
        )?;
        s.check_deep()?;
        let g = gc(&s);
        ensure(
            g.ok && g.stdout.contains("removed image"),
            format!("gc: {}", g.stdout),
        )?;
        ensure(
            image_ids(&s.repo).len() == 1,
            "gc did not remove the image that lost its name",
        )?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// A docker-archive whose RepoTags (the name it carries) uses a Kelvin sign:
/// refused by name, naming the archive and the code point.
fn archive_repotag() -> Outcome {
    outcome((|| {
        let s = Scene::new("archive");
        let layer = own_layer("arch");
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer))]},
        })
        .to_string();
        let manifest = serde_json::json!([{
            "Config": "config.json",
            "RepoTags": ["\u{212A}8s.io/pause:3"],
            "Layers": ["layer.tar"],
        }])
        .to_string();
        let archive = RawTar::new()
            .file("manifest.json", manifest.as_bytes())
            .file("config.json", config.as_bytes())
            .file("layer.tar", &layer)
            .end();
        let file = s.dir.path().join("evil-archive.tar");
        std::fs::write(&file, archive).unwrap();
        let src = format!("docker-archive:{}", file.display());
        let r = cvmfs_podman(&["publish", &src, "--repo", s.repo.to_str().unwrap()]);
        ensure(!r.ok, "published under a look-alike name")?;
        ensure(
            r.stderr.contains(&src) && r.stderr.contains("U+212A"),
            format!("error does not name {src} and U+212A: {}", r.stderr),
        )?;
        // the same archive under a valid --name is fine
        let r = cvmfs_podman(&[
            "publish",
            &src,
            "--repo",
            s.repo.to_str().unwrap(),
            "--name",
            "k8s.io/pause:3",
        ]);
        ensure(r.ok, format!("publish --name: {}", r.stderr))?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// Replace a store lock file by a symlink to the canary's file `etc/a`.
fn lock_symlink(label: &str, rel: &str) -> Result<(), String> {
    let (s, _, _) = published(label);
    let lock = s.repo.join(rel);
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(s.canary.root.join("etc/a"), &lock).unwrap();
    let src2 = make_oci(&s, "two", &[own_layer("two")]);
    let before = describe_tree(&cvmfs_format::RepoPaths::new(&s.repo).layers_dir());
    let r = publish(&s, &src2, "example.org/hostile/two:1");
    ensure(
        !r.ok,
        format!("publish through a symlinked {rel} succeeded"),
    )?;
    ensure(
        r.stderr.contains(&lock.display().to_string()) && r.stderr.contains(&src2),
        format!(
            "error does not name {} and image {src2}: {}",
            lock.display(),
            r.stderr
        ),
    )?;
    ensure(
        describe_tree(&cvmfs_format::RepoPaths::new(&s.repo).layers_dir()) == before,
        "layers were placed anyway",
    )?;
    s.canary.unchanged()?;
    check_reports(&s, &[&lock.display().to_string()])?;
    // removed, the next publish recreates it
    std::fs::remove_file(&lock).unwrap();
    let r = publish(&s, &src2, "example.org/hostile/two:1");
    ensure(r.ok, format!("publish after removing it: {}", r.stderr))?;
    s.canary.unchanged()?;
    s.check_deep()
}

fn images_lock_symlink() -> Outcome {
    outcome(lock_symlink(
        "imageslock",
        "podmanStore/cvmfs-images/images.lock",
    ))
}

fn publisher_lock_symlink() -> Outcome {
    outcome(lock_symlink("publock", "podmanStore/cvmfs/publisher.lock"))
}

/// Wait until a publisher unpacks into `.layers/.cvmfs-podman-tmp.*`.
fn wait_for_unpacking(s: &Scene, child: &mut Child) -> Result<PathBuf, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let found = std::fs::read_dir(cvmfs_format::RepoPaths::new(&s.repo).layers_dir())
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".cvmfs-podman-tmp.")
                    && e.file_type().is_ok_and(|t| t.is_dir())
            });
        if let Some(e) = found {
            return Ok(e.path());
        }
        if child.try_wait().unwrap().is_some() {
            return Err("the publisher finished before it was seen unpacking".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err("the publisher never unpacked".into())
}

/// gc (which sweeps temporaries) while a publisher unpacks: the running
/// publisher's temporaries stay (check calls them live), and it completes.
fn gc_during_unpack() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("gclive");
        let src = make_oci_with(&s, "big", &[base_layer(0), big_layer()], "none");
        let name = "example.org/hostile/gclive-big:1";
        let mut child = spawn_publish(&s, &src, name);
        let tmp = match wait_for_unpacking(&s, &mut child) {
            Ok(t) => t,
            Err(e) => {
                let r = wait(child);
                return Err(format!("{e}: {}", r.stderr));
            }
        };
        let pid = child.id();
        let c = check(&s);
        let g = gc(&s);
        let still = tmp.exists() || child.try_wait().unwrap().is_some();
        let r = wait(child);
        ensure(g.ok, format!("gc: {}{}", g.stdout, g.stderr))?;
        ensure(
            c.stdout
                .contains(&format!("being written by the running publisher pid {pid}")),
            format!(
                "check does not call publisher {pid}'s temporaries live: {}",
                c.stdout
            ),
        )?;
        ensure(
            still,
            format!("gc removed {} of a running publisher", tmp.display()),
        )?;
        ensure(r.ok, format!("publish: {}", r.stderr))?;
        origins_complete(&s.repo)?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// One layer's content published from two blobs (gzip, then uncompressed):
/// one layer ID in the store, naming the first blob's layerfs; that blob's
/// origin.json names both images; after the first image loses its tag, gc
/// keeps what the second uses.
fn other_compression() -> Outcome {
    outcome((|| {
        let (s, _, name) = published("recompressed");
        let src2 = make_oci_with(&s, "raw", &[base_layer(0), own_layer("raw")], "none");
        let r = publish(&s, &src2, "example.org/hostile/raw:1");
        ensure(r.ok, format!("publish: {}", r.stderr))?;
        origins_complete(&s.repo)?;
        s.check_deep()?;
        // the first image's tag moves to a third image: gc removes the first
        let src3 = make_oci(&s, "three", &[own_layer("three")]);
        ensure(
            publish(&s, &src3, &name).ok,
            "publish of the third image failed",
        )?;
        let g = gc(&s);
        ensure(
            g.ok && g.stdout.contains("removed image"),
            format!("gc: {}{}", g.stdout, g.stderr),
        )?;
        origins_complete(&s.repo)?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// An image refused after another was published leaves the repository as
/// it was, byte for byte (the lock taken and the sweep done change nothing).
fn refused_changes_nothing() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("refused");
        let before = describe_tree(&s.repo);
        let tar = RawTar::new().dir("etc").file("etc/../../../x", b"x").end();
        let src2 = make_oci(&s, "evil", &[base_layer(0), tar]);
        let r = publish(&s, &src2, "example.org/hostile/evil:1");
        ensure(!r.ok, "publish of a layer with ../ succeeded")?;
        ensure(
            r.stderr.contains(&src2) && r.stderr.contains("etc/../../../x"),
            format!("error does not name image and entry: {}", r.stderr),
        )?;
        let after = describe_tree(&s.repo);
        ensure(
            after == before,
            format!("the repository changed:\n{before}\n---\n{after}"),
        )?;
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

/// A tag link and a manifest copy planted under a look-alike registry name
/// (Kelvin sign), pointing at a real image: check names both.
fn planted_lookalike_link() -> Outcome {
    outcome((|| {
        let (s, _, _) = published("lookalike");
        let id = image_ids(&s.repo)[0].clone();
        let dir = s.repo.join("\u{212A}8s.io/pause");
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("3");
        std::os::unix::fs::symlink(format!("../../.flat/{}/{id}", &id[..2]), &link).unwrap();
        let md = s.repo.join(".metadata/\u{212A}8s.io/pause:3");
        std::fs::create_dir_all(&md).unwrap();
        std::fs::write(md.join("manifest.json"), b"{}").unwrap();
        check_reports(
            &s,
            &[
                &link.display().to_string(),
                &md.display().to_string(),
                "U+212A",
            ],
        )?;
        s.canary.unchanged()
    })())
}
