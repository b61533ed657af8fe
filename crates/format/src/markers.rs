//! Marker lists: the raw OCI whiteout files (`.wh.<name>`, `.wh..wh..opq`) of
//! a `layerfs`, as a JSON array of paths relative to it
//! (`[".wh.gone","etc/.wh..wh..opq"]`). The same list is a record's
//! `markers` field and the publisher's per-blob `<d>.markers.json`.
//!
//! Writer: [`MarkerList::to_json`]. Reader: [`parse_marker_list_json`] (a
//! file) and [`parse_marker_list`] (a record's field, read capped by
//! [`deserialize_marker_list`]). Limits: [`MAX_LISTED_MARKERS`] entries in at
//! most [`MAX_MARKER_DIRS`] directories.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::capped::CappedSeq;
use crate::error::{FormatError, Result};

/// The prefix of every OCI whiteout file.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

/// Most markers one layer may have, listed or found (far above any real
/// layer: a whiteout is one per deleted top-most name, so even a layer
/// removing a whole distribution's documentation has a few thousand). Every
/// marker costs a device node in a whiteout layer built on local disk at the
/// first mount, so the cap bounds that work for hostile lists too.
pub const MAX_LISTED_MARKERS: usize = 16_384;

/// Most distinct directories a marker list may name (each becomes a
/// directory of the whiteout layer).
pub const MAX_MARKER_DIRS: usize = 16_384;

/// One marker file of a raw layer: its directory (relative) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub dir: PathBuf,
    pub name: OsString,
}

impl Marker {
    pub fn is_opaque(&self) -> bool {
        self.name.as_bytes() == WHITEOUT_OPAQUE.as_bytes()
    }
    /// AUFS metadata (`.wh..wh.plnk`, ...: `.wh..wh.` but not the opaque
    /// marker), which unpacking drops.
    pub fn is_aufs_metadata(&self) -> bool {
        !self.is_opaque() && self.name.as_bytes().starts_with(b".wh..wh.")
    }
    /// The name a `.wh.<x>` marker deletes (`None` for the opaque marker).
    pub fn deleted(&self) -> Option<&OsStr> {
        if self.is_opaque() {
            return None;
        }
        let b = self.name.as_bytes();
        let x = b.strip_prefix(WHITEOUT_PREFIX.as_bytes())?;
        if x.is_empty() || x == b"." || x == b".." || x.contains(&b'/') {
            return None;
        }
        Some(OsStr::from_bytes(x))
    }
    /// The marker's path relative to the layer, as a list names it.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// A marker list as the publisher writes it: paths relative to `layerfs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct MarkerList(pub Vec<String>);

impl MarkerList {
    /// The file's text (`<d>.markers.json`): a compact JSON array.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("strings serialize")
    }

    /// Validate the list as the driver will read it.
    pub fn check(&self) -> Result<Vec<Marker>> {
        parse_marker_list(&self.0)
    }

    /// Read a `<d>.markers.json`, validated; the list as written.
    pub fn from_json(bytes: &[u8]) -> Result<MarkerList> {
        let list = read_capped_list(bytes)?;
        parse_marker_list(&list)?;
        Ok(MarkerList(list))
    }
}

/// serde `deserialize_with` for a record's optional `markers` list, capped
/// at [`MAX_LISTED_MARKERS`] while it is read.
pub fn deserialize_marker_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    d.deserialize_seq(CappedSeq::new(MAX_LISTED_MARKERS, "field \"markers\""))
        .map(Some)
}

/// Parse and validate a marker list (hostile input): each entry a relative
/// path made of plain names (no `.`, `..` or empty component, no NUL) whose
/// last name starts with `.wh.`, listed once. Returns them sorted by
/// directory, then name (the order a scan of the layer gives).
pub fn parse_marker_list(list: &[String]) -> Result<Vec<Marker>> {
    if list.len() > MAX_LISTED_MARKERS {
        return Err(FormatError::new(format!(
            "{} entries, more than {MAX_LISTED_MARKERS}",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        out.push(
            parse_marker(p).map_err(|why| FormatError::new(format!("entry {i} ({p:?}): {why}")))?,
        );
    }
    out.sort_by(|a, b| (&a.dir, &a.name).cmp(&(&b.dir, &b.name)));
    if let Some(w) = out.windows(2).find(|w| w[0] == w[1]) {
        return Err(FormatError::new(format!(
            "{:?} is listed twice",
            w[0].path()
        )));
    }
    let dirs = distinct_dirs(&out);
    if dirs > MAX_MARKER_DIRS {
        return Err(FormatError::new(format!(
            "the markers lie in {dirs} distinct directories, more than {MAX_MARKER_DIRS}"
        )));
    }
    Ok(out)
}

/// One entry of a marker list, or why it is not one.
fn parse_marker(p: &str) -> std::result::Result<Marker, String> {
    if p.is_empty() || p.starts_with('/') || p.contains('\0') {
        return Err("not a relative path".into());
    }
    let parts: Vec<&str> = p.split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err("path component is empty, \".\" or \"..\"".into());
    }
    let (name, dirs) = parts.split_last().expect("split gives one part");
    if !name.starts_with(WHITEOUT_PREFIX) {
        return Err("the last name does not start with \".wh.\"".into());
    }
    if let Some(d) = dirs.iter().find(|c| c.starts_with(WHITEOUT_PREFIX)) {
        return Err(format!("directory {d:?} is a whiteout marker"));
    }
    Ok(Marker {
        dir: dirs.iter().collect(),
        name: OsString::from(*name),
    })
}

/// How many distinct directories (with their ancestors) sorted `markers`
/// lie in: what building a whiteout layer for them creates at most.
fn distinct_dirs(markers: &[Marker]) -> usize {
    let mut n = 0;
    let mut prev: Option<&Path> = None;
    for m in markers {
        if prev == Some(m.dir.as_path()) {
            continue;
        }
        // Sorted by path: the directories shared with the previous one's
        // chain are counted already.
        let shared = prev.map_or(0, |p| {
            p.components()
                .zip(m.dir.components())
                .take_while(|(a, b)| a == b)
                .count()
        });
        n += m.dir.components().count() - shared;
        prev = Some(&m.dir);
    }
    n
}

/// The JSON array `bytes`, read with the entry cap, nothing after it.
fn read_capped_list(bytes: &[u8]) -> Result<Vec<String>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    deserialize_marker_list(&mut de)
        .and_then(|l| de.end().map(|()| l))
        .map_err(|e| FormatError::new(format!("malformed or truncated JSON: {e}")))
        .map(Option::unwrap_or_default)
}

/// A marker list as JSON text (a record's `markers` value, or a
/// `<d>.markers.json`), read and validated as the driver does: a pure
/// function for fuzzing.
pub fn parse_marker_list_json(bytes: &[u8]) -> Result<Vec<Marker>> {
    parse_marker_list(&read_capped_list(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lists_round_trip_and_hostile_entries_are_named() {
        let l = MarkerList(list(&["etc/.wh..wh..opq", ".wh.gone"]));
        assert_eq!(l.to_json(), r#"["etc/.wh..wh..opq",".wh.gone"]"#);
        assert_eq!(MarkerList::from_json(l.to_json().as_bytes()).unwrap(), l);
        let got: Vec<PathBuf> = l.check().unwrap().iter().map(Marker::path).collect();
        assert_eq!(got, [PathBuf::from(".wh.gone"), "etc/.wh..wh..opq".into()]);
        for (bad, needle) in [
            ("../.wh.x", "\"..\""),
            ("/etc/.wh.x", "not a relative path"),
            ("etc/passwd", "does not start with \".wh.\""),
            (".wh.a/.wh.b", "is a whiteout marker"),
        ] {
            let e = parse_marker_list(&list(&[bad])).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let e = parse_marker_list(&list(&[".wh.a", ".wh.a"])).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        assert!(parse_marker_list_json(br#"["a/.wh.b"] x"#).is_err());
        assert!(parse_marker_list_json(b"null").is_err());
    }

    #[test]
    fn odd_marker_names_delete_nothing() {
        for name in [".wh.", ".wh..", ".wh...", WHITEOUT_OPAQUE] {
            let m = Marker {
                dir: PathBuf::new(),
                name: name.into(),
            };
            assert!(m.deleted().is_none(), "{name}");
        }
    }
}

#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn marker_lists_are_capped_in_entries_and_directories() {
        let many: Vec<String> = (0..=MAX_LISTED_MARKERS)
            .map(|i| format!(".wh.{i}"))
            .collect();
        // The capped reader refuses while reading; the parser as well.
        let json = serde_json::to_vec(&many).unwrap();
        let mut de = serde_json::Deserializer::from_slice(&json);
        let e = deserialize_marker_list(&mut de).unwrap_err().to_string();
        assert!(e.to_string().contains("more than 16384 entries"), "{e}");
        assert!(parse_marker_list(&many)
            .unwrap_err()
            .to_string()
            .contains("more than"));
        // Directories: each marker in its own chain of 4.
        let n = MAX_MARKER_DIRS / 4 + 1;
        let deep: Vec<String> = (0..n).map(|i| format!("{i}/a/b/c/.wh.x")).collect();
        let e = parse_marker_list(&deep).unwrap_err();
        assert!(e.to_string().contains("distinct directories"), "{e}");
        // Shared directories count once.
        let shared: Vec<String> = (0..n).map(|i| format!("a/b/c/.wh.{i}")).collect();
        parse_marker_list(&shared).unwrap();
    }
}
