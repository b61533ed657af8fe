//! Start-up profiles: the files an image's container read first, in order,
//! published beside the image's records so that every node can prefetch them
//! on its first cold start (issue 16, `docs/store-format.md`, *Start-up
//! profiles*).
//!
//! A profile lives at `<store>/cvmfs/profiles/<top layer id>.json`. It is
//! keyed by the image's top layer because that is what the driver sees when a
//! container is mounted (a container's layer has the image's top layer as its
//! parent; the driver never learns the image ID). The file:
//!
//! ```json
//! {"version":1,"image":"<config digest hex>","top-layer":"<layer id>",
//!  "layers":["<layer id>", ...],
//!  "entries":[{"layer":0,"path":"usr/bin/python3","ranges":[[0,65536]]}, ...]}
//! ```
//!
//! `layers` lists the layer IDs entries point at (each entry names the layer
//! whose directory serves the file, by index into the list), `path` is the
//! file's path in that layer's directory (which is also its path in the image
//! root filesystem), `ranges` the `[offset, length]` byte ranges read, and the
//! entries are in the order of their first access. Profiles come from outside
//! (a recording on another machine, a file an operator passes to `publish`),
//! so [`parse`] checks everything: size, version, IDs, paths that could leave
//! a layer directory, ranges that overflow, duplicates, counts. A stale or
//! partial profile only costs bandwidth: the driver reads what still exists.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The profile format this code reads and writes.
pub const PROFILE_VERSION: u32 = 1;

/// Largest profile file read: a job that opens 100 000 files with a few
/// ranges each fits in a few MiB; anything bigger is refused before parsing.
pub const PROFILE_MAX_BYTES: u64 = 16 << 20;

/// Most entries (files) one profile lists.
pub const MAX_ENTRIES: usize = 200_000;

/// Most byte ranges one entry lists (a recorder merges beyond this).
pub const MAX_RANGES_PER_ENTRY: usize = 256;

/// Most layers a profile may refer to (a stack is at most 4096 deep).
pub const MAX_LAYERS: usize = 4096;

/// Longest path (bytes), as `PATH_MAX` less the layer directory's own path.
pub const MAX_PATH_BYTES: usize = 3072;

/// Longest single range (1 TiB): larger is a corrupt or hostile file.
pub const MAX_RANGE_LEN: u64 = 1 << 40;

/// Directory of the profiles inside a store's `cvmfs/` directory.
pub const PROFILES_DIR: &str = "profiles";

/// Where store `store` keeps the profile of the image whose top layer is
/// `top_layer` (the ID must have been validated with [`is_layer_id`]).
pub fn profile_path(store: &Path, top_layer: &str) -> PathBuf {
    store
        .join("cvmfs")
        .join(PROFILES_DIR)
        .join(format!("{top_layer}.json"))
}

/// A layer or image ID: 64 lower-case hex digits.
pub fn is_layer_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a profile was refused; the message names the entry and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("profile: {0}")]
pub struct ProfileError(pub String);

fn err(why: impl Into<String>) -> ProfileError {
    ProfileError(why.into())
}

/// One byte range of a file: `[offset, length]` in the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range(pub u64, pub u64);

impl Range {
    pub fn offset(&self) -> u64 {
        self.0
    }
    pub fn len(&self) -> u64 {
        self.1
    }
    pub fn is_empty(&self) -> bool {
        self.1 == 0
    }
}

/// One file the container read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Index into [`Profile::layers`]: the layer whose directory serves the file.
    pub layer: usize,
    /// Relative path in that layer's directory (plain names joined by `/`).
    pub path: String,
    /// Byte ranges read, in order of first access.
    pub ranges: Vec<Range>,
}

/// A start-up profile (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub version: u32,
    /// The image (config digest hex) it was recorded for.
    pub image: String,
    /// The image's top layer: the profile's key.
    #[serde(rename = "top-layer")]
    pub top_layer: String,
    /// Layer IDs the entries refer to.
    pub layers: Vec<String>,
    pub entries: Vec<Entry>,
}

impl Profile {
    /// Bytes the entries list (sum of range lengths, saturating).
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .flat_map(|e| e.ranges.iter())
            .fold(0u64, |a, r| a.saturating_add(r.len()))
    }

    /// Check every rule [`parse`] enforces (also used before writing one).
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.version != PROFILE_VERSION {
            return Err(err(format!(
                "version {} is not supported (this program reads version {PROFILE_VERSION})",
                self.version
            )));
        }
        if !is_layer_id(&self.image) {
            return Err(err(format!(
                "field \"image\" {:?} is not 64 lower-case hex digits",
                self.image
            )));
        }
        if !is_layer_id(&self.top_layer) {
            return Err(err(format!(
                "field \"top-layer\" {:?} is not 64 lower-case hex digits",
                self.top_layer
            )));
        }
        self.validate_layers()?;
        if self.entries.len() > MAX_ENTRIES {
            return Err(err(format!(
                "{} entries, more than {MAX_ENTRIES}",
                self.entries.len()
            )));
        }
        let mut seen = HashSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            validate_entry(e, self.layers.len())
                .map_err(|why| err(format!("entry {i} ({:?}): {why}", truncated(&e.path))))?;
            if !seen.insert((e.layer, e.path.as_str())) {
                return Err(err(format!(
                    "entry {i} ({:?}): listed twice for layer {}",
                    truncated(&e.path),
                    e.layer
                )));
            }
        }
        Ok(())
    }

    fn validate_layers(&self) -> Result<(), ProfileError> {
        if self.layers.len() > MAX_LAYERS {
            return Err(err(format!(
                "{} layers, more than {MAX_LAYERS}",
                self.layers.len()
            )));
        }
        let mut seen = HashSet::new();
        for (i, l) in self.layers.iter().enumerate() {
            if !is_layer_id(l) {
                return Err(err(format!(
                    "layers[{i}] {:?} is not 64 lower-case hex digits",
                    truncated(l)
                )));
            }
            if !seen.insert(l.as_str()) {
                return Err(err(format!("layers[{i}] {l} is listed twice")));
            }
        }
        Ok(())
    }

    /// The profile as its file holds it (compact JSON). Refuses a profile
    /// [`Profile::validate`] refuses, or one larger than [`PROFILE_MAX_BYTES`]:
    /// nothing is written that a reader would reject.
    pub fn to_json(&self) -> Result<Vec<u8>, ProfileError> {
        self.validate()?;
        let bytes = serde_json::to_vec(self).map_err(|e| err(format!("serialize: {e}")))?;
        if bytes.len() as u64 > PROFILE_MAX_BYTES {
            return Err(err(format!(
                "{} bytes, larger than {PROFILE_MAX_BYTES}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

/// A path shown in an error: at most 200 characters of it.
fn truncated(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn validate_entry(e: &Entry, layers: usize) -> Result<(), String> {
    if e.layer >= layers {
        return Err(format!(
            "layer index {} is not in \"layers\" ({layers} listed)",
            e.layer
        ));
    }
    check_path(&e.path)?;
    if e.ranges.len() > MAX_RANGES_PER_ENTRY {
        return Err(format!(
            "{} ranges, more than {MAX_RANGES_PER_ENTRY}",
            e.ranges.len()
        ));
    }
    for r in &e.ranges {
        if r.is_empty() || r.len() > MAX_RANGE_LEN {
            return Err(format!(
                "range [{}, {}]: length must be in 1..={MAX_RANGE_LEN}",
                r.offset(),
                r.len()
            ));
        }
        if r.offset().checked_add(r.len()).is_none() {
            return Err(format!(
                "range [{}, {}] ends past 2^64",
                r.offset(),
                r.len()
            ));
        }
    }
    Ok(())
}

/// A path inside a layer directory: relative, plain names joined by single
/// `/`, no `.` or `..`, no NUL, bounded length. (Symlinks on the way are the
/// reader's to refuse: the driver opens with `RESOLVE_BENEATH`.)
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "path of {} bytes, longer than {MAX_PATH_BYTES}",
            path.len()
        ));
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    for c in path.split('/') {
        match c {
            "" => return Err("empty path component (\"//\" or a trailing \"/\")".into()),
            "." | ".." => {
                return Err(format!(
                    "path component {c:?} (leaves or names the directory)"
                ))
            }
            c if c.len() > 255 => return Err("path component longer than 255 bytes".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Parse and validate a profile file's bytes (everything the module
/// documentation lists). Pure: no filesystem access.
pub fn parse(bytes: &[u8]) -> Result<Profile, ProfileError> {
    if bytes.len() as u64 > PROFILE_MAX_BYTES {
        return Err(err(format!(
            "{} bytes, larger than {PROFILE_MAX_BYTES}",
            bytes.len()
        )));
    }
    // Check the version first: a newer format may not parse as this one.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("malformed or truncated JSON: {e}")))?;
    if v.version != PROFILE_VERSION {
        return Err(err(format!(
            "version {} is not supported (this program reads version {PROFILE_VERSION})",
            v.version
        )));
    }
    let p: Profile =
        serde_json::from_slice(bytes).map_err(|e| err(format!("malformed JSON: {e}")))?;
    p.validate()?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn sample() -> Profile {
        Profile {
            version: 1,
            image: id('c'),
            top_layer: id('b'),
            layers: vec![id('a'), id('b')],
            entries: vec![
                Entry {
                    layer: 1,
                    path: "usr/bin/app".into(),
                    ranges: vec![Range(0, 4096), Range(8192, 100)],
                },
                Entry {
                    layer: 0,
                    path: "lib/libc.so.6".into(),
                    ranges: vec![Range(0, 1 << 20)],
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_counts_bytes() {
        let p = sample();
        let bytes = p.to_json().unwrap();
        assert_eq!(parse(&bytes).unwrap(), p);
        assert_eq!(p.total_bytes(), 4096 + 100 + (1 << 20));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"top-layer\""), "{text}");
        assert!(text.contains("[0,4096]"), "{text}");
    }

    #[test]
    fn path_of_a_profile() {
        assert_eq!(
            profile_path(Path::new("/r/podmanStore"), &id('b')),
            PathBuf::from(format!("/r/podmanStore/cvmfs/profiles/{}.json", id('b')))
        );
    }

    fn refused(mutate: impl FnOnce(&mut Profile), what: &str) {
        let mut p = sample();
        mutate(&mut p);
        let bytes = serde_json::to_vec(&p).unwrap();
        let e = parse(&bytes).expect_err(what).to_string();
        assert!(e.contains(what), "{e:?} should mention {what:?}");
        assert!(p.to_json().is_err(), "to_json must refuse too: {what}");
    }

    #[test]
    fn paths_that_escape_or_are_odd_are_refused() {
        for (path, what) in [
            ("../etc/shadow", "\"..\""),
            ("usr/../../etc", "\"..\""),
            ("/etc/passwd", "absolute"),
            ("", "empty path"),
            ("usr//bin", "empty path component"),
            ("usr/bin/", "empty path component"),
            ("./usr", "\".\""),
            ("a\0b", "NUL"),
        ] {
            refused(|p| p.entries[0].path = path.into(), what);
        }
        refused(|p| p.entries[0].path = "a/".repeat(2000), "longer than");
        refused(|p| p.entries[0].path = "x".repeat(256), "longer than 255");
    }

    #[test]
    fn bad_ids_indexes_ranges_and_duplicates_are_refused() {
        refused(|p| p.image = "ABC".into(), "\"image\"");
        refused(|p| p.top_layer = id('B'), "\"top-layer\"");
        refused(|p| p.layers[0] = "../x".into(), "layers[0]");
        refused(|p| p.layers[1] = id('a'), "listed twice");
        refused(|p| p.entries[0].layer = 2, "layer index 2");
        refused(|p| p.entries[0].ranges[0] = Range(0, 0), "length");
        refused(|p| p.entries[0].ranges[0] = Range(u64::MAX, 5), "past 2^64");
        refused(
            |p| p.entries[0].ranges[0] = Range(0, (1 << 40) + 1),
            "length",
        );
        refused(
            |p| p.entries[0].ranges = vec![Range(0, 1); MAX_RANGES_PER_ENTRY + 1],
            "ranges, more than",
        );
        refused(
            |p| {
                let e = p.entries[0].clone();
                p.entries.push(e)
            },
            "listed twice",
        );
        refused(|p| p.version = 2, "version 2");
    }

    #[test]
    fn malformed_truncated_and_oversized_files_are_refused() {
        let good = sample().to_json().unwrap();
        for cut in [0, 1, good.len() / 2, good.len() - 1] {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        for bad in [
            &b"[]"[..],
            b"null",
            b"{\"version\":1}",
            b"{\"version\":\"1\"}",
            b"{\"version\":1,\"image\":1,\"top-layer\":2,\"layers\":[],\"entries\":[]}",
            b"{\"version\":1,\"image\":\"\",\"top-layer\":\"\",\"layers\":[],\"entries\":[{\"layer\":-1}]}",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let mut big = b"{\"version\":1,\"pad\":\"".to_vec();
        big.resize(PROFILE_MAX_BYTES as usize + 1, b'x');
        let e = parse(&big).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        // A newer version is named, even when its fields differ.
        let e = parse(b"{\"version\":7,\"other\":[]}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 7 is not supported"), "{e}");
    }

    #[test]
    fn too_many_entries_are_refused() {
        let mut p = sample();
        p.entries = (0..=MAX_ENTRIES)
            .map(|i| Entry {
                layer: 0,
                path: format!("f{i}"),
                ranges: vec![Range(0, 1)],
            })
            .collect();
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("entries, more than"), "{e}");
    }
}
