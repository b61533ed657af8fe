//! DUCC images listed on demand (`cvmfs.ducc_listing=on-demand`, the
//! default): the store lists only the images asked for so far, so what
//! podman parses per command and what a first run costs grow with the images
//! used, not with the repository.
//!
//! containers/storage (patched, `drivers.ImageProvider`) asks the driver
//! when a lookup finds nothing: an image by name or ID (`store.Image`), a
//! layer by compressed or uncompressed digest (`podman pull` looking for a
//! blob it need not download). The driver then looks the key up in sorted
//! fixed-width tables kept per DUCC publication (a binary search, a few
//! `pread`s; a miss costs only that), adds what it found to `ducc-used`,
//! lists the used images again ([`relist`]: each from its line of
//! `ducc-catalog`, the same checks and files as the full listing), and
//! changes the last-write token of the store's lock files, which makes
//! containers/storage reload the store before it retries the lookup once.
//!
//! Per publication (an `Init` that finds DUCC's `images.json` changed), the
//! tables are rebuilt from DUCC's two index files (read and parsed whole,
//! no repository read per image, no file per image):
//!
//! * `ducc-catalog`: one JSON line per image (DUCC's entry and the
//!   diffIDs of its chain in DUCC's layer list) and one per layer (its
//!   entry in DUCC's layer list, once however many images share it);
//! * `ducc-ids`: image ID → offset and length of its catalog line;
//!   `ducc-layers`: diffID → its layer's line;
//! * `ducc-names`: sha256 of each name podman may ask for → image ID;
//! * `ducc-digests`: blob digest and diffID → layer ID (podman's);
//! * `ducc-index`: every layer (as with the full listing, for
//!   [`super::complete`]).
//!
//! Everything is written under an exclusive `flock` of `ducc.lock` (two
//! podmans adding images at once both end up listed), each file renamed
//! into place whole, `ducc-source` last (a crash in between is noticed by
//! the next `Init`, which rebuilds).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cvmfs_format::{digest_hex, is_hex64, StorePaths};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::incremental::{self, Known};
use super::lazy::{self, DuccLayer, IndexLine};
use super::{err, layer_id, read_capped, DuccImage, Phases, MAX_IMAGE_LAYERS};

/// One JSON line per image: DUCC's entry and its layer chain.
pub const CATALOG_FILE: &str = "ducc-catalog";
/// Image ID → catalog line.
pub const IDS_FILE: &str = "ducc-ids";
/// DiffID → catalog line of the layer (each layer once, however many
/// images share it).
pub const LAYERS_FILE: &str = "ducc-layers";
/// sha256(name) → image ID.
pub const NAMES_FILE: &str = "ducc-names";
/// Blob digest or diffID → layer ID.
pub const DIGESTS_FILE: &str = "ducc-digests";
/// What was asked for so far: `image <id>` and `layer <id>` lines.
pub const USED_FILE: &str = "ducc-used";
/// Serialises writers of an on-demand store.
const LOCK_FILE: &str = "ducc.lock";
/// The files `ducc-source` checks besides the listing's own.
pub(super) const TABLES: [&str; 6] = [
    CATALOG_FILE,
    IDS_FILE,
    LAYERS_FILE,
    NAMES_FILE,
    DIGESTS_FILE,
    USED_FILE,
];

/// Table lines: a 64-character key, a space, a 64-character value, newline.
const ROW: usize = 130;
/// Most layers one digest lookup adds (the same blob over other parents).
const MAX_DIGEST_MATCHES: usize = 16;
/// Largest catalog line read (an image of 1000 layers is about 300 KB).
const MAX_CATALOG_LINE: u64 = 4 << 20;
/// Shortest ID prefix looked up (podman's short IDs): a short hex word
/// (`cafe`) is a name to look up, not an image of the repository.
const MIN_ID_PREFIX: usize = 12;
/// Largest `ducc-used` read.
const MAX_USED_BYTES: u64 = 16 << 20;

/// What a lookup asks for (the C ABI's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// An image by name, full ID or unique ID prefix (12 or more).
    Image,
    /// Layers whose compressed blob has this digest.
    CompressedDigest,
    /// Layers whose diffID is this digest.
    UncompressedDigest,
}

/// What the catalog says of one image.
struct CatalogEntry {
    image: DuccImage,
    /// DUCC's layer list restricted to the image's chain, by diffID.
    layers: HashMap<String, DuccLayer>,
}

/// An image's line of `ducc-catalog`: its chain names its layers' lines.
#[derive(serde::Serialize, serde::Deserialize)]
struct ImageLine {
    image: DuccImage,
    /// The diffIDs of its chain in DUCC's layer list, bottom first.
    chain: Vec<String>,
}

/// Whether `root` is an on-demand store.
pub fn is_on_demand(root: &Path) -> bool {
    root.join(CATALOG_FILE).is_file()
}

/// `path` opened for writing in place (created if missing, never truncated).
fn open_in_place(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| err(format!("{}: {e}", path.display())))
}

/// An exclusive lock on the store's writers, held while the file is open.
fn lock(root: &Path) -> io::Result<fs::File> {
    let path = root.join(LOCK_FILE);
    let f = open_in_place(&path)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| err(format!("lock {}: {e}", path.display())))?;
    Ok(f)
}

/// The on-demand store of repository `repo` at `root` brought up to date
/// with DUCC's publication `source`: tables rebuilt, the images used so far
/// listed again. Returns the images left out, each with why.
pub(super) fn update(
    home: &Path,
    repo: &Path,
    root: &Path,
    only: &[String],
    source: &str,
    phases: &mut Phases,
) -> io::Result<Vec<String>> {
    let _held = lock(root)?;
    if incremental::is_up_to_date(root, source, &TABLES) {
        return Ok(Vec::new()); // another podman did it while we waited
    }
    let lines = phases.time("build the tables", || build_tables(repo, root, only))?;
    lazy::refresh_records(repo, &StorePaths::new(root), &lines)?;
    let used = read_used(root)?;
    let skipped = relist(home, repo, root, &used, phases)?;
    write_used(root, &used)?;
    incremental::write_source(root, source, &TABLES)?;
    bump_lock_tokens(root)?;
    Ok(skipped)
}

/// Rebuild the catalog and the tables from DUCC's two index files; returns
/// `ducc-index`'s lines (for the records written under an earlier
/// publication).
fn build_tables(repo: &Path, root: &Path, only: &[String]) -> io::Result<BTreeMap<String, String>> {
    let index = super::ducc_images_json(repo);
    let bytes = read_capped(&index, super::MAX_DUCC_INDEX_BYTES)?;
    let listed: Vec<DuccImage> = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("{}: not DUCC's image list: {e}", index.display())))?;
    let ducc_layers = lazy::read_ducc_layers(repo)?;
    let mut images: Vec<DuccImage> = listed
        .into_iter()
        .filter(|i| is_hex64(&i.id) && super::wanted(&i.names, only))
        .collect();
    images.sort_by(|a, b| a.id.cmp(&b.id));
    images.dedup_by(|a, b| a.id == b.id);
    let mut catalog = Vec::new();
    let (mut ids, mut names, mut digests) = (Vec::new(), Vec::new(), Vec::new());
    let mut layer_rows = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for image in images {
        let chain = chain_of(&image, &ducc_layers);
        index_chain(&image.id, &chain, &mut lines, &mut digests);
        for n in super::podman_names(&image.names) {
            names.push((super::hex(&Sha256::digest(n.as_bytes())), image.id.clone()));
        }
        for (diff, layer) in chain.iter().filter(|(d, _)| is_hex64(d)) {
            if !layer_rows.contains_key(diff) {
                let at = append_line(&mut catalog, &json!({"diff": diff, "layer": layer}))?;
                layer_rows.insert(diff.clone(), at);
            }
        }
        let chain = chain.into_iter().map(|(d, _)| d).collect();
        let id = image.id.clone();
        ids.push((id, append_line(&mut catalog, &ImageLine { image, chain })?));
    }
    incremental::replace_file(&root.join(CATALOG_FILE), &catalog)?;
    write_table(&root.join(IDS_FILE), ids)?;
    write_table(&root.join(LAYERS_FILE), layer_rows.into_iter().collect())?;
    write_table(&root.join(NAMES_FILE), names)?;
    write_table(&root.join(DIGESTS_FILE), digests)?;
    lazy::write_index(root, repo, &lines)?;
    Ok(lines)
}

/// Append `value` to the catalog as one line; returns its table value
/// (offset and length).
fn append_line(catalog: &mut Vec<u8>, value: &impl serde::Serialize) -> io::Result<String> {
    let text = serde_json::to_vec(value).map_err(err)?;
    let at = format!("{:032x}{:032x}", catalog.len(), text.len());
    catalog.extend_from_slice(&text);
    catalog.push(b'\n');
    Ok(at)
}

/// Image `image`'s chain in DUCC's layer list, bottom first, by diffID;
/// as far as the list gives it (an image it does not describe is converted
/// whole when used).
fn chain_of<'a>(
    image: &DuccImage,
    ducc_layers: &'a HashMap<String, DuccLayer>,
) -> Vec<(String, &'a DuccLayer)> {
    let mut chain = Vec::new();
    let mut next = image.layer.clone();
    while let Some(d) = next {
        let Some(l) = ducc_layers.get(&d) else { break };
        if chain.len() >= MAX_IMAGE_LAYERS {
            break;
        }
        next = l.parent.clone().filter(|p| !p.is_empty());
        chain.push((d, l));
    }
    chain.reverse();
    chain
}

/// The `ducc-index` lines and digest rows of image `image_id`'s chain.
fn index_chain(
    image_id: &str,
    chain: &[(String, &DuccLayer)],
    lines: &mut BTreeMap<String, String>,
    digests: &mut Vec<(String, String)>,
) {
    let mut parent: Option<String> = None;
    for (n, (diff, l)) in chain.iter().enumerate() {
        let blob = l.compressed.as_deref().and_then(|c| digest_hex(c).ok());
        let (Some(blob), true) = (blob, is_hex64(diff)) else {
            return;
        };
        let id = layer_id(parent.as_deref(), diff);
        let line = IndexLine {
            id: id.clone(),
            parent: parent.clone(),
            blob: blob.to_string(),
            diff: diff.clone(),
            image: image_id.to_string(),
        };
        // the image a layer tops when there is one (what a user runs)
        if n + 1 == chain.len() || !lines.contains_key(&id) {
            lines.insert(id.clone(), line.text().trim_end().to_string());
        }
        digests.push((blob.to_string(), id.clone()));
        digests.push((diff.clone(), id.clone()));
        parent = Some(id);
    }
}

/// Write a table: rows sorted, deduplicated, fixed width.
fn write_table(path: &Path, mut rows: Vec<(String, String)>) -> io::Result<()> {
    rows.sort();
    rows.dedup();
    let mut text = String::with_capacity(rows.len() * ROW);
    for (k, v) in rows.iter().filter(|(k, v)| k.len() == 64 && v.len() == 64) {
        text += k;
        text.push(' ');
        text += v;
        text.push('\n');
    }
    incremental::replace_file(path, text.as_bytes())
}

/// The rows (key, value) whose key is `key` (or starts with it, when
/// `prefix`), at most `max + 1` (so a caller can tell "more than `max`"),
/// by binary search in table `path`.
fn find_rows(
    path: &Path,
    key: &str,
    prefix: bool,
    max: usize,
) -> io::Result<Vec<(String, String)>> {
    let file = fs::File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let len = file.metadata()?.len();
    if len % ROW as u64 != 0 {
        return Err(err(format!("{}: truncated", path.display())));
    }
    let rows = len / ROW as u64;
    let mut buf = [0u8; ROW];
    let (mut lo, mut hi) = (0u64, rows);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        file.read_exact_at(&mut buf, mid * ROW as u64)?;
        if &buf[..64] < key.as_bytes() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut found = Vec::new();
    while lo < rows && found.len() <= max {
        file.read_exact_at(&mut buf, lo * ROW as u64)?;
        let k = &buf[..64];
        let hit = if prefix {
            k.starts_with(key.as_bytes())
        } else {
            k == key.as_bytes()
        };
        if !hit {
            break;
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        found.push((text(k), text(&buf[65..129])));
        lo += 1;
    }
    Ok(found)
}

/// The values of [`find_rows`].
fn values(rows: Vec<(String, String)>) -> Vec<String> {
    rows.into_iter().map(|(_, v)| v).collect()
}

/// What `key` names in the store at `root`: (image IDs, layer IDs).
fn look_up(root: &Path, what: Wanted, key: &str) -> io::Result<(Vec<String>, Vec<String>)> {
    let hex = key.strip_prefix("sha256:").unwrap_or(key);
    let is_hex = !hex.is_empty()
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match what {
        Wanted::Image => {
            let by_name = super::hex(&Sha256::digest(key.as_bytes()));
            let mut images = values(find_rows(&root.join(NAMES_FILE), &by_name, false, 1)?);
            if images.is_empty() && is_hex && (MIN_ID_PREFIX..=64).contains(&hex.len()) {
                // an ID, or a prefix naming exactly one image (`ducc-ids`
                // keeps offsets as values: the key is the ID)
                let ids = find_rows(&root.join(IDS_FILE), hex, hex.len() < 64, 1)?;
                if let [(id, _)] = ids.as_slice() {
                    images = vec![id.clone()];
                }
            }
            Ok((images, Vec::new()))
        }
        Wanted::CompressedDigest | Wanted::UncompressedDigest => {
            if !is_hex64(hex) {
                return Ok((Vec::new(), Vec::new()));
            }
            let layers = values(find_rows(
                &root.join(DIGESTS_FILE),
                hex,
                false,
                MAX_DIGEST_MATCHES,
            )?);
            Ok((Vec::new(), layers))
        }
    }
}

/// What was asked for so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Used {
    images: BTreeSet<String>,
    layers: BTreeSet<String>,
}

fn read_used(root: &Path) -> io::Result<Used> {
    let path = root.join(USED_FILE);
    let bytes = match read_capped(&path, MAX_USED_BYTES) {
        Ok(b) => b,
        Err(_) if !path.exists() => return Ok(Used::default()),
        Err(e) => return Err(e),
    };
    let mut used = Used::default();
    for line in String::from_utf8_lossy(&bytes).lines() {
        match line.split_once(' ') {
            Some(("image", id)) if is_hex64(id) => used.images.insert(id.to_string()),
            Some(("layer", id)) if is_hex64(id) => used.layers.insert(id.to_string()),
            _ => false,
        };
    }
    Ok(used)
}

fn write_used(root: &Path, used: &Used) -> io::Result<()> {
    let mut text = String::new();
    for id in &used.images {
        text += &format!("image {id}\n");
    }
    for id in &used.layers {
        text += &format!("layer {id}\n");
    }
    incremental::replace_file(&root.join(USED_FILE), text.as_bytes())
}

/// The catalog line table `table` gives for `key`, or `None`.
fn catalog_line(root: &Path, table: &str, key: &str) -> io::Result<Option<Vec<u8>>> {
    let Some((_, at)) = find_rows(&root.join(table), key, false, 1)?.pop() else {
        return Ok(None);
    };
    let parse = |s: &str| u64::from_str_radix(s, 16).ok();
    let (Some(offset), Some(len)) = (parse(&at[..32]), parse(&at[32..])) else {
        return Err(err(format!(
            "{}: bad row for {key}",
            root.join(table).display()
        )));
    };
    if len > MAX_CATALOG_LINE {
        return Err(err(format!("{key}: catalog line of {len} bytes")));
    }
    let path = root.join(CATALOG_FILE);
    let file = fs::File::open(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut text = vec![0u8; len as usize];
    file.read_exact_at(&mut text, offset)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    Ok(Some(text))
}

/// Image `id`'s catalog entry (its line, then its layers' lines), or `None`
/// when DUCC does not list it.
fn catalog_entry(root: &Path, id: &str) -> io::Result<Option<CatalogEntry>> {
    let bad = |what: &str, e: serde_json::Error| {
        err(format!(
            "{}: {what}: {e}",
            root.join(CATALOG_FILE).display()
        ))
    };
    let Some(text) = catalog_line(root, IDS_FILE, id)? else {
        return Ok(None);
    };
    let line: ImageLine = serde_json::from_slice(&text).map_err(|e| bad(id, e))?;
    if line.image.id != id || line.chain.len() > MAX_IMAGE_LAYERS {
        return Err(err(format!(
            "{}: bad line for {id}",
            root.join(CATALOG_FILE).display()
        )));
    }
    #[derive(serde::Deserialize)]
    struct LayerLine {
        diff: String,
        layer: DuccLayer,
    }
    let mut layers = HashMap::new();
    for diff in &line.chain {
        let Some(text) = catalog_line(root, LAYERS_FILE, diff)? else {
            break; // the chain stops there, as DUCC's layer list did
        };
        let l: LayerLine = serde_json::from_slice(&text).map_err(|e| bad(diff, e))?;
        if &l.diff == diff {
            layers.insert(l.diff, l.layer);
        }
    }
    Ok(Some(CatalogEntry {
        image: line.image,
        layers,
    }))
}

/// List the used images (and layers looked up by digest) again from the
/// catalog: an image whose catalog line is as at the last listing is
/// listed verbatim from `ducc-listed`, others as the full listing does.
fn relist(
    home: &Path,
    repo: &Path,
    root: &Path,
    used: &Used,
    phases: &mut Phases,
) -> io::Result<Vec<String>> {
    let mut before = incremental::read_listed(root);
    let before_ids = before.keys().cloned().collect();
    let (mut listed, mut converted, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let mut infos = HashMap::new();
    for id in &used.images {
        let Some(entry) = catalog_entry(root, id)? else {
            continue; // DUCC no longer lists it
        };
        let fingerprint = lazy::fingerprint(&entry.image, &entry.layers);
        let known = before
            .get(id)
            .filter(|k| Some(&k.fingerprint) == fingerprint.as_ref());
        if known.is_some() {
            if let Some(known) = before.remove(id) {
                listed.push(lazy::Listed {
                    id: id.clone(),
                    manifest: None,
                    known,
                });
                continue;
            }
        }
        let size = before.get(id).map(|k| k.config_size);
        let image = &entry.image;
        match lazy::listed_image(repo, image, &entry.layers, size, fingerprint) {
            Ok(l) => listed.push(l),
            Err(_) => match super::image_entry(repo, image, &mut infos) {
                Ok(e) => converted.push(e),
                Err(e) => skipped.push(format!("image {id} ({}): {e}", image.names.join(", "))),
            },
        }
    }
    let layers = layer_chains(repo, root, used, &mut skipped)?;
    let listing = super::Listing {
        images: &converted,
        listed,
        on_demand_layers: Some(layers),
    };
    let before = incremental::Before {
        ids: before_ids,
        changed: before,
    };
    let store = StorePaths::new(root);
    super::write_store(home, repo, &store, listing, &before, phases)?;
    Ok(skipped)
}

/// The `layers.json` entries of the chains of the layers looked up by
/// digest (each from an image using it, not listed itself).
fn layer_chains(
    repo: &Path,
    root: &Path,
    used: &Used,
    skipped: &mut Vec<String>,
) -> io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for id in &used.layers {
        let Some(line) = lazy::index_line(root, id)? else {
            continue;
        };
        let Some(entry) = catalog_entry(root, &line.image)? else {
            continue;
        };
        match lazy::listed_image(repo, &entry.image, &entry.layers, None, None) {
            Ok(l) => {
                let known: Known = l.known;
                let upto = known.layers.iter().position(|(lid, _, _)| lid == id);
                let Some(upto) = upto else { continue };
                out.extend(
                    known.layers[..=upto]
                        .iter()
                        .map(|(i, e, _)| (i.clone(), e.clone())),
                );
            }
            Err(e) => skipped.push(format!("layer {id} (image {}): {e}", line.image)),
        }
    }
    Ok(out)
}

/// Give the store's lock files a new last-write token: containers/storage
/// reloads a read-only store whose token changed (its `lockfile`
/// `ModifiedSince`), written in place as its `RecordWrite` does (the lock
/// file is kept open by readers, a renamed file would not be seen).
fn bump_lock_tokens(root: &Path) -> io::Result<()> {
    let store = StorePaths::new(root);
    for path in [store.layers_lock(), store.images_lock()] {
        let mut token = [0u8; 64];
        let mut random = fs::File::open("/dev/urandom")?;
        random.read_exact(&mut token)?;
        let f = open_in_place(&path)?;
        f.write_all_at(&token, 0)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Add what `key` names in the on-demand store at `root` to its listing.
/// True when the store lists it now (the caller's lookup is worth
/// retrying: added now, or by another podman after the caller read the
/// store); false when the store does not know the key.
pub fn provide(root: &Path, what: Wanted, key: &str) -> io::Result<bool> {
    if key.len() > super::MAX_NAME_LEN || !is_on_demand(root) {
        return Ok(false);
    }
    let (images, layers) = look_up(root, what, key)?;
    if images.is_empty() && layers.is_empty() {
        return Ok(false);
    }
    let _held = lock(root)?;
    let mut used = read_used(root)?;
    let before = used.clone();
    used.images.extend(images);
    used.layers.extend(layers);
    if used == before {
        // listed already: by another podman since this one read the store
        // (its retry then sees it), or the lookup missed for another reason
        // (one retry, which fails as it would have)
        return Ok(true);
    }
    let source = incremental::recorded_source(root)
        .ok_or_else(|| err(format!("{}: no ducc-source", root.display())))?;
    let repo = lazy::read_repository(root)?;
    let home = home_of(root)?;
    let skipped = relist(&home, &repo, root, &used, &mut Phases::default())?;
    for s in &skipped {
        eprintln!("cvmfs: DUCC repository {}: left out {s}", repo.display());
    }
    write_used(root, &used)?;
    incremental::write_source(root, &source, &TABLES)?;
    bump_lock_tokens(root)?;
    Ok(true)
}

/// The driver home of store `root` (`<home>/ducc/<name>`).
fn home_of(root: &Path) -> io::Result<PathBuf> {
    root.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| err(format!("{}: not a store in a driver home", root.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_find_keys_and_prefixes() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("table");
        let rows: Vec<(String, String)> = (0..40u8)
            .map(|i| {
                (
                    format!("{:02x}", i.wrapping_mul(37)).repeat(32),
                    "v".repeat(64),
                )
            })
            .chain([("25".repeat(32), "w".repeat(64))])
            .collect();
        write_table(&path, rows).unwrap();
        let key = format!("{:02x}", 5u8 * 37).repeat(32);
        assert_eq!(
            find_rows(&path, &key, false, 4).unwrap(),
            vec![(key.clone(), "v".repeat(64))]
        );
        let both = find_rows(&path, &"25".repeat(32), false, 4).unwrap();
        assert_eq!(both.len(), 2, "equal keys are all found");
        assert!(find_rows(&path, &"ff".repeat(32), false, 4)
            .unwrap()
            .is_empty());
        let by_prefix = find_rows(&path, "b9b9", true, 4).unwrap();
        assert_eq!(values(by_prefix.clone()), vec!["v".repeat(64)]);
        assert_eq!(
            by_prefix[0].0,
            "b9".repeat(32),
            "a prefix gives the whole key"
        );
        assert!(find_rows(&path, "0000001", true, 4).unwrap().is_empty());
    }
}
