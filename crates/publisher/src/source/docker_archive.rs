//! `docker-archive:<file>`: an image saved by `docker save` or skopeo.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::name::sanitize;
use super::{image_manifest, ImageName, Source};
use crate::blob::{read_limited, sha256_hex, sniff, Compression};
use crate::oci::{self, Descriptor};
use crate::{Error, Result};

/// A docker-archive (`docker save` / skopeo) tar. It holds no registry manifest:
/// one is synthesised (Docker schema 2) from the archive's `manifest.json`, with
/// each layer's digest being that of the file as stored.
pub struct DockerArchive {
    file: PathBuf,
    /// tar member name -> (offset of data, size)
    members: std::collections::HashMap<String, (u64, u64)>,
    config_name: String,
    layer_names: Vec<String>,
    repo_tags: Vec<String>,
    /// digest -> member name, filled when the manifest is synthesised
    by_digest: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// A `docker save` archive has a few members per layer: more is an attack
/// on the publisher's memory (the member index is kept).
const MAX_ARCHIVE_MEMBERS: usize = 100_000;

impl DockerArchive {
    pub fn open(file: &Path) -> Result<DockerArchive> {
        let what = format!("docker-archive:{}", file.display());
        let f = File::open(file).map_err(|e| Error::io(file, e))?;
        let mut ar = tar::Archive::new(f);
        let mut members = std::collections::HashMap::new();
        let mut links = std::collections::HashMap::new();
        let mut manifest = None;
        for e in ar
            .entries()
            .map_err(|e| Error::msg(format!("{what}: {e}")))?
        {
            let mut e = e.map_err(|e| Error::msg(format!("{what}: {e}")))?;
            if members.len() + links.len() >= MAX_ARCHIVE_MEMBERS {
                return Err(Error::msg(format!(
                    "{what}: more than {MAX_ARCHIVE_MEMBERS} members, not an image archive"
                )));
            }
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let name = name.trim_start_matches("./").to_string();
            if name == "manifest.json" {
                manifest = Some(read_limited(&mut e, &format!("{what}: manifest.json"))?);
            }
            if e.header().entry_type().is_symlink() {
                // `<id>/layer.tar -> ../<hex>.tar`: resolve relative to the link's directory
                let target = e
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .ok_or_else(|| {
                        Error::msg(format!("{what}: symlink {name:?} without a target"))
                    })?;
                let base = Path::new(&name)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(target);
                links.insert(name, base.to_string_lossy().into_owned());
                continue;
            }
            members.insert(name, (e.raw_file_position(), e.size()));
        }
        let manifest = manifest.ok_or_else(|| {
            Error::msg(format!("{what}: no manifest.json (not a docker-archive)"))
        })?;
        let image = oci::parse_docker_archive_manifest(&manifest).map_err(|e| e.context(&what))?;
        let (config_name, layer_names, repo_tags) = (image.config, image.layers, image.repo_tags);
        Ok(DockerArchive {
            file: file.to_path_buf(),
            members,
            config_name,
            layer_names,
            repo_tags,
            by_digest: Default::default(),
        })
    }

    fn member(&self, name: &str) -> Result<impl Read + Send> {
        let (off, size) = *self.members.get(name).ok_or_else(|| {
            Error::msg(format!("{}: member {name:?} is missing", self.describe()))
        })?;
        let mut f = File::open(&self.file).map_err(|e| Error::io(&self.file, e))?;
        f.seek(SeekFrom::Start(off))
            .map_err(|e| Error::io(&self.file, e))?;
        Ok(std::io::BufReader::with_capacity(1 << 20, f).take(size))
    }
    /// The descriptor of layer member `name`: the digest and size of the
    /// member as stored, the media type from its compression.
    fn describe_member(&self, name: &str) -> Result<Descriptor> {
        let mut r = self.member(name)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        let mut head = Vec::new();
        loop {
            let n = r
                .read(&mut buf)
                .map_err(|e| Error::msg(format!("{}: {name}: {e}", self.describe())))?;
            if n == 0 {
                break;
            }
            if head.len() < 4 {
                head.extend_from_slice(&buf[..n.min(4)]);
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        let media_type = match sniff(&head) {
            Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
        };
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest: format!("sha256:{}", crate::layer::hex(&h.finalize())),
            size,
        })
    }
}

impl Source for DockerArchive {
    fn describe(&self) -> String {
        format!("docker-archive:{}", self.file.display())
    }
    fn default_name(&self) -> Result<ImageName> {
        match self.repo_tags.first() {
            Some(t) => ImageName::parse(t),
            None => {
                let stem = self
                    .file
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_lowercase())
                    .unwrap_or_else(|| "image".into());
                ImageName::parse(&format!("localhost/{}:latest", sanitize(&stem)))
            }
        }
    }
    fn manifest(&self) -> Result<Vec<u8>> {
        let config = read_limited(self.member(&self.config_name)?, &self.describe())?;
        let config = Descriptor {
            media_type: oci::MT_DOCKER_CONFIG.to_string(),
            digest: format!("sha256:{}", sha256_hex(&config)),
            size: config.len() as u64,
        };
        let mut map = self.by_digest.lock().unwrap();
        map.insert(config.digest.clone(), self.config_name.clone());
        let mut layers = Vec::new();
        for name in &self.layer_names {
            let layer = self.describe_member(name)?;
            map.insert(layer.digest.clone(), name.clone());
            layers.push(layer);
        }
        let doc = oci::ManifestDocument::new(oci::MT_DOCKER_MANIFEST, &config, &layers);
        let bytes = serde_json::to_vec_pretty(&doc).expect("serializable");
        image_manifest(&bytes).map_err(|e| e.context(self.describe()))?;
        Ok(bytes)
    }
    fn blob(&self, digest: &str, _size: u64) -> Result<Box<dyn Read + Send>> {
        let name = self
            .by_digest
            .lock()
            .unwrap()
            .get(digest)
            .cloned()
            .ok_or_else(|| Error::msg(format!("{}: no blob {digest}", self.describe())))?;
        Ok(Box::new(self.member(&name)?))
    }
}
