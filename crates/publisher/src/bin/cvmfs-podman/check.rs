//! `cvmfs-podman check <repo>`: validate a published tree and explain problems.
//! Leftover temporaries of interrupted runs are reported but are not problems
//! (no index names them; the next `publish` removes them).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use cvmfs_format::tarsplit::{TarSplitEntry, ENTRY_SEGMENT};
use cvmfs_format::{CvmfsRecord, Ownership, RepoPaths, StoreRecord};
use cvmfs_publisher::ducc::{self, LayerInfo};
use cvmfs_publisher::podman::{self, big_data_file_name, read_index, StorePaths};
use cvmfs_publisher::{fsx, is_hex64, layer_ids};
use serde_json::Value;

use crate::publish::sha256_hex;
use crate::source::ImageName;

#[derive(Default, serde::Serialize)]
pub struct Report {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    pub images: usize,
    pub layers: usize,
    pub layer_dirs: usize,
    pub flat_dirs: usize,
    pub tags: usize,
    /// The repository files whose content check read: on a client mount,
    /// what it made the client fetch (everything else was `stat`/`readdir`,
    /// answered from the catalogs).
    pub content_read: ContentReads,
    #[serde(skip)]
    reads: std::collections::BTreeMap<PathBuf, ContentRead>,
}

/// What [`Report::content_read`] sums up.
#[derive(Default, serde::Serialize)]
pub struct ContentReads {
    pub files: usize,
    pub bytes: u64,
    /// Files per kind ([`READ_METADATA`], [`READ_TAR_SPLIT`], [`READ_LAYER_FILE`]).
    pub by_kind: std::collections::BTreeMap<&'static str, usize>,
    pub list: Vec<ContentRead>,
}

/// One file whose content check read, by its path relative to the repository.
#[derive(Clone, serde::Serialize)]
pub struct ContentRead {
    pub path: String,
    pub kind: &'static str,
    pub bytes: u64,
}

/// Indexes, records, DUCC's metadata, image configs, profiles: small files
/// plain `check` reads.
pub const READ_METADATA: &str = "metadata";
/// A layer's tar-split, read by `check --deep` only.
pub const READ_TAR_SPLIT: &str = "tar-split";
/// A file of a layer's `layerfs`, read by `check --deep` only.
pub const READ_LAYER_FILE: &str = "layer-file";

impl Report {
    /// Account `bytes` read from `path`. A file read twice counts once, with
    /// the most read of it: a client fetches it once and then has it cached.
    fn read(&mut self, path: &Path, kind: &'static str, bytes: u64) {
        let e = self.reads.entry(path.to_path_buf()).or_insert(ContentRead {
            path: String::new(),
            kind,
            bytes: 0,
        });
        e.bytes = e.bytes.max(bytes);
    }

    /// Account a whole small file a library function read (its size from
    /// `stat`, which the catalog answers without fetching).
    fn read_whole(&mut self, path: &Path) {
        if let Ok(m) = fs::metadata(path) {
            if m.is_file() {
                self.read(path, READ_METADATA, m.len());
            }
        }
    }

    /// Fill [`Report::content_read`] from the accounted reads, with paths
    /// relative to `repo`.
    fn finish_reads(&mut self, repo: &Path) {
        let mut c = ContentReads::default();
        for (p, e) in std::mem::take(&mut self.reads) {
            let rel = p.strip_prefix(repo).unwrap_or(&p);
            c.files += 1;
            c.bytes += e.bytes;
            *c.by_kind.entry(e.kind).or_default() += 1;
            c.list.push(ContentRead {
                path: rel.to_string_lossy().into_owned(),
                ..e
            });
        }
        self.content_read = c;
    }
}

/// [`fs::read`] accounted in `r` as metadata.
fn read_metadata(path: &Path, r: &mut Report) -> io::Result<Vec<u8>> {
    let b = fs::read(path)?;
    r.read(path, READ_METADATA, b.len() as u64);
    Ok(b)
}

/// The hex of a valid `sha256:<hex>` digest.
fn hex_of(d: &str) -> Option<&str> {
    cvmfs_format::digest_hex(d).ok()
}

pub fn check(repo: &Path, deep: bool) -> Report {
    let mut r = Report::default();
    if !repo.is_dir() {
        r.problems
            .push(format!("{}: not a directory", repo.display()));
        return r;
    }
    check_ducc(repo, &mut r);
    check_store(repo, &mut r);
    check_origins(repo, &mut r);
    // start-up profiles (issue 16)
    {
        let store = StorePaths::new(repo.join("podmanStore"));
        let p = cvmfs_publisher::profile::check_profiles(&store, repo);
        r.problems.extend(p.problems);
        r.notes.extend(p.notes);
        account_profiles(&store, &mut r);
    }
    if deep {
        check_content(repo, &mut r);
    }
    r.finish_reads(repo);
    r
}

/// The profiles `check_profiles` read (each whole, bounded): those named
/// `<layer id>.json`; others it reports by name without opening.
fn account_profiles(store: &StorePaths, r: &mut Report) {
    let dir = store
        .root
        .join("cvmfs")
        .join(cvmfs_format::profile::PROFILES_DIR);
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let read = name
            .strip_suffix(".json")
            .is_some_and(cvmfs_format::profile::is_layer_id);
        if read {
            r.read_whole(&e.path());
        }
    }
}

/// Rebuild every layer's tar from its tar-split and its `layerfs` (as
/// containers/storage does for push/save) and compare with the recorded diffID:
/// any changed, missing or truncated file shows.
fn check_content(repo: &Path, r: &mut Report) {
    let repo = RepoPaths::new(repo);
    let store = repo.store();
    for xx in read_dirs(&repo.layers_dir()) {
        for d in read_dirs(&xx) {
            check_layer_content(&store, &d, r);
        }
    }
}

/// A symlink planted for a layer directory's `layerfs` or `.metadata`.
fn planted_symlinks(layer_dir: &Path) -> Vec<PathBuf> {
    [
        RepoPaths::layerfs_of(layer_dir),
        RepoPaths::metadata_of(layer_dir),
    ]
    .into_iter()
    .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()))
    .collect()
}

/// DUCC's `layers.json` of a layer directory, when it reads.
fn read_layer_info(layer_dir: &Path, r: &mut Report) -> Result<Vec<LayerInfo>, String> {
    read_metadata(&RepoPaths::layer_info_of(layer_dir), r)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Vec<LayerInfo>>(&b).map_err(|e| e.to_string()))
}

/// [`check_content`] for one layer directory `.layers/XX/<d>`.
fn check_layer_content(store: &StorePaths, d: &Path, r: &mut Report) {
    let hex = d.file_name().unwrap().to_string_lossy().into_owned();
    if !is_hex64(&hex) || !planted_symlinks(d).is_empty() {
        return; // reported by check_ducc
    }
    let Ok(info) = read_layer_info(d, r) else {
        return;
    };
    let Some(info) = info.first() else { return };
    let ts = store.tar_split_by_digest(&hex);
    let Ok(f) = fs::File::open(&ts) else {
        r.notes.push(format!(
            "{}: no tar-split, content not verified",
            d.display()
        ));
        return;
    };
    let what = format!("layer sha256:{hex}");
    match rebuild_digest(f, &ts, &RepoPaths::layerfs_of(d), r) {
        Err(b) => r.problems.push(format!("{what}: layerfs content: {b}")),
        Ok((digest, size)) if digest != info.diff_digest || size != info.diff_size => {
            r.problems.push(format!(
                "{what}: layerfs content changed: it rebuilds to {digest} ({size} bytes), the layer is {} ({} bytes)",
                info.diff_digest, info.diff_size
            ))
        }
        Ok(_) => {}
    }
}

/// The digest and size of the tar that tar-split `f` (at `ts`) rebuilds with
/// the files of `layerfs`; what is wrong otherwise. Streamed a line at a
/// time: a layer of many long names has a tar-split of hundreds of MB,
/// never held whole.
fn rebuild_digest(
    f: fs::File,
    ts: &Path,
    layerfs: &Path,
    r: &mut Report,
) -> Result<(String, u64), String> {
    let mut counted = CountingReader { inner: f, count: 0 };
    let rebuilt = rebuild_digest_from(&mut counted, ts, layerfs, r);
    r.read(ts, READ_TAR_SPLIT, counted.count);
    rebuilt
}

/// [`rebuild_digest`] from the (gzip) tar-split bytes `f`.
fn rebuild_digest_from(
    f: &mut impl io::Read,
    ts: &Path,
    layerfs: &Path,
    r: &mut Report,
) -> Result<(String, u64), String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut h = Sha256::new();
    let mut size = 0u64;
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(f));
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut lines)
            .take(TAR_SPLIT_LINE_MAX)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break,
            Ok(_) if line.last() != Some(&b'\n') && line.len() as u64 >= TAR_SPLIT_LINE_MAX => {
                return Err(format!(
                    "{}: an entry longer than {TAR_SPLIT_LINE_MAX} bytes",
                    ts.display()
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{}: {e}", ts.display())),
        }
        let Ok(e) = serde_json::from_slice::<TarSplitEntry>(&line) else {
            return Err(format!("{}: malformed entry", ts.display()));
        };
        size += hash_tar_split_entry(&e, ts, layerfs, &mut h, r)?;
    }
    let digest = cvmfs_format::sha256_digest(&cvmfs_publisher::layer::hex(&h.finalize()));
    Ok((digest, size))
}

/// Feed one tar-split entry's bytes to `h`: a segment's payload, or the
/// layer file a file entry names (hashed as it is read: a layer file can be
/// gigabytes). Returns how many bytes it added.
fn hash_tar_split_entry(
    e: &TarSplitEntry,
    ts: &Path,
    layerfs: &Path,
    h: &mut sha2::Sha256,
    r: &mut Report,
) -> Result<u64, String> {
    use std::io::Read;
    if e.kind == ENTRY_SEGMENT {
        let p = b64decode(e.payload.as_deref().unwrap_or(""));
        sha2::Digest::update(h, &p);
        return Ok(p.len() as u64);
    }
    let want = e.size.unwrap_or(0);
    if want == 0 {
        return Ok(0);
    }
    // a name that is not UTF-8 is kept as bytes in name_raw
    let raw = match &e.name_raw {
        Some(b) => b64decode(b),
        None => e.name.as_deref().unwrap_or("").as_bytes().to_vec(),
    };
    let name = String::from_utf8_lossy(&raw);
    let rel = Path::new(std::ffi::OsStr::from_bytes(&raw));
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("{}: entry {name:?} leaves the layer", ts.display()));
    }
    let file = layerfs.join(rel);
    let read = fs::File::open(&file).and_then(|f| {
        let mut hashing = HashWriter(h);
        io::copy(&mut f.take(want + 1), &mut hashing)
    });
    if let Ok(n) = read {
        r.read(&file, READ_LAYER_FILE, n);
    }
    match read {
        Ok(n) if n == want => Ok(want),
        Ok(n) => Err(format!(
            "file {name:?} has {} bytes, the layer had {want}",
            if n > want {
                format!("more than {want}")
            } else {
                n.to_string()
            }
        )),
        Err(err) => Err(format!("file {name:?}: {err}")),
    }
}

/// Longest tar-split line `check --deep` reads (an entry with its base64
/// header bytes; PAX headers of long names make them a few KiB).
const TAR_SPLIT_LINE_MAX: u64 = 16 << 20;

/// Counts the bytes read through it (the compressed tar-split bytes a client
/// fetched).
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: io::Read> io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Feeds what is written to a hash.
struct HashWriter<'a>(&'a mut sha2::Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sha2::Digest::update(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn b64decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// Temporaries of interrupted runs: reported (not problems: no index names
/// them), with what removes them.
fn report_tmp(repo: &Path, r: &mut Report) {
    for p in fsx::find_tmp(repo) {
        let why = match fsx::tmp_owner(&p) {
            Some(pid) if fsx::publisher_alive(pid) => {
                format!("being written by the running publisher pid {pid}")
            }
            _ => format!(
                "leftover of an interrupted publish (invisible to readers; `cvmfs-podman gc --repo {}` or the next `cvmfs-podman publish` into it removes it)",
                repo.display()
            ),
        };
        r.notes.push(format!("{}: {why}", p.display()));
    }
}

fn check_ducc(repo: &Path, r: &mut Report) {
    report_tmp(repo, r);
    let paths = RepoPaths::new(repo);
    for xx in read_dirs(&paths.layers_dir()) {
        for d in read_dirs(&xx) {
            check_layer_dir(&xx, &d, r);
        }
    }
    for xx in read_dirs(&paths.flat_root()) {
        for d in read_dirs(&xx) {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with(fsx::TMP_PREFIX) {
                r.flat_dirs += 1;
            }
        }
    }
    check_tag_links(repo, r);
    check_manifest_copies(repo, r);
}

/// One layer directory `.layers/<xx>/<d>`: named by its blob, real
/// directories, DUCC's `layers.json` agreeing with the name, an `origin.json`.
fn check_layer_dir(xx: &Path, d: &Path, r: &mut Report) {
    let name = d.file_name().unwrap().to_string_lossy().into_owned();
    if name.starts_with(fsx::TMP_PREFIX) {
        return;
    }
    r.layer_dirs += 1;
    if !is_hex64(&name) || !xx.ends_with(&name[..2.min(name.len())]) {
        r.problems
            .push(format!("{}: not .layers/XX/<sha256 hex>", d.display()));
        return;
    }
    let planted = planted_symlinks(d);
    for p in &planted {
        r.problems.push(format!(
            "{}: a symlink, not a directory (nothing is read or written through it; put the layer's directory back or remove the layer)",
            p.display()
        ));
    }
    if !planted.is_empty() {
        return;
    }
    if !RepoPaths::layerfs_of(d).is_dir() {
        r.problems
            .push(format!("{}: layerfs is missing", d.display()));
    }
    let lj = RepoPaths::layer_info_of(d);
    match read_layer_info(d, r) {
        Ok(v) if v.len() == 1 => {
            if v[0].compressed_diff_digest != cvmfs_format::sha256_digest(&name) {
                r.problems.push(format!(
                    "{}: compressed-diff-digest {} does not match the directory name",
                    lj.display(),
                    v[0].compressed_diff_digest
                ));
            }
            if hex_of(&v[0].diff_digest) != Some(v[0].id.as_str()) {
                r.problems
                    .push(format!("{}: id and diff-digest disagree", lj.display()));
            }
        }
        Ok(_) => r
            .problems
            .push(format!("{}: not a one-element array", lj.display())),
        Err(e) => r.problems.push(format!("{}: {e}", lj.display())),
    }
    let oj = RepoPaths::origin_of(d);
    r.read_whole(&oj);
    match ducc::read_origin(&oj) {
        Ok(Some(_)) => {}
        Ok(None) => r.problems.push(format!("{}: missing", oj.display())),
        Err(e) => r.problems.push(format!(
            "{e} (`cvmfs-podman gc` or publishing an image using the layer rebuilds it)"
        )),
    }
}

/// Tag links: every symlink outside the dot directories and podmanStore.
fn check_tag_links(repo: &Path, r: &mut Report) {
    let mut stack: Vec<(PathBuf, usize)> = fs::read_dir(repo)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !n.starts_with('.') && n != cvmfs_format::paths::STORE_DIR_NAME
        })
        .map(|e| (e.path(), 0))
        .collect();
    while let Some((p, depth)) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if p.file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(fsx::TMP_PREFIX.as_bytes()))
        {
            continue; // reported as a leftover
        }
        if md.file_type().is_symlink() {
            r.tags += 1;
            check_recorded_name(repo, &p, "tag link", r);
            check_tag_target(repo, &p, r);
        } else if md.is_dir() && depth < 64 {
            for e in fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push((e.path(), depth + 1));
            }
        }
    }
}

/// A tag link `p` points, relatively, to a directory inside `.flat`.
fn check_tag_target(repo: &Path, p: &Path, r: &mut Report) {
    let t = fs::read_link(p).unwrap_or_default();
    let ts = t.to_string_lossy();
    let ok_form = !t.is_absolute() && ts.contains(&format!("{}/", cvmfs_format::paths::FLAT_DIR));
    let resolved = p.parent().unwrap().join(&t);
    if !ok_form {
        r.problems.push(format!(
            "{}: link target {ts:?} is not a relative path into .flat",
            p.display()
        ));
    } else if !resolved.is_dir() {
        r.problems.push(format!(
            "{}: link target {ts:?} does not exist",
            p.display()
        ));
    } else if let (Ok(a), Ok(b)) = (
        resolved.canonicalize(),
        RepoPaths::new(repo).flat_root().canonicalize(),
    ) {
        if !a.starts_with(&b) {
            r.problems
                .push(format!("{}: link leaves .flat", p.display()));
        }
    }
}

/// A name the repository records in a path (`<registry>/<repository>:<tag>`
/// of a tag link or of a `.metadata` directory, relative to `base`) must be a
/// valid image name with its registry spelled out; DUCC's forms without a tag
/// or with `@sha256:<hex>` are fine. Anything else was not written by a
/// publisher (a look-alike, upper case, a planted path).
fn check_recorded_name(base: &Path, p: &Path, what: &str, r: &mut Report) {
    let rel = p.strip_prefix(base).unwrap_or(p);
    let Some(name) = rel.to_str() else {
        r.problems
            .push(format!("{}: {what} whose name is not UTF-8", p.display()));
        return;
    };
    let (named, digest) = match name.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (name, None),
    };
    let parsed = ImageName::parse(named).and_then(|n| {
        if let Some(d) = digest {
            cvmfs_publisher::digest_hex(d)?;
        }
        if named.starts_with(&format!("{}/", n.registry)) {
            Ok(n)
        } else {
            Err(cvmfs_publisher::Error::msg(format!(
                "{name:?} does not start with its registry"
            )))
        }
    });
    if let Err(e) = parsed {
        r.problems.push(format!("{}: {what}: {e}", p.display()));
    }
}

/// The tag link of a name images.json gives to image `id`, when there is one,
/// points to that image's flat tree (both are written under one publisher
/// lock; disagreeing, podman and a DUCC reader would see different images).
fn check_tag_link(repo: &Path, name: &str, id: &str, r: &mut Report) {
    if ImageName::parse(name).map(|n| n.full()).as_deref() != Ok(name) {
        return; // reported with the name
    }
    let link = repo.join(name);
    let Ok(target) = fs::read_link(&link) else {
        return;
    };
    if target.file_name() != Some(std::ffi::OsStr::new(id)) {
        r.problems.push(format!(
            "{}: the tag link points to {}, but images.json gives the name {name} to image {id}",
            link.display(),
            target.display()
        ));
    }
}

/// `.metadata/<registry>/<repository>:<tag>/manifest.json`: a valid name, and
/// a regular file (never a symlink) that parses as DUCC's manifest copy.
fn check_manifest_copies(repo: &Path, r: &mut Report) {
    let base = RepoPaths::new(repo).metadata_root();
    let mut stack = vec![(base.clone(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let n = e.file_name();
            if n.as_encoded_bytes().starts_with(fsx::TMP_PREFIX.as_bytes()) {
                continue;
            }
            if n == cvmfs_format::paths::MANIFEST_COPY_FILE {
                check_recorded_name(&base, &dir, "manifest copy", r);
                let read = fsx::read_record(&p, cvmfs_format::ducc::MANIFEST_COPY_MAX_BYTES);
                if let Ok(b) = &read {
                    r.read(&p, READ_METADATA, b.len() as u64);
                }
                let parsed = read.map_err(|e| e.to_string()).and_then(|b| {
                    serde_json::from_slice::<ducc::Manifest>(&b).map_err(|e| e.to_string())
                });
                if let Err(e) = parsed {
                    r.problems.push(format!(
                        "{}: {e} (publishing the image again rewrites it)",
                        p.display()
                    ));
                }
            } else if e.file_type().is_ok_and(|t| t.is_dir()) && depth < 64 {
                stack.push((p, depth + 1));
            }
        }
    }
}

/// Every layer's `origin.json` names every image podmanStore records using
/// the layer: `gc` keeps a layer directory only while some image it names is
/// left, so a missing name would let `gc` remove a layer in use.
fn check_origins(repo: &Path, r: &mut Report) {
    let paths = RepoPaths::new(repo);
    let store = paths.store();
    let (Ok(images), Ok(layers)) = (
        read_index(&store.images_json()),
        read_index(&store.layers_json()),
    ) else {
        return; // reported by check_store
    };
    for (blob, configs) in podman::blob_users(&images, &layers) {
        let Some(hex) = hex_of(&blob) else { continue };
        let dir = paths.layer_dir(hex);
        if !dir.is_dir() {
            continue; // reported with the layer record
        }
        let oj = RepoPaths::origin_of(&dir);
        r.read_whole(&oj);
        let Ok(Some(origin)) = ducc::read_origin(&oj) else {
            continue; // reported by check_ducc
        };
        for c in configs.iter().filter(|c| !origin.origin.contains(c)) {
            r.problems.push(format!(
                "layer {blob}: {} does not name image {c}, which uses it (gc could remove the layer from under it; `cvmfs-podman gc` or publishing again adds it)",
                oj.display()
            ));
        }
    }
}

/// The subdirectories of `d`, sorted, without publisher temporaries (a layer
/// being unpacked in `.layers/` is not an `XX` directory; they are reported
/// on their own).
fn read_dirs(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter(|e| {
            !e.file_name()
                .as_encoded_bytes()
                .starts_with(fsx::TMP_PREFIX.as_bytes())
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// A record's marker list must be what its layer holds: the
/// driver trusts it instead of looking, so a wrong list shows deleted files
/// or hides live ones.
fn check_markers(rec: &CvmfsRecord, layerfs: &Path, what: &str, r: &mut Report) {
    let Some(listed) = &rec.markers else {
        return;
    };
    let found = match cvmfs_graphdriver::mount::whiteouts::scan_markers(layerfs) {
        Ok(m) => m,
        Err(e) => {
            r.problems.push(format!("{what}: looking for markers: {e}"));
            return;
        }
    };
    let found: std::collections::BTreeSet<String> = found
        .iter()
        .map(|m| m.path().to_string_lossy().into_owned())
        .collect();
    let listed: std::collections::BTreeSet<String> = listed.0.iter().cloned().collect();
    // Listed AUFS metadata that unpacking dropped is harmless (hides nothing).
    let missing: Vec<&String> = found.difference(&listed).collect();
    let extra: Vec<&String> = listed
        .difference(&found)
        .filter(|p| {
            !p.rsplit('/').next().unwrap_or("").starts_with(".wh..wh.")
                || p.ends_with(".wh..wh..opq")
        })
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        r.problems.push(format!(
            "{what}: record's markers differ from {}: not listed {missing:?}, listed but absent {extra:?}",
            layerfs.display()
        ));
    }
}

/// `ownership.json` beside a record (a layer that kept its owners has one too:
/// the driver reads it on a client that claims ownership): the driver refuses a layer whose file
/// does not parse or names a path the layer does not have, so check both; a
/// record whose files lost their owners without one shows them wrong.
fn check_owners(
    store: &StorePaths,
    id: &str,
    rec: &CvmfsRecord,
    layerfs: &Path,
    what: &str,
    r: &mut Report,
) {
    let p = store.owners_file(id);
    let lost = rec.ownership == Ownership::Lost;
    let bytes = match read_metadata(&p, r) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if lost {
                r.notes.push(format!(
                    "{what}: the files lost their owners and no {} restores them (they show the repository owner)",
                    p.display()
                ));
            }
            return;
        }
        Err(e) => {
            r.problems.push(format!("{what}: {}: {e}", p.display()));
            return;
        }
    };
    let owners = match cvmfs_format::parse_owners(&bytes) {
        Ok(o) => o,
        Err(e) => {
            r.problems.push(format!(
                "{what}: {}: the driver refuses it: {e}",
                p.display()
            ));
            return;
        }
    };
    for o in owners {
        if !in_layer(layerfs, &o.path) {
            r.problems.push(format!(
                "{what}: {}: entry {:?} is not in the layer (the driver refuses the layer)",
                p.display(),
                o.path
            ));
        }
    }
}

/// `rel` is in the layer: every parent a real directory, the path itself
/// present (no symlink followed).
fn in_layer(layerfs: &Path, rel: &Path) -> bool {
    let mut cur = layerfs.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    comps.iter().enumerate().all(|(i, c)| {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(_) if i + 1 == comps.len() => true,
            Ok(m) => m.is_dir(),
            Err(_) => false,
        }
    })
}

fn check_store(repo: &Path, r: &mut Report) {
    let store = RepoPaths::new(repo).store();
    if !store.images_json().exists() && !store.layers_json().exists() {
        // also what a first publish interrupted before its first index leaves
        r.notes
            .push("no podmanStore indexes (nothing published yet?)".into());
        return;
    }
    check_lock_files(&store, r);
    let by_id = read_layer_index(&store, r);
    for (id, l) in &by_id {
        check_layer(repo, &store, id, l, &by_id, r);
    }
    check_images(repo, &store, &by_id, r);
}

/// The lock files: regular files (never a symlink), the store's two present.
fn check_lock_files(store: &StorePaths, r: &mut Report) {
    for f in [
        store.images_lock(),
        store.layers_lock(),
        store.publisher_lock(),
    ] {
        if fs::symlink_metadata(&f).is_ok_and(|m| !m.is_file()) {
            r.problems.push(format!(
                "{}: not a regular file (a symlink?): the publisher refuses to open it; remove it",
                f.display()
            ));
        } else if !f.is_file() && f != store.publisher_lock() {
            r.problems.push(format!(
                "{}: lock file missing (a read-only store needs it)",
                f.display()
            ));
        }
    }
}

/// `layers.json` by layer ID (IDs that are not 64 hex digits, or listed
/// twice, reported).
fn read_layer_index(store: &StorePaths, r: &mut Report) -> HashMap<String, Value> {
    r.read_whole(&store.layers_json());
    let layers = match read_index(&store.layers_json()) {
        Ok(v) => v,
        Err(e) => {
            r.problems.push(e.to_string());
            Vec::new()
        }
    };
    r.layers = layers.len();
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for l in &layers {
        let id = l["id"].as_str().unwrap_or("").to_string();
        if !is_hex64(&id) {
            r.problems
                .push(format!("layers.json: layer ID {id:?} is not 64 hex digits"));
            continue;
        }
        if by_id.insert(id.clone(), l.clone()).is_some() {
            r.problems
                .push(format!("layers.json: layer {id} listed twice"));
        }
    }
    by_id
}

/// One layer of `layers.json`: its ID follows from its chain, its tar-split
/// is there, and its record agrees with the index and the tree.
fn check_layer(
    repo: &Path,
    store: &StorePaths,
    id: &str,
    l: &Value,
    by_id: &HashMap<String, Value>,
    r: &mut Report,
) {
    let what = format!("layer {id}");
    let parent = l["parent"].as_str();
    if let Some(p) = parent {
        if !by_id.contains_key(p) {
            r.problems
                .push(format!("{what}: parent {p} is not in layers.json"));
        }
    }
    let Some(diff) = l["diff-digest"].as_str().and_then(hex_of) else {
        r.problems.push(format!("{what}: no valid diff-digest"));
        return;
    };
    let want_id = match parent {
        None => diff.to_string(),
        Some(p) => sha256_hex(format!("{p}+{diff}").as_bytes()),
    };
    if want_id != id {
        r.problems.push(format!(
            "{what}: ID does not follow from parent and diffID (expected {want_id})"
        ));
    }
    if !store.tar_split(id).is_file() {
        r.problems.push(format!(
            "{what}: {} is missing (push/save would fail)",
            store.tar_split(id).display()
        ));
    }
    let Some(cd) = l["compressed-diff-digest"].as_str().and_then(hex_of) else {
        r.problems
            .push(format!("{what}: no valid compressed-diff-digest"));
        return;
    };
    check_layer_record(repo, store, id, l, cd, &what, r);
}

/// Layer `id`'s record (blob `cd`): one the driver accepts, naming the
/// blob's `layerfs`, the index's parent, a flat tree that is there; its
/// ownership file and marker list matching the layer.
fn check_layer_record(
    repo: &Path,
    store: &StorePaths,
    id: &str,
    l: &Value,
    cd: &str,
    what: &str,
    r: &mut Report,
) {
    let rec_path = store.record(id);
    let parsed = read_metadata(&rec_path, r)
        .map_err(|e| e.to_string())
        .and_then(|b| cvmfs_format::parse_store_record(&b).map_err(|e| e.to_string()));
    let want_path = cvmfs_format::layerfs_rel(cd);
    let wrong_kind = || {
        format!(
            "{what}: record {} should have version 1, kind cvmfs, path {want_path}",
            rec_path.display()
        )
    };
    let rec = match parsed {
        Ok(StoreRecord::Cvmfs { record, .. }) => record,
        Ok(StoreRecord::Local { .. }) => {
            r.problems.push(wrong_kind());
            return;
        }
        Err(e) => {
            r.problems
                .push(format!("{what}: record {}: {e}", rec_path.display()));
            return;
        }
    };
    if rec.path != want_path {
        r.problems.push(wrong_kind());
    }
    if rec.parent.as_deref() != l["parent"].as_str() {
        r.problems
            .push(format!("{what}: record parent differs from layers.json"));
    }
    let canonical_repo = repo.canonicalize().unwrap_or_else(|_| repo.to_path_buf());
    let rrepo = Path::new(&rec.repository);
    if rrepo != canonical_repo && rrepo != repo {
        r.notes.push(format!(
            "{what}: record names repository {} (this tree is at {}): fine if it is served there",
            rec.repository,
            repo.display()
        ));
    }
    let ld = repo.join(&want_path);
    if !ld.is_dir() {
        r.problems
            .push(format!("{what}: {} is missing", ld.display()));
    } else {
        let lj = RepoPaths::layer_info_of(ld.parent().unwrap());
        if let Ok(v) = read_layer_info(ld.parent().unwrap(), r) {
            if v.first().map(|i| i.diff_digest.as_str()) != l["diff-digest"].as_str() {
                r.problems
                    .push(format!("{what}: diff-digest differs from {}", lj.display()));
            }
        }
        check_owners(store, id, &rec, &ld, what, r);
        check_markers(&rec, &ld, what, r);
    }
    if let Some(f) = &rec.flat {
        if !repo.join(f).is_dir() {
            r.problems.push(format!(
                "{what}: record names flat tree {f:?} which is not there (the driver stacks the layers instead)"
            ));
        }
    }
}

/// `images.json`: IDs, names (normal form, once, tag links agreeing), top
/// layers, big data and configs.
fn check_images(repo: &Path, store: &StorePaths, by_id: &HashMap<String, Value>, r: &mut Report) {
    r.read_whole(&store.images_json());
    let images = match read_index(&store.images_json()) {
        Ok(v) => v,
        Err(e) => {
            r.problems.push(e.to_string());
            Vec::new()
        }
    };
    r.images = images.len();
    let mut names = HashSet::new();
    for img in &images {
        let id = img["id"].as_str().unwrap_or("");
        let what = format!("image {id}");
        if !is_hex64(id) {
            r.problems
                .push(format!("images.json: image ID {id:?} is not 64 hex digits"));
            continue;
        }
        for n in img["names"].as_array().into_iter().flatten() {
            let ns = n.as_str().unwrap_or("");
            check_image_name(store, ns, &what, r);
            check_tag_link(repo, ns, id, r);
            if !names.insert(ns.to_string()) {
                r.problems
                    .push(format!("{what}: name {n} used by two images"));
            }
        }
        let top = img["layer"].as_str().unwrap_or("");
        if !by_id.contains_key(top) {
            r.problems
                .push(format!("{what}: top layer {top} is not in layers.json"));
        }
        check_big_data(store, img, id, &what, r);
        check_image_config(store, id, top, by_id, &what, r);
        check_start_links(repo, store, id, top, &what, r);
    }
}

/// Image `id`'s start links (`cvmfs/start/<id>/`, optional: stores published
/// before them have none), when there: of the publisher's form, naming its
/// top layer `top` and a layer directory that exists.
fn check_start_links(
    repo: &Path,
    store: &StorePaths,
    id: &str,
    top: &str,
    what: &str,
    r: &mut Report,
) {
    use cvmfs_format::paths::{
        parse_start_layer_target, parse_start_record_target, START_LAYER_LINK, START_RECORD_LINK,
    };
    check_record_start_link(store, top, what, r);
    let dir = store.start_dir(id);
    if fs::symlink_metadata(&dir).is_err() {
        return;
    }
    let target = |name: &str| {
        let t = fs::read_link(dir.join(name)).ok()?;
        t.to_str().map(str::to_string)
    };
    let record = target(START_RECORD_LINK);
    if record.as_deref().and_then(parse_start_record_target) != Some(top) {
        r.problems.push(format!(
            "{what}: {}: does not link to its top layer {top}'s record (found {record:?}; publish the image again)",
            dir.join(START_RECORD_LINK).display()
        ));
    }
    let layer = target(START_LAYER_LINK);
    match layer.as_deref().and_then(parse_start_layer_target) {
        Some(rel) if repo.join(&rel).is_dir() => {}
        _ => r.problems.push(format!(
            "{what}: {}: does not link to a layer directory of the repository (found {layer:?}; publish the image again)",
            dir.join(START_LAYER_LINK).display()
        )),
    }
    for i in 0..cvmfs_format::paths::START_EXEC_MAX {
        let name = cvmfs_format::paths::start_exec_link(i);
        if fs::symlink_metadata(dir.join(&name)).is_err() {
            break;
        }
        let exec = target(&name);
        let plain_file = |rel: &Path| {
            fs::symlink_metadata(repo.join(rel)).is_ok_and(|m| m.file_type().is_file())
        };
        match exec.as_deref().and_then(parse_start_layer_target) {
            Some(rel) if plain_file(&rel) => {}
            _ => r.problems.push(format!(
                "{what}: {}: does not link to a regular file of the repository (found {exec:?}; publish the image again)",
                dir.join(&name).display()
            )),
        }
    }
}

/// Top layer `top`'s `start` link (optional), when there: of the
/// publisher's form, naming an image's start directory.
fn check_record_start_link(store: &StorePaths, top: &str, what: &str, r: &mut Report) {
    use cvmfs_format::paths::{parse_record_start_target, RECORD_START_LINK};
    let link = store.record_dir(top).join(RECORD_START_LINK);
    let Ok(target) = fs::read_link(&link) else {
        return;
    };
    match target.to_str().and_then(parse_record_start_target) {
        Some(image) if store.start_dir(image).is_dir() => {}
        _ => r.problems.push(format!(
            "{what}: {}: does not link to an image's start directory (found {target:?}; publish the image again)",
            link.display()
        )),
    }
}

/// A name of `images.json`: a valid image name, in normal form.
fn check_image_name(store: &StorePaths, ns: &str, what: &str, r: &mut Report) {
    match ImageName::parse(ns) {
        Ok(parsed) if parsed.full() == ns => {}
        Ok(_) => r.problems.push(format!(
            "{what}: {}: name {ns:?} is not in normal form",
            store.images_json().display()
        )),
        Err(e) => r
            .problems
            .push(format!("{what}: {}: {e}", store.images_json().display())),
    }
}

/// Every big data item of image `id` is there with its recorded digest and size.
fn check_big_data(store: &StorePaths, img: &Value, id: &str, what: &str, r: &mut Report) {
    let dir = store.image_dir(id);
    for k in img["big-data-names"].as_array().into_iter().flatten() {
        let k = k.as_str().unwrap_or("");
        let f = dir.join(big_data_file_name(k));
        match read_metadata(&f, r) {
            Err(e) => r
                .problems
                .push(format!("{what}: big data {k:?} ({}): {e}", f.display())),
            Ok(b) => {
                let d = cvmfs_format::sha256_digest(&sha256_hex(&b));
                if img["big-data-digests"][k].as_str() != Some(d.as_str()) {
                    r.problems.push(format!(
                        "{what}: big data {k:?} does not match its recorded digest"
                    ));
                }
                if img["big-data-sizes"][k].as_u64() != Some(b.len() as u64) {
                    r.problems.push(format!(
                        "{what}: big data {k:?} does not match its recorded size"
                    ));
                }
            }
        }
    }
}

/// Image `id`'s config: its digest is the ID, and its diffIDs chain to the
/// top layer through layers all in `layers.json`.
fn check_image_config(
    store: &StorePaths,
    id: &str,
    top: &str,
    by_id: &HashMap<String, Value>,
    what: &str,
    r: &mut Report,
) {
    let cfg_path = store
        .image_dir(id)
        .join(big_data_file_name(&cvmfs_format::sha256_digest(id)));
    let b = match read_metadata(&cfg_path, r) {
        Err(e) => {
            r.problems
                .push(format!("{what}: config {}: {e}", cfg_path.display()));
            return;
        }
        Ok(b) => b,
    };
    if sha256_hex(&b) != id {
        r.problems
            .push(format!("{what}: the config's digest is not the image ID"));
    }
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    let diffs: Vec<&str> = v["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
        .collect();
    let ids = layer_ids(&diffs);
    if ids.last().map(String::as_str) != Some(top) {
        r.problems.push(format!(
            "{what}: the layer chain of the config's diffIDs does not end in the top layer {top}"
        ));
    }
    for lid in &ids {
        if !by_id.contains_key(lid) {
            r.problems
                .push(format!("{what}: layer {lid} is missing from layers.json"));
        }
    }
}
