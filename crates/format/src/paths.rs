//! Where every file of the format lives: [`RepoPaths`] for DUCC's tree of a
//! repository, [`StorePaths`] for the image store inside it (`podmanStore`).
//! The path scheme is spelled here and nowhere else.

use std::path::{Path, PathBuf};

/// `.layers/`: one directory per layer blob, `XX/<d>` (`d` = hex of the
/// compressed blob digest, `XX` its first two digits).
pub const LAYERS_DIR: &str = ".layers";
/// `.flat/`: one root filesystem per image, `XX/<c>` (`c` = config digest hex).
pub const FLAT_DIR: &str = ".flat";
/// `.metadata/` at the root (manifest copies) and in every layer directory.
pub const METADATA_DIR: &str = ".metadata";
/// The unpacked layer inside `.layers/XX/<d>/`.
pub const LAYERFS: &str = "layerfs";
/// DUCC's per-layer info, in `.layers/XX/<d>/.metadata/`.
pub const LAYER_INFO_FILE: &str = "layers.json";
/// The images using a layer, in `.layers/XX/<d>/.metadata/`.
pub const ORIGIN_FILE: &str = "origin.json";
/// DUCC's manifest copy, in `.metadata/<registry>/<repository>:<tag>/`.
pub const MANIFEST_COPY_FILE: &str = "manifest.json";
/// Name of the additional image store inside a repository (DUCC's and our
/// publisher's layout).
pub const STORE_DIR_NAME: &str = "podmanStore";
/// The file CVMFS reads as "a nested catalog starts here".
pub const CATALOG_MARKER: &str = ".cvmfscatalog";
/// A layer's record in a store, and in the driver home.
pub const RECORD_FILE: &str = "layer.json";
/// The image's owners, beside a record whose layer lost them.
pub const OWNERSHIP_FILE: &str = "ownership.json";

/// The fan-out directory of a hex name: its first two digits (the whole
/// name if shorter, which validated names never are).
fn fan(hex: &str) -> &str {
    hex.get(..2).unwrap_or(hex)
}

/// `.layers/XX/<hex>/layerfs`, relative to the repository: the `path` a
/// record gives for blob `hex`.
pub fn layerfs_rel(hex: &str) -> String {
    format!("{LAYERS_DIR}/{}/{hex}/{LAYERFS}", fan(hex))
}

/// `.flat/XX/<hex>`, relative to the repository: the `flat` a record gives
/// for image config `hex`.
pub fn flat_rel(hex: &str) -> String {
    format!("{FLAT_DIR}/{}/{hex}", fan(hex))
}

/// In `cvmfs/start/<image id>/`: a symlink to the image's top layer record,
/// [`start_record_target`].
pub const START_RECORD_LINK: &str = "record";
/// In `cvmfs/start/<image id>/`: a symlink to the top layer's directory in
/// the repository, [`start_layer_target`].
pub const START_LAYER_LINK: &str = "layer";
/// In `cvmfs/start/<image id>/`: `exec-0`, `exec-1`, ... (at most
/// [`START_EXEC_MAX`]): symlinks to the files a container of the image
/// executes first (its entrypoint, the interpreter of its `#!` line, the
/// ELF loader), in the image's flat tree; target form as
/// [`start_layer_target`]'s.
pub const START_EXEC_PREFIX: &str = "exec-";
/// Most `exec-N` links per image.
pub const START_EXEC_MAX: usize = 4;

/// The name of the `i`th [`START_EXEC_PREFIX`] link.
pub fn start_exec_link(i: usize) -> String {
    format!("{START_EXEC_PREFIX}{i}")
}

/// In a top layer's record directory `cvmfs/layers/<id>/`: a symlink to the
/// start directory of the image last published with that top layer,
/// [`record_start_target`], so that the driver mounting the layer finds the
/// image's `exec-N` links (images sharing all layers share it, as they share
/// a start-up profile).
pub const RECORD_START_LINK: &str = "start";
/// From `cvmfs/layers/<id>/` to the start directories `cvmfs/start/`.
const RECORDS_TO_START: &str = "../../start/";

/// The target of [`RECORD_START_LINK`] for image `image_id`:
/// `../../start/<image id>`.
pub fn record_start_target(image_id: &str) -> String {
    format!("{RECORDS_TO_START}{image_id}")
}

/// The image ID a [`RECORD_START_LINK`] target names, if it is exactly of
/// [`record_start_target`]'s form (anything else: `None`).
pub fn parse_record_start_target(target: &str) -> Option<&str> {
    let id = target.strip_prefix(RECORDS_TO_START)?;
    crate::id::is_hex64(id).then_some(id)
}

/// How many `../` lead from `<repository>/podmanStore/cvmfs/start/<image id>/`
/// to the repository.
const START_TO_REPOSITORY: &str = "../../../../";
/// From `cvmfs/start/<image id>/` to the records' directory `cvmfs/layers/`.
const START_TO_RECORDS: &str = "../../layers/";

/// The target of [`START_RECORD_LINK`] for top layer `layer_id`:
/// `../../layers/<id>/layer.json`.
pub fn start_record_target(layer_id: &str) -> String {
    format!("{START_TO_RECORDS}{layer_id}/{RECORD_FILE}")
}

/// The layer ID a [`START_RECORD_LINK`] target names, if it is exactly of
/// [`start_record_target`]'s form (anything else: `None`).
pub fn parse_start_record_target(target: &str) -> Option<&str> {
    let id = target
        .strip_prefix(START_TO_RECORDS)?
        .strip_suffix(RECORD_FILE)?
        .strip_suffix('/')?;
    crate::id::is_hex64(id).then_some(id)
}

/// The target of [`START_LAYER_LINK`] for a top layer whose record's `path`
/// is `rel` (relative to the repository, the store being
/// `<repository>/podmanStore`).
pub fn start_layer_target(rel: &str) -> String {
    format!("{START_TO_REPOSITORY}{rel}")
}

/// The path relative to the repository a [`START_LAYER_LINK`] target names:
/// plain names only (no `..`, `.`, empty or absolute part), at most 1 KiB;
/// anything else: `None`.
pub fn parse_start_layer_target(target: &str) -> Option<PathBuf> {
    let rel = target.strip_prefix(START_TO_REPOSITORY)?;
    let plain = |c: &str| !c.is_empty() && c != "." && c != ".." && !c.contains('\0');
    (rel.len() <= 1024 && rel.split('/').all(plain)).then(|| PathBuf::from(rel))
}

/// `<id>.tar-split.gz`: the tar-split file of a layer (containers/storage's
/// name in `cvmfs-layers/`, and ours per blob in `cvmfs/tar-split/`).
pub fn tar_split_file_name(id: &str) -> String {
    format!("{id}.tar-split.gz")
}

/// Paths of a repository in DUCC's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPaths {
    pub root: PathBuf,
}

impl RepoPaths {
    pub fn new(root: impl Into<PathBuf>) -> RepoPaths {
        RepoPaths { root: root.into() }
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join(LAYERS_DIR)
    }
    /// `.layers/XX/<hex>` of blob `hex`.
    pub fn layer_dir(&self, hex: &str) -> PathBuf {
        self.layers_dir().join(fan(hex)).join(hex)
    }
    /// `.layers/XX/<hex>/layerfs`.
    pub fn layerfs(&self, hex: &str) -> PathBuf {
        Self::layerfs_of(&self.layer_dir(hex))
    }
    /// `layerfs` of a layer directory `.layers/XX/<d>`.
    pub fn layerfs_of(layer_dir: &Path) -> PathBuf {
        layer_dir.join(LAYERFS)
    }
    /// `.metadata` of a layer directory `.layers/XX/<d>`.
    pub fn metadata_of(layer_dir: &Path) -> PathBuf {
        layer_dir.join(METADATA_DIR)
    }
    /// `.metadata/layers.json` of a layer directory.
    pub fn layer_info_of(layer_dir: &Path) -> PathBuf {
        Self::metadata_of(layer_dir).join(LAYER_INFO_FILE)
    }
    /// `.metadata/origin.json` of a layer directory.
    pub fn origin_of(layer_dir: &Path) -> PathBuf {
        Self::metadata_of(layer_dir).join(ORIGIN_FILE)
    }
    pub fn flat_root(&self) -> PathBuf {
        self.root.join(FLAT_DIR)
    }
    /// `.flat/XX/<hex>` of image config `hex`.
    pub fn flat_dir(&self, hex: &str) -> PathBuf {
        self.flat_root().join(fan(hex)).join(hex)
    }
    /// `.metadata/` at the root, holding the manifest copies.
    pub fn metadata_root(&self) -> PathBuf {
        self.root.join(METADATA_DIR)
    }
    /// `.metadata/<name>/manifest.json`, `name` = `<registry>/<repository>:<tag>`.
    pub fn manifest_copy(&self, name: &str) -> PathBuf {
        self.metadata_root().join(name).join(MANIFEST_COPY_FILE)
    }
    /// The tag link `<registry>/<repository>:<tag>`.
    pub fn tag_link(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    /// What the tag link of `name` points to: `../…/.flat/XX/<hex>`,
    /// relative to the link's directory.
    pub fn tag_target(name: &str, hex: &str) -> String {
        let depth = name.split('/').count() - 1;
        format!("{}{}", "../".repeat(depth), flat_rel(hex))
    }
    /// The image store inside the repository.
    pub fn store(&self) -> StorePaths {
        StorePaths::new(self.root.join(STORE_DIR_NAME))
    }
}

/// The repository whose store `store` is: its parent when `store` is
/// `<repository>/podmanStore` (never `/`, which would let a record name any
/// host path).
pub fn store_repository(store: &Path) -> Option<PathBuf> {
    if store.file_name()? != STORE_DIR_NAME {
        return None;
    }
    let repo = store.parent()?;
    (repo.parent().is_some()).then(|| repo.to_path_buf())
}

/// Paths inside a `podmanStore` (or a small local store made by `enable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePaths {
    pub root: PathBuf,
}

impl StorePaths {
    pub fn new(root: impl Into<PathBuf>) -> StorePaths {
        StorePaths { root: root.into() }
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("cvmfs-images")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("cvmfs-layers")
    }
    pub fn images_json(&self) -> PathBuf {
        self.images_dir().join("images.json")
    }
    pub fn layers_json(&self) -> PathBuf {
        self.layers_dir().join("layers.json")
    }
    pub fn images_lock(&self) -> PathBuf {
        self.images_dir().join("images.lock")
    }
    pub fn layers_lock(&self) -> PathBuf {
        self.layers_dir().join("layers.lock")
    }
    /// `cvmfs/`: the files of this format (not containers/storage's).
    pub fn cvmfs_dir(&self) -> PathBuf {
        self.root.join("cvmfs")
    }
    /// The publisher lock: `publish` and `gc` hold it (taken before the store
    /// lock) while they read-modify-write any shared index of the repository
    /// (`origin.json` of layers, the tag links and manifest copies, the flat
    /// notes, `images.json`/`layers.json`) and while they sweep temporaries.
    /// Nothing is written into it (who holds it is in `/proc/locks`).
    pub fn publisher_lock(&self) -> PathBuf {
        self.cvmfs_dir().join("publisher.lock")
    }
    /// `cvmfs/layers/<id>`: the directory of layer `id`'s record.
    pub fn record_dir(&self, id: &str) -> PathBuf {
        self.cvmfs_dir().join("layers").join(id)
    }
    /// `cvmfs/layers/<id>/layer.json`, the record the driver reads.
    pub fn record(&self, id: &str) -> PathBuf {
        self.record_dir(id).join(RECORD_FILE)
    }
    /// `ownership.json` beside layer `id`'s record, where the driver reads it.
    pub fn owners_file(&self, id: &str) -> PathBuf {
        self.record_dir(id).join(OWNERSHIP_FILE)
    }
    /// containers/storage's tar-split of layer `id`.
    pub fn tar_split(&self, id: &str) -> PathBuf {
        self.layers_dir().join(tar_split_file_name(id))
    }
    /// `cvmfs/tar-split/`: what is kept per compressed blob digest.
    pub fn per_blob_dir(&self) -> PathBuf {
        self.cvmfs_dir().join("tar-split")
    }
    /// tar-split kept per compressed digest, so a layer reused under another
    /// parent (another layer ID) gets it without downloading the blob again.
    pub fn tar_split_by_digest(&self, digest_hex: &str) -> PathBuf {
        self.per_blob_dir().join(tar_split_file_name(digest_hex))
    }
    /// Marker: the `layerfs` of blob `digest_hex` does not carry the image's
    /// ownership (found unpacked by someone else, e.g. DUCC).
    pub fn ownership_lost_marker(&self, digest_hex: &str) -> PathBuf {
        self.per_blob_dir()
            .join(format!("{digest_hex}.ownership-lost"))
    }
    /// The image's owners of blob `digest_hex`'s layer, kept per blob so that
    /// a layer reused under another parent, or recorded again after its
    /// records were lost, gets them without reading the blob.
    pub fn owners_by_digest(&self, digest_hex: &str) -> PathBuf {
        self.per_blob_dir()
            .join(format!("{digest_hex}.ownership.json"))
    }
    /// The raw whiteout markers of blob `digest_hex`'s `layerfs` (a marker
    /// list, see [`crate::markers`]), kept per blob so that a reused layer's
    /// records list them without reading the blob.
    pub fn markers_by_digest(&self, digest_hex: &str) -> PathBuf {
        self.per_blob_dir()
            .join(format!("{digest_hex}.markers.json"))
    }
    /// The publisher's note that it built `.flat/XX/<config_hex>` itself (from
    /// the layers as unpacked, equal to `umoci unpack`): only such flat trees
    /// are named in layer records, never one DUCC made (DUCC's differ).
    pub fn flat_built(&self, config_hex: &str) -> PathBuf {
        self.cvmfs_dir()
            .join("flat")
            .join(format!("{config_hex}.json"))
    }
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.images_dir().join(id)
    }
    /// `cvmfs/start/<image id>/`: links to what a start of image `id` reads
    /// after the indexes (its top layer's record and directory), so that a
    /// driver guessing the image can fetch them beside the indexes
    /// (symlinks are catalog metadata on CVMFS: reading one downloads
    /// nothing).
    pub fn start_dir(&self, image_id: &str) -> PathBuf {
        self.cvmfs_dir().join("start").join(image_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_start_targets_round_trip_and_refuse_anything_else() {
        let id = "e".repeat(64);
        assert_eq!(record_start_target(&id), format!("../../start/{id}"));
        assert_eq!(
            parse_record_start_target(&record_start_target(&id)),
            Some(id.as_str())
        );
        for bad in [
            format!("../../start/{id}/"),
            format!("../start/{id}"),
            format!("/start/{id}"),
            "../../start/..".to_string(),
            format!("../../start/{}", "E".repeat(64)),
        ] {
            assert_eq!(parse_record_start_target(&bad), None, "{bad}");
        }
    }

    #[test]
    fn start_link_targets_round_trip_and_refuse_anything_else() {
        let id = "a".repeat(64);
        assert_eq!(
            start_record_target(&id),
            format!("../../layers/{id}/layer.json")
        );
        assert_eq!(
            parse_start_record_target(&start_record_target(&id)),
            Some(id.as_str())
        );
        for bad in [
            format!("../../layers/{id}/ownership.json"),
            format!("../../layers/{}/layer.json", "A".repeat(64)),
            format!("../../../layers/{id}/layer.json"),
            format!("/x/../../layers/{id}/layer.json"),
            "../../layers/../layer.json".to_string(),
        ] {
            assert_eq!(parse_start_record_target(&bad), None, "{bad}");
        }
        let rel = layerfs_rel(&id);
        assert_eq!(
            parse_start_layer_target(&start_layer_target(&rel)),
            Some(PathBuf::from(&rel))
        );
        for bad in [
            rel.clone(),
            format!("../../../{rel}"),
            "../../../../.layers/../../etc".to_string(),
            "../../../../.layers//x".to_string(),
            "../../../../".to_string(),
            format!("../../../../{}", "x".repeat(1025)),
        ] {
            assert_eq!(parse_start_layer_target(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_ducc_scheme() {
        let h = "ab".repeat(32);
        let r = RepoPaths::new("/cvmfs/r");
        assert_eq!(layerfs_rel(&h), format!(".layers/ab/{h}/layerfs"));
        assert_eq!(r.layerfs(&h), Path::new("/cvmfs/r").join(layerfs_rel(&h)));
        assert_eq!(flat_rel(&h), format!(".flat/ab/{h}"));
        assert_eq!(r.flat_dir(&h), Path::new("/cvmfs/r").join(flat_rel(&h)));
        assert_eq!(
            RepoPaths::origin_of(&r.layer_dir(&h)),
            Path::new("/cvmfs/r").join(format!(".layers/ab/{h}/.metadata/origin.json"))
        );
        assert_eq!(
            RepoPaths::tag_target("reg.io/a/b:1", &h),
            format!("../../.flat/ab/{h}")
        );
        assert_eq!(
            r.manifest_copy("reg.io/a:1"),
            Path::new("/cvmfs/r/.metadata/reg.io/a:1/manifest.json")
        );
        let s = r.store();
        assert_eq!(
            s.record("x"),
            Path::new("/cvmfs/r/podmanStore/cvmfs/layers/x/layer.json")
        );
        assert_eq!(
            s.tar_split_by_digest("d"),
            Path::new("/cvmfs/r/podmanStore/cvmfs/tar-split/d.tar-split.gz")
        );
        assert_eq!(
            s.tar_split("i"),
            Path::new("/cvmfs/r/podmanStore/cvmfs-layers/i.tar-split.gz")
        );
    }

    #[test]
    fn only_a_podman_store_implies_its_repository() {
        assert_eq!(store_repository(Path::new("/podmanStore")), None);
        assert_eq!(store_repository(Path::new("/a/store")), None);
        assert_eq!(
            store_repository(Path::new("/a/podmanStore")),
            Some(PathBuf::from("/a"))
        );
    }
}
