//! CVMFS layer content is never copied into the driver home: a 1 GiB image
//! (four raw-whiteout layers in a stand-in repository) is mounted under a
//! container's writable layer and every file is read through the mount; the
//! driver home then holds less than 1% of the image's bytes (allocated blocks,
//! the mount itself not counted).

mod cvmfs;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

const MIB: u64 = 1 << 20;

/// Bytes allocated under `dir`, not crossing into other filesystems (mounts).
fn allocated(dir: &Path) -> u64 {
    let dev = fs::symlink_metadata(dir).unwrap().dev();
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.dev() != dev {
            continue;
        }
        total += md.blocks() * 512;
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    total
}

fn write_file(p: &Path, size: u64, seed: u8) {
    let mut f = fs::File::create(p).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB);
        buf[0] = buf[0].wrapping_add(1);
        f.write_all(&buf[..n as usize]).unwrap();
        left -= n;
    }
}

/// Read every regular file under `dir`; returns the bytes read.
fn read_all(dir: &Path) -> u64 {
    let mut total = 0;
    let mut buf = vec![0u8; MIB as usize];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        } else if md.is_file() {
            let mut f = fs::File::open(&p).unwrap();
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    total
}

#[test]
#[ignore = "needs root"]
fn a_1gib_image_is_read_in_place_not_copied() {
    cvmfs_testkit::gate::require_root();
    let t = tempfile::Builder::new()
        .prefix("cvmfs-nocopy")
        .tempdir()
        .unwrap();
    let repo = t.path().join("cvmfs/big.example.org");
    let store = repo.join("podmanStore");
    // Four layers of 256 MiB each; the upper ones delete and replace files
    // of the lower ones (raw markers, as DUCC leaves them).
    let mut image_bytes = 0;
    let mut laid = Vec::new();
    for l in 0..4u8 {
        let d = format!("{:02x}{}", l + 0xa0, "0".repeat(62));
        let rel = format!(".layers/{}/{d}/layerfs", &d[..2]);
        let dir = repo.join(&rel);
        fs::create_dir_all(dir.join("data")).unwrap();
        for i in 0..16 {
            write_file(&dir.join(format!("data/l{l}-f{i}")), 16 * MIB, l * 16 + i);
            image_bytes += 16 * MIB;
        }
        if l > 0 {
            fs::write(dir.join(format!("data/.wh.l{}-f0", l - 1)), b"").unwrap();
        }
        laid.push(cvmfs::Laid {
            id: String::new(),
            diff_id: d.clone(),
            path: rel,
        });
    }
    let diff_ids: Vec<String> = laid.iter().map(|l| l.diff_id.clone()).collect();
    let refs: Vec<&str> = diff_ids.iter().map(|s| s.as_str()).collect();
    for (l, id) in laid.iter_mut().zip(cvmfs_publisher::layer_ids(&refs)) {
        l.id = id;
    }
    cvmfs::write_records(&store, &repo, &laid, "lost");
    let home = t.path().join("graph/cvmfs");
    let d = cvmfs::repo_driver(&home, &t.path().join("run"), &repo, &store);
    let top = &laid.last().unwrap().id;
    d.create("ctr", Some(top), true, &[]).unwrap();
    let start = Instant::now();
    let m = d.get("ctr", None, &[]).unwrap();
    let mount_time = start.elapsed();
    assert!(!m.join("data/l0-f0").exists(), "deleted file is gone");
    assert!(!m.join("data/.wh.l0-f0").exists(), "marker hidden");
    let start = Instant::now();
    let read = read_all(&m);
    let read_time = start.elapsed();
    // Three files were deleted by the layers above them.
    assert_eq!(read, image_bytes - 3 * 16 * MIB);
    let used = allocated(&home);
    d.put("ctr").unwrap();
    let used_after = allocated(&home);
    d.remove("ctr").unwrap();
    d.cleanup().unwrap();
    println!(
        "MEASURE: nocopy: image {} MiB, read {} MiB in {:.2}s through the mount (first get {:.3}s); driver home {} KiB while mounted, {} KiB after put ({:.4}% of the image)",
        image_bytes / MIB,
        read / MIB,
        read_time.as_secs_f64(),
        mount_time.as_secs_f64(),
        used / 1024,
        used_after / 1024,
        used.max(used_after) as f64 * 100.0 / image_bytes as f64
    );
    assert!(image_bytes >= 1 << 30);
    assert!(
        used.max(used_after) * 100 < image_bytes,
        "driver home holds {} bytes of a {} byte image",
        used.max(used_after),
        image_bytes
    );
}
