//! Entry points for the fuzz targets (`fuzz/`, `make fuzz`) and for the replay of
//! the inputs they once failed on (`fuzz/regressions/<target>/`, replayed by
//! `tests/fuzz_replay.rs` in `make test`). Each takes arbitrary bytes and must
//! return — accepting or refusing — without panicking, hanging or allocating
//! without bound. One table, so a target and its replay can never drift apart.

use std::path::Path;

/// A fuzz target: its name and entry point.
pub type Target = (&'static str, fn(&[u8]));

/// `(name, entry point)` of every target; the names are `fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: &[Target] = &[
    ("tar_headers", tar_headers),
    ("tar_unpack", tar_unpack),
    ("layer_record", layer_record),
    ("marker_list", marker_list),
    ("ownership_file", ownership_file),
    ("manifest", manifest),
    ("image_config", image_config),
];

/// Read every header of `data` with the one tar parser (PAX and GNU
/// extensions, long names, sparse maps, base-256 numbers) and its content.
pub fn tar_headers(data: &[u8]) {
    let mut reader = cvmfs_graphdriver::archive::tarparse::TarReader::new(data);
    while let Ok(Some(_)) = reader.next_entry() {
        if std::io::copy(&mut reader, &mut std::io::sink()).is_err() {
            break;
        }
    }
}

/// Unpack `data` as a layer tar into a scratch directory: names, links,
/// whiteouts and modes applied beneath it.
pub fn tar_unpack(data: &[u8]) {
    let Ok(dir) = scratch_dir() else { return };
    let opts = cvmfs_graphdriver::archive::ApplyOptions {
        ignore_chown_errors: true,
        ..Default::default()
    };
    let _ = cvmfs_graphdriver::archive::apply_tar(data, dir.path(), &opts);
}

/// A layer record (`podmanStore/cvmfs/layers/<id>/layer.json`) as the driver reads it.
pub fn layer_record(data: &[u8]) {
    let _ = cvmfs_graphdriver::layout::parse_record(data);
}

/// A record's marker list (JSON array of paths of raw `.wh.*` files).
pub fn marker_list(data: &[u8]) {
    let _ = cvmfs_graphdriver::mount::whiteouts::parse_marker_list_json(data);
}

/// An ownership file (`ownership.json`: the image's owners of a layer's entries).
pub fn ownership_file(data: &[u8]) {
    let _ = cvmfs_graphdriver::mount::whiteouts::parse_owners(data);
}

/// A manifest or index as a registry or an OCI layout serves it, and a
/// docker-archive's `manifest.json`.
pub fn manifest(data: &[u8]) {
    let _ = cvmfs_publisher::oci::parse_manifest(data, None);
    let _ = cvmfs_publisher::oci::parse_docker_archive_manifest(data);
}

/// An image config blob.
pub fn image_config(data: &[u8]) {
    let _ = cvmfs_publisher::oci::parse_config(data);
}

fn scratch_dir() -> std::io::Result<ScratchDir> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let p = std::env::temp_dir().join(format!(
        "cvmfs-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&p)?;
    Ok(ScratchDir(p))
}

/// A directory removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = cvmfs_graphdriver::archive::fsutil::remove_all(&self.0);
    }
}
