//! tar-split files (`<id>.tar-split.gz`, named by
//! [`tar_split_file_name`](crate::paths::tar_split_file_name)): gzip of JSON
//! lines in the format of github.com/vbatts/tar-split (`tar/storage`), which
//! containers/storage reads to rebuild a layer's tar for `podman push` and
//! `save`. One [`TarSplitEntry`] per line: raw segments (headers, padding)
//! and file entries whose content is read back from the layer directory.
//! Written by the publisher's recorder, read by containers/storage and by
//! `cvmfs-podman check --deep`.

use serde::{Deserialize, Serialize};

/// `type` of a file entry: its content comes from the layer's file.
pub const ENTRY_FILE: u8 = 1;
/// `type` of a raw segment: `payload` holds the archive's bytes.
pub const ENTRY_SEGMENT: u8 = 2;

/// One line of a tar-split. Fields in alphabetical order, as the publisher
/// has always written them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarSplitEntry {
    /// A file entry's name, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A file entry's name as base64 bytes, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<String>,
    /// A segment's bytes, or a file's CRC-64/ISO (big endian), base64; a file
    /// entry without content has `null`.
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub position: u64,
    /// A file entry's content size (left out when 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(rename = "type", default)]
    pub kind: u8,
}

impl TarSplitEntry {
    /// A raw segment with base64 `payload`.
    pub fn segment(payload: String, position: u64) -> TarSplitEntry {
        TarSplitEntry {
            name: None,
            name_raw: None,
            payload: Some(payload),
            position,
            size: None,
            kind: ENTRY_SEGMENT,
        }
    }

    /// The JSON line (without its newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_byte_compatible() {
        assert_eq!(
            TarSplitEntry::segment("AAA=".into(), 0).to_json(),
            r#"{"payload":"AAA=","position":0,"type":2}"#
        );
        let file = TarSplitEntry {
            name: Some("etc/f".into()),
            name_raw: None,
            payload: None,
            position: 1,
            size: Some(3),
            kind: ENTRY_FILE,
        };
        let text = file.to_json();
        assert_eq!(
            text,
            r#"{"name":"etc/f","payload":null,"position":1,"size":3,"type":1}"#
        );
        assert_eq!(serde_json::from_str::<TarSplitEntry>(&text).unwrap(), file);
    }
}
