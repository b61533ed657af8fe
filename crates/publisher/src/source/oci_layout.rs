//! `oci:<dir>[:tag]`: an OCI image layout directory.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use super::name::sanitize;
use super::{resolve_manifest, ImageName, Platform, Source};
use crate::blob::{read_limited, ExactBlob};
use crate::oci::{self, Descriptor, Parsed, MAX_MANIFEST_BYTES};
use crate::{digest_hex, Error, Result};

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
    /// A blob file, which must be a regular file (not a device or FIFO that
    /// never ends or blocks).
    fn open_blob_file(&self, digest: &str) -> Result<File> {
        let p = self.blob_path(digest)?;
        let md = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
        if !md.is_file() {
            return Err(Error::msg(format!(
                "{}: blob {digest}: {} is not a regular file",
                self.describe(),
                p.display()
            )));
        }
        File::open(&p).map_err(|e| Error::io(&p, e))
    }
    /// A manifest or index blob: exactly its declared size, verified.
    fn read_document(&self, d: &Descriptor) -> Result<Vec<u8>> {
        if d.size > MAX_MANIFEST_BYTES {
            return Err(Error::msg(format!(
                "{}: {}: declared size {} bytes, more than {MAX_MANIFEST_BYTES} (oversized manifest or config), refused",
                self.describe(),
                d.digest,
                d.size
            )));
        }
        let f = self.open_blob_file(&d.digest)?;
        let mut r = ExactBlob::new(f, &d.digest, d.size);
        let mut b = Vec::new();
        r.read_to_end(&mut b)
            .map_err(|e| Error::msg(format!("{}: {e}", self.describe())))?;
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
        if !std::fs::metadata(&ip)
            .map_err(|e| Error::io(&ip, e))?
            .is_file()
        {
            return Err(Error::msg(format!("{}: not a regular file", ip.display())));
        }
        let f = File::open(&ip).map_err(|e| Error::io(&ip, e))?;
        let bytes = read_limited(f, &ip.display().to_string())?;
        let index = match oci::parse_manifest(&bytes, None).map_err(|e| e.context(ip.display()))? {
            Parsed::Index(i) => i,
            Parsed::Manifest(_) => {
                return Err(Error::msg(format!(
                    "{}: an image manifest, not an index",
                    ip.display()
                )))
            }
        };
        let list = &index.manifests;
        let chosen = match &self.tag {
            Some(t) => list
                .iter()
                .find(|m| m.ref_name.as_deref() == Some(t.as_str())),
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
        let first = chosen.descriptor.clone();
        if !oci::is_manifest_type(&first.media_type) {
            return Err(Error::msg(format!(
                "{}: {}: media type {:?} is not an image manifest or index",
                self.describe(),
                first.digest,
                first.media_type
            )));
        }
        resolve_manifest(&first.digest, &self.platform, |_, declared| {
            let d = declared.unwrap_or(&first);
            Ok((self.read_document(d)?, Some(d.media_type.clone())))
        })
    }
    fn blob(&self, digest: &str, _size: u64) -> Result<Box<dyn Read + Send>> {
        let f = self.open_blob_file(digest)?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_refs() {
        let o = OciLayout::new("/tmp/x:tag", Platform::host());
        assert_eq!(o.describe(), "oci:/tmp/x:tag");
        let o = OciLayout::new("/tmp/x", Platform::host());
        assert_eq!(o.describe(), "oci:/tmp/x");
    }
}
