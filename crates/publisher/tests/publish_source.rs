//! The library half on its own, without the binary: an OCI layout opened
//! through `source::open` and published by `publish::publish`, and hostile
//! manifests and configs refused with errors that name the image, the blob
//! and the field.

use std::path::Path;
use std::sync::Arc;

use cvmfs_publisher::blob::sha256_hex;
use cvmfs_publisher::oci::{Descriptor, ManifestDocument, MT_OCI_CONFIG, MT_OCI_MANIFEST};
use cvmfs_publisher::publish::{self, NoProgress, Options, Summary};
use cvmfs_publisher::registry::TransferLimits;
use cvmfs_publisher::source::{self, ImageName, Platform, RegistryOptions};
use cvmfs_publisher::{layer_spec, Error};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let hex = sha256_hex(data);
    let p = dir.join("blobs/sha256").join(&hex);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    format!("sha256:{hex}")
}

fn desc(media_type: &str, digest: String, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
    }
}

/// An OCI layout in `dir` whose only image is the manifest `manifest` (raw
/// bytes, so hostile ones can be written), tagged `t`.
fn layout_with_manifest(dir: &Path, manifest: &[u8]) {
    let md = put_blob(dir, manifest);
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MT_OCI_MANIFEST}","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// The layers of `specs` as uncompressed blobs in `dir`, and a config naming
/// `diff_ids` of them (all when `None`).
fn layers_and_config(
    dir: &Path,
    specs: &[&str],
    diff_ids: Option<usize>,
) -> (Descriptor, Vec<Descriptor>) {
    let mut layers = Vec::new();
    let mut diffs = Vec::new();
    for s in specs {
        let tar = layer_spec::spec_to_tar(s).unwrap();
        diffs.push(format!("\"sha256:{}\"", sha256_hex(&tar)));
        layers.push(desc(TAR, put_blob(dir, &tar), &tar));
    }
    diffs.truncate(diff_ids.unwrap_or(diffs.len()));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diffs.join(",")
    );
    let config = desc(
        MT_OCI_CONFIG,
        put_blob(dir, config.as_bytes()),
        config.as_bytes(),
    );
    (config, layers)
}

fn publish_layout(layout: &Path, repo: &Path) -> Result<Summary, Error> {
    let spec = format!("oci:{}:t", layout.display());
    let registry = RegistryOptions {
        tls_verify: true,
        limits: TransferLimits::default(),
    };
    let src = source::open(&spec, Platform::host(), registry)?;
    let opts = Options {
        repo: repo.to_path_buf(),
        recorded_repo: repo.display().to_string(),
        name: ImageName::parse("localhost/lib/test:1").unwrap(),
        jobs: 2,
        progress: Arc::new(NoProgress),
        no_devices: true,
    };
    publish::publish(src.as_ref(), &opts)
}

const BASE: &str = "dir /etc\nfile /etc/a \"a\"\n";
const TOP: &str = "dir /etc\nfile /etc/b \"b\"\n";

#[test]
fn an_oci_layout_publishes_through_the_library() {
    let t = tempfile::tempdir().unwrap();
    let (layout, repo) = (t.path().join("oci"), t.path().join("repo"));
    let (config, layers) = layers_and_config(&layout, &[BASE, TOP], None);
    let manifest =
        serde_json::to_vec(&ManifestDocument::new(MT_OCI_MANIFEST, &config, &layers)).unwrap();
    layout_with_manifest(&layout, &manifest);

    let s = publish_layout(&layout, &repo).unwrap();
    assert_eq!(
        (s.layers_written, s.layers_skipped, s.flat),
        (2, 0, "written")
    );
    assert_eq!(s.name, "localhost/lib/test:1");
    assert_eq!(s.image_id, config.digest["sha256:".len()..]);
    assert_eq!(
        s.manifest_digest,
        format!("sha256:{}", sha256_hex(&manifest))
    );
    let flat = repo.join("localhost/lib/test:1/etc");
    assert_eq!(std::fs::read_to_string(flat.join("a")).unwrap(), "a");
    assert_eq!(std::fs::read_to_string(flat.join("b")).unwrap(), "b");
    for l in &layers {
        let hex = &l.digest["sha256:".len()..];
        assert!(repo
            .join(".layers")
            .join(&hex[..2])
            .join(hex)
            .join("layerfs")
            .is_dir());
    }
    // DUCC's manifest copy carries the typed descriptors
    let copy =
        std::fs::read_to_string(repo.join(".metadata/localhost/lib/test:1/manifest.json")).unwrap();
    assert!(
        copy.contains(&layers[1].digest) && copy.contains(MT_OCI_MANIFEST),
        "{copy}"
    );

    let again = publish_layout(&layout, &repo).unwrap();
    assert_eq!(
        (again.layers_written, again.layers_skipped, again.flat),
        (0, 2, "exists, skipped")
    );
}

/// Publishing the layout with manifest `manifest` fails; the error.
fn refused(dir: &Path, manifest: &[u8]) -> String {
    let (layout, repo) = (dir.join("oci"), dir.join("repo"));
    layout_with_manifest(&layout, manifest);
    let e = publish_layout(&layout, &repo).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("image oci:{}:t: ", layout.display())),
        "{e}"
    );
    e
}

#[test]
fn missing_or_malformed_fields_are_errors_naming_image_blob_and_field() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("oci");
    let (config, layers) = layers_and_config(&layout, &[BASE, TOP], None);
    let (c, l0, l1) = (&config.digest, &layers[0].digest, &layers[1].digest);
    let cfg = format!(
        r#"{{"mediaType":"{MT_OCI_CONFIG}","digest":"{c}","size":{}}}"#,
        config.size
    );
    let good0 = format!(
        r#"{{"mediaType":"{TAR}","digest":"{l0}","size":{}}}"#,
        layers[0].size
    );
    let manifest = |config: &str, second: &str| {
        format!(r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_MANIFEST}","config":{config},"layers":[{good0},{second}]}}"#)
            .into_bytes()
    };
    let size1 = layers[1].size;
    for (second, says) in [
        (
            format!(r#"{{"digest":"{l1}","size":{size1}}}"#),
            format!("layer 2 {l1}: descriptor without \"mediaType\""),
        ),
        (
            format!(r#"{{"mediaType":"{TAR}","size":{size1}}}"#),
            "layer 2: descriptor without \"digest\"".to_string(),
        ),
        (
            format!(r#"{{"mediaType":"{TAR}","digest":"{l1}"}}"#),
            format!("layer 2 {l1}: descriptor without \"size\""),
        ),
        (
            format!(
                r#"{{"mediaType":"{TAR}","digest":"sha256:{}","size":1}}"#,
                "A".repeat(64)
            ),
            "not sha256:<64 lower-case hex>".to_string(),
        ),
    ] {
        let e = refused(t.path(), &manifest(&cfg, &second));
        assert!(e.contains(&says), "{second}: {e}");
    }
    let second = format!(r#"{{"mediaType":"{TAR}","digest":"{l1}","size":{size1}}}"#);
    // a config blob whose bytes are not the digest its descriptor names
    let fake = sha256_hex(b"another config");
    std::fs::copy(
        layout.join("blobs/sha256").join(&c["sha256:".len()..]),
        layout.join("blobs/sha256").join(&fake),
    )
    .unwrap();
    let lying = format!(
        r#"{{"mediaType":"{MT_OCI_CONFIG}","digest":"sha256:{fake}","size":{}}}"#,
        config.size
    );
    let e = refused(t.path(), &manifest(&lying, &second));
    assert!(
        e.contains(&format!("config: blob sha256:{fake}: digest mismatch")),
        "{e}"
    );
    // a config with one diffID for two layers
    let (short, _) = layers_and_config(&layout, &[BASE, TOP], Some(1));
    let cfg = format!(
        r#"{{"mediaType":"{MT_OCI_CONFIG}","digest":"{}","size":{}}}"#,
        short.digest, short.size
    );
    let e = refused(t.path(), &manifest(&cfg, &second));
    assert!(
        e.contains("the manifest lists 2 layers but the config 1 diffIDs"),
        "{e}"
    );
    // a config without rootfs names its blob and the field
    let bare = br#"{"architecture":"amd64","os":"linux"}"#;
    let bare = desc(MT_OCI_CONFIG, put_blob(&layout, bare), bare);
    let cfg = format!(
        r#"{{"mediaType":"{MT_OCI_CONFIG}","digest":"{}","size":{}}}"#,
        bare.digest, bare.size
    );
    let e = refused(t.path(), &manifest(&cfg, &second));
    assert!(
        e.contains(&format!("blob {}: config: no \"rootfs\"", bare.digest)),
        "{e}"
    );
    assert!(
        !t.path()
            .join("repo/.layers")
            .read_dir()
            .is_ok_and(|mut d| d.any(|e| e.unwrap().file_name() != ".cvmfscatalog")),
        "nothing half-written"
    );
}

/// `cvmfs-podman owners` reads a layer's owners from its blob alone (tar
/// headers, nothing unpacked): entries not owned by root are listed, and a
/// blob that is not the one the manifest names is refused.
#[test]
fn owners_come_from_the_blobs_tar_headers() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("oci");
    let spec = "dir /home 0755\ndir /home/u 0700 1000:1000\nfile /home/u/f 0640 1000:2000 \"x\\n\"\nfile /etc/b 0644 \"b\\n\"\n";
    let (config, layers) = layers_and_config(&layout, &[spec], None);
    let manifest =
        serde_json::to_vec(&ManifestDocument::new(MT_OCI_MANIFEST, &config, &layers)).unwrap();
    layout_with_manifest(&layout, &manifest);
    let registry = RegistryOptions {
        tls_verify: true,
        limits: TransferLimits::default(),
    };
    let src = source::open(
        &format!("oci:{}:t", layout.display()),
        Platform::host(),
        registry,
    )
    .unwrap();
    let json = publish::owners_from_blob(src.as_ref(), &layers[0])
        .unwrap()
        .unwrap();
    let owners = cvmfs_format::ownership::parse_owners(&json).unwrap();
    let got: Vec<(String, u32, u32)> = owners
        .iter()
        .map(|o| (o.path.display().to_string(), o.uid, o.gid))
        .collect();
    assert_eq!(
        got,
        [
            ("home/u".to_string(), 1000, 1000),
            ("home/u/f".to_string(), 1000, 2000)
        ]
    );
    // the same bytes under another digest: refused
    let hex = &layers[0].digest["sha256:".len()..];
    let blob = layout.join("blobs/sha256").join(hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let e = publish::owners_from_blob(src.as_ref(), &layers[0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("digest") || e.contains("mismatch"), "{e}");
}
