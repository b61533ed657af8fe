//! Where images come from: an OCI image layout directory, a docker-archive tar,
//! or a registry (HTTP API v2). Every source hands out the image's raw manifest
//! bytes, its config bytes and a reader per blob; the publisher verifies digests.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cvmfs_publisher::oci::{self, Descriptor, ImageIndex, ImageManifest, Parsed};
use cvmfs_publisher::{digest_hex, Error, Result};
use sha2::{Digest, Sha256};

use crate::registry::{Registry, TransferLimits};

/// The largest manifest, index or config we accept (containers/image uses 4 MiB too).
pub const MAX_MANIFEST: u64 = oci::MAX_MANIFEST_BYTES;

pub use cvmfs_publisher::oci::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST};

/// `registry/repository:tag` of the published image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

/// Longest `registry/repository`, as docker/distribution's reference allows.
const NAME_MAX: usize = 255;

impl ImageName {
    /// Parse `[registry[:port]/]repository[:tag]` with docker.io normalisation,
    /// following docker/distribution's reference grammar, stricter in one
    /// point: the registry host in lower case too (names that differ in case
    /// only would name two trees for one registry). Anything else is refused
    /// naming the name and the rule it breaks: non-ASCII (look-alikes such as
    /// the Kelvin sign U+212A for `K`), upper case, empty or malformed path
    /// components, a malformed tag, too long, or a digest (content, not a place
    /// to publish to).
    pub fn parse(s: &str) -> Result<ImageName> {
        let bad = |rule: String| Error::msg(format!("invalid image name {s:?}: {rule}"));
        if let Some(c) = s.chars().find(|c| !c.is_ascii()) {
            return Err(bad(format!(
                "{c:?} (U+{:04X}) is not ASCII; names are ASCII only, so that no look-alike of a letter names another tree",
                u32::from(c)
            )));
        }
        if s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("control characters and spaces are not allowed".into()));
        }
        if let Some((_, d)) = s.split_once('@') {
            return Err(bad(match check_digest(d) {
                Ok(()) => "a digest (@...) names content, not a place to publish to: give registry/repository:tag".into(),
                Err(rule) => rule,
            }));
        }
        // docker's rule: the first component is a registry when it has a '.'
        // or a ':', is "localhost", or has upper case
        let (domain, rest) = match s.split_once('/') {
            Some((f, r))
                if f.contains(['.', ':'])
                    || f == "localhost"
                    || f.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (f, r)
            }
            _ => ("docker.io", s),
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (rest, "latest"),
        };
        check_domain(domain).map_err(bad)?;
        check_path(path).map_err(bad)?;
        check_tag(tag).map_err(bad)?;
        let repository = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if domain.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad(format!(
                "registry/repository is longer than {NAME_MAX} characters"
            )));
        }
        Ok(ImageName {
            registry: domain.to_string(),
            repository,
            tag: tag.to_string(),
        })
    }
    pub fn full(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// `host[:port]`: host a domain name (components `[a-z0-9]` with inner `-`,
/// joined by `.`) or `[IPv6]`, port 1 to 65535.
fn check_domain(d: &str) -> std::result::Result<(), String> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || !(1..=65535).contains(&p.parse::<u32>().unwrap_or(0))
        {
            return Err(format!(
                "registry port {p:?} is not a number from 1 to 65535"
            ));
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase() || b == b':')
        {
            return Ok(());
        }
        return Err(format!(
            "registry host {host:?} is not an [IPv6] address in lower case"
        ));
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "registry host {host:?} has upper case (this publisher wants it in lower case)"
        ));
    }
    for c in host.split('.') {
        let b = c.as_bytes();
        let ok = !b.is_empty()
            && b.iter()
                .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || *x == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return Err(format!(
                "registry host component {c:?} is not [a-z0-9] with inner '-' (in {host:?})"
            ));
        }
    }
    Ok(())
}

/// Path components `[a-z0-9]+` joined by one separator (`.`, `_`, `__` or
/// dashes), components joined by `/`.
fn check_path(path: &str) -> std::result::Result<(), String> {
    for c in path.split('/') {
        if c.is_empty() {
            return Err(format!("empty repository path component in {path:?}"));
        }
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "repository path component {c:?} has upper case (repository names are lower case)"
            ));
        }
        if !path_component_ok(c) {
            return Err(format!(
                "repository path component {c:?} is not [a-z0-9]+ joined by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(t: &str) -> std::result::Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = t.len() <= 128
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ))
    }
}

/// `algorithm:hex`: algorithm components `[A-Za-z][A-Za-z0-9]*` joined by
/// `+.-_`, at least 32 hex digits.
fn check_digest(d: &str) -> std::result::Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("digest {d:?} is not algorithm:hex"));
    };
    let alg_ok = alg.split(['+', '.', '-', '_']).all(|c| {
        c.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && c.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "digest {d:?} is not algorithm:hex (at least 32 hex digits)"
        ));
    }
    Ok(())
}

/// A repository name component made from a file name: kept when the grammar
/// allows it, else lower case with every other character a `-` (no leading,
/// trailing or mixed separators), at most 128 characters.
fn sanitize(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    if lower.len() <= 128 && path_component_ok(&lower) {
        return lower;
    }
    let mut t = String::new();
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            t.push(c);
        } else if !t.is_empty() && !t.ends_with('-') {
            t.push('-');
        }
    }
    t.truncate(128);
    let t = t.trim_end_matches('-');
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

/// Read at most MAX_MANIFEST bytes; more is an error.
pub fn read_limited(r: impl Read, what: &str) -> Result<Vec<u8>> {
    read_capped(r, MAX_MANIFEST, what).map_err(|e| match e.0.ends_with(TOO_LARGE) {
        true => Error::msg(format!(
            "{what}: larger than {MAX_MANIFEST} bytes (oversized manifest or config), refused"
        )),
        false => e,
    })
}

const TOO_LARGE: &str = "bytes, refused";

/// Read at most `cap` bytes; more is an error (at most `cap + 1` are consumed).
pub fn read_capped(mut r: impl Read, cap: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut r)
        .take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::msg(format!("{what}: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(Error::msg(format!(
            "{what}: larger than {cap} bytes, refused"
        )));
    }
    Ok(buf)
}

/// The first thing that went wrong with a blob stream, kept beside the reader:
/// a decompressor or tar parser reading through it may turn the reader's error
/// into a vaguer one of its own.
#[derive(Clone, Default)]
pub struct BlobFault(Arc<Mutex<Option<String>>>);

impl BlobFault {
    fn set(&self, msg: &str) {
        self.0
            .lock()
            .unwrap()
            .get_or_insert_with(|| msg.to_string());
    }
    /// The blob's own error, if it had one; else `other`.
    pub fn or(&self, other: Error) -> Error {
        match self.0.lock().unwrap().take() {
            Some(m) => Error::msg(m),
            None => other,
        }
    }
}

/// A blob read to exactly its declared size: one byte more, or the end before
/// it, fails the read at once, and at the end the digest must match. At most
/// `size + 1` bytes are ever taken from the inner reader.
pub struct ExactBlob<R> {
    inner: R,
    digest: String,
    size: u64,
    got: u64,
    hash: Sha256,
    fault: BlobFault,
    ended: bool,
}

impl<R: Read> ExactBlob<R> {
    pub fn new(inner: R, digest: &str, size: u64) -> ExactBlob<R> {
        ExactBlob {
            inner,
            digest: digest.to_string(),
            size,
            got: 0,
            hash: Sha256::new(),
            fault: BlobFault::default(),
            ended: false,
        }
    }
    pub fn fault(&self) -> BlobFault {
        self.fault.clone()
    }
    fn fail(&mut self, why: String) -> io::Error {
        let msg = format!("blob {}: {why}", self.digest);
        self.fault.set(&msg);
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }
    fn at_end(&mut self) -> io::Result<()> {
        if self.got < self.size {
            let (got, size) = (self.got, self.size);
            return Err(self.fail(format!(
                "shorter than the declared {size} bytes: the stream ended after {got}"
            )));
        }
        let have = cvmfs_publisher::layer::hex(&self.hash.clone().finalize());
        if digest_hex(&self.digest).ok() != Some(have.as_str()) {
            return Err(self.fail(format!(
                "digest mismatch, the {} bytes served are sha256:{have}",
                self.got
            )));
        }
        self.ended = true;
        Ok(())
    }
}

impl<R: Read> Read for ExactBlob<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ended || buf.is_empty() {
            return Ok(0);
        }
        // one byte past the declared size is enough to know it is too long
        let room = (self.size - self.got.min(self.size)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.fail(e.to_string())),
        };
        if n == 0 {
            self.at_end()?;
            return Ok(0);
        }
        self.got += n as u64;
        if self.got > self.size {
            let size = self.size;
            return Err(self.fail(format!(
                "longer than the declared {size} bytes, refused at byte {}",
                self.got
            )));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
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
    if size > MAX_MANIFEST {
        return Err(Error::msg(format!(
            "blob {digest}: declared size {size} bytes, more than {MAX_MANIFEST} for a config"
        )));
    }
    let (mut r, fault) = open_blob(src, digest, size)?;
    let mut buf = Vec::with_capacity(size as usize);
    r.read_to_end(&mut buf)
        .map_err(|e| fault.or(Error::msg(format!("blob {digest}: {e}"))))?;
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
        if d.size > MAX_MANIFEST {
            return Err(Error::msg(format!(
                "{}: {}: declared size {} bytes, more than {MAX_MANIFEST} (oversized manifest or config), refused",
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
        let cdigest = format!(
            "sha256:{}",
            cvmfs_publisher::layer::hex(&Sha256::digest(&config))
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
            let d = format!("sha256:{}", cvmfs_publisher::layer::hex(&h.finalize()));
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
        let bytes = serde_json::to_vec_pretty(&m).expect("serializable");
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
                crate::publish::verify_bytes(&bytes, reference, "manifest")?;
            }
            Ok((bytes, Some(served)))
        })
    }
    fn blob(&self, digest: &str, size: u64) -> Result<Box<dyn Read + Send>> {
        self.reg.blob(digest, size)
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
    fn names_follow_the_reference_grammar() {
        for good in [
            "a",
            "reg.io:5000/a/b-c/d__e.f:T_1.x-y",
            "[::1]:5000/x:1",
            "localhost/a--b:latest",
            "127.0.0.1/x",
        ] {
            assert!(ImageName::parse(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("\u{212a}.com/x:1", "U+212A"),
            ("Example.com/x:1", "upper case"),
            ("reg.io/App:1", "upper case"),
            ("reg.io/a//b:1", "empty"),
            ("reg.io/a-/b:1", "\"a-\""),
            ("reg.io/a._b:1", "\"a._b\""),
            ("reg.io/a:.t", "tag"),
            (
                "reg.io/a:1@sha256:0123456789abcdef0123456789abcdef",
                "digest",
            ),
            ("reg.io/a@md5:zz", "algorithm:hex"),
            ("reg.io:0/a:1", "port"),
            ("-reg.io/a:1", "registry host component"),
            ("reg.io/a b:1", "spaces"),
        ] {
            let e = ImageName::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains("invalid image name"),
                "{bad}: {e}"
            );
        }
        let long = format!("reg.io/{}:1", "a".repeat(250));
        assert!(ImageName::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("255"));
    }

    #[test]
    fn sanitized_file_names_are_valid_components() {
        for f in [
            "My App.tar",
            "a-.b",
            "__x__",
            "é",
            "busybox_1.36",
            "x".repeat(300).as_str(),
        ] {
            let c = sanitize(f);
            assert!(path_component_ok(&c) && c.len() <= 128, "{f} -> {c}");
        }
        assert_eq!(sanitize("busybox_1.36"), "busybox_1.36");
    }

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
    fn exact_blob_reads_to_the_declared_size_and_no_further() {
        let data = b"hello world".to_vec();
        let digest = format!("sha256:{}", crate::publish::sha256_hex(&data));
        let mut ok = Vec::new();
        ExactBlob::new(&data[..], &digest, 11)
            .read_to_end(&mut ok)
            .unwrap();
        assert_eq!(ok, data);
        // endless: refused one byte past the declared size
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                b.fill(b'x');
                self.0 += b.len() as u64;
                Ok(b.len())
            }
        }
        let mut r = ExactBlob::new(Endless(0), &digest, 11);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(
            e.to_string().contains("longer than the declared 11 bytes"),
            "{e}"
        );
        assert_eq!(r.inner.0, 12, "bytes taken from the stream");
        let e = ExactBlob::new(&data[..5], &digest, 11)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("shorter than the declared 11"),
            "{e}"
        );
        let e = ExactBlob::new(&b"hello worlD"[..], &digest, 11)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
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

    #[test]
    fn oci_refs() {
        let o = OciLayout::new("/tmp/x:tag", Platform::host());
        assert_eq!(o.describe(), "oci:/tmp/x:tag");
        let o = OciLayout::new("/tmp/x", Platform::host());
        assert_eq!(o.describe(), "oci:/tmp/x");
    }
}
