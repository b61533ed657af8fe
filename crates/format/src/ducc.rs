//! The metadata files of DUCC's layout, byte-compatible in field names and
//! nesting with what DUCC writes:
//!
//! * `.layers/XX/<d>/.metadata/layers.json` — [`LayerInfo`], a one-element
//!   indented array ([`layers_json`]);
//! * `.layers/XX/<d>/.metadata/origin.json` — [`Origin`], the config digests
//!   of the images using the layer ([`origin_json`], read with
//!   [`parse_origin`], at most [`MAX_ORIGIN_BYTES`]);
//! * `.metadata/<registry>/<repository>:<tag>/manifest.json` — [`Manifest`],
//!   DUCC's re-marshalled manifest ([`manifest_json`], at most
//!   [`MANIFEST_COPY_MAX_BYTES`]).

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};

/// Most bytes an `origin.json` may have (some 200 000 images; more is not a
/// record a publisher wrote).
pub const MAX_ORIGIN_BYTES: u64 = 16 << 20;

/// Most bytes a manifest copy may have.
pub const MANIFEST_COPY_MAX_BYTES: u64 = 4 << 20;

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

/// `origin.json` text.
pub fn origin_json(o: &Origin) -> String {
    serde_json::to_string(o).expect("serializable")
}

/// `manifest.json` text.
pub fn manifest_json(m: &Manifest) -> String {
    serde_json::to_string(m).expect("serializable")
}

/// Parse an `origin.json` (hostile input): it must parse and name only
/// `sha256:<hex>` config digests.
pub fn parse_origin(bytes: &[u8]) -> Result<Origin> {
    if bytes.len() as u64 > MAX_ORIGIN_BYTES {
        return Err(FormatError::new(format!(
            "larger than {MAX_ORIGIN_BYTES} bytes"
        )));
    }
    let o: Origin = serde_json::from_slice(bytes)
        .map_err(|e| FormatError::new(format!("not an origin.json: {e}")))?;
    if let Some(bad) = o.origin.iter().find(|c| crate::id::digest_hex(c).is_err()) {
        return Err(
            FormatError::new(format!("{bad:?} is not a sha256:<hex> image config digest"))
                .field("origin"),
        );
    }
    Ok(o)
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
        let text = layers_json(&i);
        assert_eq!(
            text,
            "[\n  {\n    \"id\": \"d\",\n    \"created\": \"t\",\n    \"compressed-diff-digest\": \"sha256:c\",\n    \"diff-digest\": \"sha256:d\",\n    \"diff-size\": 3\n  }\n]\n"
        );
        let back: Vec<LayerInfo> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec![i]);
    }

    #[test]
    fn origins_name_config_digests_only() {
        let o = Origin {
            origin: vec![crate::id::sha256_digest(&"ab".repeat(32))],
        };
        assert_eq!(parse_origin(origin_json(&o).as_bytes()).unwrap(), o);
        let e = parse_origin(br#"{"origin":["sha256:../x"]}"#).unwrap_err();
        assert!(e.to_string().contains("is not a sha256:<hex>"), "{e}");
        assert!(parse_origin(b"[]")
            .unwrap_err()
            .to_string()
            .contains("not an origin.json"));
    }
}
