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

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use cvmfs_publisher::ducc::{self, LayerInfo, Origin};
use cvmfs_publisher::podman::{self, NewImage, NewLayer, StorePaths};
use cvmfs_publisher::{digest_hex, flat, fsx, layer, layer_ids, ownership, rfc3339, Error, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::progress::Progress;

/// Per blob digest, the configs of the images the store records using it.
type BlobUsers = std::collections::BTreeMap<String, BTreeSet<String>>;
use crate::source::{ImageName, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    layer::hex(&Sha256::digest(b))
}

/// Check that `bytes` have digest `digest`.
pub fn verify_bytes(bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    let want = digest_hex(digest).map_err(|e| e.context(what))?;
    let have = sha256_hex(bytes);
    if have != want {
        return Err(Error::msg(format!(
            "{what} {digest}: digest mismatch, the content is sha256:{have}"
        )));
    }
    Ok(())
}

/// Hashes and counts what is read through it.
struct HashReader<R> {
    inner: R,
    hash: Sha256,
    n: u64,
    progress: Option<(usize, Progress)>,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        if let Some((i, p)) = &self.progress {
            p.inc(*i, n as u64);
        }
        Ok(n)
    }
}

pub struct Options {
    pub repo: PathBuf,
    /// Absolute path recorded in layer records (where podman will see the repo).
    pub recorded_repo: String,
    pub name: ImageName,
    pub jobs: usize,
    pub progress: Progress,
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

/// A layer unpacked under a temporary name, placed only once every layer of
/// the image is good (a failed image leaves nothing behind).
struct Pending {
    tmp: PathBuf,
    dir: PathBuf,
    ts_tmp: PathBuf,
    ts_cache: PathBuf,
}

impl Pending {
    fn discard(&self) {
        let _ = fsx::remove_all(&self.tmp);
        let _ = fs::remove_file(&self.ts_tmp);
    }
}

/// A reused layer's per-blob files rebuilt from its blob (it was published by
/// DUCC or by an older run), written under the publisher lock.
struct Rebuilt {
    ts_tmp: PathBuf,
    ts_cache: PathBuf,
    /// The owners to save, when the files lost them.
    owners: Option<std::result::Result<Vec<u8>, String>>,
    markers: Option<Vec<String>>,
}

struct LayerOut {
    compressed: String,
    size: u64,
    diff_id: String,
    diff_size: u64,
    compression: i64,
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
    written: bool,
    ownership_kept: bool,
    /// For a layer whose files lost their owners: the `ownership.json` that
    /// restores them, or why none could be built.
    owners: Option<std::result::Result<Vec<u8>, String>>,
    pending: Option<Pending>,
    /// The raw whiteout markers in its `layerfs`, for the layer records.
    markers: Option<Vec<String>>,
    rebuilt: Option<Rebuilt>,
}

impl LayerOut {
    /// Drop what this layer left under temporary names (the image failed).
    fn discard(&self) {
        if let Some(pd) = &self.pending {
            pd.discard();
        }
        if let Some(rb) = &self.rebuilt {
            let _ = fs::remove_file(&rb.ts_tmp);
        }
    }
}

/// What `podmanStore/cvmfs/flat/<c>.json` says: this publisher built the flat
/// tree, from these layers.
fn json_flat_note(outs: &[LayerOut]) -> String {
    serde_json::json!({
        "version": 1,
        "built-by": concat!("cvmfs-podman publish ", env!("CARGO_PKG_VERSION")),
        "layers": outs.iter().map(|o| o.compressed.as_str()).collect::<Vec<_>>(),
    })
    .to_string()
}

fn layer_dir(repo: &Path, hex: &str) -> PathBuf {
    repo.join(".layers").join(&hex[..2]).join(hex)
}

fn flat_dir(repo: &Path, hex: &str) -> PathBuf {
    repo.join(".flat").join(&hex[..2]).join(hex)
}

fn ensure_catalog(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let m = dir.join(".cvmfscatalog");
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

fn decompressor<'a>(r: impl BufRead + Send + 'a) -> Result<(Box<dyn Read + Send + 'a>, i64)> {
    let mut r = r;
    let head = r
        .fill_buf()
        .map_err(|e| Error::msg(format!("reading blob: {e}")))?
        .to_vec();
    Ok(match sniff(&head) {
        Compression::Gzip => (
            Box::new(flate2::bufread::GzDecoder::new(r)),
            podman::COMPRESSION_GZIP,
        ),
        Compression::Zstd => (
            Box::new(
                zstd::stream::read::Decoder::with_buffer(r)
                    .map_err(|e| Error::msg(format!("zstd: {e}")))?,
            ),
            podman::COMPRESSION_ZSTD,
        ),
        Compression::None => (Box::new(r), podman::COMPRESSION_NONE),
    })
}

struct Job<'a> {
    src: &'a dyn Source,
    opts: &'a Options,
    store: StorePaths,
    config_digest: String,
}

impl Job<'_> {
    fn layer(&self, i: usize, desc: &Value, want_diff: &str) -> Result<LayerOut> {
        let digest = desc["digest"]
            .as_str()
            .ok_or_else(|| Error::msg("layer descriptor without digest"))?
            .to_string();
        let hex = digest_hex(&digest)?.to_string();
        let size = desc["size"].as_u64().unwrap_or(0);
        let dir = layer_dir(&self.opts.repo, &hex);
        let p = &self.opts.progress;
        let ts_cache = self.store.tar_split_by_digest(&hex);

        if dir.join("layerfs").is_dir() {
            // already published: reuse, after checking it is what the config says
            let lj = dir.join(".metadata").join("layers.json");
            let text = fs::read(&lj).map_err(|e| Error::io(&lj, e))?;
            let infos: Vec<LayerInfo> = serde_json::from_slice(&text)
                .map_err(|e| Error::msg(format!("{}: {e}", lj.display())))?;
            let info = infos
                .first()
                .ok_or_else(|| Error::msg(format!("{}: empty", lj.display())))?;
            if info.diff_digest != want_diff {
                return Err(Error::msg(format!(
                    "diffID mismatch: the image config says {want_diff}, the published layer has {} ({})",
                    info.diff_digest,
                    lj.display()
                )));
            }
            let marker = self.store.ownership_lost_marker(&hex);
            let owners_p = self.store.owners_by_digest(&hex);
            // An empty marker without an owners file: lost owners recorded by
            // a publisher that did not write owners files yet.
            let legacy = !owners_p.exists() && fs::metadata(&marker).is_ok_and(|m| m.len() == 0);
            let rebuilt = if !ts_cache.exists() || legacy {
                // published by DUCC (or by an interrupted run of ours): rebuild
                // the tar-split from the blob, and find out whether the files
                // carry the image's owners (DUCC's do not); if not, keep the
                // tar's owners for the driver to restore. Saved by `place`.
                let (entries, ts_tmp) = self.tar_split_only(&digest, size, &ts_cache)?;
                let owners = (legacy || !ownership_matches(&dir.join("layerfs"), &entries))
                    .then(|| ownership::owners_json(&entries));
                Some(Rebuilt {
                    ts_tmp,
                    ts_cache: ts_cache.clone(),
                    owners,
                    markers: layer::marker_list(&entries),
                })
            } else {
                None
            };
            // owners saved before (a marker, and the file or why there is none)
            let saved_owners = || {
                let kept = !marker.exists();
                let owners = (!kept).then(|| match fs::read(&owners_p) {
                    Ok(b) => Ok(b),
                    Err(_) => Err(fs::read_to_string(&marker).unwrap_or_default()),
                });
                (kept, owners)
            };
            let (markers, (ownership_kept, owners)) = match &rebuilt {
                Some(rb) if rb.owners.is_some() => (rb.markers.clone(), (false, rb.owners.clone())),
                Some(rb) => (rb.markers.clone(), saved_owners()),
                None => (self.saved_markers(&hex), saved_owners()),
            };
            let compression = self.compression_of(desc);
            p.done(i, "exists, skipped");
            return Ok(LayerOut {
                compressed: digest,
                size,
                diff_id: info.diff_digest.clone(),
                diff_size: info.diff_size,
                compression,
                uids: BTreeSet::new(),
                gids: BTreeSet::new(),
                written: false,
                ownership_kept,
                owners,
                pending: None,
                markers,
                rebuilt,
            });
        }

        // unpacked in .layers/ itself: not even .layers/XX appears for a layer
        // that fails
        let tmp = fsx::tmp_path(&self.opts.repo.join(".layers").join(&hex));
        match self.unpack_into(i, &digest, size, want_diff, &tmp, &ts_cache) {
            Ok((out, ts_tmp)) => Ok(LayerOut {
                pending: Some(Pending {
                    tmp,
                    dir,
                    ts_tmp,
                    ts_cache,
                }),
                ..out
            }),
            Err(e) => {
                let _ = fsx::remove_all(&tmp);
                Err(e)
            }
        }
    }

    /// Remember, per blob, that its `layerfs` lost the owners (the marker) and
    /// what restores them (`ownership.json`), or in the marker why nothing can.
    /// The owners file is written before the marker that says to use it.
    fn save_owners(&self, hex: &str, owners: &std::result::Result<Vec<u8>, String>) -> Result<()> {
        let marker = self.store.ownership_lost_marker(hex);
        match owners {
            Ok(b) => {
                fsx::write_atomic(&self.store.owners_by_digest(hex), b, 0o644)?;
                fsx::write_atomic(&marker, b"", 0o644)
            }
            Err(why) => {
                eprintln!(
                    "warning: layer sha256:{hex}: its files lost their owners and no ownership.json can restore them: {why}"
                );
                let _ = fs::remove_file(self.store.owners_by_digest(hex));
                fsx::write_atomic(&marker, why.as_bytes(), 0o644)
            }
        }
    }

    /// Keep blob `hex`'s marker list for later publishes that reuse its
    /// `layerfs` (`None`: not expressible, any old list goes).
    fn save_markers(&self, hex: &str, markers: Option<&[String]>) -> Result<()> {
        let p = self.store.markers_by_digest(hex);
        match markers {
            Some(m) => fsx::write_atomic(
                &p,
                serde_json::to_string(m)
                    .expect("strings serialize")
                    .as_bytes(),
                0o644,
            ),
            None => match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&p, e)),
                _ => Ok(()),
            },
        }
    }

    /// Blob `hex`'s saved marker list; `None` when there is none (published
    /// before lists were kept) or it does not parse: the driver then walks
    /// the layer, which is slower but right.
    fn saved_markers(&self, hex: &str) -> Option<Vec<String>> {
        let b = fs::read(self.store.markers_by_digest(hex)).ok()?;
        let list: Vec<String> = serde_json::from_slice(&b).ok()?;
        cvmfs_graphdriver::mount::whiteouts::parse_marker_list(&list).ok()?;
        Some(list)
    }

    /// Put an unpacked layer in place (tar-split first, then the directory),
    /// and make its `origin.json` name this image and every other one `users`
    /// says uses it. Under the publisher lock.
    fn place(&self, i: usize, o: &mut LayerOut, users: &BlobUsers) -> Result<()> {
        if let Some(rb) = o.rebuilt.take() {
            let hex = digest_hex(&o.compressed)?;
            let r = (|| {
                if let Some(owners) = &rb.owners {
                    self.save_owners(hex, owners)?;
                }
                self.save_markers(hex, rb.markers.as_deref())?;
                fs::rename(&rb.ts_tmp, &rb.ts_cache).map_err(|e| Error::io(&rb.ts_cache, e))
            })();
            if r.is_err() {
                let _ = fs::remove_file(&rb.ts_tmp);
            }
            r?;
        }
        if let Some(pd) = o.pending.take() {
            let r = (|| {
                if let Some(owners) = &o.owners {
                    self.save_owners(digest_hex(&o.compressed)?, owners)?;
                }
                self.save_markers(digest_hex(&o.compressed)?, o.markers.as_deref())?;
                fs::rename(&pd.ts_tmp, &pd.ts_cache).map_err(|e| Error::io(&pd.ts_cache, e))?;
                ensure_catalog(pd.dir.parent().expect("has parent"))?;
                fsx::rename_dir_into_place(&pd.tmp, &pd.dir)
            })();
            let placed = match r {
                Ok(p) => p,
                Err(e) => {
                    pd.discard();
                    return Err(e);
                }
            };
            o.written = placed;
            self.opts.progress.done(
                i,
                if placed {
                    "written"
                } else {
                    "exists (parallel publisher), skipped"
                },
            );
        }
        self.add_origin(&o.compressed, users)
    }

    fn compression_of(&self, desc: &Value) -> i64 {
        let mt = desc["mediaType"].as_str().unwrap_or("");
        if mt.ends_with("gzip") {
            podman::COMPRESSION_GZIP
        } else if mt.ends_with("zstd") {
            podman::COMPRESSION_ZSTD
        } else {
            podman::COMPRESSION_NONE
        }
    }

    fn add_origin(&self, blob: &str, users: &BlobUsers) -> Result<()> {
        let repo = &self.opts.repo;
        let dir = layer_dir(repo, digest_hex(blob)?);
        // it was there when this publish decided to reuse it; a gc since then
        // may have removed it (origin.json must not appear without a layer)
        if !dir.join("layerfs").is_dir() {
            return Err(Error::msg(format!(
                "{} disappeared before the image was recorded (a concurrent gc?); publish again",
                dir.display()
            )));
        }
        fsx::check_real_dirs(repo, &dir.join(".metadata"))?;
        let mut configs = users.get(blob).cloned().unwrap_or_default();
        configs.insert(self.config_digest.clone());
        if let Some(why) = ducc::ensure_origin(&dir, &configs)? {
            eprintln!(
                "warning: layer {blob}: {why}; rebuilt from the images recorded in podmanStore"
            );
        }
        Ok(())
    }

    fn verify_blob<R>(hr: &HashReader<R>, digest: &str, size: u64) -> Result<()> {
        let have = layer::hex(&hr.hash.clone().finalize());
        let want = digest_hex(digest)?;
        if have != want {
            return Err(Error::msg(format!(
                "digest mismatch: the manifest says {digest}, the blob is sha256:{have} ({} bytes)",
                hr.n
            )));
        }
        if size != 0 && hr.n != size {
            return Err(Error::msg(format!(
                "size mismatch: the manifest says {size} bytes, the blob has {}",
                hr.n
            )));
        }
        Ok(())
    }

    /// The tar-split of blob `digest`, written to a temporary name beside
    /// `ts_cache` (returned), and the blob's entries.
    fn tar_split_only(
        &self,
        digest: &str,
        size: u64,
        ts_cache: &Path,
    ) -> Result<(cvmfs_publisher::tarsplit::KeptEntries, PathBuf)> {
        let (blob, fault) = crate::source::open_blob(self.src, digest, size)?;
        let mut hr = HashReader {
            inner: blob,
            hash: Sha256::new(),
            n: 0,
            progress: None,
        };
        let tmp = fsx::tmp_path(ts_cache);
        fs::create_dir_all(ts_cache.parent().unwrap()).map_err(|e| Error::io(ts_cache, e))?;
        let res = (|| {
            let f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            // the same parser as unpacking: the tar-split describes what was unpacked
            let (gz, entries) = {
                let (dec, _) = decompressor(BufReader::with_capacity(1 << 20, &mut hr))?;
                cvmfs_publisher::tarsplit::record(dec, gz)
                    .map_err(|e| Error::msg(format!("layer {digest}: {e}")))?
            };
            io::copy(&mut hr, &mut io::sink()).map_err(|e| Error::msg(format!("{e}")))?;
            Self::verify_blob(&hr, digest, size)?;
            let f = gz.finish().map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            Ok(entries)
        })();
        match res {
            Ok(entries) => Ok((entries, tmp)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(blob_fault_or(&mut hr, &fault, e))
            }
        }
    }

    fn unpack_into(
        &self,
        i: usize,
        digest: &str,
        size: u64,
        want_diff: &str,
        tmp: &Path,
        ts_cache: &Path,
    ) -> Result<(LayerOut, PathBuf)> {
        fs::create_dir(tmp).map_err(|e| Error::io(tmp, e))?;
        let (blob, fault) = crate::source::open_blob(self.src, digest, size)?;
        let mut hr = HashReader {
            inner: blob,
            hash: Sha256::new(),
            n: 0,
            progress: Some((i, self.opts.progress.clone())),
        };
        fs::create_dir_all(ts_cache.parent().unwrap()).map_err(|e| Error::io(ts_cache, e))?;
        let ts_tmp = fsx::tmp_path(ts_cache);
        let ts_file = fs::File::create(&ts_tmp).map_err(|e| Error::io(&ts_tmp, e))?;
        let gz = flate2::write::GzEncoder::new(ts_file, flate2::Compression::fast());
        let result = (|| {
            let (unpacked, gz, compression) = {
                let (dec, compression) = decompressor(BufReader::with_capacity(1 << 20, &mut hr))?;
                let (u, gz) = layer::unpack(dec, &tmp.join("layerfs"), gz, self.opts.no_devices)?;
                (u, gz, compression)
            };
            io::copy(&mut hr, &mut io::sink())
                .map_err(|e| Error::msg(format!("reading blob: {e}")))?;
            Self::verify_blob(&hr, digest, size)?;
            if unpacked.diff_id != want_diff {
                return Err(Error::msg(format!(
                    "diffID mismatch: the image config says {want_diff}, the layer is {}",
                    unpacked.diff_id
                )));
            }
            let f = gz.finish().map_err(|e| Error::io(&ts_tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&ts_tmp, e))?;
            Ok((unpacked, compression))
        })();
        let (unpacked, compression) = match result {
            Ok(x) => x,
            Err(e) => {
                let _ = fs::remove_file(&ts_tmp);
                return Err(blob_fault_or(&mut hr, &fault, e));
            }
        };
        let tail = || -> Result<LayerOut> {
            let info = LayerInfo {
                id: unpacked.diff_id.trim_start_matches("sha256:").to_string(),
                created: rfc3339(std::time::SystemTime::now()),
                compressed_diff_digest: digest.to_string(),
                diff_digest: unpacked.diff_id.clone(),
                diff_size: unpacked.diff_size,
            };
            let md = tmp.join(".metadata");
            fsx::write_atomic(
                &md.join("layers.json"),
                ducc::layers_json(&info).as_bytes(),
                0o644,
            )?;
            fsx::write_atomic(
                &md.join("origin.json"),
                ducc::origin_json(&Origin {
                    origin: vec![self.config_digest.clone()],
                })
                .as_bytes(),
                0o644,
            )?;
            // DUCC makes every layerfs a nested catalog
            fsx::write_atomic(&tmp.join("layerfs").join(".cvmfscatalog"), b"", 0o644)?;
            let uids = unpacked.entries.uids.clone();
            let gids = unpacked.entries.gids.clone();
            // unprivileged, the files belong to the publisher: keep the tar's owners
            let ownership_kept = rustix::process::geteuid().is_root();
            let owners = (!ownership_kept).then(|| ownership::owners_json(&unpacked.entries));
            Ok(LayerOut {
                compressed: digest.to_string(),
                size: hr.n,
                diff_id: unpacked.diff_id,
                diff_size: unpacked.diff_size,
                compression,
                uids,
                gids,
                written: true,
                ownership_kept,
                owners,
                pending: None,
                markers: layer::marker_list(&unpacked.entries),
                rebuilt: None,
            })
        };
        match tail() {
            Ok(o) => Ok((o, ts_tmp)),
            Err(e) => {
                let _ = fs::remove_file(&ts_tmp);
                Err(e)
            }
        }
    }
}

/// The blob's own fault (longer, shorter, wrong digest, too slow) when it
/// has one, else `e`: after a failed unpack up to 64 MiB more of the blob are
/// read (within its declared size and deadline), so that a corrupt tar in a
/// small blob shows as what it is, a blob that is not the one the manifest names.
fn blob_fault_or(rest: &mut impl Read, fault: &crate::source::BlobFault, e: Error) -> Error {
    let _ = io::copy(&mut rest.take(64 << 20), &mut io::sink());
    fault.or(e)
}

/// Publish the image `src` names into `opts.repo`.
pub fn publish(src: &dyn Source, opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    let image = src.describe();
    let ctx = |e: Error| e.context(format!("image {image}"));
    let manifest = src.manifest().map_err(ctx)?;
    let m: Value =
        serde_json::from_slice(&manifest).map_err(|e| ctx(Error::msg(format!("manifest: {e}"))))?;
    let cdesc = &m["config"];
    let config_digest = cdesc["digest"]
        .as_str()
        .ok_or_else(|| ctx(Error::msg("manifest has no config digest")))?
        .to_string();
    let chex = digest_hex(&config_digest).map_err(ctx)?.to_string();
    // sizes and digests of every descriptor are validated here
    let typed = crate::source::image_manifest(&manifest).map_err(ctx)?;
    let config = crate::source::read_small_blob(src, &config_digest, typed.config.size)
        .map_err(|e| ctx(e.context("config")))?;
    verify_bytes(&config, &config_digest, "config").map_err(ctx)?;
    cvmfs_publisher::oci::parse_config(&config).map_err(ctx)?;
    let cfg: Value = serde_json::from_slice(&config)
        .map_err(|e| ctx(Error::msg(format!("config {config_digest}: {e}"))))?;
    let diff_ids: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let descs: Vec<Value> = m["layers"].as_array().cloned().unwrap_or_default();
    if descs.len() != diff_ids.len() {
        return Err(ctx(Error::msg(format!(
            "the manifest lists {} layers but the config {} diffIDs",
            descs.len(),
            diff_ids.len()
        ))));
    }
    for d in &diff_ids {
        digest_hex(d).map_err(ctx)?;
    }

    let repo = &opts.repo;
    fs::create_dir_all(repo).map_err(|e| ctx(Error::io(repo, e)))?;
    let store = StorePaths::new(repo.join("podmanStore"));
    {
        // leftovers of crashed runs go, and the shared skeleton appears, under
        // the lock (an index created "if missing" must not race a commit)
        let _lock = publisher_lock(repo, &store).map_err(ctx)?;
        fsx::sweep_repo(repo);
        for d in [".layers", ".flat"] {
            ensure_catalog(&repo.join(d)).map_err(ctx)?;
        }
        store.init().map_err(ctx)?;
    }

    let job = Job {
        src,
        opts,
        store: store.clone(),
        config_digest: config_digest.clone(),
    };
    let p = &opts.progress;
    for (i, d) in descs.iter().enumerate() {
        p.add(
            i,
            &format!(
                "layer {}/{} {}",
                i + 1,
                descs.len(),
                d["digest"].as_str().unwrap_or("?")
            ),
            d["size"].as_u64().unwrap_or(0),
        );
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<LayerOut>>>> =
        Mutex::new((0..descs.len()).map(|_| None).collect());
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1).min(descs.len().max(1)) {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= descs.len() {
                    break;
                }
                let r = job.layer(i, &descs[i], &diff_ids[i]).map_err(|e| {
                    failed.store(true, Ordering::Relaxed);
                    // The target name first: it is what the operator asked for.
                    e.context(format!(
                        "image {} (from {image}): layer {}",
                        opts.name.full(),
                        descs[i]["digest"].as_str().unwrap_or("?")
                    ))
                });
                if let Err(e) = &r {
                    p.fail(i, &e.to_string());
                }
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    let results = results.into_inner().unwrap();
    if results.iter().any(|r| !matches!(r, Some(Ok(_)))) {
        // all or nothing: drop what the other layers unpacked
        let mut first = None;
        for r in results {
            match r {
                Some(Ok(o)) => o.discard(),
                Some(Err(e)) => {
                    first.get_or_insert(e);
                }
                None => {}
            }
        }
        return Err(first.unwrap_or_else(|| ctx(Error::msg("a layer was not processed"))));
    }
    let mut outs: Vec<LayerOut> = results.into_iter().flatten().flatten().collect();
    // From here on every shared index is read, changed and written: one
    // publisher (or gc) at a time, until the image is recorded.
    let ids = layer_ids(&diff_ids.iter().map(String::as_str).collect::<Vec<_>>());
    let users = publisher_lock(repo, &store).and_then(|lock| {
        let images = podman::read_index(&store.images_json())?;
        let layers = podman::read_index(&store.layers_json())?;
        // a layer ID the store has already names the blob it was first
        // published from (maybe another compression of the same content):
        // the image uses that blob's layer through the store
        let recorded: Vec<Option<String>> = ids
            .iter()
            .map(|id| {
                layers
                    .iter()
                    .find(|l| l["id"] == id.as_str())
                    .and_then(|l| l["compressed-diff-digest"].as_str())
                    .map(str::to_string)
            })
            .collect();
        Ok((lock, podman::blob_users(&images, &layers), recorded))
    });
    let (_lock, users, recorded) = match users {
        Ok(x) => x,
        Err(e) => {
            outs.iter().for_each(LayerOut::discard);
            return Err(ctx(e));
        }
    };
    for i in 0..outs.len() {
        let r = job
            .place(i, &mut outs[i], &users)
            .and_then(|()| match &recorded[i] {
                Some(d) if *d != outs[i].compressed => job.add_origin(d, &users),
                _ => Ok(()),
            });
        if let Err(e) = r {
            outs[i..].iter().for_each(LayerOut::discard);
            return Err(ctx(e));
        }
    }

    // the flat rootfs
    let fdir = flat_dir(repo, &chex);
    fsx::check_real_dirs(repo, fdir.parent().expect("has parent")).map_err(ctx)?;
    if fs::symlink_metadata(&fdir).is_ok_and(|m| !m.is_dir()) {
        // not ours (a symlink or file put there): built again
        eprintln!(
            "warning: {}: not a directory, replaced by the image's root filesystem",
            fdir.display()
        );
        fsx::remove_all(&fdir).map_err(ctx)?;
    }
    let flat_status = if fdir.is_dir() {
        "exists, skipped"
    } else {
        let tmp = fsx::tmp_path(&repo.join(".flat").join(&chex));
        let r = (|| {
            fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
            for o in &outs {
                let hex = digest_hex(&o.compressed)?;
                let lf = layer_dir(repo, hex).join("layerfs");
                let named = flat::named_paths(&store.tar_split_by_digest(hex))?;
                flat::merge_layer_named(&lf, &tmp, named.as_ref())
                    .map_err(|e| e.context(format!("flattening layer {}", o.compressed)))?;
            }
            fsx::write_atomic(&tmp.join(".cvmfscatalog"), b"", 0o644)?;
            // DUCC: each .flat/XX/<c> is a catalog, .flat/XX is not
            fsx::rename_dir_into_place(&tmp, &fdir)
        })();
        match r {
            Ok(true) => {
                // Ours: it may stand in for the image's layers.
                let note = json_flat_note(&outs);
                fsx::write_atomic(&store.flat_built(&chex), note.as_bytes(), 0o644).map_err(ctx)?;
                "written"
            }
            Ok(false) => "exists, skipped",
            Err(e) => {
                let _ = fsx::remove_all(&tmp);
                return Err(ctx(e));
            }
        }
    };
    // The driver mounts a flat tree instead of the layers only when we built
    // it (DUCC's differ from the image) from layers that kept their owners.
    let flat_usable = store.flat_built(&chex).is_file() && outs.iter().all(|o| o.ownership_kept);

    // DUCC's manifest copy and the tag link
    let name = &opts.name;
    let rel = format!("{}/{}:{}", name.registry, name.repository, name.tag);
    let dm = ducc::Manifest {
        schema_version: m["schemaVersion"].as_i64().unwrap_or(2),
        media_type: m["mediaType"]
            .as_str()
            .unwrap_or(crate::source::MT_OCI_MANIFEST)
            .to_string(),
        config: desc_of(cdesc),
        layers: descs.iter().map(desc_of).collect(),
    };
    let mpath = repo.join(".metadata").join(&rel).join("manifest.json");
    let link = repo.join(&rel);
    for dir in [mpath.parent(), link.parent()].into_iter().flatten() {
        fsx::check_real_dirs(repo, dir).map_err(ctx)?;
    }
    fsx::write_atomic(&mpath, ducc::manifest_json(&dm).as_bytes(), 0o644).map_err(ctx)?;
    let depth = rel.split('/').count() - 1;
    let target = format!("{}.flat/{}/{}", "../".repeat(depth), &chex[..2], chex);
    fs::create_dir_all(link.parent().unwrap()).map_err(|e| ctx(Error::io(&link, e)))?;
    let ltmp = fsx::tmp_path(&link);
    std::os::unix::fs::symlink(&target, &ltmp).map_err(|e| ctx(Error::io(&ltmp, e)))?;
    fs::rename(&ltmp, &link).map_err(|e| {
        let _ = fs::remove_file(&ltmp);
        ctx(Error::io(&link, e))
    })?;

    // the podman store
    let new_layers: Vec<NewLayer> = outs
        .iter()
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
                path: format!(".layers/{}/{}/layerfs", &hex[..2], hex),
                tar_split: store.tar_split_by_digest(&hex),
                ownership_kept: o.ownership_kept,
                owners: o.owners.clone().and_then(|r| r.ok()),
                markers: o.markers.clone(),
                flat: (i + 1 == outs.len() && flat_usable)
                    .then(|| format!(".flat/{}/{}", &chex[..2], chex)),
            }
        })
        .collect();
    let created = cfg["created"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| rfc3339(std::time::SystemTime::now()));
    let img = NewImage {
        id: chex.clone(),
        names: vec![name.full()],
        top_layer: ids.last().cloned().unwrap_or_default(),
        manifest: manifest.clone(),
        config,
        created,
    };
    let mut must_exist: Vec<PathBuf> = new_layers.iter().map(|l| repo.join(&l.path)).collect();
    must_exist.push(fdir.clone());
    podman::commit(&store, &opts.recorded_repo, &new_layers, &img, &must_exist).map_err(ctx)?;

    let layers: Vec<LayerReport> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| LayerReport {
            digest: o.compressed.clone(),
            diff_id: o.diff_id.clone(),
            layer_id: ids[i].clone(),
            size: o.size,
            diff_size: o.diff_size,
            status: if o.written {
                "written"
            } else {
                "exists, skipped"
            },
        })
        .collect();
    Ok(Summary {
        image,
        name: name.full(),
        image_id: chex,
        manifest_digest: format!("sha256:{}", sha256_hex(&manifest)),
        layers_written: outs.iter().filter(|o| o.written).count(),
        layers_skipped: outs.iter().filter(|o| !o.written).count(),
        uncompressed_bytes_written: outs.iter().filter(|o| o.written).map(|o| o.diff_size).sum(),
        layers,
        flat: flat_status,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Do the files in `layerfs` have the owners the tar gives them? Looks at up to
/// 64 entries not owned by root (none: ownership does not matter, say yes).
fn ownership_matches(layerfs: &Path, entries: &[cvmfs_publisher::tarsplit::EntryInfo]) -> bool {
    use std::os::unix::fs::MetadataExt;
    entries
        .iter()
        .filter(|e| (e.uid, e.gid) != (0, 0) && matches!(e.typeflag, b'0' | 0 | b'5' | b'2'))
        .filter_map(|e| {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let rel = name.trim_start_matches("./").trim_start_matches('/');
            if rel.split('/').any(|c| c == "..") {
                return None;
            }
            fs::symlink_metadata(layerfs.join(rel))
                .ok()
                .map(|md| (md.uid(), md.gid()) == (e.uid, e.gid))
        })
        .take(64)
        .all(|ok| ok)
}

fn desc_of(v: &Value) -> ducc::Descriptor {
    ducc::Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or("").to_string(),
        size: v["size"].as_i64().unwrap_or(0),
        digest: v["digest"].as_str().unwrap_or("").to_string(),
    }
}
