//! Step 3 of a publish, under the publisher lock: the unpacked layers moved
//! into `.layers/XX/<d>` (tar-split, owners and marker list first), and every
//! used layer's `origin.json` made to name this image.

use std::collections::BTreeSet;
use std::fs;

use cvmfs_format::{MarkerList, RepoPaths};
use serde::Deserialize;

use super::layers::LayerOut;
use super::{ensure_catalog, layer_dir, Job};
use crate::podman::{self, StorePaths};
use crate::{digest_hex, ducc, fsx, Error, Result};

/// Per blob digest, the configs of the images the store records using it.
pub(super) type BlobUsers = std::collections::BTreeMap<String, BTreeSet<String>>;

/// The fields of a `layers.json` entry this step needs.
#[derive(Deserialize)]
struct RecordedLayer {
    id: String,
    #[serde(rename = "compressed-diff-digest")]
    compressed_diff_digest: Option<String>,
}

/// What the store records when the layers are placed: which images use
/// which blob, and per layer ID of the image the blob the store already
/// records it from (maybe another compression of the same content).
struct StoreView {
    users: BlobUsers,
    recorded: Vec<Option<String>>,
}

fn read_store_view(store: &StorePaths, ids: &[String]) -> Result<StoreView> {
    let images = podman::read_index(&store.images_json())?;
    let layers = podman::read_index(&store.layers_json())?;
    let mut by_id = std::collections::HashMap::new();
    for (n, l) in layers.iter().enumerate() {
        let r: RecordedLayer = serde_json::from_value(l.clone()).map_err(|e| {
            Error::msg(format!("{}: entry {n}: {e}", store.layers_json().display()))
        })?;
        by_id.entry(r.id).or_insert(r.compressed_diff_digest);
    }
    Ok(StoreView {
        users: podman::blob_users(&images, &layers),
        recorded: ids
            .iter()
            .map(|id| by_id.get(id).cloned().flatten())
            .collect(),
    })
}

/// Take the publisher lock and place every layer of `outs` (layer IDs
/// `ids`); the lock is returned, to be held until the image is recorded. On
/// failure what is not placed yet is dropped.
pub(super) fn place_all(job: &Job, outs: &mut [LayerOut], ids: &[String]) -> Result<fsx::Lock> {
    // From here on every shared index is read, changed and written: one
    // publisher (or gc) at a time, until the image is recorded.
    let locked = super::publisher_lock(&job.opts.repo, &job.store)
        .and_then(|lock| Ok((lock, read_store_view(&job.store, ids)?)));
    let (lock, view) = match locked {
        Ok(x) => x,
        Err(e) => {
            outs.iter().for_each(LayerOut::discard);
            return Err(e);
        }
    };
    for i in 0..outs.len() {
        // a layer ID the store has already names the blob it was first
        // published from: the image uses that blob's layer through the store
        let r = job
            .place(i, &mut outs[i], &view.users)
            .and_then(|()| match &view.recorded[i] {
                Some(d) if *d != outs[i].compressed => job.add_origin(d, &view.users),
                _ => Ok(()),
            });
        if let Err(e) = r {
            outs[i..].iter().for_each(LayerOut::discard);
            return Err(e);
        }
    }
    Ok(lock)
}

impl Job<'_> {
    /// Put an unpacked layer in place (tar-split first, then the directory),
    /// and make its `origin.json` name this image and every other one `users`
    /// says uses it. Under the publisher lock.
    fn place(&self, i: usize, o: &mut LayerOut, users: &BlobUsers) -> Result<()> {
        let hex = digest_hex(&o.compressed)?.to_string();
        if let Some(rb) = o.rebuilt.take() {
            let r = (|| {
                if let Some(owners) = &rb.owners {
                    self.save_owners(&hex, owners)?;
                } else if let Some(owners) = &rb.kept_owners {
                    self.save_kept_owners(&hex, owners)?;
                }
                self.save_markers(&hex, rb.markers.as_deref())?;
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
                    if o.ownership_kept {
                        self.save_kept_owners(&hex, owners)?;
                    } else {
                        self.save_owners(&hex, owners)?;
                    }
                }
                self.save_markers(&hex, o.markers.as_deref())?;
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
            let status = if placed {
                "written"
            } else {
                "exists (parallel publisher), skipped"
            };
            self.opts.progress.done(i, status);
        }
        self.add_origin(&o.compressed, users)
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

    /// Keep, per blob, the owners of a layer that kept them (no marker: its
    /// files carry them), for the driver on clients that claim ownership.
    /// When they cannot be expressed, none are kept.
    fn save_kept_owners(
        &self,
        hex: &str,
        owners: &std::result::Result<Vec<u8>, String>,
    ) -> Result<()> {
        let p = self.store.owners_by_digest(hex);
        match owners {
            Ok(b) => fsx::write_atomic(&p, b, 0o644),
            Err(_) => {
                let _ = fs::remove_file(&p);
                Ok(())
            }
        }
    }

    /// Keep blob `hex`'s marker list for later publishes that reuse its
    /// `layerfs` (`None`: not expressible, any old list goes).
    fn save_markers(&self, hex: &str, markers: Option<&[String]>) -> Result<()> {
        let p = self.store.markers_by_digest(hex);
        match markers {
            Some(m) => fsx::write_atomic(&p, MarkerList(m.to_vec()).to_json().as_bytes(), 0o644),
            None => match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&p, e)),
                _ => Ok(()),
            },
        }
    }

    /// Blob `hex`'s saved marker list; `None` when there is none (published
    /// before lists were kept) or it does not parse: the driver then walks
    /// the layer, which is slower but right.
    pub(super) fn saved_markers(&self, hex: &str) -> Option<Vec<String>> {
        let b = fs::read(self.store.markers_by_digest(hex)).ok()?;
        MarkerList::from_json(&b).ok().map(|l| l.0)
    }

    /// Make blob `blob`'s `origin.json` name this image and every image
    /// `users` says uses it.
    fn add_origin(&self, blob: &str, users: &BlobUsers) -> Result<()> {
        let repo = &self.opts.repo;
        let dir = layer_dir(repo, digest_hex(blob)?);
        // it was there when this publish decided to reuse it; a gc since then
        // may have removed it (origin.json must not appear without a layer)
        if !RepoPaths::layerfs_of(&dir).is_dir() {
            return Err(Error::msg(format!(
                "{} disappeared before the image was recorded (a concurrent gc?); publish again",
                dir.display()
            )));
        }
        fsx::check_real_dirs(repo, &RepoPaths::metadata_of(&dir))?;
        let mut configs = users.get(blob).cloned().unwrap_or_default();
        configs.insert(self.config_digest.clone());
        if let Some(why) = ducc::ensure_origin(&dir, &configs)? {
            eprintln!(
                "warning: layer {blob}: {why}; rebuilt from the images recorded in podmanStore"
            );
        }
        Ok(())
    }
}
