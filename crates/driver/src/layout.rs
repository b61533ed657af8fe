//! Resolving layers that are not in the driver home: additional read-only image
//! stores and the CVMFS repositories their records point into.
//!
//! An additional image store (a read-only graphroot, option `imagestore`) keeps
//! our per-layer records at `<store>/cvmfs/layers/<id>/layer.json`. Their
//! format, and everything that can be checked without the filesystem, is
//! `cvmfs_format::record` ([`cvmfs_format::CvmfsRecord`], read with
//! [`cvmfs_format::parse_store_record`]): a `"cvmfs"` record names the
//! repository, the layer's directory in it, its parent, how it encodes
//! whiteouts and whether ownership was kept.
//!
//! Its optional `markers` lists every raw whiteout file of the layer
//! directory, as the publisher wrote them. With it the driver never walks
//! the layer to find them (on CVMFS that walk reads the whole layer's catalog);
//! without it (DUCC's layers) it walks the layer once per whiteout layer built.
//!
//! Its optional `flat` is the publisher's statement that this directory of the
//! same repository holds exactly the root filesystem of this layer's whole
//! chain, applied (our publisher writes it only for flat trees it built
//! itself, equal to `umoci unpack`, never for DUCC's, which differ). The
//! driver may then mount that one directory instead of the chain.
//!
//! A `"local"` record (a store built by this driver on local disk) has the
//! files in `<store>/cvmfs/layers/<id>/diff`.
//!
//! Records come from outside, so everything is validated: the ID is 64 lower-case
//! hex, the path is relative without `..` and stays inside the repository (also
//! after following symlinks), and the repository is a configured one (or contains
//! the store). Repositories are network filesystems that may be slow or hang:
//! every `stat` of one runs on a helper thread. A slow answer is waited for
//! (a first catalog load or an autofs mount legitimately takes seconds), with
//! a progress line on stderr every few seconds, up to `repository_timeout`
//! (default 60 s); only then is the repository "unreachable". What is decided
//! by an answer (a missing repository, an empty mount point, a missing layer
//! directory) is reported as soon as the answer comes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use cvmfs_format::StoreRecord;

use crate::error::{Error, ErrorCode, Result};
use crate::options::Options;
use crate::store::{validate_digest_id, validate_id};

pub use cvmfs_format::paths::{store_repository, STORE_DIR_NAME};
pub use cvmfs_format::record::{Ownership, Whiteouts};
/// Largest store layer record read (one limit for `layer.json`, see
/// [`cvmfs_format::record`]).
pub use cvmfs_format::RECORD_MAX_BYTES;

/// What kind of store layer this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLayerKind {
    Cvmfs {
        repository: PathBuf,
        whiteouts: Whiteouts,
        ownership: Ownership,
    },
    /// A layer directory inside the store itself.
    Local,
}

/// A layer found in an additional image store. Always read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayer {
    pub id: String,
    pub store: PathBuf,
    pub record_path: PathBuf,
    pub parent: Option<String>,
    /// The directory holding the layer's files (used as an overlay lower).
    pub content_dir: PathBuf,
    pub kind: StoreLayerKind,
    /// For a CVMFS layer whose repository lost ownership: the image's owners,
    /// read and validated from `ownership.json` beside the record, if the
    /// publisher provided it.
    pub owners: Option<Arc<Vec<crate::mount::whiteouts::Owner>>>,
    /// For a raw-whiteout CVMFS layer: its marker files as the record lists
    /// them (`None`: not listed, the driver looks for them in the layer).
    pub markers: Option<Arc<Vec<crate::mount::whiteouts::Marker>>>,
    /// The flat root filesystem of this layer's chain, as the record names it
    /// (absolute, inside the layer's repository).
    pub flat: Option<PathBuf>,
    /// The owners of a few entries as published (the record's
    /// `owner-probes`), for noticing a client that shows others.
    pub owner_probes: Option<Arc<Vec<crate::mount::whiteouts::Owner>>>,
    /// When the client does not show the owners as published: the owner it
    /// shows for the first entry found different (see [`crate::claim`]).
    pub client_shows: Option<(u32, u32)>,
}

/// List the first entry of `dir` on a thread of its own, not waited for: on
/// a CVMFS client that loads the nested catalog beneath `dir` (a listing
/// needs it; a lookup of `dir` itself does not), so that a mount's first
/// lookups there find it loaded or under way. Nothing is read; a hung
/// repository holds only this thread.
pub fn warm_catalog(dir: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("cvmfs-catalog".into())
        .spawn(move || {
            if let Ok(mut entries) = fs::read_dir(&dir) {
                let _ = entries.next();
            }
        });
}

/// An entry of the record cache: `<record path>\n<file key>\n<revision>\n`
/// then the record's text, which parses as a record.
struct CachedRecord<'a> {
    key: &'a str,
    revision: &'a str,
    text: &'a [u8],
}

impl<'a> CachedRecord<'a> {
    /// The entry in `bytes` if it is one for `record_path`, else `None`
    /// (damaged or another file: read again from the store).
    fn parse(bytes: &'a [u8], record_path: &Path) -> Option<CachedRecord<'a>> {
        let mut parts = bytes.splitn(4, |&b| b == b'\n');
        let path = parts.next()?;
        let key = std::str::from_utf8(parts.next()?).ok()?;
        let revision = std::str::from_utf8(parts.next()?).ok()?;
        let text = parts.next()?;
        let ours = path == record_path.as_os_str().as_encoded_bytes()
            && !key.is_empty()
            && cvmfs_format::parse_store_record(text).is_ok();
        ours.then_some(CachedRecord {
            key,
            revision,
            text,
        })
    }
}

/// The record cache's directory in the driver home.
pub const RECORD_CACHE_DIR: &str = "record-cache";

/// Write `header` + `text` to `dest` in one rename.
fn write_cached(dir: &Path, dest: &Path, header: &[u8], text: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::AtomicU64;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp-{}-{seq}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(header)?;
        f.write_all(text)?;
        fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn repo_err(record: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::Repository,
        format!("layer record {}: {why}", record.display()),
    )
}

/// Parse and validate a store layer record's text as the driver does, with
/// no filesystem access and no configuration of its own: a pure function
/// for fuzzing. The record is read as layer `0…0` of the store
/// `/cvmfs/fuzz.example.org/podmanStore`, whose repository is therefore the
/// only one accepted.
pub fn parse_record(bytes: &[u8]) -> Result<StoreLayer> {
    let store = Path::new("/cvmfs/fuzz.example.org").join(STORE_DIR_NAME);
    let layout = Layout::new(&Options::default());
    let id = "0".repeat(64);
    let record_path = Layout::record_path(&store, &id);
    layout.parse_record(&store, &id, &record_path, bytes)
}

/// Run `f` on a helper thread; give up after `timeout` (the thread is left to
/// finish on its own: a hung FUSE call cannot be interrupted).
pub fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Option<io::Result<T>> {
    with_progress(timeout, |_| {}, f)
}

/// After how long without an answer the first progress line is shown.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(3);
/// How often it is repeated while the answer is still awaited.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// [`with_timeout`], calling `progress(waited)` after [`PROGRESS_AFTER`] and
/// then every [`PROGRESS_EVERY`] while no answer has come.
pub fn with_progress<T: Send + 'static>(
    timeout: Duration,
    progress: impl Fn(Duration),
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Option<io::Result<T>> {
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = thread::Builder::new()
        .name("cvmfs-stat".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return Some(Err(e));
    }
    let start = std::time::Instant::now();
    let mut next_report = PROGRESS_AFTER;
    loop {
        let waited = start.elapsed();
        if waited >= timeout {
            return None;
        }
        let slice = next_report.min(timeout).saturating_sub(waited);
        match rx.recv_timeout(slice) {
            Ok(r) => return Some(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Some(Err(io::Error::other("repository probe thread died")))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let waited = start.elapsed();
        if waited >= next_report && waited < timeout {
            progress(waited);
            next_report += PROGRESS_EVERY;
        }
    }
}

/// The progress line for a repository (or store) `path` that has not
/// answered `what` for `waited`, as podman shows the driver's stderr.
pub fn progress_line(path: &Path, what: &str, waited: Duration, limit: Duration) -> String {
    format!(
        "cvmfs: waiting for {} ({what}): no answer yet after {}s, giving up after {}s (cvmfs.repository_timeout)",
        path.display(),
        waited.as_secs(),
        limit.as_secs_f64()
    )
}

/// Where a record's relative path leads from its repository.
#[derive(Debug, PartialEq, Eq)]
enum Beneath {
    Dir,
    NotDir,
    /// It leaves the repository (the reason).
    Escapes(&'static str),
    /// It does not exist: why, as far as the repository's root tells.
    Missing(String),
}

/// What a file that should be a regular one is instead, for messages.
fn describe_kind(kind: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Why a directory is missing from repository `repo`, decided from what the
/// repository's root answers (no waiting beyond that answer): the mount
/// point itself is missing, or empty (nothing mounted on it), or the
/// repository is mounted and lacks the layer.
fn why_missing(repo: &Path) -> String {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
    let st = match statx(CWD, repo, AtFlags::empty(), StatxFlags::BASIC_STATS) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => {
            return "the repository's mount point does not exist (repository not mounted?)".into()
        }
        Err(e) => return format!("no such directory; the repository's root: {e}"),
    };
    let mount_root = st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
    if mount_root {
        return "no such directory in the mounted repository (layer not published, or removed?)"
            .into();
    }
    match fs::read_dir(repo).map(|mut d| d.next().is_none()) {
        Ok(true) => {
            "no such directory: the repository's mount point is empty (repository not mounted?)"
                .into()
        }
        _ => "no such directory (layer not published, or repository not mounted?)".into(),
    }
}

/// Resolve `rel` beneath directory `repo` without ever leaving it: every
/// symlink on the way must stay inside (`RESOLVE_BENEATH`, so absolute ones
/// are refused too) and none may be a `/proc` magic link. Also asks the
/// filesystem itself (`fstatfs`): lookups may be answered from the kernel's
/// caches while a FUSE daemon is stuck, statfs always reaches it, so a hung
/// repository shows here and not in the mount(2) that follows.
fn resolve_beneath(repo: &Path, rel: &Path) -> io::Result<Beneath> {
    resolve_beneath_with(repo, rel, false)
}

/// [`resolve_beneath`]; with `no_symlinks`, no symlink at all may be on
/// the way (`RESOLVE_NO_SYMLINKS`).
fn resolve_beneath_with(repo: &Path, rel: &Path, no_symlinks: bool) -> io::Result<Beneath> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let ioe = |e: Errno| io::Error::from_raw_os_error(e.raw_os_error());
    let root = rustix::fs::open(repo, dir_flags, Mode::empty()).map_err(ioe)?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    if no_symlinks {
        resolve |= ResolveFlags::NO_SYMLINKS;
    }
    let fd = match openat2(&root, rel, dir_flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        Err(Errno::XDEV) => return Ok(Beneath::Escapes("resolves (through \"..\" or a symlink)")),
        Err(Errno::LOOP) if no_symlinks => return Ok(Beneath::Escapes("passes through a symlink")),
        Err(Errno::LOOP) => {
            return Ok(Beneath::Escapes(
                "passes through a /proc magic link or a symlink loop",
            ))
        }
        Err(Errno::NOTDIR) => return Ok(Beneath::NotDir),
        Err(e) => return Err(ioe(e)),
    };
    rustix::fs::fstatfs(&fd).map_err(ioe)?;
    Ok(Beneath::Dir)
}

/// The mount point `path` as `/proc/self/mountinfo` spells it (octal
/// escapes for space, tab, newline and backslash).
fn mountinfo_escape(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// When the topmost mount at `mount_point` (in `mountinfo`'s text) is an
/// overlay over exactly one lower directory, that directory. A CVMFS
/// publishing machine's `/cvmfs/<repo>` is such an overlay (the server's
/// read-only union over its client mount `/var/spool/cvmfs/<repo>/rdonly`,
/// ARCHITECTURE §3b): every overlay stacked on it counts one level more
/// against the kernel's stacking limit than on a client.
pub fn overlay_lower_of(mountinfo: &str, mount_point: &Path) -> Option<PathBuf> {
    let want = mountinfo_escape(mount_point);
    let line = mountinfo
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))?;
    let (_, after) = line.split_once(" - ")?;
    let mut fields = after.splitn(3, ' ');
    if fields.next()? != "overlay" {
        return None;
    }
    let superopts = fields.nth(1)?;
    let mut lowers = Vec::new();
    for opt in superopts.split(',') {
        if let Some(v) = opt
            .strip_prefix("lowerdir=")
            .or_else(|| opt.strip_prefix("lowerdir+="))
        {
            lowers.extend(v.split(':').map(str::to_string));
        }
    }
    // One lower, written plainly (no escapes to undo): else not ours to read.
    match lowers.as_slice() {
        [one] if one.starts_with('/') && !one.contains('\\') => Some(PathBuf::from(one)),
        _ => None,
    }
}

/// Additional stores and repositories, as configured.
#[derive(Debug, Clone)]
pub struct Layout {
    stores: Vec<PathBuf>,
    /// Stores synthesised for DUCC repositories, whose records are written
    /// when a layer is first asked for (`ducc::complete`).
    ducc_stores: Vec<PathBuf>,
    /// Where records read from the stores are kept across processes (see
    /// [`Layout::read_record`]); `None`: not kept.
    record_cache: Option<PathBuf>,
    repositories: Vec<PathBuf>,
    timeout: Duration,
    /// Paths whose last probe timed out, with a flag the stuck helper thread
    /// clears when it finally returns. While it is set, further probes of that
    /// path fail at once: a hung repository costs one blocked thread, not one
    /// per call, and every later call answers immediately.
    hung: Arc<Mutex<HashMap<PathBuf, Arc<AtomicBool>>>>,
    /// CVMFS records already read and validated. A layer ID names fixed
    /// content (it is derived from digests), so a published record does not
    /// change; caching keeps a deep CVMFS stack from costing two probes per
    /// layer on every Get. Whether the repository is still there is checked per
    /// mount by [`Layout::check_stack_reachable`]. Records of kind "local" (a
    /// sibling driver home used as a store, whose layers come and go) are
    /// cheap local reads and never cached.
    cache: Arc<Mutex<HashMap<String, StoreLayer>>>,
    /// Where progress lines about slow repositories go (stderr; tests
    /// collect them).
    progress: ProgressSink,
    /// Repositories whose client shows other owners than published, with
    /// what was found, for `Status` ([`crate::claim`]).
    clients: Arc<Mutex<std::collections::BTreeMap<PathBuf, crate::claim::ClientReport>>>,
    /// Per repository: the one directory its mount is a read-only overlay
    /// over, if it is one ([`overlay_lower_of`]), looked up once.
    unstacked: Arc<Mutex<HashMap<PathBuf, Option<PathBuf>>>>,
    /// Rootless: repositories read through an ID-mapped view, with the view
    /// (issue 15 hook; `rootless::find_views`).
    views: Arc<BTreeMap<PathBuf, PathBuf>>,
}

/// Receives the progress lines of [`Layout`] (see [`progress_line`]).
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn Fn(&str) + Send + Sync>);

impl ProgressSink {
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> ProgressSink {
        ProgressSink(Arc::new(f))
    }

    /// Lines to standard error, where podman users see them.
    pub fn stderr() -> ProgressSink {
        ProgressSink::new(|line| eprintln!("{line}"))
    }
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl Layout {
    pub fn new(opts: &Options) -> Layout {
        Layout {
            stores: opts.image_stores.clone(),
            ducc_stores: opts.ducc_stores.clone(),
            repositories: opts.repositories.clone(),
            timeout: opts.repository_timeout,
            hung: Arc::new(Mutex::new(HashMap::new())),
            cache: Arc::new(Mutex::new(HashMap::new())),
            progress: ProgressSink::stderr(),
            clients: Arc::default(),
            unstacked: Arc::default(),
            record_cache: None,
            views: Arc::new(BTreeMap::new()),
        }
    }

    /// The same layout keeping the records it reads in `dir` (the driver
    /// home's [`RECORD_CACHE_DIR`]), so a later process does not download them
    /// again.
    pub fn with_record_cache(self, dir: PathBuf) -> Layout {
        Layout {
            record_cache: Some(dir),
            ..self
        }
    }

    /// The same layout reading each repository of `views` through its view:
    /// a record naming the repository resolves to the same path in the view.
    pub fn with_views(self, views: BTreeMap<PathBuf, PathBuf>) -> Layout {
        Layout {
            views: Arc::new(views),
            ..self
        }
    }

    /// Repositories read through an ID-mapped view, with the view.
    pub fn views(&self) -> &BTreeMap<PathBuf, PathBuf> {
        &self.views
    }

    /// Every repository a record may name: the configured ones and those
    /// holding the additional stores.
    pub fn all_repositories(&self) -> Vec<PathBuf> {
        let mut v = self.repositories.clone();
        for r in self.stores.iter().filter_map(|s| store_repository(s)) {
            if !v.contains(&r) {
                v.push(r);
            }
        }
        v
    }

    /// CVMFS layers used so far whose repository is read directly (not
    /// through a view): rootless, their owners are not the image's.
    pub fn layers_without_view(&self) -> Vec<String> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let viewed: Vec<&PathBuf> = self.views.values().collect();
        let mut v: Vec<String> = cache
            .values()
            .filter(|l| match &l.kind {
                StoreLayerKind::Cvmfs { repository, .. } => !viewed.contains(&repository),
                StoreLayerKind::Local => false,
            })
            .map(|l| l.id.clone())
            .collect();
        v.sort();
        v
    }

    /// The same layout reporting progress to `sink` instead of stderr.
    pub fn with_progress_sink(self, sink: ProgressSink) -> Layout {
        Layout {
            progress: sink,
            ..self
        }
    }

    /// [`with_progress`] keyed by the path probed (a store or a repository),
    /// failing fast while an earlier probe of that path is still stuck;
    /// `what` says what is being asked, for the progress lines.
    fn probe<T: Send + 'static>(
        &self,
        key: &Path,
        what: &str,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Option<io::Result<T>> {
        let mut hung = self.hung.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flag) = hung.get(key) {
            if flag.load(Ordering::Acquire) {
                return None;
            }
            hung.remove(key);
        }
        drop(hung);
        let pending = Arc::new(AtomicBool::new(true));
        let flag = pending.clone();
        let report = |waited: Duration| {
            (self.progress.0)(&progress_line(key, what, waited, self.timeout));
        };
        let r = with_progress(self.timeout, report, move || {
            let r = f();
            flag.store(false, Ordering::Release);
            r
        });
        if r.is_none() {
            self.hung
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.to_path_buf(), pending);
        }
        r
    }

    /// CVMFS layers resolved so far whose repository lost file ownership
    /// (`"ownership":"lost"`), for `Status`.
    pub fn lost_ownership_layers(&self) -> Vec<String> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = cache
            .values()
            .filter(|l| {
                l.owners.is_none()
                    && matches!(
                        l.kind,
                        StoreLayerKind::Cvmfs {
                            ownership: Ownership::Lost,
                            ..
                        }
                    )
            })
            .map(|l| l.id.clone())
            .collect();
        v.sort();
        v
    }

    pub fn stores(&self) -> &[PathBuf] {
        &self.stores
    }

    pub fn repositories(&self) -> &[PathBuf] {
        &self.repositories
    }

    /// Where store `store` keeps the record of layer `id`.
    pub fn record_path(store: &Path, id: &str) -> PathBuf {
        cvmfs_format::StorePaths::new(store).record(id)
    }

    /// The repository a record names must be exactly one of
    /// `cvmfs.repositories` or exactly the repository root holding the store
    /// (`<repository>/podmanStore`): never an ancestor, a sibling or `/`, so a
    /// record can only point into a tree the operator chose.
    fn check_repository(&self, store: &Path, record_path: &Path, repository: &Path) -> Result<()> {
        let configured = self.repositories.iter().any(|r| r == repository);
        if configured || store_repository(store).as_deref() == Some(repository) {
            return Ok(());
        }
        Err(repo_err(
            record_path,
            format!(
                "field \"repository\": {} is neither configured (cvmfs.repositories={}) nor the repository holding the store {}{}",
                repository.display(),
                self.repositories.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(","),
                store.display(),
                match store_repository(store) {
                    Some(r) => format!(" ({})", r.display()),
                    None => String::new(),
                }
            ),
        ))
    }

    /// Parse and validate a record's text (no filesystem access).
    pub fn parse_record(
        &self,
        store: &Path,
        id: &str,
        record_path: &Path,
        bytes: &[u8],
    ) -> Result<StoreLayer> {
        validate_digest_id(id).map_err(|e| repo_err(record_path, e.message()))?;
        let record = cvmfs_format::parse_store_record(bytes)
            .map_err(|e| repo_err(record_path, e.message))?;
        let parent = record.parent().map(str::to_string);
        let mut layer = StoreLayer {
            id: id.to_string(),
            store: store.to_path_buf(),
            record_path: record_path.to_path_buf(),
            parent,
            content_dir: record_path.with_file_name("diff"),
            kind: StoreLayerKind::Local,
            owners: None,
            markers: None,
            flat: None,
            owner_probes: None,
            client_shows: None,
        };
        if let StoreRecord::Cvmfs { record, markers } = record {
            if let Some(p) = &record.owner_probes {
                let checked = p
                    .checked()
                    .map_err(|e| repo_err(record_path, format!("field \"owner-probes\": {e}")))?;
                layer.owner_probes = Some(Arc::new(checked));
            }
            let named = PathBuf::from(&record.repository);
            self.check_repository(store, record_path, &named)?;
            // Rootless with an ID-mapped view: the same tree, right owners.
            let repository = self.views.get(&named).cloned().unwrap_or(named);
            layer.content_dir = repository.join(&record.path);
            layer.flat = record.flat.map(|f| repository.join(f));
            layer.markers = markers.map(Arc::new);
            layer.kind = StoreLayerKind::Cvmfs {
                repository,
                whiteouts: record.whiteouts,
                ownership: record.ownership,
            };
        }
        Ok(layer)
    }

    /// Check, with a timeout, that a CVMFS layer's directory is there, is a
    /// directory and lies beneath its repository when resolved from it
    /// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: a symlink
    /// leaving the repository, an absolute one, or a `/proc` magic link is
    /// refused, as the record's field `path`).
    pub fn check_reachable(&self, layer: &StoreLayer) -> Result<()> {
        self.check_beneath(layer, "path")
            .and_then(|r| r.map_err(|e| *e))
    }

    /// [`Layout::check_reachable`] for the directory `layer.content_dir` taken
    /// from the record's field `field`. The outer error: it escapes the
    /// repository (never usable); the inner one: it does not answer (not
    /// mounted, hung, missing), which a caller may work around.
    pub fn check_beneath(
        &self,
        layer: &StoreLayer,
        field: &str,
    ) -> Result<std::result::Result<(), Box<Error>>> {
        let StoreLayerKind::Cvmfs { repository, .. } = &layer.kind else {
            return Ok(Ok(()));
        };
        let what = |why: String| {
            Error::new(
                ErrorCode::Repository,
                format!(
                    "repository {}: layer {} (record {}): {why}",
                    repository.display(),
                    layer.id,
                    layer.record_path.display()
                ),
            )
        };
        let Ok(rel) = layer.content_dir.strip_prefix(repository) else {
            return Err(what(format!(
                "field \"{field}\": {} is not inside the repository",
                layer.content_dir.display()
            )));
        };
        let (repo, rel) = (repository.clone(), rel.to_path_buf());
        let asked = format!("directory of layer {}", layer.id);
        let outcome = self.probe(repository, &asked, move || {
            match resolve_beneath(&repo, &rel) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Ok(Beneath::Missing(why_missing(&repo)))
                }
                r => r,
            }
        });
        match outcome {
            None => Ok(Err(Box::new(what(format!(
                "no answer within {:.1}s (repository unreachable or hung?; cvmfs.repository_timeout)",
                self.timeout.as_secs_f64()
            ))))),
            Some(Err(e)) => Ok(Err(Box::new(what(format!(
                "{}: {e} (repository not mounted or layer not published?)",
                layer.content_dir.display()
            ))))),
            Some(Ok(Beneath::Missing(why))) => Ok(Err(Box::new(what(format!(
                "{}: {why}",
                layer.content_dir.display()
            ))))),
            Some(Ok(Beneath::Dir)) => Ok(Ok(())),
            Some(Ok(Beneath::NotDir)) => Err(what(format!(
                "field \"{field}\": {} is not a directory",
                layer.content_dir.display()
            ))),
            Some(Ok(Beneath::Escapes(why))) => Err(what(format!(
                "field \"{field}\": {} {why}, outside the repository: refused",
                layer.content_dir.display()
            ))),
        }
    }

    /// A layer of kind "local" has its files in `diff` beside its record: a
    /// real directory of the store, reached from it without any symlink (a
    /// symlink there would mount any host directory as the layer).
    fn check_local_diff(&self, store: &Path, layer: &StoreLayer) -> Result<()> {
        let Ok(rel) = layer.content_dir.strip_prefix(store) else {
            return Err(repo_err(&layer.record_path, "diff is not inside the store"));
        };
        let (root, rel) = (store.to_path_buf(), rel.to_path_buf());
        let outcome = self.probe(store, "a local layer's directory", move || {
            resolve_beneath_with(&root, &rel, true)
        });
        let why = match outcome {
            None => format!(
                "no answer within {:.1}s (store unreachable?; cvmfs.repository_timeout)",
                self.timeout.as_secs_f64()
            ),
            Some(Ok(Beneath::Dir)) => return Ok(()),
            Some(Ok(Beneath::Missing(why))) => why,
            Some(Ok(Beneath::NotDir)) => "is not a directory".into(),
            Some(Ok(Beneath::Escapes(why))) => format!("{why}: refused"),
            Some(Err(e)) => e.to_string(),
        };
        Err(repo_err(
            &layer.record_path,
            format!("kind \"local\": {}: {why}", layer.content_dir.display()),
        ))
    }

    /// Before mounting a stack: check (with the timeout) that every repository
    /// it uses still answers, through the topmost layer of each, so an
    /// unmounted repository gives a clear error instead of a kernel one.
    pub fn check_stack_reachable<'a>(
        &self,
        layers: impl IntoIterator<Item = &'a StoreLayer>,
    ) -> Result<()> {
        let mut seen: Vec<&Path> = Vec::new();
        for l in layers {
            if let StoreLayerKind::Cvmfs { repository, .. } = &l.kind {
                if !seen.contains(&repository.as_path()) {
                    seen.push(repository);
                    self.check_reachable(l)?;
                }
            }
        }
        Ok(())
    }

    /// Read a file of a store (which may itself live on CVMFS) under the
    /// timeout: at most `max + 1` bytes, so an oversized file shows as such
    /// without being read whole. `None` when there is no such file.
    fn read_store_file(&self, store: &Path, path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
        let p = path.to_path_buf();
        let asked = format!("reading {}", path.display());
        let read = self.probe(store, &asked, move || {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            // Non-blocking open: a FIFO planted as a record would otherwise
            // block until the repository limit (a minute) and read as an
            // unreachable store; it is refused at once instead. No effect on
            // regular files.
            let opened = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&p);
            match opened {
                Ok(f) => {
                    let kind = f.metadata()?.file_type();
                    if !kind.is_file() {
                        return Err(io::Error::other(format!(
                            "not a regular file ({})",
                            describe_kind(kind)
                        )));
                    }
                    let mut b = Vec::new();
                    f.take(max + 1).read_to_end(&mut b)?;
                    Ok(Some(b))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        });
        match read {
            None => Err(repo_err(
                path,
                format!(
                    "no answer within {:.1}s (store unreachable?; cvmfs.repository_timeout)",
                    self.timeout.as_secs_f64()
                ),
            )),
            Some(Err(e)) => Err(repo_err(path, e)),
            Some(Ok(b)) => Ok(b),
        }
    }

    /// The ownership metadata beside a record (`ownership.json`), validated;
    /// `None` when the publisher provided none.
    fn read_owners(
        &self,
        store: &Path,
        record_path: &Path,
    ) -> Result<Option<Vec<crate::mount::whiteouts::Owner>>> {
        use cvmfs_format::ownership::{parse_owners, OWNERSHIP_MAX_BYTES};
        use cvmfs_format::paths::OWNERSHIP_FILE;
        let p = record_path.with_file_name(OWNERSHIP_FILE);
        // parse_owners names the size limit when the file exceeds it.
        let Some(bytes) = self.read_store_file(store, &p, OWNERSHIP_MAX_BYTES)? else {
            return Ok(None);
        };
        parse_owners(&bytes)
            .map(Some)
            .map_err(|e| repo_err(&p, format!("ownership metadata: {e}")))
    }

    /// Whether the client shows layer `layer` with other owners than
    /// published: its probes looked at once each, under the repository
    /// timeout ([`crate::claim::first_mismatch`]). A repository that does
    /// not answer is left to the mount to report.
    fn client_mismatch(
        &self,
        layer: &StoreLayer,
        ownership: Ownership,
    ) -> Option<crate::claim::Mismatch> {
        let StoreLayerKind::Cvmfs { repository, .. } = &layer.kind else {
            return None;
        };
        let recorded = layer.owner_probes.as_deref().map(Vec::as_slice);
        let probes = crate::claim::probes_of(recorded, ownership == Ownership::Kept);
        if probes.is_empty() {
            return None;
        }
        let dir = layer.content_dir.clone();
        let asked = format!("owners of layer {}", layer.id);
        self.probe(repository, &asked, move || {
            crate::claim::first_mismatch(&dir, &probes)
        })
        .and_then(|r| r.ok())
        .flatten()
    }

    /// The directory `dir` of repository `repository` reached without the
    /// repository's own overlay, when the repository is mounted as a
    /// read-only overlay over one directory (a publishing machine, see
    /// [`overlay_lower_of`]) and that directory has it, resolved beneath it
    /// as the record's path was; `None` otherwise. Overlays nested on the
    /// repository then stay within the kernel's stacking limit.
    pub fn unstacked_dir(&self, repository: &Path, dir: &Path) -> Option<PathBuf> {
        let rel = dir.strip_prefix(repository).ok()?.to_path_buf();
        let lower = {
            let mut known = self.unstacked.lock().unwrap_or_else(|p| p.into_inner());
            known
                .entry(repository.to_path_buf())
                .or_insert_with(|| {
                    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
                    overlay_lower_of(&info, repository)
                })
                .clone()?
        };
        let (root, r) = (lower.clone(), rel.clone());
        let asked = format!("{} without its overlay", dir.display());
        match self.probe(repository, &asked, move || resolve_beneath(&root, &r)) {
            Some(Ok(Beneath::Dir)) => Some(lower.join(rel)),
            _ => None,
        }
    }

    /// Remember for `Status` that `layer`'s client shows other owners.
    fn note_client(&self, layer: &StoreLayer, m: crate::claim::Mismatch) {
        let StoreLayerKind::Cvmfs { repository, .. } = &layer.kind else {
            return;
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let r = clients
            .entry(repository.clone())
            .or_insert_with(|| crate::claim::ClientReport {
                example: m,
                layer: layer.id.clone(),
                restored: 0,
                unrestorable: Vec::new(),
            });
        if layer.owners.is_some() {
            r.restored += 1;
        } else {
            r.unrestorable.push(layer.id.clone());
        }
    }

    /// For `Status` in a process that used no layer yet (`podman info`):
    /// look at one layer of each store (the first record its `cvmfs/layers`
    /// lists, resolved as any layer, probes included), so that a client
    /// that claims ownership is reported before anything runs. Bounded by
    /// the repository timeout; what does not answer is left out.
    pub fn sample_client_owners(&self) {
        for store in &self.stores {
            let dir = cvmfs_format::StorePaths::new(store)
                .cvmfs_dir()
                .join("layers");
            let first = self.probe(store, "listing layer records", move || {
                let mut names = fs::read_dir(&dir)?;
                Ok(names.find_map(|e| {
                    e.ok()?
                        .file_name()
                        .into_string()
                        .ok()
                        .filter(|n| validate_digest_id(n).is_ok())
                }))
            });
            if let Some(Ok(Some(id))) = first {
                let _ = self.find(&id);
            }
        }
    }

    /// Whether no client showing other owners was noticed yet.
    pub fn client_owners_status_is_empty(&self) -> bool {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The `CVMFS Client Owners` status value ([`crate::claim::status_line`]).
    pub fn client_owners_status(&self) -> String {
        crate::claim::status_line(&self.clients.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The owners `cvmfs-podman owners` restored from the registry for a
    /// DUCC layer (in the driver home, by blob digest), validated.
    fn read_restored_owners(
        &self,
        store: &Path,
        content_dir: &Path,
    ) -> Result<Option<Vec<crate::mount::whiteouts::Owner>>> {
        use cvmfs_format::ownership::{parse_owners, OWNERSHIP_MAX_BYTES};
        let Some(p) = crate::ducc::owners_cache_for(store, content_dir) else {
            return Ok(None);
        };
        let Some(bytes) = self.read_store_file(store, &p, OWNERSHIP_MAX_BYTES)? else {
            return Ok(None);
        };
        parse_owners(&bytes)
            .map(Some)
            .map_err(|e| repo_err(&p, format!("restored owners: {e}")))
    }

    /// The text of a store's record, through the record cache: a layer ID
    /// names fixed content, so its record is read from the repository (a
    /// download on a cold CVMFS client) once and then taken from the cache
    /// while the file's identity ([`crate::mirror::file_key`]: CVMFS's
    /// content hash, else revision, inode, size and times) is the one it was
    /// read with. An entry also names the repository revision it was last
    /// checked under ([`crate::mirror::snapshot_revision`]); while the client
    /// shows that revision the entry is taken without asking the record's
    /// identity, which on a cold client costs its catalog's download.
    /// Cached text is parsed and checked like any record; a cache that
    /// cannot be read or written is only a cost.
    fn read_record(&self, store: &Path, id: &str, record_path: &Path) -> Result<Option<Vec<u8>>> {
        let Some(cache) = &self.record_cache else {
            return self.read_store_file(store, record_path, RECORD_MAX_BYTES);
        };
        let cached = cache.join(format!("{id}.json"));
        let entry = fs::read(&cached).ok();
        let entry = entry
            .as_deref()
            .and_then(|b| CachedRecord::parse(b, record_path));
        let revision = self.revision(store);
        if let (Some(e), Some(rev)) = (&entry, &revision) {
            if e.revision == rev.as_str() {
                return Ok(Some(e.text.to_vec()));
            }
        }
        let p = record_path.to_path_buf();
        let key = match self.probe(store, "a record's identity", move || {
            crate::mirror::file_key(&p)
        }) {
            Some(Ok(key)) => key,
            Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // read_store_file says what is wrong.
            _ => return self.read_store_file(store, record_path, RECORD_MAX_BYTES),
        };
        let header = |rev: Option<&str>| {
            format!("{}\n{key}\n{}\n", record_path.display(), rev.unwrap_or(""))
        };
        let text = match entry.filter(|e| e.key == key) {
            Some(e) => e.text.to_vec(),
            None => match self.read_store_file(store, record_path, RECORD_MAX_BYTES)? {
                Some(b) if b.len() as u64 <= RECORD_MAX_BYTES => b,
                other => return Ok(other),
            },
        };
        // Tagged with the revision only if the client showed it throughout.
        let rev = revision.filter(|r| self.revision(store).as_ref() == Some(r));
        let _ = write_cached(cache, &cached, header(rev.as_deref()).as_bytes(), &text);
        Ok(Some(text))
    }

    /// The CVMFS revision the client shows for `store`'s repository, if any
    /// (bounded like every probe; `None` when it does not answer).
    fn revision(&self, store: &Path) -> Option<String> {
        let dir = crate::mirror::revision_dir(store);
        self.probe(store, "the repository revision", move || {
            Ok(crate::mirror::snapshot_revision(&dir))
        })?
        .ok()?
    }

    /// Find layer `id` in the additional stores (first store wins). `Ok(None)` if
    /// no store has it; an error if a record is there but unusable.
    pub fn find(&self, id: &str) -> Result<Option<StoreLayer>> {
        validate_id(id)?;
        if self.stores.is_empty() || validate_digest_id(id).is_err() {
            return Ok(None);
        }
        if let Some(l) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Some(l.clone()));
        }
        match self.find_in_stores(id)? {
            None if self.complete_ducc_layer(id)? => self.find_in_stores(id),
            found => Ok(found),
        }
    }

    /// [`Layout::check_reachable`] of the layer's directory and
    /// [`Layout::check_beneath`] of its flat tree, at the same time: on a cold
    /// CVMFS client each walks down its own nested catalogs (`.layers/XX`,
    /// `.flat`), one download per level, so in sequence they cost the sum of
    /// both chains. The tree's own catalog, which the container's first
    /// lookups need, is loaded meanwhile too ([`warm_catalog`]).
    #[allow(clippy::type_complexity)]
    fn check_layer_and_flat(
        &self,
        layer: &StoreLayer,
    ) -> (
        Result<()>,
        Option<Result<std::result::Result<(), Box<Error>>>>,
    ) {
        let Some(flat) = &layer.flat else {
            return (self.check_reachable(layer), None);
        };
        if matches!(layer.kind, StoreLayerKind::Cvmfs { .. }) {
            warm_catalog(flat.clone());
        }
        let tree = StoreLayer {
            content_dir: flat.clone(),
            ..layer.clone()
        };
        std::thread::scope(|s| {
            let flat = s.spawn(|| self.check_beneath(&tree, "flat"));
            let reachable = self.check_reachable(layer);
            let flat = flat.join().unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorCode::Repository,
                    format!("checking the flat tree of layer {}: thread died", layer.id),
                ))
            });
            (reachable, Some(flat))
        })
    }

    fn find_in_stores(&self, id: &str) -> Result<Option<StoreLayer>> {
        for store in &self.stores {
            let record_path = Self::record_path(store, id);
            // At most RECORD_MAX_BYTES + 1: the parser names a larger file.
            let Some(bytes) = self.read_record(store, id, &record_path)? else {
                continue;
            };
            let mut layer = self.parse_record(store, id, &record_path, &bytes)?;
            let flat_checked = self.check_layer_and_flat(&layer);
            flat_checked.0?;
            if layer.kind == StoreLayerKind::Local {
                self.check_local_diff(store, &layer)?;
            }
            // Every use of the flat tree (mounts, diffs' lowers, metadata)
            // relies on it lying beneath the repository: a record whose tree
            // leaves it is refused; one that does not answer now is left to
            // the mount, which then stacks the layers.
            if let Some(flat) = flat_checked.1 {
                let _unanswered = flat?;
            }
            if let StoreLayerKind::Cvmfs { ownership, .. } = layer.kind {
                let differs = self.client_mismatch(&layer, ownership);
                if let Some(m) = &differs {
                    // The flat tree shows the client's owners too; the
                    // layers' can be restored.
                    layer.flat = None;
                    layer.client_shows = Some(m.shown);
                }
                if ownership == Ownership::Lost || differs.is_some() {
                    layer.owners = match self.read_owners(store, &record_path)? {
                        None if self.ducc_stores.contains(store) => {
                            self.read_restored_owners(store, &layer.content_dir)?
                        }
                        found => found,
                    }
                    .map(Arc::new);
                }
                if let Some(m) = differs {
                    self.note_client(&layer, m);
                }
            }
            if matches!(layer.kind, StoreLayerKind::Cvmfs { .. }) {
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_string(), layer.clone());
            }
            return Ok(Some(layer));
        }
        Ok(None)
    }

    /// Write the records of DUCC layer `id` (and its chain) when a
    /// synthesised store lists it: a few `pread`s of its index when none
    /// does, the image's config and the blobs' `layers.json` when one does.
    fn complete_ducc_layer(&self, id: &str) -> Result<bool> {
        for store in &self.ducc_stores {
            let (root, layer) = (store.clone(), id.to_string());
            // the store is local: name the repository that may be slow
            let from = crate::ducc::read_repository(store).map_or_else(
                |_| "its DUCC repository".to_string(),
                |r| r.display().to_string(),
            );
            let what = format!("completing DUCC layer {id} from {from}");
            match self.probe(store, &what, move || crate::ducc::complete(&root, &layer)) {
                Some(Ok(true)) => return Ok(true),
                Some(Ok(false)) => {}
                Some(Err(e)) => return Err(repo_err(store, e)),
                None => {
                    return Err(repo_err(
                        store,
                        format!(
                            "{what}: no answer within {:.1}s (cvmfs.repository_timeout)",
                            self.timeout.as_secs_f64()
                        ),
                    ))
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    struct Fixture {
        _t: tempfile::TempDir,
        repo: PathBuf,
        store: PathBuf,
        layout: Layout,
    }

    fn fixture() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("cvmfs/repo.example.org");
        let store = t.path().join("store");
        fs::create_dir_all(repo.join(".layers/ab/d1/layerfs/etc")).unwrap();
        fs::create_dir_all(&store).unwrap();
        let opts = Options::parse([
            format!("cvmfs.repositories={}", repo.display()),
            format!("imagestore={}", store.display()),
        ])
        .unwrap();
        let layout = Layout::new(&opts);
        Fixture {
            _t: t,
            repo,
            store,
            layout,
        }
    }

    fn write_record(f: &Fixture, id: &str, text: &str) -> PathBuf {
        let p = Layout::record_path(&f.store, id);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn good(repo: &Path, path: &str) -> String {
        cvmfs_format::CvmfsRecord {
            repository: repo.display().to_string(),
            path: path.into(),
            parent: None,
            whiteouts: Whiteouts::OciRaw,
            ownership: Ownership::Lost,
            markers: None,
            flat: None,
            owner_probes: None,
        }
        .to_json()
    }

    fn find_err(f: &Fixture, id: &str) -> Error {
        f.layout.find(id).unwrap_err()
    }

    #[test]
    fn the_lower_of_a_repository_overlay_is_found_in_mountinfo() {
        let info = "45 27 0:40 / /var/spool/cvmfs/t.local/rdonly ro,nodev,relatime - fuse t.local ro,user_id=0\n\
48 27 0:41 / /cvmfs/t.local ro,nodev,relatime - overlay overlay_t.local ro,lowerdir=/var/spool/cvmfs/t.local/rdonly,upperdir=/var/spool/cvmfs/t.local/scratch/current,workdir=/var/spool/cvmfs/t.local/ofs_workdir\n\
50 27 0:42 / /cvmfs/two ro - overlay o ro,lowerdir=/a:/b\n\
51 27 0:43 / /cvmfs/a\\040b ro - overlay o ro,lowerdir=/x\n\
52 27 0:44 / /cvmfs/plain ro - fuse p ro\n";
        assert_eq!(
            overlay_lower_of(info, Path::new("/cvmfs/t.local")),
            Some(PathBuf::from("/var/spool/cvmfs/t.local/rdonly"))
        );
        assert_eq!(
            overlay_lower_of(info, Path::new("/cvmfs/two")),
            None,
            "two lowers"
        );
        assert_eq!(
            overlay_lower_of(info, Path::new("/cvmfs/a b")),
            Some(PathBuf::from("/x")),
            "escaped mount point"
        );
        assert_eq!(
            overlay_lower_of(info, Path::new("/cvmfs/plain")),
            None,
            "not an overlay"
        );
        assert_eq!(overlay_lower_of(info, Path::new("/cvmfs/none")), None);
    }

    #[test]
    fn resolves_a_good_record() {
        let f = fixture();
        write_record(&f, ID, &good(&f.repo, ".layers/ab/d1/layerfs"));
        let l = f.layout.find(ID).unwrap().unwrap();
        assert_eq!(l.content_dir, f.repo.join(".layers/ab/d1/layerfs"));
        assert_eq!(l.parent, None);
        assert_eq!(
            l.kind,
            StoreLayerKind::Cvmfs {
                repository: f.repo.clone(),
                whiteouts: Whiteouts::OciRaw,
                ownership: Ownership::Lost
            }
        );
        // Non-hex IDs are simply not in stores; unknown hex IDs neither.
        assert!(f.layout.find("Base").unwrap().is_none());
        assert!(f.layout.find(&"e".repeat(64)).unwrap().is_none());
    }

    #[test]
    fn records_are_cached_and_repositories_rechecked_per_stack() {
        let f = fixture();
        let rec = write_record(&f, ID, &good(&f.repo, ".layers/ab/d1/layerfs"));
        let l = f.layout.find(ID).unwrap().unwrap();
        fs::remove_file(&rec).unwrap();
        assert_eq!(
            f.layout.find(ID).unwrap(),
            Some(l.clone()),
            "served from the cache"
        );
        f.layout.check_stack_reachable([&l]).unwrap();
        // The repository goes away (unmounted): the per-mount check notices.
        fs::remove_dir_all(f.repo.join(".layers")).unwrap();
        let e = f.layout.check_stack_reachable([&l]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Repository);
        assert!(e.to_string().contains("not mounted"), "{e}");
    }

    #[test]
    fn records_are_kept_across_processes_until_the_file_changes() {
        let f = fixture();
        let cache = f._t.path().join("home").join(RECORD_CACHE_DIR);
        // A new Layout is what a new podman process starts with.
        let process = || {
            let opts = Options::parse([
                format!("cvmfs.repositories={}", f.repo.display()),
                format!("imagestore={}", f.store.display()),
            ])
            .unwrap();
            Layout::new(&opts).with_record_cache(cache.clone())
        };
        let rec = write_record(&f, ID, &good(&f.repo, ".layers/ab/d1/layerfs"));
        let first = process().find(ID).unwrap().unwrap();
        let entry = cache.join(format!("{ID}.json"));
        let kept = fs::read_to_string(&entry).unwrap();
        assert!(kept.starts_with(&format!("{}\n", rec.display())), "{kept}");
        // The next process takes the record from the cache: an entry whose
        // text differs (same key) shows it was not read from the store.
        let header: String = kept.lines().take(3).map(|l| format!("{l}\n")).collect();
        let other = good(&f.repo, ".layers/ab/d1/layerfs/etc");
        fs::write(&entry, format!("{header}{other}")).unwrap();
        let cached = process().find(ID).unwrap().unwrap();
        assert_eq!(cached.content_dir, f.repo.join(".layers/ab/d1/layerfs/etc"));
        assert_eq!(first.content_dir, f.repo.join(".layers/ab/d1/layerfs"));
        // The record is rewritten (a plain directory, same size): read again.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&rec, fs::read(&rec).unwrap()).unwrap();
        let fresh = process().find(ID).unwrap().unwrap();
        assert_eq!(
            fresh.content_dir, first.content_dir,
            "a changed file is never missed"
        );
        // A damaged entry is only a cost: the store is read again.
        let kept = fs::read_to_string(&entry).unwrap();
        let header: String = kept.lines().take(3).map(|l| format!("{l}\n")).collect();
        fs::write(&entry, format!("{header}{{\"version\":1,\"kind\":\"cvm")).unwrap();
        assert_eq!(
            process().find(ID).unwrap().unwrap().content_dir,
            first.content_dir
        );
        assert!(
            fs::read_to_string(&entry).unwrap().ends_with('}'),
            "entry rewritten"
        );
    }

    #[test]
    fn local_kind_diff_must_be_a_real_directory_of_the_store() {
        let f = fixture();
        let text = r#"{"version":1,"kind":"local","parent":null}"#;
        let rec = write_record(&f, ID, text);
        let e = find_err(&f, ID).to_string();
        assert!(e.contains("kind \"local\""), "{e}");
        std::os::unix::fs::symlink(&f.repo, rec.with_file_name("diff")).unwrap();
        let e = find_err(&f, ID).to_string();
        assert!(e.contains("passes through a symlink"), "{e}");
        assert!(e.contains(&rec.display().to_string()), "{e}");
    }

    #[test]
    fn local_kind_records_are_not_cached() {
        let f = fixture();
        let rec = write_record(
            &f,
            ID,
            r#"{"version":1,"kind":"local","parent":null,"read_write":false}"#,
        );
        fs::create_dir(rec.with_file_name("diff")).unwrap();
        assert!(f.layout.find(ID).unwrap().is_some());
        fs::remove_file(&rec).unwrap();
        assert!(
            f.layout.find(ID).unwrap().is_none(),
            "a removed sibling-home layer is gone"
        );
    }

    #[test]
    fn truncated_json_names_the_file() {
        let f = fixture();
        let p = write_record(&f, ID, r#"{"version":1,"kind":"cvm"#);
        let e = find_err(&f, ID);
        assert_eq!(e.code(), ErrorCode::Repository);
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        assert!(e.to_string().contains("malformed or truncated JSON"), "{e}");
    }

    #[test]
    fn path_escaping_the_repository_is_rejected() {
        let f = fixture();
        for (path, needle) in [
            ("../../etc", "leaves the repository"),
            ("/etc", "not a relative path"),
            (".layers/../../x", "leaves the repository"),
            ("", "not a relative path"),
        ] {
            write_record(&f, ID, &good(&f.repo, path));
            let e = find_err(&f, ID);
            assert_eq!(e.code(), ErrorCode::Repository, "{path}");
            assert!(e.to_string().contains(needle), "{path}: {e}");
        }
        // A symlink inside the repository pointing outside is caught after resolution.
        std::os::unix::fs::symlink("/etc", f.repo.join(".layers/ab/evil")).unwrap();
        write_record(&f, ID, &good(&f.repo, ".layers/ab/evil"));
        let e = find_err(&f, ID);
        assert!(e.to_string().contains("outside the repository"), "{e}");
    }

    #[test]
    fn unconfigured_repository_is_rejected() {
        let f = fixture();
        write_record(&f, ID, &good(Path::new("/cvmfs/other.org"), ".layers/x"));
        let e = find_err(&f, ID);
        assert!(
            e.to_string()
                .contains("field \"repository\": /cvmfs/other.org is neither configured"),
            "{e}"
        );
    }

    #[test]
    fn ancestors_siblings_and_root_are_not_repositories() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        let store = repo.join(STORE_DIR_NAME);
        fs::create_dir_all(repo.join(".layers/x")).unwrap();
        fs::create_dir_all(t.path().join("sibling/.layers/x")).unwrap();
        let layout =
            Layout::new(&Options::parse([format!("imagestore={}", store.display())]).unwrap());
        let p = Layout::record_path(&store, ID);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let sibling = t.path().join("sibling");
        for bad in [
            Path::new("/"),
            Path::new("/tmp"),
            t.path(),
            sibling.as_path(),
            store.as_path(),
        ] {
            fs::write(&p, good(bad, ".layers/x")).unwrap();
            let e = layout.find(ID).unwrap_err().to_string();
            assert!(e.contains("field \"repository\""), "{bad:?}: {e}");
            assert!(e.contains(&p.display().to_string()), "{bad:?}: {e}");
        }
        // Only a store named podmanStore implies its repository, never "/".
        assert_eq!(store_repository(Path::new("/podmanStore")), None);
        assert_eq!(store_repository(Path::new("/a/store")), None);
        assert_eq!(
            store_repository(Path::new("/a/podmanStore")),
            Some(PathBuf::from("/a"))
        );
    }

    #[test]
    fn symlinks_leaving_the_repository_are_refused_even_absolute_inside() {
        let f = fixture();
        let layers = f.repo.join(".layers/ab");
        std::os::unix::fs::symlink("../../..", layers.join("up")).unwrap();
        std::os::unix::fs::symlink(f.repo.join(".layers/ab/d1"), layers.join("abs")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", layers.join("magic")).unwrap();
        std::os::unix::fs::symlink("d1/layerfs", layers.join("inside")).unwrap();
        fs::write(layers.join("file"), b"").unwrap();
        for (path, needle) in [
            (".layers/ab/up/store", "outside the repository"),
            (".layers/ab/abs/layerfs", "outside the repository"),
            (".layers/ab/magic/tmp", "outside the repository"),
            (".layers/ab/file", "not a directory"),
        ] {
            let p = write_record(&f, ID, &good(&f.repo, path));
            let e = find_err(&f, ID).to_string();
            assert!(e.contains(needle), "{path}: {e}");
            assert!(e.contains("field \"path\""), "{path}: {e}");
            assert!(e.contains(&p.display().to_string()), "{path}: {e}");
        }
        write_record(&f, ID, &good(&f.repo, ".layers/ab/inside"));
        assert!(
            f.layout.find(ID).unwrap().is_some(),
            "a symlink inside is fine"
        );
    }

    #[test]
    fn missing_repository_directory_names_repository_and_record() {
        let f = fixture();
        let p = write_record(&f, ID, &good(&f.repo, ".layers/ff/missing/layerfs"));
        let e = find_err(&f, ID);
        assert_eq!(e.code(), ErrorCode::Repository);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("repository {}", f.repo.display())),
            "{msg}"
        );
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("not mounted"), "{msg}");
    }

    #[test]
    fn bad_fields_are_named() {
        let f = fixture();
        let repo = f.repo.display().to_string();
        for (text, needle) in [
            (r#"{"version":2,"kind":"cvmfs"}"#.to_string(), "version 2"),
            (
                r#"{"version":1,"kind":"zfs"}"#.to_string(),
                "unknown layer kind",
            ),
            (
                r#"{"version":1,"kind":"cvmfs","path":"x"}"#.to_string(),
                "\"repository\" is missing",
            ),
            (
                format!(
                    r#"{{"version":1,"kind":"cvmfs","repository":"{repo}","path":"x","whiteouts":"aufs","ownership":"kept"}}"#
                ),
                "\"whiteouts\"",
            ),
            (
                format!(
                    r#"{{"version":1,"kind":"cvmfs","repository":"{repo}","path":"x","whiteouts":"overlay"}}"#
                ),
                "\"ownership\"",
            ),
            (
                format!(
                    r#"{{"version":1,"kind":"cvmfs","repository":"{repo}","path":"x","parent":"Base","whiteouts":"overlay","ownership":"kept"}}"#
                ),
                "parent",
            ),
        ] {
            write_record(&f, ID, &text);
            let e = find_err(&f, ID);
            assert_eq!(e.code(), ErrorCode::Repository, "{text}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn listed_markers_are_parsed_and_hostile_lists_named() {
        let f = fixture();
        let repo = f.repo.display().to_string();
        let rec = |markers: &str| {
            format!(
                r#"{{"version":1,"kind":"cvmfs","repository":"{repo}","path":".layers/ab/d1/layerfs","whiteouts":"oci-raw","ownership":"kept","markers":{markers}}}"#
            )
        };
        write_record(&f, ID, &rec(r#"["etc/.wh..wh..opq",".wh.gone"]"#));
        let l = f.layout.find(ID).unwrap().unwrap();
        let got: Vec<String> = l
            .markers
            .unwrap()
            .iter()
            .map(|m| m.dir.join(&m.name).display().to_string())
            .collect();
        assert_eq!(got, vec![".wh.gone", "etc/.wh..wh..opq"]);
        // A record without the list leaves finding them to the driver.
        let other = "1".repeat(64);
        write_record(&f, &other, &good(&f.repo, ".layers/ab/d1/layerfs"));
        assert!(f.layout.find(&other).unwrap().unwrap().markers.is_none());
        for (i, (list, needle)) in [
            (r#"["../.wh.x"]"#, "\"..\""),
            (r#"["/etc/.wh.x"]"#, "not a relative path"),
            (r#"["etc/passwd"]"#, "does not start with \".wh.\""),
            (r#"[".wh.a/.wh.b"]"#, "is a whiteout marker"),
            (r#"[".wh.a",".wh.a"]"#, "listed twice"),
            (r#"["a/\u0000/.wh.b"]"#, "not a relative path"),
            (r#"{"a":1}"#, "malformed"),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("{:064x}", 0xabc0 + i);
            let p = write_record(&f, &id, &rec(list));
            let e = find_err(&f, &id);
            assert_eq!(e.code(), ErrorCode::Repository, "{list}");
            let msg = e.to_string();
            assert!(msg.contains(needle), "{list}: {msg}");
            assert!(msg.contains(&p.display().to_string()), "{list}: {msg}");
        }
        // Markers only make sense for raw whiteouts.
        let id = "2".repeat(64);
        write_record(&f, &id, &rec("[]").replace("\"oci-raw\"", "\"overlay\""));
        assert!(find_err(&f, &id).to_string().contains("only meaningful"));
    }

    #[test]
    fn the_pure_parsers_take_any_bytes() {
        let good = br#"{"version":1,"kind":"cvmfs","repository":"/cvmfs/fuzz.example.org","path":".layers/ab/d/layerfs","whiteouts":"oci-raw","ownership":"kept","markers":[".wh.a"]}"#;
        let l = parse_record(good).unwrap();
        assert_eq!(l.markers.unwrap().len(), 1);
        for bad in [
            &b""[..],
            b"\xff",
            b"[",
            br#"{"version":1,"kind":"cvmfs","repository":"/"}"#,
        ] {
            assert!(parse_record(bad).is_err());
        }
        use crate::mount::whiteouts::parse_marker_list_json;
        assert_eq!(parse_marker_list_json(br#"["a/.wh.b"]"#).unwrap().len(), 1);
        assert!(parse_marker_list_json(br#"["a/.wh.b"] x"#).is_err());
        assert!(parse_marker_list_json(b"null").is_err());
    }

    #[test]
    fn non_hex_ids_in_store_records_are_rejected() {
        let f = fixture();
        let e = f
            .layout
            .parse_record(&f.store, "Base", Path::new("/s/r"), b"{}")
            .unwrap_err();
        assert!(e.to_string().contains("64 lower-case hex"), "{e}");
    }

    #[test]
    fn store_own_repository_is_allowed() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        let store = repo.join("podmanStore");
        fs::create_dir_all(repo.join(".layers/x")).unwrap();
        let layout =
            Layout::new(&Options::parse([format!("imagestore={}", store.display())]).unwrap());
        let p = Layout::record_path(&store, ID);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, good(&repo, ".layers/x")).unwrap();
        assert!(layout.find(ID).unwrap().is_some());
    }

    #[test]
    fn a_hung_path_costs_one_thread_and_later_calls_fail_at_once() {
        let f = fixture();
        let layout = Layout {
            ducc_stores: Vec::new(),
            timeout: Duration::from_millis(50),
            ..f.layout.clone()
        };
        let key = Path::new("/cvmfs/hung.example.org");
        let release = Arc::new(AtomicBool::new(false));
        let r2 = release.clone();
        assert!(layout
            .probe(key, "a test", move || {
                while !r2.load(Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            })
            .is_none());
        let start = std::time::Instant::now();
        let ran = Arc::new(AtomicBool::new(false));
        let ran2 = ran.clone();
        assert!(layout
            .probe(key, "a test", move || {
                ran2.store(true, Ordering::Release);
                Ok(())
            })
            .is_none());
        assert!(start.elapsed() < Duration::from_millis(40), "failed fast");
        assert!(
            !ran.load(Ordering::Acquire),
            "no second thread while the first is stuck"
        );
        // Once the stuck call returns, the path is probed again.
        release.store(true, Ordering::Release);
        thread::sleep(Duration::from_millis(50));
        assert!(matches!(layout.probe(key, "a test", || Ok(7)), Some(Ok(7))));
    }

    #[test]
    fn a_slow_answer_is_waited_for_with_progress_lines() {
        let f = fixture();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let layout = Layout {
            ducc_stores: Vec::new(),
            timeout: Duration::from_secs(30),
            ..f.layout.clone()
        }
        .with_progress_sink(ProgressSink::new(move |l| {
            sink.lock().unwrap().push(l.to_string())
        }));
        let key = Path::new("/cvmfs/slow.example.org");
        let start = std::time::Instant::now();
        let r = layout.probe(key, "directory of layer x", || {
            thread::sleep(PROGRESS_AFTER + Duration::from_millis(500));
            Ok(7)
        });
        assert!(matches!(r, Some(Ok(7))), "waited for, not unreachable");
        assert!(start.elapsed() < PROGRESS_AFTER + Duration::from_secs(2));
        let lines = lines.lock().unwrap().clone();
        assert_eq!(
            lines,
            vec![format!(
                "cvmfs: waiting for /cvmfs/slow.example.org (directory of layer x): no answer yet after {}s, giving up after 30s (cvmfs.repository_timeout)",
                PROGRESS_AFTER.as_secs()
            )]
        );
    }

    #[test]
    fn the_default_limit_is_a_minute_and_fast_answers_print_nothing() {
        assert_eq!(
            Options::default().repository_timeout,
            Duration::from_secs(60)
        );
        let called = Arc::new(AtomicBool::new(false));
        let c = called.clone();
        let r = with_progress(
            Duration::from_secs(60),
            move |_| c.store(true, Ordering::Release),
            || Ok(1),
        );
        assert!(matches!(r, Some(Ok(1))));
        assert!(!called.load(Ordering::Acquire));
    }

    #[test]
    fn a_missing_directory_says_why_from_the_repository_root() {
        let t = tempfile::tempdir().unwrap();
        let gone = why_missing(&t.path().join("gone"));
        assert!(gone.contains("mount point does not exist"), "{gone}");
        let empty = t.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let e = why_missing(&empty);
        assert!(e.contains("mount point is empty"), "{e}");
        fs::create_dir(empty.join(".layers")).unwrap();
        let e = why_missing(&empty);
        assert!(e.contains("layer not published"), "{e}");
        // A mounted filesystem that lacks the directory.
        let e = why_missing(Path::new("/proc"));
        assert!(e.contains("in the mounted repository"), "{e}");
    }

    #[test]
    fn hung_repository_times_out_quickly() {
        let start = std::time::Instant::now();
        let r = with_timeout(Duration::from_millis(100), || {
            thread::sleep(Duration::from_secs(5));
            Ok(())
        });
        assert!(r.is_none());
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
