//! `ownership.json`: the image's owners of a layer whose `layerfs` lost them
//! (DUCC ingests without keeping ownership; so does an unprivileged
//! publisher). Beside the record as `cvmfs/layers/<id>/ownership.json`, and
//! per blob as `cvmfs/tar-split/<d>.ownership.json`.
//!
//! ```json
//! {"entries":[{"gid":1000,"path":"home/u","uid":1000}],"version":1}
//! ```
//!
//! Writer: [`OwnershipFile::to_json`]. Reader: [`parse_owners`]. Limits:
//! [`OWNERSHIP_MAX_BYTES`], [`MAX_OWNER_ENTRIES`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::capped::CappedSeq;
use crate::error::{FormatError, Result};
use crate::markers::WHITEOUT_PREFIX;

/// Version of `ownership.json` written and read.
pub const OWNERSHIP_VERSION: u32 = 1;

/// Largest ownership file read (it comes from outside): room for
/// [`MAX_OWNER_ENTRIES`] entries of ordinary path lengths.
pub const OWNERSHIP_MAX_BYTES: u64 = 32 << 20;

/// Most entries one ownership file may hold (one per file of the layer not
/// owned 0:0; each costs a metadata copy in a whiteout layer).
pub const MAX_OWNER_ENTRIES: usize = 500_000;

/// The image's owner of one entry of a layer whose repository lost ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// One entry as written (fields in the order the file has always had them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerEntry {
    pub gid: u32,
    pub path: String,
    pub uid: u32,
}

/// The file as written by the publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipFile {
    #[serde(deserialize_with = "deserialize_owner_entries")]
    pub entries: Vec<OwnerEntry>,
    pub version: u32,
}

fn deserialize_owner_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<OwnerEntry>, D::Error> {
    d.deserialize_seq(CappedSeq::new(MAX_OWNER_ENTRIES, "field \"entries\""))
}

impl OwnershipFile {
    /// A file listing `entries` (those not owned 0:0), this version.
    pub fn new(entries: Vec<OwnerEntry>) -> OwnershipFile {
        OwnershipFile {
            entries,
            version: OWNERSHIP_VERSION,
        }
    }

    /// The file's bytes: compact JSON, checked to be what [`parse_owners`]
    /// accepts (a writer must never produce a file the driver refuses).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(self).expect("serializable");
        parse_owners(&bytes).map_err(|e| {
            FormatError::new(format!(
                "the ownership file built would be refused by the driver: {}",
                e.message
            ))
        })?;
        Ok(bytes)
    }
}

/// Parse and validate an ownership file (hostile input): version 1, every path
/// relative, made of plain names (no `.`, `..`, empty or `.wh.*` component,
/// no NUL), listed once, owners below 2^32-1. Entries owned 0:0 may be left
/// out. Returned sorted by path bytes: parents before children.
pub fn parse_owners(bytes: &[u8]) -> Result<Vec<Owner>> {
    if bytes.len() as u64 > OWNERSHIP_MAX_BYTES {
        return Err(FormatError::new(format!(
            "larger than {OWNERSHIP_MAX_BYTES} bytes"
        )));
    }
    let file: OwnershipFile = serde_json::from_slice(bytes)
        .map_err(|e| FormatError::new(format!("malformed or truncated JSON: {e}")))?;
    if file.version != OWNERSHIP_VERSION {
        return Err(FormatError::new(format!(
            "version {} is not supported (this driver reads version {OWNERSHIP_VERSION})",
            file.version
        ))
        .field("version"));
    }
    let mut entries = file.entries;
    for (i, e) in entries.iter().enumerate() {
        check_entry(e)
            .map_err(|why| FormatError::new(format!("entry {i} ({:?}): {why}", e.path)))?;
    }
    // Byte order puts every path right after its ancestors' ("a" < "a-b" <
    // "a/b"): parents before children, so a directory's own entry makes it,
    // and equal paths side by side.
    entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(FormatError::new(format!(
            "entry {:?}: listed twice",
            w[0].path
        )));
    }
    Ok(entries
        .into_iter()
        .map(|e| Owner {
            path: PathBuf::from(e.path),
            uid: e.uid,
            gid: e.gid,
        })
        .collect())
}

/// Why entry `e` is not one the driver can apply.
fn check_entry(e: &OwnerEntry) -> std::result::Result<(), &'static str> {
    if e.path.is_empty() || e.path.starts_with('/') || e.path.contains('\0') {
        return Err("not a relative path");
    }
    for c in e.path.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err("path component is empty, \".\" or \"..\"");
        }
        if c.starts_with(WHITEOUT_PREFIX) {
            return Err("names a whiteout marker");
        }
    }
    if e.uid == u32::MAX || e.gid == u32::MAX {
        return Err("owner ID 4294967295 is invalid");
    }
    Ok(())
}

/// Version of a record's `owner-probes` field written and read. A record
/// whose probes carry another version is read without them (the driver then
/// falls back as for records from before the field existed).
pub const OWNER_PROBES_VERSION: u32 = 1;

/// Most entries one `owner-probes` field may hold: the driver stats each at
/// the first use of the layer, so the list stays a handful.
pub const MAX_OWNER_PROBES: usize = 8;

/// A record's `owner-probes`: the owners a few entries of the layer directory
/// have **as published** (what a client that does not claim ownership
/// reports), so that the driver can tell, with one `stat` per entry, whether
/// the client it reads through shows the repository's owners
/// (`CVMFS_CLAIM_OWNERSHIP=yes` shows every file as the client's own).
/// `path` `""` is the layer root.
///
/// ```json
/// "owner-probes":{"entries":[{"gid":0,"path":"","uid":0},
///                            {"gid":1000,"path":"home/u","uid":1000}],"version":1}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerProbes {
    #[serde(deserialize_with = "deserialize_probe_entries")]
    pub entries: Vec<OwnerEntry>,
    pub version: u32,
}

fn deserialize_probe_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<OwnerEntry>, D::Error> {
    d.deserialize_seq(CappedSeq::new(
        MAX_OWNER_PROBES,
        "field \"owner-probes\" \"entries\"",
    ))
}

impl OwnerProbes {
    /// Probes of `entries` (at most [`MAX_OWNER_PROBES`]), this version.
    pub fn new(entries: Vec<OwnerEntry>) -> OwnerProbes {
        OwnerProbes {
            entries,
            version: OWNER_PROBES_VERSION,
        }
    }

    /// The entries, checked: paths relative and plain (or `""`, the layer
    /// root), each once, owners below 2^32-1, at most [`MAX_OWNER_PROBES`].
    pub fn checked(&self) -> Result<Vec<Owner>> {
        if self.entries.len() > MAX_OWNER_PROBES {
            return Err(FormatError::new(format!(
                "more than {MAX_OWNER_PROBES} entries"
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            let why = if e.path.is_empty() {
                (e.uid == u32::MAX || e.gid == u32::MAX).then_some("owner ID 4294967295 is invalid")
            } else {
                check_entry(e).err()
            };
            if let Some(why) = why {
                return Err(FormatError::new(format!("entry {i} ({:?}): {why}", e.path)));
            }
            if !seen.insert(e.path.as_str()) {
                return Err(FormatError::new(format!(
                    "entry {:?}: listed twice",
                    e.path
                )));
            }
        }
        Ok(self
            .entries
            .iter()
            .map(|e| Owner {
                path: PathBuf::from(&e.path),
                uid: e.uid,
                gid: e.gid,
            })
            .collect())
    }
}

/// A record's `owner-probes` value as read (hostile): `Ok(None)` when its
/// version is not [`OWNER_PROBES_VERSION`] (a newer publisher's: ignored,
/// never fatal to the record), an error naming what is wrong otherwise.
pub fn parse_owner_probes(value: &serde_json::Value) -> Result<Option<OwnerProbes>> {
    let version = value.get("version").and_then(|v| v.as_u64());
    if version.is_some() && version != Some(OWNER_PROBES_VERSION as u64) {
        return Ok(None);
    }
    let probes: OwnerProbes = serde_json::from_value(value.clone())
        .map_err(|e| FormatError::new(format!("malformed: {e}")))?;
    probes.checked()?;
    Ok(Some(probes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, uid: u32, gid: u32) -> OwnerEntry {
        OwnerEntry {
            gid,
            path: path.into(),
            uid,
        }
    }

    #[test]
    fn the_file_is_byte_compatible_and_read_back_sorted() {
        let f = OwnershipFile::new(vec![entry("b", 1, 2), entry("a/c", 3, 4)]);
        let text = f.to_json().unwrap();
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            r#"{"entries":[{"gid":2,"path":"b","uid":1},{"gid":4,"path":"a/c","uid":3}],"version":1}"#
        );
        let o = parse_owners(&text).unwrap();
        assert_eq!(o[0].path, PathBuf::from("a/c"));
        assert_eq!((o[1].uid, o[1].gid), (1, 2));
        assert_eq!(
            OwnershipFile::new(vec![]).to_json().unwrap(),
            br#"{"entries":[],"version":1}"#
        );
    }

    #[test]
    fn hostile_files_are_refused() {
        for (f, needle) in [
            (OwnershipFile::new(vec![entry("../x", 1, 1)]), "\"..\""),
            (OwnershipFile::new(vec![entry("a/.wh.b", 1, 1)]), "whiteout"),
            (OwnershipFile::new(vec![entry("a", u32::MAX, 1)]), "invalid"),
            (
                OwnershipFile::new(vec![entry("a", 1, 1), entry("a", 2, 2)]),
                "listed twice",
            ),
        ] {
            let e = f.to_json().unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("would be refused"), "{e}");
        }
        let e = parse_owners(br#"{"version":2,"entries":[]}"#).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        let e = parse_owners(br#"{"version":1,"entries":[],"x":1}"#).unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
    }
}

#[cfg(test)]
mod owner_file_tests {
    use super::*;

    #[test]
    fn owners_parse_sorted_parents_first() {
        let o = parse_owners(
            br#"{"version":1,"entries":[{"path":"a-c","uid":1,"gid":2},{"path":"a/b","uid":3,"gid":4},{"path":"a","uid":5,"gid":6}]}"#,
        )
        .unwrap();
        let paths: Vec<_> = o.iter().map(|o| o.path.display().to_string()).collect();
        assert_eq!(paths, vec!["a", "a-c", "a/b"]);
        assert_eq!((o[2].uid, o[2].gid), (3, 4));
    }

    #[test]
    fn hostile_owner_files_are_refused() {
        for (text, needle) in [
            (&b"{"[..], "truncated"),
            (br#"{"version":1}"#, "missing field"),
            (
                br#"{"version":1,"entries":[{"path":"a//b","uid":1,"gid":1}]}"#,
                "empty",
            ),
            (
                br#"{"version":1,"entries":[{"path":"a/./b","uid":1,"gid":1}]}"#,
                "\".\"",
            ),
            (
                br#"{"version":1,"entries":[{"path":"a/\u0000","uid":1,"gid":1}]}"#,
                "relative",
            ),
            (
                br#"{"version":1,"entries":[{"path":"x","uid":1,"gid":4294967295}]}"#,
                "invalid",
            ),
            (
                br#"{"version":1,"entries":[{"path":"x","uid":1,"gid":1,"mode":7}]}"#,
                "unknown field",
            ),
        ] {
            let e = parse_owners(text).unwrap_err();
            assert!(
                e.to_string().contains(needle),
                "{}: {e}",
                String::from_utf8_lossy(text)
            );
        }
        let big = vec![b' '; (OWNERSHIP_MAX_BYTES + 1) as usize];
        assert!(parse_owners(&big)
            .unwrap_err()
            .to_string()
            .contains("larger than"));
    }

    #[test]
    fn ownership_files_are_capped_while_read() {
        let mut b = br#"{"version":1,"entries":["#.to_vec();
        for i in 0..=MAX_OWNER_ENTRIES {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(br#"{"path":"a","uid":1,"gid":1}"#);
            let _ = i;
        }
        b.extend_from_slice(b"]}");
        let e = parse_owners(&b).unwrap_err();
        assert!(
            e.to_string().contains("more than 500000 entries")
                || e.to_string().contains("larger than"),
            "{e}"
        );
    }
}
