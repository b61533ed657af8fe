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
