//! `<repo>/podmanStore/`: the read-only image store the `cvmfs` driver (through
//! containers/storage's additional image stores) loads, written in exactly the
//! JSON containers/storage v1.62 reads (`layers.go`, `images.go`).
//!
//! Updates happen under an exclusive `flock` on `cvmfs-images/images.lock` (a
//! publisher-only lock: containers/storage takes POSIX record locks, which do not
//! interact with `flock`), every file is written to a temporary name and renamed,
//! and the indexes are written last, so they only ever name complete layers and
//! images.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use cvmfs_format::{
    flat_rel, layerfs_rel, CvmfsRecord, MarkerList, Ownership, RepoPaths, StoreRecord, Whiteouts,
};

use super::fsx::{self, Lock};
use super::layer::hex;
use super::tarsplit::base64;
use super::{Error, Result};

/// containers/storage `archive.Compression` values.
pub const COMPRESSION_NONE: i64 = 0;
pub const COMPRESSION_GZIP: i64 = 2;
pub const COMPRESSION_ZSTD: i64 = 4;

/// The file name containers/storage uses for an image's big data item `key`.
pub fn big_data_file_name(key: &str) -> String {
    if key
        .bytes()
        .all(|c| c == b'.' || c.is_ascii_digit() || c.is_ascii_lowercase())
        && !key.is_empty()
    {
        key.to_string()
    } else {
        format!("={}", base64(key.as_bytes()))
    }
}

pub use cvmfs_format::StorePaths;

/// Creating a store's skeleton (the paths are the format's, the writing the
/// publisher's).
pub trait StoreInit {
    /// Create the directories, empty indexes, lock files and catalog markers.
    fn init(&self) -> Result<()>;
}

impl StoreInit for StorePaths {
    fn init(&self) -> Result<()> {
        // Nested catalogs: the store's root. The indexes' directories and
        // the records (`cvmfs/`) stay in the store's catalog until the store
        // is large, so that a cold client reaches `images.json` and the
        // records one round trip after that catalog (issue 13 item 5;
        // docs/store-format.md "Catalogs"). A store made earlier keeps its
        // markers there: both layouts read the same.
        let with_catalog = [self.root.clone()];
        for d in [
            self.root.clone(),
            self.images_dir(),
            self.layers_dir(),
            self.cvmfs_dir(),
        ] {
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            let cat = d.join(cvmfs_format::paths::CATALOG_MARKER);
            if with_catalog.contains(&d) && !cat.exists() {
                fsx::write_atomic(&cat, b"", 0o644)?;
            }
        }
        // a symlink planted for one of these would be written through
        for f in [
            self.images_lock(),
            self.layers_lock(),
            self.images_json(),
            self.layers_json(),
        ] {
            if fs::symlink_metadata(&f).is_ok_and(|m| !m.is_file()) {
                return Err(Error::msg(format!(
                    "{}: not a regular file (a symlink?); refused, remove it",
                    f.display()
                )));
            }
        }
        for f in [self.images_lock(), self.layers_lock()] {
            if !f.exists() {
                fsx::write_atomic(&f, b"", 0o644)?;
            }
        }
        for (f, empty) in [(self.images_json(), "[]"), (self.layers_json(), "[]")] {
            if !f.exists() {
                fsx::write_atomic(&f, empty.as_bytes(), 0o644)?;
            }
        }
        Ok(())
    }
}

/// Most bytes `images.json` or `layers.json` may have (some 200 000 entries).
pub const MAX_INDEX_BYTES: u64 = 256 << 20;

/// Read a JSON array index (missing = empty): a regular file, not followed
/// when a symlink, at most [`MAX_INDEX_BYTES`].
pub fn read_index(path: &Path) -> Result<Vec<Value>> {
    match fsx::read_record(path, MAX_INDEX_BYTES) {
        Ok(b) if b.iter().all(|c| c.is_ascii_whitespace()) => Ok(Vec::new()),
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::msg(format!("{}: not a JSON array: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn write_index(path: &Path, v: &[Value]) -> Result<()> {
    let text = serde_json::to_vec(v).expect("serializable");
    fsx::write_atomic(path, &text, 0o644)?;
    own_catalog_when_large(path, v.len())
}

/// Index entries from which an index's directory becomes a nested catalog
/// of its own: about 0.5 MB of compressed catalog each (an image is 4
/// catalog entries, its directory and 3 files, ~150 bytes each; a layer is
/// one tar-split file).
const IMAGES_OWN_CATALOG_AT: usize = 1000;
const LAYERS_OWN_CATALOG_AT: usize = 4000;
/// Layers from which the records' directory `cvmfs/` becomes a nested
/// catalog of its own: a layer is some 5 entries there (its record
/// directory, `layer.json`, `ownership.json`, the per-blob tar-split and
/// marker list; ~600 bytes of compressed catalog measured), an image 3
/// (`start/<id>/` and its links): about 0.6 MB at 1 000 layers.
const RECORDS_OWN_CATALOG_AT: usize = 1000;

/// A small store keeps its indexes' directories in the store's catalog, so
/// that a cold client reads them one round trip after it (issue 13 item 5);
/// a large one gives them catalogs of their own (what every store had
/// before), so that a start that needs none of them (a warm driver home)
/// does not download them with the store's catalog
/// (docs/store-format.md "Catalogs"). The records' directory `cvmfs/` goes
/// the same way with the layers ([`RECORDS_OWN_CATALOG_AT`]). Once made, a
/// marker stays.
fn own_catalog_when_large(index: &Path, entries: usize) -> Result<()> {
    let (at, records_too) = match index.file_name().and_then(|n| n.to_str()) {
        Some("images.json") => (IMAGES_OWN_CATALOG_AT, false),
        Some("layers.json") => (LAYERS_OWN_CATALOG_AT, true),
        _ => return Ok(()),
    };
    let Some(dir) = index.parent() else {
        return Ok(());
    };
    let mut dirs = vec![(dir.to_path_buf(), at)];
    if records_too {
        if let Some(store) = dir.parent() {
            dirs.push((StorePaths::new(store).cvmfs_dir(), RECORDS_OWN_CATALOG_AT));
        }
    }
    for (dir, at) in dirs {
        let marker = dir.join(cvmfs_format::paths::CATALOG_MARKER);
        if entries >= at && fs::symlink_metadata(&marker).is_err() {
            fsx::write_atomic(&marker, b"", 0o644)?;
        }
    }
    Ok(())
}

/// Tell running containers/storage readers that the store changed: the lock
/// files hold a "last writer" token they compare.
fn bump_token(lock: &Path) -> Result<()> {
    use std::io::Write;
    let token = hex(&Sha256::digest(
        format!("{}:{:?}", std::process::id(), std::time::SystemTime::now()).as_bytes(),
    ));
    use std::os::unix::fs::OpenOptionsExt;
    // never through a symlink planted in the store: it would overwrite its target
    let mut f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(lock)
        .map_err(|e| Error::io(lock, e))?;
    if !f.metadata().map_err(|e| Error::io(lock, e))?.is_file() {
        return Err(Error::msg(format!(
            "{}: not a regular file",
            lock.display()
        )));
    }
    f.write_all(&token.as_bytes()[..32])
        .map_err(|e| Error::io(lock, e))
}

/// A layer to record in the store.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub id: String,
    pub parent: Option<String>,
    /// `sha256:<hex>` of the blob as the registry serves it.
    pub compressed_digest: String,
    pub compressed_size: u64,
    /// `sha256:<hex>` diffID.
    pub diff_digest: String,
    pub diff_size: u64,
    pub compression: i64,
    pub uids: BTreeSet<u32>,
    pub gids: BTreeSet<u32>,
    /// `.layers/XX/<d>/layerfs`, relative to the repository.
    pub path: String,
    /// A complete tar-split file for this layer.
    pub tar_split: PathBuf,
    /// False for a `layerfs` someone else (DUCC) unpacked without ownership.
    pub ownership_kept: bool,
    /// For a layer without ownership: the `ownership.json` that restores it
    /// (`None`: the owners could not be expressed; the driver reports them lost).
    pub owners: Option<Vec<u8>>,
    /// Every raw whiteout marker file in `layerfs` (paths relative to it);
    /// `None` when not known (the driver then looks for them itself).
    pub markers: Option<Vec<String>>,
    /// For an image's top layer: its flat root filesystem (`.flat/XX/<c>`,
    /// relative to the repository), when this publisher built it.
    pub flat: Option<String>,
    /// The owners of a few entries as published (see
    /// [`cvmfs_format::OwnerProbes`]); `None` when not known.
    pub owner_probes: Option<cvmfs_format::OwnerProbes>,
}

/// An image to record in the store.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// Config digest hex.
    pub id: String,
    /// `registry/repository:tag` names.
    pub names: Vec<String>,
    pub top_layer: String,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub created: String,
    /// What a container of the image executes first, as paths relative to
    /// the repository (`crate::entry`): linked as `cvmfs/start/<id>/exec-N`.
    pub start_files: Vec<String>,
}

/// True if `t` is an RFC 3339 time Go's `time.Time` unmarshals. A config's
/// `created` goes into images.json, which containers/storage loads as a whole:
/// one unparsable time would make every image of the store unusable.
pub fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 9 {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z') | Some(b'z') => i + 1 == b.len(),
        Some(b'+') | Some(b'-') => {
            b.len() == i + 6 && digits(i + 1..i + 3) && b[i + 3] == b':' && digits(i + 4..i + 6)
        }
        _ => false,
    }
}

/// What [`commit`] did.
#[derive(Debug, Default, Clone)]
pub struct Committed {
    pub layers_added: Vec<String>,
    pub layers_existing: Vec<String>,
    pub image_added: bool,
    /// Images that lost a name to this one (a moved tag).
    pub names_moved_from: Vec<String>,
}

/// The per-layer record the driver reads ([`CvmfsRecord`]) for layer `l`
/// of `repository`.
pub fn layer_record(repository: &str, l: &NewLayer) -> CvmfsRecord {
    CvmfsRecord {
        repository: repository.to_string(),
        path: l.path.clone(),
        parent: l.parent.clone(),
        whiteouts: Whiteouts::OciRaw,
        ownership: if l.ownership_kept {
            Ownership::Kept
        } else {
            Ownership::Lost
        },
        markers: l.markers.clone().map(MarkerList),
        flat: l.flat.clone(),
        owner_probes: l.owner_probes.clone(),
    }
}

/// The record to write for known layer `l` whose record at `path` may predate
/// marker lists and flat trees: `None` when the one there says it all.
/// A flat tree named there stays when this publish has none to name (another
/// image with the same layers built it).
fn updated_record(path: &Path, repository: &str, l: &NewLayer) -> Option<String> {
    let mut new = layer_record(repository, l);
    let Ok(old_bytes) = fs::read(path) else {
        return Some(new.to_json());
    };
    if let Ok(StoreRecord::Cvmfs { record: old, .. }) = cvmfs_format::parse_store_record(&old_bytes)
    {
        new.flat = new.flat.or(old.flat);
        new.markers = new.markers.or(old.markers);
        new.owner_probes = new.owner_probes.or(old.owner_probes);
    }
    let text = new.to_json();
    // Equal as JSON (whatever the spacing): nothing to write.
    let old: Option<Value> = serde_json::from_slice(&old_bytes).ok();
    let same = old.is_some_and(|o| serde_json::from_str::<Value>(&text).is_ok_and(|n| n == o));
    (!same).then_some(text)
}

/// For every blob (compressed digest) the images of `images` use through the
/// layer chains of `layers`: the config digests (`sha256:<image id>`) of those
/// images. What every `origin.json` must name.
pub fn blob_users(
    images: &[Value],
    layers: &[Value],
) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let by_id: std::collections::HashMap<&str, &Value> = layers
        .iter()
        .filter_map(|l| l["id"].as_str().map(|id| (id, l)))
        .collect();
    let mut out: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for img in images {
        let Some(id) = img["id"].as_str() else {
            continue;
        };
        let config = format!("sha256:{id}");
        let mut seen = BTreeSet::new();
        let mut cur = img["layer"].as_str();
        while let Some(l) = cur.and_then(|c| by_id.get(c)) {
            if !seen.insert(cur) {
                break;
            }
            if let Some(d) = l["compressed-diff-digest"].as_str() {
                out.entry(d.to_string()).or_default().insert(config.clone());
            }
            cur = l["parent"].as_str();
        }
    }
    out
}

/// Layer `l` as `layers.json` (`index`) already records its ID: the same
/// content (diffID chain) may have been published first from another blob
/// (another compression); the record keeps naming that blob's `layerfs`, as
/// `layers.json` names that blob.
fn as_recorded(index: &[Value], l: &NewLayer) -> NewLayer {
    let mut l = l.clone();
    let recorded = index
        .iter()
        .find(|v| v["id"] == l.id.as_str())
        .and_then(|v| v["compressed-diff-digest"].as_str());
    if let Some(d) = recorded.filter(|d| *d != l.compressed_digest) {
        if let Ok(hex) = super::digest_hex(d) {
            l.path = layerfs_rel(hex);
            l.compressed_digest = d.to_string();
        }
    }
    l
}

fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

/// Record layers (bottom first) and an image, atomically and under the store
/// lock; the caller holds the publisher lock ([`StorePaths::publisher_lock`]).
/// `repository` is the absolute path recorded in layer records.
/// `must_exist` are directories (the layers' `layerfs`, the flat rootfs) that
/// are checked again under the lock: a concurrent `gc` may have removed them
/// after the publisher decided to reuse them.
pub fn commit(
    store: &StorePaths,
    repository: &str,
    layers: &[NewLayer],
    image: &NewImage,
    must_exist: &[PathBuf],
) -> Result<Committed> {
    store.init()?;
    let _lock = Lock::exclusive(&store.images_lock())?;
    check_commit_targets(store, layers, image, must_exist)?;
    let mut out = Committed::default();
    let now = super::rfc3339(std::time::SystemTime::now());
    record_layers(store, repository, layers, &now, &mut out)?;
    let items = write_big_data(store, image)?;
    write_start_links(store, image, layers)?;
    record_image(store, image, &items, &now, &mut out)?;
    Ok(out)
}

/// Before [`commit`] writes: no symlink planted in the store may lead the
/// writes elsewhere, and every directory the image reuses is still there.
fn check_commit_targets(
    store: &StorePaths,
    layers: &[NewLayer],
    image: &NewImage,
    must_exist: &[PathBuf],
) -> Result<()> {
    let mut dirs = vec![
        store.image_dir(&image.id),
        store.per_blob_dir(),
        store.start_dir(&image.id),
    ];
    dirs.extend(layers.iter().map(|l| store.record_dir(&l.id)));
    for d in &dirs {
        fsx::check_real_dirs(&store.root, d)?;
    }
    for p in must_exist {
        if !p.is_dir() {
            return Err(Error::msg(format!(
                "{} disappeared before the image was recorded (a concurrent gc?); publish again",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Write each layer's files (owners, record, tar-split) and then
/// `layers.json` naming the new ones.
fn record_layers(
    store: &StorePaths,
    repository: &str,
    layers: &[NewLayer],
    now: &str,
    out: &mut Committed,
) -> Result<()> {
    let mut index = read_index(&store.layers_json())?;
    let known: BTreeSet<String> = index
        .iter()
        .filter_map(|l| l["id"].as_str().map(str::to_string))
        .collect();
    for l in layers {
        // The owners file goes first: the driver reads it when it finds the
        // record, so a record never appears without it. A layer recorded
        // before owners files existed gets one now.
        if let Some(o) = &l.owners {
            let p = store.owners_file(&l.id);
            if !known.contains(&l.id) || fs::symlink_metadata(&p).is_err() {
                fsx::write_atomic(&p, o, 0o644)?;
            }
        }
        if known.contains(&l.id) {
            // Records written before marker lists and flat trees gain them.
            let rp = store.record(&l.id);
            let l = &as_recorded(&index, l);
            if let Some(text) = updated_record(&rp, repository, l) {
                fsx::write_atomic(&rp, text.as_bytes(), 0o644)?;
            }
            out.layers_existing.push(l.id.clone());
            continue;
        }
        fsx::write_atomic(
            &store.record(&l.id),
            layer_record(repository, l).to_json().as_bytes(),
            0o644,
        )?;
        let ts = fs::read(&l.tar_split).map_err(|e| Error::io(&l.tar_split, e))?;
        fsx::write_atomic(&store.tar_split(&l.id), &ts, 0o644)?;
        index.push(layer_index_entry(l, now));
        out.layers_added.push(l.id.clone());
    }
    if !out.layers_added.is_empty() {
        write_index(&store.layers_json(), &index)?;
        bump_token(&store.layers_lock())?;
    }
    Ok(())
}

/// Layer `l` as containers/storage's `layers.json` lists it.
fn layer_index_entry(l: &NewLayer, now: &str) -> Value {
    let mut v = json!({
        "id": l.id,
        "created": now,
        "compressed-diff-digest": l.compressed_digest,
        "compressed-size": l.compressed_size,
        "diff-digest": l.diff_digest,
        "diff-size": l.diff_size,
    });
    if let Some(p) = &l.parent {
        v["parent"] = json!(p);
    }
    if l.compression != COMPRESSION_NONE {
        v["compression"] = json!(l.compression);
    }
    if !l.uids.is_empty() {
        v["uidset"] = json!(l.uids);
    }
    if !l.gids.is_empty() {
        v["gidset"] = json!(l.gids);
    }
    v
}

/// An image's big data items: (key, bytes).
type BigData<'a> = [(String, &'a [u8]); 3];

/// Write image `image`'s big data (config, manifest under its digest key
/// and as `manifest`), before the index naming it; returns the items.
fn write_big_data<'a>(store: &StorePaths, image: &'a NewImage) -> Result<BigData<'a>> {
    let manifest_digest = sha256_digest(&image.manifest);
    let items: BigData = [
        (sha256_digest(&image.config), &image.config),
        (format!("manifest-{manifest_digest}"), &image.manifest),
        ("manifest".to_string(), &image.manifest),
    ];
    let dir = store.image_dir(&image.id);
    for (k, data) in &items {
        let p = dir.join(big_data_file_name(k));
        let same = fs::read(&p).map(|b| b == *data).unwrap_or(false);
        if !same {
            fsx::write_atomic(&p, data, 0o644)?;
        }
    }
    Ok(items)
}

/// Write `cvmfs/start/<image id>/`: links to the top layer's record and
/// directory ([`StorePaths::start_dir`]) and to the files a container runs
/// first (`exec-N`), which a driver on a cold client reads beside the
/// indexes instead of after them (docs/store-format.md). Only a hint: a
/// link missing or wrong costs that round trip, nothing else.
fn write_start_links(store: &StorePaths, image: &NewImage, layers: &[NewLayer]) -> Result<()> {
    use cvmfs_format::paths::{start_layer_target, start_record_target};
    let Some(top) = layers.iter().find(|l| l.id == image.top_layer) else {
        return Ok(());
    };
    let dir = store.start_dir(&image.id);
    fsx::check_real_dirs(&store.root, &dir)?;
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut links = vec![
        (
            cvmfs_format::paths::START_RECORD_LINK.to_string(),
            start_record_target(&top.id),
        ),
        (
            cvmfs_format::paths::START_LAYER_LINK.to_string(),
            start_layer_target(&top.path),
        ),
    ];
    let execs = image
        .start_files
        .iter()
        .take(cvmfs_format::paths::START_EXEC_MAX);
    links.extend(execs.enumerate().map(|(i, rel)| {
        (
            cvmfs_format::paths::start_exec_link(i),
            start_layer_target(rel),
        )
    }));
    // a republish whose image now runs fewer files: the surplus links go
    for i in image.start_files.len()..cvmfs_format::paths::START_EXEC_MAX {
        let stale = dir.join(cvmfs_format::paths::start_exec_link(i));
        if fs::symlink_metadata(&stale).is_ok() {
            fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
    }
    for (name, target) in links {
        replace_symlink(&dir.join(name), &target)?;
    }
    // the way from the top layer (what the driver mounts) to these links
    let record_dir = store.record_dir(&top.id);
    fsx::check_real_dirs(&store.root, &record_dir)?;
    replace_symlink(
        &record_dir.join(cvmfs_format::paths::RECORD_START_LINK),
        &cvmfs_format::paths::record_start_target(&image.id),
    )
}

/// Make `link` a symlink to `target` (replaced in one rename; left alone
/// when it already is one).
fn replace_symlink(link: &Path, target: &str) -> Result<()> {
    if fs::read_link(link).is_ok_and(|t| t == Path::new(target)) {
        return Ok(());
    }
    let tmp = fsx::tmp_path(link);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(link, e)
    })
}

/// Name image `image` in `images.json` (adding it, or its names): a name
/// belongs to one image, so a moved tag leaves the old image nameless
/// (still there for running containers, until `gc`).
fn record_image(
    store: &StorePaths,
    image: &NewImage,
    items: &BigData<'_>,
    now: &str,
    out: &mut Committed,
) -> Result<()> {
    let mut images = read_index(&store.images_json())?;
    for img in images.iter_mut() {
        if img["id"] == json!(image.id) {
            continue;
        }
        if let Some(names) = img["names"].as_array_mut() {
            let before = names.len();
            names.retain(|n| !image.names.iter().any(|m| n == m.as_str()));
            if names.len() != before {
                out.names_moved_from
                    .push(img["id"].as_str().unwrap_or_default().to_string());
                let hist = img["names-history"].as_array().cloned().unwrap_or_default();
                let mut h: Vec<Value> = image.names.iter().map(|n| json!(n)).collect();
                h.extend(hist);
                img["names-history"] = Value::Array(h);
            }
        }
    }
    let existing = images.iter_mut().find(|i| i["id"] == json!(image.id));
    match existing {
        Some(img) => {
            let mut names: Vec<Value> = img["names"].as_array().cloned().unwrap_or_default();
            for n in &image.names {
                if !names.iter().any(|x| x == n.as_str()) {
                    names.push(json!(n));
                }
            }
            img["names"] = Value::Array(names);
        }
        None => {
            images.push(image_index_entry(image, items, now));
            out.image_added = true;
        }
    }
    write_index(&store.images_json(), &images)?;
    bump_token(&store.images_lock())
}

/// Image `image` as containers/storage's `images.json` lists it.
fn image_index_entry(image: &NewImage, items: &BigData<'_>, now: &str) -> Value {
    let sizes: serde_json::Map<String, Value> = items
        .iter()
        .map(|(k, d)| (k.to_string(), json!(d.len())))
        .collect();
    let digests: serde_json::Map<String, Value> = items
        .iter()
        .map(|(k, d)| (k.to_string(), json!(sha256_digest(d))))
        .collect();
    json!({
        "id": image.id,
        "digest": sha256_digest(&image.manifest),
        "names": image.names,
        "layer": image.top_layer,
        "big-data-names": items.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
        "big-data-sizes": sizes,
        "big-data-digests": digests,
        "created": if is_rfc3339(&image.created) { image.created.clone() } else { now.to_string() },
    })
}

/// What [`gc`] removed (or would remove with `dry_run`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    pub images: Vec<String>,
    pub layers: Vec<String>,
    pub layer_dirs: Vec<String>,
    pub flat_dirs: Vec<String>,
    /// Leftovers of interrupted runs removed (`.cvmfs-podman-tmp.*`).
    pub temporaries: Vec<String>,
    /// `origin.json` files that missed images using their layer, or were
    /// damaged, and were rewritten.
    pub origins_repaired: Vec<String>,
}

/// Remove the temporaries of publishers that are gone: the whole repository's
/// when there is one, else the store's.
pub fn sweep(store: &StorePaths, repo: Option<&Path>) -> Vec<String> {
    let removed = match repo {
        Some(r) => fsx::sweep_repo(r),
        None => {
            let mut v = Vec::new();
            for p in fsx::find_tmp_in(&store.root, 4) {
                if !fsx::tmp_owner(&p).is_some_and(fsx::publisher_alive)
                    && fsx::remove_all(&p).is_ok()
                {
                    v.push(p);
                }
            }
            v
        }
    };
    removed.iter().map(|p| p.display().to_string()).collect()
}

/// Remove images without names (tags moved away) and whatever only they used:
/// their layer records and tar-splits, their flat rootfs, and `.layers/XX/<d>`
/// directories whose `origin.json` names no image left (layers DUCC published
/// for images we do not know stay). Runs under the store lock; indexes are
/// rewritten before any file goes, and directories are renamed away before
/// they are deleted, so readers never see half of anything.
///
/// `repo` is `None` for a store outside a repository (one made by [`enable`]):
/// only the store's own files are removed then.
pub fn gc(store: &StorePaths, repo: Option<&Path>, dry_run: bool) -> Result<GcReport> {
    let _publisher = Lock::publisher(&store.publisher_lock())?;
    store.init()?;
    let _lock = Lock::exclusive(&store.images_lock())?;
    let mut rep = GcReport::default();
    if !dry_run {
        rep.temporaries = sweep(store, repo);
    }
    let images = read_index(&store.images_json())?;
    let layers = read_index(&store.layers_json())?;
    let plan = GcPlan::new(images, &layers, &mut rep);
    let repo = repo.map(RepoPaths::new);
    let mut layer_dirs = Vec::new();
    if let Some(repo) = &repo {
        layer_dirs = unused_layer_dirs(repo, &plan, &layers, &rep.images, dry_run)?;
        if !dry_run {
            repair_origins(repo, &plan.kept_users(&layers), &mut rep)?;
        }
    }
    rep.layer_dirs = layer_dirs
        .iter()
        .map(|(d, _)| d.display().to_string())
        .collect();
    let flat_dirs: Vec<(PathBuf, String)> = rep
        .images
        .iter()
        .filter(|i| i.len() >= 2)
        .filter_map(|i| repo.as_ref().map(|r| (r.flat_dir(i), i.clone())))
        .collect();
    rep.flat_dirs = flat_dirs
        .iter()
        .map(|(d, _)| d.display().to_string())
        .collect();
    if dry_run || (rep.images.is_empty() && rep.layers.is_empty()) {
        return Ok(rep);
    }
    write_index(&store.images_json(), &plan.kept)?;
    write_index(&store.layers_json(), &plan.remaining)?;
    bump_token(&store.images_lock())?;
    bump_token(&store.layers_lock())?;
    repoint_flat_records(store, &plan, &rep.images)?;
    repoint_record_start_links(store, &plan, &rep.images)?;
    remove_unused(store, &rep, &layer_dirs, &flat_dirs)?;
    Ok(rep)
}

/// The layers of the chain whose top is `top`, top first (stops at a
/// missing layer or a loop).
fn layer_chain<'a>(
    by_id: &'a std::collections::HashMap<&'a str, &'a Value>,
    top: Option<&'a str>,
) -> Vec<&'a Value> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut cur = top;
    while let Some(id) = cur {
        if !seen.insert(id) {
            break;
        }
        let Some(l) = by_id.get(id) else { break };
        out.push(*l);
        cur = l["parent"].as_str();
    }
    out
}

fn layers_by_id(layers: &[Value]) -> std::collections::HashMap<&str, &Value> {
    layers
        .iter()
        .filter_map(|l| l["id"].as_str().map(|id| (id, l)))
        .collect()
}

/// What [`gc`] keeps and drops of the store's indexes.
struct GcPlan {
    /// Images that still have a name.
    kept: Vec<Value>,
    /// The nameless ones.
    gone: Vec<Value>,
    /// Layers some kept image uses.
    remaining: Vec<Value>,
}

impl GcPlan {
    /// Split the indexes; the IDs of what goes into `rep`.
    fn new(mut images: Vec<Value>, layers: &[Value], rep: &mut GcReport) -> GcPlan {
        let (gone, kept): (Vec<Value>, Vec<Value>) = images
            .drain(..)
            .partition(|i| i["names"].as_array().map(|n| n.is_empty()).unwrap_or(true));
        rep.images = gone
            .iter()
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect();
        let by_id = layers_by_id(layers);
        let used: BTreeSet<&str> = kept
            .iter()
            .flat_map(|img| layer_chain(&by_id, img["layer"].as_str()))
            .filter_map(|l| l["id"].as_str())
            .collect();
        let (dropped, remaining): (Vec<Value>, Vec<Value>) = layers
            .iter()
            .cloned()
            .partition(|l| !used.contains(l["id"].as_str().unwrap_or("")));
        rep.layers = dropped
            .iter()
            .filter_map(|l| l["id"].as_str().map(str::to_string))
            .collect();
        GcPlan {
            kept,
            gone,
            remaining,
        }
    }

    /// Every blob the removed images used.
    fn gone_blobs(&self, layers: &[Value]) -> BTreeSet<String> {
        let by_id = layers_by_id(layers);
        self.gone
            .iter()
            .flat_map(|img| layer_chain(&by_id, img["layer"].as_str()))
            .filter_map(|l| l["compressed-diff-digest"].as_str().map(str::to_string))
            .collect()
    }

    fn kept_users(&self, layers: &[Value]) -> std::collections::BTreeMap<String, BTreeSet<String>> {
        blob_users(&self.kept, layers)
    }
}

/// The layer directories (with their blob hex) only removed images used:
/// every blob they used is dropped from its `origin.json`, and the
/// directory goes when no image is left in it and no remaining layer uses it.
fn unused_layer_dirs(
    repo: &RepoPaths,
    plan: &GcPlan,
    layers: &[Value],
    removed_images: &[String],
    dry_run: bool,
) -> Result<Vec<(PathBuf, String)>> {
    let still_used: BTreeSet<&str> = plan
        .remaining
        .iter()
        .filter_map(|l| l["compressed-diff-digest"].as_str())
        .collect();
    let removed_configs: BTreeSet<String> = removed_images
        .iter()
        .map(|i| cvmfs_format::sha256_digest(i))
        .collect();
    let kept_users = plan.kept_users(layers);
    let mut out = Vec::new();
    for d in &plan.gone_blobs(layers) {
        let Ok(hex) = super::digest_hex(d) else {
            continue;
        };
        let dir = repo.layer_dir(hex);
        if let Err(e) = fsx::check_real_dirs(&repo.root, &RepoPaths::metadata_of(&dir)) {
            eprintln!("warning: {e}; keeping the layer");
            continue;
        }
        let origin_path = RepoPaths::origin_of(&dir);
        let origin = match super::ducc::read_origin(&origin_path) {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => {
                // Who else uses the layer is unknown (DUCC's images are not in
                // our store): keep it, and name the images we know.
                eprintln!("warning: {e}; keeping the layer and rebuilding it from images.json");
                if !dry_run && dir.is_dir() {
                    let users = kept_users.get(d.as_str()).cloned().unwrap_or_default();
                    super::ducc::ensure_origin(&dir, &users)?;
                }
                continue;
            }
        };
        let others: Vec<String> = origin
            .origin
            .iter()
            .filter(|c| !removed_configs.contains(*c))
            .cloned()
            .collect();
        if others.is_empty() && !still_used.contains(d.as_str()) {
            out.push((dir, hex.to_string()));
        } else if others.len() != origin.origin.len() && !dry_run && dir.is_dir() {
            let o = super::ducc::Origin { origin: others };
            fsx::write_atomic(&origin_path, super::ducc::origin_json(&o).as_bytes(), 0o644)?;
        }
    }
    Ok(out)
}

/// `origin.json` of every layer still used names every image using it
/// (repairs lost updates and damaged files).
fn repair_origins(
    repo: &RepoPaths,
    kept_users: &std::collections::BTreeMap<String, BTreeSet<String>>,
    rep: &mut GcReport,
) -> Result<()> {
    for (blob, users) in kept_users {
        let Ok(hex) = super::digest_hex(blob) else {
            continue;
        };
        let dir = repo.layer_dir(hex);
        if !RepoPaths::layerfs_of(&dir).is_dir()
            || fsx::check_real_dirs(&repo.root, &RepoPaths::metadata_of(&dir)).is_err()
        {
            continue;
        }
        let origin_path = RepoPaths::origin_of(&dir);
        let before = super::ducc::read_origin(&origin_path);
        let repaired = super::ducc::ensure_origin(&dir, users)?;
        let complete =
            before.is_ok_and(|o| o.is_some_and(|o| users.iter().all(|u| o.origin.contains(u))));
        if repaired.is_some() || !complete {
            rep.origins_repaired.push(origin_path.display().to_string());
        }
    }
    Ok(())
}

/// A remaining layer's record may name a flat tree about to go (another
/// image with the same layers built it): name a kept image's instead, or
/// none (the driver then stacks the layers), before the tree goes.
fn repoint_flat_records(
    store: &StorePaths,
    plan: &GcPlan,
    removed_images: &[String],
) -> Result<()> {
    let removed_flats: BTreeSet<String> = removed_images
        .iter()
        .filter(|i| i.len() >= 2)
        .map(|i| flat_rel(i))
        .collect();
    for l in &plan.remaining {
        let Some(id) = l["id"].as_str() else { continue };
        let rp = store.record(id);
        let Some(StoreRecord::Cvmfs { mut record, .. }) = fs::read(&rp)
            .ok()
            .and_then(|b| cvmfs_format::parse_store_record(&b).ok())
        else {
            continue;
        };
        if !record
            .flat
            .as_ref()
            .is_some_and(|f| removed_flats.contains(f))
        {
            continue;
        }
        let other =
            kept_images_on(plan, id).find(|c| c.len() >= 2 && store.flat_built(c).is_file());
        record.flat = other.map(flat_rel);
        fsx::write_atomic(&rp, record.to_json().as_bytes(), 0o644)?;
    }
    Ok(())
}

/// The IDs of the images gc keeps whose top layer is `layer`.
fn kept_images_on<'a>(plan: &'a GcPlan, layer: &'a str) -> impl Iterator<Item = &'a str> {
    plan.kept
        .iter()
        .filter(move |i| i["layer"].as_str() == Some(layer))
        .filter_map(|i| i["id"].as_str())
}

/// A kept layer's `start` link that names a removed image's start
/// directory: name a kept image with that top layer instead, or go.
fn repoint_record_start_links(
    store: &StorePaths,
    plan: &GcPlan,
    removed_images: &[String],
) -> Result<()> {
    use cvmfs_format::paths::{parse_record_start_target, record_start_target, RECORD_START_LINK};
    for l in &plan.remaining {
        let Some(id) = l["id"].as_str() else { continue };
        let link = store.record_dir(id).join(RECORD_START_LINK);
        let Ok(target) = fs::read_link(&link) else {
            continue;
        };
        let named = target.to_str().and_then(parse_record_start_target);
        if !named.is_some_and(|i| removed_images.iter().any(|r| r == i)) {
            continue;
        }
        let other = kept_images_on(plan, id).find(|c| store.start_dir(c).is_dir());
        match other {
            Some(c) => replace_symlink(&link, &record_start_target(c))?,
            None => fs::remove_file(&link).map_err(|e| Error::io(&link, e))?,
        }
    }
    Ok(())
}

/// Remove what [`gc`] dropped: each path renamed away first, so readers
/// never see half of it.
fn remove_unused(
    store: &StorePaths,
    rep: &GcReport,
    layer_dirs: &[(PathBuf, String)],
    flat_dirs: &[(PathBuf, String)],
) -> Result<()> {
    let vanish = |p: &Path| -> Result<()> {
        if fs::symlink_metadata(p).is_err() {
            return Ok(());
        }
        let tmp = fsx::tmp_path(p);
        fs::rename(p, &tmp).map_err(|e| Error::io(p, e))?;
        fsx::remove_all(&tmp)
    };
    for id in &rep.images {
        vanish(&store.image_dir(id))?;
        vanish(&store.start_dir(id))?;
    }
    for id in &rep.layers {
        // a profile is keyed by its image's top layer
        if let Some(p) = super::profile::profile_of_layer(store, id) {
            vanish(&p)?;
        }
        vanish(&store.tar_split(id))?;
        vanish(&store.record_dir(id))?;
    }
    for (dir, hex) in layer_dirs {
        vanish(dir)?;
        vanish(&store.tar_split_by_digest(hex))?;
        vanish(&store.ownership_lost_marker(hex))?;
        vanish(&store.owners_by_digest(hex))?;
        vanish(&store.markers_by_digest(hex))?;
    }
    for (d, id) in flat_dirs {
        vanish(d)?;
        vanish(&store.flat_built(id))?;
    }
    Ok(())
}

/// Copy the records of the images named `names` (and of their layers) from the
/// repository's store `src` into a small local store `dst`, so that podman,
/// configured with `dst` as its image store and the repository in
/// `cvmfs.repositories`, loads only what the user enabled instead of the whole
/// repository's indexes. Layer records keep pointing into the repository.
/// Returns the image IDs enabled.
pub fn enable(src: &StorePaths, dst: &StorePaths, names: &[String]) -> Result<Vec<String>> {
    // resolve everything before touching dst
    let picks = resolve_picks(src, names)?;
    let _publisher = Lock::publisher(&dst.publisher_lock())?;
    dst.init()?;
    let _lock = Lock::exclusive(&dst.images_lock())?;
    let mut layers = read_index(&dst.layers_json())?;
    let mut images = read_index(&dst.images_json())?;
    let copy = |from: &Path, to: &Path| -> Result<()> {
        let b = fs::read(from).map_err(|e| Error::io(from, e))?;
        fsx::write_atomic(to, &b, 0o644)
    };
    let mut added_layers = false;
    for (img, img_names, chain) in &picks {
        for l in chain {
            let id = l["id"].as_str().unwrap_or_default();
            if layers.iter().any(|x| x["id"] == id) {
                continue;
            }
            // owners first, as in commit: the record must not appear without them
            if src.owners_file(id).exists() {
                copy(&src.owners_file(id), &dst.owners_file(id))?;
            }
            copy(&src.record(id), &dst.record(id))?;
            copy(&src.tar_split(id), &dst.tar_split(id))?;
            layers.push(l.clone());
            added_layers = true;
        }
        // the image's start-up profile goes with it
        if let Some(top) = img["layer"].as_str() {
            super::profile::copy_profile(src, dst, top)?;
        }
        let id = img["id"].as_str().unwrap_or_default();
        for k in img["big-data-names"].as_array().into_iter().flatten() {
            let f = big_data_file_name(k.as_str().unwrap_or_default());
            copy(&src.image_dir(id).join(&f), &dst.image_dir(id).join(&f))?;
        }
        for other in images.iter_mut() {
            if other["id"] == img["id"] {
                continue;
            }
            if let Some(n) = other["names"].as_array_mut() {
                n.retain(|x| !img_names.iter().any(|m| x == m.as_str()));
            }
        }
        match images.iter_mut().find(|x| x["id"] == img["id"]) {
            Some(existing) => {
                let mut n = existing["names"].as_array().cloned().unwrap_or_default();
                for m in img_names {
                    if !n.iter().any(|x| x == m.as_str()) {
                        n.push(json!(m));
                    }
                }
                existing["names"] = Value::Array(n);
            }
            None => {
                let mut v = img.clone();
                v["names"] = json!(img_names);
                if let Some(o) = v.as_object_mut() {
                    o.remove("names-history");
                }
                images.push(v);
            }
        }
    }
    if added_layers {
        write_index(&dst.layers_json(), &layers)?;
        bump_token(&dst.layers_lock())?;
    }
    write_index(&dst.images_json(), &images)?;
    bump_token(&dst.images_lock())?;
    Ok(picks
        .iter()
        .map(|p| p.0["id"].as_str().unwrap_or_default().to_string())
        .collect())
}

/// An image to enable: its `images.json` entry, the names asked for, and
/// its layers' entries, bottom first.
type Pick = (Value, Vec<String>, Vec<Value>);

/// The images of store `src` named `names`, with their layer chains.
fn resolve_picks(src: &StorePaths, names: &[String]) -> Result<Vec<Pick>> {
    let src_images = read_index(&src.images_json())?;
    let src_layers = read_index(&src.layers_json())?;
    let by_id = layers_by_id(&src_layers);
    let mut picks: Vec<Pick> = Vec::new();
    for name in names {
        let img = src_images
            .iter()
            .find(|i| {
                i["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|x| x == name.as_str()))
            })
            .ok_or_else(|| {
                Error::msg(format!(
                    "{}: no image named {name}",
                    src.images_json().display()
                ))
            })?;
        let mut chain = Vec::new();
        let mut cur = img["layer"].as_str();
        while let Some(id) = cur {
            let l = by_id.get(id).ok_or_else(|| {
                Error::msg(format!(
                    "image {name}: layer {id} is missing from {}",
                    src.layers_json().display()
                ))
            })?;
            chain.push((*l).clone());
            cur = l["parent"].as_str();
        }
        chain.reverse();
        match picks.iter_mut().find(|p| p.0["id"] == img["id"]) {
            Some(p) => p.1.push(name.clone()),
            None => picks.push((img.clone(), vec![name.clone()], chain)),
        }
    }
    Ok(picks)
}

/// Take `names` out of a store made by [`enable`] and drop what no image needs.
pub fn disable(dst: &StorePaths, names: &[String]) -> Result<GcReport> {
    {
        let _publisher = Lock::publisher(&dst.publisher_lock())?;
        dst.init()?;
        let _lock = Lock::exclusive(&dst.images_lock())?;
        let mut images = read_index(&dst.images_json())?;
        let mut found = false;
        for img in images.iter_mut() {
            if let Some(n) = img["names"].as_array_mut() {
                let before = n.len();
                n.retain(|x| !names.iter().any(|m| x == m.as_str()));
                found |= n.len() != before;
            }
        }
        if !found {
            return Err(Error::msg(format!(
                "{}: none of {} is enabled",
                dst.images_json().display(),
                names.join(", ")
            )));
        }
        write_index(&dst.images_json(), &images)?;
    }
    gc(dst, None, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert!(is_rfc3339("2023-11-14T22:13:20Z"));
        assert!(is_rfc3339("2023-11-14T22:13:20.123456789Z"));
        assert!(is_rfc3339("2023-11-14T22:13:20+01:00"));
        assert!(!is_rfc3339("yesterday"));
        assert!(!is_rfc3339("2023-11-14 22:13:20Z"));
        assert!(!is_rfc3339("2023-11-14T22:13:20.Z"));
    }

    #[test]
    fn big_data_names() {
        assert_eq!(big_data_file_name("manifest"), "manifest");
        assert_eq!(
            big_data_file_name("sha256:ab"),
            format!("={}", base64(b"sha256:ab"))
        );
        assert_eq!(
            big_data_file_name("manifest-sha256:x").chars().next(),
            Some('=')
        );
    }

    #[test]
    fn indexes_get_catalogs_of_their_own_only_when_large() {
        let t = tempfile::tempdir().unwrap();
        let store = StorePaths::new(t.path().join("podmanStore"));
        store.init().unwrap();
        let marker = |d: PathBuf| d.join(cvmfs_format::paths::CATALOG_MARKER).exists();
        assert!(marker(store.root.clone()));
        assert!(!marker(store.images_dir()) && !marker(store.layers_dir()));
        assert!(!marker(store.cvmfs_dir()));
        let entries = |n: usize| vec![json!({}); n];
        write_index(&store.images_json(), &entries(IMAGES_OWN_CATALOG_AT - 1)).unwrap();
        write_index(&store.layers_json(), &entries(RECORDS_OWN_CATALOG_AT - 1)).unwrap();
        assert!(!marker(store.images_dir()) && !marker(store.layers_dir()));
        assert!(!marker(store.cvmfs_dir()));
        write_index(&store.layers_json(), &entries(RECORDS_OWN_CATALOG_AT)).unwrap();
        assert!(marker(store.cvmfs_dir()) && !marker(store.layers_dir()));
        write_index(&store.images_json(), &entries(IMAGES_OWN_CATALOG_AT)).unwrap();
        write_index(&store.layers_json(), &entries(LAYERS_OWN_CATALOG_AT)).unwrap();
        assert!(marker(store.images_dir()) && marker(store.layers_dir()));
        // A store that shrinks keeps them (no catalog churn).
        write_index(&store.images_json(), &entries(1)).unwrap();
        assert!(marker(store.images_dir()));
    }
}
