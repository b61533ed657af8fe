//! `ownership.json`: the image's owners of a layer whose `layerfs` lost them
//! (unpacked by DUCC, which ingests without keeping ownership, or by an
//! unprivileged publisher). The driver reads it beside the layer's record and
//! restores the owners (format, limits and validation:
//! [`cvmfs_format::ownership`]).
//!
//! It is built from the layer tar's headers, which are the only place the
//! owners still exist once the files belong to the repository owner.

use std::collections::BTreeMap;

use cvmfs_format::ownership::{OwnerEntry, OwnershipFile};

use super::tarsplit::KeptEntries;
use cvmfs_graphdriver::archive::WHITEOUT_PREFIX;

/// The normalised layer path of a tar name (no leading `./` or `/`, no
/// trailing `/`, no `.` components); `None` for the layer root itself.
fn layer_path(name: &[u8]) -> Option<Vec<&[u8]>> {
    let parts: Vec<&[u8]> = name
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    (!parts.is_empty()).then_some(parts)
}

/// The `ownership.json` bytes for a layer with tar entries `entries` (archive
/// order): every entry whose final owner is not 0:0 (an empty list when all
/// are root's still says the owners are known). `Err` names an entry the
/// driver's format cannot express (a non-UTF-8 name, owner 2^32-1): writing a
/// partial file would make the driver report owners as restored when they are
/// not, so the caller writes none and the layer stays "lost".
pub fn owners_json(entries: &KeptEntries) -> Result<Vec<u8>, String> {
    if !entries.complete {
        return Err(format!(
            "the layer's entries not owned by root have more than {} bytes of names, too many to list",
            super::tarsplit::MAX_KEPT_NAMES
        ));
    }
    // A later entry for the same path replaces the earlier one, as on unpacking.
    let mut last: BTreeMap<Vec<u8>, (u32, u32)> = BTreeMap::new();
    for e in entries.iter() {
        if matches!(e.typeflag, b'g' | b'x' | b'L' | b'K') {
            continue;
        }
        let Some(parts) = layer_path(&e.name) else {
            continue;
        };
        // A hardlink shares its target's inode, so its target's owner (root
        // when the target is not listed). Listed under its own name too: a
        // repository may hold it as a separate file (CVMFS ingest keeps no
        // hardlinks), and the driver links the two when they share an inode.
        let owner = if e.typeflag == b'1' {
            let target = layer_path(&e.linkname).map(|t| t.join(&b'/'));
            target.and_then(|t| last.get(&t).copied()).unwrap_or((0, 0))
        } else {
            (e.uid, e.gid)
        };
        // Raw whiteout markers are hidden by the driver; ".." never unpacks.
        if parts
            .iter()
            .any(|c| c.starts_with(WHITEOUT_PREFIX.as_bytes()) || *c == b"..")
        {
            continue;
        }
        last.insert(parts.join(&b'/'), owner);
    }
    let mut out = Vec::new();
    for (path, (uid, gid)) in last {
        if (uid, gid) == (0, 0) {
            continue;
        }
        let p = String::from_utf8(path).map_err(|e| {
            format!(
                "entry {:?} (owner {uid}:{gid}) has a non-UTF-8 name, which ownership.json cannot list",
                String::from_utf8_lossy(e.as_bytes())
            )
        })?;
        if uid == u32::MAX || gid == u32::MAX {
            return Err(format!(
                "entry {p:?}: owner {uid}:{gid} is reserved (-1), which ownership.json cannot list"
            ));
        }
        out.push(OwnerEntry { gid, path: p, uid });
    }
    // What we write must be what the driver accepts: to_json checks it.
    OwnershipFile::new(out).to_json().map_err(|e| e.to_string())
}

/// The record's `owner-probes` for the layer unpacked at `layerfs` whose tar
/// entries are `entries`: the layer root and up to
/// [`MAX_OWNER_PROBES`](cvmfs_format::ownership::MAX_OWNER_PROBES)` - 1`
/// entries not owned 0:0 (a client that claims ownership as root shows only
/// those wrong), each with the owner it has in `layerfs`, i.e. as published.
/// Only entries reached through real directories are taken (never through a
/// symlink). `None` when even the root cannot be read.
pub fn owner_probes(
    layerfs: &std::path::Path,
    entries: &KeptEntries,
) -> Option<cvmfs_format::OwnerProbes> {
    use cvmfs_format::ownership::MAX_OWNER_PROBES;
    use std::os::unix::fs::MetadataExt;
    let probe = |rel: &str| -> Option<OwnerEntry> {
        let mut at = layerfs.to_path_buf();
        let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        for (i, c) in parts.iter().enumerate() {
            at.push(c);
            let md = std::fs::symlink_metadata(&at).ok()?;
            if i + 1 < parts.len() && !md.is_dir() {
                return None;
            }
        }
        let md = std::fs::symlink_metadata(&at).ok()?;
        Some(OwnerEntry {
            gid: md.gid(),
            path: rel.to_string(),
            uid: md.uid(),
        })
    };
    let mut out = vec![probe("")?];
    let mut seen = std::collections::BTreeSet::new();
    for e in entries.iter() {
        if out.len() == MAX_OWNER_PROBES {
            break;
        }
        if matches!(e.typeflag, b'g' | b'x' | b'L' | b'K' | b'1') || (e.uid, e.gid) == (0, 0) {
            continue;
        }
        let Some(parts) = layer_path(&e.name) else {
            continue;
        };
        if parts
            .iter()
            .any(|c| c.starts_with(WHITEOUT_PREFIX.as_bytes()) || *c == b"..")
        {
            continue;
        }
        let Ok(path) = String::from_utf8(parts.join(&b'/')) else {
            continue;
        };
        if seen.insert(path.clone()) {
            out.extend(probe(&path));
        }
    }
    let probes = cvmfs_format::OwnerProbes::new(out);
    // What we write must be what the driver accepts.
    probes.checked().ok()?;
    Some(probes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarsplit::EntryInfo;

    fn e(name: &str, typeflag: u8, uid: u32, gid: u32) -> EntryInfo {
        EntryInfo {
            name: name.as_bytes().to_vec(),
            typeflag,
            size: 0,
            mode: 0o644,
            uid,
            gid,
            mtime: 0,
            linkname: Vec::new(),
        }
    }

    #[test]
    fn lists_non_root_entries_normalised() {
        let j = owners_json(&KeptEntries::from(vec![
            e("./", b'5', 5, 5),
            e("./home/", b'5', 0, 0),
            e("./home/u/", b'5', 1000, 1000),
            e("home/u/.profile", b'0', 1000, 100),
            e("home/u/.wh.gone", b'0', 1000, 1000),
            e("home/u/link", b'1', 7, 7),
            EntryInfo {
                linkname: b"home/u/.profile".to_vec(),
                ..e("./home/u/link2", b'1', 0, 0)
            },
            e("etc/b", b'0', 2000, 2000),
            e("etc/b", b'0', 0, 0),
        ]))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version":1,"entries":[
                {"path":"home/u","uid":1000,"gid":1000},
                {"path":"home/u/.profile","uid":1000,"gid":100},
                {"path":"home/u/link2","uid":1000,"gid":100}]})
        );
    }

    #[test]
    fn all_root_gives_an_empty_list() {
        let j = owners_json(&vec![e("a", b'0', 0, 0)].into()).unwrap();
        assert_eq!(j, br#"{"entries":[],"version":1}"#);
    }

    #[test]
    fn inexpressible_entries_refuse_the_file() {
        let bad = EntryInfo {
            name: vec![b'a', 0xff],
            ..e("", b'0', 1, 1)
        };
        assert!(owners_json(&vec![bad].into())
            .unwrap_err()
            .contains("non-UTF-8"));
        assert!(owners_json(&vec![e("a", b'0', u32::MAX, 0)].into())
            .unwrap_err()
            .contains("reserved"));
    }
}
