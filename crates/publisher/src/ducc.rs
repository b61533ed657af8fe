//! The metadata files of DUCC's layout (ARCHITECTURE §3): their format is
//! [`cvmfs_format::ducc`]; here they are read from and written to a
//! repository.

use std::collections::BTreeSet;
use std::path::Path;

pub use cvmfs_format::ducc::{
    layers_json, manifest_json, origin_json, Descriptor, LayerInfo, Manifest, Origin,
    MAX_ORIGIN_BYTES,
};
use cvmfs_format::RepoPaths;

use super::{fsx, Error, Result};

/// A layer directory's `origin.json` (`None`: there is none). Refused, with the
/// file named: a symlink, a non-regular file, an oversized one, one that does
/// not parse or names something that is not a `sha256:<hex>` config digest.
pub fn read_origin(path: &Path) -> Result<Option<Origin>> {
    let bytes = match fsx::read_record(path, MAX_ORIGIN_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let o = cvmfs_format::ducc::parse_origin(&bytes)
        .map_err(|e| Error::msg(e.in_file(path).to_string()))?;
    Ok(Some(o))
}

/// Make `<layer dir>/.metadata/origin.json` name every config of `configs`,
/// keeping what it names already. Call it under the publisher lock (it is a
/// read-modify-write). A file [`read_origin`] refuses is rebuilt from
/// `configs` alone: the reason is returned so the caller can say so.
pub fn ensure_origin(layer_dir: &Path, configs: &BTreeSet<String>) -> Result<Option<String>> {
    let meta = RepoPaths::metadata_of(layer_dir);
    if let Ok(md) = std::fs::symlink_metadata(&meta) {
        if !md.is_dir() {
            return Err(Error::msg(format!(
                "{}: not a directory (a symlink?): origin.json is not written through it",
                meta.display()
            )));
        }
    }
    let path = RepoPaths::origin_of(layer_dir);
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
