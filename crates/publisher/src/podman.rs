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

use super::fsx::{self, Lock};
use super::layer::hex;
use super::tarsplit::base64;
use super::{Error, Result};

/// Version of our per-layer records (`cvmfs/layers/<id>/layer.json`).
pub const RECORD_VERSION: u32 = cvmfs_graphdriver::store::RECORD_VERSION;

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

/// Paths inside a `podmanStore`.
#[derive(Debug, Clone)]
pub struct StorePaths {
    pub root: PathBuf,
}

impl StorePaths {
    pub fn new(root: impl Into<PathBuf>) -> StorePaths {
        StorePaths { root: root.into() }
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("cvmfs-images")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("cvmfs-layers")
    }
    pub fn images_json(&self) -> PathBuf {
        self.images_dir().join("images.json")
    }
    pub fn layers_json(&self) -> PathBuf {
        self.layers_dir().join("layers.json")
    }
    pub fn images_lock(&self) -> PathBuf {
        self.images_dir().join("images.lock")
    }
    pub fn layers_lock(&self) -> PathBuf {
        self.layers_dir().join("layers.lock")
    }
    /// The publisher lock: `publish` and `gc` hold it (taken before the store
    /// lock) while they read-modify-write any shared index of the repository
    /// (`origin.json` of layers, the tag links and manifest copies, the flat
    /// notes, `images.json`/`layers.json`) and while they sweep temporaries.
    /// Nothing is written into it (who holds it is in `/proc/locks`).
    pub fn publisher_lock(&self) -> PathBuf {
        self.root.join("cvmfs").join("publisher.lock")
    }
    pub fn record(&self, id: &str) -> PathBuf {
        self.root
            .join("cvmfs")
            .join("layers")
            .join(id)
            .join("layer.json")
    }
    pub fn tar_split(&self, id: &str) -> PathBuf {
        self.layers_dir().join(format!("{id}.tar-split.gz"))
    }
    /// tar-split kept per compressed digest, so a layer reused under another
    /// parent (another layer ID) gets it without downloading the blob again.
    pub fn tar_split_by_digest(&self, digest_hex: &str) -> PathBuf {
        self.root
            .join("cvmfs")
            .join("tar-split")
            .join(format!("{digest_hex}.tar-split.gz"))
    }
    /// Marker: the `layerfs` of blob `digest_hex` does not carry the image's
    /// ownership (found unpacked by someone else, e.g. DUCC).
    pub fn ownership_lost_marker(&self, digest_hex: &str) -> PathBuf {
        self.root
            .join("cvmfs")
            .join("tar-split")
            .join(format!("{digest_hex}.ownership-lost"))
    }
    /// The image's owners of blob `digest_hex`'s layer (see [`super::ownership`]),
    /// kept per blob so that a layer reused under another parent, or recorded
    /// again after its records were lost, gets them without reading the blob.
    pub fn owners_by_digest(&self, digest_hex: &str) -> PathBuf {
        self.root
            .join("cvmfs")
            .join("tar-split")
            .join(format!("{digest_hex}.ownership.json"))
    }
    /// The raw whiteout markers of blob `digest_hex`'s `layerfs` (a JSON array
    /// of paths, see [`super::layer::marker_list`]), kept per blob so that a
    /// reused layer's records list them without reading the blob.
    pub fn markers_by_digest(&self, digest_hex: &str) -> PathBuf {
        self.root
            .join("cvmfs")
            .join("tar-split")
            .join(format!("{digest_hex}.markers.json"))
    }
    /// The publisher's note that it built `.flat/XX/<config_hex>` itself (from
    /// the layers as unpacked, equal to `umoci unpack`): only such flat trees
    /// are named in layer records, never one DUCC made (DUCC's differ).
    pub fn flat_built(&self, config_hex: &str) -> PathBuf {
        self.root
            .join("cvmfs")
            .join("flat")
            .join(format!("{config_hex}.json"))
    }
    /// `ownership.json` beside layer `id`'s record, where the driver reads it.
    pub fn owners_file(&self, id: &str) -> PathBuf {
        self.record(id)
            .with_file_name(cvmfs_graphdriver::mount::whiteouts::OWNERSHIP_FILE)
    }
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.images_dir().join(id)
    }

    /// Create the directories, empty indexes, lock files and catalog markers.
    pub fn init(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.images_dir(),
            self.layers_dir(),
            self.root.join("cvmfs"),
        ] {
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            let cat = d.join(".cvmfscatalog");
            if !cat.exists() {
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
    fsx::write_atomic(path, &text, 0o644)
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

/// The per-layer record the driver reads (format at the top of `src/layout.rs`).
pub fn record_json(repository: &str, l: &NewLayer) -> String {
    let mut record = json!({
        "version": RECORD_VERSION,
        "kind": "cvmfs",
        "repository": repository,
        "path": l.path,
        "parent": l.parent,
        "whiteouts": "oci-raw",
        "ownership": if l.ownership_kept { "kept" } else { "lost" },
    });
    if let Some(m) = &l.markers {
        record["markers"] = json!(m);
    }
    if let Some(f) = &l.flat {
        record["flat"] = json!(f);
    }
    record.to_string()
}

/// The record to write for known layer `l` whose record at `path` may predate
/// marker lists and flat trees: `None` when the one there says it all.
/// A flat tree named there stays when this publish has none to name (another
/// image with the same layers built it).
fn updated_record(path: &Path, repository: &str, l: &NewLayer) -> Option<String> {
    let new: Value = serde_json::from_str(&record_json(repository, l)).expect("our own JSON");
    let old: Option<Value> = fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut new = new;
    if let Some(old) = &old {
        if new.get("flat").is_none() {
            if let Some(f) = old.get("flat") {
                new["flat"] = f.clone();
            }
        }
        if new.get("markers").is_none() {
            if let Some(m) = old.get("markers") {
                new["markers"] = m.clone();
            }
        }
        if *old == new {
            return None;
        }
    }
    Some(new.to_string())
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
            l.path = format!(".layers/{}/{hex}/layerfs", &hex[..2]);
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
    // a symlink planted in the store must not lead the writes below elsewhere
    let mut dirs = vec![
        store.image_dir(&image.id),
        store.root.join("cvmfs/tar-split"),
    ];
    dirs.extend(
        layers
            .iter()
            .filter_map(|l| store.record(&l.id).parent().map(Path::to_path_buf)),
    );
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
    let mut out = Committed::default();

    let mut index = read_index(&store.layers_json())?;
    let known: BTreeSet<String> = index
        .iter()
        .filter_map(|l| l["id"].as_str().map(str::to_string))
        .collect();
    let now = super::rfc3339(std::time::SystemTime::now());
    for l in layers {
        // The owners file goes first: the driver reads it when it finds the
        // record, so a record never appears without it. A layer recorded
        // before owners files existed gets one now.
        if let (false, Some(o)) = (l.ownership_kept, &l.owners) {
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
            record_json(repository, l).as_bytes(),
            0o644,
        )?;
        let ts = fs::read(&l.tar_split).map_err(|e| Error::io(&l.tar_split, e))?;
        fsx::write_atomic(&store.tar_split(&l.id), &ts, 0o644)?;
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
        index.push(v);
        out.layers_added.push(l.id.clone());
    }
    if !out.layers_added.is_empty() {
        write_index(&store.layers_json(), &index)?;
        bump_token(&store.layers_lock())?;
    }

    // Big data first, then the index naming it.
    let manifest_digest = sha256_digest(&image.manifest);
    let config_key = sha256_digest(&image.config);
    let manifest_key = format!("manifest-{manifest_digest}");
    let items: [(&str, &[u8]); 3] = [
        (&config_key, &image.config),
        (&manifest_key, &image.manifest),
        ("manifest", &image.manifest),
    ];
    let dir = store.image_dir(&image.id);
    for (k, data) in items {
        let p = dir.join(big_data_file_name(k));
        let same = fs::read(&p).map(|b| b == data).unwrap_or(false);
        if !same {
            fsx::write_atomic(&p, data, 0o644)?;
        }
    }
    let mut images = read_index(&store.images_json())?;
    // a name belongs to one image: a moved tag leaves the old image nameless
    // (still there for running containers, until `gc`)
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
    let sizes: serde_json::Map<String, Value> = items
        .iter()
        .map(|(k, d)| (k.to_string(), json!(d.len())))
        .collect();
    let digests: serde_json::Map<String, Value> = items
        .iter()
        .map(|(k, d)| (k.to_string(), json!(sha256_digest(d))))
        .collect();
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
            images.push(json!({
                "id": image.id,
                "digest": manifest_digest,
                "names": image.names,
                "layer": image.top_layer,
                "big-data-names": items.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
                "big-data-sizes": sizes,
                "big-data-digests": digests,
                "created": if is_rfc3339(&image.created) { image.created.clone() } else { now.clone() },
            }));
            out.image_added = true;
        }
    }
    write_index(&store.images_json(), &images)?;
    bump_token(&store.images_lock())?;
    Ok(out)
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
    let mut images = read_index(&store.images_json())?;
    let (gone, kept): (Vec<Value>, Vec<Value>) = images
        .drain(..)
        .partition(|i| i["names"].as_array().map(|n| n.is_empty()).unwrap_or(true));
    rep.images = gone
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    let layers = read_index(&store.layers_json())?;
    let by_id: std::collections::HashMap<&str, &Value> = layers
        .iter()
        .filter_map(|l| l["id"].as_str().map(|id| (id, l)))
        .collect();
    let mut used = BTreeSet::new();
    for img in &kept {
        let mut cur = img["layer"].as_str();
        while let Some(id) = cur {
            if !used.insert(id.to_string()) {
                break;
            }
            cur = by_id.get(id).and_then(|l| l["parent"].as_str());
        }
    }
    let (dropped, remaining): (Vec<Value>, Vec<Value>) = layers
        .iter()
        .cloned()
        .partition(|l| !used.contains(l["id"].as_str().unwrap_or("")));
    rep.layers = dropped
        .iter()
        .filter_map(|l| l["id"].as_str().map(str::to_string))
        .collect();
    let still_used_blobs: BTreeSet<&str> = remaining
        .iter()
        .filter_map(|l| l["compressed-diff-digest"].as_str())
        .collect();
    let removed_configs: BTreeSet<String> =
        rep.images.iter().map(|i| format!("sha256:{i}")).collect();
    let mut layer_dirs = Vec::new();
    // every blob the removed images used: drop them from origin.json, and the
    // directory when no image is left in it and no remaining layer uses it
    let mut gone_blobs = BTreeSet::new();
    for img in &gone {
        let mut cur = img["layer"].as_str();
        let mut seen = BTreeSet::new();
        while let Some(id) = cur {
            if !seen.insert(id) {
                break;
            }
            let Some(l) = by_id.get(id) else { break };
            if let Some(d) = l["compressed-diff-digest"].as_str() {
                gone_blobs.insert(d.to_string());
            }
            cur = l["parent"].as_str();
        }
    }
    let kept_users = blob_users(&kept, &layers);
    for d in gone_blobs.iter().filter(|_| repo.is_some()) {
        let repo = repo.expect("filtered");
        let Ok(hex) = super::digest_hex(d) else {
            continue;
        };
        let dir = repo.join(".layers").join(&hex[..2]).join(hex);
        if let Err(e) = fsx::check_real_dirs(repo, &dir.join(".metadata")) {
            eprintln!("warning: {e}; keeping the layer");
            continue;
        }
        let origin = match super::ducc::read_origin(&dir.join(".metadata/origin.json")) {
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
        if others.is_empty() && !still_used_blobs.contains(d.as_str()) {
            layer_dirs.push((dir, hex.to_string()));
        } else if others.len() != origin.origin.len() && !dry_run && dir.is_dir() {
            let o = super::ducc::Origin { origin: others };
            fsx::write_atomic(
                &dir.join(".metadata/origin.json"),
                super::ducc::origin_json(&o).as_bytes(),
                0o644,
            )?;
        }
    }
    // origin.json of every layer still used names every image using it
    // (repairs lost updates and damaged files)
    for (blob, users) in kept_users.iter().filter(|_| !dry_run) {
        let (Some(repo), Ok(hex)) = (repo, super::digest_hex(blob)) else {
            continue;
        };
        let dir = repo.join(".layers").join(&hex[..2]).join(hex);
        if !dir.join("layerfs").is_dir()
            || fsx::check_real_dirs(repo, &dir.join(".metadata")).is_err()
        {
            continue;
        }
        let before = super::ducc::read_origin(&dir.join(".metadata/origin.json"));
        let repaired = super::ducc::ensure_origin(&dir, users)?;
        let complete =
            before.is_ok_and(|o| o.is_some_and(|o| users.iter().all(|u| o.origin.contains(u))));
        if repaired.is_some() || !complete {
            rep.origins_repaired
                .push(dir.join(".metadata/origin.json").display().to_string());
        }
    }
    rep.layer_dirs = layer_dirs
        .iter()
        .map(|(d, _)| d.display().to_string())
        .collect();
    let flat_dirs: Vec<PathBuf> = rep
        .images
        .iter()
        .filter(|i| i.len() >= 2)
        .filter_map(|i| repo.map(|r| r.join(".flat").join(&i[..2]).join(i)))
        .collect();
    rep.flat_dirs = flat_dirs.iter().map(|d| d.display().to_string()).collect();
    if dry_run || (rep.images.is_empty() && rep.layers.is_empty()) {
        return Ok(rep);
    }
    write_index(&store.images_json(), &kept)?;
    write_index(&store.layers_json(), &remaining)?;
    bump_token(&store.images_lock())?;
    bump_token(&store.layers_lock())?;
    // A remaining layer's record may name a flat tree about to go (another
    // image with the same layers built it): name a kept image's instead, or
    // none (the driver then stacks the layers), before the tree goes.
    let removed_flats: BTreeSet<String> = rep
        .images
        .iter()
        .filter(|i| i.len() >= 2)
        .map(|i| format!(".flat/{}/{i}", &i[..2]))
        .collect();
    for l in &remaining {
        let Some(id) = l["id"].as_str() else { continue };
        let rp = store.record(id);
        let Some(mut rec) = fs::read(&rp)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            continue;
        };
        if !rec["flat"]
            .as_str()
            .is_some_and(|f| removed_flats.contains(f))
        {
            continue;
        }
        let other = kept
            .iter()
            .filter(|i| i["layer"].as_str() == Some(id))
            .filter_map(|i| i["id"].as_str())
            .find(|c| c.len() >= 2 && store.flat_built(c).is_file());
        match other {
            Some(c) => rec["flat"] = json!(format!(".flat/{}/{c}", &c[..2])),
            None => {
                rec.as_object_mut().map(|o| o.remove("flat"));
            }
        }
        fsx::write_atomic(&rp, rec.to_string().as_bytes(), 0o644)?;
    }
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
    }
    for id in &rep.layers {
        // H-profiles hook: a profile is keyed by its image's top layer
        if let Some(p) = super::profile::profile_of_layer(store, id) {
            vanish(&p)?;
        }
        vanish(&store.tar_split(id))?;
        vanish(store.record(id).parent().expect("record dir"))?;
    }
    for (dir, hex) in &layer_dirs {
        vanish(dir)?;
        vanish(&store.tar_split_by_digest(hex))?;
        vanish(&store.ownership_lost_marker(hex))?;
        vanish(&store.owners_by_digest(hex))?;
        vanish(&store.markers_by_digest(hex))?;
    }
    for (d, id) in flat_dirs
        .iter()
        .zip(rep.images.iter().filter(|i| i.len() >= 2))
    {
        vanish(d)?;
        vanish(&store.flat_built(id))?;
    }
    Ok(rep)
}

/// Copy the records of the images named `names` (and of their layers) from the
/// repository's store `src` into a small local store `dst`, so that podman,
/// configured with `dst` as its image store and the repository in
/// `cvmfs.repositories`, loads only what the user enabled instead of the whole
/// repository's indexes. Layer records keep pointing into the repository.
/// Returns the image IDs enabled.
pub fn enable(src: &StorePaths, dst: &StorePaths, names: &[String]) -> Result<Vec<String>> {
    let src_images = read_index(&src.images_json())?;
    let src_layers = read_index(&src.layers_json())?;
    let by_id: std::collections::HashMap<&str, &Value> = src_layers
        .iter()
        .filter_map(|l| l["id"].as_str().map(|id| (id, l)))
        .collect();
    // resolve everything before touching dst
    let mut picks: Vec<(Value, Vec<String>, Vec<Value>)> = Vec::new();
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
        // H-profiles hook: the image's start-up profile goes with it
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
}
