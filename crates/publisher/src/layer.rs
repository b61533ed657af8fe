//! Unpacking one layer into a DUCC `layerfs` directory while recording its
//! diffID, size and tar-split, in a single pass over the uncompressed stream.
//!
//! One tar parser ([`cvmfs_graphdriver::archive::tarparse`]) reads the stream; the hardened
//! unpacker consumes its entries (paths kept beneath the root, no symlink ever
//! followed, hostile entries rejected) and the tar-split recorder observes the
//! bytes it consumed, so both describe the same names and sizes. DUCC's `layerfs`
//! keeps OCI whiteouts as the raw `.wh.*` files of the tar, which the unpacker
//! writes as such (with the mode, owner and time the tar gives them).

use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::tarsplit::{KeptEntries, TarSplitter};
use super::{Error, Result};
use cvmfs_graphdriver::archive::tarparse::TarReader;
use cvmfs_graphdriver::archive::{self, ApplyOptions, WHITEOUT_PREFIX};

/// What unpacking a layer produced.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// `sha256:<hex>` of the uncompressed tar (the diffID).
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub diff_size: u64,
    /// What later steps need of the tar's entries (markers, owners), in order.
    pub entries: KeptEntries,
}

/// Hashes and counts everything read through it: the diffID covers every byte
/// of the stream, trailing padding included.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Unpack the uncompressed layer tar `input` into `layerfs` (created, must not
/// exist), writing its tar-split JSON lines to `tar_split`.
/// With `reject_devices`, a device node entry fails the layer.
pub fn unpack<R: Read, W: Write>(
    input: R,
    layerfs: &Path,
    tar_split: W,
    reject_devices: bool,
) -> Result<(Unpacked, W)> {
    std::fs::create_dir(layerfs).map_err(|e| Error::io(layerfs, e))?;
    let mut split = TarSplitter::new(tar_split).reject_devices(reject_devices);
    let mut hashing = Hashing {
        inner: input,
        hash: Sha256::new(),
        size: 0,
    };
    // Unprivileged, files belong to the publisher (the records then say
    // "ownership":"lost"), as with DUCC.
    let opts = ApplyOptions {
        ignore_chown_errors: !rustix::process::geteuid().is_root(),
        ..ApplyOptions::default()
    };
    {
        let mut tar = TarReader::new(&mut hashing).with_observer(&mut split);
        archive::unpack_layerfs(&mut tar, layerfs, &opts).map_err(|e| Error::msg(e.to_string()))?;
    }
    // The parser stops at the end-of-archive blocks; the diffID and tar-split
    // cover every byte of the stream, trailing padding included.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match hashing.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::msg(format!("reading layer: {e}"))),
        };
        split.trailer(&buf[..n]).map_err(Error::msg)?;
    }
    let diff_id = format!("sha256:{}", hex(&hashing.hash.clone().finalize()));
    let diff_size = hashing.size;
    let (w, entries) = split.finish().map_err(Error::msg)?;
    Ok((
        Unpacked {
            diff_id,
            diff_size,
            entries,
        },
        w,
    ))
}

/// The raw whiteout marker files [`unpack`] (or DUCC) leaves in `layerfs` for
/// a tar with `entries` (paths relative to `layerfs`, sorted, each once), for the
/// driver's layer record: with the list it never has to walk the layer to
/// find them. `None` when a marker's name is not UTF-8 (JSON cannot carry
/// it) or some entries were not kept (too many names): the driver then walks
/// the layer.
pub fn marker_list(entries: &KeptEntries) -> Option<Vec<String>> {
    if !entries.complete {
        return None;
    }
    let mut out = Vec::new();
    for e in entries.iter() {
        let Some((base, dir)) = name_components(&e.name) else {
            continue;
        };
        // AUFS metadata (`.wh..wh.plnk`) is listed too: unpacking drops it,
        // DUCC keeps it, and hiding a name that is not there is harmless.
        if !base.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            continue;
        }
        let mut path = Vec::with_capacity(e.name.len());
        for c in dir {
            path.extend_from_slice(c);
            path.push(b'/');
        }
        path.extend_from_slice(base);
        out.push(String::from_utf8(path).ok()?);
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// A tar name's last component and its directories, as unpacking resolves
/// them (empty and `.` components dropped); `None` for the root.
fn name_components(name: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let mut comps: Vec<&[u8]> = name
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let base = comps.pop()?;
    Some((base, comps))
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// True if `md` is an overlay-style whiteout (0/0 character device).
pub fn is_overlay_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarsplit::EntryInfo;

    fn entry(name: &str) -> EntryInfo {
        EntryInfo {
            name: name.as_bytes().to_vec(),
            typeflag: b'0',
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            linkname: Vec::new(),
        }
    }

    #[test]
    fn marker_list_names_every_marker_once_as_unpacked() {
        let entries: KeptEntries = [
            "./etc/",
            "./etc/.wh.passwd",
            "etc//.wh.passwd",
            "/var/cache/.wh..wh..opq",
            "usr/bin/tool",
            "./.wh..wh.plnk",
            ".wh.top",
        ]
        .into_iter()
        .map(entry)
        .collect::<Vec<_>>()
        .into();
        assert_eq!(
            marker_list(&entries).unwrap(),
            vec![
                ".wh..wh.plnk",
                ".wh.top",
                "etc/.wh.passwd",
                "var/cache/.wh..wh..opq"
            ]
        );
        let mut odd = entry("x/.wh.");
        odd.name.push(0xff);
        assert_eq!(
            marker_list(&vec![odd].into()),
            None,
            "non-UTF-8 names cannot be listed"
        );
        assert_eq!(
            marker_list(&vec![entry("./")].into()).unwrap(),
            Vec::<String>::new()
        );
    }
}
