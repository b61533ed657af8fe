//! Hostile layer tars: each is published into a fresh repository and must be
//! refused with an error naming image, layer and entry, with the canary tree
//! unchanged and the repository consistent afterwards.

use crate::support::*;

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "tar/dotdot-file-climbs-to-canary",
            run: dotdot_file,
        },
        Case {
            name: "tar/pax-path-twice-deletes-canary-whiteout",
            run: pax_path_twice,
        },
        Case {
            name: "tar/gnu-longname-then-pax-path",
            run: gnu_long_name_then_pax_path,
        },
        Case {
            name: "tar/ustar-bad-version-with-prefix",
            run: ustar_bad_version_with_prefix,
        },
        Case {
            name: "tar/pax-size-twice-hides-a-header",
            run: pax_size_twice,
        },
        Case {
            name: "tar/100k-long-names-bounded-memory",
            run: many_long_names,
        },
    ]
}

/// Publish `layers` as `image` in a fresh scene and require a refusal naming the
/// image, a layer digest and `entry`.
fn refuse(scene: &str, image: &str, layers: &[Vec<u8>], entry: &str) -> Outcome {
    let s = Scene::new(scene);
    let run = s.publish(image, layers);
    // Say first whether the canary was touched: that is the damage to prevent.
    if let Err(e) = s.canary.unchanged() {
        return Outcome::Fail(format!("{e} (publish ok: {})", run.ok));
    }
    outcome(s.refused(&run, &[image, "sha256:", entry]))
}

/// `<canary>/etc/.wh.deleted` as seen from a layer directory: a whiteout marker
/// whose restoration would delete the canary's 0/0 device `etc/deleted`.
fn canary_whiteout() -> String {
    format!("{}/etc/.wh.deleted", Scene::new("probe").climb_to_canary())
}

fn dotdot_file() -> Outcome {
    let s = Scene::new("dotdot");
    let name = format!("{}/etc/pwned", s.climb_to_canary());
    let tar = RawTar::new().dir("etc").file(&name, b"pwned").end();
    let run = s.publish("example.org/hostile/dotdot:1", &[tar]);
    outcome(s.refused(&run, &["example.org/hostile/dotdot:1", &name]))
}

/// Two `path` records in one PAX header: one reader takes the first, another the
/// last. Both orders are tried.
fn pax_path_twice() -> Outcome {
    let evil = canary_whiteout();
    for (i, (a, b)) in [
        (".wh.deleted", evil.as_str()),
        (evil.as_str(), ".wh.deleted"),
    ]
    .into_iter()
    .enumerate()
    {
        let tar = RawTar::new()
            .pax(&[("path", a.as_bytes()), ("path", b.as_bytes())])
            .file("placeholder", b"")
            .end();
        let image = format!("example.org/hostile/paxpath:{i}");
        if let Outcome::Fail(e) = refuse("paxpath", &image, &[tar], ".wh.deleted") {
            return Outcome::Fail(format!("order {i}: {e}"));
        }
    }
    Outcome::Pass
}

/// A GNU long name and a PAX `path` for the same entry (Go lets the GNU one win).
fn gnu_long_name_then_pax_path() -> Outcome {
    let evil = canary_whiteout();
    let tar = RawTar::new()
        .gnu_long_name(b".wh.deleted")
        .pax(&[("path", evil.as_bytes())])
        .file("placeholder", b"")
        .end();
    refuse(
        "gnupax",
        "example.org/hostile/gnupax:1",
        &[tar],
        ".wh.deleted",
    )
}

/// Magic "ustar\0" with a version other than "00" and a prefix: Go joins the
/// prefix, a strict ustar reader ignores it.
fn ustar_bad_version_with_prefix() -> Outcome {
    let evil = canary_whiteout();
    let (dir, base) = evil.rsplit_once('/').unwrap();
    let mut h = Hdr::new(base.as_bytes(), b'0', 0);
    h.version = *b"  ";
    h.prefix = dir.as_bytes().to_vec();
    let tar = RawTar::new().entry(&h, b"").end();
    refuse(
        "ustarver",
        "example.org/hostile/ustarver:1",
        &[tar],
        ".wh.deleted",
    )
}

/// Two `size` records: with one, the next 512 bytes are the entry's content; with
/// the other, they are a header naming a whiteout outside the layer.
fn pax_size_twice() -> Outcome {
    let evil = canary_whiteout();
    let hidden = Hdr::new(evil.as_bytes(), b'0', 0).block();
    for (i, (a, b)) in [("512", "0"), ("0", "512")].into_iter().enumerate() {
        let tar = RawTar::new()
            .pax(&[("size", a.as_bytes()), ("size", b.as_bytes())])
            .entry(&Hdr::new(b"carrier", b'0', 0), b"")
            .data(&hidden)
            .end();
        let image = format!("example.org/hostile/paxsize:{i}");
        if let Outcome::Fail(e) = refuse("paxsize", &image, &[tar], "carrier") {
            return Outcome::Fail(format!("order {i}: {e}"));
        }
    }
    Outcome::Pass
}

// ---------------------------------------------------------------------------
// Large layers, packed without holding the tar in memory.

/// Write an OCI layout at `dir` with one gzip layer produced by `write_tar`,
/// streaming (the tar itself is never held in memory). Returns the source
/// reference for `publish`.
fn oci_streamed(dir: &std::path::Path, write_tar: impl FnOnce(&mut dyn std::io::Write)) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    struct Hashing<W> {
        inner: W,
        hash: Sha256,
    }
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(b)?;
            self.hash.update(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let h = hex(&Sha256::digest(data));
        std::fs::write(blobs.join(&h), data).unwrap();
        format!("sha256:{h}")
    };
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tee = Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 20, gz),
        hash: Sha256::new(),
    };
    write_tar(&mut tee);
    let diff_id = format!("sha256:{}", hex(&tee.hash.clone().finalize()));
    let blob = tee.inner.into_inner().ok().unwrap().finish().unwrap();
    let layer = put(&blob);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let cd = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": cd},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": blob.len(), "digest": layer}],
    }))
    .unwrap();
    let md = put(&manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": manifest.len(), "digest": md,
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    format!("oci:{}:t", dir.display())
}

/// Run `cvmfs-podman args`, sampling the child's peak RSS (`VmHWM`, KiB).
fn run_measured(args: &[&str]) -> (Run, u64) {
    use std::io::Read;
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cvmfs-podman");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Ok(st) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = st
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let run = Run {
        ok: status.success(),
        stdout,
        stderr: err_reader.join().unwrap(),
    };
    (run, peak)
}

/// 100 000 empty files with ~3 KB names (PAX paths) in a ~3 MB gzip layer:
/// publishing must stay under 64 MiB peak RSS and succeed (deep names
/// included), the repository consistent.
fn many_long_names() -> Outcome {
    const FILES: usize = 100_000;
    const LIMIT_KIB: u64 = 64 * 1024;
    let s = Scene::new("manynames");
    let dir: String = (0..11)
        .map(|i| format!("{i:02}{}", "d".repeat(248)))
        .collect::<Vec<_>>()
        .join("/");
    let src = oci_streamed(&s.dir.path().join("oci"), |w| {
        for i in 0..FILES {
            let name = format!("{dir}/{i:06}{}", "f".repeat(240));
            let rec = pax_record("path", name.as_bytes());
            let t = RawTar::new()
                .entry(&Hdr::new(b"././@PaxHeader", b'x', rec.len() as u64), &rec)
                .entry(&Hdr::new(format!("f{i}").as_bytes(), b'0', 0), b"");
            w.write_all(&t.bytes).unwrap();
        }
        w.write_all(&[0u8; 1024]).unwrap();
    });
    let (run, peak) = run_measured(&[
        "publish",
        &src,
        "--repo",
        s.repo.to_str().unwrap(),
        "--name",
        "example.org/hostile/manynames:1",
    ]);
    outcome((|| {
        ensure(run.ok, format!("publish failed: {}", run.stderr.trim()))?;
        ensure(
            peak <= LIMIT_KIB,
            format!("peak RSS {peak} KiB > {LIMIT_KIB} KiB"),
        )?;
        println!("    tar/many-long-names: peak RSS {} MiB", peak / 1024);
        s.canary.unchanged()?;
        s.check_deep()
    })())
}
