//! Digests and layer IDs: what a name read from a repository or given through
//! the C ABI may be, decided in one place.

use crate::error::{FormatError, Result};

/// The only digest algorithm the store format uses.
pub const SHA256_PREFIX: &str = "sha256:";

/// True for 64 lower-case hex digits (a sha256 in hex: a digest's hex, a
/// layer ID of a repository store, an image ID).
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The hex of a `sha256:<hex>` digest, validated.
pub fn digest_hex(d: &str) -> Result<&str> {
    match d.strip_prefix(SHA256_PREFIX) {
        Some(h) if is_hex64(h) => Ok(h),
        _ => Err(FormatError::new(format!(
            "digest {d:?} is not sha256:<64 lower-case hex> (other algorithms are not supported)"
        ))),
    }
}

/// `sha256:<hex>` for a validated hex.
pub fn sha256_digest(hex: &str) -> String {
    format!("{SHA256_PREFIX}{hex}")
}

/// IDs of layers read from repositories and additional stores must be 64
/// lower-case hex digits: those records come from outside and name paths.
pub fn validate_store_layer_id(id: &str) -> Result<()> {
    if is_hex64(id) {
        Ok(())
    } else {
        Err(FormatError::new(format!(
            "layer ID {id:?} is not 64 lower-case hex digits"
        )))
    }
}

/// Longest layer ID accepted, in bytes. containers/storage makes 64-hex-digit
/// IDs; twice that leaves room for callers with their own scheme while every
/// name built from an ID (`staging/<pid>-<seq>-rm-<id>`) stays below the
/// 255-byte file name limit.
pub const MAX_ID_LEN: usize = 128;

/// An ID as error messages show it: quoted and escaped (a newline or a
/// terminal escape in an ID cannot forge log lines), cut after 80 characters.
pub fn show_id(id: &str) -> String {
    const SHOWN: usize = 80;
    match id.char_indices().nth(SHOWN) {
        None => format!("{id:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &id[..cut], id.len()),
    }
}

/// What is wrong with `id` as a layer ID of the driver home (any caller's
/// scheme), `None` when nothing is. IDs become path components (`layers/<id>`,
/// `staging/…-<id>`, `<run_root>/cvmfs/mounts/<id>`), parts of overlay mount
/// data and words in log lines, so besides what would escape a directory
/// (`/`, `.`, `..`) they may not hold control characters, the mount data
/// separators `,` `:` and their escape `\`, or exceed [`MAX_ID_LEN`].
pub fn layer_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("is empty".into());
    }
    if id == "." || id == ".." {
        return Some("is a relative path component".into());
    }
    if id.len() > MAX_ID_LEN {
        // show_id gives the length.
        return Some(format!("is longer than {MAX_ID_LEN} bytes"));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Some(format!("contains the control character U+{:04X}", c as u32));
    }
    id.chars()
        .find(|c| matches!(c, '/' | ',' | ':' | '\\'))
        .map(|c| format!("contains {c:?} (a path or mount option separator)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_ids() {
        let h = "ab".repeat(32);
        assert_eq!(digest_hex(&sha256_digest(&h)).unwrap(), h);
        for bad in ["sha512:ab", "sha256:AB", "ab", "sha256:"] {
            let e = digest_hex(bad).unwrap_err().to_string();
            assert!(e.contains("is not sha256:<64"), "{e}");
        }
        validate_store_layer_id(&h).unwrap();
        for bad in ["Base", &"AB".repeat(32), &"ab".repeat(31)] {
            let e = validate_store_layer_id(bad).unwrap_err().to_string();
            assert!(e.contains("64 lower-case hex"), "{e}");
        }
        assert_eq!(layer_id_problem("Base"), None);
        assert!(layer_id_problem("a:b").unwrap().contains("separator"));
        assert!(layer_id_problem(&"x".repeat(MAX_ID_LEN + 1))
            .unwrap()
            .contains("longer"));
        assert_eq!(show_id("a\nb"), "\"a\\nb\"");
    }
}
