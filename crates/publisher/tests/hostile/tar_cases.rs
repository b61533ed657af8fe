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
        Case {
            name: "tar/slash-a-then-dot-a",
            run: slash_a_then_dot_a,
        },
        Case {
            name: "tar/typeflag0-name-with-trailing-slash",
            run: file_with_trailing_slash,
        },
        Case {
            name: "tar/apply-diff-endless-zeros",
            run: endless_zeros_apply_diff,
        },
        Case {
            name: "tar/symlink-then-file-through-it",
            run: symlink_then_file_through_it,
        },
        Case {
            name: "tar/hardlink-to-outside",
            run: hardlink_to_outside,
        },
        Case {
            name: "tar/hardlink-to-whiteout",
            run: hardlink_to_whiteout,
        },
        Case {
            name: "tar/whiteout-as-directory",
            run: whiteout_as_directory,
        },
        Case {
            name: "tar/device-number-out-of-range",
            run: device_number_out_of_range,
        },
        Case {
            name: "tar/negative-base256-uid",
            run: negative_uid,
        },
        Case {
            name: "tar/huge-pax-header",
            run: huge_pax_header,
        },
        Case {
            name: "tar/pax-record-bad-length",
            run: pax_record_bad_length,
        },
        Case {
            name: "tar/pax-path-with-nul",
            run: pax_path_with_nul,
        },
        Case {
            name: "tar/gnu-long-name-with-nul",
            run: gnu_long_name_with_nul,
        },
        Case {
            name: "tar/gnu-long-name-over-cap",
            run: gnu_long_name_over_cap,
        },
        Case {
            name: "tar/gnu-long-name-twice",
            run: two_gnu_long_names,
        },
        Case {
            name: "tar/pax-header-twice",
            run: two_pax_headers,
        },
        Case {
            name: "tar/gnu-long-link-and-pax-linkpath",
            run: gnu_long_link_and_pax_linkpath,
        },
        Case {
            name: "tar/gnu-magic-ustar-version",
            run: gnu_magic_ustar_version,
        },
        Case {
            name: "tar/star-format-header",
            run: star_header,
        },
        Case {
            name: "tar/header-after-one-zero-block",
            run: header_after_one_zero_block,
        },
        Case {
            name: "tar/pax-header-without-entry",
            run: extension_without_entry,
        },
        Case {
            name: "tar/sparse-map-overflow",
            run: sparse_map_overflow,
        },
        Case {
            name: "tar/whiteout-climbing-out",
            run: whiteout_climbing_out,
        },
        Case {
            name: "tar/opaque-marker-climbing-out",
            run: opaque_marker_climbing_out,
        },
        Case {
            name: "tar/ustar-prefix-climbing-out",
            run: prefix_climbing_out,
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
        println!(
            "    tar/100k-long-names-bounded-memory: peak RSS {} MiB",
            peak / 1024
        );
        s.canary.unchanged()?;
        s.check_deep()
    })())
}

// ---------------------------------------------------------------------------
// More hostile headers and entries. Each is refused with the image, a layer
// digest and the entry (or, before any entry, where it was) in the error.

fn refuse_tar(image: &str, tar: Vec<u8>, entry: &str) -> Outcome {
    refuse("tar", image, &[tar], entry)
}

/// `/a` then `./a`: one path twice, which the tar-split could not rebuild.
fn slash_a_then_dot_a() -> Outcome {
    let tar = RawTar::new().file("/a", b"1").file("./a", b"2").end();
    refuse_tar("example.org/hostile/dup-a:1", tar, "./a")
}

/// Typeflag `0` named `f/`: Go makes a file, a lenient reader a directory.
fn file_with_trailing_slash() -> Outcome {
    let tar = RawTar::new().file("f/", b"").end();
    refuse_tar("example.org/hostile/fslash:1", tar, "f/")
}

fn symlink_then_file_through_it() -> Outcome {
    let s = Scene::new("symthrough");
    let mut l = Hdr::new(b"l", b'2', 0);
    l.linkname = format!("{}/etc", s.climb_to_canary()).into_bytes();
    let tar = RawTar::new().entry(&l, b"").file("l/pwned", b"x").end();
    let run = s.publish("example.org/hostile/symthrough:1", &[tar]);
    outcome(s.refused(
        &run,
        &["example.org/hostile/symthrough:1", "sha256:", "l/pwned"],
    ))
}

fn hardlink_to_outside() -> Outcome {
    let mut h = Hdr::new(b"h", b'1', 0);
    h.linkname = b"../../../../canary/etc/a".to_vec();
    let tar = RawTar::new().entry(&h, b"").end();
    refuse_tar("example.org/hostile/hlout:1", tar, "\"h\"")
}

fn hardlink_to_whiteout() -> Outcome {
    let mut h = Hdr::new(b"y", b'1', 0);
    h.linkname = b".wh.x".to_vec();
    let tar = RawTar::new().file(".wh.x", b"").entry(&h, b"").end();
    refuse_tar("example.org/hostile/hlwh:1", tar, "\"y\"")
}

fn whiteout_as_directory() -> Outcome {
    let tar = RawTar::new().dir(".wh.etc").end();
    refuse_tar("example.org/hostile/whdir:1", tar, ".wh.etc")
}

fn device_number_out_of_range() -> Outcome {
    let mut h = Hdr::new(b"dev/x", b'3', 0);
    h.devmajor = 1;
    let mut b = h.block();
    // devmajor in base-256: 2^40
    b[329..337].copy_from_slice(&[0x80, 0, 1, 0, 0, 0, 0, 0]);
    fix_checksum(&mut b);
    let mut t = RawTar::new();
    t.bytes.extend_from_slice(&b);
    refuse_tar("example.org/hostile/devrange:1", t.end(), "dev/x")
}

fn negative_uid() -> Outcome {
    let mut b = Hdr::new(b"neg", b'0', 0).block();
    b[108..116].copy_from_slice(&[0xff; 8]); // base-256 -1
    fix_checksum(&mut b);
    let mut t = RawTar::new();
    t.bytes.extend_from_slice(&b);
    refuse_tar("example.org/hostile/neguid:1", t.end(), "neg")
}

fn huge_pax_header() -> Outcome {
    let big = vec![b'a'; (1 << 20) + 10];
    let tar = RawTar::new()
        .file("before", b"")
        .pax(&[("comment", &big)])
        .file("x", b"")
        .end();
    refuse_tar("example.org/hostile/hugepax:1", tar, "after before")
}

fn pax_record_bad_length() -> Outcome {
    let mut body = pax_record("path", b"../../../../canary/etc/.wh.deleted");
    body[0] = b'9'; // claims more than there is
    let tar = RawTar::new()
        .file("before", b"")
        .entry(&Hdr::new(b"././@PaxHeader", b'x', body.len() as u64), &body)
        .file("x", b"")
        .end();
    refuse_tar("example.org/hostile/paxlen:1", tar, "after before")
}

fn pax_path_with_nul() -> Outcome {
    let tar = RawTar::new()
        .file("before", b"")
        .pax(&[("path", b"safe\0../../../../canary/etc/.wh.deleted")])
        .file("x", b"")
        .end();
    refuse_tar("example.org/hostile/paxnul:1", tar, "after before")
}

fn gnu_long_name_with_nul() -> Outcome {
    let tar = RawTar::new()
        .gnu_long_name(b"safe\0../../../../canary/etc/.wh.deleted")
        .file("x", b"")
        .end();
    refuse_tar("example.org/hostile/gnunul:1", tar, "safe")
}

fn gnu_long_name_over_cap() -> Outcome {
    let tar = RawTar::new()
        .file("before", b"")
        .gnu_long_name(&vec![b'n'; 2 << 20])
        .file("x", b"")
        .end();
    refuse_tar("example.org/hostile/gnucap:1", tar, "after before")
}

fn two_gnu_long_names() -> Outcome {
    let tar = RawTar::new()
        .gnu_long_name(b"first")
        .gnu_long_name(b"../../../../canary/etc/.wh.deleted")
        .file("x", b"")
        .end();
    refuse_tar("example.org/hostile/gnutwice:1", tar, "\"x\"")
}

fn two_pax_headers() -> Outcome {
    let tar = RawTar::new()
        .pax(&[("path", b"first")])
        .pax(&[("path", b"../../../../canary/etc/.wh.deleted")])
        .file("x", b"")
        .end();
    refuse_tar("example.org/hostile/paxtwice:1", tar, "\"x\"")
}

fn gnu_long_link_and_pax_linkpath() -> Outcome {
    let mut body = b"target".to_vec();
    body.push(0);
    let mut l = Hdr::new(b"l", b'2', 0);
    l.linkname = b"t".to_vec();
    let tar = RawTar::new()
        .entry(
            &Hdr::new(b"././@LongLink", b'K', body.len() as u64).gnu(),
            &body,
        )
        .pax(&[("linkpath", b"other")])
        .entry(&l, b"")
        .end();
    refuse_tar("example.org/hostile/linkboth:1", tar, "\"l\"")
}

fn gnu_magic_ustar_version() -> Outcome {
    let mut h = Hdr::new(b"odd", b'0', 0);
    h.magic = *b"ustar ";
    h.version = *b"00";
    let tar = RawTar::new().file("before", b"").entry(&h, b"").end();
    refuse_tar("example.org/hostile/gnuver:1", tar, "after before")
}

fn star_header() -> Outcome {
    let mut b = Hdr::new(b"star", b'0', 0).block();
    b[508..512].copy_from_slice(b"tar\0");
    fix_checksum(&mut b);
    let mut t = RawTar::new().file("before", b"");
    t.bytes.extend_from_slice(&b);
    refuse_tar("example.org/hostile/star:1", t.end(), "after before")
}

fn header_after_one_zero_block() -> Outcome {
    let mut t = RawTar::new().file("before", b"");
    t.bytes.extend_from_slice(&[0u8; 512]);
    let tar = t.file("../../../../canary/etc/hidden", b"x").end();
    refuse_tar("example.org/hostile/zeroblock:1", tar, "after before")
}

fn extension_without_entry() -> Outcome {
    let t = RawTar::new()
        .file("before", b"")
        .pax(&[("path", b"../../../../canary/etc/.wh.deleted")]);
    refuse_tar("example.org/hostile/danglingpax:1", t.end(), "after before")
}

fn sparse_map_overflow() -> Outcome {
    let tar = RawTar::new()
        .pax(&[
            ("GNU.sparse.major", b"0"),
            ("GNU.sparse.minor", b"1"),
            ("GNU.sparse.name", b"sparse"),
            ("GNU.sparse.realsize", b"100"),
            ("GNU.sparse.numblocks", b"1"),
            ("GNU.sparse.map", b"18446744073709551615,2"),
        ])
        .entry(&Hdr::new(b"GNUSparseFile.0/sparse", b'0', 2), b"ab")
        .end();
    refuse_tar("example.org/hostile/sparseover:1", tar, "sparse")
}

fn whiteout_climbing_out() -> Outcome {
    let tar = RawTar::new().file(&canary_whiteout(), b"").end();
    refuse_tar("example.org/hostile/whclimb:1", tar, ".wh.deleted")
}

fn opaque_marker_climbing_out() -> Outcome {
    let tar = RawTar::new()
        .file("../../../../canary/opaque/.wh..wh..opq", b"")
        .end();
    refuse_tar("example.org/hostile/opqclimb:1", tar, ".wh..wh..opq")
}

fn prefix_climbing_out() -> Outcome {
    let mut h = Hdr::new(b".wh.deleted", b'0', 0);
    h.prefix = b"../../../../canary/etc".to_vec();
    let tar = RawTar::new().entry(&h, b"").end();
    refuse_tar("example.org/hostile/prefixclimb:1", tar, ".wh.deleted")
}

/// Recompute a block's checksum after patching it.
fn fix_checksum(b: &mut [u8; 512]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// `apply_tar` (the driver's ApplyDiff) on an endless stream of zeros: it
/// must stop at the end-of-archive marker, within 2 s, having read little.
fn endless_zeros_apply_diff() -> Outcome {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    struct Zeros(Arc<AtomicU64>);
    impl std::io::Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            // give up eventually so a failing case does not spin forever
            if self.0.fetch_add(buf.len() as u64, Ordering::Relaxed) > 64 << 30 {
                return Err(std::io::Error::other("64 GiB of zeros read"));
            }
            buf.fill(0);
            Ok(buf.len())
        }
    }
    let dir = tmp("zeros");
    let dest = dir.path().to_path_buf();
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = cvmfs_graphdriver::archive::apply_tar(
            Zeros(counter),
            &dest,
            &cvmfs_graphdriver::archive::ApplyOptions::default(),
        );
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    outcome(match rx.recv_timeout(std::time::Duration::from_secs(2)) {
        Ok(Ok(_)) => {
            let n = read.load(Ordering::Relaxed);
            ensure(
                n <= (1 << 20) + (2 << 20),
                format!("read {n} bytes after the end-of-archive marker"),
            )
        }
        Ok(Err(e)) => Err(format!("apply_tar failed: {e}")),
        Err(_) => Err(format!(
            "apply_tar still reading after 2 s ({} bytes)",
            read.load(Ordering::Relaxed)
        )),
    })
}
