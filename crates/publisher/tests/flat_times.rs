//! The flat tree keeps the directory times of the image (as `umoci unpack`
//! does) when an upper layer adds or deletes files in a directory without
//! naming that directory in its tar (issue 12: `usr`, `var`, ... got the
//! publish time).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_cvmfs-podman");

fn cvmfs_podman(args: &[&str]) {
    cvmfs_testkit::cli::run_ok(BIN, args);
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn directories_an_upper_layer_does_not_name_keep_their_times() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let lower = write(
        d,
        "lower.spec",
        "dir /usr 0755 mtime=1600000001\ndir /usr/lib 0755 mtime=1600000002\n\
         file /usr/lib/a \"a\"\nfile /usr/lib/b \"b\"\n\
         dir /var 0755 mtime=1600000003\ndir /var/lib 0750 mtime=1600000004\n\
         file /var/lib/state \"s\"\ndir /opt 0755 mtime=1600000005\n",
    );
    // no directory entries for usr/lib and var/lib; /opt named with a new time
    let upper = write(
        d,
        "upper.spec",
        "whiteout /usr/lib/a\nfile /var/lib/new \"n\"\ndir /opt 0711 mtime=1600000009\nfile /opt/x \"x\"\n",
    );
    let oci = d.join("oci").display().to_string();
    let repo = d.join("repo");
    cvmfs_podman(&["make-oci", &oci, "--tag", "t", &lower, &upper]);
    cvmfs_podman(&[
        "publish",
        "-q",
        &format!("oci:{oci}:t"),
        "--repo",
        &repo.display().to_string(),
        "--name",
        "example.org/times:1",
    ]);
    let flat = std::fs::read_dir(repo.join(".flat"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .expect("a flat tree");
    for (dir, mtime, mode) in [
        ("usr", 1600000001, 0o755),
        ("usr/lib", 1600000002, 0o755),
        ("var", 1600000003, 0o755),
        ("var/lib", 1600000004, 0o750),
        ("opt", 1600000009, 0o711),
    ] {
        let md = std::fs::symlink_metadata(flat.join(dir)).unwrap();
        assert_eq!((dir, md.mtime()), (dir, mtime), "mtime of flat {dir}");
        assert_eq!((dir, md.mode() & 0o7777), (dir, mode), "mode of flat {dir}");
    }
    assert!(!flat.join("usr/lib/a").exists() && flat.join("var/lib/new").exists());
}
