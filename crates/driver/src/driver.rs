//! The driver operations (one method per function of the C ABI).
//!
//! A layer is either *local* (in the driver home, see [`store`](crate::store)) or
//! found in an additional read-only image store (see [`layout`](crate::layout)),
//! possibly pointing into a CVMFS repository. `get` stacks a layer and its parent
//! chain in one overlay mount; mounts are reference counted in
//! `<run_root>/cvmfs/mounts/<id>` under `flock`, so several handles in one
//! process and several processes agree on when to unmount.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::{self, ApplyOptions, Change, DirUsage, IdMappings};
use crate::error::{Error, ErrorCode, Result};
use crate::layout::{Layout, Ownership, StoreLayer, StoreLayerKind, Whiteouts};
use crate::mount::{self, whiteouts, MountApi, Mounter, OverlaySpec};
use crate::options::Options;
use crate::store::{validate_id, LocalRecord, RootAttrs, Store};

/// Deepest parent chain we follow (a guard against corrupt records; mounts are
/// bounded by [`MAX_LOWERS`]).
pub const MAX_DEPTH: usize = 4096;

/// What `Metadata` says of a layer whose repository lost the image's file
/// ownership (DUCC ingests without keeping it) when no ownership metadata restores it.
pub const OWNERSHIP_LOST: &str = "lost: every file shows the repository owner, not the image's owner (no ownership metadata for this layer)";

/// What `Metadata` says of a layer whose lost ownership is restored from the
/// publisher's `ownership.json`.
pub const OWNERSHIP_RESTORED: &str =
    "restored from ownership metadata (the repository itself lost it)";

/// Most lower directories one overlay mount takes (the kernel's OVL_MAX_STACK).
pub const MAX_LOWERS: usize = 500;

/// Options of [`Driver::apply_diff`] (Go `ApplyDiffOpts`).
#[derive(Debug, Clone, Default)]
pub struct ApplyDiffOptions {
    pub mappings: Option<IdMappings>,
    pub ignore_chown_errors: bool,
    pub force_mask: Option<u32>,
}

/// A resolved layer.
#[derive(Debug, Clone)]
enum Layer {
    Local { id: String, record: LocalRecord },
    Store(StoreLayer),
}

impl Layer {
    fn id(&self) -> &str {
        match self {
            Layer::Local { id, .. } => id,
            Layer::Store(s) => &s.id,
        }
    }
    fn parent(&self) -> Option<&str> {
        match self {
            Layer::Local { record, .. } => record.parent.as_deref(),
            Layer::Store(s) => s.parent.as_deref(),
        }
    }
}

/// The record of a CVMFS layer whose directory holds raw OCI `.wh.*` markers.
fn raw(l: &Layer) -> Option<&StoreLayer> {
    match l {
        Layer::Store(
            s @ StoreLayer {
                kind:
                    StoreLayerKind::Cvmfs {
                        whiteouts: Whiteouts::OciRaw,
                        ..
                    },
                ..
            },
        ) => Some(s),
        _ => None,
    }
}

/// Cache key of the auxiliary layer between `upper` and `lower`; `None` when
/// none is needed (no raw layer, or a raw layer with nothing below it).
fn aux_key(upper: Option<&StoreLayer>, lower: Option<&StoreLayer>) -> Option<String> {
    let v = whiteouts::AUX_VERSION;
    // Restored owners are part of the content: a different key.
    let own = if lower.is_some_and(|l| l.owners.is_some()) {
        "-own"
    } else {
        ""
    };
    match (upper, lower) {
        (Some(u), Some(l)) => Some(format!("v{v}-{}-{}{own}", u.id, l.id)),
        (Some(u), None) => Some(format!("v{v}-{}-local", u.id)),
        (None, Some(l)) => Some(format!("v{v}-top-{}{own}", l.id)),
        (None, None) => None,
    }
}

/// The whiteout layers one stack needs that were not built yet, and the
/// markers of its layers. Each is built in the staging area; [`finish`]
/// makes them durable with one `syncfs` (not one per directory: a deep
/// stack builds dozens at its first mount) and then gives each its final
/// name by an atomic rename, so a crash leaves either nothing under a final
/// name or a complete directory.
///
/// [`finish`]: AuxBatch::finish
#[derive(Default)]
struct AuxBatch {
    /// (staging directory, final name)
    staged: Vec<(PathBuf, PathBuf)>,
    /// Markers found by walking a layer, by layer ID: each layer is walked
    /// once per stack even though it is in two pairs.
    scanned: std::collections::HashMap<String, Arc<Vec<whiteouts::Marker>>>,
    /// When building this stack's whiteout layers must have ended (set at
    /// the first one: `cvmfs.whiteout_timeout` from then).
    deadline: Option<std::time::Instant>,
}

impl AuxBatch {
    /// The markers of `l`: as its record lists them, else found by walking it.
    fn markers_of(
        &mut self,
        l: Option<&StoreLayer>,
        what: impl Fn(&StoreLayer) -> String,
    ) -> Result<Arc<Vec<whiteouts::Marker>>> {
        let Some(l) = l else {
            return Ok(Arc::default());
        };
        if let Some(m) = &l.markers {
            return Ok(m.clone());
        }
        if let Some(m) = self.scanned.get(&l.id) {
            return Ok(m.clone());
        }
        let m = Arc::new(
            whiteouts::scan_markers_until(&l.content_dir, self.deadline).map_err(|e| {
                Error::new(
                    ErrorCode::Repository,
                    format!("{}: looking for whiteout markers: {e}", what(l)),
                )
            })?,
        );
        self.scanned.insert(l.id.clone(), m.clone());
        Ok(m)
    }

    fn finish(mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        let Some((first, _)) = staged.first() else {
            return Ok(());
        };
        let mut result = File::open(first)
            .and_then(|f| {
                rustix::fs::syncfs(&f)
                    .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
            })
            .map_err(|e| Error::io("sync new whiteout layers", first, e));
        for (staging, built) in &staged {
            if result.is_ok() {
                result = match rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    staging,
                    rustix::fs::CWD,
                    built,
                    rustix::fs::RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => continue,
                    // Someone else finished the same build first: theirs is equal.
                    Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => Ok(()),
                    Err(e) => Err(Error::errno("publish whiteout layer", built, e)),
                };
            }
            let _ = crate::store::remove_tree(staging);
        }
        result
    }

    fn abandon(mut self) {
        for (staging, _) in std::mem::take(&mut self.staged) {
            let _ = crate::store::remove_tree(&staging);
        }
    }
}

/// A flat root filesystem standing in for a store layer and its chain.
struct FlatStandIn {
    /// The store layer it replaces (with everything below it).
    stands_for: String,
    /// The tree as a raw-whiteout layer without markers, so that the usual
    /// whiteout layer above it hides its CVMFS catalog marker.
    layer: StoreLayer,
}

/// What a nested (separately mounted, read-only) part of a stack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NestedKind {
    /// The bottom of a stack too deep for one mount; the whiteout layer
    /// hiding its top layer's markers stays in the stack above.
    Bottom,
    /// A whole CVMFS stack with restored owners, under a writable layer.
    Full,
}

/// One directory of a stack being composed.
struct Member<'a> {
    dir: PathBuf,
    /// Short path for the mount(2) fallback.
    short: PathBuf,
    /// The layer whose content directory this is (None: an earlier upper or a
    /// nested mount).
    layer: Option<&'a Layer>,
    /// Its record when it is a raw-whiteout CVMFS layer.
    raw: Option<&'a StoreLayer>,
}

impl Member<'_> {
    fn extra(dir: PathBuf) -> Self {
        Member {
            short: dir.clone(),
            dir,
            layer: None,
            raw: None,
        }
    }
}

// The C ABI promises that one handle may be used from many threads at once.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Driver>();
};

/// The `cvmfs` graph driver.
pub struct Driver {
    store: Store,
    /// `<run_root>/cvmfs`
    run_dir: PathBuf,
    options: Options,
    layout: Layout,
    mounter: Arc<dyn Mounter>,
}

/// An exclusive `flock` on a layer's mount count file; released on drop.
struct MountCount {
    file: File,
}

/// Width of the count in its file: every write replaces the whole content
/// in place. Truncating and rewriting instead made ext4 flush the file on
/// close (its replace-by-truncate heuristic), a disk write on every get/put.
const COUNT_WIDTH: usize = 20;

impl MountCount {
    fn read(&mut self) -> u64 {
        let mut buf = [0u8; 32];
        let n = std::os::unix::fs::FileExt::read_at(&self.file, &mut buf, 0).unwrap_or(0);
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
    fn write(&mut self, n: u64, path: &Path) -> Result<()> {
        // Space-padded: a shorter earlier content (older drivers wrote the
        // bare number) is overwritten completely as well.
        let text = format!("{n:<COUNT_WIDTH$}");
        std::os::unix::fs::FileExt::write_all_at(&self.file, text.as_bytes(), 0)
            .map_err(|e| Error::io("update mount count", path, e))
    }
}

/// An exclusive `flock` on `path` (created if missing). `remove` unlinks a
/// layer's count file while holding its lock, so a waiter may get the lock on
/// a file no longer at `path`, which guards nothing: it then tries again with
/// the file now there.
fn lock_file(path: &Path, what: &str) -> Result<File> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(format!("{what}: open lock"), path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::errno(format!("{what}: lock"), path, e))?;
        let held =
            rustix::fs::fstat(&file).map_err(|e| Error::errno(format!("{what}: lock"), path, e))?;
        match rustix::fs::stat(path) {
            Ok(now) if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino) => return Ok(file),
            Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Error::errno(format!("{what}: lock"), path, e)),
        }
    }
}

fn normalize_parent(parent: Option<&str>) -> Option<&str> {
    parent.filter(|p| !p.is_empty())
}

/// Refuse mappings no user namespace could have (overflowing, empty or
/// overlapping ranges) before any ID arithmetic uses them.
fn check_mappings<'a>(
    id: &str,
    op: &str,
    mappings: impl IntoIterator<Item = Option<&'a IdMappings>>,
) -> Result<()> {
    for m in mappings.into_iter().flatten() {
        m.validate()
            .map_err(|e| Error::invalid(format!("layer {id}: {op}: invalid ID mappings: {e}")))?;
    }
    Ok(())
}

fn unknown(id: &str, op: &str) -> Error {
    Error::new(
        ErrorCode::LayerUnknown,
        format!("layer {id}: {op}: layer not known"),
    )
}

const OVERLAYFS_MAGIC: u64 = 0x794C7630;

/// Name the filesystem type of the driver home for `Status`.
fn fs_name(magic: i64) -> String {
    match magic as u64 {
        0xEF53 => "extfs".into(),
        0x58465342 => "xfs".into(),
        0x9123683E => "btrfs".into(),
        0x01021994 => "tmpfs".into(),
        0x794C7630 => "overlayfs".into(),
        0x2FC12FC1 => "zfs".into(),
        0x65735546 => "fuse".into(),
        0x6969 => "nfs".into(),
        0xF2F52010 => "f2fs".into(),
        m => format!("0x{m:x}"),
    }
}

impl Driver {
    /// Open the driver at `home` (`<graphroot>/cvmfs`) with run state under
    /// `<run_root>/cvmfs`. Idempotent: any number of handles may be open on the
    /// same home, in one or several processes.
    pub fn new<S: AsRef<str>>(home: &Path, run_root: &Path, options: &[S]) -> Result<Driver> {
        Self::with_mounter(home, run_root, options, Arc::new(mount::real_mounter()))
    }

    /// Like [`Driver::new`] with a chosen mounter (tests use the recording fake).
    pub fn with_mounter<S: AsRef<str>>(
        home: &Path,
        run_root: &Path,
        options: &[S],
        mounter: Arc<dyn Mounter>,
    ) -> Result<Driver> {
        let mut options = Options::parse(options.iter().map(|s| s.as_ref()))?;
        if !run_root.is_absolute() {
            return Err(Error::invalid(format!(
                "run root {:?} is not an absolute path",
                run_root.display()
            )));
        }
        // Overlay cannot use an upper directory on overlayfs (a home inside a
        // container's root filesystem): say so now rather than at the first Get.
        // Checked on the nearest existing ancestor, before creating anything.
        let existing = home
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        if let Ok(st) = rustix::fs::statfs(existing) {
            if st.f_type as u64 == OVERLAYFS_MAGIC {
                return Err(Error::new(
                    ErrorCode::Prerequisites,
                    format!(
                        "cvmfs: driver home {} is on overlayfs, which cannot hold overlay upper directories; \
                         put the graph root on another filesystem (e.g. a volume)",
                        home.display()
                    ),
                ));
            }
        }
        let store = Store::open(home)?;
        let run_dir = run_root.join("cvmfs");
        for d in [
            run_dir.join("mounts"),
            run_dir.join("merged"),
            run_dir.join("nested-locks"),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| Error::io("create run directory", &d, e))?;
        }
        crate::ducc::add_ducc_stores(home, &mut options, &|m| eprintln!("{m}"));
        let layout = Layout::new(&options);
        Ok(Driver {
            store,
            run_dir,
            options,
            layout,
            mounter,
        })
    }

    pub fn home(&self) -> &Path {
        self.store.home()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    fn resolve(&self, id: &str, op: &str) -> Result<Layer> {
        validate_id(id).map_err(|e| e.context(op))?;
        self.resolve_quiet(id).map_err(|e| match e.code() {
            ErrorCode::LayerUnknown => unknown(id, op),
            _ => e.context(format!("layer {id}: {op}")),
        })
    }

    /// Resolve without adding context (callers say what they were doing).
    fn resolve_quiet(&self, id: &str) -> Result<Layer> {
        match self.store.read(id) {
            Ok(record) => {
                return Ok(Layer::Local {
                    id: id.to_string(),
                    record,
                })
            }
            Err(e) if e.code() == ErrorCode::LayerUnknown => {}
            Err(e) => return Err(e),
        }
        match self.layout.find(id)? {
            Some(s) => Ok(Layer::Store(s)),
            None => Err(Error::layer_unknown(id)),
        }
    }

    fn content_dir(&self, layer: &Layer) -> PathBuf {
        match layer {
            Layer::Local { id, .. } => self.store.diff_dir(id),
            Layer::Store(s) => s.content_dir.clone(),
        }
    }

    /// Earlier upper dirs of a local layer (`diff1`, `diff2`, ...), topmost first:
    /// `update_id_map` moves the re-owned copy of the whole stack there, as the
    /// overlay driver does, so the layer's own `diff` again holds only its changes.
    fn extra_dirs(&self, layer: &Layer) -> Vec<PathBuf> {
        let Layer::Local { id, .. } = layer else {
            return Vec::new();
        };
        let dir = self.store.layer_dir(id);
        (1..)
            .map(|n| dir.join(format!("diff{n}")))
            .take_while(|p| p.is_dir())
            .collect()
    }

    /// Every directory a layer contributes to a stack, topmost first.
    fn stack(&self, layer: &Layer) -> Vec<PathBuf> {
        let mut v = vec![self.content_dir(layer)];
        v.extend(self.extra_dirs(layer));
        v
    }

    /// Lowers below a layer's own `diff`: its extra dirs, then its parents'
    /// stacks; a flat tree that stands in for a layer (see
    /// [`Driver::flat_stand_in`]) ends the list.
    fn lowers_below(&self, layer: &Layer, chain: &[Layer]) -> Vec<PathBuf> {
        let mut v = self.extra_dirs(layer);
        for l in chain {
            if let Some(flat) = self.flat_of(l) {
                v.push(flat.to_path_buf());
                break;
            }
            v.extend(self.stack(l));
        }
        v
    }

    /// The flat tree recorded for store layer `l`, if the driver uses them.
    fn flat_of<'a>(&self, l: &'a Layer) -> Option<&'a Path> {
        match l {
            Layer::Store(s) if self.options.use_flat => s.flat.as_deref(),
            _ => None,
        }
    }

    /// Short path for the mount(2) fallback. The link is made when the layer
    /// is created; only the fallback, which uses it, makes sure it still exists
    /// (a crash may have lost it): a `symlink` per layer on every mount with
    /// `lowerdir+` would only fail with EEXIST.
    fn short_dir(&self, layer: &Layer) -> Result<PathBuf> {
        match layer {
            Layer::Local { id, record } => {
                if self.mounter.known_api() == Some(MountApi::Fsconfig) {
                    Ok(self.store.short_link_path(id, record))
                } else {
                    self.store.short_link(id, record)
                }
            }
            Layer::Store(s) => Ok(s.content_dir.clone()),
        }
    }

    fn merged_dir(&self, layer: &Layer) -> PathBuf {
        match layer {
            Layer::Local { id, .. } => self.store.merged_dir(id),
            // Stores are read-only: mount points live in the run root.
            Layer::Store(s) => self.run_dir.join("merged").join(&s.id),
        }
    }

    /// The parent chain, nearest parent first.
    fn chain(&self, layer: &Layer, op: &str) -> Result<Vec<Layer>> {
        self.chain_until(layer, op, |_| false)
    }

    /// [`Driver::chain`], stopping after the first parent for which `last`
    /// is true: what lies below it is not read (on CVMFS, one record fetch
    /// per layer).
    fn chain_until(
        &self,
        layer: &Layer,
        op: &str,
        last: impl Fn(&Layer) -> bool,
    ) -> Result<Vec<Layer>> {
        let mut out: Vec<Layer> = Vec::new();
        let mut next = layer.parent().map(str::to_string);
        while let Some(p) = next {
            if out.len() >= MAX_DEPTH {
                return Err(Error::not_supported(format!(
                    "layer {}: {op}: more than {MAX_DEPTH} parent layers",
                    layer.id()
                )));
            }
            if p == layer.id() || out.iter().any(|l| l.id() == p) {
                // Name the record that closes the loop: it is the bad file.
                let closing = match out.last().unwrap_or(layer) {
                    Layer::Store(s) => {
                        format!(" (record {} names it as parent)", s.record_path.display())
                    }
                    Layer::Local { .. } => String::new(),
                };
                return Err(Error::new(
                    ErrorCode::Io,
                    format!(
                        "layer {}: {op}: parent chain loops at {p}{closing}",
                        layer.id()
                    ),
                ));
            }
            let parent = self.resolve_quiet(&p).map_err(|e| {
                if e.code() == ErrorCode::LayerUnknown {
                    Error::new(
                        ErrorCode::LayerUnknown,
                        format!("layer {}: {op}: parent layer {p} is missing", layer.id()),
                    )
                } else {
                    e.context(format!("layer {}: {op}: parent layer {p}", layer.id()))
                }
            })?;
            next = parent.parent().map(str::to_string);
            if last(&parent) {
                next = None;
            }
            out.push(parent);
        }
        Ok(out)
    }

    /// Lock layer `id` against every other call on it (in this process or
    /// another): the lock on its mount count file. Create, remove, get and put
    /// hold it for their whole run, so a mount is made only on a layer that
    /// exists and is counted, and a layer is removed only when unmounted.
    fn count_lock(&self, id: &str) -> Result<(MountCount, PathBuf)> {
        let path = self.run_dir.join("mounts").join(id);
        let file = lock_file(&path, &format!("layer {id}"))?;
        Ok((MountCount { file }, path))
    }

    /// The auxiliary lower directory that goes between `upper` and `lower`
    /// (either a raw-whiteout CVMFS layer, see [`mount::whiteouts`]), cached in
    /// `<home>/aux/`; `None` when neither has markers (when the markers had
    /// to be looked for, remembered by an empty `<key>.none` file). `upper`'s
    /// parent is `lower` whenever both are given, so the pair of IDs names
    /// fixed content. A missing directory is built into the staging area and
    /// queued in `batch`, which makes it appear under its final name
    /// ([`AuxBatch::finish`]): the returned path exists only after that.
    fn aux_between(
        &self,
        upper: Option<&StoreLayer>,
        lower: Option<&StoreLayer>,
        batch: &mut AuxBatch,
    ) -> Result<Option<PathBuf>> {
        let Some(key) = aux_key(upper, lower) else {
            return Ok(None);
        };
        let dir = self.store.aux_dir();
        let built = dir.join(&key);
        let none = dir.join(format!("{key}.none"));
        if built.is_dir() {
            return Ok(Some(built));
        }
        let listed = |l: Option<&StoreLayer>| l.map_or(true, |l| l.markers.is_some());
        let all_listed = listed(upper) && listed(lower);
        if !all_listed && none.exists() {
            return Ok(None);
        }
        let what = |l: &StoreLayer| {
            let owners = match l.owners {
                Some(_) => format!(
                    ", ownership file {}",
                    l.record_path
                        .with_file_name(whiteouts::OWNERSHIP_FILE)
                        .display()
                ),
                None => String::new(),
            };
            format!(
                "layer {} ({}, record {}{owners})",
                l.id,
                l.content_dir.display(),
                l.record_path.display()
            )
        };
        let timeout = self.options.whiteout_timeout;
        let deadline = *batch
            .deadline
            .get_or_insert_with(|| std::time::Instant::now() + timeout);
        let (um, lm) = (
            batch.markers_of(upper, what)?,
            batch.markers_of(lower, what)?,
        );
        let owners: &[whiteouts::Owner] = lower
            .and_then(|l| l.owners.as_deref())
            .map(|o| o.as_slice())
            .unwrap_or(&[]);
        // The topmost one always hides the CVMFS catalog markers.
        let top = upper.is_none();
        if um.is_empty() && lm.is_empty() && owners.is_empty() && !top {
            // Listed markers cost nothing to look at again: no file needed.
            if !all_listed {
                fs::write(&none, b"")
                    .map_err(|e| Error::io("record marker-free layers", &none, e))?;
            }
            return Ok(None);
        }
        let staging = self.store.staging_name("aux", &key);
        let built_from = || {
            [upper, lower]
                .into_iter()
                .flatten()
                .map(what)
                .collect::<Vec<_>>()
                .join(" over ")
        };
        let result = fs::create_dir(&staging).and_then(|()| {
            whiteouts::build_aux_until(
                &staging,
                upper.map(|u| (u.content_dir.as_path(), um.as_slice())),
                lower.map(|l| (l.content_dir.as_path(), lm.as_slice())),
                owners,
                Some(deadline),
            )
        });
        if let Err(e) = result {
            let _ = crate::store::remove_tree(&staging);
            return Err(Error::new(
                ErrorCode::Io,
                format!(
                    "build whiteout layer {} for {}: {e}",
                    built.display(),
                    built_from()
                ),
            ));
        }
        batch.staged.push((staging, built.clone()));
        Ok(Some(built))
    }

    // ---- layers ---------------------------------------------------------------

    /// Create a local layer on top of `parent` (local or in a store). Every local
    /// layer gets an upper dir: callers write into layers after `get` even when
    /// they are not "read-write" (image layers being populated).
    pub fn create(
        &self,
        id: &str,
        parent: Option<&str>,
        read_write: bool,
        storage_opts: &[String],
    ) -> Result<()> {
        self.create_inner(id, parent, read_write, storage_opts, None, None)
    }

    /// [`Driver::create`] for a layer used in a user namespace: a parentless
    /// layer's root is owned by the mapped root (`CreateOpts.IDMappings`), as the
    /// overlay driver creates it. With a parent, the root starts as the parent's
    /// (the layer store then calls [`Driver::update_id_map`] if mappings differ).
    pub fn create_mapped(
        &self,
        id: &str,
        parent: Option<&str>,
        read_write: bool,
        storage_opts: &[String],
        mappings: Option<&IdMappings>,
    ) -> Result<()> {
        self.create_inner(id, parent, read_write, storage_opts, None, mappings)
    }

    /// Create `id` with a copy of `template`'s own files, on top of `parent`.
    pub fn create_from_template(
        &self,
        id: &str,
        template: &str,
        parent: Option<&str>,
        read_write: bool,
    ) -> Result<()> {
        let tmpl = self.resolve(template, "create from template")?;
        let src = self.stack(&tmpl);
        self.create_inner(id, parent, read_write, &[], Some(src), None)
    }

    fn create_inner(
        &self,
        id: &str,
        parent: Option<&str>,
        read_write: bool,
        storage_opts: &[String],
        template: Option<Vec<PathBuf>>,
        mappings: Option<&IdMappings>,
    ) -> Result<()> {
        validate_id(id).map_err(|e| e.context("create"))?;
        check_mappings(id, "create", [mappings])?;
        let parent = normalize_parent(parent);
        if let Some(opt) = storage_opts.iter().find(|o| !o.is_empty()) {
            return Err(Error::not_supported(format!(
                "layer {id}: create: storage option {opt:?}: the cvmfs driver does not support per-layer storage options (quotas)"
            )));
        }
        let root = match parent {
            None => {
                let (uid, gid) = mappings.map(|m| m.root_pair()).unwrap_or((0, 0));
                RootAttrs {
                    uid,
                    gid,
                    ..RootAttrs::default()
                }
            }
            Some(p) => {
                let pl = self.resolve(p, "create").map_err(|e| {
                    if e.code() == ErrorCode::LayerUnknown {
                        Error::new(
                            ErrorCode::LayerUnknown,
                            format!("layer {id}: create: parent layer {p} is not known"),
                        )
                    } else {
                        e
                    }
                })?;
                // The new root starts as the parent's root looks (as overlay does),
                // so an unchanged layer shows the same mode and owner.
                let dir = self.content_dir(&pl);
                let md = fs::metadata(&dir)
                    .map_err(|e| Error::io(format!("layer {id}: create: stat parent"), &dir, e))?;
                RootAttrs {
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                }
            }
        };
        // Held until the new layer is in place: a get or remove of this ID
        // meanwhile waits and then sees the new layer whole.
        let (mut count, count_path) = self.count_lock(id)?;
        if self.store.exists(id) {
            // As the overlay driver: a leftover directory for an ID the layer store
            // does not know (crash between the two) is replaced, not an error.
            self.remove_locked(id, &mut count, &count_path)?;
        } else if self.layout.find(id).ok().flatten().is_some() {
            return Err(Error::new(
                ErrorCode::LayerExists,
                format!(
                    "layer {id}: create: a layer with this ID exists in an additional image store"
                ),
            ));
        }
        self.store
            .create(id, LocalRecord::new(parent, read_write), root, |diff| {
                // The template's diff and any earlier uppers (diff1, ...) keep
                // their positions in the copy.
                for (n, src) in template.iter().flatten().enumerate() {
                    let dst = match n {
                        0 => diff.to_path_buf(),
                        n => diff.with_file_name(format!("diff{n}")),
                    };
                    archive::copy_tree(src, &dst).map_err(|e| {
                        Error::from(e).context(format!("layer {id}: copy template"))
                    })?;
                }
                Ok(())
            })
    }

    /// Remove a local layer, unmounting it first whatever its mount count. A
    /// missing layer is not an error (as with overlay); a store layer is read-only.
    pub fn remove(&self, id: &str) -> Result<()> {
        validate_id(id).map_err(|e| e.context("remove"))?;
        let (mut count, count_path) = self.count_lock(id)?;
        if self.remove_locked(id, &mut count, &count_path)? {
            // Unlinked while locked: a get waiting for this lock notices and
            // locks the next count file instead (see `lock_file`).
            let _ = fs::remove_file(&count_path);
        } else {
            self.forget_count(&mut count, &count_path);
        }
        Ok(())
    }

    /// [`Driver::remove`] with the layer's lock held. Nothing may stay mounted
    /// in the layer's directory: it is renamed into `staging/` and deleted,
    /// and a mount left there would both leak and have its files deleted.
    /// False when there was no local layer to remove.
    fn remove_locked(&self, id: &str, count: &mut MountCount, count_path: &Path) -> Result<bool> {
        let dir = self.store.layer_dir(id);
        if fs::symlink_metadata(&dir).is_err() {
            if self.layout.find(id).ok().flatten().is_some() {
                return Err(Error::read_only(id, "remove"));
            }
            return Ok(false);
        }
        let ctx = |e: Error| e.context(format!("layer {id}: remove"));
        self.unmount_all(&self.store.merged_dir(id)).map_err(ctx)?;
        // Anything else mounted inside the layer (a bind mount into its diff).
        let dir = fs::canonicalize(&dir).unwrap_or(dir);
        let mounted_below = || {
            mount::mount_points_under(&dir).map_err(|e| ctx(Error::io("read mountinfo", &dir, e)))
        };
        let found = mounted_below()?;
        for p in &found {
            self.unmount_all(p).map_err(ctx)?;
        }
        // Deleting the layer would delete through whatever is still mounted.
        let left = if found.is_empty() {
            found
        } else {
            mounted_below()?
        };
        if !left.is_empty() {
            let shown: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
            return Err(ctx(Error::new(
                ErrorCode::Busy,
                format!("still mounted, nothing removed: {}", shown.join(", ")),
            )));
        }
        count.write(0, count_path)?;
        self.store.remove(id)?;
        Ok(true)
    }

    /// Unmount `target` until nothing is mounted there: mounts stacked on one
    /// point (by an older driver, or by hand) are all undone, a bounded number.
    fn unmount_all(&self, target: &Path) -> Result<()> {
        const MOST_STACKED: usize = 64;
        for _ in 0..MOST_STACKED {
            if !self.mounter.is_mounted(target)? {
                return Ok(());
            }
            self.mounter.unmount(target)?;
        }
        Err(Error::new(
            ErrorCode::Busy,
            format!(
                "{}: still mounted after {MOST_STACKED} unmounts",
                target.display()
            ),
        ))
    }

    /// The count file of a layer found missing under its lock (removed while
    /// this call waited) goes again; only a layer with users keeps one.
    fn forget_count(&self, count: &mut MountCount, count_path: &Path) {
        if count.read() == 0 {
            let _ = fs::remove_file(count_path);
        }
    }

    /// Layer `id` resolved with its lock held. Unknown IDs are refused before
    /// locking, so they leave no count file behind.
    fn resolve_locked(&self, id: &str, op: &str) -> Result<(Layer, MountCount, PathBuf)> {
        if !self.store.exists(id) {
            self.resolve(id, op)?;
        }
        let (mut count, count_path) = self.count_lock(id)?;
        match self.resolve(id, op) {
            Ok(layer) => Ok((layer, count, count_path)),
            Err(e) => {
                self.forget_count(&mut count, &count_path);
                Err(e)
            }
        }
    }

    pub fn exists(&self, id: &str) -> Result<bool> {
        validate_id(id).map_err(|e| e.context("exists"))?;
        if self.store.exists(id) {
            return Ok(true);
        }
        Ok(self.layout.find(id)?.is_some())
    }

    /// Local layers, children before parents.
    pub fn list_layers(&self) -> Result<Vec<String>> {
        self.store.list()
    }

    // ---- mounts ---------------------------------------------------------------

    fn compose(&self, layer: &Layer, options: &[String]) -> Result<(PathBuf, OverlaySpec)> {
        self.compose_at(layer, options, None)
    }

    /// The overlay spec for `layer`. A stack deeper than overlayfs's limit is
    /// split once: its bottom part, from a CVMFS layer down, is mounted on its
    /// own (read-only, see [`Driver::nested_lower`]) and used as one lower
    /// directory; `nested` says this is that bottom part (which must fit).
    fn compose_at(
        &self,
        layer: &Layer,
        options: &[String],
        nested: Option<NestedKind>,
    ) -> Result<(PathBuf, OverlaySpec)> {
        let mut opts: Vec<String> = self.options.mount_options.clone();
        opts.extend(options.iter().filter(|o| !o.is_empty()).cloned());
        let read_only = opts.iter().any(|o| o == "ro") || matches!(layer, Layer::Store(_));
        let writable = matches!((layer, read_only), (Layer::Local { .. }, false));
        // Below a layer whose flat tree can stand in for it, the chain is
        // only read if the tree turns out unusable.
        let has_flat = |l: &Layer| self.flat_of(l).is_some();
        let mut chain = if !writable && has_flat(layer) {
            Vec::new()
        } else {
            self.chain_until(layer, "get", has_flat)?
        };
        let store_layers = std::iter::once(layer)
            .chain(&chain)
            .filter_map(|l| match l {
                Layer::Store(s) => Some(s),
                Layer::Local { .. } => None,
            });
        self.layout
            .check_stack_reachable(store_layers)
            .map_err(|e| e.context(format!("layer {}: get", layer.id())))?;
        let in_stack = |chain: &[Layer]| -> Vec<Layer> {
            std::iter::once(layer)
                .filter(|_| !writable)
                .chain(chain)
                .cloned()
                .collect()
        };
        let flat = self
            .flat_stand_in(in_stack(&chain).iter())
            .map_err(|e| e.context(format!("layer {}: get", layer.id())))?;
        if flat.is_none() && (chain.last().is_some_and(has_flat) || (!writable && has_flat(layer)))
        {
            // The flat tree does not answer: the whole chain after all.
            chain = self.chain(layer, "get")?;
        }
        let stack = in_stack(&chain);
        let empty = self.store.empty_dir();
        // Every directory the stack takes, topmost first, with the layer it
        // belongs to (None for earlier uppers) and, for raw-whiteout CVMFS
        // layers, their record (they need auxiliary layers around them).
        let mut members: Vec<Member> = Vec::new();
        let (upper, work) = match (layer, writable) {
            (Layer::Local { id, .. }, true) => {
                (Some(self.store.diff_dir(id)), Some(self.store.work_dir(id)))
            }
            _ => {
                if !opts.iter().any(|o| o == "ro") {
                    opts.push("ro".into());
                }
                (None, None)
            }
        };
        if writable {
            for extra in self.extra_dirs(layer) {
                members.push(Member::extra(extra));
            }
        }
        for l in &stack {
            if let Some(f) = flat.as_ref().filter(|f| f.stands_for == l.id()) {
                members.push(Member {
                    dir: f.layer.content_dir.clone(),
                    short: f.layer.content_dir.clone(),
                    layer: Some(l),
                    raw: Some(&f.layer),
                });
                break;
            }
            members.push(Member {
                dir: self.content_dir(l),
                short: self.short_dir(l)?,
                layer: Some(l),
                raw: raw(l),
            });
            for extra in self.extra_dirs(l) {
                members.push(Member::extra(extra));
            }
        }
        let ctx = |e: Error| e.context(format!("layer {}: get", layer.id()));
        // The bottom part of a split stack leaves the whiteout layer hiding its
        // top layer's markers to the stack above it (same effect, one fewer
        // directory down there).
        let owners = members
            .iter()
            .any(|m| m.raw.is_some_and(|r| r.owners.is_some()));
        if owners && upper.is_some() && nested.is_none() {
            // Restored owners are metadata-only copies (metacopy) in the
            // whiteout layers, which need `metacopy=on`; with an upper that
            // would also make the container's own copy-ups metadata-only,
            // which its diff cannot read. So the CVMFS part is mounted on its
            // own (metacopy=on, read-only) and used as one lower here, where
            // copy-ups are ordinary full copies.
            if let Some(k) = members
                .iter()
                .position(|m| matches!(m.layer, Some(Layer::Store(_))))
            {
                let base = members[k].layer.expect("checked above");
                let lower = self.nested_lower(base, NestedKind::Full).map_err(ctx)?;
                members.truncate(k);
                members.push(Member::extra(lower));
            }
        } else if owners && upper.is_none() && !opts.iter().any(|o| o == "metacopy=on") {
            opts.push("metacopy=on".into());
        }
        let mut entries = self
            .interleave(&members, nested == Some(NestedKind::Bottom))
            .map_err(ctx)?;
        if entries.len() > MAX_LOWERS && nested.is_none() {
            // Split at the highest CVMFS layer k such that the part above it,
            // the whiteout layer right above k and the nested mount fit.
            let upto = |k: usize| entries.iter().filter(|e| e.2 <= k).count();
            let split = (1..members.len()).rev().find(|&k| {
                matches!(members[k].layer, Some(Layer::Store(_))) && upto(k) <= MAX_LOWERS
            });
            if let Some(k) = split {
                let base = members[k].layer.expect("checked above");
                let base_raw = members[k].raw;
                let lower = self.nested_lower(base, NestedKind::Bottom).map_err(ctx)?;
                members.truncate(k);
                members.push(Member {
                    raw: base_raw,
                    ..Member::extra(lower)
                });
                entries = self.interleave(&members, false).map_err(ctx)?;
            }
        }
        let mut lowers: Vec<PathBuf> = Vec::with_capacity(entries.len() + 1);
        let mut short: Vec<PathBuf> = Vec::with_capacity(entries.len() + 1);
        for (dir, short_dir, _) in entries {
            lowers.push(dir);
            short.push(short_dir);
        }
        // Overlay needs a lower, and without an upper it wants two; `empty/` is
        // also harmless at the bottom of any stack.
        if lowers.is_empty() || (upper.is_none() && (lowers.len() < 2 || lowers.len() < MAX_LOWERS))
        {
            lowers.push(empty.clone());
            short.push(empty);
        }
        if lowers.len() > MAX_LOWERS {
            return Err(Error::not_supported(format!(
                "layer {}: get: the stack needs {} lower directories, more than overlayfs accepts ({MAX_LOWERS}){}",
                layer.id(),
                lowers.len(),
                if nested.is_some() {
                    " (in its nested part)"
                } else {
                    ""
                }
            )));
        }
        Ok((
            self.merged_dir(layer),
            OverlaySpec {
                lowers,
                short_lowers: short,
                upper,
                work,
                options: opts,
            },
        ))
    }

    /// The published flat root filesystem that can stand in for the first
    /// store layer of `stack` (topmost first) whose record names one, and for
    /// everything below it: the publisher stated that it equals that layer's
    /// chain applied (`docs/cvmfs-layers.md`, *Flat trees*). One lower
    /// directory instead of the chain and its whiteout layers: missing-path
    /// lookups (every `PATH` search) cost one directory, not one per layer,
    /// and nothing is built on local disk but the whiteout layer hiding the
    /// tree's catalog marker. Not used when `cvmfs.use_flat=false` or when
    /// the tree does not answer (the layers are used instead: same content).
    fn flat_stand_in<'a>(
        &self,
        stack: impl Iterator<Item = &'a Layer>,
    ) -> Result<Option<FlatStandIn>> {
        if !self.options.use_flat {
            return Ok(None);
        }
        for l in stack {
            let Layer::Store(s) = l else { continue };
            let Some(dir) = &s.flat else { continue };
            let layer = StoreLayer {
                // Its whiteout layer is cached under a name of its own.
                id: format!("{}-flat", s.id),
                content_dir: dir.clone(),
                markers: Some(Arc::default()),
                owners: None,
                flat: None,
                ..s.clone()
            };
            // A tree that leaves the repository is an error (the record is
            // hostile or corrupt); one that does not answer is worked around.
            if self.layout.check_beneath(&layer, "flat")?.is_ok() {
                return Ok(Some(FlatStandIn {
                    stands_for: s.id.clone(),
                    layer,
                }));
            }
        }
        Ok(None)
    }

    /// The lower directories of `members` with the auxiliary whiteout layers
    /// inserted, each tagged with the index of the member it belongs to (an
    /// auxiliary layer with the member below it).
    /// With `skip_top`, no auxiliary layer goes above the first member.
    fn interleave(
        &self,
        members: &[Member],
        skip_top: bool,
    ) -> Result<Vec<(PathBuf, PathBuf, usize)>> {
        let mut out = Vec::with_capacity(members.len() * 2);
        let mut batch = AuxBatch::default();
        let mut above: Option<&StoreLayer> = None;
        let built = (|| {
            for (i, m) in members.iter().enumerate() {
                if (above.is_some() || m.raw.is_some()) && !(skip_top && i == 0) {
                    if let Some(aux) = self.aux_between(above, m.raw, &mut batch)? {
                        out.push((aux.clone(), aux, i));
                    }
                }
                out.push((m.dir.clone(), m.short.clone(), i));
                above = m.raw;
            }
            Ok(())
        })();
        match built {
            Ok(()) => batch.finish()?,
            Err(e) => {
                batch.abandon();
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Mount the stack of store layer `base` read-only at
    /// `<run_root>/cvmfs/nested/<id>`, for use as one lower directory of a
    /// deeper stack, or reuse that mount. It holds no state and is shared by
    /// every stack above it; `cleanup` unmounts it.
    fn nested_lower(&self, base: &Layer, kind: NestedKind) -> Result<PathBuf> {
        let id = base.id();
        let name = match kind {
            NestedKind::Bottom => id.to_string(),
            NestedKind::Full => format!("{id}.full"),
        };
        let target = self.run_dir.join("nested").join(&name);
        // Not in mounts/: that directory is named by layer IDs, and a layer
        // whose ID were "nested-<name>" would share (and deadlock on) this lock.
        let _lock = lock_file(
            &self.run_dir.join("nested-locks").join(&name),
            &format!("layer {id}: nested mount"),
        )?;
        if self.mounter.is_mounted(&target)? {
            return Ok(target);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&target)
            .map_err(|e| Error::io(format!("layer {id}: create nested mount point"), &target, e))?;
        let (_, spec) = self.compose_at(base, &["ro".to_string()], Some(kind))?;
        self.mounter
            .mount_overlay(&spec, &target)
            .map_err(|e| e.context(format!("layer {id}: nested mount of part of a stack")))?;
        Ok(target)
    }

    /// Mount layer `id` with its parents and return the mount point. Counted:
    /// every `get` needs a `put`.
    pub fn get(&self, id: &str, _mount_label: Option<&str>, options: &[String]) -> Result<PathBuf> {
        // The caller's options go into the overlay mount: only allow-listed
        // ones, never directories of its own.
        crate::options::check_caller_mount_options(id, options)?;
        // Locked before the layer is read: a remove and create in between
        // cannot make this mount an old record's stack on the new layer.
        let (layer, mut count, count_path) = self.resolve_locked(id, "get")?;
        let merged = self.merged_dir(&layer);
        let n = count.read();
        if self.mounter.is_mounted(&merged)? {
            // Counted users, or a mount whose count was lost (reset by a
            // cleanup in another process): one more user either way, never a
            // second mount stacked on the first.
            count.write(n + 1, &count_path)?;
            return Ok(merged);
        }
        // Composing reads every parent's record and probes the repositories:
        // only needed when mounting.
        let (_, spec) = self.compose(&layer, options)?;
        // Not mounted (first get, or the count outlived a crash/reboot): mount now.
        if matches!(layer, Layer::Store(_)) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&merged)
                .map_err(|e| {
                    Error::io(format!("layer {id}: get: create mount point"), &merged, e)
                })?;
        }
        self.mounter
            .mount_overlay(&spec, &merged)
            .map_err(|e| e.context(format!("layer {id}: get")))?;
        count.write(1, &count_path)?;
        Ok(merged)
    }

    /// Release one `get`; unmount when the last user is gone. Releasing a layer
    /// that is not mounted is not an error.
    pub fn put(&self, id: &str) -> Result<()> {
        validate_id(id).map_err(|e| e.context("put"))?;
        if !self.store.exists(id) {
            self.resolve(id, "put")?;
        }
        let (mut count, count_path) = self.count_lock(id)?;
        // A local layer's mount point is known without reading its record.
        let local = self.store.exists(id);
        let merged = if local {
            self.store.merged_dir(id)
        } else {
            match self.resolve(id, "put") {
                Ok(layer) => self.merged_dir(&layer),
                Err(e) => {
                    self.forget_count(&mut count, &count_path);
                    return Err(e);
                }
            }
        };
        let n = count.read();
        if n > 1 {
            return count.write(n - 1, &count_path);
        }
        self.unmount_all(&merged)
            .map_err(|e| e.context(format!("layer {id}: put")))?;
        count.write(0, &count_path)?;
        if !local {
            let _ = fs::remove_dir(&merged);
        }
        Ok(())
    }

    /// Unmount everything mounted below the home (layers, and anything a
    /// crash left in `staging/`) and below the run directory, and reset the
    /// mount counts. Fails, naming them, if mounts are still there afterwards.
    pub fn cleanup(&self) -> Result<()> {
        // mountinfo shows resolved paths: a home reached through a symlink
        // (/var/lib/containers -> /data/...) must be matched resolved.
        let roots: Vec<PathBuf> = [self.home().to_path_buf(), self.run_dir.clone()]
            .into_iter()
            .map(|p| fs::canonicalize(&p).unwrap_or(p))
            .collect();
        // Strictly below: the home itself may well be a mount point (a volume).
        let below = || -> Result<Vec<PathBuf>> {
            let mut v = Vec::new();
            for root in &roots {
                let points = mount::mount_points_under(root)
                    .map_err(|e| Error::io("cleanup: read mountinfo", root, e))?;
                v.extend(points.into_iter().filter(|p| p != root));
            }
            Ok(v)
        };
        let mut first_err = None;
        // mountinfo lists a point once however many mounts are stacked on it:
        // rounds until nothing is left or a round achieves nothing.
        let mut left = below()?;
        for _ in 0..64 {
            if left.is_empty() {
                break;
            }
            for p in &left {
                if let Err(e) = self.mounter.unmount(p) {
                    first_err.get_or_insert(e.context("cleanup"));
                }
            }
            let now = below()?;
            if now == left && first_err.is_some() {
                break;
            }
            left = now;
        }
        let mounts = self.run_dir.join("mounts");
        if let Ok(entries) = fs::read_dir(&mounts) {
            for e in entries.flatten() {
                if let Some(id) = e.file_name().to_str() {
                    if let Ok((mut c, p)) = self.count_lock(id) {
                        let _ = c.write(0, &p);
                    }
                }
            }
        }
        if !left.is_empty() {
            let shown: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
            let cause = first_err.map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(Error::new(
                ErrorCode::Busy,
                format!(
                    "cleanup: still mounted after unmounting: {}{cause}",
                    shown.join(", ")
                ),
            ));
        }
        Ok(())
    }

    // ---- information ------------------------------------------------------------

    pub fn status(&self) -> Vec<(String, String)> {
        let backing = rustix::fs::statfs(self.home())
            .map(|s| fs_name(s.f_type))
            .unwrap_or_else(|e| format!("unknown ({e})"));
        let api = self.mounter.api(&self.store.empty_dir());
        let repos = self
            .layout
            .repositories()
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let layers = self
            .store
            .list()
            .map(|l| l.len().to_string())
            .unwrap_or_else(|e| format!("error: {e}"));
        vec![
            ("Backing Filesystem".into(), backing),
            ("Mount API".into(), api.to_string()),
            (
                "Repositories".into(),
                if repos.is_empty() {
                    "none".into()
                } else {
                    repos
                },
            ),
            (
                "Additional Image Stores".into(),
                self.additional_image_stores()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("Layers".into(), layers),
            ("CVMFS Ownership".into(), {
                let lost = self.layout.lost_ownership_layers();
                if lost.is_empty() {
                    "as in the image for every CVMFS layer used so far".into()
                } else {
                    format!(
                        "lost for {} CVMFS layer(s) used so far (files show the repository owner; no ownership metadata): {}",
                        lost.len(),
                        lost.join(",")
                    )
                }
            }),
        ]
    }

    pub fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        let layer = self.resolve(id, "metadata")?;
        let chain = if self.flat_of(&layer).is_some() {
            Vec::new()
        } else {
            self.chain_until(&layer, "metadata", |l| self.flat_of(l).is_some())?
        };
        let mut m = BTreeMap::new();
        let join = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        m.insert(
            "MergedDir".into(),
            self.merged_dir(&layer).display().to_string(),
        );
        match &layer {
            Layer::Local { id, record } => {
                m.insert("Kind".into(), "local".into());
                m.insert(
                    "UpperDir".into(),
                    self.store.diff_dir(id).display().to_string(),
                );
                m.insert(
                    "WorkDir".into(),
                    self.store.work_dir(id).display().to_string(),
                );
                m.insert("ReadWrite".into(), record.read_write.to_string());
                let lowers = self.lowers_below(&layer, &chain);
                if !lowers.is_empty() {
                    m.insert("LowerDir".into(), join(&lowers));
                }
            }
            Layer::Store(s) => {
                let mut lowers = match self.flat_of(&layer) {
                    Some(flat) => vec![flat.to_path_buf()],
                    None => self.stack(&layer),
                };
                lowers.extend(self.lowers_below(&layer, &chain));
                m.insert("LowerDir".into(), join(&lowers));
                m.insert("ImageStore".into(), s.store.display().to_string());
                match &s.kind {
                    StoreLayerKind::Local => {
                        m.insert("Kind".into(), "local (additional image store)".into());
                    }
                    StoreLayerKind::Cvmfs {
                        repository,
                        whiteouts,
                        ownership,
                    } => {
                        m.insert("Kind".into(), "cvmfs".into());
                        m.insert("Repository".into(), repository.display().to_string());
                        m.insert(
                            "Whiteouts".into(),
                            match whiteouts {
                                Whiteouts::Overlay => "overlay".into(),
                                Whiteouts::OciRaw => {
                                    "oci-raw (.wh.* markers hidden and applied by generated whiteout layers)".into()
                                }
                            },
                        );
                        m.insert(
                            "Ownership".into(),
                            match ownership {
                                Ownership::Kept => "kept".into(),
                                Ownership::Lost if s.owners.is_some() => OWNERSHIP_RESTORED.into(),
                                Ownership::Lost => OWNERSHIP_LOST.into(),
                            },
                        );
                        if let Some(f) = &s.flat {
                            m.insert(
                                "Flat".into(),
                                format!(
                                    "{} (mounted instead of the layer and its parents{})",
                                    f.display(),
                                    if self.options.use_flat {
                                        ""
                                    } else {
                                        "; off: cvmfs.use_flat=false"
                                    }
                                ),
                            );
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    pub fn additional_image_stores(&self) -> Vec<PathBuf> {
        self.layout.stores().to_vec()
    }

    /// Disk usage of a layer's own files (a CVMFS layer costs no local disk).
    pub fn read_write_disk_usage(&self, id: &str) -> Result<DirUsage> {
        let layer = self.resolve(id, "disk usage")?;
        if let Layer::Store(StoreLayer {
            kind: StoreLayerKind::Cvmfs { .. },
            ..
        }) = layer
        {
            return Ok(DirUsage::default());
        }
        let dir = self.content_dir(&layer);
        archive::dir_usage(&dir)
            .map_err(|e| Error::from(e).context(format!("layer {id}: disk usage")))
    }

    /// The directory holding the layer's own files.
    pub fn layer_content_dir(&self, id: &str) -> Result<PathBuf> {
        let layer = self.resolve(id, "content dir")?;
        Ok(self.content_dir(&layer))
    }

    /// Where tar-split may find the files of layer `id`, in search order: its own
    /// `diff`, its earlier uppers (`diff1`, ... after `update_id_map`), then its
    /// parents' directories. A layer made from a template or re-owned for a user
    /// namespace keeps its files below its own `diff`, and the layer store
    /// rebuilds its tar stream from those (DiffGetter).
    pub fn layer_content_dirs(&self, id: &str) -> Result<Vec<PathBuf>> {
        let layer = self.resolve(id, "content dirs")?;
        let chain = self.chain(&layer, "content dirs")?;
        let mut v = vec![self.content_dir(&layer)];
        v.extend(self.lowers_below(&layer, &chain));
        Ok(v)
    }

    // ---- diffs --------------------------------------------------------------------

    fn local_only(&self, id: &str, op: &str) -> Result<Layer> {
        let layer = self.resolve(id, op)?;
        if matches!(layer, Layer::Store(_)) {
            return Err(Error::read_only(id, op));
        }
        Ok(layer)
    }

    /// Apply an uncompressed OCI tar to local layer `id`; returns the size of the
    /// layer's files afterwards.
    pub fn apply_diff<R: Read>(&self, id: &str, reader: R, opts: &ApplyDiffOptions) -> Result<u64> {
        let layer = self.local_only(id, "apply diff")?;
        check_mappings(id, "apply diff", [opts.mappings.as_ref()])?;
        let dir = self.content_dir(&layer);
        let aopts = ApplyOptions {
            mappings: opts.mappings.clone(),
            ignore_chown_errors: opts.ignore_chown_errors || self.options.ignore_chown_errors,
            force_mask: opts.force_mask.or(self.options.force_mask),
        };
        archive::apply_tar(reader, &dir, &aopts)
            .map_err(|e| Error::from(e).context(format!("layer {id}: apply diff")))
    }

    fn direct(&self, id: &str, parent: Option<&str>, op: &str) -> Result<Layer> {
        let layer = self.resolve(id, op)?;
        let parent = normalize_parent(parent);
        if layer.parent() != parent {
            return Err(Error::not_supported(format!(
                "layer {id}: {op}: {} is not the direct parent ({}); use the naive diff",
                parent.unwrap_or("<none>"),
                layer.parent().unwrap_or("<none>")
            )));
        }
        Ok(layer)
    }

    /// Write an OCI tar of the layer's own changes to `w`.
    pub fn diff<W: Write>(
        &self,
        id: &str,
        parent: Option<&str>,
        mappings: Option<&IdMappings>,
        w: W,
    ) -> Result<()> {
        let layer = self.direct(id, parent, "diff")?;
        check_mappings(id, "diff", [mappings])?;
        let dir = self.content_dir(&layer);
        archive::write_diff_tar(&dir, mappings, w)
            .map_err(|e| Error::from(e).context(format!("layer {id}: diff")))
    }

    pub fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        let layer = self.direct(id, parent, "changes")?;
        let chain = self.chain(&layer, "changes")?;
        let ctx = |e: Error| e.context(format!("layer {id}: changes"));
        // The lowers as the mount stacks them, whiteout layers included: what
        // they hide (raw markers, deleted names, CVMFS catalog markers) did
        // not exist below, so a file of that name in this layer is added.
        // The layer itself comes first (its deletions act on the whiteout
        // layer below it), then is left out of the lowers.
        let mut members: Vec<Member> = Vec::new();
        for l in std::iter::once(&layer).chain(&chain) {
            let dir = self.content_dir(l);
            members.push(Member {
                short: dir.clone(),
                dir,
                layer: Some(l),
                raw: raw(l),
            });
            members.extend(self.extra_dirs(l).into_iter().map(Member::extra));
        }
        let lowers: Vec<PathBuf> = self
            .interleave(&members, true)
            .map_err(ctx)?
            .into_iter()
            .skip(1)
            .map(|(dir, _, _)| dir)
            .collect();
        let mut changes = archive::changes(&self.content_dir(&layer), &lowers)
            .map_err(|e| ctx(Error::from(e)))?;
        if raw(&layer).is_some() {
            // A raw CVMFS layer's own catalog markers are hidden in every
            // stack: they are no change of the image.
            changes.retain(|c| {
                !whiteouts::CATALOG_MARKERS
                    .iter()
                    .any(|m| c.path.strip_prefix('/') == Some(m))
            });
        }
        Ok(changes)
    }

    pub fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64> {
        let layer = self.direct(id, parent, "diff size")?;
        archive::dir_size(&self.content_dir(&layer))
            .map_err(|e| Error::from(e).context(format!("layer {id}: diff size")))
    }

    /// Re-own a local layer's files from one ID mapping to another.
    pub fn update_id_map(
        &self,
        id: &str,
        to_container: Option<&IdMappings>,
        to_host: Option<&IdMappings>,
    ) -> Result<()> {
        let op = "update ID map";
        let layer = self.local_only(id, op)?;
        check_mappings(id, op, [to_container, to_host])?;
        let ctx = |e: Error| e.context(format!("layer {id}: {op}"));
        // Re-own the whole stack as the layer sees it: through the mount, so
        // every parent file is copied up into this layer's diff with its new owner
        // (the layer store calls this when a layer's mappings differ from its
        // parent's, and the driver cannot shift IDs at mount time).
        let mount_opts: Vec<String> = Vec::new();
        let merged = self.get(id, None, &mount_opts)?;
        let chowned = archive::remap_ownership(&merged, to_container, to_host);
        self.put(id)?;
        chowned.map_err(|e| ctx(Error::from(e)))?;
        if self.mounter.is_mounted(&merged)? {
            return Err(Error::new(
                ErrorCode::Busy,
                format!("layer {id}: {op}: still mounted by another user, cannot rotate its upper directory"),
            ));
        }
        // Rotate: diff -> diff1 (-> diff2 ...), then a fresh empty diff, so later
        // diffs of this layer hold only what is applied to it afterwards.
        let dir = self.store.layer_dir(id);
        let diff = self.store.diff_dir(id);
        let md =
            fs::metadata(&diff).map_err(|e| Error::io(format!("layer {id}: {op}"), &diff, e))?;
        let n = self.extra_dirs(&layer).len();
        for i in (0..=n).rev() {
            let from = if i == 0 {
                diff.clone()
            } else {
                dir.join(format!("diff{i}"))
            };
            let to = dir.join(format!("diff{}", i + 1));
            fs::rename(&from, &to)
                .map_err(|e| Error::io(format!("layer {id}: {op}: rotate"), &from, e))?;
        }
        let (uid, gid) = to_host.map(|m| m.root_pair()).unwrap_or((0, 0));
        fs::DirBuilder::new()
            .mode(md.mode() & 0o7777)
            .create(&diff)
            .and_then(|()| {
                fs::set_permissions(&diff, fs::Permissions::from_mode(md.mode() & 0o7777))
            })
            .and_then(|()| std::os::unix::fs::chown(&diff, Some(uid), Some(gid)))
            .map_err(|e| Error::io(format!("layer {id}: {op}: new upper"), &diff, e))?;
        // The work dir may index the old upper: start it afresh.
        let work = self.store.work_dir(id);
        crate::store::remove_tree(&work)
            .map_err(|e| Error::io(format!("layer {id}: {op}"), &work, e))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(|e| Error::io(format!("layer {id}: {op}"), &work, e))?;
        Ok(())
    }
}
