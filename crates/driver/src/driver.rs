//! The driver operations (one method per function of the C ABI).
//!
//! A layer is either *local* (in the driver home, or with a separate image
//! store in `<imagestore>/cvmfs`, see [`store`](crate::store) and `Home`) or
//! found in an additional read-only image store (see [`layout`](crate::layout)),
//! possibly pointing into a CVMFS repository. `get` stacks a layer and its parent
//! chain in one overlay mount (composed in the `stack` module); mounts are
//! reference counted in
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
use crate::mount::{self, whiteouts, MountApi, Mounter};
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

/// Which of the driver's own (writable) homes holds a local layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// `<graphroot>/cvmfs`: every layer without a separate image store, and
    /// the container (read-write) layers with one.
    Main,
    /// `<separate image store>/cvmfs`: the image (read-only) layers when a
    /// separate image store is configured (`cvmfs.separate_image_store`).
    Images,
}

/// A resolved layer.
#[derive(Debug, Clone)]
pub(crate) enum Layer {
    Local {
        id: String,
        record: LocalRecord,
        home: Home,
    },
    Store(StoreLayer),
}

impl Layer {
    pub(crate) fn id(&self) -> &str {
        match self {
            Layer::Local { id, .. } => id,
            Layer::Store(s) => &s.id,
        }
    }
    pub(crate) fn parent(&self) -> Option<&str> {
        match self {
            Layer::Local { record, .. } => record.parent.as_deref(),
            Layer::Store(s) => s.parent.as_deref(),
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
    /// The driver home; also holds the whiteout layers, `empty/` and the
    /// staging area of everything the driver builds.
    pub(crate) store: Store,
    /// The home in the separate image store, if one is configured.
    pub(crate) image_store: Option<Store>,
    /// `<run_root>/cvmfs`
    pub(crate) run_dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) layout: Layout,
    pub(crate) mounter: Arc<dyn Mounter>,
    /// Background reads of published start-up profiles (issue 16).
    pub(crate) prefetch: crate::prefetch::Prefetcher,
    /// What containers/storage opens as additional image stores: local views
    /// of the repositories' stores (crate::mirror), so its lock files and
    /// indexes cost no repository round trip while they are unchanged.
    pub(crate) store_views: Vec<PathBuf>,
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
pub(crate) fn lock_file(path: &Path, what: &str) -> Result<File> {
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

/// Overlay cannot use an upper directory on overlayfs (a home inside a
/// container's root filesystem): say so when opening rather than at the
/// first Get. Checked on the nearest existing ancestor, before creating anything.
fn refuse_overlayfs_home(home: &Path) -> Result<()> {
    let existing = home
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match rustix::fs::statfs(existing) {
        Ok(st) if st.f_type as u64 == OVERLAYFS_MAGIC => Err(Error::new(
            ErrorCode::Prerequisites,
            format!(
                "cvmfs: driver home {} is on overlayfs, which cannot hold overlay upper directories; \
                 put the graph root on another filesystem (e.g. a volume)",
                home.display()
            ),
        )),
        _ => Ok(()),
    }
}

impl Driver {
    /// Open the driver at `home` (`<graphroot>/cvmfs`) with run state under
    /// `<run_root>/cvmfs`. Idempotent: any number of handles may be open on the
    /// same home, in one or several processes.
    pub fn new<S: AsRef<str>>(home: &Path, run_root: &Path, options: &[S]) -> Result<Driver> {
        let parsed = Options::parse(options.iter().map(|s| s.as_ref()))?;
        Self::with_mounter(home, run_root, options, Self::mounter_for(&parsed))
    }

    /// The kernel's overlay, or a FUSE mount program: the configured one,
    /// or fuse-overlayfs where the kernel cannot mount overlay rootless
    /// (issue 15 hook).
    fn mounter_for(options: &Options) -> Arc<dyn Mounter> {
        if let Some(program) = &options.mount_program {
            return Arc::new(mount::program::ProgramMounter::new(
                program.clone(),
                "configured (cvmfs.mount_program)",
            ));
        }
        match mount::program::automatic_fallback() {
            Some(m) => Arc::new(m),
            None => Arc::new(mount::real_mounter()),
        }
    }

    /// Like [`Driver::new`] with a chosen mounter (tests use the recording fake).
    pub fn with_mounter<S: AsRef<str>>(
        home: &Path,
        run_root: &Path,
        options: &[S],
        mounter: Arc<dyn Mounter>,
    ) -> Result<Driver> {
        let mut options = Options::parse(options.iter().map(|s| s.as_ref()))?;
        // First of all, before anything below looks into a store: on a cold
        // CVMFS client the catalogs the start walks through then load side
        // by side instead of one after another (crate::mirror).
        if options.store_views {
            for s in &options.image_stores {
                crate::mirror::warm_store_catalogs(s);
            }
        }
        if !run_root.is_absolute() {
            return Err(Error::invalid(format!(
                "run root {:?} is not an absolute path",
                run_root.display()
            )));
        }
        let image_home = options
            .separate_image_store
            .as_ref()
            .map(|root| root.join("cvmfs"))
            .filter(|images| images != home);
        for h in std::iter::once(home).chain(image_home.as_deref()) {
            refuse_overlayfs_home(h)?;
        }
        let store = Store::open(home)?;
        let image_store = image_home.as_deref().map(Store::open).transpose()?;
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
        let mut layout = Layout::new(&options)
            .with_record_cache(store.home().join(crate::layout::RECORD_CACHE_DIR));
        // Rootless (issue 15 hook): missing views are asked of the view service,
        // and repositories with an ID-mapped view are read through it.
        if let Some(dir) = crate::rootless::views_dir() {
            let repositories = layout.all_repositories();
            let socket = crate::rootless::view_socket();
            for m in crate::rootless::request_missing_views(dir, &repositories, &socket) {
                eprintln!("{m}");
            }
            let views = crate::rootless::find_views(dir, &repositories);
            layout = layout.with_views(views);
        }
        let store_views = if options.store_views {
            crate::mirror::mirror_stores(
                &store,
                &options.image_stores,
                options.repository_timeout,
                options.prefetch.enabled,
                &|m| eprintln!("{m}"),
            )
        } else {
            options.image_stores.clone()
        };
        let prefetch = crate::prefetch::Prefetcher::new(options.prefetch, &run_dir);
        Ok(Driver {
            store_views,
            store,
            image_store,
            run_dir,
            options,
            layout,
            mounter,
            prefetch,
        })
    }

    pub fn home(&self) -> &Path {
        self.store.home()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The store of one of the driver's homes.
    pub(crate) fn home_store(&self, home: Home) -> &Store {
        match (home, &self.image_store) {
            (Home::Images, Some(images)) => images,
            _ => &self.store,
        }
    }

    /// Every home, the main one first: container layers, which stack on
    /// image layers, come before them.
    fn homes(&self) -> impl Iterator<Item = (Home, &Store)> {
        std::iter::once((Home::Main, &self.store))
            .chain(self.image_store.iter().map(|s| (Home::Images, s)))
    }

    /// The home holding local layer `id`, if one does (as overlay looks for a
    /// layer's directory in its home, then in its image store).
    pub(crate) fn home_of(&self, id: &str) -> Option<(Home, &Store)> {
        self.homes().find(|(_, s)| s.exists(id))
    }

    /// The store of a local layer (the main one for store layers, which
    /// callers do not ask about).
    pub(crate) fn store_of(&self, layer: &Layer) -> &Store {
        match layer {
            Layer::Local { home, .. } => self.home_store(*home),
            Layer::Store(_) => &self.store,
        }
    }

    /// Where a new layer goes: image (read-only) layers to the separate image
    /// store when there is one, as overlay creates them there.
    fn home_for_new(&self, read_write: bool) -> Home {
        if !read_write && self.image_store.is_some() {
            Home::Images
        } else {
            Home::Main
        }
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
        for (home, store) in self.homes() {
            match store.read(id) {
                Ok(record) => {
                    return Ok(Layer::Local {
                        id: id.to_string(),
                        record,
                        home,
                    })
                }
                Err(e) if e.code() == ErrorCode::LayerUnknown => {}
                Err(e) => return Err(e),
            }
        }
        match self.layout.find(id)? {
            Some(s) => Ok(Layer::Store(s)),
            None => Err(Error::layer_unknown(id)),
        }
    }

    pub(crate) fn content_dir(&self, layer: &Layer) -> PathBuf {
        match layer {
            Layer::Local { id, home, .. } => self.home_store(*home).diff_dir(id),
            Layer::Store(s) => s.content_dir.clone(),
        }
    }

    /// Earlier upper dirs of a local layer (`diff1`, `diff2`, ...), topmost first:
    /// `update_id_map` moves the re-owned copy of the whole stack there, as the
    /// overlay driver does, so the layer's own `diff` again holds only its changes.
    pub(crate) fn extra_dirs(&self, layer: &Layer) -> Vec<PathBuf> {
        let Layer::Local { id, home, .. } = layer else {
            return Vec::new();
        };
        let dir = self.home_store(*home).layer_dir(id);
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
    pub(crate) fn flat_of<'a>(&self, l: &'a Layer) -> Option<&'a Path> {
        match l {
            Layer::Store(s) if self.options.use_flat => s.flat.as_deref(),
            _ => None,
        }
    }

    /// Short path for the mount(2) fallback. The link is made when the layer
    /// is created; only the fallback, which uses it, makes sure it still exists
    /// (a crash may have lost it): a `symlink` per layer on every mount with
    /// `lowerdir+` would only fail with EEXIST.
    pub(crate) fn short_dir(&self, layer: &Layer) -> Result<PathBuf> {
        match layer {
            Layer::Local { id, record, home } => {
                let store = self.home_store(*home);
                if self.mounter.known_api() == Some(MountApi::Fsconfig) {
                    Ok(store.short_link_path(id, record))
                } else {
                    store.short_link(id, record)
                }
            }
            Layer::Store(s) => Ok(s.content_dir.clone()),
        }
    }

    pub(crate) fn merged_dir(&self, layer: &Layer) -> PathBuf {
        match layer {
            Layer::Local { id, home, .. } => self.home_store(*home).merged_dir(id),
            // Stores are read-only: mount points live in the run root.
            Layer::Store(s) => self.run_dir.join("merged").join(&s.id),
        }
    }

    /// The parent chain, nearest parent first.
    pub(crate) fn chain(&self, layer: &Layer, op: &str) -> Result<Vec<Layer>> {
        self.chain_until(layer, op, |_| false)
    }

    /// [`Driver::chain`], stopping after the first parent for which `last`
    /// is true: what lies below it is not read (on CVMFS, one record fetch
    /// per layer).
    pub(crate) fn chain_until(
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
                // rootless: an unmapped (overflow) owner cannot be given
                let (uid, gid) = crate::rootless::settable_owner(md.uid(), md.gid());
                RootAttrs {
                    mode: md.mode() & 0o7777,
                    uid,
                    gid,
                }
            }
        };
        // Held until the new layer is in place: a get or remove of this ID
        // meanwhile waits and then sees the new layer whole.
        let (mut count, count_path) = self.count_lock(id)?;
        if self.home_of(id).is_some() {
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
        self.home_store(self.home_for_new(read_write)).create(
            id,
            LocalRecord::new(parent, read_write),
            root,
            |diff| {
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
            },
        )
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
        let found = self
            .homes()
            .map(|(_, store)| store)
            .find(|store| fs::symlink_metadata(store.layer_dir(id)).is_ok());
        let Some(store) = found else {
            if self.layout.find(id).ok().flatten().is_some() {
                return Err(Error::read_only(id, "remove"));
            }
            return Ok(false);
        };
        let dir = store.layer_dir(id);
        let ctx = |e: Error| e.context(format!("layer {id}: remove"));
        self.unmount_all(&store.merged_dir(id)).map_err(ctx)?;
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
        store.remove(id)?;
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
        if self.home_of(id).is_none() {
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
        if self.home_of(id).is_some() {
            return Ok(true);
        }
        Ok(self.layout.find(id)?.is_some())
    }

    /// Add to the on-demand DUCC stores what a containers/storage lookup
    /// did not find (an image by name or ID, layers by digest; see
    /// `ducc::ondemand`); true when a store lists it now, so the lookup is
    /// worth retrying. Bounded by the repository timeout; problems are warnings
    /// (the lookup then fails as it would have).
    pub fn provide(&self, what: crate::ducc::Wanted, key: &str) -> Result<bool> {
        if key.is_empty()
            || key.len() > crate::ducc::MAX_NAME_LEN
            || key.chars().any(char::is_control)
        {
            return Err(Error::invalid(format!(
                "provide: {key:?} is no image name, ID or digest"
            )));
        }
        if self.options.ducc_stores.is_empty() {
            return Ok(false);
        }
        let (stores, key_owned) = (self.options.ducc_stores.clone(), key.to_string());
        let warn = |m: &str| eprintln!("{m}");
        let asked = crate::layout::with_progress(
            self.options.repository_timeout,
            |_| {},
            move || {
                Ok(crate::ducc::provide(&stores, what, &key_owned, &|m| {
                    eprintln!("{m}")
                }))
            },
        );
        match asked {
            Some(Ok(added)) => Ok(added),
            Some(Err(e)) => {
                warn(&format!("cvmfs: DUCC lookup of {key}: {e}"));
                Ok(false)
            }
            None => {
                warn(&format!(
                    "cvmfs: DUCC lookup of {key}: no answer within {}s (cvmfs.repository_timeout)",
                    self.options.repository_timeout.as_secs()
                ));
                Ok(false)
            }
        }
    }

    /// Local layers, children before parents: the main home's first, whose
    /// container layers stack on the image store's layers.
    pub fn list_layers(&self) -> Result<Vec<String>> {
        let mut all = Vec::new();
        for (_, store) in self.homes() {
            all.extend(store.list()?);
        }
        Ok(all)
    }

    // ---- mounts ---------------------------------------------------------------

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
        // prefetch the image's start-up profile in the
        // background (a container layer's parent is the image's top layer).
        let top = match &layer {
            Layer::Store(s) => Some(s.id.clone()),
            Layer::Local { record, .. } => record.parent.clone(),
        };
        let flat = self.options.use_flat;
        self.prefetch.start(id, top, &merged, &self.layout, flat);
        Ok(merged)
    }

    /// Release one `get`; unmount when the last user is gone. Releasing a layer
    /// that is not mounted is not an error.
    pub fn put(&self, id: &str) -> Result<()> {
        validate_id(id).map_err(|e| e.context("put"))?;
        if self.home_of(id).is_none() {
            self.resolve(id, "put")?;
        }
        let (mut count, count_path) = self.count_lock(id)?;
        // A local layer's mount point is known without reading its record.
        let local = self.home_of(id).map(|(_, store)| store.merged_dir(id));
        let merged = if let Some(merged) = &local {
            merged.clone()
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
        // the container stops, so does its prefetch
        self.prefetch.stop(id);
        self.unmount_all(&merged)
            .map_err(|e| e.context(format!("layer {id}: put")))?;
        count.write(0, &count_path)?;
        if local.is_none() {
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
        let roots: Vec<PathBuf> = self
            .homes()
            .map(|(_, store)| store.home().to_path_buf())
            .chain([self.run_dir.clone()])
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
        let api = match self.mounter.program() {
            Some((program, why)) => format!("FUSE mount program {} ({why})", program.display()),
            None => self.mounter.api(&self.store.empty_dir()).to_string(),
        };
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
        let mut status = vec![
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
        ];
        if !self.layout.repositories().is_empty() || !self.layout.stores().is_empty() {
            // A client that claims ownership (CVMFS's default) shows every
            // file as its own: noticed at the first use of each layer, and
            // here from one layer per store when none was used yet.
            if self.layout.client_owners_status_is_empty() {
                self.layout.sample_client_owners();
            }
            status.push((
                "CVMFS Client Owners".into(),
                self.layout.client_owners_status(),
            ));
        }
        if let (Some(root), Some(_)) = (&self.options.separate_image_store, &self.image_store) {
            status.push(("Image Store".into(), root.display().to_string()));
        }
        status.extend(self.prefetch.status());
        let rootless = self.rootless_status();
        if !rootless.is_empty() {
            // Rootless owners are described there, not by what rootful restores.
            status.retain(|(k, _)| k != "CVMFS Ownership");
        }
        status.extend(rootless);
        status
    }

    /// The rootless path and whether owners are right (empty when rootful).
    /// The repository's owner is read bounded in time: a hung FUSE mount
    /// must not hang `podman info`.
    fn rootless_status(&self) -> Vec<(String, String)> {
        if !crate::rootless::active() {
            return Vec::new();
        }
        let views = self.layout.views();
        let direct = self
            .layout
            .all_repositories()
            .into_iter()
            .filter(|r| !views.contains_key(r))
            .map(|r| {
                let probe = r.clone();
                let owner =
                    crate::layout::with_timeout(std::time::Duration::from_secs(2), move || {
                        fs::metadata(probe)
                    })
                    .and_then(|m| m.ok())
                    .map(|m| m.uid());
                (r, owner)
            })
            .collect();
        let report = crate::rootless::OwnersReport {
            mount_program: self
                .mounter
                .program()
                .map(|(p, why)| format!("{} ({why})", p.display())),
            viewed: views.clone(),
            direct,
            affected_layers: self.layout.layers_without_view(),
        };
        crate::rootless::status(crate::rootless::namespace(), &report)
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
        if let Some(r) = self.prefetch.report(id) {
            m.insert("Prefetch".into(), r.summary());
        }
        match &layer {
            Layer::Local { id, record, home } => {
                let store = self.home_store(*home);
                m.insert("Kind".into(), "local".into());
                m.insert("UpperDir".into(), store.diff_dir(id).display().to_string());
                m.insert("WorkDir".into(), store.work_dir(id).display().to_string());
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
        self.store_views.clone()
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
        let lowers = self.lowers_as_mounted(&layer, &chain).map_err(ctx)?;
        let mut changes = archive::changes(&self.content_dir(&layer), &lowers)
            .map_err(|e| ctx(Error::from(e)))?;
        if crate::stack::raw(&layer).is_some() {
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
        let store = self.store_of(&layer);
        let dir = store.layer_dir(id);
        let diff = store.diff_dir(id);
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
        let work = store.work_dir(id);
        crate::store::remove_tree(&work)
            .map_err(|e| Error::io(format!("layer {id}: {op}"), &work, e))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(|e| Error::io(format!("layer {id}: {op}"), &work, e))?;
        Ok(())
    }
}
