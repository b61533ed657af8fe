//! DUCC repositories as they are: a read-only image store synthesised in the
//! driver home from the metadata DUCC itself writes, so that a user with only
//! a client mount runs DUCC-published images by name, without anyone writing
//! our records into the repository.
//!
//! DUCC (CernVM-FS's container conversion tool) writes, besides the unpacked
//! layers `.layers/XX/<d>/layerfs`, a legacy image store for the *overlay*
//! driver, `podmanStore/overlay-images/`: an `images.json` naming every
//! converted image (`id` = config digest hex, `names`), each image's config
//! under `overlay-images/<id>/=base64("sha256:<id>")`, its manifest copy at
//! `.metadata/<name>/manifest.json`, and per layer
//! `.layers/XX/<d>/.metadata/layers.json` (diffID, diff size). Pointing podman
//! at it with the `cvmfs` driver fails (`mkdir …/podmanStore/cvmfs-layers:
//! read-only file system`): containers/storage looks for `cvmfs-images` and
//! `cvmfs-layers`, and DUCC's layer IDs (the diffIDs) are not the IDs
//! containers/image computes, so a pull would never reuse them.
//!
//! For each repository named in `cvmfs.ducc_repositories`, [`add_ducc_stores`]
//! (run at `Init`) builds under `<home>/ducc/<repo>-<source>/` a read-only
//! store for this driver (below for an image converted at once; most are
//! listed from DUCC's indexes and completed on first use, see [`lazy`]):
//!
//! * `cvmfs-images/images.json` and each image's big data (config, manifest);
//! * `cvmfs-layers/layers.json` with containers/image's layer IDs (base =
//!   diffID, others `sha256(parent + "+" + diffID)`), compressed and
//!   uncompressed digests and sizes, so `podman pull` of a DUCC image finds
//!   every layer and downloads none;
//! * `cvmfs/layers/<id>/layer.json`, `"cvmfs"` records pointing at DUCC's
//!   `layerfs` with `"whiteouts":"oci-raw"` (the raw markers are honoured
//!   exactly as for any raw CVMFS layer) and `"ownership":"lost"` (DUCC
//!   ingests without owners; the driver reports it in `Metadata`/`Status`).
//!
//! A DUCC `podmanStore` listed as an additional image store (`imagestore`,
//! storage.conf `additionalimagestores`, as DUCC's users configure it for the
//! overlay driver) is recognised (`overlay-images/images.json`, no
//! `cvmfs-layers`) and taken as a DUCC repository the same way.
//!
//! It is then one more additional image store (the driver's
//! `AdditionalImageStores`), and the repository one more configured
//! repository. There is one store per repository and `cvmfs.ducc_images`
//! patterns (`<home>/ducc/<repo>-<patterns>/`), brought up to date in place
//! when DUCC publishes ([`incremental`]): `ducc-source` names the
//! publication it reflects (DUCC's `images.json` size and modification
//! time, the repository revision `user.revision`), so an unchanged
//! publication costs one `stat` and one `getxattr` of the repository and a
//! few local `stat`s; after a publication only new images cost repository
//! reads and writes, images DUCC describes as before are listed verbatim.
//! Every file is renamed into place whole (`Store::recover` removes staging
//! leftovers).
//!
//! Everything read from the repository is hostile: sizes are capped, IDs and
//! digests checked, the config must hash to its ID, the manifest must name
//! that config and as many layers as the config has diffIDs, each layer's
//! diffID must agree with DUCC's `layers.json`, names are plain relative
//! paths. An image failing any check is left out with a warning naming it;
//! the others are listed. The synthesis runs on a helper thread bounded by
//! `cvmfs.repository_timeout`; when it fails, the last store built for the
//! repository (if any) is used.
//!
//! Cost: by default (`cvmfs.ducc_listing=on-demand`, [`ondemand`]) the
//! store lists only the images containers/storage asked for, found in
//! sorted tables kept per DUCC publication, so what podman parses per
//! command grows with the images used. With `cvmfs.ducc_listing=all`
//! images DUCC's layer list describes are listed without a repository read
//! each and completed when first used ([`lazy`]); the first listing
//! creates a directory per image, and the listing names every image (or
//! those matching `cvmfs.ducc_images`), so what podman parses per command
//! grows with the repository (as with DUCC's own store); see
//! docs/cvmfs-layers.md for the numbers.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use cvmfs_format::record::{CvmfsRecord, Ownership, Whiteouts};
use cvmfs_format::{
    digest_hex, is_hex64, sha256_digest, LayerInfo, Manifest, RepoPaths, StorePaths,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::layout::with_progress;
use crate::options::Options;

mod incremental;
mod lazy;
mod ondemand;
pub use lazy::{complete, read_repository, DUCC_LAYERS_DIR, INDEX_FILE, REPOSITORY_FILE};
pub use ondemand::{Wanted, CATALOG_FILE, NAMES_FILE, USED_FILE};

/// DUCC's legacy overlay image store inside `podmanStore/`.
pub const DUCC_IMAGES_DIR: &str = "overlay-images";
/// Where the synthesised stores live in the driver home.
pub const DUCC_HOME_DIR: &str = "ducc";
/// Where `cvmfs-podman owners` leaves the owners of DUCC layers, in the
/// driver home, by blob digest.
pub const OWNERS_DIR: &str = "ducc-owners";
/// Largest DUCC `images.json` read (some 100 000 images).
pub const MAX_DUCC_INDEX_BYTES: u64 = 64 << 20;
/// Largest image config read.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// Largest per-layer `layers.json` read.
pub const MAX_LAYER_INFO_BYTES: u64 = 64 << 10;
/// Most layers an image may have.
pub const MAX_IMAGE_LAYERS: usize = 1000;
/// Longest image name accepted.
pub const MAX_NAME_LEN: usize = 512;

const FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const COMPRESSION_GZIP: i64 = 2;
const COMPRESSION_ZSTD: i64 = 4;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Synthesise (or reuse) a store for every DUCC repository of `opts` and add
/// it to `opts.image_stores`, the repository to `opts.repositories`.
/// Problems are reported through `warn` and never fail `Init`: podman stays
/// usable for everything else.
pub fn add_ducc_stores(home: &Path, opts: &mut Options, warn: &dyn Fn(&str)) {
    adopt_ducc_image_stores(opts);
    for repo in opts.ducc_repositories.clone() {
        if !opts.repositories.contains(&repo) {
            opts.repositories.push(repo.clone());
        }
        let (h, r, only) = (home.to_path_buf(), repo.clone(), opts.ducc_images.clone());
        let all = opts.ducc_listing_all;
        let limit = opts.repository_timeout;
        let progress = |waited: std::time::Duration| {
            warn(&format!(
                "cvmfs: reading DUCC's image list in {}: {}s so far (limit {}s, cvmfs.repository_timeout)",
                repo.display(),
                waited.as_secs(),
                limit.as_secs()
            ))
        };
        let built = with_progress(limit, progress, move || match all {
            true => synthesise(&h, &r, &only),
            false => synthesise_on_demand(&h, &r, &only),
        });
        let store = match built {
            Some(Ok(s)) => Some(s.store),
            Some(Err(e)) => fallback(home, &repo, &e.to_string(), warn),
            None => fallback(home, &repo, "no answer within the repository timeout", warn),
        };
        if let Some(s) = store {
            if !opts.image_stores.contains(&s) {
                opts.image_stores.push(s.clone());
                opts.ducc_stores.push(s);
            }
        }
    }
}

/// The owners of DUCC blob `blob_hex` restored from the registry
/// (`ownership.json` format), in driver home `home`.
pub fn owners_cache_file(home: &Path, blob_hex: &str) -> PathBuf {
    home.join(OWNERS_DIR)
        .join(format!("{blob_hex}.ownership.json"))
}

/// The restored-owners file for a layer of synthesised store `store`
/// (`<home>/ducc/<name>`) whose files are `content_dir`
/// (`.layers/XX/<blob>/layerfs`).
pub fn owners_cache_for(store: &Path, content_dir: &Path) -> Option<PathBuf> {
    let home = store.parent()?.parent()?;
    let blob = content_dir.parent()?.file_name()?.to_str()?;
    is_hex64(blob).then(|| owners_cache_file(home, blob))
}

/// Whether image store `store` is DUCC's own (`<repo>/podmanStore` with
/// `overlay-images/images.json` and no `cvmfs-layers`).
pub fn is_ducc_image_store(store: &Path) -> bool {
    let Some(repo) = store.parent() else {
        return false;
    };
    // our stores answer the first question (one lookup, which
    // containers/storage makes next anyway)
    RepoPaths::new(repo).store().root == store
        && !StorePaths::new(store).layers_dir().exists()
        && ducc_images_json(repo).is_file()
}

/// A DUCC `podmanStore` listed as an additional image store (what DUCC's
/// users configure for the overlay driver) would make containers/storage
/// fail (it creates `cvmfs-layers` there): take its repository as a DUCC
/// repository instead. Looked at on a helper thread, bounded by the
/// repository timeout; a store that does not answer is left as it is.
fn adopt_ducc_image_stores(opts: &mut Options) {
    let mut kept = Vec::new();
    for store in std::mem::take(&mut opts.image_stores) {
        let s = store.clone();
        let ducc = with_progress(
            opts.repository_timeout,
            |_| {},
            move || Ok(is_ducc_image_store(&s)),
        );
        match (ducc, store.parent()) {
            (Some(Ok(true)), Some(repo)) => {
                if !opts.ducc_repositories.iter().any(|r| r == repo) {
                    opts.ducc_repositories.push(repo.to_path_buf());
                }
            }
            _ => kept.push(store),
        }
    }
    opts.image_stores = kept;
}

fn fallback(home: &Path, repo: &Path, why: &str, warn: &dyn Fn(&str)) -> Option<PathBuf> {
    let last = newest_generation(&home.join(DUCC_HOME_DIR), &repo_key(repo));
    warn(&format!(
        "cvmfs: DUCC repository {}: cannot list its images ({why}); {}",
        repo.display(),
        match &last {
            Some(s) => format!("using the store built earlier, {}", s.display()),
            None => "its images are not available".to_string(),
        }
    ));
    last
}

/// What one synthesis produced.
#[derive(Debug, Clone)]
pub struct Synthesis {
    /// The store root (an additional image store).
    pub store: PathBuf,
    /// Whether it was built now (false: an earlier build was reused).
    pub built: bool,
    /// Images left out, each with why (only when built now).
    pub skipped: Vec<String>,
    /// Where the time went, phase by phase (only when built now).
    pub phases: Phases,
}

/// Wall time per phase of a store build, in order (for measurements).
#[derive(Debug, Clone, Default)]
pub struct Phases(pub Vec<(&'static str, std::time::Duration)>);

impl Phases {
    /// Run `f` as phase `name`.
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let start = std::time::Instant::now();
        let out = f();
        self.0.push((name, start.elapsed()));
        out
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(n, d)| format!("{n} {:.3}s", d.as_secs_f64()))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

fn err(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(what.to_string())
}

fn short_hash(s: &[u8]) -> String {
    hex(&Sha256::digest(s))[..16].to_string()
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(b.len() * 2);
    for x in b {
        out.push(DIGITS[usize::from(x >> 4)] as char);
        out.push(DIGITS[usize::from(x & 15)] as char);
    }
    out
}

fn repo_key(repo: &Path) -> String {
    short_hash(repo.as_os_str().as_encoded_bytes())
}

/// DUCC's `images.json` of a repository.
pub fn ducc_images_json(repo: &Path) -> PathBuf {
    RepoPaths::new(repo)
        .store()
        .root
        .join(DUCC_IMAGES_DIR)
        .join("images.json")
}

/// What identifies the DUCC publication the store is built from: the
/// repository revision (CVMFS magic xattr, absent elsewhere) and DUCC's
/// `images.json` size and modification time.
fn source_key(repo: &Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let index = ducc_images_json(repo);
    let st = fs::metadata(&index).map_err(|e| err(format!("{}: {e}", index.display())))?;
    let mut revision = vec![0u8; 64];
    let revision = match rustix::fs::getxattr(repo, "user.revision", &mut revision) {
        Ok(n) => String::from_utf8_lossy(&revision[..n]).into_owned(),
        Err(_) => String::new(),
    };
    Ok(format!(
        "rev={revision} size={} mtime={}.{}",
        st.len(),
        st.mtime(),
        st.mtime_nsec()
    ))
}

/// Whether image `names` are wanted: every image without patterns, else one
/// whose name is a pattern, or starts with a pattern's part before a final `*`.
pub fn wanted(names: &[String], patterns: &[String]) -> bool {
    patterns.is_empty()
        || names.iter().any(|n| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => n.starts_with(prefix),
                None => n == p,
            })
        })
}

/// The store of DUCC repository `repo` under `<home>/ducc/`, listing the
/// images [`wanted`] by `only`: as it is when it reflects DUCC's current
/// publication, else brought up to date in place.
pub fn synthesise(home: &Path, repo: &Path, only: &[String]) -> io::Result<Synthesis> {
    let patterns = format!("only={}", only.join(","));
    synthesise_store(home, repo, &patterns, &[], |store, source, phases| {
        let skipped = update_store(home, repo, store, only, phases)?;
        phases.time("write ducc-source", || {
            incremental::write_source(store, source, &[])
        })?;
        Ok(skipped)
    })
}

/// The on-demand store of DUCC repository `repo` under `<home>/ducc/`
/// ([`ondemand`]): its tables brought up to date with DUCC's current
/// publication, listing only the images asked for so far.
pub fn synthesise_on_demand(home: &Path, repo: &Path, only: &[String]) -> io::Result<Synthesis> {
    let patterns = format!("only={};listing=on-demand", only.join(","));
    synthesise_store(
        home,
        repo,
        &patterns,
        &ondemand::TABLES,
        |store, source, phases| ondemand::update(home, repo, store, only, source, phases),
    )
}

/// The store of `repo` for `patterns` (its directory name's hash), reused
/// when its `ducc-source` (with `tables`) matches DUCC's publication, else
/// brought up to date by `update` (which writes `ducc-source` last); the
/// repository's other generations are pruned.
fn synthesise_store(
    home: &Path,
    repo: &Path,
    patterns: &str,
    tables: &[&str],
    update: impl FnOnce(&Path, &str, &mut Phases) -> io::Result<Vec<String>>,
) -> io::Result<Synthesis> {
    let mut phases = Phases::default();
    let source = phases.time("identity", || source_key(repo))?;
    let generations = home.join(DUCC_HOME_DIR);
    let rk = repo_key(repo);
    let store = generations.join(format!("{rk}-{}", short_hash(patterns.as_bytes())));
    if incremental::is_up_to_date(&store, &source, tables) {
        return Ok(Synthesis {
            store,
            built: false,
            skipped: Vec::new(),
            phases,
        });
    }
    fs::create_dir_all(&store).map_err(|e| err(format!("{}: {e}", store.display())))?;
    let skipped = update(&store, &source, &mut phases)?;
    phases.time("prune", || prune_generations(&generations, &rk, &store));
    Ok(Synthesis {
        store,
        built: true,
        skipped,
        phases,
    })
}

/// Ask every on-demand DUCC store of `stores` for what `key` names (see
/// [`ondemand::provide`]); true when one lists it now. A store that
/// fails is reported through `warn` and skipped.
pub fn provide(stores: &[PathBuf], what: Wanted, key: &str, warn: &dyn Fn(&str)) -> bool {
    let mut added = false;
    for store in stores {
        match ondemand::provide(store, what, key) {
            Ok(a) => added |= a,
            Err(e) => warn(&format!(
                "cvmfs: DUCC store {}: looking up {key}: {e}",
                store.display()
            )),
        }
    }
    added
}

/// Generations of repository `rk`, newest first.
fn generations_of(dir: &Path, rk: &str) -> Vec<PathBuf> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{rk}-"))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

fn newest_generation(dir: &Path, rk: &str) -> Option<PathBuf> {
    generations_of(dir, rk).into_iter().next()
}

/// Keep `current` and the newest other store of the repository (another
/// podman may list other image patterns, or one built by an earlier
/// version is still read); remove older ones.
fn prune_generations(dir: &Path, rk: &str, current: &Path) {
    let older = generations_of(dir, rk).into_iter().filter(|p| p != current);
    for old in older.skip(1) {
        let _ = fs::remove_dir_all(old);
    }
}

/// A file of the repository, at most `max` bytes; never through a symlink
/// as its last component.
fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    if buf.len() as u64 > max {
        return Err(err(format!("{}: larger than {max} bytes", path.display())));
    }
    Ok(buf)
}

/// One entry of DUCC's `images.json` (unknown fields ignored).
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct DuccImage {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// DUCC's top layer ID (its diffID).
    #[serde(default)]
    layer: Option<String>,
    #[serde(default)]
    created: Option<String>,
}

/// Everything the store lists for one image.
struct ImageEntry {
    id: String,
    names: Vec<String>,
    config: Vec<u8>,
    manifest: Vec<u8>,
    created: String,
    /// Bottom first: (layer ID, `layers.json` entry, record text).
    layers: Vec<(String, Value, String)>,
    /// Whether the store already holds its big data (nothing to write).
    kept: bool,
}

/// Bring the store at `root` up to date with DUCC's current indexes;
/// returns the images left out. Images DUCC's layer list describes are only
/// listed ([`lazy`]); the others are converted now, or kept as the store
/// already has them.
fn update_store(
    home: &Path,
    repo: &Path,
    root: &Path,
    only: &[String],
    phases: &mut Phases,
) -> io::Result<Vec<String>> {
    let index = ducc_images_json(repo);
    let bytes = phases.time("read images.json", || {
        read_capped(&index, MAX_DUCC_INDEX_BYTES)
    })?;
    let listed: Vec<DuccImage> = phases
        .time("parse images.json", || serde_json::from_slice(&bytes))
        .map_err(|e| err(format!("{}: not DUCC's image list: {e}", index.display())))?;
    let ducc_layers = phases.time("read+parse layers.json", || lazy::read_ducc_layers(repo))?;
    let mut before = phases.time("read ducc-listed", || incremental::read_listed(root));
    let before_ids: std::collections::HashSet<String> = before.keys().cloned().collect();
    let mut previous: Option<Previous> = None;
    let mut infos = HashMap::new();
    let mut skipped = Vec::new();
    let mut images: Vec<ImageEntry> = Vec::new();
    let mut cheap: Vec<lazy::Listed> = Vec::new();
    let start = std::time::Instant::now();
    for img in listed.into_iter().filter(|i| wanted(&i.names, only)) {
        let fingerprint = lazy::fingerprint(&img, &ducc_layers);
        let same = |k: &incremental::Known| fingerprint.as_deref() == Some(k.fingerprint.as_str());
        if before.get(&img.id).is_some_and(same) {
            if let Some(known) = before.remove(&img.id) {
                cheap.push(lazy::Listed {
                    id: img.id,
                    manifest: None,
                    known,
                });
                continue;
            }
        }
        let size = before.get(&img.id).map(|k| k.config_size);
        if let Ok(l) = lazy::listed_image(repo, &img, &ducc_layers, size, fingerprint) {
            cheap.push(l);
            continue;
        }
        let kept = previous.get_or_insert_with(|| Previous::load(root));
        let entry = match kept.image(&img) {
            Some(e) => Ok(e),
            None => image_entry(repo, &img, &mut infos),
        };
        match entry {
            Ok(e) => images.push(e),
            Err(e) => skipped.push(format!("image {} ({}): {e}", img.id, img.names.join(", "))),
        }
    }
    phases.0.push(("list images", start.elapsed()));
    let store = StorePaths::new(root);
    let before = incremental::Before {
        ids: before_ids,
        changed: before,
    };
    let listing = Listing {
        images: &images,
        listed: cheap,
        on_demand_layers: None,
    };
    write_store(home, repo, &store, listing, &before, phases)?;
    Ok(skipped)
}

/// The store as the last update left it. Images are content-addressed (ID =
/// config digest, layer IDs from its diffIDs), so a converted image it
/// already lists is kept, with the names DUCC gives now, and only new images
/// cost repository reads.
struct Previous {
    store: StorePaths,
    images: HashMap<String, Value>,
    layers: HashMap<String, Value>,
}

impl Previous {
    /// Our own earlier output; anything unreadable just means no reuse.
    fn load(root: &Path) -> Previous {
        let store = StorePaths::new(root);
        let by_id = |path: PathBuf| -> HashMap<String, Value> {
            let list: Vec<Value> = fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            list.into_iter()
                .filter_map(|v| Some((v["id"].as_str()?.to_string(), v)))
                .collect()
        };
        Previous {
            images: by_id(store.images_json()),
            layers: by_id(store.layers_json()),
            store,
        }
    }

    /// Image `img` as the previous store has it, checked again for what is
    /// cheap to check (the config's hash), or `None`.
    fn image(&self, img: &DuccImage) -> Option<ImageEntry> {
        let old = self.images.get(&img.id)?;
        if !is_hex64(&img.id) || img.names.iter().any(|n| check_name(n).is_err()) {
            return None;
        }
        let dir = self.store.image_dir(&img.id);
        let config = fs::read(dir.join(big_data_file_name(&sha256_digest(&img.id)))).ok()?;
        if hex(&Sha256::digest(&config)) != img.id {
            return None;
        }
        let manifest = fs::read(dir.join("manifest")).ok()?;
        let mut layers = Vec::new();
        let mut next = old["layer"].as_str().map(str::to_string);
        while let Some(id) = next {
            if layers.len() > MAX_IMAGE_LAYERS || !is_hex64(&id) {
                return None;
            }
            let entry = self.layers.get(&id)?.clone();
            let record = fs::read_to_string(self.store.record(&id)).ok()?;
            next = entry["parent"].as_str().map(str::to_string);
            layers.push((id, entry, record));
        }
        layers.reverse();
        let created = old["created"].as_str().unwrap_or(EPOCH).to_string();
        (!layers.is_empty()).then(|| ImageEntry {
            id: img.id.clone(),
            names: podman_names(&img.names),
            config,
            manifest,
            created,
            layers,
            kept: true,
        })
    }
}

fn check_name(name: &str) -> io::Result<()> {
    let plain = |c: &str| !c.is_empty() && c != "." && c != "..";
    if name.len() > MAX_NAME_LEN
        || name.chars().any(|c| c.is_control())
        || name.starts_with('/')
        || !name.split('/').all(plain)
    {
        return Err(err(format!(
            "image name {name:?} is not a plain registry/repository:tag"
        )));
    }
    Ok(())
}

/// Hosts DUCC users give for Docker Hub (its recipes say
/// `https://registry.hub.docker.com/library/redis:4`); DUCC names the image
/// `<host>/<path>:<tag>` as given, podman spells the same image
/// `docker.io/<path>:<tag>`.
const DOCKER_HUB_HOSTS: [&str; 3] = [
    "registry.hub.docker.com",
    "registry-1.docker.io",
    "index.docker.io",
];

/// DUCC's names plus podman's spelling of each Docker Hub name, so that
/// `podman run docker.io/library/redis:4` (or `redis:4`) finds the image.
fn podman_names(names: &[String]) -> Vec<String> {
    let mut out = names.to_vec();
    for n in names {
        let Some((host, path)) = n.split_once('/') else {
            continue;
        };
        if DOCKER_HUB_HOSTS.contains(&host) {
            let alias = format!("docker.io/{path}");
            if !out.contains(&alias) {
                out.push(alias);
            }
        }
    }
    out
}

/// Standard base64 with padding (containers/storage's big data file names).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() {
                A[(n >> shift) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

/// containers/storage's file name for big data item `key`.
pub fn big_data_file_name(key: &str) -> String {
    let plain = |c: u8| c == b'.' || c.is_ascii_digit() || c.is_ascii_lowercase();
    if !key.is_empty() && key.bytes().all(plain) {
        key.to_string()
    } else {
        format!("={}", base64(key.as_bytes()))
    }
}

/// containers/image's layer ID: the diffID for a base layer, else
/// `sha256(parent + "+" + diffID)`.
pub fn layer_id(parent: Option<&str>, diff_hex: &str) -> String {
    match parent {
        None => diff_hex.to_string(),
        Some(p) => hex(&Sha256::digest(format!("{p}+{diff_hex}").as_bytes())),
    }
}

/// The config of image `id`, checked against its digest; with its diffIDs
/// and creation time.
fn read_config(repo: &Path, id: &str) -> io::Result<(Vec<u8>, Vec<String>, String)> {
    let path = RepoPaths::new(repo)
        .store()
        .root
        .join(DUCC_IMAGES_DIR)
        .join(id)
        .join(big_data_file_name(&sha256_digest(id)));
    let bytes = read_capped(&path, MAX_CONFIG_BYTES)?;
    if hex(&Sha256::digest(&bytes)) != id {
        return Err(err(format!(
            "{}: does not hash to the image ID",
            path.display()
        )));
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("{}: not an image config: {e}", path.display())))?;
    let diff_ids: Vec<String> = v["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| err(format!("{}: no rootfs.diff_ids", path.display())))?
        .iter()
        .map(|d| match d.as_str().map(digest_hex) {
            Some(Ok(h)) => Ok(h.to_string()),
            _ => Err(err(format!(
                "{}: diffID {d} is not sha256:<hex>",
                path.display()
            ))),
        })
        .collect::<io::Result<_>>()?;
    let created = v["created"]
        .as_str()
        .filter(|c| looks_rfc3339(c))
        .unwrap_or(EPOCH);
    Ok((bytes, diff_ids, created.to_string()))
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Shape of an RFC 3339 time (containers/storage refuses a whole index over
/// one it cannot parse, so anything doubtful is replaced).
fn looks_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    (20..=40).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-:.+".contains(c))
        && digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && (t.ends_with('Z') || t[19..].contains(['+', '-']))
}

/// DUCC's manifest copy of the first name that has one.
fn read_manifest(repo: &Path, names: &[String]) -> io::Result<Manifest> {
    let mut last = err("no name");
    for name in names {
        let path = RepoPaths::new(repo).manifest_copy(name);
        match read_capped(&path, cvmfs_format::ducc::MANIFEST_COPY_MAX_BYTES) {
            Ok(b) => {
                return serde_json::from_slice(&b)
                    .map_err(|e| err(format!("{}: not DUCC's manifest copy: {e}", path.display())))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// DUCC's `layers.json` of blob `d` (cached: a layer is shared by images).
fn layer_info<'a>(
    repo: &Path,
    d: &str,
    cache: &'a mut HashMap<String, LayerInfo>,
) -> io::Result<&'a LayerInfo> {
    if !cache.contains_key(d) {
        let path = RepoPaths::layer_info_of(&RepoPaths::new(repo).layer_dir(d));
        let infos: Vec<LayerInfo> =
            serde_json::from_slice(&read_capped(&path, MAX_LAYER_INFO_BYTES)?)
                .map_err(|e| err(format!("{}: not DUCC's layers.json: {e}", path.display())))?;
        let info = infos
            .into_iter()
            .next()
            .ok_or_else(|| err(format!("{}: empty", path.display())))?;
        cache.insert(d.to_string(), info);
    }
    Ok(&cache[d])
}

fn compression_of(media_type: &str) -> Option<i64> {
    if media_type.ends_with("gzip") {
        Some(COMPRESSION_GZIP)
    } else if media_type.ends_with("zstd") {
        Some(COMPRESSION_ZSTD)
    } else {
        None
    }
}

/// Everything the store needs for DUCC image `img`, checked.
fn image_entry(
    repo: &Path,
    img: &DuccImage,
    infos: &mut HashMap<String, LayerInfo>,
) -> io::Result<ImageEntry> {
    if !is_hex64(&img.id) {
        return Err(err("the ID is not 64 lower-case hex"));
    }
    for n in &img.names {
        check_name(n)?;
    }
    let (config, diff_ids, created) = read_config(repo, &img.id)?;
    let manifest = read_manifest(repo, &img.names)?;
    if manifest.config.digest != sha256_digest(&img.id) {
        return Err(err(format!(
            "the manifest names config {}",
            manifest.config.digest
        )));
    }
    let blobs: Vec<_> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type != FOREIGN_LAYER)
        .collect();
    if blobs.is_empty() || blobs.len() != diff_ids.len() || blobs.len() > MAX_IMAGE_LAYERS {
        return Err(err(format!(
            "the manifest has {} layers, the config {} diffIDs",
            blobs.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    let mut parent: Option<String> = None;
    for (blob, diff) in blobs.iter().zip(&diff_ids) {
        let d = digest_hex(&blob.digest).map_err(|e| err(format!("layer {}: {e}", blob.digest)))?;
        let info = layer_info(repo, d, infos)?;
        if info.diff_digest != sha256_digest(diff) {
            return Err(err(format!(
                "layer {d}: DUCC's diffID {} is not the config's",
                info.diff_digest
            )));
        }
        let id = layer_id(parent.as_deref(), diff);
        let mut entry = json!({
            "id": id, "created": created,
            "compressed-diff-digest": blob.digest, "compressed-size": blob.size,
            "diff-digest": info.diff_digest, "diff-size": info.diff_size,
        });
        if let Some(p) = &parent {
            entry["parent"] = json!(p);
        }
        if let Some(c) = compression_of(&blob.media_type) {
            entry["compression"] = json!(c);
        }
        let record = CvmfsRecord {
            repository: repo.to_string_lossy().into_owned(),
            path: cvmfs_format::paths::layerfs_rel(d),
            parent: parent.clone(),
            whiteouts: Whiteouts::OciRaw,
            ownership: Ownership::Lost,
            markers: None,
            flat: None,
            owner_probes: None,
        };
        layers.push((id.clone(), entry, record.to_json()));
        parent = Some(id);
    }
    Ok(ImageEntry {
        id: img.id.clone(),
        names: podman_names(&img.names),
        config,
        manifest: standard_manifest(&manifest),
        created,
        layers,
        kept: false,
    })
}

/// The manifest in the registry's spelling (DUCC's copy capitalises keys);
/// its digest is not the registry's (DUCC kept no original bytes).
fn standard_manifest(m: &Manifest) -> Vec<u8> {
    let desc = |d: &cvmfs_format::ducc::Descriptor| json!({"mediaType": d.media_type, "size": d.size, "digest": d.digest});
    serde_json::to_vec(&json!({
        "schemaVersion": m.schema_version,
        "mediaType": m.media_type,
        "config": desc(&m.config),
        "layers": m.layers.iter().map(desc).collect::<Vec<_>>(),
    }))
    .expect("serializable")
}

fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(path, data).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// What a store lists.
struct Listing<'a> {
    /// Images converted whole.
    images: &'a [ImageEntry],
    /// Images listed from DUCC's indexes.
    listed: Vec<lazy::Listed>,
    /// On demand: layers listed without an image, (ID, `layers.json`
    /// entry); `None` when every image is listed (the index is written from
    /// the listing then).
    on_demand_layers: Option<Vec<(String, String)>>,
}

/// Write into `store` what changed: the directories of images it did not
/// hold yet (staged, durable, renamed in), records of converted images,
/// then the indexes, each whole; `ducc-listed` last.
fn write_store(
    home: &Path,
    repo: &Path,
    store: &StorePaths,
    listing: Listing,
    before: &incremental::Before,
    phases: &mut Phases,
) -> io::Result<()> {
    let Listing {
        images,
        listed,
        on_demand_layers,
    } = listing;
    let started = std::time::Instant::now();
    let mut staged = incremental::Staged::new(home);
    let mut layer_index: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut image_index = Vec::new();
    let mut listed_out = String::new();
    let mut records = Vec::new();
    let text = |v: &Value| serde_json::to_string(v).expect("json");
    for img in images {
        for (id, entry, record) in &img.layers {
            if seen.insert(id.clone()) {
                records.push((id, record));
                layer_index.push(text(entry));
            }
        }
        let (entry, known) = image_json(img);
        if !img.kept {
            write_image_files(&staged.dir_for(&store.image_dir(&img.id))?, img)?;
        }
        image_index.push(text(&entry));
        incremental::append_listed(&mut listed_out, &img.id, &known);
    }
    let mut lines = std::collections::BTreeMap::new();
    let mut listed_ids: std::collections::HashSet<String> =
        images.iter().map(|i| i.id.clone()).collect();
    for img in listed {
        if !listed_ids.insert(img.id.clone()) {
            continue;
        }
        let known_before = before.changed.get(&img.id);
        if let Some(manifest) = &img.manifest {
            if !known_before.is_some_and(|k| k.same_big_data(&img.known)) {
                let dir = staged.dir_for(&store.image_dir(&img.id))?;
                lazy::write_big_data(repo, &dir, &img.id, manifest)?;
            }
        }
        incremental::append_listed(&mut listed_out, &img.id, &img.known);
        let top = img.known.layers.last().map(|l| l.0.clone());
        for (id, entry, line) in img.known.layers {
            // the line names the image whose config checks the chain: the
            // image this layer tops when there is one (what a user runs)
            if Some(&id) == top.as_ref() || !lines.contains_key(&id) {
                lines.insert(id.clone(), line);
            }
            if seen.insert(id) {
                layer_index.push(entry);
            }
        }
        image_index.push(img.known.entry);
    }
    // on demand: chains podman looked up by digest, listed without an image
    for (id, entry) in on_demand_layers.iter().flatten() {
        if seen.insert(id.clone()) {
            layer_index.push(entry.clone());
        }
    }
    let new_images = staged.len();
    phases.0.push(("stage new images", started.elapsed()));
    fs::create_dir_all(store.images_dir())?;
    phases.time("install new images", || staged.install(&store.root))?;
    for (id, record) in records {
        if fs::read(store.record(id)).ok().as_deref() != Some(record.as_bytes()) {
            lazy::write_atomically(&store.record(id), record.as_bytes())?;
        }
    }
    // on demand the index lists every layer and is written with the catalog
    let lines = on_demand_layers.is_none().then_some(lines);
    if let Some(lines) = &lines {
        lazy::refresh_records(repo, store, lines)?;
    }
    write_indexes(
        repo,
        store,
        lines.as_ref(),
        &layer_index,
        &image_index,
        phases,
    )?;
    let now = listed_ids;
    phases.time("write ducc-listed", || {
        incremental::replace_file(
            &store.root.join(incremental::LISTED_FILE),
            listed_out.as_bytes(),
        )
    })?;
    phases.time("prune images", || {
        incremental::prune_images(&store.images_dir(), &now, &before.ids)
    });
    phases.0.push((
        "(new image directories)",
        std::time::Duration::from_micros(new_images as u64),
    ));
    Ok(())
}

/// A JSON array of `items` (each JSON text).
fn json_array(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out += item;
    }
    out.push(']');
    out
}

/// `ducc-index`, `layers.json`, then `images.json` (an image is listed only
/// once its layers are), each replaced whole; the lock files when missing.
fn write_indexes(
    repo: &Path,
    store: &StorePaths,
    lines: Option<&std::collections::BTreeMap<String, String>>,
    layer_index: &[String],
    image_index: &[String],
    phases: &mut Phases,
) -> io::Result<()> {
    if let Some(lines) = lines {
        phases.time("write ducc-index", || {
            lazy::write_index(&store.root, repo, lines)
        })?;
    }
    phases.time("write layers.json", || {
        incremental::replace_file(&store.layers_json(), json_array(layer_index).as_bytes())
    })?;
    phases.time("write images.json", || {
        incremental::replace_file(&store.images_json(), json_array(image_index).as_bytes())
    })?;
    for lock in [store.layers_lock(), store.images_lock()] {
        if !lock.exists() {
            write_file(&lock, b"")?;
        }
    }
    Ok(())
}

/// The big data items of converted image `img`: (key, bytes).
fn big_data_items(img: &ImageEntry) -> [(String, &[u8]); 3] {
    let manifest_digest = format!("sha256:{}", hex(&Sha256::digest(&img.manifest)));
    [
        (sha256_digest(&img.id), &img.config),
        (format!("manifest-{manifest_digest}"), &img.manifest),
        ("manifest".to_string(), &img.manifest),
    ]
}

/// Converted image `img`'s big data files, into (staged) directory `dir`.
fn write_image_files(dir: &Path, img: &ImageEntry) -> io::Result<()> {
    for (k, data) in &big_data_items(img) {
        write_file(&dir.join(big_data_file_name(k)), data)?;
    }
    Ok(())
}

/// Converted image `img`'s `images.json` entry, and what `ducc-listed` keeps.
fn image_json(img: &ImageEntry) -> (Value, incremental::Known) {
    let items = big_data_items(img);
    let manifest_hex = hex(&Sha256::digest(&img.manifest));
    let manifest_digest = sha256_digest(&manifest_hex);
    let sizes: serde_json::Map<String, Value> = items
        .iter()
        .map(|(k, d)| (k.clone(), json!(d.len())))
        .collect();
    let digests: serde_json::Map<String, Value> = items
        .iter()
        .map(|(k, d)| {
            (
                k.clone(),
                json!(format!("sha256:{}", hex(&Sha256::digest(d)))),
            )
        })
        .collect();
    let top = &img.layers.last().expect("an image has layers").0;
    let entry = json!({
        "id": img.id, "digest": manifest_digest, "names": img.names, "layer": top,
        "big-data-names": items.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "big-data-sizes": sizes, "big-data-digests": digests, "created": img.created,
    });
    let known = incremental::Known {
        config_size: img.config.len() as u64,
        manifest_hex,
        fingerprint: "-".into(),
        entry: serde_json::to_string(&entry).expect("json"),
        layers: Vec::new(),
    };
    (entry, known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_data_names_as_containers_storage_writes_them() {
        assert_eq!(big_data_file_name("manifest"), "manifest");
        assert_eq!(
            big_data_file_name("sha256:ab"),
            format!("={}", "c2hhMjU2OmFi")
        );
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn layer_ids_as_containers_image_computes_them() {
        let d = "a".repeat(64);
        assert_eq!(layer_id(None, &d), d);
        let want = hex(&Sha256::digest(
            format!("{}+{d}", "b".repeat(64)).as_bytes(),
        ));
        assert_eq!(layer_id(Some(&"b".repeat(64)), &d), want);
    }

    #[test]
    fn names_must_be_plain() {
        assert!(check_name("127.0.0.1:5000/test/wh:1").is_ok());
        for bad in ["../x:1", "/abs:1", "a//b:1", "a/./b", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_hub_names_get_podmans_spelling() {
        let n = vec!["registry.hub.docker.com/library/redis:4".to_string()];
        assert_eq!(
            podman_names(&n),
            [
                "registry.hub.docker.com/library/redis:4",
                "docker.io/library/redis:4"
            ]
        );
        let other = vec!["127.0.0.1:5000/test/wh:1".to_string()];
        assert_eq!(podman_names(&other), other);
    }

    #[test]
    fn image_patterns() {
        let n = vec!["reg.example.org/app:1".to_string()];
        assert!(wanted(&n, &[]));
        assert!(wanted(&n, &["reg.example.org/app:1".into()]));
        assert!(wanted(&n, &["reg.example.org/*".into()]));
        assert!(!wanted(&n, &["reg.example.org/app".into()]));
        assert!(!wanted(&n, &["other/*".into()]));
    }

    #[test]
    fn rfc3339_shape() {
        assert!(looks_rfc3339("2024-01-02T03:04:05Z"));
        assert!(looks_rfc3339("2024-01-02T03:04:05.123456789+02:00"));
        assert!(!looks_rfc3339("yesterday"));
        assert!(!looks_rfc3339("2024-01-02"));
    }
}
