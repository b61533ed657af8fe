//! `layer.json`: a layer's record. Two kinds share the file name:
//!
//! * `"cvmfs"` — permanent, in a repository's image store
//!   (`podmanStore/cvmfs/layers/<id>/layer.json`), written by the publisher
//!   ([`CvmfsRecord::to_json`]) and read by the driver
//!   ([`parse_store_record`]), version [`CVMFS_RECORD_VERSION`]:
//!
//!   ```json
//!   {"flat":".flat/cd/<c>","kind":"cvmfs","markers":[".wh.gone"],
//!    "ownership":"kept","parent":"<id>"|null,"path":".layers/ab/<d>/layerfs",
//!    "repository":"/cvmfs/unpacked.cern.ch","version":1,"whiteouts":"oci-raw"}
//!   ```
//!
//!   `markers`, `flat` and `owner-probes`
//!   ([`OwnerProbes`](crate::ownership::OwnerProbes)) are optional (records
//!   from before they existed lack them, and are read as before).
//! * `"local"` — the driver home's own (`<home>/layers/<id>/layer.json`),
//!   written and read by the driver ([`LocalRecord`]), version
//!   [`LOCAL_RECORD_VERSION`]. A driver home used as an additional store is
//!   read through [`parse_store_record`] too.
//!
//! Both are bounded by [`RECORD_MAX_BYTES`].

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::id::validate_store_layer_id;
use crate::markers::{deserialize_marker_list, parse_marker_list, Marker, MarkerList};
use crate::ownership::{parse_owner_probes, OwnerProbes};

/// Version of the `"cvmfs"` records published into repositories. They are
/// permanent (a repository keeps them for years): a new version must still
/// read every older one.
pub const CVMFS_RECORD_VERSION: u32 = 1;

/// Version of the driver home's `"local"` records: local state, rewritten by
/// the driver that owns the home.
pub const LOCAL_RECORD_VERSION: u32 = 1;

/// Largest `layer.json` read, of either kind. Records come from outside, and
/// a marker list is the only part that grows with the layer (its
/// [`MAX_LISTED_MARKERS`](crate::markers::MAX_LISTED_MARKERS) entries of
/// ordinary lengths fit in a few MiB). A larger file is refused unparsed.
pub const RECORD_MAX_BYTES: u64 = 4 << 20;

/// How a CVMFS layer directory encodes deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Whiteouts {
    /// 0/0 character devices and `trusted.overlay.opaque` (usable as an overlay lower).
    #[serde(rename = "overlay")]
    Overlay,
    /// Raw OCI `.wh.*` regular files, as DUCC leaves them.
    #[serde(rename = "oci-raw")]
    OciRaw,
}

impl Whiteouts {
    const ALL: [Whiteouts; 2] = [Whiteouts::Overlay, Whiteouts::OciRaw];

    pub fn as_str(self) -> &'static str {
        match self {
            Whiteouts::Overlay => "overlay",
            Whiteouts::OciRaw => "oci-raw",
        }
    }
}

/// Whether file ownership in the layer directory is the image's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ownership {
    #[serde(rename = "kept")]
    Kept,
    /// Every file is owned by the repository owner (DUCC ingests without
    /// keep-ownership); an `ownership.json` beside the record may restore them.
    #[serde(rename = "lost")]
    Lost,
}

impl Ownership {
    const ALL: [Ownership; 2] = [Ownership::Kept, Ownership::Lost];

    pub fn as_str(self) -> &'static str {
        match self {
            Ownership::Kept => "kept",
            Ownership::Lost => "lost",
        }
    }
}

/// The `kind` of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Cvmfs,
    Local,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Cvmfs => "cvmfs",
            RecordKind::Local => "local",
        }
    }
}

/// A `"cvmfs"` record: the layer's files are a directory of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CvmfsRecord {
    /// The repository's absolute path (as mounted where the driver runs).
    pub repository: String,
    /// The layer's directory, relative to the repository
    /// ([`crate::paths::layerfs_rel`]).
    pub path: String,
    pub parent: Option<String>,
    pub whiteouts: Whiteouts,
    pub ownership: Ownership,
    /// Every raw whiteout marker of the layer (only with
    /// [`Whiteouts::OciRaw`]); `None`: the driver looks for them.
    pub markers: Option<MarkerList>,
    /// The flat root filesystem of this layer's whole chain, relative to the
    /// repository ([`crate::paths::flat_rel`]), when the publisher built it.
    pub flat: Option<String>,
    /// The owners of a few entries of the layer directory as published
    /// ([`OwnerProbes`]), for the driver to detect a client that reports
    /// other owners (`CVMFS_CLAIM_OWNERSHIP=yes`).
    pub owner_probes: Option<OwnerProbes>,
}

/// The record as serialized: fields in the order the publisher has always
/// written them (alphabetical), `parent` always present.
#[derive(Serialize)]
struct CvmfsRecordOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    flat: Option<&'a str>,
    kind: RecordKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    markers: Option<&'a MarkerList>,
    #[serde(rename = "owner-probes", skip_serializing_if = "Option::is_none")]
    owner_probes: Option<&'a OwnerProbes>,
    ownership: Ownership,
    parent: Option<&'a str>,
    path: &'a str,
    repository: &'a str,
    version: u32,
    whiteouts: Whiteouts,
}

impl CvmfsRecord {
    /// The file's text: compact JSON, byte for byte what every publisher
    /// version wrote for the same fields.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&CvmfsRecordOut {
            flat: self.flat.as_deref(),
            kind: RecordKind::Cvmfs,
            markers: self.markers.as_ref(),
            owner_probes: self.owner_probes.as_ref(),
            ownership: self.ownership,
            parent: self.parent.as_deref(),
            path: &self.path,
            repository: &self.repository,
            version: CVMFS_RECORD_VERSION,
            whiteouts: self.whiteouts,
        })
        .expect("serializable")
    }
}

/// A `"local"` record of the driver home (`<home>/layers/<id>/layer.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRecord {
    pub version: u32,
    /// Always [`RecordKind::Local`].
    pub kind: RecordKind,
    pub parent: Option<String>,
    pub read_write: bool,
    /// Name of the short link in `l/` pointing at this layer's `diff`.
    #[serde(default)]
    pub link: Option<String>,
}

impl LocalRecord {
    pub fn new(parent: Option<&str>, read_write: bool) -> LocalRecord {
        LocalRecord {
            version: LOCAL_RECORD_VERSION,
            kind: RecordKind::Local,
            parent: parent.map(str::to_string),
            read_write,
            link: None,
        }
    }

    /// The file's bytes (indented JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("layer record serialises")
    }

    /// Parse the driver home's record: JSON, version and kind checked (the
    /// parent is an ID of the caller's scheme, checked by the driver).
    pub fn parse(bytes: &[u8]) -> Result<LocalRecord> {
        let rec: LocalRecord = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::new(format!("malformed layer record: {e}")))?;
        if rec.version != LOCAL_RECORD_VERSION {
            return Err(FormatError::new(format!(
                "layer record version {} is not supported (this driver reads version {LOCAL_RECORD_VERSION})",
                rec.version
            ))
            .field("version"));
        }
        if rec.kind != RecordKind::Local {
            return Err(FormatError::new(format!(
                "layer record kind {:?} where \"local\" was expected",
                rec.kind.as_str()
            ))
            .field("kind"));
        }
        Ok(rec)
    }
}

/// A record read from an image store, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRecord {
    Cvmfs {
        record: CvmfsRecord,
        /// `record.markers`, parsed ([`parse_marker_list`]).
        markers: Option<Vec<Marker>>,
    },
    /// A sibling driver home used as a store: the files are in `diff` beside
    /// the record.
    Local { parent: Option<String> },
}

impl StoreRecord {
    pub fn parent(&self) -> Option<&str> {
        match self {
            StoreRecord::Cvmfs { record, .. } => record.parent.as_deref(),
            StoreRecord::Local { parent } => parent.as_deref(),
        }
    }
}

/// Any record as read from outside: every field optional, so that what is
/// missing or wrong is named by [`parse_store_record`].
#[derive(Deserialize)]
struct StoreRecordIn {
    version: u32,
    kind: String,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    whiteouts: Option<String>,
    #[serde(default)]
    ownership: Option<String>,
    #[serde(default, deserialize_with = "deserialize_marker_list")]
    markers: Option<Vec<String>>,
    #[serde(default)]
    flat: Option<String>,
    /// Kept as a value: a version this reader does not know is ignored.
    #[serde(default, rename = "owner-probes")]
    owner_probes: Option<serde_json::Value>,
}

fn err(message: impl Into<String>) -> FormatError {
    FormatError::new(message)
}

/// Parse and validate a store's `layer.json` (hostile input), with no
/// filesystem access: size, JSON, version, kind, parent ID, the paths
/// (repository absolute without `..`; `path` and `flat` relative, made of
/// plain names), the whiteout and ownership kinds, the marker list.
/// Whether the repository is one the driver may use is the driver's call.
pub fn parse_store_record(bytes: &[u8]) -> Result<StoreRecord> {
    if bytes.len() as u64 > RECORD_MAX_BYTES {
        return Err(err(format!("larger than {RECORD_MAX_BYTES} bytes")));
    }
    let raw: StoreRecordIn = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("malformed or truncated JSON: {e}")))?;
    let want = if raw.kind == RecordKind::Local.as_str() {
        LOCAL_RECORD_VERSION
    } else {
        CVMFS_RECORD_VERSION
    };
    if raw.version != want {
        return Err(err(format!(
            "record version {} is not supported (this driver reads version {want})",
            raw.version
        ))
        .field("version"));
    }
    let parent = match raw.parent.as_deref() {
        None | Some("") => None,
        Some(p) => {
            validate_store_layer_id(p).map_err(|e| e.context("parent").field("parent"))?;
            Some(p.to_string())
        }
    };
    let record = match raw.kind.as_str() {
        "local" => StoreRecord::Local {
            parent: parent.clone(),
        },
        "cvmfs" => StoreRecord::Cvmfs {
            record: cvmfs_fields(&raw, parent)?,
            markers: None,
        },
        other => return Err(err(format!("unknown layer kind {other:?}")).field("kind")),
    };
    let listed = match &raw.markers {
        None => None,
        Some(list) => Some(
            parse_marker_list(list).map_err(|e| e.context("field \"markers\"").field("markers"))?,
        ),
    };
    Ok(match record {
        StoreRecord::Cvmfs { record, .. } => StoreRecord::Cvmfs {
            record,
            markers: listed,
        },
        local => local,
    })
}

/// The fields of a `"cvmfs"` record, checked.
fn cvmfs_fields(raw: &StoreRecordIn, parent: Option<String>) -> Result<CvmfsRecord> {
    let repository = raw
        .repository
        .clone()
        .ok_or_else(|| err("field \"repository\" is missing").field("repository"))?;
    check_repository_path(&repository)?;
    let path = raw
        .path
        .clone()
        .ok_or_else(|| err("field \"path\" is missing").field("path"))?;
    check_relative("path", &path)?;
    if let Some(f) = &raw.flat {
        check_relative("flat", f)?;
    }
    let whiteouts = named(&Whiteouts::ALL, Whiteouts::as_str, raw.whiteouts.as_deref())
        .ok_or_else(|| {
            err(format!(
                "field \"whiteouts\" is {:?}, expected \"overlay\" or \"oci-raw\"",
                raw.whiteouts.as_deref()
            ))
            .field("whiteouts")
        })?;
    let ownership = named(&Ownership::ALL, Ownership::as_str, raw.ownership.as_deref())
        .ok_or_else(|| {
            err(format!(
                "field \"ownership\" is {:?}, expected \"kept\" or \"lost\"",
                raw.ownership.as_deref()
            ))
            .field("ownership")
        })?;
    if raw.markers.is_some() && whiteouts != Whiteouts::OciRaw {
        return Err(
            err("field \"markers\" is only meaningful with \"whiteouts\":\"oci-raw\"")
                .field("markers"),
        );
    }
    let owner_probes = match &raw.owner_probes {
        None => None,
        Some(v) => parse_owner_probes(v)
            .map_err(|e| e.context("field \"owner-probes\"").field("owner-probes"))?,
    };
    Ok(CvmfsRecord {
        repository,
        path,
        parent,
        whiteouts,
        ownership,
        markers: raw.markers.clone().map(MarkerList),
        flat: raw.flat.clone(),
        owner_probes,
    })
}

/// The value of `all` whose name is `name`.
fn named<T: Copy>(all: &[T], name_of: fn(T) -> &'static str, name: Option<&str>) -> Option<T> {
    all.iter().copied().find(|v| Some(name_of(*v)) == name)
}

/// A record's repository: absolute, without `..`.
fn check_repository_path(repository: &str) -> Result<()> {
    use std::path::{Component, Path};
    let p = Path::new(repository);
    if !p.is_absolute() {
        return Err(err(format!("repository {p:?} is not an absolute path")).field("repository"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(err(format!("repository {p:?} contains \"..\"")).field("repository"));
    }
    Ok(())
}

/// `rel` (field `field`) as a path inside a repository: relative and made of
/// plain names.
fn check_relative(field: &'static str, rel: &str) -> Result<()> {
    use std::path::{Component, Path};
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() {
        return Err(err(format!("{field} {rel:?} is not a relative path")).field(field));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(err(format!("{field} {rel:?} leaves the repository (\"..\")")).field(field));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{flat_rel, layerfs_rel};

    fn record() -> CvmfsRecord {
        CvmfsRecord {
            repository: "/cvmfs/r.example.org".into(),
            path: layerfs_rel(&"ab".repeat(32)),
            parent: None,
            whiteouts: Whiteouts::OciRaw,
            ownership: Ownership::Lost,
            markers: None,
            flat: None,
            owner_probes: None,
        }
    }

    #[test]
    fn cvmfs_records_are_byte_compatible_with_earlier_publishers() {
        let d = "ab".repeat(32);
        // What the publisher wrote with serde_json::json! (keys sorted).
        assert_eq!(
            record().to_json(),
            format!(
                r#"{{"kind":"cvmfs","ownership":"lost","parent":null,"path":".layers/ab/{d}/layerfs","repository":"/cvmfs/r.example.org","version":1,"whiteouts":"oci-raw"}}"#
            )
        );
        let full = CvmfsRecord {
            parent: Some("cd".repeat(32)),
            ownership: Ownership::Kept,
            markers: Some(MarkerList(vec![".wh.a".into()])),
            flat: Some(flat_rel(&"ef".repeat(32))),
            ..record()
        };
        let text = full.to_json();
        assert!(text.starts_with(r#"{"flat":".flat/ef/"#), "{text}");
        assert!(
            text.contains(r#""markers":[".wh.a"],"ownership":"kept""#),
            "{text}"
        );
        match parse_store_record(text.as_bytes()).unwrap() {
            StoreRecord::Cvmfs { record, markers } => {
                assert_eq!(record, full);
                assert_eq!(markers.unwrap().len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let good = record().to_json();
        for (text, needle, field) in [
            (
                good.replace("\"version\":1", "\"version\":2"),
                "version 2",
                "version",
            ),
            (
                good.replace("\"cvmfs\"", "\"zfs\""),
                "unknown layer kind",
                "kind",
            ),
            (
                good.replace("\"repository\"", "\"r\""),
                "\"repository\" is missing",
                "repository",
            ),
            (
                good.replace("\"oci-raw\"", "\"aufs\""),
                "\"whiteouts\"",
                "whiteouts",
            ),
            (
                good.replace("\"lost\"", "\"gone\""),
                "\"ownership\"",
                "ownership",
            ),
            (good.replace("null", "\"Base\""), "parent", "parent"),
            (
                good.replace("\".layers", "\"/.layers"),
                "not a relative path",
                "path",
            ),
            (
                good.replace("\".layers", "\"../.layers"),
                "leaves the repository",
                "path",
            ),
            (
                good.replace("\"/cvmfs", "\"cvmfs"),
                "not an absolute path",
                "repository",
            ),
        ] {
            let e = parse_store_record(text.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
            assert_eq!(e.field, Some(field), "{text}");
        }
        let overlay_with_markers = CvmfsRecord {
            whiteouts: Whiteouts::Overlay,
            markers: Some(MarkerList::default()),
            ..record()
        };
        let e = parse_store_record(overlay_with_markers.to_json().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("only meaningful"), "{e}");
        let big = vec![b' '; RECORD_MAX_BYTES as usize + 1];
        assert!(parse_store_record(&big)
            .unwrap_err()
            .to_string()
            .contains("larger than"));
    }

    #[test]
    fn owner_probes_round_trip_are_checked_and_newer_versions_ignored() {
        use crate::ownership::{OwnerEntry, MAX_OWNER_PROBES};
        let e = |path: &str, uid, gid| OwnerEntry {
            gid,
            path: path.into(),
            uid,
        };
        let with = CvmfsRecord {
            owner_probes: Some(OwnerProbes::new(vec![e("", 0, 0), e("home/u", 1000, 1000)])),
            ..record()
        };
        let text = with.to_json();
        assert!(
            text.contains(r#""owner-probes":{"entries":[{"gid":0,"path":"","uid":0},{"gid":1000,"path":"home/u","uid":1000}],"version":1},"ownership""#),
            "{text}"
        );
        match parse_store_record(text.as_bytes()).unwrap() {
            StoreRecord::Cvmfs { record, .. } => assert_eq!(record, with),
            other => panic!("{other:?}"),
        }
        let probes = |v: &str| {
            record()
                .to_json()
                .replacen("{", &format!(r#"{{"owner-probes":{v},"#), 1)
        };
        // A newer publisher's probes: the record is read without them.
        match parse_store_record(probes(r#"{"version":2,"anything":[1]}"#).as_bytes()).unwrap() {
            StoreRecord::Cvmfs { record, .. } => assert_eq!(record.owner_probes, None),
            other => panic!("{other:?}"),
        }
        let many: Vec<String> = (0..=MAX_OWNER_PROBES)
            .map(|i| format!(r#"{{"gid":1,"path":"f{i}","uid":1}}"#))
            .collect();
        let many = format!(r#"{{"version":1,"entries":[{}]}}"#, many.join(","));
        for (v, needle) in [
            (
                r#"{"version":1,"entries":[{"gid":1,"path":"../x","uid":1}]}"#,
                "\"..\"",
            ),
            (
                r#"{"version":1,"entries":[{"gid":1,"path":"/x","uid":1}]}"#,
                "relative",
            ),
            (
                r#"{"version":1,"entries":[{"gid":1,"path":"a/.wh.b","uid":1}]}"#,
                "whiteout",
            ),
            (
                r#"{"version":1,"entries":[{"gid":1,"path":"","uid":4294967295}]}"#,
                "invalid",
            ),
            (
                r#"{"version":1,"entries":[{"gid":1,"path":"a","uid":1},{"gid":1,"path":"a","uid":2}]}"#,
                "twice",
            ),
            (
                r#"{"version":1,"entries":[{"gid":1,"path":"a","uid":-1}]}"#,
                "malformed",
            ),
            (
                r#"{"version":1,"entries":[{"gid":1,"path":"a","uid":1,"mode":1}]}"#,
                "unknown field",
            ),
            (r#"{"entries":[]}"#, "missing field"),
            (r#"[1]"#, "malformed"),
            (many.as_str(), "more than 8 entries"),
        ] {
            let e = parse_store_record(probes(v).as_bytes()).unwrap_err();
            assert!(
                e.to_string().contains("owner-probes") && e.to_string().contains(needle),
                "{v}: {e}"
            );
            assert_eq!(e.field, Some("owner-probes"), "{v}");
        }
    }

    #[test]
    fn local_records_round_trip_and_are_checked() {
        let r = LocalRecord::new(Some("Base"), true);
        let text = r.to_json();
        assert!(String::from_utf8_lossy(&text)
            .starts_with("{\n  \"version\": 1,\n  \"kind\": \"local\""));
        assert_eq!(LocalRecord::parse(&text).unwrap(), r);
        let e =
            LocalRecord::parse(br#"{"version":7,"kind":"local","parent":null,"read_write":false}"#)
                .unwrap_err();
        assert!(e.to_string().contains("version 7"), "{e}");
        let e =
            LocalRecord::parse(br#"{"version":1,"kind":"cvmfs","parent":null,"read_write":false}"#)
                .unwrap_err();
        assert!(e.to_string().contains("where \"local\""), "{e}");
        // A store's local record names its parent by a 64-hex ID.
        let e = parse_store_record(&text).unwrap_err();
        assert!(e.to_string().contains("parent"), "{e}");
        let sibling = LocalRecord::new(Some(&"ab".repeat(32)), false).to_json();
        assert_eq!(
            parse_store_record(&sibling).unwrap(),
            StoreRecord::Local {
                parent: Some("ab".repeat(32))
            }
        );
    }
}
