//! Step 2 of a publish: every layer of the image, unpacked (or found already
//! published and checked) in parallel, under temporary names only. Nothing
//! here takes the publisher lock; `place` puts the results in place.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cvmfs_format::paths::CATALOG_MARKER;
use cvmfs_format::RepoPaths;
use sha2::{Digest, Sha256};

use super::{layer_dir, Job, LayerProgress};
use crate::blob::{sniff, BlobFault, Compression};
use crate::ducc::{self, LayerInfo, Origin};
use crate::oci::Descriptor;
use crate::source::open_blob;
use crate::tarsplit::{EntryInfo, KeptEntries};
use crate::{digest_hex, fsx, layer, ownership, podman, rfc3339, Error, Result};

/// A layer unpacked under a temporary name, placed only once every layer of
/// the image is good (a failed image leaves nothing behind).
pub(super) struct Pending {
    pub tmp: PathBuf,
    pub dir: PathBuf,
    pub ts_tmp: PathBuf,
    pub ts_cache: PathBuf,
}

impl Pending {
    pub fn discard(&self) {
        let _ = fsx::remove_all(&self.tmp);
        let _ = fs::remove_file(&self.ts_tmp);
    }
}

/// A reused layer's per-blob files rebuilt from its blob (it was published by
/// DUCC or by an older run), written under the publisher lock.
pub(super) struct Rebuilt {
    pub ts_tmp: PathBuf,
    pub ts_cache: PathBuf,
    /// The owners to save, when the files lost them.
    pub owners: Option<std::result::Result<Vec<u8>, String>>,
    /// The owners to save when the files kept them (for the driver on a
    /// client that claims ownership).
    pub kept_owners: Option<std::result::Result<Vec<u8>, String>>,
    pub markers: Option<Vec<String>>,
}

/// One layer of the image, unpacked or reused, before it is placed.
pub(super) struct LayerOut {
    pub compressed: String,
    pub size: u64,
    pub diff_id: String,
    pub diff_size: u64,
    pub compression: i64,
    pub uids: BTreeSet<u32>,
    pub gids: BTreeSet<u32>,
    pub written: bool,
    pub ownership_kept: bool,
    /// For a layer whose files lost their owners: the `ownership.json` that
    /// restores them, or why none could be built.
    pub owners: Option<std::result::Result<Vec<u8>, String>>,
    pub pending: Option<Pending>,
    /// The raw whiteout markers in its `layerfs`, for the layer records.
    pub markers: Option<Vec<String>>,
    pub rebuilt: Option<Rebuilt>,
    /// The owners of a few entries as unpacked, for the record
    /// (`None` for a reused layer: its record keeps the ones it has).
    pub owner_probes: Option<cvmfs_format::OwnerProbes>,
}

impl LayerOut {
    /// Drop what this layer left under temporary names (the image failed).
    pub fn discard(&self) {
        if let Some(pd) = &self.pending {
            pd.discard();
        }
        if let Some(rb) = &self.rebuilt {
            let _ = fs::remove_file(&rb.ts_tmp);
        }
    }
}

/// Hashes and counts what is read through it.
struct HashReader<R> {
    inner: R,
    hash: Sha256,
    n: u64,
    progress: Option<(usize, Arc<dyn LayerProgress>)>,
}

impl<R> HashReader<R> {
    fn new(inner: R, progress: Option<(usize, Arc<dyn LayerProgress>)>) -> HashReader<R> {
        HashReader {
            inner,
            hash: Sha256::new(),
            n: 0,
            progress,
        }
    }

    /// The blob read through it is `digest`, of `size` bytes (0: any size).
    fn verify(&self, digest: &str, size: u64) -> Result<()> {
        let have = layer::hex(&self.hash.clone().finalize());
        let want = digest_hex(digest)?;
        if have != want {
            return Err(Error::msg(format!(
                "digest mismatch: the manifest says {digest}, the blob is sha256:{have} ({} bytes)",
                self.n
            )));
        }
        if size != 0 && self.n != size {
            return Err(Error::msg(format!(
                "size mismatch: the manifest says {size} bytes, the blob has {}",
                self.n
            )));
        }
        Ok(())
    }
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

/// A reader of the decompressed layer tar (compression sniffed from the
/// bytes) and the store's compression code for it.
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

/// The store's compression code for a layer's declared media type.
fn compression_of(desc: &Descriptor) -> i64 {
    if desc.media_type.ends_with("gzip") {
        podman::COMPRESSION_GZIP
    } else if desc.media_type.ends_with("zstd") {
        podman::COMPRESSION_ZSTD
    } else {
        podman::COMPRESSION_NONE
    }
}

/// The `ownership.json` bytes of layer blob `desc` of `src`, from its tar
/// headers: the blob is streamed (decompressed, file contents skipped,
/// nothing written) and must have the digest and size the manifest gives.
/// `Ok(Err(why))` when the owners cannot be expressed (see
/// [`ownership::owners_json`]).
pub fn owners_from_blob(
    src: &dyn crate::source::Source,
    desc: &Descriptor,
) -> Result<std::result::Result<Vec<u8>, String>> {
    let (blob, fault) = open_blob(src, &desc.digest, desc.size)?;
    let mut hr = HashReader::new(blob, None);
    let result = (|| {
        let kept = {
            let (dec, _) = decompressor(BufReader::with_capacity(1 << 20, &mut hr))?;
            let mut split = crate::tarsplit::TarSplitter::new(io::sink());
            let mut tar =
                cvmfs_graphdriver::archive::tarparse::TarReader::new(dec).with_observer(&mut split);
            while tar
                .next_entry()
                .map_err(|e| Error::msg(format!("layer {}: {e}", desc.digest)))?
                .is_some()
            {}
            io::copy(&mut tar.into_inner(), &mut io::sink())
                .map_err(|e| Error::msg(format!("reading blob: {e}")))?;
            split.finish().map_err(Error::msg)?.1
        };
        io::copy(&mut hr, &mut io::sink()).map_err(|e| Error::msg(format!("reading blob: {e}")))?;
        hr.verify(&desc.digest, desc.size)?;
        Ok(ownership::owners_json(&kept))
    })();
    result.map_err(|e| blob_fault_or(&mut hr, &fault, e))
}

/// The blob's own fault (longer, shorter, wrong digest, too slow) when it
/// has one, else `e`: after a failed unpack up to 64 MiB more of the blob are
/// read (within its declared size and deadline), so that a corrupt tar in a
/// small blob shows as what it is, a blob that is not the one the manifest names.
fn blob_fault_or(rest: &mut impl Read, fault: &BlobFault, e: Error) -> Error {
    let _ = io::copy(&mut rest.take(64 << 20), &mut io::sink());
    fault.or(e)
}

/// Do the files in `layerfs` have the owners the tar gives them? Looks at up to
/// 64 entries not owned by root (none: ownership does not matter, say yes).
fn ownership_matches(layerfs: &Path, entries: &[EntryInfo]) -> bool {
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

/// Unpack (or check) every layer, `jobs` at a time; all or nothing: on the
/// first failure the others stop, what they unpacked is dropped, and the
/// first error (naming the target image and the layer) is returned.
pub(super) fn unpack_all(
    job: &Job,
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<Vec<LayerOut>> {
    let p = &job.opts.progress;
    for (i, d) in layers.iter().enumerate() {
        p.add(
            i,
            &format!("layer {}/{} {}", i + 1, layers.len(), d.digest),
            d.size,
        );
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<LayerOut>>>> =
        Mutex::new((0..layers.len()).map(|_| None).collect());
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..job.opts.jobs.max(1).min(layers.len().max(1)) {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= layers.len() {
                    break;
                }
                let r = job.layer(i, &layers[i], &diff_ids[i]).map_err(|e| {
                    failed.store(true, Ordering::Relaxed);
                    // The target name first: it is what the operator asked for.
                    e.context(format!(
                        "image {} (from {}): layer {}",
                        job.opts.name.full(),
                        job.image,
                        layers[i].digest
                    ))
                });
                if let Err(e) = &r {
                    p.fail(i, &e.to_string());
                }
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    all_or_nothing(results.into_inner().unwrap())
        .map_err(|e| e.unwrap_or_else(|| Error::msg("a layer was not processed")))
}

/// Every layer's result, or (after dropping what the good ones unpacked) the
/// first error; `Err(None)` when a layer was never processed.
fn all_or_nothing(
    results: Vec<Option<Result<LayerOut>>>,
) -> std::result::Result<Vec<LayerOut>, Option<Error>> {
    if results.iter().all(|r| matches!(r, Some(Ok(_)))) {
        return Ok(results.into_iter().flatten().flatten().collect());
    }
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
    Err(first)
}

impl Job<'_> {
    /// Layer `i` (`desc`, whose diffID the config says is `want_diff`): reused
    /// when `.layers/XX/<d>` holds it already, else unpacked beside it.
    fn layer(&self, i: usize, desc: &Descriptor, want_diff: &str) -> Result<LayerOut> {
        let hex = digest_hex(&desc.digest)?;
        let dir = layer_dir(&self.opts.repo, hex);
        if RepoPaths::layerfs_of(&dir).is_dir() {
            return self.reuse(i, desc, want_diff, &dir);
        }
        // unpacked in .layers/ itself: not even .layers/XX appears for a layer
        // that fails
        let ts_cache = self.store.tar_split_by_digest(hex);
        let tmp = fsx::tmp_path(&RepoPaths::new(&self.opts.repo).layers_dir().join(hex));
        match self.unpack_into(i, desc, want_diff, &tmp, &ts_cache) {
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

    /// An already published layer, after checking it is what the config says;
    /// its per-blob files are rebuilt when missing (published by DUCC or an
    /// interrupted run).
    fn reuse(&self, i: usize, desc: &Descriptor, want_diff: &str, dir: &Path) -> Result<LayerOut> {
        let hex = digest_hex(&desc.digest)?;
        let info = published_layer_info(dir, want_diff)?;
        let marker = self.store.ownership_lost_marker(hex);
        let owners_p = self.store.owners_by_digest(hex);
        // An empty marker without an owners file: lost owners recorded by
        // a publisher that did not write owners files yet.
        let legacy = !owners_p.exists() && fs::metadata(&marker).is_ok_and(|m| m.len() == 0);
        let ts_cache = self.store.tar_split_by_digest(hex);
        let rebuilt = if !ts_cache.exists() || legacy {
            Some(self.rebuild(desc, dir, &ts_cache, legacy)?)
        } else {
            None
        };
        // owners saved before (a marker, and the file or why there is none;
        // for a layer that kept them, the file when there is one: the driver
        // reads it on clients that claim ownership)
        let saved_owners = || {
            let kept = !marker.exists();
            let owners = match fs::read(&owners_p) {
                Ok(b) => Some(Ok(b)),
                Err(_) if kept => None,
                Err(_) => Some(Err(fs::read_to_string(&marker).unwrap_or_default())),
            };
            (kept, owners)
        };
        let (markers, (ownership_kept, owners)) = match &rebuilt {
            Some(rb) if rb.owners.is_some() => (rb.markers.clone(), (false, rb.owners.clone())),
            Some(rb) => {
                let (kept, owners) = saved_owners();
                let owners = owners.or_else(|| rb.kept_owners.clone().filter(|_| kept));
                (rb.markers.clone(), (kept, owners))
            }
            None => (self.saved_markers(hex), saved_owners()),
        };
        self.opts.progress.done(i, "exists, skipped");
        Ok(LayerOut {
            compressed: desc.digest.clone(),
            size: desc.size,
            diff_id: info.diff_digest,
            diff_size: info.diff_size,
            compression: compression_of(desc),
            uids: BTreeSet::new(),
            gids: BTreeSet::new(),
            written: false,
            ownership_kept,
            owners,
            pending: None,
            markers,
            rebuilt,
            owner_probes: None,
        })
    }

    /// A reused layer's tar-split rebuilt from its blob, and whether the
    /// files carry the image's owners (DUCC's do not); if not, the tar's
    /// owners are kept for the driver to restore. Saved by `place`.
    fn rebuild(
        &self,
        desc: &Descriptor,
        dir: &Path,
        ts_cache: &Path,
        legacy: bool,
    ) -> Result<Rebuilt> {
        let (entries, ts_tmp) = self.tar_split_only(desc, ts_cache)?;
        let lost = legacy || !ownership_matches(&RepoPaths::layerfs_of(dir), &entries);
        let owners = lost.then(|| ownership::owners_json(&entries));
        Ok(Rebuilt {
            ts_tmp,
            ts_cache: ts_cache.to_path_buf(),
            owners,
            kept_owners: (!lost).then(|| ownership::owners_json(&entries)),
            markers: layer::marker_list(&entries),
        })
    }

    /// The tar-split of blob `desc`, written to a temporary name beside
    /// `ts_cache` (returned), and the blob's entries.
    fn tar_split_only(&self, desc: &Descriptor, ts_cache: &Path) -> Result<(KeptEntries, PathBuf)> {
        let (digest, size) = (desc.digest.as_str(), desc.size);
        let (blob, fault) = open_blob(self.src, digest, size)?;
        let mut hr = HashReader::new(blob, None);
        let tmp = fsx::tmp_path(ts_cache);
        fs::create_dir_all(ts_cache.parent().unwrap()).map_err(|e| Error::io(ts_cache, e))?;
        let res = (|| {
            let f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            // the same parser as unpacking: the tar-split describes what was unpacked
            let (gz, entries) = {
                let (dec, _) = decompressor(BufReader::with_capacity(1 << 20, &mut hr))?;
                crate::tarsplit::record(dec, gz)
                    .map_err(|e| Error::msg(format!("layer {digest}: {e}")))?
            };
            io::copy(&mut hr, &mut io::sink()).map_err(|e| Error::msg(format!("{e}")))?;
            hr.verify(digest, size)?;
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

    /// Unpack blob `desc` into `tmp/layerfs` with its tar-split at a temporary
    /// name beside `ts_cache` (returned), checking digest, size and diffID.
    fn unpack_into(
        &self,
        i: usize,
        desc: &Descriptor,
        want_diff: &str,
        tmp: &Path,
        ts_cache: &Path,
    ) -> Result<(LayerOut, PathBuf)> {
        fs::create_dir(tmp).map_err(|e| Error::io(tmp, e))?;
        let (blob, fault) = open_blob(self.src, &desc.digest, desc.size)?;
        let mut hr = HashReader::new(blob, Some((i, self.opts.progress.clone())));
        fs::create_dir_all(ts_cache.parent().unwrap()).map_err(|e| Error::io(ts_cache, e))?;
        let ts_tmp = fsx::tmp_path(ts_cache);
        let ts_file = fs::File::create(&ts_tmp).map_err(|e| Error::io(&ts_tmp, e))?;
        let gz = flate2::write::GzEncoder::new(ts_file, flate2::Compression::fast());
        let result = (|| {
            let (unpacked, gz, compression) = {
                let (dec, compression) = decompressor(BufReader::with_capacity(1 << 20, &mut hr))?;
                let (u, gz) =
                    layer::unpack(dec, &RepoPaths::layerfs_of(tmp), gz, self.opts.no_devices)?;
                (u, gz, compression)
            };
            io::copy(&mut hr, &mut io::sink())
                .map_err(|e| Error::msg(format!("reading blob: {e}")))?;
            hr.verify(&desc.digest, desc.size)?;
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
        match self.describe_unpacked(tmp, &desc.digest, hr.n, unpacked, compression) {
            Ok(o) => Ok((o, ts_tmp)),
            Err(e) => {
                let _ = fs::remove_file(&ts_tmp);
                Err(e)
            }
        }
    }

    /// The DUCC files of a freshly unpacked layer in `tmp` (`layers.json`,
    /// `origin.json`, the catalog marker) and its `LayerOut`.
    fn describe_unpacked(
        &self,
        tmp: &Path,
        digest: &str,
        size: u64,
        unpacked: layer::Unpacked,
        compression: i64,
    ) -> Result<LayerOut> {
        let info = LayerInfo {
            id: unpacked.diff_id.trim_start_matches("sha256:").to_string(),
            created: rfc3339(std::time::SystemTime::now()),
            compressed_diff_digest: digest.to_string(),
            diff_digest: unpacked.diff_id.clone(),
            diff_size: unpacked.diff_size,
        };
        fsx::write_atomic(
            &RepoPaths::layer_info_of(tmp),
            ducc::layers_json(&info).as_bytes(),
            0o644,
        )?;
        let origin = Origin {
            origin: vec![self.config_digest.clone()],
        };
        fsx::write_atomic(
            &RepoPaths::origin_of(tmp),
            ducc::origin_json(&origin).as_bytes(),
            0o644,
        )?;
        // DUCC makes every layerfs a nested catalog
        fsx::write_atomic(&RepoPaths::layerfs_of(tmp).join(CATALOG_MARKER), b"", 0o644)?;
        // unprivileged, the files belong to the publisher: keep the tar's
        // owners. Kept or not, the driver needs them on a client that claims
        // ownership (every file then shows the client's uid).
        let ownership_kept = rustix::process::geteuid().is_root();
        let owners = Some(ownership::owners_json(&unpacked.entries));
        let owner_probes = ownership::owner_probes(&RepoPaths::layerfs_of(tmp), &unpacked.entries);
        Ok(LayerOut {
            compressed: digest.to_string(),
            size,
            uids: unpacked.entries.uids.clone(),
            gids: unpacked.entries.gids.clone(),
            markers: layer::marker_list(&unpacked.entries),
            diff_id: unpacked.diff_id,
            diff_size: unpacked.diff_size,
            compression,
            written: true,
            ownership_kept,
            owners,
            pending: None,
            rebuilt: None,
            owner_probes,
        })
    }
}

/// What `.metadata/layers.json` of the published layer in `dir` says, after
/// checking its diffID is the one the image config names.
fn published_layer_info(dir: &Path, want_diff: &str) -> Result<LayerInfo> {
    let lj = RepoPaths::layer_info_of(dir);
    let text = fs::read(&lj).map_err(|e| Error::io(&lj, e))?;
    let infos: Vec<LayerInfo> =
        serde_json::from_slice(&text).map_err(|e| Error::msg(format!("{}: {e}", lj.display())))?;
    let info = infos
        .into_iter()
        .next()
        .ok_or_else(|| Error::msg(format!("{}: empty", lj.display())))?;
    if info.diff_digest != want_diff {
        return Err(Error::msg(format!(
            "diffID mismatch: the image config says {want_diff}, the published layer has {} ({})",
            info.diff_digest,
            lj.display()
        )));
    }
    Ok(info)
}
