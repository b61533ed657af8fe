//! Helpers of the `cvmfs_*` tests: lay an image out in a stand-in CVMFS
//! repository (as DUCC does, or with our publisher's layer-writing code), write
//! the additional image store records, and build the `umoci unpack` reference.
#![allow(dead_code)]

pub mod claim;
pub mod corpus;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cvmfs_format::ownership::{OwnerEntry, OwnershipFile};
use cvmfs_format::{
    flat_rel, layerfs_rel, CvmfsRecord, MarkerList, Ownership, RepoPaths, StorePaths, Whiteouts,
};
use sha2::{Digest, Sha256};

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// How a layer directory is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// As DUCC's `cvmfs_server ingest` leaves it: the tar extracted as it is
    /// (raw `.wh.*` files), every file owned by the repository owner (0:0).
    Ducc,
    /// With `cvmfs_publisher::layer::unpack` (ownership kept).
    Publisher,
    /// DUCC's layout plus `ownership.json` beside each record.
    DuccOwners,
    /// Our publisher's layout, the records listing each layer's markers (the
    /// driver then never walks a layer to find them).
    PublisherListed,
    /// As `PublisherListed`, plus the image's flat root filesystem built by
    /// the publisher's code and named by the top layer's record: the driver
    /// mounts it instead of the layers.
    PublisherFlat,
}

impl Style {
    /// Layer directories written by our publisher's code.
    pub fn is_publisher(self) -> bool {
        matches!(
            self,
            Style::Publisher | Style::PublisherListed | Style::PublisherFlat
        )
    }
}

/// One layer laid out in a repository.
pub struct Laid {
    pub id: String,
    pub diff_id: String,
    /// Path relative to the repository.
    pub path: String,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Extract `tar` into `dir` the way `cvmfs_server ingest` does for DUCC: no
/// whiteout logic, ownership not kept. GNU tar is an independent unpacker.
fn ducc_extract(tar: &[u8], dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let mut child = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--no-same-owner",
            "-xpf",
            "-",
            "-C",
        ])
        .arg(dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The repository owner owns everything (root publishing: 0:0), as
    // `cvmfs_server ingest` without --keep-ownership leaves it. chown clears
    // setuid/setgid bits, so put the modes back as the tar had them.
    let mut modes = Vec::new();
    for e in walk(dir) {
        let md = fs::symlink_metadata(&e).unwrap();
        modes.push((e.clone(), md));
    }
    for (p, md) in modes {
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::lchown(&p, Some(0), Some(0)).unwrap();
        if !md.file_type().is_symlink() {
            fs::set_permissions(
                &p,
                std::os::unix::fs::PermissionsExt::from_mode(md.mode() & 0o7777),
            )
            .unwrap();
        }
    }
}

/// Every path under `dir` (not following symlinks), `dir` included.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

/// Lay `tars` (bottom first) out under `repo/.layers/XX/<digest>/layerfs`
/// (uncompressed blobs: the blob digest is the diffID). Layers already there
/// (shared with another image) are reused, as DUCC does.
pub fn lay_out(repo: &Path, tars: &[Vec<u8>], style: Style) -> Vec<Laid> {
    let diff_ids: Vec<String> = tars.iter().map(|t| sha(t)).collect();
    let refs: Vec<&str> = diff_ids.iter().map(|s| s.as_str()).collect();
    let ids = cvmfs_publisher::layer_ids(&refs);
    let mut out = Vec::new();
    for ((tar, d), id) in tars.iter().zip(&diff_ids).zip(ids) {
        let rel = layerfs_rel(d);
        let dir = repo.join(&rel);
        if !dir.exists() {
            let staging = RepoPaths::new(repo).layer_dir(d).join(".staging");
            let _ = fs::remove_dir_all(&staging);
            fs::create_dir_all(staging.parent().unwrap()).unwrap();
            match style {
                Style::Ducc | Style::DuccOwners => ducc_extract(tar, &staging),
                Style::Publisher | Style::PublisherListed | Style::PublisherFlat => {
                    cvmfs_publisher::layer::unpack(&tar[..], &staging, std::io::sink(), false)
                        .unwrap_or_else(|e| panic!("publisher unpack: {e}"));
                }
            }
            // DUCC and our publisher mark every layerfs as a nested CVMFS
            // catalog with an empty `.cvmfscatalog` at its root. It is not part
            // of the image: the comparison with umoci fails if it shows.
            fs::write(staging.join(".cvmfscatalog"), b"").unwrap();
            fs::rename(&staging, &dir).unwrap();
        }
        out.push(Laid {
            id,
            diff_id: d.clone(),
            path: rel,
        });
    }
    out
}

/// Write the driver's store records for a laid-out stack.
pub fn write_records(store: &Path, repo: &Path, layers: &[Laid], ownership: &str) {
    write_records_with(store, repo, layers, ownership, false, None)
}

/// [`write_records`], optionally listing every layer's markers (found the
/// way the driver would find them) and naming a flat tree (relative to the
/// repository) in the top layer's record.
pub fn write_records_with(
    store: &Path,
    repo: &Path,
    layers: &[Laid],
    ownership: &str,
    list_markers: bool,
    flat: Option<&str>,
) {
    let ownership = match ownership {
        "kept" => Ownership::Kept,
        "lost" => Ownership::Lost,
        other => panic!("ownership {other:?}"),
    };
    let mut parent: Option<&str> = None;
    for (i, l) in layers.iter().enumerate() {
        let p = StorePaths::new(store).record(&l.id);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let markers = list_markers.then(|| {
            let found =
                cvmfs_graphdriver::mount::whiteouts::scan_markers(&repo.join(&l.path)).unwrap();
            MarkerList(
                found
                    .iter()
                    .map(|m| m.path().to_str().unwrap().to_string())
                    .collect(),
            )
        });
        let record = CvmfsRecord {
            repository: repo.display().to_string(),
            path: l.path.clone(),
            parent: parent.map(str::to_string),
            whiteouts: Whiteouts::OciRaw,
            ownership,
            markers,
            flat: flat.filter(|_| i + 1 == layers.len()).map(str::to_string),
            owner_probes: None,
        };
        fs::write(p, record.to_json()).unwrap();
        parent = Some(&l.id);
    }
}

/// A driver with home `home` and run root `run` that resolves layers through
/// the additional image store `store`, whose records point into `repo`.
pub fn repo_driver(
    home: &Path,
    run: &Path,
    repo: &Path,
    store: &Path,
) -> cvmfs_graphdriver::Driver {
    cvmfs_graphdriver::Driver::new(
        home,
        run,
        &[
            format!("cvmfs.repositories={}", repo.display()),
            format!("cvmfs.imagestore={}", store.display()),
        ],
    )
    .unwrap()
}

/// Lay `tars` out in `repo` in `style` and write the records into `store`:
/// ownership as the style keeps it, marker lists for the listing styles, and
/// for [`Style::PublisherFlat`] the flat tree, whose path (relative to the
/// repository) is returned with the layers.
pub fn publish_as(
    repo: &Path,
    store: &Path,
    tars: &[Vec<u8>],
    style: Style,
) -> (Vec<Laid>, Option<String>) {
    let layers = lay_out(repo, tars, style);
    let ownership = if style.is_publisher() { "kept" } else { "lost" };
    let flat = (style == Style::PublisherFlat).then(|| build_flat(repo, &layers));
    let list = matches!(style, Style::PublisherListed | Style::PublisherFlat);
    write_records_with(store, repo, &layers, ownership, list, flat.as_deref());
    (layers, flat)
}

/// Build the flat root filesystem of `layers` with the publisher's code, as
/// `cvmfs-podman publish` does, at `.flat/XX/<top id>`; returns that path
/// relative to the repository.
pub fn build_flat(repo: &Path, layers: &[Laid]) -> String {
    let top = &layers.last().unwrap().id;
    let rel = flat_rel(top);
    let dir = repo.join(&rel);
    if !dir.exists() {
        let tmp = dir.with_file_name(format!(".staging-{top}"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).unwrap();
        for l in layers {
            cvmfs_publisher::flat::merge_layer(&repo.join(&l.path), &tmp)
                .unwrap_or_else(|e| panic!("flattening {}: {e}", l.path));
        }
        fs::write(tmp.join(".cvmfscatalog"), b"").unwrap();
        fs::rename(&tmp, &dir).unwrap();
    }
    rel
}

fn blob(layout: &Path, data: &[u8]) -> String {
    let d = sha(data);
    let p = layout.join("blobs/sha256").join(&d);
    if !p.exists() {
        fs::write(p, data).unwrap();
    }
    d
}

/// The layer tars of the corpus image `name` and the snapshot of its
/// `umoci unpack` reference (unpacked under `<work>/ref`).
pub fn corpus_image(work: &Path, name: &str) -> (Vec<Vec<u8>>, String) {
    let image = corpus::images()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no corpus image {name:?}"));
    let tars: Vec<Vec<u8>> = image
        .layers
        .iter()
        .map(|s| cvmfs_publisher::layer_spec::spec_to_tar(s).unwrap())
        .collect();
    let reference = umoci_reference(&work.join("ref"), &tars);
    let want = cvmfs_publisher::layer_spec::snapshot(&reference).unwrap();
    (tars, want)
}

/// The reference: an OCI image layout from the tars, unpacked by `umoci unpack`
/// into `<work>/bundle`; returns the rootfs.
pub fn umoci_reference(work: &Path, tars: &[Vec<u8>]) -> PathBuf {
    let layout = work.join("oci");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for t in tars {
        let d = blob(&layout, t);
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{d}","size":{}}}"#,
            t.len()
        ));
        diff_ids.push(format!("\"sha256:{d}\""));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let c = blob(&layout, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{c}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let m = blob(&layout, manifest.as_bytes());
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{m}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    let bundle = work.join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

/// `snapshot` lines with every owner replaced by 0:0 (what a repository that
/// lost ownership shows).
pub fn owners_to_root(snap: &str) -> String {
    snap.lines()
        .map(|l| {
            let mut t: Vec<&str> = l.splitn(5, ' ').collect();
            if t.len() >= 4 {
                t[3] = "0:0";
            }
            t.join(" ") + "\n"
        })
        .collect()
}

/// The first differing lines of two snapshots, for a readable failure.
pub fn diff_lines(want: &str, got: &str) -> String {
    let w: std::collections::BTreeSet<&str> = want.lines().collect();
    let g: std::collections::BTreeSet<&str> = got.lines().collect();
    let mut s = String::new();
    for l in w.difference(&g).take(10) {
        s.push_str(&format!("  want: {l}\n"));
    }
    for l in g.difference(&w).take(10) {
        s.push_str(&format!("  got:  {l}\n"));
    }
    s
}

/// Write `ownership.json` beside each record: the image's owner of every
/// entry of the layer's tar not owned by 0:0 (what a publisher that knows the
/// tar provides for a repository that lost ownership).
pub fn write_owners(store: &Path, layers: &[Laid], specs: &[String]) {
    use cvmfs_publisher::layer_spec::{parse, Kind};
    for (l, spec) in layers.iter().zip(specs) {
        let mut owners: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
        for e in parse(spec).unwrap() {
            if matches!(e.kind, Kind::Whiteout | Kind::Opaque) {
                continue;
            }
            let path = String::from_utf8(e.path.clone()).unwrap();
            owners.insert(path, (e.uid, e.gid));
        }
        let entries: Vec<OwnerEntry> = owners
            .into_iter()
            .filter(|(_, o)| *o != (0, 0))
            .map(|(path, (uid, gid))| OwnerEntry { gid, path, uid })
            .collect();
        let p = StorePaths::new(store).owners_file(&l.id);
        fs::write(p, OwnershipFile::new(entries).to_json().unwrap()).unwrap();
    }
}

/// The tar-split gzip of an uncompressed layer tar, as the publisher records
/// it while unpacking.
pub fn tar_split_gz(tar: &[u8]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let (gz, _) = cvmfs_publisher::tarsplit::record(tar, gz).unwrap();
    gz.finish().unwrap()
}

/// Each layer's tar-split where containers/storage (and the driver's owner
/// images) find it: `cvmfs-layers/<id>.tar-split.gz` of `store`.
pub fn write_tar_splits(store: &Path, layers: &[Laid], tars: &[Vec<u8>]) {
    for (l, tar) in layers.iter().zip(tars) {
        let p = StorePaths::new(store).tar_split(&l.id);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, tar_split_gz(tar)).unwrap();
    }
}
