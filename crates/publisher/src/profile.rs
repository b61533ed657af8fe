//! Publishing, checking and removing start-up profiles (issue 16): the files
//! an image's container read first, which the driver prefetches on the first
//! cold start of every node. The format is `cvmfs_format::profile`; a profile
//! is stored at `podmanStore/cvmfs/profiles/<top layer id>.json`.
//!
//! A profile is hostile input until checked: [`read_profile`] bounds and
//! parses it, [`publish_profile`] also checks it against the store (its image
//! is published, its top layer is that image's, every layer it names is one of
//! the image's) and writes it atomically under the publisher lock, which `gc`
//! holds too, so a profile is never written for an image `gc` is removing.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use cvmfs_format::paths::{FLAT_DIR, LAYERFS, LAYERS_DIR};
use cvmfs_format::profile::{self, Profile, PROFILES_DIR, PROFILE_MAX_BYTES};
use serde_json::Value;

use crate::fsx::{self, Lock};
use crate::podman::{read_index, StorePaths};
use crate::{Error, Result};

/// Where `store` keeps the profile of the image whose top layer is `top`.
pub fn profile_file(store: &StorePaths, top: &str) -> PathBuf {
    profile::profile_path(&store.root, top)
}

/// Read and validate a profile file (a regular file, not a symlink, at most
/// `PROFILE_MAX_BYTES`); errors name the file.
pub fn read_profile(path: &Path) -> Result<Profile> {
    let bytes = fsx::read_record(path, PROFILE_MAX_BYTES).map_err(|e| Error::io(path, e))?;
    profile::parse(&bytes).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

/// The layer chain of image `image` in `store`, top layer first.
pub fn image_chain(store: &StorePaths, image: &str) -> Result<Vec<String>> {
    let images = read_index(&store.images_json())?;
    let img = images
        .iter()
        .find(|i| i["id"].as_str() == Some(image))
        .ok_or_else(|| {
            Error::msg(format!(
                "image {image} is not published in {}",
                store.root.display()
            ))
        })?;
    let top = img["layer"]
        .as_str()
        .ok_or_else(|| Error::msg(format!("image {image}: no top layer in images.json")))?;
    let layers = read_index(&store.layers_json())?;
    let parents: HashMap<&str, Option<&str>> = layers
        .iter()
        .filter_map(|l| Some((l["id"].as_str()?, l["parent"].as_str())))
        .collect();
    let mut chain = Vec::new();
    let mut cur = Some(top);
    while let Some(id) = cur {
        if chain.iter().any(|c| c == id) || chain.len() > profile::MAX_LAYERS {
            return Err(Error::msg(format!(
                "image {image}: layer chain loops at {id}"
            )));
        }
        chain.push(id.to_string());
        cur = match parents.get(id) {
            Some(p) => *p,
            None => {
                return Err(Error::msg(format!(
                    "image {image}: layer {id} is not in layers.json"
                )))
            }
        };
    }
    Ok(chain)
}

/// Why `p` does not fit the image it names in `store`, if it does not.
fn mismatch(store: &StorePaths, p: &Profile) -> Result<Option<String>> {
    let chain = image_chain(store, &p.image)?;
    if chain[0] != p.top_layer {
        return Ok(Some(format!(
            "recorded for top layer {}, but image {} has top layer {}",
            p.top_layer, p.image, chain[0]
        )));
    }
    let ours: HashSet<&str> = chain.iter().map(String::as_str).collect();
    Ok(p.layers
        .iter()
        .enumerate()
        .find(|(_, l)| !ours.contains(l.as_str()))
        .map(|(i, l)| format!("layers[{i}] {l} is not a layer of image {}", p.image)))
}

/// Publish profile `p` into `store` (a repository's `podmanStore`): check it
/// fits the published image, then write it atomically under the publisher
/// lock (replacing an earlier profile of the same image). Returns its path.
pub fn publish_profile(store: &StorePaths, p: &Profile) -> Result<PathBuf> {
    let bytes = p
        .to_json()
        .map_err(|e| Error::msg(format!("image {}: {e}", p.image)))?;
    let _publisher = Lock::publisher(&store.publisher_lock())?;
    if let Some(why) = mismatch(store, p)? {
        return Err(Error::msg(format!("profile of image {}: {why}", p.image)));
    }
    let dest = profile_file(store, &p.top_layer);
    // The directory must be a real one inside the store (no symlink planted
    // on the way would be written through).
    let dir = dest.parent().expect("profiles dir");
    fsx::check_real_dirs(&store.root, dir)?;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    fsx::write_atomic(&dest, &bytes, 0o644)?;
    Ok(dest)
}

/// What `check` found about the profiles of `store`.
#[derive(Debug, Default)]
pub struct ProfileCheck {
    pub profiles: usize,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// Validate every profile of `store` (the `podmanStore` of repository `repo`):
/// name, format, image and layers, as [`publish_profile`] requires; entries
/// naming files their layer no longer has are a note (a stale profile costs
/// bandwidth only).
pub fn check_profiles(store: &StorePaths, repo: &Path) -> ProfileCheck {
    let mut out = ProfileCheck::default();
    let dir = store.root.join("cvmfs").join(PROFILES_DIR);
    let Ok(rd) = fs::read_dir(&dir) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(fsx::TMP_PREFIX) {
            continue; // reported with every other temporary
        }
        out.profiles += 1;
        let key = name
            .strip_suffix(".json")
            .filter(|k| profile::is_layer_id(k));
        let Some(key) = key else {
            out.problems.push(format!(
                "{}: not a profile name (<top layer id>.json)",
                path.display()
            ));
            continue;
        };
        let p = match read_profile(&path) {
            Ok(p) => p,
            Err(e) => {
                out.problems.push(e.to_string());
                continue;
            }
        };
        if p.top_layer != key {
            out.problems.push(format!(
                "{}: names top layer {}, but is stored under {key}",
                path.display(),
                p.top_layer
            ));
            continue;
        }
        match mismatch(store, &p) {
            Ok(None) => {}
            Ok(Some(why)) => out.problems.push(format!("{}: {why}", path.display())),
            Err(e) => out.problems.push(format!(
                "{}: {e} (gc removes profiles of removed images)",
                path.display()
            )),
        }
        let missing = missing_files(store, repo, &p);
        if missing > 0 {
            out.notes.push(format!(
                "{}: {missing} of {} entries name files their layer does not have (stale profile: costs bandwidth only)",
                path.display(),
                p.entries.len()
            ));
        }
    }
    out
}

/// How many entries of `p` name a file that is not in its layer's directory
/// (read from the layer's record; layers without one count as missing).
fn missing_files(store: &StorePaths, repo: &Path, p: &Profile) -> usize {
    let dirs: Vec<Option<PathBuf>> = p
        .layers
        .iter()
        .map(|id| {
            let rec = fsx::read_record(&store.record(id), 4 << 20).ok()?;
            let v: Value = serde_json::from_slice(&rec).ok()?;
            let rel = v["path"].as_str()?;
            profile::check_path(rel).ok()?;
            Some(repo.join(rel))
        })
        .collect();
    p.entries
        .iter()
        .filter(|e| match &dirs[e.layer] {
            // lstat only: a symlink is an entry like any other here.
            Some(d) => fs::symlink_metadata(d.join(&e.path)).is_err(),
            None => true,
        })
        .count()
}

/// The profile path `gc` removes with layer `id` (the profile's key is the
/// top layer: when that layer record goes, no image has that stack any more).
pub fn profile_of_layer(store: &StorePaths, id: &str) -> Option<PathBuf> {
    profile::is_layer_id(id).then(|| profile_file(store, id))
}

/// Copy the profile of top layer `top` from `src` to `dst` (for `enable`),
/// validated on the way; nothing when `src` has none.
pub fn copy_profile(src: &StorePaths, dst: &StorePaths, top: &str) -> Result<()> {
    let Some(from) = profile_of_layer(src, top) else {
        return Ok(());
    };
    if fs::symlink_metadata(&from).is_err() {
        return Ok(());
    }
    let p = read_profile(&from)?;
    let bytes = p
        .to_json()
        .map_err(|e| Error::msg(format!("{}: {e}", from.display())))?;
    let dest = profile_file(dst, top);
    let dir = dest.parent().expect("profiles dir");
    fsx::check_real_dirs(&dst.root, dir)?;
    fsx::write_atomic(&dest, &bytes, 0o644)
}

/// Most bytes of a fetch log read by [`profile_from_fetch_log`].
pub const FETCH_LOG_MAX_BYTES: u64 = 256 << 20;

/// What [`profile_from_fetch_log`] made of a log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FromLog {
    /// Lines that named a file of the image's layers or flat tree.
    pub used: usize,
    /// Lines about anything else (records, other images, malformed lines).
    pub ignored: usize,
}

/// Where the files of one image live: its layer directories by blob digest,
/// its chain (top first) and flat tree name.
struct ImageFiles {
    image: String,
    chain: Vec<String>,
    /// compressed digest hex -> layer ID (in this image's chain)
    by_blob: HashMap<String, String>,
    /// layer ID -> its directory, top first
    dirs: Vec<(String, PathBuf)>,
}

fn image_files(store: &StorePaths, repo: &Path, name_or_id: &str) -> Result<ImageFiles> {
    let images = read_index(&store.images_json())?;
    let image = images
        .iter()
        .find(|i| {
            i["id"].as_str() == Some(name_or_id)
                || i["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|x| x == name_or_id))
        })
        .and_then(|i| i["id"].as_str())
        .ok_or_else(|| {
            Error::msg(format!(
                "no image {name_or_id} in {}",
                store.images_json().display()
            ))
        })?
        .to_string();
    let chain = image_chain(store, &image)?;
    let layers = read_index(&store.layers_json())?;
    let mut by_blob = HashMap::new();
    let mut dirs = Vec::new();
    for id in &chain {
        let blob = layers
            .iter()
            .find(|l| l["id"].as_str() == Some(id))
            .and_then(|l| l["compressed-diff-digest"].as_str())
            .and_then(|d| crate::digest_hex(d).ok());
        if let Some(hex) = blob {
            by_blob.insert(hex.to_string(), id.clone());
            dirs.push((id.clone(), cvmfs_format::RepoPaths::new(repo).layerfs(hex)));
        }
    }
    Ok(ImageFiles {
        image,
        chain,
        by_blob,
        dirs,
    })
}

impl ImageFiles {
    /// The layer serving repository path `rel` (relative to the repository
    /// root) and the file's path in it: a `.layers/XX/<d>/layerfs/…` path of
    /// one of the image's layers, or a `.flat/XX/<c>/…` path of the image's
    /// flat tree, served by the topmost layer that has the file.
    fn locate(&self, rel: &str) -> Option<(String, String)> {
        let parts: Vec<&str> = rel.splitn(5, '/').collect();
        match parts.as_slice() {
            [LAYERS_DIR, xx, d, LAYERFS, path] if d.starts_with(xx) => {
                let id = self.by_blob.get(*d)?;
                profile::check_path(path).ok()?;
                Some((id.clone(), path.to_string()))
            }
            [FLAT_DIR, xx, c, first, rest] if c.starts_with(xx) && *c == self.image => {
                let path = format!("{first}/{rest}");
                self.topmost(&path)
            }
            [FLAT_DIR, xx, c, path] if c.starts_with(xx) && *c == self.image => self.topmost(path),
            _ => None,
        }
    }

    fn topmost(&self, path: &str) -> Option<(String, String)> {
        profile::check_path(path).ok()?;
        self.dirs
            .iter()
            .find(|(_, d)| fs::symlink_metadata(d.join(path)).is_ok())
            .map(|(id, _)| (id.clone(), path.to_string()))
    }
}

/// Build image `name_or_id`'s profile from a fetch log: one line per object
/// fetched, in the order of the fetches, `<bytes>\t<chunk>\t<path>` (chunk
/// -1: a whole file; n: chunk n of `chunk_size` bytes), as `bench/fuselat
/// -log` writes it while a container of the image runs on a view of the
/// repository. `source_root` is the directory the view served (the
/// repository's files); paths outside the image's layers and flat tree are
/// ignored, so one log of a whole run may hold anything else.
pub fn profile_from_fetch_log(
    store: &StorePaths,
    repo: &Path,
    source_root: &Path,
    name_or_id: &str,
    log: &[u8],
    chunk_size: u64,
) -> Result<(Profile, FromLog)> {
    use cvmfs_format::profile::{Entry, Range, MAX_ENTRIES, MAX_RANGES_PER_ENTRY};
    let img = image_files(store, repo, name_or_id)?;
    let mut stats = FromLog::default();
    let mut layers: Vec<String> = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut index: HashMap<(usize, String), usize> = HashMap::new();
    let text = String::from_utf8_lossy(log);
    for line in text.lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(bytes), Some(chunk), Some(path)) = (f.next(), f.next(), f.next()) else {
            stats.ignored += 1;
            continue;
        };
        let (Ok(bytes), Ok(chunk)) = (bytes.parse::<u64>(), chunk.parse::<i64>()) else {
            stats.ignored += 1;
            continue;
        };
        let located = Path::new(path)
            .strip_prefix(source_root)
            .ok()
            .and_then(|r| r.to_str())
            .and_then(|r| img.locate(r));
        let offset = if chunk < 0 {
            Some(0)
        } else {
            (chunk as u64).checked_mul(chunk_size)
        };
        let sane = offset.and_then(|o| o.checked_add(bytes)).is_some();
        let Some((id, rel)) = located.filter(|_| bytes > 0 && sane) else {
            stats.ignored += 1;
            continue;
        };
        let offset = offset.expect("checked");
        let li = match layers.iter().position(|l| *l == id) {
            Some(i) => i,
            None => {
                layers.push(id);
                layers.len() - 1
            }
        };
        let ei = match index.get(&(li, rel.clone())) {
            Some(&i) => i,
            None if entries.len() >= MAX_ENTRIES => {
                stats.ignored += 1;
                continue;
            }
            None => {
                index.insert((li, rel.clone()), entries.len());
                entries.push(Entry {
                    layer: li,
                    path: rel,
                    ranges: Vec::new(),
                });
                entries.len() - 1
            }
        };
        let ranges = &mut entries[ei].ranges;
        let range = Range(offset, bytes.min(profile::MAX_RANGE_LEN));
        stats.used += 1;
        if ranges.contains(&range) {
            continue;
        }
        if ranges.len() >= MAX_RANGES_PER_ENTRY {
            // one range from the first byte listed to the last
            let start = ranges
                .iter()
                .map(|r| r.offset())
                .min()
                .unwrap_or(0)
                .min(offset);
            let end = ranges
                .iter()
                .map(|r| r.offset() + r.len())
                .max()
                .unwrap_or(0)
                .max(offset + range.len());
            *ranges = vec![Range(start, (end - start).min(profile::MAX_RANGE_LEN))];
        } else {
            ranges.push(range);
        }
    }
    let p = Profile {
        version: profile::PROFILE_VERSION,
        image: img.image,
        top_layer: img.chain[0].clone(),
        layers,
        entries,
    };
    p.validate()
        .map_err(|e| Error::msg(format!("profile built from the log: {e}")))?;
    Ok((p, stats))
}
