//! Where images come from: an OCI image layout directory, a docker-archive tar,
//! or a registry (HTTP API v2). Every source hands out the image's raw manifest
//! bytes, its config bytes and a reader per blob; the publisher verifies digests.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use cvmfs_graphdriver::publish::{digest_hex, Error, Result};
use serde_json::Value;

use crate::registry::Registry;

/// The largest manifest or config we accept (containers/image uses 4 MiB too).
pub const MAX_MANIFEST: u64 = 4 << 20;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `registry/repository:tag` of the published image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

impl ImageName {
    /// Parse `[registry/]repository[:tag]` with docker.io normalisation.
    pub fn parse(s: &str) -> Result<ImageName> {
        let (first, rest) = match s.split_once('/') {
            Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => {
                (f.to_string(), r.to_string())
            }
            _ => ("docker.io".to_string(), s.to_string()),
        };
        let (repo, tag) = match rest.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => (rest.clone(), "latest".to_string()),
        };
        let repo = if first == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        // components start with a letter or digit (as in the reference grammar):
        // a name can never land in .layers, .flat or .metadata of the repository
        let comp_ok = |c: &str, extra: &[u8]| {
            c.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"._-".contains(&b)
                        || extra.contains(&b)
                })
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !comp_ok(&first.to_lowercase(), b":")
            || !repo.split('/').all(|c| comp_ok(c, b""))
            || !tag_ok
        {
            return Err(Error::msg(format!(
                "invalid image name {s:?} (registry[:port]/repository[:tag], repository in lower case)"
            )));
        }
        Ok(ImageName {
            registry: first,
            repository: repo,
            tag,
        })
    }
    pub fn full(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// A repository name component made from a file name (lower case, starting
/// with a letter or digit, other characters replaced by `-`).
fn sanitize(s: &str) -> String {
    let t: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let t = t.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if t.is_empty() {
        "image".into()
    } else {
        t.to_string()
    }
}

/// A platform `os/arch[/variant]`.
#[derive(Debug, Clone)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: (arch == "arm64").then(|| "v8".to_string()),
        }
    }
    pub fn parse(s: &str) -> Result<Platform> {
        let p: Vec<&str> = s.split('/').collect();
        match p.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::msg(format!(
                "--platform {s:?}: expected os/arch[/variant]"
            ))),
        }
    }
    fn matches(&self, v: &Value) -> bool {
        let p = &v["platform"];
        p["os"] == self.os.as_str()
            && p["architecture"] == self.arch.as_str()
            && match (&self.variant, p["variant"].as_str()) {
                (Some(want), Some(have)) => want == have,
                // an unspecified variant on either side matches
                _ => true,
            }
    }
}

/// Pick the manifest for `platform` from an index / manifest list.
pub fn select_from_index(index: &Value, platform: &Platform, what: &str) -> Result<String> {
    let list = index["manifests"]
        .as_array()
        .ok_or_else(|| Error::msg(format!("{what}: index without \"manifests\"")))?;
    list.iter()
        .find(|m| platform.matches(m))
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            let have: Vec<String> = list
                .iter()
                .map(|m| {
                    let p = &m["platform"];
                    format!(
                        "{}/{}{}",
                        p["os"].as_str().unwrap_or("?"),
                        p["architecture"].as_str().unwrap_or("?"),
                        p["variant"]
                            .as_str()
                            .map(|v| format!("/{v}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            Error::msg(format!(
                "{what}: no manifest for platform {}/{}{} (index has: {})",
                platform.os,
                platform.arch,
                platform
                    .variant
                    .as_deref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default(),
                have.join(", ")
            ))
        })
}

pub fn is_index(media_type: &str, v: &Value) -> bool {
    media_type == MT_OCI_INDEX
        || media_type == MT_DOCKER_LIST
        || (v.get("manifests").is_some() && v.get("layers").is_none())
}

/// A resolved image: its single-platform manifest bytes and where blobs come from.
pub trait Source: Sync {
    /// For messages: `docker://...`, `oci:...`.
    fn describe(&self) -> String;
    /// The default name to publish under.
    fn default_name(&self) -> Result<ImageName>;
    /// The raw bytes of the image manifest (not an index).
    fn manifest(&self) -> Result<Vec<u8>>;
    /// A reader of blob `digest` (`sha256:<hex>`), unverified: the caller hashes.
    fn blob(&self, digest: &str) -> Result<Box<dyn Read + Send>>;
}

/// Read at most MAX_MANIFEST bytes; more is an error.
pub fn read_limited(mut r: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut r)
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::msg(format!("{what}: {e}")))?;
    if buf.len() as u64 > MAX_MANIFEST {
        return Err(Error::msg(format!(
            "{what}: larger than {MAX_MANIFEST} bytes (oversized manifest or config), refused"
        )));
    }
    Ok(buf)
}

// ---------------------------------------------------------------- oci:<dir>[:tag]

pub struct OciLayout {
    dir: PathBuf,
    tag: Option<String>,
    platform: Platform,
}

impl OciLayout {
    pub fn new(spec: &str, platform: Platform) -> OciLayout {
        // oci:<dir>[:tag] — a tag never contains '/'
        let (dir, tag) = match spec.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') && !d.is_empty() => (d, Some(t.to_string())),
            _ => (spec, None),
        };
        OciLayout {
            dir: PathBuf::from(dir),
            tag,
            platform,
        }
    }
    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest_hex(digest)?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }
    fn read_blob_small(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
        let b = read_limited(f, &format!("{}: blob {digest}", self.describe()))?;
        crate::publish::verify_bytes(&b, digest, &format!("{}: blob", self.describe()))?;
        Ok(b)
    }
}

impl Source for OciLayout {
    fn describe(&self) -> String {
        format!(
            "oci:{}{}",
            self.dir.display(),
            self.tag
                .as_deref()
                .map(|t| format!(":{t}"))
                .unwrap_or_default()
        )
    }
    fn default_name(&self) -> Result<ImageName> {
        let base = self
            .dir
            .canonicalize()
            .unwrap_or_else(|_| self.dir.clone())
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_else(|| "image".into());
        ImageName::parse(&format!(
            "localhost/{}:{}",
            sanitize(&base),
            self.tag.as_deref().unwrap_or("latest")
        ))
    }
    fn manifest(&self) -> Result<Vec<u8>> {
        let ip = self.dir.join("index.json");
        let f = File::open(&ip).map_err(|e| Error::io(&ip, e))?;
        let index: Value = serde_json::from_slice(&read_limited(f, &ip.display().to_string())?)
            .map_err(|e| Error::msg(format!("{}: {e}", ip.display())))?;
        let list = index["manifests"]
            .as_array()
            .ok_or_else(|| Error::msg(format!("{}: no \"manifests\" array", ip.display())))?;
        let chosen = match &self.tag {
            Some(t) => list
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == t.as_str()),
            None if list.len() == 1 => list.first(),
            None => {
                return Err(Error::msg(format!(
                    "{}: {} images in the layout, name one as oci:<dir>:<tag>",
                    self.describe(),
                    list.len()
                )))
            }
        }
        .ok_or_else(|| {
            Error::msg(format!(
                "{}: no image tagged {:?} in {}",
                self.describe(),
                self.tag,
                ip.display()
            ))
        })?;
        let mut digest = chosen["digest"]
            .as_str()
            .ok_or_else(|| Error::msg(format!("{}: descriptor without digest", self.describe())))?
            .to_string();
        for _ in 0..4 {
            let bytes = self.read_blob_small(&digest)?;
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::msg(format!("{}: manifest {digest}: {e}", self.describe())))?;
            let mt = v["mediaType"].as_str().unwrap_or("");
            if is_index(mt, &v) {
                digest = select_from_index(&v, &self.platform, &self.describe())?;
                continue;
            }
            return Ok(bytes);
        }
        Err(Error::msg(format!(
            "{}: nested indexes too deep",
            self.describe()
        )))
    }
    fn blob(&self, digest: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.blob_path(digest)?;
        let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    }
}

// ---------------------------------------------------------- docker-archive:<file>

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
                    .unwrap_or_default();
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
        let v: Value = serde_json::from_slice(&manifest)
            .map_err(|e| Error::msg(format!("{what}: manifest.json: {e}")))?;
        let first = v
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| Error::msg(format!("{what}: manifest.json lists no image")))?;
        let config_name = first["Config"]
            .as_str()
            .ok_or_else(|| Error::msg(format!("{what}: manifest.json: no Config")))?
            .to_string();
        let layer_names = first["Layers"]
            .as_array()
            .ok_or_else(|| Error::msg(format!("{what}: manifest.json: no Layers")))?
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_string())
            .collect();
        let repo_tags = first["RepoTags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
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
        use sha2::{Digest, Sha256};
        let config = read_limited(self.member(&self.config_name)?, &self.describe())?;
        let cdigest = format!(
            "sha256:{}",
            cvmfs_graphdriver::publish::layer::hex(&Sha256::digest(&config))
        );
        let mut map = self.by_digest.lock().unwrap();
        map.insert(cdigest.clone(), self.config_name.clone());
        let mut layers = Vec::new();
        for name in &self.layer_names {
            // hash the member as stored; sniff its compression
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
            let d = format!(
                "sha256:{}",
                cvmfs_graphdriver::publish::layer::hex(&h.finalize())
            );
            let mt = match crate::publish::sniff(&head) {
                crate::publish::Compression::Gzip => {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                }
                crate::publish::Compression::Zstd => {
                    "application/vnd.docker.image.rootfs.diff.tar.zstd"
                }
                crate::publish::Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            };
            map.insert(d.clone(), name.clone());
            layers.push(serde_json::json!({"mediaType": mt, "size": size, "digest": d}));
        }
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": cdigest,
            },
            "layers": layers,
        });
        Ok(serde_json::to_vec_pretty(&m).expect("serializable"))
    }
    fn blob(&self, digest: &str) -> Result<Box<dyn Read + Send>> {
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

// ------------------------------------------------------------ docker://registry

pub struct RegistrySource {
    pub reg: Registry,
    pub name: ImageName,
    /// `:tag` or `@sha256:...`
    pub reference: String,
    pub platform: Platform,
}

impl RegistrySource {
    /// `docker://host[:port]/name[:tag|@digest]`
    pub fn new(spec: &str, platform: Platform, tls_verify: bool) -> Result<RegistrySource> {
        let (path, digest) = match spec.split_once('@') {
            Some((p, d)) => (p, Some(d.to_string())),
            None => (spec, None),
        };
        let mut name = ImageName::parse(path)?;
        let reference = match digest {
            Some(d) => {
                digest_hex(&d)?;
                name.tag = if path.rsplit('/').next().is_some_and(|l| l.contains(':')) {
                    name.tag
                } else {
                    "latest".into()
                };
                d
            }
            None => name.tag.clone(),
        };
        let host = if name.registry == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            name.registry.clone()
        };
        Ok(RegistrySource {
            reg: Registry::new(&host, &name.repository, tls_verify),
            name,
            reference,
            platform,
        })
    }
}

impl Source for RegistrySource {
    fn describe(&self) -> String {
        format!(
            "docker://{}/{}{}{}",
            self.name.registry,
            self.name.repository,
            if self.reference.starts_with("sha256:") {
                "@"
            } else {
                ":"
            },
            self.reference
        )
    }
    fn default_name(&self) -> Result<ImageName> {
        Ok(self.name.clone())
    }
    fn manifest(&self) -> Result<Vec<u8>> {
        let mut reference = self.reference.clone();
        for _ in 0..4 {
            let (bytes, mt) = self.reg.manifest(&reference)?;
            if reference.starts_with("sha256:") {
                crate::publish::verify_bytes(
                    &bytes,
                    &reference,
                    &format!("{}: manifest", self.describe()),
                )?;
            }
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::msg(format!("{}: manifest: {e}", self.describe())))?;
            if is_index(&mt, &v) {
                reference = select_from_index(&v, &self.platform, &self.describe())?;
                continue;
            }
            return Ok(bytes);
        }
        Err(Error::msg(format!(
            "{}: nested indexes too deep",
            self.describe()
        )))
    }
    fn blob(&self, digest: &str) -> Result<Box<dyn Read + Send>> {
        self.reg.blob(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_like_docker() {
        let n = ImageName::parse("busybox").unwrap();
        assert_eq!(n.full(), "docker.io/library/busybox:latest");
        let n = ImageName::parse("127.0.0.1:5000/test/wh:1").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str(), n.tag.as_str()),
            ("127.0.0.1:5000", "test/wh", "1")
        );
        assert_eq!(
            ImageName::parse("localhost/x").unwrap().full(),
            "localhost/x:latest"
        );
        assert_eq!(
            ImageName::parse("user/app:v2").unwrap().full(),
            "docker.io/user/app:v2"
        );
        assert!(ImageName::parse("a/../b:1").is_err());
        assert!(ImageName::parse(".layers/x:1").is_err());
        assert!(ImageName::parse("reg.io/.flat:1").is_err());
        assert!(ImageName::parse("reg.io/x:a:b").is_err());
    }

    #[test]
    fn platform_selection() {
        let idx = serde_json::json!({"manifests": [
            {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(select_from_index(&idx, &p, "t").unwrap(), "sha256:b");
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(select_from_index(&idx, &p, "t").unwrap(), "sha256:a");
        let e = select_from_index(&idx, &Platform::parse("linux/s390x").unwrap(), "t").unwrap_err();
        assert!(e.to_string().contains("linux/arm64/v8, linux/amd64"), "{e}");
    }

    #[test]
    fn oci_refs() {
        let o = OciLayout::new("/tmp/x:tag", Platform::host());
        assert_eq!(o.describe(), "oci:/tmp/x:tag");
        let o = OciLayout::new("/tmp/x", Platform::host());
        assert_eq!(o.describe(), "oci:/tmp/x");
    }
}
