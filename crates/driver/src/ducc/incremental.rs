//! The store of a DUCC repository is updated in place, so that a DUCC
//! publication costs in proportion to what it changed, not to the size of
//! the repository.
//!
//! Measured (`ducc_store` `measure`): building a store from scratch is
//! dominated by creating three inodes per image (a directory, the manifest,
//! the config link), about 0.1 ms each on this ext4 (inode allocation), four
//! seconds for 10 000 images; reading and parsing DUCC's indexes is some
//! 20 ms. So an image's directory is written once and kept as long as DUCC
//! lists the image (it is content-addressed: ID = config digest, and its
//! manifest is rewritten when DUCC's layer list gives another one), and
//! each publication only rewrites the three index files (`images.json`,
//! `layers.json`, `ducc-index`), each whole, renamed into place.
//!
//! `ducc-listed` remembers, per image listed at the last update, its config
//! size and manifest digest: an image already there costs neither a
//! repository `lstat` nor a write.
//!
//! Durability without an `fsync` of the indexes (whose size grows with the
//! repository: their `fsync` was most of an update's wall time on a busy
//! disk): `ducc-source`, written last, names the publication and the inode
//! and size of each index file as written. `Init` takes the store as up to
//! date only when all of them still match (a few local `stat`s); after a
//! crash that lost a rename or a file's data (the inode or size differ) the
//! store is brought up to date again. New image directories are made
//! durable before they are renamed in, since `ducc-listed` then vouches for
//! them.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::err;

/// Per image listed at the last update: `<id> <config size> <manifest digest hex>`.
pub(super) const LISTED_FILE: &str = "ducc-listed";
/// The publication (see `source_key`) the store was last updated from.
pub(super) const SOURCE_FILE: &str = "ducc-source";
/// Up to this many new entries they are made durable one `fsync` each;
/// above, one `syncfs` is cheaper.
const FSYNC_EACH_MAX: usize = 64;
/// Largest `ducc-listed` read (some 100 000 images).
const MAX_LISTED_BYTES: u64 = 64 << 20;

/// What `ducc-listed` says about one image: enough to list it again
/// verbatim while DUCC describes it the same way (same fingerprint).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Known {
    pub(super) config_size: u64,
    pub(super) manifest_hex: String,
    /// Hash of what DUCC's indexes say about the image (`-`: converted
    /// whole, never listed verbatim).
    pub(super) fingerprint: String,
    /// Its `images.json` entry (JSON text, one line).
    pub(super) entry: String,
    /// Bottom first: (layer ID, `layers.json` entry, `ducc-index` line).
    pub(super) layers: Vec<(String, String, String)>,
}

impl Known {
    /// Whether the image's big data (config size, manifest) are the same.
    pub(super) fn same_big_data(&self, other: &Known) -> bool {
        self.config_size == other.config_size && self.manifest_hex == other.manifest_hex
    }
}

/// What the last update listed: every image's ID, and what is known of the
/// images not listed verbatim this time.
pub(super) struct Before {
    pub(super) ids: std::collections::HashSet<String>,
    pub(super) changed: HashMap<String, Known>,
}

/// The images listed at the last update; empty when there was none (or
/// the file is unreadable: then everything is simply written again).
pub(super) fn read_listed(root: &Path) -> HashMap<String, Known> {
    let Ok(bytes) = super::read_capped(&root.join(LISTED_FILE), MAX_LISTED_BYTES) else {
        return HashMap::new();
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return HashMap::new();
    };
    text.lines().filter_map(parse_listed_line).collect()
}

/// One line of `ducc-listed`: `<id> <config size> <manifest hex>
/// <fingerprint>`, then tab-separated the entry and per layer its ID,
/// entry and index line. Our own file, but a bad line is only skipped.
fn parse_listed_line(line: &str) -> Option<(String, Known)> {
    let mut fields = line.split('\t');
    let mut head = fields.next()?.split(' ');
    let (id, size, manifest, fingerprint) =
        (head.next()?, head.next()?, head.next()?, head.next()?);
    if !cvmfs_format::is_hex64(id) || !cvmfs_format::is_hex64(manifest) {
        return None;
    }
    let entry = fields.next()?.to_string();
    let rest: Vec<&str> = fields.collect();
    if rest.len() % 3 != 0 {
        return None;
    }
    let layers = rest
        .chunks(3)
        .map(|c| (c[0].to_string(), c[1].to_string(), c[2].to_string()))
        .collect();
    let known = Known {
        config_size: size.parse().ok()?,
        manifest_hex: manifest.to_string(),
        fingerprint: fingerprint.to_string(),
        entry,
        layers,
    };
    Some((id.to_string(), known))
}

/// Append image `id`'s line of `ducc-listed` to `out` (JSON text has no
/// raw tab or newline).
pub(super) fn append_listed(out: &mut String, id: &str, k: &Known) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{id} {} {} {}\t{}",
        k.config_size, k.manifest_hex, k.fingerprint, k.entry
    );
    for (layer, entry, line) in &k.layers {
        for field in [layer, entry, line] {
            out.push('\t');
            *out += field;
        }
    }
    out.push('\n');
}

/// The store's index files, relative to its root.
const INDEX_FILES: [&str; 5] = [
    "cvmfs-images/images.json",
    "cvmfs-layers/layers.json",
    super::lazy::INDEX_FILE,
    super::lazy::REPOSITORY_FILE,
    LISTED_FILE,
];

/// `ducc-source`'s text: publication `source`, then each index file's inode
/// and size as they are now; `None` when one is missing.
fn source_record(root: &Path, source: &str, extra: &[&str]) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut text = format!("{}\n", source.replace('\n', " "));
    for name in INDEX_FILES.iter().chain(extra) {
        let st = fs::symlink_metadata(root.join(name)).ok()?;
        text += &format!("{name} {} {}\n", st.ino(), st.len());
    }
    Some(text)
}

/// Whether the store at `root` was brought up to date with publication
/// `source` and its index files are the ones written then.
/// `extra`: more index files the store has (on demand).
pub(super) fn is_up_to_date(root: &Path, source: &str, extra: &[&str]) -> bool {
    let Ok(bytes) = super::read_capped(&root.join(SOURCE_FILE), 64 << 10) else {
        return false;
    };
    source_record(root, source, extra).is_some_and(|want| want.as_bytes() == bytes)
}

/// The publication `ducc-source` names (its first line), if any.
pub(super) fn recorded_source(root: &Path) -> Option<String> {
    let bytes = super::read_capped(&root.join(SOURCE_FILE), 64 << 10).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.lines().next().map(str::to_string)
}

/// Record that the store at `root` is up to date with publication `source`.
pub(super) fn write_source(root: &Path, source: &str, extra: &[&str]) -> io::Result<()> {
    let text = source_record(root, source, extra)
        .ok_or_else(|| err(format!("{}: an index file is missing", root.display())))?;
    replace_file(&root.join(SOURCE_FILE), text.as_bytes())
}

/// Image directories staged for a store, renamed into `cvmfs-images/`
/// together once durable.
pub(super) struct Staged {
    staging: PathBuf,
    /// (staged directory, its final place)
    dirs: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    pub(super) fn new(home: &Path) -> Staged {
        Staged {
            staging: home.join("staging"),
            dirs: Vec::new(),
        }
    }

    /// A fresh staging directory for what will become `dest`.
    pub(super) fn dir_for(&mut self, dest: &Path) -> io::Result<PathBuf> {
        let stage = self.staging.join(format!(
            "{}-{}-ducc-image",
            std::process::id(),
            super::SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir_all(&stage).map_err(|e| err(format!("{}: {e}", stage.display())))?;
        self.dirs.push((stage.clone(), dest.to_path_buf()));
        Ok(stage)
    }

    pub(super) fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Make every staged directory durable, then rename each into place;
    /// one already there (written for another manifest, or by a concurrent
    /// builder) is exchanged and removed.
    pub(super) fn install(self, store_root: &Path) -> io::Result<()> {
        if self.dirs.len() > FSYNC_EACH_MAX {
            syncfs(store_root);
        } else {
            for (stage, _) in &self.dirs {
                fsync_tree(stage)?;
            }
        }
        let mut result = Ok(());
        for (stage, dest) in &self.dirs {
            if result.is_ok() {
                result = install_dir(stage, dest);
            }
            let _ = fs::remove_dir_all(stage);
        }
        result?;
        if let Some(parent) = self.dirs.first().and_then(|d| d.1.parent()) {
            fsync_path(parent)?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (stage, _) in &self.dirs {
            let _ = fs::remove_dir_all(stage);
        }
    }
}

fn install_dir(stage: &Path, dest: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let named = |e: rustix::io::Errno| {
        err(format!(
            "rename {} to {}: {e}",
            stage.display(),
            dest.display()
        ))
    };
    match renameat_with(CWD, stage, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::EXIST || e == rustix::io::Errno::NOTEMPTY => {
            // `stage` then holds the old directory, removed by the caller
            renameat_with(CWD, stage, CWD, dest, RenameFlags::EXCHANGE).map_err(named)
        }
        Err(e) => Err(named(e)),
    }
}

/// Write `data` to `path` whole or not at all for its readers: a temporary
/// file beside it renamed over it (not synced: see `ducc-source` above).
pub(super) fn replace_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("a store file has a directory");
    fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        super::SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let written = fs::write(&tmp, data);
    let renamed = written.and_then(|()| fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed.map_err(|e| err(format!("{}: {e}", path.display())))
}

/// Remove image directories of `images_dir` that are neither listed now
/// nor were at the last update (a podman that read the previous listing a
/// moment ago may still read them). Only 64-hex names are touched.
pub(super) fn prune_images(
    images_dir: &Path,
    now: &std::collections::HashSet<String>,
    before: &std::collections::HashSet<String>,
) {
    let Ok(entries) = fs::read_dir(images_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if cvmfs_format::is_hex64(&name) && !now.contains(&name) && !before.contains(&name) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn syncfs(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = rustix::fs::syncfs(&f);
    }
}

fn fsync_path(path: &Path) -> io::Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(format!("fsync {}: {e}", path.display())))
}

/// `fsync` a staged image directory: its files, then itself.
fn fsync_tree(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir).map_err(|e| err(format!("{}: {e}", dir.display())))? {
        let e = e?;
        if e.file_type()?.is_file() {
            fsync_path(&e.path())?;
        }
    }
    fsync_path(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_round_trips_and_ignores_bad_lines() {
        let t = tempfile::tempdir().unwrap();
        let k = Known {
            config_size: 123,
            manifest_hex: "b".repeat(64),
            fingerprint: "f".repeat(32),
            entry: "{\"id\":1}".into(),
            layers: vec![("c".repeat(64), "{}".into(), "line".into())],
        };
        let a = "a".repeat(64);
        let mut text = String::new();
        append_listed(&mut text, &a, &k);
        text += "junk line\nx 1 2\n";
        fs::write(t.path().join(LISTED_FILE), text).unwrap();
        let read = read_listed(t.path());
        assert_eq!(read.len(), 1);
        assert_eq!(read[&a], k);
        assert!(read_listed(&t.path().join("none")).is_empty());
    }

    #[test]
    fn a_lost_index_write_makes_the_store_out_of_date() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for name in INDEX_FILES {
            replace_file(&root.join(name), b"[]").unwrap();
        }
        assert!(!is_up_to_date(root, "rev=1", &[]), "never written");
        write_source(root, "rev=1", &[]).unwrap();
        assert!(is_up_to_date(root, "rev=1", &[]));
        assert!(!is_up_to_date(root, "rev=2", &[]), "another publication");
        // a crash that kept the rename but not the data: an empty file
        fs::write(root.join("cvmfs-images/images.json"), b"").unwrap();
        assert!(!is_up_to_date(root, "rev=1", &[]));
        // one that lost the rename: the old file (another inode)
        write_source(root, "rev=1", &[]).unwrap();
        let old = root.join("old");
        fs::write(&old, b"[]").unwrap();
        fs::rename(&old, root.join("ducc-index")).unwrap();
        assert!(!is_up_to_date(root, "rev=1", &[]));
    }

    #[test]
    fn a_stale_image_directory_is_exchanged() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        let dest = t.path().join("store/cvmfs-images").join("c".repeat(64));
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("manifest"), b"old").unwrap();
        let mut staged = Staged::new(&home);
        let stage = staged.dir_for(&dest).unwrap();
        fs::write(stage.join("manifest"), b"new").unwrap();
        staged.install(&t.path().join("store")).unwrap();
        assert_eq!(fs::read(dest.join("manifest")).unwrap(), b"new");
        assert_eq!(fs::read_dir(home.join("staging")).unwrap().count(), 0);
    }
}
