//! Where images come from: an OCI image layout directory, a docker-archive tar,
//! or a registry (HTTP API v2). Every source hands out the image's raw manifest
//! bytes and a reader per blob; [`open_blob`] bounds and verifies what it reads.
//!
//! Dependency order inside the library: `oci` (typed documents) and `blob`
//! (bounded reading) below `registry` (the HTTP client) below `source` below
//! `publish`; nothing here depends on what is above it.

use std::io::Read;

use crate::blob::{BlobFault, ExactBlob};
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest, Parsed, MAX_MANIFEST_BYTES};
use crate::registry::TransferLimits;
use crate::{digest_hex, Error, Result};

mod docker_archive;
mod name;
mod oci_layout;
mod registry;

pub use docker_archive::DockerArchive;
pub use name::ImageName;
pub use oci_layout::OciLayout;
pub use registry::RegistrySource;

/// How `open` reaches a registry.
#[derive(Debug, Clone, Copy)]
pub struct RegistryOptions {
    /// Verify TLS certificates; false also allows plain http.
    pub tls_verify: bool,
    pub limits: TransferLimits,
}

/// The source `image` names: `docker://host/name:tag`, `oci:<dir>[:tag]` or
/// `docker-archive:<file>`; `platform` picks from a multi-platform index.
pub fn open(image: &str, platform: Platform, registry: RegistryOptions) -> Result<Box<dyn Source>> {
    if let Some(s) = image.strip_prefix("oci:") {
        Ok(Box::new(OciLayout::new(s, platform)))
    } else if let Some(f) = image.strip_prefix("docker-archive:") {
        Ok(Box::new(DockerArchive::open(std::path::Path::new(f))?))
    } else if let Some(r) = image.strip_prefix("docker://") {
        Ok(Box::new(RegistrySource::new(
            r,
            platform,
            registry.tls_verify,
            registry.limits,
        )?))
    } else {
        Err(Error::msg(format!(
            "{image:?}: expected docker://host/name:tag, oci:<dir>[:tag] or docker-archive:<file>"
        )))
    }
}

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
    fn spec(&self) -> oci::Platform {
        oci::Platform {
            os: self.os.clone(),
            architecture: self.arch.clone(),
            variant: self.variant.clone(),
        }
    }
}

/// Pick the manifest for `platform` from an index / manifest list.
pub fn select_from_index<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor> {
    index
        .select(&platform.spec())
        .map(|e| &e.descriptor)
        .ok_or_else(|| {
            Error::msg(format!(
                "{what}: no manifest for platform {}/{}{} (index has: {})",
                platform.os,
                platform.arch,
                platform
                    .variant
                    .as_deref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default(),
                index.platforms().join(", ")
            ))
        })
}

/// How deep indexes may nest (an index of indexes of manifests is 2).
const MAX_INDEX_DEPTH: usize = 4;

/// Follows index entries down to an image manifest, refusing loops and deep
/// nesting: `fetch(reference, declared)` returns a document's bytes and its
/// served media type; the first reference is a tag or digest, later ones the
/// digests (and declared descriptors) index entries name.
fn resolve_manifest(
    first: &str,
    platform: &Platform,
    mut fetch: impl FnMut(&str, Option<&Descriptor>) -> Result<(Vec<u8>, Option<String>)>,
) -> Result<Vec<u8>> {
    let mut reference = first.to_string();
    let mut declared: Option<Descriptor> = None;
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..MAX_INDEX_DEPTH {
        if seen.contains(&reference) {
            return Err(Error::msg(format!(
                "index entry {reference} points back to an index it came from (a loop)"
            )));
        }
        seen.push(reference.clone());
        let (bytes, served) = fetch(&reference, declared.as_ref())?;
        let parsed = oci::parse_manifest(&bytes, served.as_deref())
            .map_err(|e| e.context(format!("manifest {reference}")))?;
        let media_type = match &parsed {
            Parsed::Manifest(m) => &m.media_type,
            Parsed::Index(i) => &i.media_type,
        };
        if let Some(d) = &declared {
            if &d.media_type != media_type {
                return Err(Error::msg(format!(
                    "manifest {reference}: the index declares {:?}, the document is {media_type:?}",
                    d.media_type
                )));
            }
        }
        match parsed {
            Parsed::Manifest(_) => return Ok(bytes),
            Parsed::Index(idx) => {
                let d = select_from_index(&idx, platform, &format!("index {reference}"))?.clone();
                reference = d.digest.clone();
                declared = Some(d);
            }
        }
    }
    Err(Error::msg(format!(
        "indexes nested deeper than {MAX_INDEX_DEPTH} (at {reference})"
    )))
}

/// The validated image manifest in `bytes` (what `Source::manifest` returns).
pub fn image_manifest(bytes: &[u8]) -> Result<ImageManifest> {
    match oci::parse_manifest(bytes, None)? {
        Parsed::Manifest(m) => Ok(m),
        Parsed::Index(_) => Err(Error::msg(
            "manifest: an index where an image manifest belongs",
        )),
    }
}

/// A resolved image: its single-platform manifest bytes and where blobs come from.
pub trait Source: Sync {
    /// For messages: `docker://...`, `oci:...`.
    fn describe(&self) -> String;
    /// The default name to publish under.
    fn default_name(&self) -> Result<ImageName>;
    /// The raw bytes of the image manifest (not an index), validated by
    /// `oci::parse_manifest`.
    fn manifest(&self) -> Result<Vec<u8>>;
    /// A reader of blob `digest` (`sha256:<hex>`) whose manifest declares
    /// `size` bytes, unchecked: use `open_blob`, which bounds and verifies it.
    fn blob(&self, digest: &str, size: u64) -> Result<Box<dyn Read + Send>>;
}

/// Open blob `digest` of `src`, bounded to its declared `size` and verified
/// at its end (see `ExactBlob`); the fault slot keeps the blob's own error.
pub fn open_blob(
    src: &dyn Source,
    digest: &str,
    size: u64,
) -> Result<(Box<dyn Read + Send>, BlobFault)> {
    digest_hex(digest)?;
    let r = ExactBlob::new(src.blob(digest, size)?, digest, size);
    let fault = r.fault();
    Ok((Box::new(r), fault))
}

/// A small blob (config) read whole through `open_blob`.
pub fn read_small_blob(src: &dyn Source, digest: &str, size: u64) -> Result<Vec<u8>> {
    if size > MAX_MANIFEST_BYTES {
        return Err(Error::msg(format!(
            "blob {digest}: declared size {size} bytes, more than {MAX_MANIFEST_BYTES} for a config"
        )));
    }
    let (mut r, fault) = open_blob(src, digest, size)?;
    let mut buf = Vec::with_capacity(size as usize);
    r.read_to_end(&mut buf)
        .map_err(|e| fault.or(Error::msg(format!("blob {digest}: {e}"))))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{MT_OCI_INDEX, MT_OCI_MANIFEST};

    #[test]
    fn platform_selection() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests": [
            {{"mediaType":"{MT_OCI_MANIFEST}","size":1,"digest": "{}", "platform": {{"os": "linux", "architecture": "arm64", "variant": "v8"}}}},
            {{"mediaType":"{MT_OCI_MANIFEST}","size":1,"digest": "{}", "platform": {{"os": "linux", "architecture": "amd64"}}}}]}}"#,
            d('a'),
            d('b')
        );
        let Parsed::Index(idx) = oci::parse_manifest(idx.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(select_from_index(&idx, &p, "t").unwrap().digest, d('b'));
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(select_from_index(&idx, &p, "t").unwrap().digest, d('a'));
        let e = select_from_index(&idx, &Platform::parse("linux/s390x").unwrap(), "t").unwrap_err();
        assert!(e.to_string().contains("linux/arm64/v8, linux/amd64"), "{e}");
    }

    #[test]
    fn index_loops_and_depth_are_refused() {
        // a fetcher that does not check digests: the tag and D both serve an
        // index naming D (with tag -> A -> B -> A for the loop through two)
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index_naming = |target: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_INDEX}","manifests":[{{"mediaType":"{MT_OCI_INDEX}","digest":"{target}","size":1,"platform":{{"os":"linux","architecture":"{}"}}}}]}}"#,
                Platform::host().arch
            )
            .into_bytes()
        };
        let p = Platform::host();
        let e = resolve_manifest("tag", &p, |r, _| {
            let next = if r == d('a') { d('b') } else { d('a') };
            Ok((index_naming(&next), Some(MT_OCI_INDEX.into())))
        })
        .unwrap_err();
        assert!(e.0.contains("loop"), "{e}");
        let mut n = 0;
        let e = resolve_manifest("tag", &p, |_, _| {
            n += 1;
            let next = d(char::from_digit(n, 16).unwrap());
            Ok((index_naming(&next), Some(MT_OCI_INDEX.into())))
        })
        .unwrap_err();
        assert!(e.0.contains("nested deeper than 4"), "{e}");
    }
}
