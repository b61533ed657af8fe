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
