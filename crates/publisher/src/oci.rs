//! Image manifests, indexes and configs (OCI image spec and Docker schema 2) as
//! a registry or an image file hands them out: input an attacker writes.
//!
//! Each document is parsed once into typed structures and validated before
//! anything uses it: every descriptor has a `sha256:<64 hex>` digest, a size
//! that is a non-negative integer below [`MAX_BLOB_SIZE`] and a media type we
//! handle; a manifest has at most [`MAX_LAYERS`] layers, an index at most
//! [`MAX_INDEX_ENTRIES`] entries; duplicate keys are refused (Go's
//! `encoding/json` would take the last, serde the first: a differential).
//! Nothing here does I/O, so fuzz targets can call [`parse_manifest`],
//! [`parse_config`] and [`parse_docker_archive_manifest`] directly.

use serde::{Deserialize, Serialize};
use serde_json::Number;

use crate::{digest_hex, Error, Result};

/// The largest manifest, index or config accepted (containers/image: 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// More layers than overlayfs can stack (its limit is 500 lower directories).
pub const MAX_LAYERS: usize = 500;
/// Entries in one index / manifest list.
pub const MAX_INDEX_ENTRIES: usize = 1024;
/// The largest blob a descriptor may declare (1 TiB): anything above is a lie
/// meant to defeat the size bound.
pub const MAX_BLOB_SIZE: u64 = 1 << 40;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types we unpack (compression is sniffed from the bytes anyway).
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// A validated content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<64 lower-case hex>`.
    pub digest: String,
    pub size: u64,
}

/// A platform as an index entry states it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// One entry of an index: a manifest (or nested index) for a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub descriptor: Descriptor,
    pub platform: Option<Platform>,
    /// `org.opencontainers.image.ref.name` (the tag in an OCI layout).
    pub ref_name: Option<String>,
}

/// A single-platform image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An OCI index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIndex {
    pub media_type: String,
    pub manifests: Vec<IndexEntry>,
}

/// What a manifest endpoint or blob may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Manifest(ImageManifest),
    Index(ImageIndex),
}

/// The parts of an image config the publisher uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// `rootfs.diff_ids`, each `sha256:<64 hex>`, bottom layer first.
    pub diff_ids: Vec<String>,
    pub created: Option<String>,
}

// ------------------------------------------------------------ documents we write

/// A descriptor as written (keys in the order serde_json's default map gives
/// `json!`, which the publisher used before: the same image gives the same bytes).
#[derive(Debug, Clone, Serialize)]
pub struct DescriptorDocument<'a> {
    pub digest: &'a str,
    #[serde(rename = "mediaType")]
    pub media_type: &'a str,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<&'a str, &'a str>>,
}

impl<'a> From<&'a Descriptor> for DescriptorDocument<'a> {
    fn from(d: &'a Descriptor) -> DescriptorDocument<'a> {
        DescriptorDocument {
            digest: &d.digest,
            media_type: &d.media_type,
            size: d.size,
            annotations: None,
        }
    }
}

/// An image manifest as written (a synthesised one for a docker-archive, one
/// built by `make-oci`); [`parse_manifest`] reads it back.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestDocument<'a> {
    pub config: DescriptorDocument<'a>,
    pub layers: Vec<DescriptorDocument<'a>>,
    #[serde(rename = "mediaType")]
    pub media_type: &'a str,
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
}

impl<'a> ManifestDocument<'a> {
    pub fn new(media_type: &'a str, config: &'a Descriptor, layers: &'a [Descriptor]) -> Self {
        ManifestDocument {
            config: config.into(),
            layers: layers.iter().map(DescriptorDocument::from).collect(),
            media_type,
            schema_version: 2,
        }
    }
}

// ------------------------------------------------------------ raw (serde) forms

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<Number>,
    platform: Option<Platform>,
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    schema_version: Option<Number>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: Option<String>,
    diff_ids: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawConfig {
    rootfs: Option<RawRootfs>,
    created: Option<String>,
}

/// `docker save`'s `manifest.json`: one element per image.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawArchiveImage {
    config: Option<String>,
    repo_tags: Option<Vec<String>>,
    layers: Option<Vec<String>>,
}

/// The first image of a docker-archive `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveImage {
    /// Member name of the config.
    pub config: String,
    pub repo_tags: Vec<String>,
    /// Member names of the layers, bottom first.
    pub layers: Vec<String>,
}

// ------------------------------------------------------------------ validation

fn descriptor(raw: RawDescriptor, what: &str, allowed: &[&str]) -> Result<Descriptor> {
    let digest = raw
        .digest
        .ok_or_else(|| Error::msg(format!("{what}: descriptor without \"digest\"")))?;
    digest_hex(&digest).map_err(|e| e.context(what))?;
    let size = raw
        .size
        .ok_or_else(|| Error::msg(format!("{what} {digest}: descriptor without \"size\"")))?;
    let size = size.as_u64().ok_or_else(|| {
        Error::msg(format!(
            "{what} {digest}: size {size} is not a non-negative integer"
        ))
    })?;
    if size > MAX_BLOB_SIZE {
        return Err(Error::msg(format!(
            "{what} {digest}: declared size {size} bytes is absurd (more than {MAX_BLOB_SIZE})"
        )));
    }
    let media_type = raw
        .media_type
        .ok_or_else(|| Error::msg(format!("{what} {digest}: descriptor without \"mediaType\"")))?;
    if !allowed.is_empty() && !allowed.contains(&media_type.as_str()) {
        return Err(Error::msg(format!(
            "{what} {digest}: media type {media_type:?} is not one we handle ({})",
            allowed.join(", ")
        )));
    }
    Ok(Descriptor {
        media_type,
        digest,
        size,
    })
}

fn json<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Error::msg(format!(
            "{what}: {} bytes, larger than {MAX_MANIFEST_BYTES}",
            bytes.len()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::msg(format!("{what}: {e}")))
}

/// Parse and validate what a manifest endpoint (or a manifest blob) returned.
/// `content_type` is the HTTP `Content-Type` when there is one; the document's
/// own `mediaType` must agree with it when both are given.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed> {
    let raw: RawDocument = json(bytes, "manifest")?;
    match raw.schema_version.as_ref().and_then(Number::as_u64) {
        Some(2) => {}
        other => {
            return Err(Error::msg(format!(
                "manifest: schemaVersion {} (only schema 2 / OCI manifests are supported)",
                other.map_or("missing".to_string(), |v| v.to_string())
            )))
        }
    }
    let header = content_type.filter(|c| !c.is_empty() && *c != "application/json");
    let media_type = match (raw.media_type.as_deref(), header) {
        (Some(m), Some(h)) if m != h => {
            return Err(Error::msg(format!(
                "manifest: mediaType {m:?} but served as {h:?}"
            )))
        }
        (Some(m), _) | (None, Some(m)) => m.to_string(),
        // OCI makes mediaType optional: the shape tells
        (None, None) if raw.manifests.is_some() => MT_OCI_INDEX.to_string(),
        (None, None) => MT_OCI_MANIFEST.to_string(),
    };
    match media_type.as_str() {
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => {
            if raw.manifests.is_some() {
                return Err(Error::msg(
                    "manifest: an image manifest with \"manifests\" (ambiguous)",
                ));
            }
            image_manifest(raw, media_type).map(Parsed::Manifest)
        }
        MT_OCI_INDEX | MT_DOCKER_LIST => {
            if raw.layers.is_some() || raw.config.is_some() {
                return Err(Error::msg(
                    "manifest: an index with \"layers\" or \"config\" (ambiguous)",
                ));
            }
            image_index(raw, media_type).map(Parsed::Index)
        }
        other => Err(Error::msg(format!(
            "manifest: media type {other:?} is not an image manifest or index we handle"
        ))),
    }
}

fn image_manifest(raw: RawDocument, media_type: String) -> Result<ImageManifest> {
    let config = raw
        .config
        .ok_or_else(|| Error::msg("manifest: no \"config\""))?;
    let config = descriptor(config, "config", &[MT_OCI_CONFIG, MT_DOCKER_CONFIG])?;
    let layers = raw
        .layers
        .ok_or_else(|| Error::msg("manifest: no \"layers\""))?;
    if layers.len() > MAX_LAYERS {
        return Err(Error::msg(format!(
            "manifest: {} layers, more than {MAX_LAYERS} (overlayfs stacks at most 500)",
            layers.len()
        )));
    }
    let layers = layers
        .into_iter()
        .enumerate()
        .map(|(i, l)| descriptor(l, &format!("layer {}", i + 1), LAYER_MEDIA_TYPES))
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageManifest {
        media_type,
        config,
        layers,
    })
}

fn image_index(raw: RawDocument, media_type: String) -> Result<ImageIndex> {
    let list = raw
        .manifests
        .ok_or_else(|| Error::msg("index: no \"manifests\""))?;
    if list.len() > MAX_INDEX_ENTRIES {
        return Err(Error::msg(format!(
            "index: {} entries, more than {MAX_INDEX_ENTRIES}",
            list.len()
        )));
    }
    let manifests = list
        .into_iter()
        .enumerate()
        .map(|(i, mut d)| {
            let platform = d.platform.take();
            let ref_name = d
                .annotations
                .take()
                .and_then(|mut a| a.remove("org.opencontainers.image.ref.name"));
            // entries of other types (signatures, attestations as artifacts)
            // are kept but never selected: see `select`
            let descriptor = descriptor(d, &format!("index entry {}", i + 1), ANY_MEDIA_TYPE)?;
            Ok(IndexEntry {
                descriptor,
                platform,
                ref_name,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageIndex {
        media_type,
        manifests,
    })
}

/// For `descriptor`: any media type is allowed (`ImageIndex::select` checks).
const ANY_MEDIA_TYPE: &[&str] = &[];

impl ImageIndex {
    /// The entry for `want` (an unspecified variant on either side matches);
    /// only manifest and index entries count.
    pub fn select(&self, want: &Platform) -> Option<&IndexEntry> {
        self.manifests.iter().find(|m| {
            is_manifest_type(&m.descriptor.media_type)
                && m.platform.as_ref().is_some_and(|p| {
                    p.os == want.os
                        && p.architecture == want.architecture
                        && match (&want.variant, &p.variant) {
                            (Some(a), Some(b)) => a == b,
                            _ => true,
                        }
                })
        })
    }
    /// `os/arch[/variant]` of every entry, for messages.
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .map(|m| match &m.platform {
                Some(p) => format!(
                    "{}/{}{}",
                    p.os,
                    p.architecture,
                    p.variant
                        .as_deref()
                        .map(|v| format!("/{v}"))
                        .unwrap_or_default()
                ),
                None => "?/?".into(),
            })
            .collect()
    }
}

/// A media type an index entry may point to.
pub fn is_manifest_type(mt: &str) -> bool {
    matches!(
        mt,
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST | MT_OCI_INDEX | MT_DOCKER_LIST
    )
}

/// Parse and validate an image config: `rootfs.type` is `layers` and every
/// diffID is `sha256:<64 hex>`.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig> {
    let raw: RawConfig = json(bytes, "config")?;
    let rootfs = raw
        .rootfs
        .ok_or_else(|| Error::msg("config: no \"rootfs\""))?;
    if rootfs.kind.as_deref() != Some("layers") {
        return Err(Error::msg(format!(
            "config: rootfs.type {:?}, expected \"layers\"",
            rootfs.kind
        )));
    }
    let diff_ids = rootfs
        .diff_ids
        .ok_or_else(|| Error::msg("config: no \"rootfs.diff_ids\""))?;
    if diff_ids.len() > MAX_LAYERS {
        return Err(Error::msg(format!(
            "config: {} diffIDs, more than {MAX_LAYERS}",
            diff_ids.len()
        )));
    }
    for d in &diff_ids {
        digest_hex(d).map_err(|e| e.context("config: rootfs.diff_ids"))?;
    }
    Ok(ImageConfig {
        diff_ids,
        created: raw.created,
    })
}

/// Parse a docker-archive `manifest.json` (first image).
pub fn parse_docker_archive_manifest(bytes: &[u8]) -> Result<ArchiveImage> {
    let all: Vec<RawArchiveImage> = json(bytes, "manifest.json")?;
    let first = all
        .into_iter()
        .next()
        .ok_or_else(|| Error::msg("manifest.json lists no image"))?;
    let config = first
        .config
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::msg("manifest.json: no Config"))?;
    let layers = first
        .layers
        .ok_or_else(|| Error::msg("manifest.json: no Layers"))?;
    if layers.len() > MAX_LAYERS {
        return Err(Error::msg(format!(
            "manifest.json: {} layers, more than {MAX_LAYERS}",
            layers.len()
        )));
    }
    if let Some(l) = layers.iter().find(|l| l.is_empty()) {
        return Err(Error::msg(format!("manifest.json: layer name {l:?}")));
    }
    Ok(ArchiveImage {
        config,
        repo_tags: first.repo_tags.unwrap_or_default(),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn manifest(layer: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_MANIFEST}",
            "config":{{"mediaType":"{MT_OCI_CONFIG}","digest":"{D}","size":2}},
            "layers":[{layer}]}}"#
        )
        .into_bytes()
    }

    fn err(b: &[u8]) -> String {
        parse_manifest(b, None).unwrap_err().0
    }

    #[test]
    fn a_good_manifest_parses() {
        let l = format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D}","size":7}}"#
        );
        let Parsed::Manifest(m) = parse_manifest(&manifest(&l), Some(MT_OCI_MANIFEST)).unwrap()
        else {
            panic!("not a manifest")
        };
        assert_eq!(m.layers[0].size, 7);
        assert_eq!(m.config.digest, D);
    }

    #[test]
    fn hostile_descriptors_are_refused() {
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        for (layer, want) in [
            (
                format!(r#"{{"mediaType":"{gz}","size":7}}"#),
                "without \"digest\"",
            ),
            (
                format!(r#"{{"mediaType":"{gz}","digest":"{D}"}}"#),
                "without \"size\"",
            ),
            (
                format!(r#"{{"mediaType":"{gz}","digest":"{D}","size":-1}}"#),
                "not a non-negative",
            ),
            (
                format!(r#"{{"mediaType":"{gz}","digest":"{D}","size":1.5}}"#),
                "not a non-negative",
            ),
            (
                format!(r#"{{"mediaType":"{gz}","digest":"{D}","size":18446744073709551615}}"#),
                "absurd",
            ),
            (
                format!(r#"{{"mediaType":"{gz}","digest":"sha256:../x","size":1}}"#),
                "not sha256:",
            ),
            (
                format!(r#"{{"mediaType":"{gz}","digest":"md5:00","size":1}}"#),
                "not sha256:",
            ),
            (
                format!(r#"{{"mediaType":"text/html","digest":"{D}","size":1}}"#),
                "media type",
            ),
            (
                format!(r#"{{"digest":"{D}","size":1}}"#),
                "layer 1 sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef: descriptor without \"mediaType\"",
            ),
            (
                format!(r#"{{"mediaType":"{gz}","digest":"{D}","digest":"{D}","size":1}}"#),
                "duplicate field",
            ),
        ] {
            let e = err(&manifest(&layer));
            assert!(e.contains(want), "{layer}: {e}");
        }
    }

    #[test]
    fn too_many_layers_and_wrong_schema() {
        let l = format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D}","size":1}}"#
        );
        let many = vec![l; MAX_LAYERS + 1].join(",");
        assert!(err(&manifest(&many)).contains("more than 500"));
        assert!(err(br#"{"schemaVersion":1,"fsLayers":[]}"#).contains("schemaVersion 1"));
        assert!(err(b"[]").contains("manifest"));
        let e = parse_manifest(&manifest(""), Some(MT_OCI_INDEX))
            .unwrap_err()
            .0;
        assert!(e.contains("served as"), "{e}");
    }

    #[test]
    fn index_selects_only_manifests() {
        let b = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_INDEX}","manifests":[
            {{"mediaType":"application/x-sig","digest":"{D}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{MT_OCI_MANIFEST}","digest":"{D}","size":4,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let Parsed::Index(i) = parse_manifest(b.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        let want = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(i.select(&want).unwrap().descriptor.size, 4);
    }

    /// Mutated documents never panic the parsers (the cheap cousin of the
    /// fuzz target on `parse_manifest`).
    #[test]
    fn mutations_never_panic() {
        let l = format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D}","size":1,"platform":{{"os":"linux"}},"annotations":{{"a":"b"}}}}"#
        );
        let seeds = [
            manifest(&l),
            format!(r#"{{"schemaVersion":2,"manifests":[{l}]}}"#).into_bytes(),
            format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{D}"]}},"created":"x"}}"#)
                .into_bytes(),
            br#"[{"Config":"c.json","RepoTags":["a:b"],"Layers":["l.tar"]}]"#.to_vec(),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in &seeds {
            for _ in 0..2000 {
                let mut b = seed.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % b.len().max(1);
                    if b.is_empty() {
                        break;
                    }
                    match next() % 3 {
                        0 => b[i] = next() as u8,
                        1 => {
                            b.remove(i);
                        }
                        _ => {
                            let t = b"{}[]\",:-0e9";
                            b.insert(i, t[(next() as usize) % t.len()]);
                        }
                    }
                }
                let _ = parse_manifest(&b, None);
                let _ = parse_manifest(&b, Some(MT_DOCKER_LIST));
                let _ = parse_config(&b);
                let _ = parse_docker_archive_manifest(&b);
            }
        }
    }

    /// A written manifest has the bytes the `json!` the publisher used
    /// before gave (a re-published docker-archive keeps its manifest digest),
    /// and parses back to the same descriptors.
    #[test]
    fn written_manifests_keep_their_bytes_and_parse_back() {
        let config = Descriptor {
            media_type: MT_DOCKER_CONFIG.into(),
            digest: D.into(),
            size: 2,
        };
        let layers = vec![Descriptor {
            media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
            digest: D.into(),
            size: 7,
        }];
        let doc = ManifestDocument::new(MT_DOCKER_MANIFEST, &config, &layers);
        let before = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG, "size": 2, "digest": D},
            "layers": [{"mediaType": layers[0].media_type, "size": 7, "digest": D}],
        });
        let bytes = serde_json::to_vec_pretty(&doc).unwrap();
        assert_eq!(bytes, serde_json::to_vec_pretty(&before).unwrap());
        let Parsed::Manifest(m) = parse_manifest(&bytes, None).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(
            (m.media_type.as_str(), &m.config, &m.layers),
            (MT_DOCKER_MANIFEST, &config, &layers)
        );
    }

    #[test]
    fn configs() {
        let c = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{D}"]}}}}"#);
        assert_eq!(parse_config(c.as_bytes()).unwrap().diff_ids, vec![D]);
        let e =
            parse_config(br#"{"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#).unwrap_err();
        assert!(e.0.contains("diff_ids"), "{e}");
    }
}
