//! Tar in and out of local layer directories, OCI <-> overlay whiteout conversion,
//! change lists, disk usage, tree copies and ownership remapping.
//!
//! A local layer's `diff/` directory is kept in *overlay form*: a deleted name is a
//! 0/0 character device and an opaque directory carries `trusted.overlay.opaque=y`.
//! Image layers travel in *OCI form*: `.wh.<name>` and `<dir>/.wh..wh..opq` marker
//! files. [`apply_tar`] converts OCI -> overlay, [`write_diff_tar`] overlay -> OCI.
//!
//! Behaviour follows containers/storage `pkg/archive` (Unpack with the overlay
//! whiteout converter, TarWithOptions, OverlayChanges) and `pkg/directory`, so that
//! the storage conformance suites see the same results as with the `overlay` driver.
//! Where we are stricter it is for safety against hostile tars: every entry must stay
//! beneath the destination, no existing symlink is ever followed while creating
//! entries, and a truncated archive is an error rather than a partial success.
//!
//! Every tar is read by one parser, [`tarparse`], whose entries both the unpacker and
//! the publisher's tar-split recorder consume; it follows Go's `archive/tar` and
//! refuses headers that readers could interpret differently (a key given twice, a
//! GNU long name and a PAX path, a ustar prefix under an unknown version, ...),
//! which `tests/tar_differential.rs` checks against Go on generated streams.
//! Unpacking stops at the end-of-archive marker.
//!
//! Deliberate differences from Go, all checked by the tests (`tests/archive_*.rs`,
//! which can also compare against containers/storage itself through
//! `tests/archive_support/gocheck`):
//!
//! - apply: an entry below a symlink is rejected (Go, chrooted, follows in-root
//!   symlinks); a `..` climbing above the root is rejected (Go clamps it); xattrs
//!   `trusted.overlay.*`/`user.overlay.*` in a tar are ignored (overlay state comes
//!   only from OCI whiteouts); a whiteout next to a same-named entry of the same tar
//!   keeps the entry (OCI: whiteouts apply to lower layers; Go fails with EEXIST);
//!   `.wh..wh..opq` also clears what the destination held before the tar (what this
//!   tar created stays); whiteout devices get the marker's mtime; the tar must end
//!   with an end-of-archive block. On error the destination holds a partial layer:
//!   the caller discards it.
//! - write: an opaque directory always gets its `.wh..wh..opq` marker (Go omits it
//!   when no parent layer has the directory; the marker is harmless then).
//! - changes: parent layers are examined with `lstat` (Go's `stat` follows symlinks,
//!   even absolute ones, and fails on ENOTDIR where a parent has a file in place of
//!   a directory of this layer; we count such a path as new).

use std::path::{Path, PathBuf};

mod apply;
mod changes;
pub mod copy;
mod dirtimes;
pub mod fsutil;
pub mod idmap;
mod remap;
pub mod tarout;
pub mod tarparse;
mod usage;

pub use idmap::{IdMap, IdMappings, InvalidIdMap, UnmappedId, MAX_RANGES};

/// Errors of the archive operations. Every variant names the path or tar entry concerned.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A filesystem or stream operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed or hostile tar entry (path escaping the root, crossing a symlink,
    /// hardlink to a missing target, bad whiteout name, truncated archive, ...).
    #[error("entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },
    /// Something this implementation does not handle (e.g. an unknown tar entry type).
    #[error("unsupported: {what}")]
    Unsupported { what: String },
    /// An owner that the given ID mappings cannot translate.
    #[error("{path}: {source}")]
    IdMapping {
        path: String,
        #[source]
        source: UnmappedId,
    },
}

impl ArchiveError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ArchiveError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        ArchiveError::BadEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}

/// Options of [`apply_tar`], the equivalent of the overlay driver's `TarOptions`.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Map owners container -> host; `None` keeps them as in the tar.
    pub mappings: Option<IdMappings>,
    /// Ignore failures of `lchown` (rootless without enough subordinate IDs).
    pub ignore_chown_errors: bool,
    /// Create everything with these permission bits instead of the tar's, never chown,
    /// and record the real owner/mode in the `user.containers.override_stat` xattr
    /// (containers/storage `force_mask`).
    pub force_mask: Option<u32>,
}

/// Apply an uncompressed OCI layer tar into `dest` (a local layer's diff dir),
/// converting OCI whiteouts to overlayfs form: `.wh.<name>` -> a 0/0 character device
/// `<name>`; `.wh..wh..opq` -> xattr `trusted.overlay.opaque=y` on the directory.
/// Ownership is mapped container->host through `opts.mappings`.
///
/// Returns `dir_size(dest)` after applying, as the overlay driver's ApplyDiff does
/// (graphtest compares it with DiffSize).
pub fn apply_tar<R: std::io::Read>(
    reader: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<u64, ArchiveError> {
    apply::apply(reader, dest, opts)?;
    dir_size(dest)
}

/// Unpack the entries `tar` yields into `dest` in DUCC's `layerfs` form: OCI
/// whiteouts stay the `.wh.*` marker files of the tar (AUFS metadata is
/// dropped). Stops at the end of the archive; no size walk afterwards.
pub fn unpack_layerfs<R: std::io::Read>(
    tar: &mut tarparse::TarReader<'_, R>,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<(), ArchiveError> {
    apply::apply_entries(tar, dest, opts, true)
}

/// Write an uncompressed OCI tar of a layer's own diff directory (overlay form) to `w`:
/// 0/0 char devices -> `.wh.<name>`, opaque xattr -> `<dir>/.wh..wh..opq`.
/// Ownership is mapped host->container through `mappings`.
pub fn write_diff_tar<W: std::io::Write>(
    diff_dir: &Path,
    mappings: Option<&IdMappings>,
    w: W,
) -> Result<(), ArchiveError> {
    tarout::write_diff_tar(diff_dir, mappings, w)
}

/// One entry of a layer's change list (Go `archive.Change`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Absolute-style path inside the layer, e.g. `/etc/hosts`.
    pub path: String,
    pub kind: ChangeKind,
}

/// Go `archive.ChangeType`; serialized as its integer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modify = 0,
    Add = 1,
    Delete = 2,
}

impl serde::Serialize for ChangeKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

/// Changes of a layer relative to its parent chain, like containers/storage
/// `OverlayChanges(layers, rw)`: `lower_dirs` are the parent chain's content dirs,
/// nearest parent first.
pub fn changes(diff_dir: &Path, lower_dirs: &[PathBuf]) -> Result<Vec<Change>, ArchiveError> {
    changes::overlay_changes(diff_dir, lower_dirs)
}

/// Disk usage of a tree, see [`dir_usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirUsage {
    /// Apparent size of everything but directories, each inode counted once.
    pub size: u64,
    /// Number of distinct inodes, the root included.
    pub inodes: u64,
}

/// Disk usage like containers/storage `pkg/directory.Usage`.
pub fn dir_usage(dir: &Path) -> Result<DirUsage, ArchiveError> {
    usage::dir_usage(dir)
}

/// `dir_usage(dir)?.size`, Go's `directory.Size`.
pub fn dir_size(dir: &Path) -> Result<u64, ArchiveError> {
    Ok(dir_usage(dir)?.size)
}

/// Copy a tree preserving type, mode, ownership, xattrs (incl. `trusted.overlay.*`),
/// timestamps, hardlinks and devices (CreateFromTemplate). `dst` may be missing or an
/// existing directory, whose metadata is then replaced by `src`'s.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), ArchiveError> {
    copy::copy_tree(src, dst)
}

/// Re-own a tree: each uid/gid is mapped host->container through `to_container`, then
/// container->host through `to_host` (UpdateLayerIDMap, Go `ChownPathByMaps`).
pub fn remap_ownership(
    dir: &Path,
    to_container: Option<&IdMappings>,
    to_host: Option<&IdMappings>,
) -> Result<(), ArchiveError> {
    remap::remap_ownership(dir, to_container, to_host)
}

/// The OCI whiteout names (the opaque marker, the prefix of every marker),
/// defined with the marker lists of the store format.
pub use cvmfs_format::markers::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
