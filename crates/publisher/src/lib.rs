//! The publisher's library half: where images come from (`source`, with the
//! registry client in `registry`, typed documents in `oci`, bounded reading in
//! `blob`), how one is published (`publish`), and everything that writes into a
//! repository; progress bars and argument parsing live in the `cvmfs-podman`
//! binary.
//!
//! The files and their paths are defined by the `cvmfs-store-format` crate
//! (`cvmfs_format`: the repository tree with every file's format, version,
//! limit, writer and reader is in its crate documentation); this crate
//! writes them (`podman`, `ducc`, `ownership`, `layer`, `tarsplit`, `flat`).
//! `docs/store-format.md` describes what publishing produces.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::Path;

pub mod cvmfs_server;
pub mod ducc;
pub mod entry;
pub mod flat;
pub mod fsx;
pub mod layer;
pub mod ownership;
pub mod podman;
pub mod profile;
pub mod tarsplit;

pub mod blob;
pub mod layer_spec;
pub mod oci;
pub mod publish;
pub mod registry;
pub mod source;

/// A publisher error: a message that names what failed (image, layer, entry, path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn msg(m: impl Into<String>) -> Error {
        Error(m.into())
    }
    pub fn io(path: &Path, e: std::io::Error) -> Error {
        Error(format!("{}: {e}", path.display()))
    }
    /// Prefix the message with what was being done.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error(format!("{what}: {}", self.0))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// containers/image layer IDs for a stack of diffIDs (bottom first): the base
/// layer's ID is its diffID hex, each other one `sha256(parentID + "+" + diffIDhex)`.
pub fn layer_ids(diff_ids: &[&str]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let hex = d.strip_prefix("sha256:").unwrap_or(d);
        let id = match out.last() {
            None => hex.to_string(),
            Some(parent) => layer::hex(&Sha256::digest(format!("{parent}+{hex}").as_bytes())),
        };
        out.push(id);
    }
    out
}

pub use cvmfs_format::is_hex64;

/// The hex of a `sha256:<hex>` digest, validated
/// ([`cvmfs_format::digest_hex`]).
pub fn digest_hex(d: &str) -> Result<&str> {
    cvmfs_format::digest_hex(d).map_err(|e| Error(e.to_string()))
}

/// RFC 3339 UTC time with nanoseconds, as Go's `time.Time` marshals.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_id_formula() {
        let a = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let b = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let ids = layer_ids(&[a, b]);
        assert_eq!(ids[0], &a[7..]);
        use sha2::{Digest, Sha256};
        let want = layer::hex(&Sha256::digest(format!("{}+{}", &a[7..], &b[7..])));
        assert_eq!(ids[1], want);
    }

    #[test]
    fn time_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.12Z");
        assert_eq!(
            rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
