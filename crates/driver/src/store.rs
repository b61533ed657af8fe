//! The driver home: local layer records and directories, short links, staging.
//!
//! ```text
//! <home>/layers/<id>/{layer.json,diff,work,merged}   (layer.json: cvmfs_format::LocalRecord)
//! <home>/l/<link> -> ../layers/<id>/diff      (short names for the mount(2) fallback)
//! <home>/empty/                               (lower dir for parentless layers)
//! <home>/staging/<pid>-<seq>-<what>           (half-created or half-removed layers)
//! <home>/mirror/<store>-<source>/             (local views of image stores: crate::mirror)
//! <home>/record-cache/<id>.json               (store records read before: crate::layout)
//! ```
//!
//! Crash safety: a layer is built completely inside `staging/` and renamed into
//! `layers/` in one step; removal renames it back into `staging/` before deleting.
//! So `layers/` only ever holds complete layers. Staging entries carry the creating
//! process's pid, so recovery on open deletes only what a dead process left behind
//! and never a layer another live handle is building right now.

use std::collections::HashMap;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorCode, Result};

pub use cvmfs_format::id::{show_id, MAX_ID_LEN};
pub use cvmfs_format::LocalRecord;

/// Names no layer may have: see [`cvmfs_format::id::layer_id_problem`] (no
/// `/`, `.`, `..`, control characters, mount data separators `,` `:` `\`,
/// at most [`MAX_ID_LEN`] bytes). containers/storage itself only ever makes
/// 64 lower-case hex digits.
pub fn validate_id(id: &str) -> Result<()> {
    match cvmfs_format::id::layer_id_problem(id) {
        Some(why) => Err(Error::invalid(format!("layer ID {} {why}", show_id(id)))),
        None => Ok(()),
    }
}

/// IDs read from repositories and additional stores must be 64 lower-case hex
/// digits: those records come from outside and are used to build paths.
pub fn validate_digest_id(id: &str) -> Result<()> {
    cvmfs_format::validate_store_layer_id(id)
        .map_err(|e| Error::new(ErrorCode::Repository, e.message))
}

/// Parse and check a local record ([`LocalRecord::parse`], then the parent's
/// ID); errors name the file.
pub fn parse_local_record(path: &Path, bytes: &[u8]) -> Result<LocalRecord> {
    let rec = LocalRecord::parse(bytes)
        .map_err(|e| Error::new(ErrorCode::Io, e.in_file(path).to_string()))?;
    if let Some(p) = &rec.parent {
        validate_id(p).map_err(|e| e.context(path.display()))?;
    }
    Ok(rec)
}

/// Ownership and mode for a new layer's `diff` directory (the merged root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Default for RootAttrs {
    fn default() -> RootAttrs {
        // The overlay driver's default: a fresh image root is r-xr-xr-x root:root.
        RootAttrs {
            mode: 0o555,
            uid: 0,
            gid: 0,
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The driver home.
#[derive(Debug, Clone)]
pub struct Store {
    home: PathBuf,
}

fn mkdir_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(path)?;
    // mkdir applies the umask; the modes here are part of what users see.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::io("create directory", path, e)),
    }
}

/// Remove a tree, tolerating that another handle removes it concurrently.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    for _ in 0..3 {
        match fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => continue,
            Err(e) => return Err(e),
        }
    }
    fs::remove_dir_all(path).or_else(|e| {
        if e.kind() == ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })
}

fn pid_alive(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

fn random_link_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; mixing in time and a counter makes each
    // call different. 10 base32 characters = 50 bits: collisions are checked anyway.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    let mut v = h.finish();
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..10)
        .map(|_| {
            let c = ALPHABET[(v & 31) as usize] as char;
            v >>= 5;
            c
        })
        .collect()
}

impl Store {
    /// Open (creating if needed) the driver home, and clean up what crashed
    /// processes left in `staging/`. Safe to call many times, concurrently.
    pub fn open(home: &Path) -> Result<Store> {
        if !home.is_absolute() {
            return Err(Error::invalid(format!(
                "driver home {:?} is not an absolute path",
                home.display()
            )));
        }
        let store = Store {
            home: home.to_path_buf(),
        };
        ensure_dir(home, 0o700)?;
        ensure_dir(&store.layers_dir(), 0o700)?;
        ensure_dir(&store.links_dir(), 0o700)?;
        ensure_dir(&store.staging_dir(), 0o700)?;
        ensure_dir(&store.aux_dir(), 0o700)?;
        let empty = store.empty_dir();
        match mkdir_mode(&empty, 0o555) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create directory", &empty, e)),
        }
        store.recover()?;
        Ok(store)
    }

    pub fn home(&self) -> &Path {
        &self.home
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.home.join("layers")
    }
    pub fn links_dir(&self) -> PathBuf {
        self.home.join("l")
    }
    pub fn staging_dir(&self) -> PathBuf {
        self.home.join("staging")
    }
    /// Generated whiteout layers for raw-whiteout CVMFS layers (see
    /// [`crate::mount::whiteouts`]), one directory per pair of stacked layers.
    pub fn aux_dir(&self) -> PathBuf {
        self.home.join("aux")
    }
    pub fn empty_dir(&self) -> PathBuf {
        self.home.join("empty")
    }
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.layers_dir().join(id)
    }
    pub fn record_path(&self, id: &str) -> PathBuf {
        self.layer_dir(id).join(cvmfs_format::paths::RECORD_FILE)
    }
    pub fn diff_dir(&self, id: &str) -> PathBuf {
        self.layer_dir(id).join("diff")
    }
    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.layer_dir(id).join("work")
    }
    pub fn merged_dir(&self, id: &str) -> PathBuf {
        self.layer_dir(id).join("merged")
    }

    pub(crate) fn staging_name(&self, what: &str, id: &str) -> PathBuf {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        self.staging_dir()
            .join(format!("{}-{seq}-{what}-{id}", std::process::id()))
    }

    /// Delete staging entries of dead processes and short links whose layer is gone.
    pub fn recover(&self) -> Result<()> {
        let staging = self.staging_dir();
        let entries =
            fs::read_dir(&staging).map_err(|e| Error::io("read directory", &staging, e))?;
        let mut crashed = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
            if let Some(pid) = pid {
                if pid_alive(pid) {
                    continue;
                }
            }
            let path = entry.path();
            remove_tree(&path)
                .map_err(|e| Error::io("recover: remove leftover staging entry", &path, e))?;
            crashed = true;
        }
        // A link is created after its layer is in place and removed before the
        // layer goes, so a dangling link is always a crash leftover. Only look
        // when a crash left something: this runs at every Init and l/ holds one
        // link per layer.
        if !crashed {
            return Ok(());
        }
        let links = self.links_dir();
        if let Ok(entries) = fs::read_dir(&links) {
            for entry in entries.flatten() {
                let path = entry.path();
                if fs::metadata(&path).is_err() && fs::symlink_metadata(&path).is_ok() {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    /// Whether a complete local layer `id` exists.
    pub fn exists(&self, id: &str) -> bool {
        validate_id(id).is_ok() && self.record_path(id).is_file()
    }

    /// Read the record of local layer `id`; `LayerUnknown` if there is none.
    pub fn read(&self, id: &str) -> Result<LocalRecord> {
        validate_id(id)?;
        let path = self.record_path(id);
        // Without fs::read's size hint: its statx is one syscall more per
        // record, and a get reads the record of every layer of the stack.
        let read = |p: &Path| -> io::Result<Vec<u8>> {
            let f = fs::File::open(p)?;
            let mut bytes = Vec::with_capacity(512);
            let max = cvmfs_format::RECORD_MAX_BYTES;
            io::Read::read_to_end(&mut io::Read::take(&f, max), &mut bytes)?;
            Ok(bytes)
        };
        match read(&path) {
            Ok(bytes) => {
                parse_local_record(&path, &bytes).map_err(|e| e.context(format!("layer {id}")))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::layer_unknown(id)),
            Err(e) => Err(Error::io(format!("layer {id}: read record"), &path, e)),
        }
    }

    /// Create local layer `id`: directories and record are built in `staging/`,
    /// `populate` fills the new `diff` dir there, then one rename publishes it.
    pub fn create(
        &self,
        id: &str,
        mut record: LocalRecord,
        root: RootAttrs,
        populate: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        validate_id(id)?;
        let ctx = |what: &str| format!("layer {id}: create: {what}");
        let stage = self.staging_name("new", id);
        let result = (|| {
            mkdir_mode(&stage, 0o700)
                .map_err(|e| Error::io(ctx("staging directory"), &stage, e))?;
            let diff = stage.join("diff");
            mkdir_mode(&diff, root.mode).map_err(|e| Error::io(ctx("diff directory"), &diff, e))?;
            if (root.uid, root.gid) != (0, 0) {
                std::os::unix::fs::chown(&diff, Some(root.uid), Some(root.gid))
                    .map_err(|e| Error::io(ctx("chown diff directory"), &diff, e))?;
            }
            for sub in ["work", "merged"] {
                let p = stage.join(sub);
                mkdir_mode(&p, 0o700).map_err(|e| Error::io(ctx("directory"), &p, e))?;
            }
            populate(&diff)?;
            // A fresh link name, unique in l/.
            let mut link = random_link_name();
            while fs::symlink_metadata(self.links_dir().join(&link)).is_ok() {
                link = random_link_name();
            }
            record.link = Some(link);
            let json = record.to_json();
            let rec_path = stage.join(cvmfs_format::paths::RECORD_FILE);
            fs::write(&rec_path, json).map_err(|e| Error::io(ctx("write record"), &rec_path, e))?;
            let dest = self.layer_dir(id);
            match fs::rename(&stage, &dest) {
                Ok(()) => Ok(record.link.clone().unwrap()),
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) =>
                {
                    Err(Error::new(
                        ErrorCode::LayerExists,
                        format!("layer {id}: create: layer already exists"),
                    ))
                }
                Err(e) => Err(Error::io(ctx("publish layer"), &dest, e)),
            }
        })();
        match result {
            Ok(link) => {
                // After the rename, so that a dangling link always means a crash leftover.
                let _ = self.ensure_link_named(id, &link);
                Ok(())
            }
            Err(e) => {
                let _ = remove_tree(&stage);
                Err(e)
            }
        }
    }

    fn ensure_link_named(&self, id: &str, link: &str) -> Result<PathBuf> {
        let path = self.links_dir().join(link);
        match std::os::unix::fs::symlink(Path::new("../layers").join(id).join("diff"), &path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(path),
            Err(e) => Err(Error::io(
                format!("layer {id}: create short link"),
                &path,
                e,
            )),
        }
    }

    /// The short link `<home>/l/<link>` for a local layer's diff (recreated if a crash lost it).
    pub fn short_link(&self, id: &str, record: &LocalRecord) -> Result<PathBuf> {
        match &record.link {
            Some(link) => self.ensure_link_named(id, link),
            None => Ok(self.diff_dir(id)),
        }
    }

    /// Where [`Store::short_link`] points, without checking that the link exists.
    pub fn short_link_path(&self, id: &str, record: &LocalRecord) -> PathBuf {
        match &record.link {
            Some(link) => self.links_dir().join(link),
            None => self.diff_dir(id),
        }
    }

    /// Remove local layer `id`. Returns false if there was no such layer.
    /// The caller unmounts first.
    pub fn remove(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        let dir = self.layer_dir(id);
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(false);
        }
        if let Ok(rec) = self.read(id) {
            if let Some(link) = rec.link {
                let _ = fs::remove_file(self.links_dir().join(link));
            }
        }
        let stage = self.staging_name("rm", id);
        match fs::rename(&dir, &stage) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(format!("layer {id}: remove"), &dir, e)),
        }
        remove_tree(&stage).map_err(|e| Error::io(format!("layer {id}: remove"), &stage, e))?;
        Ok(true)
    }

    /// IDs of all complete local layers, children before parents (so removing
    /// them in this order never removes a parent first).
    pub fn list(&self) -> Result<Vec<String>> {
        let dir = self.layers_dir();
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("list layers", &dir, e))?;
        let mut parents: HashMap<String, Option<String>> = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list layers", &dir, e))?;
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            match self.read(&id) {
                Ok(rec) => {
                    parents.insert(id, rec.parent);
                }
                Err(e) if e.code() == ErrorCode::LayerUnknown => continue,
                Err(e) => return Err(e),
            }
        }
        let mut depth: HashMap<&str, usize> = HashMap::new();
        for id in parents.keys() {
            // Walk up to the first ancestor whose depth is known (or the root).
            let mut chain = vec![id.as_str()];
            let mut base = 0;
            while let Some(Some(p)) = parents.get(*chain.last().unwrap()) {
                if let Some(d) = depth.get(p.as_str()) {
                    base = d + 1;
                    break;
                }
                if !parents.contains_key(p) || chain.len() > parents.len() {
                    break;
                }
                chain.push(p.as_str());
            }
            for (i, c) in chain.iter().rev().enumerate() {
                depth.entry(c).or_insert(base + i);
            }
        }
        let mut ids: Vec<String> = parents.keys().cloned().collect();
        ids.sort_by(|a, b| depth[b.as_str()].cmp(&depth[a.as_str()]).then(a.cmp(b)));
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("cvmfs")).unwrap();
        (t, s)
    }

    #[test]
    fn ids_from_the_suites_are_accepted_and_hostile_ones_rejected() {
        for ok in ["Base", "Snap", "layer1", "a b", &"f".repeat(64)] {
            validate_id(ok).unwrap();
        }
        validate_id(&"x".repeat(MAX_ID_LEN)).unwrap();
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\0b",
            "a\nb",
            "a\tb",
            "a\u{1b}[2Jb",
            "a\u{7f}b",
            "a\u{85}b",
            "a,lowerdir=/",
            "a:b",
            "a\\b",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            let e = validate_id(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad:?}");
            // The message names the ID, escaped: one line whatever the ID holds.
            let msg = e.to_string();
            assert!(!msg.chars().any(char::is_control), "{msg:?}");
            assert!(msg.contains(&show_id(bad)), "{msg}");
        }
        let long = "y".repeat(10_000);
        let msg = validate_id(&long).unwrap_err().to_string();
        assert!(msg.len() < 300 && msg.contains("10000 bytes"), "{msg}");
        assert_eq!(show_id("a\nb"), "\"a\\nb\"");
        validate_digest_id(&"ab".repeat(32)).unwrap();
        for bad in ["Base", &"AB".repeat(32), &"ab".repeat(31)] {
            let e = validate_digest_id(bad).unwrap_err();
            assert!(e.to_string().contains("64 lower-case hex"), "{e}");
        }
    }

    #[test]
    fn open_creates_the_layout_and_is_idempotent() {
        let (_t, s) = store();
        for d in ["layers", "l", "empty", "staging"] {
            assert!(s.home().join(d).is_dir(), "{d}");
        }
        let s2 = Store::open(s.home()).unwrap();
        assert_eq!(s2.home(), s.home());
        assert!(Store::open(Path::new("relative")).is_err());
    }

    #[test]
    fn create_read_remove_roundtrip() {
        let (_t, s) = store();
        s.create(
            "Base",
            LocalRecord::new(None, true),
            RootAttrs::default(),
            |diff| {
                fs::write(diff.join("f"), b"x").unwrap();
                Ok(())
            },
        )
        .unwrap();
        assert!(s.exists("Base"));
        let rec = s.read("Base").unwrap();
        assert_eq!(rec.parent, None);
        assert!(rec.read_write);
        let md = fs::metadata(s.diff_dir("Base")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o555);
        assert_eq!(fs::read(s.diff_dir("Base").join("f")).unwrap(), b"x");
        // The short link resolves to the diff dir.
        let link = s.short_link("Base", &rec).unwrap();
        assert_eq!(
            fs::canonicalize(&link).unwrap(),
            fs::canonicalize(s.diff_dir("Base")).unwrap()
        );
        // The record on disk is the versioned JSON.
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(s.record_path("Base")).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["kind"], "local");
        assert!(v["parent"].is_null());

        let e = s
            .create(
                "Base",
                LocalRecord::new(None, false),
                RootAttrs::default(),
                |_| Ok(()),
            )
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::LayerExists);
        assert!(e.to_string().contains("layer Base"), "{e}");

        assert!(s.remove("Base").unwrap());
        assert!(!s.exists("Base"));
        assert!(fs::symlink_metadata(&link).is_err(), "short link removed");
        assert!(!s.remove("Base").unwrap());
        assert_eq!(s.read("Base").unwrap_err().code(), ErrorCode::LayerUnknown);
        assert_eq!(fs::read_dir(s.staging_dir()).unwrap().count(), 0);
    }

    #[test]
    fn failed_populate_leaves_nothing_behind() {
        let (_t, s) = store();
        let e = s
            .create(
                "x",
                LocalRecord::new(None, false),
                RootAttrs::default(),
                |_| Err(Error::new(ErrorCode::BadArchive, "boom")),
            )
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadArchive);
        assert!(!s.exists("x"));
        assert!(!s.layer_dir("x").exists());
        assert_eq!(fs::read_dir(s.staging_dir()).unwrap().count(), 0);
    }

    #[test]
    fn recovery_removes_dead_process_leftovers_only() {
        let (_t, s) = store();
        // pid 0x7ffffff0 does not exist; our own pid does.
        let dead = s.staging_dir().join("2147483632-0-new-x");
        let alive = s
            .staging_dir()
            .join(format!("{}-99-new-y", std::process::id()));
        let junk = s.staging_dir().join("junk");
        for d in [&dead, &alive, &junk] {
            fs::create_dir_all(d.join("diff/sub")).unwrap();
        }
        std::os::unix::fs::symlink("../layers/gone/diff", s.links_dir().join("DANGLING")).unwrap();
        Store::open(s.home()).unwrap();
        assert!(!dead.exists());
        assert!(!junk.exists());
        assert!(alive.exists(), "a live handle's staging entry must survive");
        assert!(fs::symlink_metadata(s.links_dir().join("DANGLING")).is_err());
    }

    #[test]
    fn malformed_record_names_the_file() {
        let (_t, s) = store();
        s.create(
            "a",
            LocalRecord::new(None, false),
            RootAttrs::default(),
            |_| Ok(()),
        )
        .unwrap();
        fs::write(s.record_path("a"), b"{\"version\":1,\"kind\":\"loc").unwrap();
        let e = s.read("a").unwrap_err();
        assert!(
            e.to_string()
                .contains(&s.record_path("a").display().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("malformed"), "{e}");
        fs::write(
            s.record_path("a"),
            br#"{"version":7,"kind":"local","parent":null,"read_write":false}"#,
        )
        .unwrap();
        let e = s.read("a").unwrap_err();
        assert!(e.to_string().contains("version 7"), "{e}");
    }

    #[test]
    fn list_puts_children_before_parents() {
        let (_t, s) = store();
        let mk = |id: &str, p: Option<&str>| {
            s.create(id, LocalRecord::new(p, false), RootAttrs::default(), |_| {
                Ok(())
            })
            .unwrap()
        };
        mk("c", Some("b"));
        mk("a", None);
        mk("b", Some("a"));
        mk("d", Some("a"));
        mk("e", Some("ffff-not-local"));
        let l = s.list().unwrap();
        assert_eq!(l.len(), 5);
        let pos = |x: &str| l.iter().position(|i| i == x).unwrap();
        assert!(pos("c") < pos("b"));
        assert!(pos("b") < pos("a"));
        assert!(pos("d") < pos("a"));
    }
}
