//! Helpers shared by the `archive_*` integration tests.
#![allow(dead_code)]

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cvmfs_graphdriver::archive::{self, ApplyOptions, ArchiveError};
use cvmfs_publisher::layer_spec;

pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cvmfs-archive-test")
        .tempdir()
        .unwrap()
}

/// A fresh empty directory `name` under `base`.
pub fn mkdir(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn apply_spec(spec: &str, dest: &Path) -> Result<u64, ArchiveError> {
    apply_spec_with(spec, dest, &ApplyOptions::default())
}

pub fn apply_spec_with(spec: &str, dest: &Path, opts: &ApplyOptions) -> Result<u64, ArchiveError> {
    let tar = layer_spec::spec_to_tar(spec).unwrap();
    archive::apply_tar(&tar[..], dest, opts)
}

pub fn snap(dir: &Path) -> String {
    layer_spec::snapshot_with(dir, layer_spec::SnapshotOptions { mtimes: true }).unwrap()
}

pub fn is_whiteout(p: &Path) -> bool {
    let md = std::fs::symlink_metadata(p).unwrap();
    md.file_type().is_char_device() && md.rdev() == 0
}

pub fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

/// Names and headers of a tar, in order: (name, entry type byte, uid, gid, mode, pax keys).
pub fn tar_listing(tar: &[u8]) -> Vec<(String, u8, u64, u64, u32, Vec<String>)> {
    let mut ar = tar::Archive::new(tar);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let h = e.header().clone();
        let mut keys = Vec::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                keys.push(x.unwrap().key().unwrap().to_string());
            }
        }
        out.push((
            name,
            h.entry_type().as_byte(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mode().unwrap(),
            keys,
        ));
    }
    out
}

/// Every path under `dir` (relative), sorted: to check nothing appeared where it
/// must not.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
