//! Hidden helper `cvmfs-podman make-oci`: build an OCI image layout from layer
//! specs (`cvmfs_publisher::layer_spec`), for tests and benchmarks. Raw tar
//! files (`*.tar`) are taken as they are, so hostile archives can be packed too.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use cvmfs_publisher::layer_spec;
use cvmfs_publisher::{Error, Result};
use serde_json::json;

use crate::publish::sha256_hex;

fn put_blob(dir: &Path, data: &[u8]) -> Result<String> {
    let hex = sha256_hex(data);
    let p = dir.join("blobs/sha256").join(&hex);
    fs::create_dir_all(p.parent().unwrap()).map_err(|e| Error::io(&p, e))?;
    fs::write(&p, data).map_err(|e| Error::io(&p, e))?;
    Ok(format!("sha256:{hex}"))
}

pub fn make_oci(dir: &Path, tag: &str, layers: &[PathBuf], compression: &str) -> Result<()> {
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for l in layers {
        let tar = if l.extension().is_some_and(|e| e == "tar") {
            fs::read(l).map_err(|e| Error::io(l, e))?
        } else {
            let text = fs::read_to_string(l).map_err(|e| Error::io(l, e))?;
            layer_spec::spec_to_tar(&text)
                .map_err(|e| Error::msg(format!("{}: {e}", l.display())))?
        };
        diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
        let (blob, mt) = match compression {
            "gzip" => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
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
        };
        let d = put_blob(dir, &blob)?;
        descs.push(json!({"mediaType": mt, "size": blob.len(), "digest": d}));
    }
    let host = crate::source::Platform::host();
    let config = json!({
        "created": "2023-11-14T22:13:20Z",
        "architecture": host.arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|l| json!({"created_by": l.display().to_string()})).collect::<Vec<_>>(),
    });
    let cbytes = serde_json::to_vec(&config).unwrap();
    let cd = put_blob(dir, &cbytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": cbytes.len(), "digest": cd},
        "layers": descs,
    });
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(dir, &mbytes)?;
    let ip = dir.join("index.json");
    let mut index: serde_json::Value = fs::read(&ip)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "manifests": []}));
    let list = index["manifests"].as_array_mut().unwrap();
    list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    list.push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": mbytes.len(),
        "digest": md,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    fs::write(&ip, serde_json::to_vec(&index).unwrap()).map_err(|e| Error::io(&ip, e))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| Error::io(dir, e))?;
    println!("{md}");
    Ok(())
}
