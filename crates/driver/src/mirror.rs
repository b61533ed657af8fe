//! Local views of the repository's image stores, so that podman's start path
//! costs as few repository round trips as possible (issue 13, item 5).
//!
//! containers/storage opens every additional image store the driver lists
//! (`AdditionalImageStores`) and reads, one after another, its lock files
//! (`images.lock`, `layers.lock`) and indexes (`images.json`, `layers.json`).
//! On a CVMFS client with a cold cache each is a download, paid in sequence
//! before the container starts. For each store outside the driver home,
//! [`mirror_stores`] gives containers/storage instead a view in the home:
//!
//! ```text
//! <home>/mirror/<store hash>-<source hash>/
//!   cvmfs-images/{images.json (copy), images.lock (local, empty)}
//!   cvmfs-images/<image id> -> <store>/cvmfs-images/<image id>   (big data, read on use)
//!   cvmfs-layers/{layers.json (copy), layers.lock (local, empty)}
//!   cvmfs-layers/<id>.tar-split.gz -> <store>/cvmfs-layers/<id>.tar-split.gz
//!   cvmfs-layers/<id> -> <store>/cvmfs-layers/<id>   (layer data items, read on use)
//! ```
//!
//! The two indexes are fetched in parallel (one round trip instead of four
//! on a cold home) and then reused by every later podman command while their
//! source is unchanged: the view's name carries a hash of each index's
//! identity ([`file_key`]: the content hash CVMFS publishes as `user.hash`,
//! else the repository revision `user.revision` with the file's inode, size
//! and times), so a publish gives a new name and a new view, never a stale
//! one. Checking costs one `stat` and `getxattr` per index, answered by a
//! CVMFS client from its catalog without a download.
//!
//! A view is built in `<home>/staging/` and renamed into place (a crash leaves
//! nothing half-written; `Store::recover` removes leftovers); the indexes must
//! have the same identity before and after they are read, else the store is
//! used directly this time. IDs read from the indexes name the links only
//! when they are 64 lower-case hex digits. Of older views of a store only the
//! newest one is kept (a podman process started before the publish may
//! still read it). Any failure falls back to the store itself, with a warning.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cvmfs_format::{is_hex64, StorePaths};
use sha2::{Digest, Sha256};

use crate::layout::with_progress;
use crate::store::Store;

/// Where the views live in the driver home.
pub const MIRROR_DIR: &str = "mirror";
/// Largest index copied (containers/storage itself reads them whole).
pub const INDEX_MAX_BYTES: u64 = 256 << 20;

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::getxattr(path, name, &mut buf).ok()?;
    let v = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// What identifies the content of a file of a repository without reading it:
/// CVMFS's content hash (`user.hash`) with the size when the client shows
/// it; otherwise the repository revision (`user.revision`, absent on a plain
/// directory) with inode, size, modification and change times, so that a
/// file rewritten in place or replaced by a rename is noticed. Not the
/// device: a FUSE file system gets a new one at every mount.
pub fn file_key(path: &Path) -> io::Result<String> {
    let st = fs::metadata(path)?;
    if !st.is_file() {
        return Err(err(format!("{}: not a regular file", path.display())));
    }
    if let Some(hash) = xattr(path, "user.hash") {
        return Ok(format!("hash={hash} size={}", st.len()));
    }
    Ok(format!(
        "rev={} ino={} size={} mtime={}.{} ctime={}.{}",
        xattr(path, "user.revision").unwrap_or_default(),
        st.ino(),
        st.len(),
        st.mtime(),
        st.mtime_nsec(),
        st.ctime(),
        st.ctime_nsec()
    ))
}

fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The identity of a store's two indexes.
fn source_key(paths: &StorePaths) -> io::Result<String> {
    let with_name = |p: PathBuf| {
        file_key(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    Ok(format!(
        "{}\n{}",
        with_name(paths.images_json())?,
        with_name(paths.layers_json())?
    ))
}

/// Read a whole index, at most [`INDEX_MAX_BYTES`].
fn read_index(path: &Path) -> io::Result<Vec<u8>> {
    let f = fs::File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    f.take(INDEX_MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > INDEX_MAX_BYTES {
        return Err(err(format!(
            "{}: larger than {INDEX_MAX_BYTES} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A store's source key, `images.json` and `layers.json`.
type Indexes = (String, Vec<u8>, Vec<u8>);

/// Both indexes, read at the same time (each a download on a cold client),
/// with the source key before and after: `None` if it changed meanwhile.
fn read_indexes(paths: StorePaths) -> io::Result<Option<Indexes>> {
    let before = source_key(&paths)?;
    let layers_json = paths.layers_json();
    let layers = std::thread::Builder::new()
        .name("cvmfs-mirror".into())
        .spawn(move || read_index(&layers_json))?;
    let images = read_index(&paths.images_json());
    let layers = layers
        .join()
        .map_err(|_| err("reading layers.json: thread died"))?;
    let (images, layers) = (images?, layers?);
    if source_key(&paths)? != before {
        return Ok(None);
    }
    Ok(Some((before, images, layers)))
}

/// The `id` of every entry of an index (a JSON array of objects) that is 64
/// lower-case hex digits; an error if the index is not such an array.
fn index_ids(bytes: &[u8], what: &Path) -> io::Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("{}: not JSON: {e}", what.display())))?;
    let Some(entries) = v.as_array() else {
        return Err(err(format!("{}: not a JSON array", what.display())));
    };
    Ok(entries
        .iter()
        .filter_map(|e| e.get("id")?.as_str())
        .filter(|id| is_hex64(id))
        .map(str::to_string)
        .collect())
}

/// Write one half of a view (`cvmfs-images` or `cvmfs-layers`) in `dir`: the
/// index copy, an empty lock file and one link per entry into the store.
fn write_half(
    dir: &Path,
    index: (&str, &[u8]),
    lock: &str,
    links: &[(String, PathBuf)],
) -> io::Result<()> {
    fs::create_dir(dir)?;
    fs::write(dir.join(index.0), index.1)?;
    fs::write(dir.join(lock), b"")?;
    for (name, target) in links {
        std::os::unix::fs::symlink(target, dir.join(name))?;
    }
    Ok(())
}

/// Build the view of `store` from its indexes in `stage`.
fn write_view(
    stage: &Path,
    store: &Path,
    key: &str,
    images: &[u8],
    layers: &[u8],
) -> io::Result<()> {
    let src = StorePaths::new(store);
    let image_links: Vec<(String, PathBuf)> = index_ids(images, &src.images_json())?
        .into_iter()
        .map(|id| {
            let target = src.images_dir().join(&id);
            (id, target)
        })
        .collect();
    // Per layer: its tar-split and the directory of its data items
    // (`set-layer-data`; dangling where the layer has none, read as missing).
    let layer_links: Vec<(String, PathBuf)> = index_ids(layers, &src.layers_json())?
        .into_iter()
        .flat_map(|id| {
            let name = cvmfs_format::paths::tar_split_file_name(&id);
            let data = (id.clone(), src.layers_dir().join(&id));
            [(name, src.tar_split(&id)), data]
        })
        .collect();
    fs::create_dir(stage)?;
    let view = StorePaths::new(stage);
    write_half(
        &view.images_dir(),
        ("images.json", images),
        "images.lock",
        &image_links,
    )?;
    write_half(
        &view.layers_dir(),
        ("layers.json", layers),
        "layers.lock",
        &layer_links,
    )?;
    fs::write(
        stage.join("SOURCE"),
        format!("{}\n{key}\n", store.display()),
    )
}

/// Remove the views of the store with hash prefix `prefix` but `keep` and
/// the newest other one.
fn prune(root: &Path, prefix: &str, keep: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p != keep)
        .filter_map(|p| Some((fs::symlink_metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    old.sort();
    old.pop();
    for (_, p) in old {
        let _ = crate::store::remove_tree(&p);
    }
}

/// The view of one store, built if needed.
fn mirror_one(home: &Store, store: &Path, timeout: Duration) -> io::Result<PathBuf> {
    let root = home.home().join(MIRROR_DIR);
    fs::create_dir_all(&root)?;
    let paths = StorePaths::new(store);
    let key = match with_progress(timeout, |_| {}, move || source_key(&paths)) {
        Some(r) => r?,
        None => {
            return Err(err(format!(
                "no answer within {:.1}s",
                timeout.as_secs_f64()
            )))
        }
    };
    let prefix = format!("{}-", short_hash(&store.display().to_string()));
    let dest = root.join(format!("{prefix}{}", short_hash(&key)));
    if dest.join("SOURCE").is_file() {
        return Ok(dest);
    }
    let paths = StorePaths::new(store);
    let read = match with_progress(timeout, |_| {}, move || read_indexes(paths)) {
        Some(r) => r?,
        None => {
            return Err(err(format!(
                "no answer within {:.1}s",
                timeout.as_secs_f64()
            )))
        }
    };
    let Some((key, images, layers)) = read else {
        return Err(err("the indexes changed while they were read (a publish?)"));
    };
    let dest = root.join(format!("{prefix}{}", short_hash(&key)));
    let stage = home.staging_name("mirror", &short_hash(&key));
    if let Err(e) = write_view(&stage, store, &key, &images, &layers) {
        let _ = crate::store::remove_tree(&stage);
        return Err(e);
    }
    if let Err(e) = fs::rename(&stage, &dest) {
        let _ = crate::store::remove_tree(&stage);
        // Another process built the same view meanwhile.
        if !dest.join("SOURCE").is_file() {
            return Err(e);
        }
    }
    prune(&root, &prefix, &dest);
    prefetch_image_metadata(store, &images);
    Ok(dest)
}

/// Images whose metadata a new view fetches ahead, newest first.
pub const PREFETCH_IMAGES: usize = 32;
/// Parallel fetches of that metadata (a CVMFS client has 16 connections).
const PREFETCH_THREADS: usize = 8;
/// Largest metadata file read ahead.
const PREFETCH_MAX_BYTES: u64 = 4 << 20;

/// The files podman reads of image entry `e` before the container starts:
/// its big data (manifest, config) and its top layer's record.
fn image_metadata_files(src: &StorePaths, e: &serde_json::Value) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(id) = e
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|id| is_hex64(id))
    {
        if let Ok(entries) = fs::read_dir(src.images_dir().join(id)) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    if let Some(top) = e
        .get("layer")
        .and_then(|v| v.as_str())
        .filter(|id| is_hex64(id))
    {
        files.push(src.record(top));
    }
    files
}

/// A new view means new images: read the metadata of the newest
/// [`PREFETCH_IMAGES`] ones in the background, [`PREFETCH_THREADS`] at a time,
/// so that on a cold CVMFS client the downloads podman would make one after
/// another (manifest, config, the layer record) are already under way or
/// done when it asks (the client keeps them in its cache; a reader of an
/// object being downloaded waits for that download). A few KiB per image;
/// nothing is written, and nothing waits for it.
fn prefetch_image_metadata(store: &Path, images: &[u8]) {
    let Ok(serde_json::Value::Array(mut entries)) = serde_json::from_slice(images) else {
        return;
    };
    let created = |e: &serde_json::Value| {
        let c = e.get("created").and_then(|v| v.as_str()).unwrap_or("");
        c.to_string()
    };
    entries.sort_by_key(|e| std::cmp::Reverse(created(e)));
    entries.truncate(PREFETCH_IMAGES);
    let store = store.to_path_buf();
    // Listing the image directories is metadata (no download), but the
    // repository may hang: not on the caller's thread either.
    let list = move || {
        let src = StorePaths::new(&store);
        let mut files: Vec<PathBuf> = entries
            .iter()
            .flat_map(|e| image_metadata_files(&src, e))
            .collect();
        files.reverse(); // popped from the end: the newest image first
        let queue = std::sync::Arc::new(std::sync::Mutex::new(files));
        for _ in 0..PREFETCH_THREADS {
            let queue = queue.clone();
            let work = move || {
                while let Some(f) = queue.lock().ok().and_then(|mut q| q.pop()) {
                    if let Ok(f) = fs::File::open(&f) {
                        let _ = io::copy(&mut f.take(PREFETCH_MAX_BYTES), &mut io::sink());
                    }
                }
            };
            let _ = std::thread::Builder::new()
                .name("cvmfs-ahead".into())
                .spawn(work);
        }
    };
    let _ = std::thread::Builder::new()
        .name("cvmfs-ahead".into())
        .spawn(list);
}

/// What containers/storage is given for each of `stores`: the local view of
/// a store outside the driver home, the store itself when it is in the home
/// (DUCC's synthesised stores) or when its view cannot be made (`warn` says
/// why).
pub fn mirror_stores(
    home: &Store,
    stores: &[PathBuf],
    timeout: Duration,
    warn: &dyn Fn(&str),
) -> Vec<PathBuf> {
    stores
        .iter()
        .map(|store| {
            if store.starts_with(home.home()) {
                return store.clone();
            }
            match mirror_one(home, store, timeout) {
                Ok(view) => view,
                // Not a store of ours (yet): containers/storage says what is wrong.
                Err(e) if e.kind() == io::ErrorKind::NotFound => store.clone(),
                Err(e) => {
                    warn(&format!(
                        "cvmfs: image store {}: no local view ({e}); podman reads it directly",
                        store.display()
                    ));
                    store.clone()
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const IMG: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const LAYER: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    struct Fixture {
        _t: tempfile::TempDir,
        home: Store,
        store: PathBuf,
    }

    fn fixture() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        let home = Store::open(&t.path().join("graph/cvmfs")).unwrap();
        let store = t.path().join("repo/podmanStore");
        let p = StorePaths::new(&store);
        fs::create_dir_all(p.images_dir().join(IMG)).unwrap();
        fs::create_dir_all(p.layers_dir()).unwrap();
        fs::write(p.images_dir().join(IMG).join("manifest"), b"{}").unwrap();
        fs::write(p.tar_split(LAYER), b"ts").unwrap();
        fs::create_dir_all(p.layers_dir().join(LAYER)).unwrap();
        fs::write(p.layers_dir().join(LAYER).join("datafile"), b"data").unwrap();
        fs::write(p.images_lock(), b"x".repeat(32)).unwrap();
        fs::write(p.layers_lock(), b"x".repeat(32)).unwrap();
        fs::write(
            p.images_json(),
            format!(r#"[{{"id":"{IMG}","layer":"{LAYER}"}},{{"id":"../../etc"}}]"#),
        )
        .unwrap();
        fs::write(p.layers_json(), format!(r#"[{{"id":"{LAYER}"}}]"#)).unwrap();
        Fixture { _t: t, home, store }
    }

    fn views(f: &Fixture) -> (Vec<PathBuf>, Vec<String>) {
        let warnings = RefCell::new(Vec::new());
        let v = mirror_stores(
            &f.home,
            std::slice::from_ref(&f.store),
            Duration::from_secs(10),
            &|m| warnings.borrow_mut().push(m.to_string()),
        );
        (v, warnings.into_inner())
    }

    #[test]
    fn the_view_copies_the_indexes_and_links_the_rest() {
        let f = fixture();
        let (v, warnings) = views(&f);
        assert!(warnings.is_empty(), "{warnings:?}");
        let view = StorePaths::new(&v[0]);
        assert!(v[0].starts_with(f.home.home().join(MIRROR_DIR)), "{v:?}");
        let src = StorePaths::new(&f.store);
        for (copy, orig) in [
            (view.images_json(), src.images_json()),
            (view.layers_json(), src.layers_json()),
        ] {
            assert_eq!(fs::read(copy).unwrap(), fs::read(orig).unwrap());
        }
        // Local lock files: reading them costs no round trip.
        assert_eq!(fs::read(view.images_lock()).unwrap(), b"");
        assert_eq!(fs::read(view.layers_lock()).unwrap(), b"");
        assert_eq!(
            fs::read(view.images_dir().join(IMG).join("manifest")).unwrap(),
            b"{}"
        );
        assert_eq!(fs::read(view.tar_split(LAYER)).unwrap(), b"ts");
        // Layer data items (`storage set-layer-data`) are read through too.
        assert_eq!(
            fs::read(view.layers_dir().join(LAYER).join("datafile")).unwrap(),
            b"data"
        );
        // A hostile ID names no link.
        let names: Vec<_> = fs::read_dir(view.images_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(!f.home.home().join(MIRROR_DIR).join("etc").exists());
        // Nothing left in staging.
        assert_eq!(fs::read_dir(f.home.staging_dir()).unwrap().count(), 0);
    }

    #[test]
    fn an_unchanged_store_reuses_its_view_and_a_publish_gets_a_new_one() {
        let f = fixture();
        let first = views(&f).0[0].clone();
        assert_eq!(views(&f).0[0], first, "unchanged: same view");
        let src = StorePaths::new(&f.store);
        let mut generations = vec![first.clone()];
        for n in 0..3 {
            // A publish: the index is replaced (same size would be enough).
            std::thread::sleep(Duration::from_millis(20));
            let text = fs::read_to_string(src.images_json()).unwrap();
            let tmp = f.store.join("images.json.tmp");
            fs::write(&tmp, text.replace("../../etc", &format!("../../et{n}"))).unwrap();
            fs::rename(&tmp, src.images_json()).unwrap();
            let next = views(&f).0[0].clone();
            assert!(
                !generations.contains(&next),
                "a publish must give a new view"
            );
            assert_eq!(
                fs::read(StorePaths::new(&next).images_json()).unwrap(),
                fs::read(src.images_json()).unwrap()
            );
            generations.push(next);
        }
        // The current view and the one before stay; older ones go.
        let kept: Vec<_> = generations.iter().filter(|g| g.exists()).collect();
        assert_eq!(kept, generations[2..].iter().collect::<Vec<_>>());
    }

    #[test]
    fn stores_without_a_usable_view_are_given_as_they_are() {
        let f = fixture();
        // Inside the home (DUCC's synthesised stores): never mirrored.
        let inside = f.home.home().join("ducc/x");
        let v = mirror_stores(
            &f.home,
            std::slice::from_ref(&inside),
            Duration::from_secs(5),
            &|m| panic!("no warning expected: {m}"),
        );
        assert_eq!(v, vec![inside]);
        // Not a store yet: containers/storage reports it, no warning here.
        let missing = f._t.path().join("nothing");
        let v = mirror_stores(
            &f.home,
            std::slice::from_ref(&missing),
            Duration::from_secs(5),
            &|m| panic!("no warning expected: {m}"),
        );
        assert_eq!(v, vec![missing]);
        // A broken index: the store itself, and a warning naming the file.
        fs::write(StorePaths::new(&f.store).layers_json(), b"{\"id\":1}").unwrap();
        let (v, warnings) = views(&f);
        assert_eq!(v, vec![f.store.clone()]);
        assert!(
            warnings.len() == 1 && warnings[0].contains("layers.json: not a JSON array"),
            "{warnings:?}"
        );
    }

    #[test]
    fn file_keys_change_with_content_and_name_missing_files() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, b"one").unwrap();
        let a = file_key(&p).unwrap();
        assert_eq!(file_key(&p).unwrap(), a);
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&p, b"two").unwrap();
        assert_ne!(file_key(&p).unwrap(), a, "same size, rewritten in place");
        let e = file_key(&t.path().join("gone")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(file_key(t.path()).is_err(), "a directory is not a file");
    }
}
