//! The cheap listing of a DUCC repository and the on-demand completion of
//! the images a user runs.
//!
//! Podman learns which images exist from the store's `images.json` and
//! `layers.json`, parsed on every command; it reads an image's config and
//! manifest (big data) only for the image it uses, and the driver hears of a
//! layer only when that layer is used. So the listing is built from DUCC's
//! two index files alone, `podmanStore/overlay-images/images.json` (ID,
//! names, top diffID) and `podmanStore/overlay-layers/layers.json` (diffID,
//! parent diffID, blob digest, sizes), without one repository read per
//! image:
//!
//! * each image's entry names its top layer by containers/image's ID (the
//!   chain of diffIDs DUCC's layer list gives); its config is a symlink to
//!   DUCC's `overlay-images/<id>/=base64("sha256:<id>")` (podman reads the
//!   config of the one image it runs, and containers/image checks that it
//!   hashes to the digest the manifest names), its manifest is written from
//!   the same indexes (one `lstat` of DUCC's config for its size; every big
//!   data item needs a digest for containers/storage to copy the image on
//!   `podman pull`);
//! * `layers.json` lists every layer with the digests and sizes `podman
//!   pull` looks for (a pull of a listed image downloads no layer);
//! * no record is written: `ducc-index` (sorted fixed-width lines: layer ID,
//!   parent, blob digest, diffID, one image using it) lets [`complete`] find
//!   a layer in a few `pread`s when the driver is first asked for it.
//!   Then, and only for that chain, the image's config (hash = image ID)
//!   must give exactly that chain of layer IDs, and each blob's
//!   `.metadata/layers.json` must name the diffID; the records are written
//!   (each renamed into place) and used like any other.
//!
//! An image whose chain DUCC's layer list does not give (no list, a missing
//! or malformed entry) is converted at once, as before this listing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cvmfs_format::record::{CvmfsRecord, Ownership, Whiteouts};
use cvmfs_format::{digest_hex, is_hex64, sha256_digest, RepoPaths, StorePaths};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::incremental::Known;
use super::{
    check_name, err, layer_id, layer_info, looks_rfc3339, read_capped, read_config, DuccImage,
    DUCC_IMAGES_DIR, EPOCH, MAX_DUCC_INDEX_BYTES, MAX_IMAGE_LAYERS,
};

/// DUCC's legacy overlay layer store inside `podmanStore/`.
pub const DUCC_LAYERS_DIR: &str = "overlay-layers";
/// The sorted layer index of a synthesised store.
pub const INDEX_FILE: &str = "ducc-index";
/// The repository a synthesised store lists (its absolute path, one line).
pub const REPOSITORY_FILE: &str = "ducc-repository";

const FIELD: usize = 64;
/// Five fields of 64 characters, each followed by a space or the newline.
const LINE: usize = 5 * (FIELD + 1);
const NO_PARENT: &str = "----------------------------------------------------------------";

/// One layer of DUCC's `overlay-layers/layers.json` (unknown fields ignored).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub(super) struct DuccLayer {
    #[serde(default)]
    pub(super) parent: Option<String>,
    #[serde(default)]
    created: Option<String>,
    #[serde(rename = "compressed-diff-digest", default)]
    pub(super) compressed: Option<String>,
    #[serde(rename = "compressed-size", default)]
    compressed_size: Option<i64>,
    #[serde(rename = "diff-size", default)]
    diff_size: Option<i64>,
}

/// DUCC's layer list by diffID; empty when DUCC wrote none (every image is
/// then converted at once).
pub(super) fn read_ducc_layers(repo: &Path) -> io::Result<HashMap<String, DuccLayer>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
        #[serde(flatten)]
        layer: DuccLayer,
    }
    let path = RepoPaths::new(repo)
        .store()
        .root
        .join(DUCC_LAYERS_DIR)
        .join("layers.json");
    let bytes = match read_capped(&path, MAX_DUCC_INDEX_BYTES) {
        Ok(b) => b,
        Err(_) if !path.exists() => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let list: Vec<Entry> = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("{}: not DUCC's layer list: {e}", path.display())))?;
    Ok(list
        .into_iter()
        .filter(|e| is_hex64(&e.id))
        .map(|e| (e.id, e.layer))
        .collect())
}

/// One line of `ducc-index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexLine {
    pub(super) id: String,
    pub(super) parent: Option<String>,
    /// The compressed blob digest (hex): DUCC's `.layers/XX/<blob>`.
    pub(super) blob: String,
    pub(super) diff: String,
    /// An image whose config lists this layer.
    pub(super) image: String,
}

impl IndexLine {
    pub(super) fn text(&self) -> String {
        format!(
            "{} {} {} {} {}\n",
            self.id,
            self.parent.as_deref().unwrap_or(NO_PARENT),
            self.blob,
            self.diff,
            self.image
        )
    }

    fn parse(line: &[u8]) -> io::Result<IndexLine> {
        let text = std::str::from_utf8(line).map_err(|_| err("not text"))?;
        let f: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
        let hex = |s: &str| is_hex64(s).then(|| s.to_string());
        match f[..] {
            [id, parent, blob, diff, image] => Ok(IndexLine {
                id: hex(id).ok_or_else(|| err("bad layer ID"))?,
                parent: (parent != NO_PARENT)
                    .then(|| hex(parent).ok_or_else(|| err("bad parent")))
                    .transpose()?,
                blob: hex(blob).ok_or_else(|| err("bad blob digest"))?,
                diff: hex(diff).ok_or_else(|| err("bad diffID"))?,
                image: hex(image).ok_or_else(|| err("bad image ID"))?,
            }),
            _ => Err(err("not five fields")),
        }
    }
}

/// What the listing holds for one image.
pub(super) struct Listed {
    pub(super) id: String,
    /// Its manifest (registry spelling) when made now from DUCC's indexes;
    /// `None` when listed verbatim from `ducc-listed` (its directory is in
    /// the store).
    pub(super) manifest: Option<Vec<u8>>,
    /// Its entries as text (`images.json`, per layer `layers.json` and
    /// `ducc-index`), sizes and digests, as `ducc-listed` keeps them.
    pub(super) known: Known,
}

/// A hash of everything DUCC's indexes say about image `img` (its entry and
/// its chain in the layer list): while it is the same, the image is listed
/// as the last update listed it. `None` when the chain is broken.
pub(super) fn fingerprint(
    img: &DuccImage,
    ducc_layers: &HashMap<String, DuccLayer>,
) -> Option<String> {
    let mut h = Sha256::new();
    let mut field = |s: Option<&str>| {
        h.update(s.map_or(u64::MAX, |s| s.len() as u64).to_le_bytes());
        h.update(s.unwrap_or_default().as_bytes());
    };
    field(Some("ducc-listed 1"));
    field(Some(&img.id));
    img.names.iter().for_each(|n| field(Some(n)));
    field(None);
    field(img.layer.as_deref());
    field(img.created.as_deref());
    let mut next = img.layer.as_deref();
    let mut depth = 0;
    while let Some(d) = next {
        let l = ducc_layers.get(d)?;
        depth += 1;
        if depth > MAX_IMAGE_LAYERS {
            return None;
        }
        let sizes = format!("{:?} {:?}", l.compressed_size, l.diff_size);
        for f in [
            Some(d),
            l.parent.as_deref(),
            l.created.as_deref(),
            l.compressed.as_deref(),
        ] {
            field(f);
        }
        field(Some(&sizes));
        next = l.parent.as_deref().filter(|p| !p.is_empty());
    }
    Some(super::hex(&h.finalize()[..16]))
}

/// Image `img` listed from DUCC's layer list alone, or why not. The size
/// of its config is `known_config_size` when the store listed it before,
/// else one `lstat` in the repository.
pub(super) fn listed_image(
    repo: &Path,
    img: &DuccImage,
    ducc_layers: &HashMap<String, DuccLayer>,
    known_config_size: Option<u64>,
    fingerprint: Option<String>,
) -> Result<Listed, String> {
    let top = img.layer.as_deref();
    if !is_hex64(&img.id) {
        return Err("the ID is not 64 lower-case hex".into());
    }
    for n in &img.names {
        check_name(n).map_err(|e| e.to_string())?;
    }
    let mut diffs = Vec::new();
    let mut next = top.map(str::to_string);
    while let Some(d) = next {
        let layer = ducc_layers
            .get(&d)
            .ok_or_else(|| format!("DUCC's layer list has no layer {d}"))?;
        if diffs.len() >= MAX_IMAGE_LAYERS {
            return Err(format!("more than {MAX_IMAGE_LAYERS} layers"));
        }
        diffs.push((d, layer));
        next = layer.parent.clone().filter(|p| !p.is_empty());
    }
    if diffs.is_empty() {
        return Err("DUCC names no top layer".into());
    }
    diffs.reverse();
    let mut layers: Vec<(String, Value, IndexLine)> = Vec::new();
    for (diff, l) in diffs {
        let blob = l
            .compressed
            .as_deref()
            .and_then(|c| digest_hex(c).ok())
            .ok_or_else(|| format!("layer {diff}: no sha256 compressed digest"))?;
        let parent = layers.last().map(|p| p.0.clone());
        let id = layer_id(parent.as_deref(), &diff);
        let created = l.created.as_deref().filter(|c| looks_rfc3339(c));
        let mut entry = json!({
            "id": id, "created": created.unwrap_or(EPOCH),
            "compressed-diff-digest": sha256_digest(blob),
            "diff-digest": sha256_digest(&diff),
        });
        if let Some(p) = &parent {
            entry["parent"] = json!(p);
        }
        for (key, size) in [
            ("compressed-size", l.compressed_size),
            ("diff-size", l.diff_size),
        ] {
            if let Some(s) = size.filter(|s| *s >= 0) {
                entry[key] = json!(s);
            }
        }
        let line = IndexLine {
            id: id.clone(),
            parent,
            blob: blob.to_string(),
            diff: diff.clone(),
            image: img.id.clone(),
        };
        layers.push((id, entry, line));
    }
    let created = img
        .created
        .as_deref()
        .filter(|c| looks_rfc3339(c))
        .unwrap_or(EPOCH);
    let config_size = match known_config_size {
        Some(size) => size,
        None => config_path(repo, &img.id)
            .symlink_metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .ok_or("DUCC has no config file for it")?,
    };
    let manifest = manifest_from_index(&img.id, config_size, &layers);
    let top = &layers.last().expect("at least one layer").0;
    let config_key = sha256_digest(&img.id);
    let manifest_hex = super::hex(&Sha256::digest(&manifest));
    let manifest_digest = sha256_digest(&manifest_hex);
    let entry = json!({
        "id": img.id, "names": super::podman_names(&img.names), "layer": top, "created": created,
        "digest": manifest_digest,
        "big-data-names": [config_key, "manifest"],
        "big-data-sizes": {config_key.as_str(): config_size, "manifest": manifest.len()},
        "big-data-digests": {config_key.as_str(): config_key, "manifest": manifest_digest},
    });
    let text = |v: &Value| serde_json::to_string(v).expect("serializable");
    let layers = layers
        .iter()
        .map(|(id, e, line)| (id.clone(), text(e), line.text().trim_end().to_string()))
        .collect();
    Ok(Listed {
        id: img.id.clone(),
        manifest: Some(manifest),
        known: Known {
            config_size,
            manifest_hex,
            fingerprint: fingerprint.unwrap_or_else(|| "-".into()),
            entry: text(&entry),
            layers,
        },
    })
}

/// DUCC's config file of image `id`.
fn config_path(repo: &Path, id: &str) -> PathBuf {
    RepoPaths::new(repo)
        .store()
        .root
        .join(DUCC_IMAGES_DIR)
        .join(id)
        .join(super::big_data_file_name(&sha256_digest(id)))
}

/// The image's manifest in the registry's spelling, from DUCC's indexes
/// alone (reading DUCC's manifest copy would cost a repository fetch per
/// image): containers/storage needs every big data item's digest to copy a
/// listed image when it is pulled. DUCC's layer list keeps no media types:
/// the layers are given as OCI gzip layers (what DUCC 2.12 ingests).
fn manifest_from_index(
    id: &str,
    config_size: u64,
    layers: &[(String, Value, IndexLine)],
) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(_, entry, line)| {
            json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "size": entry["compressed-size"].as_i64().unwrap_or(0),
                "digest": sha256_digest(&line.blob),
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config_size,
            "digest": sha256_digest(id),
        },
        "layers": layers,
    }))
    .expect("serializable")
}

/// Image `img`'s big data into (staged) directory `dir`: the manifest
/// written, the config a symlink to DUCC's file (containers/image checks it
/// against the manifest's digest).
pub(super) fn write_big_data(repo: &Path, dir: &Path, id: &str, manifest: &[u8]) -> io::Result<()> {
    let link = dir.join(super::big_data_file_name(&sha256_digest(id)));
    std::os::unix::fs::symlink(config_path(repo, id), &link)
        .map_err(|e| err(format!("{}: {e}", link.display())))?;
    let m = dir.join("manifest");
    fs::write(&m, manifest).map_err(|e| err(format!("{}: {e}", m.display())))
}

/// Write `ducc-index` (sorted by layer ID; lines as [`IndexLine::text`]
/// without the newline) and `ducc-repository` into `root`.
pub(super) fn write_index(
    root: &Path,
    repo: &Path,
    lines: &BTreeMap<String, String>,
) -> io::Result<()> {
    let mut text = String::with_capacity(lines.len() * LINE);
    for line in lines.values() {
        text += line;
        text.push('\n');
    }
    super::incremental::replace_file(&root.join(INDEX_FILE), text.as_bytes())?;
    super::incremental::replace_file(
        &root.join(REPOSITORY_FILE),
        repo.as_os_str().as_encoded_bytes(),
    )
}

/// Layer `id`'s line of store `root`'s index, or `None`.
pub(super) fn index_line(root: &Path, id: &str) -> io::Result<Option<IndexLine>> {
    let path = root.join(INDEX_FILE);
    let file = fs::File::open(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let len = file.metadata()?.len();
    lookup(&file, len, id).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// Layer `id`'s line of store `store`'s index, by binary search.
fn lookup(file: &fs::File, len: u64, id: &str) -> io::Result<Option<IndexLine>> {
    let (mut lo, mut hi) = (0u64, len / LINE as u64);
    let mut buf = [0u8; LINE];
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        file.read_exact_at(&mut buf, mid * LINE as u64)?;
        match buf[..FIELD].cmp(id.as_bytes()) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return IndexLine::parse(&buf).map(Some),
        }
    }
    Ok(None)
}

/// The chain of layer `id` from store `root`'s index, bottom first; `None`
/// when the index does not list it (or the store has no index).
fn chain_of(root: &Path, id: &str) -> io::Result<Option<Vec<IndexLine>>> {
    let path = root.join(INDEX_FILE);
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("{}: {e}", path.display()))),
    };
    let len = file.metadata()?.len();
    if len % LINE as u64 != 0 {
        return Err(err(format!("{}: truncated", path.display())));
    }
    let bad = |e: io::Error| err(format!("{}: {e}", path.display()));
    let Some(top) = lookup(&file, len, id).map_err(bad)? else {
        return Ok(None);
    };
    let mut chain = vec![top];
    while let Some(p) = chain.last().and_then(|l| l.parent.clone()) {
        if chain.len() >= MAX_IMAGE_LAYERS {
            return Err(err(format!(
                "{}: a chain of over {MAX_IMAGE_LAYERS} layers",
                path.display()
            )));
        }
        let line = lookup(&file, len, &p).map_err(bad)?;
        chain.push(line.ok_or_else(|| err(format!("{}: parent {p} not listed", path.display())))?);
    }
    chain.reverse();
    Ok(Some(chain))
}

/// The DUCC repository synthesised store `root` lists.
pub fn read_repository(root: &Path) -> io::Result<PathBuf> {
    let path = root.join(REPOSITORY_FILE);
    let mut text = Vec::new();
    fs::File::open(&path)
        .and_then(|f| f.take(4096).read_to_end(&mut text))
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(text)))
}

/// Complete layer `id` of synthesised store `root` when its index lists it:
/// check its chain against the config of an image using it and the blobs'
/// `layers.json`, and write the records the chain lacks. False when the
/// store does not list the layer.
pub fn complete(root: &Path, id: &str) -> io::Result<bool> {
    let Some(chain) = chain_of(root, id)? else {
        return Ok(false);
    };
    let repo = read_repository(root)?;
    let image = &chain.last().expect("a chain has its top").image;
    let (_, diff_ids, _) = read_config(&repo, image)?;
    let mut parent: Option<String> = None;
    for (n, line) in chain.iter().enumerate() {
        let want = diff_ids.get(n).map(|d| (d, layer_id(parent.as_deref(), d)));
        if want.as_ref() != Some(&(&line.diff, line.id.clone())) {
            return Err(err(format!(
                "layer {id}: DUCC's layer list does not give image {image}'s layers (position {n})"
            )));
        }
        parent = Some(line.id.clone());
    }
    let store = StorePaths::new(root);
    let mut infos = HashMap::new();
    for line in &chain {
        if store.record(&line.id).is_file() {
            continue;
        }
        let info = layer_info(&repo, &line.blob, &mut infos)?;
        if info.diff_digest != sha256_digest(&line.diff) {
            return Err(err(format!(
                "layer {}: blob {}'s layers.json names diffID {}",
                line.id, line.blob, info.diff_digest
            )));
        }
        write_atomically(&store.record(&line.id), record_of(&repo, line).as_bytes())?;
    }
    Ok(true)
}

/// The record of the layer `line` describes (its text).
fn record_of(repo: &Path, line: &IndexLine) -> String {
    CvmfsRecord {
        repository: repo.to_string_lossy().into_owned(),
        path: cvmfs_format::paths::layerfs_rel(&line.blob),
        parent: line.parent.clone(),
        whiteouts: Whiteouts::OciRaw,
        ownership: Ownership::Lost,
        markers: None,
        flat: None,
        owner_probes: None,
    }
    .to_json()
}

/// Records written on first use under an earlier publication that DUCC's
/// layer list now describes otherwise (another blob for the same layer ID)
/// are rewritten: a store is updated in place, and the driver takes a
/// record it finds without asking the index again. Costs one small local
/// read per layer used so far.
pub(super) fn refresh_records(
    repo: &Path,
    store: &StorePaths,
    lines: &BTreeMap<String, String>,
) -> io::Result<()> {
    let Ok(dirs) = fs::read_dir(store.cvmfs_dir().join("layers")) else {
        return Ok(());
    };
    for d in dirs.flatten() {
        let id = d.file_name().to_string_lossy().into_owned();
        let Some(Ok(line)) = lines.get(&id).map(|l| IndexLine::parse(l.as_bytes())) else {
            continue;
        };
        let want = record_of(repo, &line);
        let path = store.record(&id);
        if fs::read(&path).is_ok_and(|have| have != want.as_bytes()) {
            write_atomically(&path, want.as_bytes())?;
        }
    }
    Ok(())
}

/// Write `path` whole or not at all (a concurrent writer writes the same).
pub(super) fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("a record has a directory");
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        super::SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let written = fs::File::create(&tmp).and_then(|mut f| {
        io::Write::write_all(&mut f, data)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed.map_err(|e| err(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_round_trip_and_are_fixed_width() {
        let l = IndexLine {
            id: "a".repeat(64),
            parent: None,
            blob: "b".repeat(64),
            diff: "c".repeat(64),
            image: "d".repeat(64),
        };
        assert_eq!(l.text().len(), LINE);
        assert_eq!(IndexLine::parse(l.text().as_bytes()).unwrap(), l);
        let child = IndexLine {
            parent: Some("a".repeat(64)),
            id: "e".repeat(64),
            ..l.clone()
        };
        assert_eq!(IndexLine::parse(child.text().as_bytes()).unwrap(), child);
        assert!(IndexLine::parse(&[b'x'; LINE]).is_err());
    }

    #[test]
    fn chains_are_found_by_binary_search() {
        let t = tempfile::tempdir().unwrap();
        let mut lines = BTreeMap::new();
        let mut parent = None;
        for i in 0..50u8 {
            let id = format!("{:02x}", i.wrapping_mul(37)).repeat(32);
            let line = IndexLine {
                id: id.clone(),
                parent: parent.clone(),
                blob: "b".repeat(64),
                diff: "c".repeat(64),
                image: "d".repeat(64),
            };
            lines.insert(id.clone(), line.text().trim_end().to_string());
            parent = Some(id);
        }
        write_index(t.path(), Path::new("/cvmfs/x"), &lines).unwrap();
        let top = parent.unwrap();
        let chain = chain_of(t.path(), &top).unwrap().unwrap();
        assert_eq!(chain.len(), 50);
        assert_eq!(chain.last().unwrap().id, top);
        assert!(chain[0].parent.is_none());
        assert!(chain_of(t.path(), &"f".repeat(64)).unwrap().is_none());
        assert_eq!(read_repository(t.path()).unwrap(), Path::new("/cvmfs/x"));
    }
}
