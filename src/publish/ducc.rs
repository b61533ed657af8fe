//! The metadata files of DUCC's layout (ARCHITECTURE §3), byte-compatible in field
//! names and nesting with what DUCC writes.

use serde::{Deserialize, Serialize};

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
