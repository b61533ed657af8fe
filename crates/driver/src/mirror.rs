//! Local views of the repository's image stores, so that podman's start path
//! costs as few repository round trips as possible (issue 13, item 5).
//!
//! containers/storage opens every additional image store the driver lists
//! (`AdditionalImageStores`) and reads, one after another, its lock files
//! (`images.lock`, `layers.lock`) and indexes (`images.json`, `layers.json`).
//! On a CVMFS client with a cold cache each is a download, paid in sequence
//! before the container starts. For each store outside the driver home,
//! [`mirror_stores`] gives containers/storage instead a view in the home:
//!
//! ```text
//! <home>/mirror/<store hash>-<source hash>/
//!   cvmfs-images/{images.json (copy), images.lock (local, empty)}
//!   cvmfs-images/<image id> -> <store>/cvmfs-images/<image id>   (big data, read on use)
//!   cvmfs-layers/{layers.json (copy), layers.lock (local, empty)}
//!   cvmfs-layers/<id>.tar-split.gz -> <store>/cvmfs-layers/<id>.tar-split.gz
//!   cvmfs-layers/<id> -> <store>/cvmfs-layers/<id>   (layer data items, read on use)
//! ```
//!
//! The two indexes are fetched in parallel (one round trip instead of four
//! on a cold home) and then reused by every later podman command while their
//! source is unchanged: the view's name carries a hash of each index's
//! identity ([`file_key`]: the content hash CVMFS publishes as `user.hash`,
//! else the repository revision `user.revision` with the file's inode, size
//! and times), so a publish gives a new name and a new view, never a stale
//! one. Checking costs one `stat` and `getxattr` per index, answered by a
//! CVMFS client from its catalog without a download.
//!
//! A view is built in `<home>/staging/` and renamed into place (a crash leaves
//! nothing half-written; `Store::recover` removes leftovers); the indexes must
//! have the same identity before and after they are read, else the store is
//! used directly this time. IDs read from the indexes name the links only
//! when they are 64 lower-case hex digits. Of older views of a store only the
//! newest one is kept (a podman process started before the publish may
//! still read it). Any failure falls back to the store itself, with a warning.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cvmfs_format::{is_hex64, StorePaths};
use sha2::{Digest, Sha256};

use crate::layout::with_progress;
use crate::store::Store;

/// Where the views live in the driver home.
pub const MIRROR_DIR: &str = "mirror";
/// Largest index copied (containers/storage itself reads them whole).
pub const INDEX_MAX_BYTES: u64 = 256 << 20;

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::getxattr(path, name, &mut buf).ok()?;
    let v = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// What identifies the content of a file of a repository without reading it:
/// CVMFS's content hash (`user.hash`) with the size when the client shows
/// it; otherwise the repository revision (`user.revision`, absent on a plain
/// directory) with inode, size, modification and change times, so that a
/// file rewritten in place or replaced by a rename is noticed. Not the
/// device: a FUSE file system gets a new one at every mount.
pub fn file_key(path: &Path) -> io::Result<String> {
    let st = fs::metadata(path)?;
    if !st.is_file() {
        return Err(err(format!("{}: not a regular file", path.display())));
    }
    if let Some(hash) = xattr(path, "user.hash") {
        return Ok(format!("hash={hash} size={}", st.len()));
    }
    Ok(format!(
        "rev={} ino={} size={} mtime={}.{} ctime={}.{}",
        xattr(path, "user.revision").unwrap_or_default(),
        st.ino(),
        st.len(),
        st.mtime(),
        st.mtime_nsec(),
        st.ctime(),
        st.ctime_nsec()
    ))
}

fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The identity of a store's two indexes, both asked at once: on a cold
/// CVMFS client each index lies beneath its own nested catalog.
fn source_key(paths: &StorePaths) -> io::Result<String> {
    let with_name = |p: PathBuf| {
        file_key(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let (images, layers) = std::thread::scope(|s| {
        let layers = s.spawn(|| with_name(paths.layers_json()));
        let images = with_name(paths.images_json());
        let layers = layers
            .join()
            .unwrap_or_else(|_| Err(err("layers.json: thread died")));
        (images, layers)
    });
    Ok(format!("{}\n{}", images?, layers?))
}

/// The revision of the CVMFS snapshot `dir` shows, when `dir` is on a FUSE
/// mount that publishes one (`user.revision`, answered by a CVMFS client
/// without a download). A revision names an immutable snapshot of the whole
/// repository, so what was read under it still holds while the client shows
/// it. Not on other file systems: the publishing machine's `/cvmfs/<repo>`
/// is an overlay whose transaction changes files under the same revision.
pub fn snapshot_revision(dir: &Path) -> Option<String> {
    const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;
    let fs = rustix::fs::statfs(dir).ok()?;
    #[allow(clippy::unnecessary_cast)]
    if fs.f_type as u64 != FUSE_SUPER_MAGIC {
        return None;
    }
    xattr(dir, "user.revision")
}

/// The directory a store's revision is asked of: its parent (a store is the
/// mount point of a nested catalog, its parent lies in an outer one).
pub(crate) fn revision_dir(store: &Path) -> PathBuf {
    store.parent().unwrap_or(store).to_path_buf()
}

/// `f` on a thread of its own, given up after `timeout`.
fn bounded<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    with_progress(timeout, |_| {}, f).unwrap_or_else(|| {
        Err(err(format!(
            "no answer within {:.1}s",
            timeout.as_secs_f64()
        )))
    })
}

/// Read a whole index, at most [`INDEX_MAX_BYTES`].
fn read_index(path: &Path) -> io::Result<Vec<u8>> {
    let f = fs::File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    f.take(INDEX_MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > INDEX_MAX_BYTES {
        return Err(err(format!(
            "{}: larger than {INDEX_MAX_BYTES} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A store's source key, `images.json` and `layers.json`.
type Indexes = (String, Vec<u8>, Vec<u8>);

/// Both indexes, read at the same time (each a download on a cold client),
/// with the source key before and after: `None` if it changed meanwhile.
fn read_indexes(paths: StorePaths) -> io::Result<Option<Indexes>> {
    let before = source_key(&paths)?;
    let layers_json = paths.layers_json();
    let layers = std::thread::Builder::new()
        .name("cvmfs-mirror".into())
        .spawn(move || read_index(&layers_json))?;
    let images = read_index(&paths.images_json());
    if let Ok(bytes) = &images {
        read_records_early(&paths, bytes);
    }
    let layers = layers
        .join()
        .map_err(|_| err("reading layers.json: thread died"))?;
    let (images, layers) = (images?, layers?);
    if source_key(&paths)? != before {
        return Ok(None);
    }
    Ok(Some((before, images, layers)))
}

/// The `id` of every entry of an index (a JSON array of objects) that is 64
/// lower-case hex digits; an error if the index is not such an array.
fn index_ids(bytes: &[u8], what: &Path) -> io::Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("{}: not JSON: {e}", what.display())))?;
    let Some(entries) = v.as_array() else {
        return Err(err(format!("{}: not a JSON array", what.display())));
    };
    Ok(entries
        .iter()
        .filter_map(|e| e.get("id")?.as_str())
        .filter(|id| is_hex64(id))
        .map(str::to_string)
        .collect())
}

/// Write one half of a view (`cvmfs-images` or `cvmfs-layers`) in `dir`: the
/// index copy, an empty lock file and one link per entry into the store.
fn write_half(
    dir: &Path,
    index: (&str, &[u8]),
    lock: &str,
    links: &[(String, PathBuf)],
) -> io::Result<()> {
    fs::create_dir(dir)?;
    fs::write(dir.join(index.0), index.1)?;
    fs::write(dir.join(lock), b"")?;
    for (name, target) in links {
        std::os::unix::fs::symlink(target, dir.join(name))?;
    }
    Ok(())
}

/// Build the view of `store` from its indexes in `stage`.
fn write_view(
    stage: &Path,
    store: &Path,
    key: &str,
    images: &[u8],
    layers: &[u8],
) -> io::Result<()> {
    let src = StorePaths::new(store);
    let image_links: Vec<(String, PathBuf)> = index_ids(images, &src.images_json())?
        .into_iter()
        .map(|id| {
            let target = src.images_dir().join(&id);
            (id, target)
        })
        .collect();
    // Per layer: its tar-split and the directory of its data items
    // (`set-layer-data`; dangling where the layer has none, read as missing).
    let layer_links: Vec<(String, PathBuf)> = index_ids(layers, &src.layers_json())?
        .into_iter()
        .flat_map(|id| {
            let name = cvmfs_format::paths::tar_split_file_name(&id);
            let data = (id.clone(), src.layers_dir().join(&id));
            [(name, src.tar_split(&id)), data]
        })
        .collect();
    fs::create_dir(stage)?;
    let view = StorePaths::new(stage);
    write_half(
        &view.images_dir(),
        ("images.json", images),
        "images.lock",
        &image_links,
    )?;
    write_half(
        &view.layers_dir(),
        ("layers.json", layers),
        "layers.lock",
        &layer_links,
    )?;
    fs::write(
        stage.join("SOURCE"),
        format!("{}\n{key}\n", store.display()),
    )
}

/// Remove the views of the store with hash prefix `prefix` but `keep` and
/// the newest other one.
fn prune(root: &Path, prefix: &str, keep: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p != keep)
        .filter_map(|p| Some((fs::symlink_metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    old.sort();
    old.pop();
    for (_, p) in old {
        let _ = crate::store::remove_tree(&p);
    }
}

/// The view of one store, built if needed.
///
/// A view checked under a repository revision is taken again without asking
/// the store anything while the client shows that revision (a `rev-` note
/// beside the views names it): with a warm driver home, podman's start
/// then reads nothing of the store's indexes. Otherwise the indexes'
/// identity is asked ([`source_key`]) and the view of that identity used or
/// built. The newest images' metadata is read ahead into the view
/// ([`localize_in_background`]); the catalogs the start needs were set
/// loading when the driver started ([`warm_store_catalogs`]).
fn mirror_one(
    home: &Store,
    store: &Path,
    timeout: Duration,
    exec_ahead: bool,
) -> io::Result<PathBuf> {
    let root = home.home().join(MIRROR_DIR);
    fs::create_dir_all(&root)?;
    let prefix = format!("{}-", short_hash(&store.display().to_string()));
    let dir = revision_dir(store);
    let revision = bounded(timeout, move || Ok(snapshot_revision(&dir)))?;
    if let Some(view) = revision
        .as_deref()
        .and_then(|r| view_of_revision(&root, &prefix, r))
    {
        localize_in_background(store, &view);
        return Ok(view);
    }
    let dest = find_or_build_view(home, store, &root, &prefix, timeout, exec_ahead)?;
    if let Some(r) = revision {
        let dir = revision_dir(store);
        // Still the same snapshot after the indexes were asked.
        if bounded(timeout, move || Ok(snapshot_revision(&dir)))?.as_deref() == Some(r.as_str()) {
            let _ = note_revision(&root, &prefix, &r, &dest);
        }
    }
    localize_in_background(store, &dest);
    Ok(dest)
}

/// The note naming the view checked under revision `rev` of the store with
/// hash prefix `prefix` (not starting with the prefix: [`prune`] keeps off).
fn revision_note(root: &Path, prefix: &str, rev: &str) -> PathBuf {
    root.join(format!("rev-{prefix}{}", short_hash(rev)))
}

/// The view noted for revision `rev`, if it is still there.
fn view_of_revision(root: &Path, prefix: &str, rev: &str) -> Option<PathBuf> {
    let text = fs::read_to_string(revision_note(root, prefix, rev)).ok()?;
    let (noted_rev, name) = text.split_once('\n')?;
    let name = name.trim_end();
    let valid_name = name.starts_with(prefix)
        && name.len() <= 64
        && name.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-');
    if noted_rev != rev || !valid_name {
        return None;
    }
    let view = root.join(name);
    view.join("SOURCE").is_file().then_some(view)
}

/// Note that `view` is current at revision `rev`, replacing the notes of
/// other revisions of the store (written whole by a rename).
fn note_revision(root: &Path, prefix: &str, rev: &str, view: &Path) -> io::Result<()> {
    let name = view
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err("view without a name"))?;
    let note = revision_note(root, prefix, rev);
    let tmp = root.join(format!(".tmp-rev-{}", std::process::id()));
    fs::write(&tmp, format!("{rev}\n{name}\n"))?;
    fs::rename(&tmp, &note)?;
    let stale_prefix = format!("rev-{prefix}");
    for e in fs::read_dir(root)?.flatten() {
        let p = e.path();
        if p != note && e.file_name().to_string_lossy().starts_with(&stale_prefix) {
            let _ = fs::remove_file(p);
        }
    }
    Ok(())
}

/// Start loading, each on its own thread and not waited for, the nested
/// catalogs a start reads beneath besides the indexes: the store's records
/// (`cvmfs/`) and, in the publisher's layout beside the store, the
/// repository's `.layers` and `.flat`. On a cold CVMFS client each is a
/// download that would otherwise come one after another as the start walks
/// down to the image's layer and flat tree.
pub fn warm_store_catalogs(store: &Path) {
    let paths = StorePaths::new(store);
    let records = paths.cvmfs_dir().join("layers");
    let _ = std::thread::Builder::new()
        .name("cvmfs-catalog".into())
        .spawn(move || {
            let _ = fs::symlink_metadata(records);
        });
    if let Some(repo) = store.parent() {
        for dir in [".layers", ".flat"] {
            crate::layout::warm_catalog(repo.join(dir));
        }
    }
}

/// Images read ahead before the indexes are (newest image directories by
/// modification time): on a fresh driver home the image podman starts is
/// most often the one published last.
const EARLY_IMAGES: usize = 2;
/// Image directories beyond which that guess is not made (each is a `stat`,
/// answered from the catalog, but a FUSE call all the same).
const EARLY_LIST_MAX: usize = 4096;

/// The newest [`EARLY_IMAGES`] image directories of `store` by modification
/// time (listing and `stat` are catalog metadata: no download beyond the
/// catalog itself).
fn newest_image_dirs(store: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(StorePaths::new(store).images_dir()) else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    for e in entries.flatten().take(EARLY_LIST_MAX + 1) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_hex64(&name) {
            continue;
        }
        if let Some(m) = fs::symlink_metadata(e.path()).ok().filter(|m| m.is_dir()) {
            dirs.push((m.mtime(), m.mtime_nsec(), name, e.path()));
        }
    }
    if dirs.len() > EARLY_LIST_MAX {
        return Vec::new();
    }
    dirs.sort_by_key(|d| std::cmp::Reverse((d.0, d.1)));
    dirs.into_iter()
        .take(EARLY_IMAGES)
        .map(|(_, _, id, dir)| (id, dir))
        .collect()
}

/// The hex of the last layer blob a manifest names (`layers[-1].digest`).
fn top_blob_of_manifest(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let digest = v
        .get("layers")?
        .as_array()?
        .last()?
        .get("digest")?
        .as_str()?;
    digest
        .strip_prefix("sha256:")
        .filter(|h| is_hex64(h))
        .map(str::to_string)
}

/// Read one file of an image directory ahead (at most
/// [`PREFETCH_MAX_BYTES`]); for its manifest, set the catalog of the top
/// layer's `.layers/XX` loading (the publisher's layout beside the store).
fn read_early(file: PathBuf, repo: Option<PathBuf>) {
    let Ok(f) = fs::File::open(&file) else {
        return;
    };
    let mut bytes = Vec::new();
    if f.take(PREFETCH_MAX_BYTES).read_to_end(&mut bytes).is_err() {
        return;
    }
    if file.file_name().is_some_and(|n| n == "manifest") {
        if let (Some(hex), Some(repo)) = (top_blob_of_manifest(&bytes), repo) {
            let layer_dir = cvmfs_format::RepoPaths::new(&repo).layer_dir(&hex);
            if let Some(fan) = layer_dir.parent() {
                crate::layout::warm_catalog(fan.to_path_buf());
            }
        }
    }
}

/// The top layer records of the newest [`EARLY_IMAGES`] entries of
/// `images.json` (by `created`), read on threads of their own as soon as the
/// index is: the driver's first lookup of the image's layer, which podman
/// makes once it has read the indexes and the image's files, then finds the
/// record downloaded or under way (on a cold client the records' catalog
/// was set loading at the driver's start).
fn read_records_early(paths: &StorePaths, images_json: &[u8]) {
    let Ok(serde_json::Value::Array(mut entries)) = serde_json::from_slice(images_json) else {
        return;
    };
    sort_newest_first(&mut entries);
    for e in entries.iter().take(EARLY_IMAGES) {
        let Some(layer) = e
            .get("layer")
            .and_then(|v| v.as_str())
            .filter(|l| is_hex64(l))
        else {
            continue;
        };
        let record = paths.record(layer);
        let _ = std::thread::Builder::new()
            .name("cvmfs-early".into())
            .spawn(move || {
                if let Ok(f) = fs::File::open(record) {
                    let _ = io::copy(&mut f.take(PREFETCH_MAX_BYTES), &mut io::sink());
                }
            });
    }
}

/// Fetch what the publisher's start links of image `id` name
/// (`cvmfs/start/<id>/`, docs/store-format.md): the top layer's record and
/// the walk to its layer directory (loading `.layers/XX`'s catalog), each
/// on its own thread. Reading a link is catalog metadata; with the records
/// in the store's catalog both downloads go out one round trip after that
/// catalog, beside the indexes, instead of after `images.json` and the
/// manifest. A target not of the publisher's exact form is ignored, and
/// only paths the driver builds from the validated ID or plain names are
/// read. A store without the links (older, DUCC's) loses nothing.
fn read_start_links(store: &Path, repo: Option<&Path>, id: &str, exec_ahead: bool) {
    let (record, layer_dir) = start_link_paths(store, repo, id);
    let spawn = |work: Box<dyn FnOnce() + Send>| {
        let _ = std::thread::Builder::new()
            .name("cvmfs-early".into())
            .spawn(work);
    };
    if let Some(record) = record {
        spawn(Box::new(move || {
            if let Ok(f) = fs::File::open(record) {
                let _ = io::copy(&mut f.take(PREFETCH_MAX_BYTES), &mut io::sink());
            }
        }));
    }
    if let Some(layer_dir) = layer_dir {
        spawn(Box::new(move || {
            let _ = fs::symlink_metadata(layer_dir);
        }));
    }
    let Some(repo) = repo.filter(|_| exec_ahead) else {
        return;
    };
    for rel in start_exec_paths(store, id) {
        let repo = repo.to_path_buf();
        spawn(Box::new(move || {
            let _ = read_exec(&repo, &rel, EXEC_PREFETCH_MAX_BYTES);
        }));
    }
}

/// Bytes of one file an `exec-N` start link names read ahead at most: a
/// shell, an interpreter, a loader are a few MiB; a wrong guess of the image
/// (two are guessed) must not cost a large download on every node after a
/// publish. A larger program's head is fetched all the same, the rest as it
/// runs (the job's data is the start-up profile's, `prefetch.rs`).
const EXEC_PREFETCH_MAX_BYTES: u64 = 16 << 20;

/// The image whose start directory top layer `top`'s record directory links
/// to (`cvmfs/layers/<top>/start`, only in the publisher's exact form): the
/// image last published with that top layer.
pub(crate) fn image_of_top_layer(store: &Path, top: &str) -> Option<String> {
    use cvmfs_format::paths::{parse_record_start_target, RECORD_START_LINK};
    let link = StorePaths::new(store)
        .record_dir(top)
        .join(RECORD_START_LINK);
    let target = fs::read_link(link).ok()?;
    parse_record_start_target(target.to_str()?).map(str::to_string)
}

/// The files image `id`'s `exec-N` start links name (paths relative to the
/// repository, plain names only: the publisher's form), in link order.
pub(crate) fn start_exec_paths(store: &Path, id: &str) -> Vec<String> {
    use cvmfs_format::paths::{parse_start_layer_target, start_exec_link, START_EXEC_MAX};
    let dir = StorePaths::new(store).start_dir(id);
    (0..START_EXEC_MAX)
        .map_while(|i| fs::read_link(dir.join(start_exec_link(i))).ok())
        .filter_map(|t| t.to_str().and_then(parse_start_layer_target))
        .filter_map(|rel| rel.to_str().map(str::to_string))
        .collect()
}

/// Read file `rel` of the repository into the client's cache: opened beneath
/// the repository (no link out of it, no FIFO, only a regular file), at most
/// `max` bytes ([`EXEC_PREFETCH_MAX_BYTES`] at most). Returns the bytes read.
pub(crate) fn read_exec(repo: &Path, rel: &str, max: u64) -> io::Result<u64> {
    let dir = crate::prefetch::open_dir(repo)?;
    let f = fs::File::from(crate::prefetch::open_beneath(&dir, rel)?);
    io::copy(
        &mut f.take(max.min(EXEC_PREFETCH_MAX_BYTES)),
        &mut io::sink(),
    )
}

/// The top layer record and layer directory image `id`'s start links name,
/// each `None` when its link is missing or not of the publisher's form.
fn start_link_paths(
    store: &Path,
    repo: Option<&Path>,
    id: &str,
) -> (Option<PathBuf>, Option<PathBuf>) {
    use cvmfs_format::paths::{parse_start_layer_target, parse_start_record_target};
    let paths = StorePaths::new(store);
    let dir = paths.start_dir(id);
    let link = |name: &str| {
        fs::read_link(dir.join(name))
            .ok()
            .and_then(|t| t.to_str().map(str::to_string))
    };
    let record = link(cvmfs_format::paths::START_RECORD_LINK)
        .as_deref()
        .and_then(parse_start_record_target)
        .map(|layer| paths.record(layer));
    let layer_dir = link(cvmfs_format::paths::START_LAYER_LINK)
        .as_deref()
        .and_then(parse_start_layer_target)
        .zip(repo)
        .map(|(rel, repo)| repo.join(rel));
    (record, layer_dir)
}

/// On a fresh driver home, before and beside the indexes: guess the image
/// about to start (the newest image directories) and fetch what its start
/// reads after the indexes — its manifest and config (read into the client's
/// cache), its flat tree's catalog, its top layer's record and `.layers/XX`
/// catalog (from the store's start links, [`read_start_links`]; else from the
/// manifest). With the indexes in the store's own catalog that is
/// one round trip after the store's catalog instead of three. With
/// `exec_ahead` (`cvmfs.prefetch`) the files its `exec-N` start links name
/// are read too. A wrong guess costs a few KiB, and those files' download;
/// nothing waits for it; a hung repository holds only these threads.
fn read_newest_images_early(store: &Path, exec_ahead: bool) {
    let store = store.to_path_buf();
    let list = move || {
        let repo = store.parent().map(Path::to_path_buf);
        for (id, dir) in newest_image_dirs(&store) {
            if let Some(repo) = &repo {
                crate::layout::warm_catalog(cvmfs_format::RepoPaths::new(repo).flat_dir(&id));
            }
            read_start_links(&store, repo.as_deref(), &id, exec_ahead);
            let Ok(files) = fs::read_dir(&dir) else {
                continue;
            };
            for f in files.flatten().take(16) {
                let (file, repo) = (f.path(), repo.clone());
                let _ = std::thread::Builder::new()
                    .name("cvmfs-early".into())
                    .spawn(move || read_early(file, repo));
            }
        }
    };
    let _ = std::thread::Builder::new()
        .name("cvmfs-early".into())
        .spawn(list);
}

/// The view of the store's current indexes, built if there is none.
fn find_or_build_view(
    home: &Store,
    store: &Path,
    root: &Path,
    prefix: &str,
    timeout: Duration,
    exec_ahead: bool,
) -> io::Result<PathBuf> {
    let paths = StorePaths::new(store);
    let key = bounded(timeout, move || source_key(&paths))?;
    let dest = root.join(format!("{prefix}{}", short_hash(&key)));
    if dest.join("SOURCE").is_file() {
        return Ok(dest);
    }
    // No view of these indexes yet: what the start reads after them is
    // fetched beside them.
    read_newest_images_early(store, exec_ahead);
    let paths = StorePaths::new(store);
    let Some((key, images, layers)) = bounded(timeout, move || read_indexes(paths))? else {
        return Err(err("the indexes changed while they were read (a publish?)"));
    };
    let dest = root.join(format!("{prefix}{}", short_hash(&key)));
    let stage = home.staging_name("mirror", &short_hash(&key));
    if let Err(e) = write_view(&stage, store, &key, &images, &layers) {
        let _ = crate::store::remove_tree(&stage);
        return Err(e);
    }
    if let Err(e) = fs::rename(&stage, &dest) {
        let _ = crate::store::remove_tree(&stage);
        // Another process built the same view meanwhile.
        if !dest.join("SOURCE").is_file() {
            return Err(e);
        }
    }
    prune(root, prefix, &dest);
    Ok(dest)
}

/// Sort `images.json` entries newest first (by `created`, RFC 3339 in UTC
/// as containers/storage writes it, so text order is time order).
fn sort_newest_first(entries: &mut [serde_json::Value]) {
    let created = |e: &serde_json::Value| {
        let c = e.get("created").and_then(|v| v.as_str()).unwrap_or("");
        c.to_string()
    };
    entries.sort_by_key(|e| std::cmp::Reverse(created(e)));
}

/// Images whose metadata a view fetches ahead, newest first.
pub const PREFETCH_IMAGES: usize = 32;
/// Parallel fetches of that metadata (a CVMFS client has 16 connections).
const PREFETCH_THREADS: usize = 8;
/// Largest metadata file read ahead.
const PREFETCH_MAX_BYTES: u64 = 4 << 20;

/// What is read ahead of one image: its directory in the store and in the
/// view, its big data files (file name, expected digest), its top layer's
/// record.
struct ImageAhead {
    source_dir: PathBuf,
    view_dir: PathBuf,
    big_data: Vec<(String, String)>,
    record: Option<PathBuf>,
}

/// The newest [`PREFETCH_IMAGES`] entries of a view's `images.json` whose
/// directory in the view is still a link into the store.
fn images_to_localize(store: &Path, view: &Path) -> Vec<ImageAhead> {
    let (src, dst) = (StorePaths::new(store), StorePaths::new(view));
    let Ok(bytes) = fs::read(dst.images_json()) else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Array(mut entries)) = serde_json::from_slice(&bytes) else {
        return Vec::new();
    };
    sort_newest_first(&mut entries);
    let hex_field = |e: &serde_json::Value, name: &str| {
        e.get(name)
            .and_then(|v| v.as_str())
            .filter(|id| is_hex64(id))
            .map(str::to_string)
    };
    entries
        .iter()
        .take(PREFETCH_IMAGES)
        .filter_map(|e| {
            let id = hex_field(e, "id")?;
            let view_dir = dst.images_dir().join(&id);
            if !fs::symlink_metadata(&view_dir)
                .ok()?
                .file_type()
                .is_symlink()
            {
                return None;
            }
            let big_data = e
                .get("big-data-digests")
                .and_then(|d| d.as_object())
                .map(|d| {
                    d.iter()
                        .filter_map(|(k, v)| {
                            Some((crate::ducc::big_data_file_name(k), v.as_str()?.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(ImageAhead {
                source_dir: src.images_dir().join(&id),
                view_dir,
                big_data,
                record: hex_field(e, "layer").map(|l| src.record(&l)),
            })
        })
        .collect()
}

/// Whether `bytes` have the digest `digest` (`sha256:<hex>`).
fn digest_matches(bytes: &[u8], digest: &str) -> bool {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return false;
    };
    let d = Sha256::digest(bytes);
    let ours: String = d.iter().map(|b| format!("{b:02x}")).collect();
    ours == hex
}

/// Replace the view's link to an image directory by a local directory with
/// a copy of each big data file read (`read`: name and bytes, digest
/// checked) and links for the rest, swapped in by one rename: later starts
/// read an image's manifest and config locally. They are named by digest in
/// `images.json`, so they cannot go stale while the view's indexes hold.
fn localize_image(img: &ImageAhead, read: &[(String, Vec<u8>)]) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let parent = img
        .view_dir
        .parent()
        .ok_or_else(|| err("view without a parent"))?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!(".local-{}-{seq}", std::process::id()));
    let result = (|| {
        fs::create_dir(&tmp)?;
        for e in fs::read_dir(&img.source_dir)? {
            let name = e?.file_name();
            let local = read.iter().find(|(n, _)| n.as_str() == name);
            match local {
                Some((_, bytes)) => fs::write(tmp.join(&name), bytes)?,
                None => std::os::unix::fs::symlink(img.source_dir.join(&name), tmp.join(&name))?,
            }
        }
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            &img.view_dir,
            rustix::fs::RenameFlags::EXCHANGE,
        )?;
        // `tmp` is now the old link.
        fs::remove_file(&tmp)
    })();
    if result.is_err() {
        let _ = crate::store::remove_tree(&tmp);
    }
    result
}

/// One big data file of an image, when its digest is the one `images.json`
/// gives.
fn read_big_data(img: &ImageAhead, j: usize) -> Option<(String, Vec<u8>)> {
    let (name, digest) = &img.big_data[j];
    let f = fs::File::open(img.source_dir.join(name)).ok()?;
    let mut bytes = Vec::new();
    f.take(PREFETCH_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= PREFETCH_MAX_BYTES && digest_matches(&bytes, digest))
        .then(|| (name.clone(), bytes))
}

/// The big data read of one image so far, and how many files are left.
type Gathered = std::sync::Mutex<(usize, Vec<(String, Vec<u8>)>)>;

/// Read the newest images' metadata ahead, in the background,
/// [`PREFETCH_THREADS`] files at a time: on a cold CVMFS client the
/// downloads podman would make one after another (manifest, config, the
/// layer record) are then under way or done when it asks (a reader of an
/// object being downloaded waits for that download). Once all of an
/// image's big data is read, what matched its digest is copied into the
/// view ([`localize_image`]), so a later start reads none of it from the
/// repository. A few KiB per image; nothing waits for it, and a view whose
/// newest images are local costs nothing.
fn localize_in_background(store: &Path, view: &Path) {
    let (store, view) = (store.to_path_buf(), view.to_path_buf());
    // Listing is metadata (no download), but the repository may hang: not
    // on the caller's thread either.
    let list = move || {
        if !copies_allowed(&store) {
            return;
        }
        let images = images_to_localize(&store, &view);
        // One task per file: (image, Some(big data index) or None: record).
        let mut tasks: Vec<(usize, Option<usize>)> = Vec::new();
        for (i, img) in images.iter().enumerate() {
            tasks.extend((0..img.big_data.len()).map(|j| (i, Some(j))));
            if img.record.is_some() {
                tasks.push((i, None));
            }
        }
        tasks.reverse(); // popped from the end: the newest image first
        let gathered: Vec<Gathered> = images
            .iter()
            .map(|img| std::sync::Mutex::new((img.big_data.len(), Vec::new())))
            .collect();
        let shared = std::sync::Arc::new((images, gathered));
        let queue = std::sync::Arc::new(std::sync::Mutex::new(tasks));
        for _ in 0..PREFETCH_THREADS {
            let (queue, shared) = (queue.clone(), shared.clone());
            let work = move || {
                let (images, gathered) = &*shared;
                while let Some((i, task)) = queue.lock().ok().and_then(|mut q| q.pop()) {
                    let Some(j) = task else {
                        if let Some(Ok(f)) = images[i].record.as_ref().map(fs::File::open) {
                            let _ = io::copy(&mut f.take(PREFETCH_MAX_BYTES), &mut io::sink());
                        }
                        continue;
                    };
                    let read = read_big_data(&images[i], j);
                    let mut g = gathered[i].lock().unwrap_or_else(|p| p.into_inner());
                    g.0 -= 1;
                    g.1.extend(read);
                    if g.0 == 0 && !g.1.is_empty() {
                        let _ = localize_image(&images[i], &g.1);
                    }
                }
            };
            let _ = std::thread::Builder::new()
                .name("cvmfs-ahead".into())
                .spawn(work);
        }
    };
    let _ = std::thread::Builder::new()
        .name("cvmfs-ahead".into())
        .spawn(list);
}

/// Whether big data of `store` may be copied into its view: only from an
/// immutable CVMFS snapshot (a revision shown on a FUSE mount), where a copy
/// checked against its digest is the same file for as long as the view is
/// used. A plain directory can lose or change a file in place without its
/// indexes changing; its view keeps links, so podman (and `podman system
/// check`, the storage suite's `check-ro-image-data-*`) sees the damage.
/// Unit tests run on plain directories and take the copying path; the e2e
/// round-trip case (FUSE view with a revision) and the storage suite check
/// both sides of the rule.
fn copies_allowed(store: &Path) -> bool {
    cfg!(test) || snapshot_revision(&revision_dir(store)).is_some()
}

/// What containers/storage is given for each of `stores`: the local view of
/// a store outside the driver home, the store itself when it is in the home
/// (DUCC's synthesised stores) or when its view cannot be made (`warn` says
/// why). `exec_ahead`: a new view also reads the guessed images' `exec-N`
/// files ahead (`cvmfs.prefetch`).
pub fn mirror_stores(
    home: &Store,
    stores: &[PathBuf],
    timeout: Duration,
    exec_ahead: bool,
    warn: &dyn Fn(&str),
) -> Vec<PathBuf> {
    stores
        .iter()
        .map(|store| {
            if store.starts_with(home.home()) {
                return store.clone();
            }
            match mirror_one(home, store, timeout, exec_ahead) {
                Ok(view) => view,
                // Not a store of ours (yet): containers/storage says what is wrong.
                Err(e) if e.kind() == io::ErrorKind::NotFound => store.clone(),
                Err(e) => {
                    warn(&format!(
                        "cvmfs: image store {}: no local view ({e}); podman reads it directly",
                        store.display()
                    ));
                    store.clone()
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const IMG: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const LAYER: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    struct Fixture {
        _t: tempfile::TempDir,
        home: Store,
        store: PathBuf,
    }

    fn fixture() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        let home = Store::open(&t.path().join("graph/cvmfs")).unwrap();
        let store = t.path().join("repo/podmanStore");
        let p = StorePaths::new(&store);
        fs::create_dir_all(p.images_dir().join(IMG)).unwrap();
        fs::create_dir_all(p.layers_dir()).unwrap();
        fs::write(p.images_dir().join(IMG).join("manifest"), b"{}").unwrap();
        fs::write(p.tar_split(LAYER), b"ts").unwrap();
        fs::create_dir_all(p.layers_dir().join(LAYER)).unwrap();
        fs::write(p.layers_dir().join(LAYER).join("datafile"), b"data").unwrap();
        fs::write(p.images_lock(), b"x".repeat(32)).unwrap();
        fs::write(p.layers_lock(), b"x".repeat(32)).unwrap();
        fs::write(
            p.images_json(),
            format!(r#"[{{"id":"{IMG}","layer":"{LAYER}"}},{{"id":"../../etc"}}]"#),
        )
        .unwrap();
        fs::write(p.layers_json(), format!(r#"[{{"id":"{LAYER}"}}]"#)).unwrap();
        Fixture { _t: t, home, store }
    }

    fn views(f: &Fixture) -> (Vec<PathBuf>, Vec<String>) {
        let warnings = RefCell::new(Vec::new());
        let v = mirror_stores(
            &f.home,
            std::slice::from_ref(&f.store),
            Duration::from_secs(10),
            true,
            &|m| warnings.borrow_mut().push(m.to_string()),
        );
        (v, warnings.into_inner())
    }

    #[test]
    fn the_newest_image_directories_are_guessed_by_mtime() {
        let f = fixture();
        let images = StorePaths::new(&f.store).images_dir();
        let older = "3333333333333333333333333333333333333333333333333333333333333333";
        let newest = "4444444444444444444444444444444444444444444444444444444444444444";
        let base = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (id, age) in [(IMG, 2), (older, 1), (newest, 0)] {
            fs::create_dir_all(images.join(id)).unwrap();
            let when = base - Duration::from_secs(age * 60);
            fs::File::open(images.join(id))
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        // Not an image directory: neither a file nor a non-ID name counts.
        fs::create_dir_all(images.join("not-an-id")).unwrap();
        let ids: Vec<String> = newest_image_dirs(&f.store)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [newest, older]);
    }

    #[test]
    fn start_links_name_the_top_record_and_layer_only_in_the_publisher_s_form() {
        use cvmfs_format::paths::{start_layer_target, start_record_target};
        let f = fixture();
        let repo = f.store.parent().unwrap().to_path_buf();
        let dir = StorePaths::new(&f.store).start_dir(IMG);
        fs::create_dir_all(&dir).unwrap();
        let top = "5".repeat(64);
        let rel = cvmfs_format::paths::layerfs_rel(&top);
        let link = |name: &str, target: &str| {
            let _ = fs::remove_file(dir.join(name));
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        };
        link("record", &start_record_target(&top));
        link("layer", &start_layer_target(&rel));
        assert_eq!(
            start_link_paths(&f.store, Some(&repo), IMG),
            (
                Some(StorePaths::new(&f.store).record(&top)),
                Some(repo.join(&rel))
            )
        );
        // Another image: no links, nothing read.
        assert_eq!(start_link_paths(&f.store, Some(&repo), &top), (None, None));
        // Hostile targets are not followed.
        link("record", "/etc/shadow");
        link("layer", "../../../../../../etc");
        assert_eq!(start_link_paths(&f.store, Some(&repo), IMG), (None, None));
        link("layer", "/etc");
        assert_eq!(start_link_paths(&f.store, Some(&repo), IMG), (None, None));
    }

    #[test]
    fn exec_links_are_read_in_order_only_in_the_publisher_s_form_and_beneath_the_repository() {
        use cvmfs_format::paths::start_layer_target;
        let f = fixture();
        let repo = f.store.parent().unwrap().to_path_buf();
        let dir = StorePaths::new(&f.store).start_dir(IMG);
        fs::create_dir_all(&dir).unwrap();
        let link = |name: &str, target: &str| {
            let _ = fs::remove_file(dir.join(name));
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        };
        assert!(start_exec_paths(&f.store, IMG).is_empty());
        link("exec-0", &start_layer_target(".flat/ab/x/bench/run.sh"));
        link("exec-1", "/bin/busybox");
        link("exec-2", &start_layer_target(".flat/ab/x/bin/busybox"));
        link("exec-4", &start_layer_target(".flat/ab/x/after/a/gap"));
        assert_eq!(
            start_exec_paths(&f.store, IMG),
            [".flat/ab/x/bench/run.sh", ".flat/ab/x/bin/busybox"]
        );
        // the read itself refuses a way out planted inside the repository
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), repo.join("out")).unwrap();
        let d = crate::prefetch::open_dir(&repo).unwrap();
        assert!(crate::prefetch::open_beneath(&d, "out/secret").is_err());
        fs::write(repo.join("in"), b"i").unwrap();
        assert!(crate::prefetch::open_beneath(&d, "in").is_ok());
    }

    #[test]
    fn the_top_layer_blob_is_the_manifest_s_last() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let m = format!(r#"{{"layers":[{{"digest":"sha256:{a}"}},{{"digest":"sha256:{b}"}}]}}"#);
        assert_eq!(top_blob_of_manifest(m.as_bytes()), Some(b));
        for bad in [
            r#"{"layers":[]}"#,
            r#"{"layers":[{"digest":"sha256:../x"}]}"#,
            "not json",
        ] {
            assert_eq!(top_blob_of_manifest(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn the_view_copies_the_indexes_and_links_the_rest() {
        let f = fixture();
        let (v, warnings) = views(&f);
        assert!(warnings.is_empty(), "{warnings:?}");
        let view = StorePaths::new(&v[0]);
        assert!(v[0].starts_with(f.home.home().join(MIRROR_DIR)), "{v:?}");
        let src = StorePaths::new(&f.store);
        for (copy, orig) in [
            (view.images_json(), src.images_json()),
            (view.layers_json(), src.layers_json()),
        ] {
            assert_eq!(fs::read(copy).unwrap(), fs::read(orig).unwrap());
        }
        // Local lock files: reading them costs no round trip.
        assert_eq!(fs::read(view.images_lock()).unwrap(), b"");
        assert_eq!(fs::read(view.layers_lock()).unwrap(), b"");
        assert_eq!(
            fs::read(view.images_dir().join(IMG).join("manifest")).unwrap(),
            b"{}"
        );
        assert_eq!(fs::read(view.tar_split(LAYER)).unwrap(), b"ts");
        // Layer data items (`storage set-layer-data`) are read through too.
        assert_eq!(
            fs::read(view.layers_dir().join(LAYER).join("datafile")).unwrap(),
            b"data"
        );
        // A hostile ID names no link.
        let names: Vec<_> = fs::read_dir(view.images_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(!f.home.home().join(MIRROR_DIR).join("etc").exists());
        // Nothing left in staging.
        assert_eq!(fs::read_dir(f.home.staging_dir()).unwrap().count(), 0);
    }

    #[test]
    fn an_unchanged_store_reuses_its_view_and_a_publish_gets_a_new_one() {
        let f = fixture();
        let first = views(&f).0[0].clone();
        assert_eq!(views(&f).0[0], first, "unchanged: same view");
        let src = StorePaths::new(&f.store);
        let mut generations = vec![first.clone()];
        for n in 0..3 {
            // A publish: the index is replaced (same size would be enough).
            std::thread::sleep(Duration::from_millis(20));
            let text = fs::read_to_string(src.images_json()).unwrap();
            let tmp = f.store.join("images.json.tmp");
            fs::write(&tmp, text.replace("../../etc", &format!("../../et{n}"))).unwrap();
            fs::rename(&tmp, src.images_json()).unwrap();
            let next = views(&f).0[0].clone();
            assert!(
                !generations.contains(&next),
                "a publish must give a new view"
            );
            assert_eq!(
                fs::read(StorePaths::new(&next).images_json()).unwrap(),
                fs::read(src.images_json()).unwrap()
            );
            generations.push(next);
        }
        // The current view and the one before stay; older ones go.
        let kept: Vec<_> = generations.iter().filter(|g| g.exists()).collect();
        assert_eq!(kept, generations[2..].iter().collect::<Vec<_>>());
    }

    #[test]
    fn checked_big_data_is_copied_into_the_view_and_the_rest_stays_linked() {
        let f = fixture();
        let src = StorePaths::new(&f.store);
        let dir = src.images_dir().join(IMG);
        let config = br#"{"architecture":"amd64"}"#;
        let config_key = format!("sha256:{IMG}");
        let config_file = crate::ducc::big_data_file_name(&config_key);
        fs::write(dir.join(&config_file), config).unwrap();
        fs::write(dir.join("signature-1"), b"sig").unwrap();
        let sha = |b: &[u8]| -> String {
            let d = Sha256::digest(b);
            format!(
                "sha256:{}",
                d.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        };
        // The manifest's digest in the index does not match what the store
        // holds: it must stay a link (read from the store, never copied).
        fs::write(
            src.images_json(),
            format!(
                r#"[{{"id":"{IMG}","layer":"{LAYER}","big-data-digests":{{"manifest":"{}","{config_key}":"{}"}}}}]"#,
                sha(b"other"),
                sha(config)
            ),
        )
        .unwrap();
        let view = StorePaths::new(&views(&f).0[0]).images_dir().join(IMG);
        let mut waited = 0;
        while fs::symlink_metadata(&view)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            assert!(waited < 500, "the image directory was not made local");
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        let local = fs::symlink_metadata(view.join(&config_file)).unwrap();
        assert!(local.is_file(), "the checked config is a local copy");
        assert_eq!(fs::read(view.join(&config_file)).unwrap(), config);
        for linked in ["manifest", "signature-1"] {
            let m = fs::symlink_metadata(view.join(linked)).unwrap();
            assert!(m.file_type().is_symlink(), "{linked} stays a link");
            assert_eq!(
                fs::read(view.join(linked)).unwrap(),
                fs::read(dir.join(linked)).unwrap()
            );
        }
        // Nothing left beside it.
        let names: Vec<_> = fs::read_dir(view.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn stores_without_a_usable_view_are_given_as_they_are() {
        let f = fixture();
        // Inside the home (DUCC's synthesised stores): never mirrored.
        let inside = f.home.home().join("ducc/x");
        let v = mirror_stores(
            &f.home,
            std::slice::from_ref(&inside),
            Duration::from_secs(5),
            true,
            &|m| panic!("no warning expected: {m}"),
        );
        assert_eq!(v, vec![inside]);
        // Not a store yet: containers/storage reports it, no warning here.
        let missing = f._t.path().join("nothing");
        let v = mirror_stores(
            &f.home,
            std::slice::from_ref(&missing),
            Duration::from_secs(5),
            true,
            &|m| panic!("no warning expected: {m}"),
        );
        assert_eq!(v, vec![missing]);
        // A broken index: the store itself, and a warning naming the file.
        fs::write(StorePaths::new(&f.store).layers_json(), b"{\"id\":1}").unwrap();
        let (v, warnings) = views(&f);
        assert_eq!(v, vec![f.store.clone()]);
        assert!(
            warnings.len() == 1 && warnings[0].contains("layers.json: not a JSON array"),
            "{warnings:?}"
        );
    }

    #[test]
    fn file_keys_change_with_content_and_name_missing_files() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, b"one").unwrap();
        let a = file_key(&p).unwrap();
        assert_eq!(file_key(&p).unwrap(), a);
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&p, b"two").unwrap();
        assert_ne!(file_key(&p).unwrap(), a, "same size, rewritten in place");
        let e = file_key(&t.path().join("gone")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(file_key(t.path()).is_err(), "a directory is not a file");
    }
}
