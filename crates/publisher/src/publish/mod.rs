//! `cvmfs-podman publish`: one image from a source into a repository.
//!
//! Order of writes (each one atomic), so that a crash anywhere leaves a tree the
//! next run completes and `check` accepts:
//! 1. each layer: unpacked, verified and described in a temporary directory in
//!    `.layers/XX/`, its tar-split saved under `podmanStore/cvmfs/tar-split/`,
//!    then the directory renamed to `.layers/XX/<d>` (never replacing one);
//! 2. the flat rootfs, built the same way into `.flat/XX/<c>`;
//! 3. the DUCC manifest copy and the tag symlink;
//! 4. the podman store: layer records and tar-splits, then `layers.json`, big
//!    data, then `images.json`, under the store lock.
//!
//! [`publish`] runs the steps in that order: [`read_image`] (typed and
//! verified manifest and config), `prepare_repo`, `layers::unpack_all`,
//! `place::place_all`, `tree::build_flat`, `tree::write_tag`, `record`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cvmfs_format::paths::CATALOG_MARKER;
use cvmfs_format::RepoPaths;

use crate::blob::{sha256_hex, verify_bytes};
use crate::oci::{self, ImageConfig, ImageManifest};
use crate::podman::{self, NewImage, NewLayer, StoreInit, StorePaths};
use crate::source::{image_manifest, read_small_blob, ImageName, Source};
use crate::{digest_hex, fsx, layer_ids, rfc3339, Error, Result};

mod layers;
pub use layers::owners_from_blob;
mod place;
mod tree;

use layers::LayerOut;

/// Where per-layer progress goes (the CLI draws bars or prints lines).
/// Layers are numbered from 0 in manifest order; calls come from several
/// threads.
pub trait LayerProgress: Send + Sync {
    /// Layer `i` is about to be processed; `label` names it, `total` is
    /// its compressed size.
    fn add(&self, i: usize, label: &str, total: u64);
    /// `n` more bytes of layer `i` were read.
    fn inc(&self, i: usize, n: u64);
    /// Layer `i` is finished (`written`, `exists, skipped`, ...).
    fn done(&self, i: usize, status: &str);
    /// Layer `i` failed with `msg`.
    fn fail(&self, i: usize, msg: &str);
}

/// No progress output.
pub struct NoProgress;

impl LayerProgress for NoProgress {
    fn add(&self, _: usize, _: &str, _: u64) {}
    fn inc(&self, _: usize, _: u64) {}
    fn done(&self, _: usize, _: &str) {}
    fn fail(&self, _: usize, _: &str) {}
}

pub struct Options {
    pub repo: PathBuf,
    /// Absolute path recorded in layer records (where podman will see the repo).
    pub recorded_repo: String,
    pub name: ImageName,
    pub jobs: usize,
    pub progress: Arc<dyn LayerProgress>,
    /// Refuse device nodes (automatic when not root).
    pub no_devices: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub digest: String,
    pub diff_id: String,
    pub layer_id: String,
    pub size: u64,
    pub diff_size: u64,
    pub status: &'static str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub image: String,
    pub name: String,
    pub image_id: String,
    pub manifest_digest: String,
    pub layers: Vec<LayerReport>,
    pub layers_written: usize,
    pub layers_skipped: usize,
    pub flat: &'static str,
    pub uncompressed_bytes_written: u64,
    pub seconds: f64,
}

/// An image's documents, parsed, validated and verified against their digests.
pub struct Image {
    /// The manifest as the source served it (recorded as big data).
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
    /// The hex of the config digest: the image ID.
    pub id: String,
}

/// The manifest and config of `src`, typed: the manifest's descriptors are
/// validated, the config matches its digest and has one diffID per layer.
pub fn read_image(src: &dyn Source) -> Result<Image> {
    let manifest_bytes = src.manifest()?;
    let manifest = image_manifest(&manifest_bytes)?;
    let cdesc = &manifest.config;
    let config_bytes =
        read_small_blob(src, &cdesc.digest, cdesc.size).map_err(|e| e.context("config"))?;
    verify_bytes(&config_bytes, &cdesc.digest, "config")?;
    let config = oci::parse_config(&config_bytes)
        .map_err(|e| e.context(format!("blob {}", cdesc.digest)))?;
    if manifest.layers.len() != config.diff_ids.len() {
        return Err(Error::msg(format!(
            "the manifest lists {} layers but the config {} diffIDs",
            manifest.layers.len(),
            config.diff_ids.len()
        )));
    }
    Ok(Image {
        id: digest_hex(&cdesc.digest)?.to_string(),
        manifest_bytes,
        manifest,
        config_bytes,
        config,
    })
}

/// What the steps of one publish share.
struct Job<'a> {
    src: &'a dyn Source,
    /// `src.describe()`, for messages.
    image: String,
    opts: &'a Options,
    store: StorePaths,
    config_digest: String,
}

pub(crate) fn layer_dir(repo: &Path, hex: &str) -> PathBuf {
    RepoPaths::new(repo).layer_dir(hex)
}

pub(crate) fn flat_dir(repo: &Path, hex: &str) -> PathBuf {
    RepoPaths::new(repo).flat_dir(hex)
}

fn ensure_catalog(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let m = dir.join(CATALOG_MARKER);
    if fs::symlink_metadata(&m).is_err() {
        fsx::write_atomic(&m, b"", 0o644)?;
    }
    Ok(())
}

/// The publisher lock of the repository, after checking that the store's
/// directories on the way are real ones.
fn publisher_lock(repo: &Path, store: &StorePaths) -> Result<fsx::Lock> {
    fsx::check_real_dirs(repo, &store.root.join("cvmfs"))?;
    fsx::Lock::publisher(&store.publisher_lock())
}

/// Leftovers of crashed runs go, and the shared skeleton appears, under the
/// lock (an index created "if missing" must not race a commit).
fn prepare_repo(repo: &Path, store: &StorePaths) -> Result<()> {
    fs::create_dir_all(repo).map_err(|e| Error::io(repo, e))?;
    let _lock = publisher_lock(repo, store)?;
    fsx::sweep_repo(repo);
    let paths = RepoPaths::new(repo);
    for d in [paths.layers_dir(), paths.flat_root()] {
        ensure_catalog(&d)?;
    }
    store.init()
}

/// Publish the image `src` names into `opts.repo`.
pub fn publish(src: &dyn Source, opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    let image = src.describe();
    let ctx = |e: Error| e.context(format!("image {image}"));
    let img = read_image(src).map_err(ctx)?;
    let repo = &opts.repo;
    let store = RepoPaths::new(repo).store();
    prepare_repo(repo, &store).map_err(ctx)?;
    let job = Job {
        src,
        image: image.clone(),
        opts,
        store: store.clone(),
        config_digest: img.manifest.config.digest.clone(),
    };
    // the layer errors name the image themselves
    let mut outs = layers::unpack_all(&job, &img.manifest.layers, &img.config.diff_ids)?;
    let diff_ids: Vec<&str> = img.config.diff_ids.iter().map(String::as_str).collect();
    let ids = layer_ids(&diff_ids);
    let _lock = place::place_all(&job, &mut outs, &ids).map_err(ctx)?;
    let flat = tree::build_flat(repo, &store, &img.id, &outs).map_err(ctx)?;
    tree::write_tag(repo, &opts.name, &img.manifest, &img.id).map_err(ctx)?;
    record(&job, &img, &outs, &ids).map_err(ctx)?;
    Ok(summary(image, opts, img, outs, &ids, flat, start))
}

/// The layer records of the image's layers `outs` (IDs `ids`); the top one
/// names the flat tree when the driver may mount it instead of the layers.
fn new_layers(job: &Job, img: &Image, outs: &[LayerOut], ids: &[String]) -> Vec<NewLayer> {
    // The driver mounts a flat tree instead of the layers only when we built
    // it (DUCC's differ from the image) from layers that kept their owners.
    let flat_usable =
        job.store.flat_built(&img.id).is_file() && outs.iter().all(|o| o.ownership_kept);
    let chex = &img.id;
    outs.iter()
        .enumerate()
        .map(|(i, o)| {
            let hex = digest_hex(&o.compressed).expect("validated").to_string();
            NewLayer {
                id: ids[i].clone(),
                parent: (i > 0).then(|| ids[i - 1].clone()),
                compressed_digest: o.compressed.clone(),
                compressed_size: o.size,
                diff_digest: o.diff_id.clone(),
                diff_size: o.diff_size,
                compression: o.compression,
                uids: o.uids.clone(),
                gids: o.gids.clone(),
                path: cvmfs_format::paths::layerfs_rel(&hex),
                tar_split: job.store.tar_split_by_digest(&hex),
                ownership_kept: o.ownership_kept,
                owners: o.owners.clone().and_then(|r| r.ok()),
                markers: o.markers.clone(),
                owner_probes: o.owner_probes.clone(),
                flat: (i + 1 == outs.len() && flat_usable)
                    .then(|| cvmfs_format::paths::flat_rel(chex)),
            }
        })
        .collect()
}

/// What a container of the image executes first (`crate::entry`), as paths
/// relative to the repository: found in the flat tree, when the top layer's
/// record names one (the tree the driver mounts).
fn start_files(job: &Job, img: &Image, layers: &[NewLayer]) -> Vec<String> {
    let Some(flat) = layers.last().and_then(|l| l.flat.as_deref()) else {
        return Vec::new();
    };
    let root = job.opts.repo.join(flat);
    crate::entry::start_files(&root, &img.config_bytes)
        .into_iter()
        .map(|rel| format!("{flat}/{rel}"))
        .collect()
}

/// Record the image and its layers in the podman store (under the publisher
/// lock the caller holds).
fn record(job: &Job, img: &Image, outs: &[LayerOut], ids: &[String]) -> Result<()> {
    let repo = &job.opts.repo;
    let new_layers = new_layers(job, img, outs, ids);
    let created = img
        .config
        .created
        .clone()
        .unwrap_or_else(|| rfc3339(std::time::SystemTime::now()));
    let image = NewImage {
        id: img.id.clone(),
        names: vec![job.opts.name.full()],
        top_layer: ids.last().cloned().unwrap_or_default(),
        manifest: img.manifest_bytes.clone(),
        config: img.config_bytes.clone(),
        created,
        start_files: start_files(job, img, &new_layers),
    };
    let mut must_exist: Vec<PathBuf> = new_layers.iter().map(|l| repo.join(&l.path)).collect();
    must_exist.push(flat_dir(repo, &img.id));
    podman::commit(
        &job.store,
        &job.opts.recorded_repo,
        &new_layers,
        &image,
        &must_exist,
    )?;
    Ok(())
}

fn summary(
    image: String,
    opts: &Options,
    img: Image,
    outs: Vec<LayerOut>,
    ids: &[String],
    flat: &'static str,
    start: Instant,
) -> Summary {
    let layers: Vec<LayerReport> = outs
        .iter()
        .zip(ids)
        .map(|(o, id)| LayerReport {
            digest: o.compressed.clone(),
            diff_id: o.diff_id.clone(),
            layer_id: id.clone(),
            size: o.size,
            diff_size: o.diff_size,
            status: if o.written {
                "written"
            } else {
                "exists, skipped"
            },
        })
        .collect();
    Summary {
        image,
        name: opts.name.full(),
        image_id: img.id,
        manifest_digest: format!("sha256:{}", sha256_hex(&img.manifest_bytes)),
        layers_written: outs.iter().filter(|o| o.written).count(),
        layers_skipped: outs.iter().filter(|o| !o.written).count(),
        uncompressed_bytes_written: outs.iter().filter(|o| o.written).map(|o| o.diff_size).sum(),
        layers,
        flat,
        seconds: start.elapsed().as_secs_f64(),
    }
}
