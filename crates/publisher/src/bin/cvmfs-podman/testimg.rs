//! Hidden helper `cvmfs-podman make-oci`: build an OCI image layout from layer
//! specs (`cvmfs_publisher::layer_spec`), for tests and benchmarks. Raw tar
//! files (`*.tar`) are taken as they are, so hostile archives can be packed too.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use cvmfs_publisher::blob::sha256_hex;
use cvmfs_publisher::oci::{
    self, Descriptor, DescriptorDocument, ManifestDocument, Parsed, MT_OCI_CONFIG, MT_OCI_MANIFEST,
};
use cvmfs_publisher::source::Platform;
use cvmfs_publisher::{layer_spec, Error, Result};
use serde::Serialize;

#[derive(Args)]
pub struct MakeOciArgs {
    dir: PathBuf,
    #[arg(long, default_value = "latest")]
    tag: String,
    #[arg(long, default_value = "gzip")]
    compression: String,
    layers: Vec<PathBuf>,
}

/// The annotation an OCI layout's index names an image's tag with.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The image config written (keys sorted, as `json!` wrote them before).
#[derive(Serialize)]
struct ConfigDocument<'a> {
    architecture: &'a str,
    config: RunConfig,
    created: &'a str,
    history: Vec<History>,
    os: &'a str,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
struct RunConfig {
    #[serde(rename = "Cmd")]
    cmd: Vec<&'static str>,
}

#[derive(Serialize)]
struct History {
    created_by: String,
}

#[derive(Serialize)]
struct RootFs<'a> {
    diff_ids: &'a [String],
    #[serde(rename = "type")]
    kind: &'a str,
}

/// `index.json` as written.
#[derive(Serialize)]
struct IndexDocument<'a> {
    manifests: Vec<DescriptorDocument<'a>>,
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
}

fn put_blob(dir: &Path, data: &[u8]) -> Result<String> {
    let hex = sha256_hex(data);
    let p = dir.join("blobs/sha256").join(&hex);
    fs::create_dir_all(p.parent().unwrap()).map_err(|e| Error::io(&p, e))?;
    fs::write(&p, data).map_err(|e| Error::io(&p, e))?;
    Ok(format!("sha256:{hex}"))
}

/// The layer tar a spec file (or a raw `.tar`) gives.
fn layer_tar(l: &Path) -> Result<Vec<u8>> {
    if l.extension().is_some_and(|e| e == "tar") {
        return fs::read(l).map_err(|e| Error::io(l, e));
    }
    let text = fs::read_to_string(l).map_err(|e| Error::io(l, e))?;
    layer_spec::spec_to_tar(&text).map_err(|e| Error::msg(format!("{}: {e}", l.display())))
}

/// `tar` compressed as asked, and its layer media type.
fn compress(tar: Vec<u8>, compression: &str) -> Result<(Vec<u8>, &'static str)> {
    Ok(match compression {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&tar).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        "zstd" => (
            zstd::encode_all(&tar[..], 3).map_err(|e| Error::msg(e.to_string()))?,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        "none" => (tar, "application/vnd.oci.image.layer.v1.tar"),
        other => return Err(Error::msg(format!("unknown compression {other}"))),
    })
}

/// Put a JSON document in as a blob; its descriptor.
fn put_document(dir: &Path, doc: &impl Serialize, media_type: &str) -> Result<Descriptor> {
    let bytes = serde_json::to_vec(doc).expect("serializable");
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest: put_blob(dir, &bytes)?,
        size: bytes.len() as u64,
    })
}

/// The entries of the layout's `index.json` (none when there is none yet).
fn index_entries(dir: &Path) -> Result<Vec<oci::IndexEntry>> {
    let ip = dir.join("index.json");
    let Ok(bytes) = fs::read(&ip) else {
        return Ok(Vec::new());
    };
    match oci::parse_manifest(&bytes, None).map_err(|e| e.context(ip.display()))? {
        Parsed::Index(i) => Ok(i.manifests),
        Parsed::Manifest(_) => Err(Error::msg(format!("{}: not an index", ip.display()))),
    }
}

/// Write `index.json` with `entries`, and `oci-layout`.
fn write_index(dir: &Path, entries: &[oci::IndexEntry]) -> Result<()> {
    let manifests = entries
        .iter()
        .map(|e| DescriptorDocument {
            annotations: e
                .ref_name
                .as_deref()
                .map(|t| BTreeMap::from([(REF_NAME, t)])),
            ..DescriptorDocument::from(&e.descriptor)
        })
        .collect();
    let index = IndexDocument {
        manifests,
        schema_version: 2,
    };
    let ip = dir.join("index.json");
    fs::write(&ip, serde_json::to_vec(&index).expect("serializable"))
        .map_err(|e| Error::io(&ip, e))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| Error::io(dir, e))
}

/// `cvmfs-podman make-oci`: add image `tag` made of `layers` to the layout in
/// `dir` (replacing one of that tag); prints the manifest digest.
pub fn run(a: &MakeOciArgs) -> Result<()> {
    let dir = &a.dir;
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for l in &a.layers {
        let tar = layer_tar(l)?;
        diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
        let (blob, media_type) = compress(tar, &a.compression)?;
        layers.push(Descriptor {
            media_type: media_type.to_string(),
            digest: put_blob(dir, &blob)?,
            size: blob.len() as u64,
        });
    }
    let host = Platform::host();
    let config = ConfigDocument {
        architecture: &host.arch,
        config: RunConfig {
            cmd: vec!["/bin/sh"],
        },
        created: "2023-11-14T22:13:20Z",
        history: a
            .layers
            .iter()
            .map(|l| History {
                created_by: l.display().to_string(),
            })
            .collect(),
        os: "linux",
        rootfs: RootFs {
            diff_ids: &diff_ids,
            kind: "layers",
        },
    };
    let config = put_document(dir, &config, MT_OCI_CONFIG)?;
    let manifest = ManifestDocument::new(MT_OCI_MANIFEST, &config, &layers);
    let manifest = put_document(dir, &manifest, MT_OCI_MANIFEST)?;
    let mut entries = index_entries(dir)?;
    entries.retain(|m| m.ref_name.as_deref() != Some(a.tag.as_str()));
    entries.push(oci::IndexEntry {
        descriptor: manifest.clone(),
        platform: None,
        ref_name: Some(a.tag.clone()),
    });
    write_index(dir, &entries)?;
    println!("{}", manifest.digest);
    Ok(())
}
