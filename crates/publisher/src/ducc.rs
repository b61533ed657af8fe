//! The metadata files of DUCC's layout (ARCHITECTURE §3), byte-compatible in field
//! names and nesting with what DUCC writes.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{fsx, Error, Result};

/// Most bytes an `origin.json` may have (some 200 000 images; more is not a
/// record we wrote).
pub const MAX_ORIGIN_BYTES: u64 = 16 << 20;

/// One element of `.layers/XX/<d>/.metadata/layers.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// diffID hex.
    pub id: String,
    pub created: String,
    #[serde(rename = "compressed-diff-digest")]
    pub compressed_diff_digest: String,
    #[serde(rename = "diff-digest")]
    pub diff_digest: String,
    #[serde(rename = "diff-size")]
    pub diff_size: u64,
}

/// `.layers/XX/<d>/.metadata/origin.json`: the configs of images using the layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub origin: Vec<String>,
}

/// A descriptor in DUCC's re-marshalled manifest (Go field names, no JSON tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Descriptor {
    pub media_type: String,
    pub size: i64,
    pub digest: String,
}

/// `.metadata/<registry>/<repository>:<tag>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Manifest {
    pub schema_version: i64,
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// `layers.json` text: a one-element array, indented.
pub fn layers_json(info: &LayerInfo) -> String {
    serde_json::to_string_pretty(&[info]).expect("serializable") + "\n"
}

pub fn origin_json(o: &Origin) -> String {
    serde_json::to_string(o).expect("serializable")
}

/// A layer directory's `origin.json` (`None`: there is none). Refused, with the
/// file named: a symlink, a non-regular file, an oversized one, one that does
/// not parse or names something that is not a `sha256:<hex>` config digest.
pub fn read_origin(path: &Path) -> Result<Option<Origin>> {
    let bytes = match fsx::read_record(path, MAX_ORIGIN_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let o: Origin = serde_json::from_slice(&bytes)
        .map_err(|e| Error::msg(format!("{}: not an origin.json: {e}", path.display())))?;
    if let Some(bad) = o.origin.iter().find(|c| super::digest_hex(c).is_err()) {
        return Err(Error::msg(format!(
            "{}: {bad:?} is not a sha256:<hex> image config digest",
            path.display()
        )));
    }
    Ok(Some(o))
}

/// Make `<layer dir>/.metadata/origin.json` name every config of `configs`,
/// keeping what it names already. Call it under the publisher lock (it is a
/// read-modify-write). A file [`read_origin`] refuses is rebuilt from
/// `configs` alone: the reason is returned so the caller can say so.
pub fn ensure_origin(layer_dir: &Path, configs: &BTreeSet<String>) -> Result<Option<String>> {
    let meta = layer_dir.join(".metadata");
    if let Ok(md) = std::fs::symlink_metadata(&meta) {
        if !md.is_dir() {
            return Err(Error::msg(format!(
                "{}: not a directory (a symlink?): origin.json is not written through it",
                meta.display()
            )));
        }
    }
    let path = meta.join("origin.json");
    let (mut o, repaired) = match read_origin(&path) {
        Ok(o) => (o.unwrap_or_default(), None),
        Err(e) => (Origin::default(), Some(e.to_string())),
    };
    let before = o.origin.len();
    for c in configs {
        if !o.origin.contains(c) {
            o.origin.push(c.clone());
        }
    }
    if o.origin.len() != before || repaired.is_some() {
        fsx::write_atomic(&path, origin_json(&o).as_bytes(), 0o644)?;
    }
    Ok(repaired)
}

pub fn manifest_json(m: &Manifest) -> String {
    serde_json::to_string(m).expect("serializable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_are_capitalised() {
        let m = Manifest {
            schema_version: 2,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config: Descriptor {
                media_type: "c".into(),
                size: 1,
                digest: "sha256:x".into(),
            },
            layers: vec![],
        };
        assert_eq!(
            manifest_json(&m),
            r#"{"SchemaVersion":2,"MediaType":"application/vnd.oci.image.manifest.v1+json","Config":{"MediaType":"c","Size":1,"Digest":"sha256:x"},"Layers":[]}"#
        );
    }

    #[test]
    fn layers_json_shape() {
        let i = LayerInfo {
            id: "d".into(),
            created: "t".into(),
            compressed_diff_digest: "sha256:c".into(),
            diff_digest: "sha256:d".into(),
            diff_size: 3,
        };
        let v: serde_json::Value = serde_json::from_str(&layers_json(&i)).unwrap();
        assert_eq!(v[0]["compressed-diff-digest"], "sha256:c");
        assert_eq!(v[0]["diff-size"], 3);
        assert_eq!(v.as_array().unwrap().len(), 1);
    }
}
