//! Step 4 of a publish: the image's DUCC tree besides its layers — the flat
//! root filesystem in `.flat/XX/<c>`, the manifest copy under `.metadata/` and
//! the tag link `<registry>/<repository>:<tag>`.

use std::fs;
use std::path::Path;

use cvmfs_format::RepoPaths;

use super::layers::LayerOut;
use super::{flat_dir, layer_dir};
use crate::ducc;
use crate::oci::{Descriptor, ImageManifest};
use crate::podman::StorePaths;
use crate::source::ImageName;
use crate::{digest_hex, flat, fsx, Error, Result};

/// What `podmanStore/cvmfs/flat/<c>.json` says: this publisher built the flat
/// tree, from these layers.
fn flat_note(outs: &[LayerOut]) -> String {
    serde_json::json!({
        "version": 1,
        "built-by": concat!("cvmfs-podman publish ", env!("CARGO_PKG_VERSION")),
        "layers": outs.iter().map(|o| o.compressed.as_str()).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Build `.flat/XX/<chex>` from the placed layers unless it exists; returns
/// the status for the summary (`written` or `exists, skipped`).
pub(super) fn build_flat(
    repo: &Path,
    store: &StorePaths,
    chex: &str,
    outs: &[LayerOut],
) -> Result<&'static str> {
    let fdir = flat_dir(repo, chex);
    fsx::check_real_dirs(repo, fdir.parent().expect("has parent"))?;
    if fs::symlink_metadata(&fdir).is_ok_and(|m| !m.is_dir()) {
        // not ours (a symlink or file put there): built again
        eprintln!(
            "warning: {}: not a directory, replaced by the image's root filesystem",
            fdir.display()
        );
        fsx::remove_all(&fdir)?;
    }
    if fdir.is_dir() {
        return Ok("exists, skipped");
    }
    let tmp = fsx::tmp_path(&RepoPaths::new(repo).flat_root().join(chex));
    let r = (|| {
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        for o in outs {
            let hex = digest_hex(&o.compressed)?;
            let lf = RepoPaths::layerfs_of(&layer_dir(repo, hex));
            // directories the layer's tar does not name keep the image's times
            let named = flat::named_paths(&store.tar_split_by_digest(hex), &lf)?;
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
            let note = flat_note(outs);
            fsx::write_atomic(&store.flat_built(chex), note.as_bytes(), 0o644)?;
            Ok("written")
        }
        Ok(false) => Ok("exists, skipped"),
        Err(e) => {
            let _ = fsx::remove_all(&tmp);
            Err(e)
        }
    }
}

fn ducc_descriptor(d: &Descriptor) -> ducc::Descriptor {
    ducc::Descriptor {
        media_type: d.media_type.clone(),
        // below oci::MAX_BLOB_SIZE (2^40): fits
        size: d.size as i64,
        digest: d.digest.clone(),
    }
}

/// DUCC's manifest copy `.metadata/<name>/manifest.json` and the tag link
/// `<name>` -> `.flat/XX/<chex>` (replaced atomically).
pub(super) fn write_tag(
    repo: &Path,
    name: &ImageName,
    manifest: &ImageManifest,
    chex: &str,
) -> Result<()> {
    let rel = format!("{}/{}:{}", name.registry, name.repository, name.tag);
    let dm = ducc::Manifest {
        // parse_manifest accepts schema 2 only
        schema_version: 2,
        media_type: manifest.media_type.clone(),
        config: ducc_descriptor(&manifest.config),
        layers: manifest.layers.iter().map(ducc_descriptor).collect(),
    };
    let paths = RepoPaths::new(repo);
    let mpath = paths.manifest_copy(&rel);
    let link = paths.tag_link(&rel);
    for dir in [mpath.parent(), link.parent()].into_iter().flatten() {
        fsx::check_real_dirs(repo, dir)?;
    }
    fsx::write_atomic(&mpath, ducc::manifest_json(&dm).as_bytes(), 0o644)?;
    let depth = rel.split('/').count() - 1;
    let target = format!("{}.flat/{}/{}", "../".repeat(depth), &chex[..2], chex);
    fs::create_dir_all(link.parent().unwrap()).map_err(|e| Error::io(&link, e))?;
    let ltmp = fsx::tmp_path(&link);
    std::os::unix::fs::symlink(&target, &ltmp).map_err(|e| Error::io(&ltmp, e))?;
    fs::rename(&ltmp, &link).map_err(|e| {
        let _ = fs::remove_file(&ltmp);
        Error::io(&link, e)
    })
}
