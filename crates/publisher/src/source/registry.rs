//! `docker://host[:port]/name[:tag|@digest]`: an image in a registry.

use std::io::Read;

use super::{resolve_manifest, ImageName, Platform, Source};
use crate::blob::verify_bytes;
use crate::registry::{Registry, TransferLimits};
use crate::{digest_hex, Result};

pub struct RegistrySource {
    pub reg: Registry,
    pub name: ImageName,
    /// `:tag` or `@sha256:...`
    pub reference: String,
    pub platform: Platform,
}

impl RegistrySource {
    /// `docker://host[:port]/name[:tag|@digest]`
    pub fn new(
        spec: &str,
        platform: Platform,
        tls_verify: bool,
        limits: TransferLimits,
    ) -> Result<RegistrySource> {
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
            reg: Registry::new(&host, &name.repository, tls_verify, limits),
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
        resolve_manifest(&self.reference, &self.platform, |reference, declared| {
            let (bytes, served) = self.reg.manifest(reference, declared.map(|d| d.size))?;
            if reference.starts_with("sha256:") {
                verify_bytes(&bytes, reference, "manifest")?;
            }
            Ok((bytes, Some(served)))
        })
    }
    fn blob(&self, digest: &str, size: u64) -> Result<Box<dyn Read + Send>> {
        self.reg.blob(digest, size)
    }
}
