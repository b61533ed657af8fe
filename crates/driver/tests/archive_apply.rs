//! apply_tar / write_diff_tar: OCI <-> overlay conversion, metadata fidelity, id
//! mappings, and the size contract with dir_size.

#[path = "archive_support/mod.rs"]
mod support;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use cvmfs_graphdriver::archive::{self, ApplyOptions, ArchiveError, IdMap, IdMappings};
use support::*;

fn long(c: char, n: usize) -> String {
    std::iter::repeat(c).take(n).collect()
}

/// A layer with one of everything.
fn rich_spec() -> String {
    format!(
        r##"
dir /etc 0755 0:0 mtime=1600000000
file /etc/hosts 0644 1000:1000 "127.0.0.1 localhost\n"
xattr /etc/hosts user.note=hello
file /etc/shadow 0640 0:42 "secret"
file /etc/empty 0600
dir /usr 0755
dir /usr/bin 0711
file /usr/bin/tool 04755 "#!/bin/sh\n"
hardlink /usr/bin/tool2 => /usr/bin/tool
symlink /bin -> usr/bin
symlink /etc/abs -> /etc/hosts 5:6
dir /dev 0755
char /dev/null 1:3 0666
block /dev/sda 8:0 0660 0:6
dir /run
fifo /run/p 0600
dir /tmp 01777
whiteout /etc/old
opaque /data
dir /data 0700
file /data/keep "k"
dir /deep
dir /deep/{a}
dir /deep/{a}/{b}
file /deep/{a}/{b}/{c} "long name"
symlink /longlink -> {t}
hardlink /hl => /deep/{a}/{b}/{c}
file "caf\xe9 \x01name" "latin-1 and control bytes in a name"
file /big size=70000
"##,
        a = long('a', 90),
        b = long('b', 90),
        c = long('c', 120),
        t = long('t', 150),
    )
}

#[test]
#[ignore = "needs root"]
fn privileged_apply_converts_and_preserves_metadata() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let d = mkdir(t.path(), "diff");
    let size = apply_spec(&rich_spec(), &d).unwrap();

    // whiteouts become 0/0 character devices, opaque markers an xattr; no marker files
    assert!(is_whiteout(&d.join("etc/old")));
    assert!(!d.join("etc/.wh.old").exists());
    assert_eq!(
        xattr(&d.join("data"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!d.join("data/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(d.join("data/keep")).unwrap(), b"k");

    let md = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!((md("etc/hosts").uid(), md("etc/hosts").gid()), (1000, 1000));
    assert_eq!(md("etc/hosts").mode() & 0o7777, 0o644);
    assert_eq!(md("etc/shadow").gid(), 42);
    // setuid survives the chown
    assert_eq!(md("usr/bin/tool").mode() & 0o7777, 0o4755);
    assert_eq!(md("usr/bin").mode() & 0o7777, 0o711);
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(md("usr/bin/tool").ino(), md("usr/bin/tool2").ino());
    assert_eq!(
        std::fs::read_link(d.join("bin")).unwrap().to_str(),
        Some("usr/bin")
    );
    // symlink owned without following it
    assert_eq!((md("etc/abs").uid(), md("etc/abs").gid()), (5, 6));
    assert_eq!(md("etc/hosts").uid(), 1000);
    assert_eq!(md("dev/null").rdev(), rustix::fs::makedev(1, 3) as u64);
    assert_eq!(md("dev/sda").gid(), 6);
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &md("run/p").file_type()
    ));
    assert_eq!(
        xattr(&d.join("etc/hosts"), "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    // times come from the tar, directories included (set after their content)
    assert_eq!(md("etc/hosts").mtime(), 1_700_000_000);
    assert_eq!(md("etc").mtime(), 1_600_000_000);
    assert_eq!(md("usr/bin").mtime(), 1_700_000_000);
    // PAX long names and link targets
    let deep = format!(
        "deep/{}/{}/{}",
        long('a', 90),
        long('b', 90),
        long('c', 120)
    );
    assert_eq!(std::fs::read(d.join(&deep)).unwrap(), b"long name");
    assert_eq!(
        std::fs::read_link(d.join("longlink"))
            .unwrap()
            .to_str()
            .unwrap(),
        long('t', 150)
    );
    assert_eq!(std::fs::read(d.join("big")).unwrap().len(), 70000);
    // names are bytes, not necessarily UTF-8
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9 \x01name");
    assert_eq!(std::fs::read(d.join(odd)).unwrap().len(), 35);
    assert_eq!(md("hl").ino(), md(&deep).ino());

    // size contract: what apply returns is what DiffSize (dir_size) reports
    assert_eq!(size, archive::dir_size(&d).unwrap());
    // regular files once (hosts, shadow, tool, keep, deep, big, café) + symlink targets
    let expected = 20 + 6 + 10 + 1 + 9 + 70000 + 35 + (7 + 10 + 150);
    assert_eq!(size, expected);
}

#[test]
#[ignore = "needs root"]
fn privileged_roundtrip_apply_write_apply_is_identical() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let d1 = mkdir(t.path(), "one");
    let d2 = mkdir(t.path(), "two");
    let s1 = apply_spec(&rich_spec(), &d1).unwrap();
    let mut tar = Vec::new();
    archive::write_diff_tar(&d1, None, &mut tar).unwrap();
    let s2 = archive::apply_tar(&tar[..], &d2, &ApplyOptions::default()).unwrap();
    assert_eq!(s1, s2);
    assert_eq!(snap(&d1), snap(&d2));

    // the written tar is in OCI form: markers, no devices standing for whiteouts,
    // no overlay xattrs, hardlinks as links, directories with a trailing slash
    let list = tar_listing(&tar);
    let names: Vec<&str> = list.iter().map(|e| e.0.as_str()).collect();
    assert!(names.contains(&"etc/.wh.old"), "{names:?}");
    assert!(names.contains(&"data/.wh..wh..opq"), "{names:?}");
    assert!(names.contains(&"etc/"));
    assert!(!names.contains(&"etc/old"));
    let wh = list.iter().find(|e| e.0 == "etc/.wh.old").unwrap();
    assert_eq!(wh.1, b'0');
    let link = list.iter().find(|e| e.0 == "usr/bin/tool2").unwrap();
    assert_eq!(link.1, b'1');
    for e in &list {
        assert!(!e.5.iter().any(|k| k.contains("overlay")), "{e:?}");
        if e.1 == b'3' {
            assert_ne!(e.0, "etc/old");
        }
    }
    let hosts = list.iter().find(|e| e.0 == "etc/hosts").unwrap();
    assert_eq!((hosts.2, hosts.3), (1000, 1000));
    assert!(hosts.5.contains(&"SCHILY.xattr.user.note".to_string()));
    // the directory's entry precedes its opaque marker and content
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("data/") < pos("data/.wh..wh..opq"));
    assert!(pos("data/.wh..wh..opq") < pos("data/keep"));
}

#[test]
#[ignore = "needs root"]
fn privileged_whiteouts_follow_oci_rules() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let d = mkdir(t.path(), "diff");
    // content that was in the directory before this layer
    std::fs::create_dir_all(d.join("data/old")).unwrap();
    std::fs::write(d.join("data/old/f"), "x").unwrap();
    std::fs::write(d.join("gone"), "x").unwrap();
    apply_spec(
        r#"
file /same "layer keeps me"
whiteout /same
whiteout /later
file /later "re-added"
whiteout /gone
dir /data
file /data/new "n"
opaque /data
whiteout /foo
whiteout /foo/bar
whiteout /a/b/c
"#,
        &d,
    )
    .unwrap();
    // a whiteout does not delete a sibling from the same layer, whatever the order
    assert_eq!(std::fs::read(d.join("same")).unwrap(), b"layer keeps me");
    assert_eq!(std::fs::read(d.join("later")).unwrap(), b"re-added");
    // but it replaces what was there before
    assert!(is_whiteout(&d.join("gone")));
    // opaque: earlier content goes, this layer's content stays even before the marker
    assert!(!d.join("data/old").exists());
    assert_eq!(std::fs::read(d.join("data/new")).unwrap(), b"n");
    // `rm -rf /foo/bar` style layers apply
    assert!(is_whiteout(&d.join("foo")));
    // implicit parents of a whiteout are created (0755, root)
    assert!(is_whiteout(&d.join("a/b/c")));
    let md = std::fs::metadata(d.join("a/b")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o755);
}

#[test]
#[ignore = "needs root"]
fn privileged_whiteout_devices_write_as_markers_from_overlay_form() {
    cvmfs_testkit::gate::require_root();
    // a diff dir as the kernel leaves it after a container ran
    let t = tmp();
    let d = mkdir(t.path(), "upper");
    std::fs::create_dir(d.join("etc")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("etc/passwd-"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    std::fs::create_dir(d.join("var")).unwrap();
    rustix::fs::lsetxattr(
        d.join("var"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        d.join("var"),
        "trusted.other",
        b"z",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    // a real device stays a device
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("etc/zero"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 5),
    )
    .unwrap();
    let mut tar = Vec::new();
    archive::write_diff_tar(&d, None, &mut tar).unwrap();
    let list = tar_listing(&tar);
    let names: Vec<&str> = list.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "etc/",
            "etc/.wh.passwd-",
            "etc/zero",
            "var/",
            "var/.wh..wh..opq"
        ]
    );
    assert_eq!(list[2].1, b'3');
    assert!(
        list.iter().all(|e| e.5.is_empty()),
        "no trusted.* xattrs exported: {list:?}"
    );
}

fn userns() -> IdMappings {
    IdMappings {
        uids: vec![IdMap {
            container_id: 0,
            host_id: 100000,
            size: 65536,
        }],
        gids: vec![IdMap {
            container_id: 0,
            host_id: 200000,
            size: 65536,
        }],
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_id_mappings_apply_and_write_back() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let d = mkdir(t.path(), "diff");
    let opts = ApplyOptions {
        mappings: Some(userns()),
        ..Default::default()
    };
    apply_spec_with(
        "file /a/f 0644 1000:1001 \"x\"\nsymlink /l -> f 7:8\nwhiteout /w 0:0\ndir /o 0700 0:0\n",
        &d,
        &opts,
    )
    .unwrap();
    let md = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!((md("a/f").uid(), md("a/f").gid()), (101000, 201001));
    assert_eq!((md("l").uid(), md("l").gid()), (100007, 200008));
    assert_eq!((md("w").uid(), md("w").gid()), (100000, 200000));
    // implicit parent owned by the container's root
    assert_eq!((md("a").uid(), md("a").gid()), (100000, 200000));

    let mut tar = Vec::new();
    let m = userns();
    archive::write_diff_tar(&d, Some(&m), &mut tar).unwrap();
    let list = tar_listing(&tar);
    let f = list.iter().find(|e| e.0 == "a/f").unwrap();
    assert_eq!((f.2, f.3), (1000, 1001));
    let l = list.iter().find(|e| e.0 == "l").unwrap();
    assert_eq!((l.2, l.3), (7, 8));

    // an owner outside the mapping is an error naming the entry
    let d2 = mkdir(t.path(), "diff2");
    let err = apply_spec_with("file /x 0644 70000:0", &d2, &opts).unwrap_err();
    match err {
        ArchiveError::IdMapping { path, .. } => assert_eq!(path, "x"),
        other => panic!("unexpected {other:?}"),
    }
    // writing back with a mapping that does not cover the owner fails too
    let narrow = IdMappings {
        uids: vec![IdMap {
            container_id: 0,
            host_id: 100000,
            size: 10,
        }],
        gids: vec![],
    };
    let err = archive::write_diff_tar(&d, Some(&narrow), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("101000"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn privileged_force_mask_records_real_metadata() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let d = mkdir(t.path(), "diff");
    let opts = ApplyOptions {
        force_mask: Some(0o700),
        ..Default::default()
    };
    apply_spec_with(
        "file /f 04755 1000:1000 \"x\"\nchar /c 1:3 0666\ndir /d 0555\n",
        &d,
        &opts,
    )
    .unwrap();
    let md = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!(md("f").mode() & 0o7777, 0o700);
    assert_eq!(md("f").uid(), 0, "no chown under force_mask");
    assert!(md("c").is_file(), "devices become files under force_mask");
    assert_eq!(
        xattr(&d.join("f"), "user.containers.override_stat").as_deref(),
        Some(&b"1000:1000:4755:file"[..])
    );
    assert_eq!(
        xattr(&d.join("c"), "user.containers.override_stat").as_deref(),
        Some(&b"0:0:0666:char-1-3"[..])
    );
    assert_eq!(
        xattr(&d.join("d"), "user.containers.override_stat").as_deref(),
        Some(&b"0:0:0555:dir"[..])
    );
}

#[test]
#[ignore = "needs root"]
fn privileged_replaces_existing_entries_and_merges_directories() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let d = mkdir(t.path(), "diff");
    std::fs::create_dir_all(d.join("dir/inner")).unwrap();
    std::fs::write(d.join("dir/inner/x"), "x").unwrap();
    std::fs::create_dir_all(d.join("was_dir/sub")).unwrap();
    std::fs::write(d.join("was_file"), "old").unwrap();
    apply_spec(
        "dir /dir 0700\nfile /was_dir \"now a file\"\ndir /was_file 0750\nfile /dir/new \"n\"\n",
        &d,
    )
    .unwrap();
    // dir over dir merges (keeps content, takes the new metadata)
    assert!(d.join("dir/inner/x").exists());
    assert_eq!(
        std::fs::metadata(d.join("dir")).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(std::fs::read(d.join("was_dir")).unwrap(), b"now a file");
    assert!(std::fs::metadata(d.join("was_file")).unwrap().is_dir());
}

#[test]
#[ignore = "needs root"]
fn privileged_gnu_tar_archives_apply() {
    cvmfs_testkit::gate::require_root();
    // An archive made by GNU tar in its own format (long names as ././@LongLink
    // entries) and by GNU tar in PAX format with xattrs.
    let t = tmp();
    let src = mkdir(t.path(), "src");
    let longdir = src.join(long('d', 120));
    std::fs::create_dir(&longdir).unwrap();
    std::fs::write(longdir.join(long('f', 120)), "gnu").unwrap();
    rustix::fs::lsetxattr(
        longdir.join(long('f', 120)),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::os::unix::fs::symlink(long('t', 130), src.join("l")).unwrap();
    for (i, fmt) in ["gnu", "posix"].iter().enumerate() {
        let tarfile = t.path().join(format!("a{i}.tar"));
        let mut cmd = std::process::Command::new("tar");
        if *fmt == "posix" {
            cmd.args(["--xattrs", "--xattrs-include=user.*"]);
        }
        let st = cmd
            .arg("-C")
            .arg(&src)
            .arg(format!("--format={fmt}"))
            .arg("-cf")
            .arg(&tarfile)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let dest = mkdir(t.path(), &format!("dest{i}"));
        let f = std::fs::File::open(&tarfile).unwrap();
        archive::apply_tar(f, &dest, &ApplyOptions::default()).unwrap();
        let file = dest.join(long('d', 120)).join(long('f', 120));
        assert_eq!(std::fs::read(&file).unwrap(), b"gnu", "{fmt}");
        assert_eq!(
            std::fs::read_link(dest.join("l"))
                .unwrap()
                .to_str()
                .unwrap(),
            long('t', 130)
        );
        if *fmt == "posix" {
            assert_eq!(xattr(&file, "user.k").as_deref(), Some(&b"v"[..]));
        }
    }
}

#[test]
fn empty_stream_is_an_empty_layer() {
    let t = tmp();
    let d = mkdir(t.path(), "diff");
    assert_eq!(
        archive::apply_tar(&b""[..], &d, &ApplyOptions::default()).unwrap(),
        0
    );
    assert_eq!(
        archive::apply_tar(&[0u8; 1024][..], &d, &ApplyOptions::default()).unwrap(),
        0
    );
    assert!(tree(&d).is_empty());
}

/// Cross-check with containers/storage itself when `CVMFS_GO_ARCHIVE` names a helper
/// (`<bin> untar DEST < tar` = Untar with the overlay whiteout format printing
/// directory.Size; `<bin> tar DIR LOWER... > tar` = the overlay driver's Diff).
#[test]
#[ignore = "needs root and CVMFS_GO_ARCHIVE"]
fn privileged_matches_containers_storage_when_available() {
    cvmfs_testkit::gate::require_root();
    let go = cvmfs_testkit::gate::require_env("CVMFS_GO_ARCHIVE");
    use std::io::Write;
    use std::process::{Command, Stdio};
    let go_untar = |tar: &[u8], dest: &std::path::Path| -> u64 {
        let mut child = Command::new(&go)
            .arg("untar")
            .arg(dest)
            // production runs Untar chrooted into the layer: relative hardlink
            // names resolve inside it
            .current_dir(dest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(tar).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let t = tmp();
    let tar = cvmfs_publisher::layer_spec::spec_to_tar(&rich_spec()).unwrap();
    // same tree and same size from the same tar
    let ours = mkdir(t.path(), "ours");
    let theirs = mkdir(t.path(), "theirs");
    let size = archive::apply_tar(&tar[..], &ours, &ApplyOptions::default()).unwrap();
    assert_eq!(go_untar(&tar, &theirs), size);
    assert_eq!(snap(&ours), snap(&theirs));
    // Go reads our diff tars back to the same tree
    let mut ours_tar = Vec::new();
    archive::write_diff_tar(&ours, None, &mut ours_tar).unwrap();
    let back = mkdir(t.path(), "go-from-ours");
    go_untar(&ours_tar, &back);
    assert_eq!(snap(&ours), snap(&back));
    // and we read Go's diff tars back to the same tree (Go writes the opaque marker
    // only when a parent has the directory, so give it one)
    let lower = mkdir(t.path(), "lower");
    std::fs::create_dir(lower.join("data")).unwrap();
    let out = Command::new(&go)
        .arg("tar")
        .arg(&ours)
        .arg(&lower)
        .output()
        .unwrap();
    assert!(out.status.success());
    let from_go = mkdir(t.path(), "ours-from-go");
    archive::apply_tar(&out.stdout[..], &from_go, &ApplyOptions::default()).unwrap();
    assert_eq!(snap(&ours), snap(&from_go));
}

#[test]
#[ignore = "needs root"]
fn privileged_sparse_files_from_gnu_tar_apply() {
    cvmfs_testkit::gate::require_root();
    use std::io::{Seek, SeekFrom, Write};
    let t = tmp();
    let src = mkdir(t.path(), "src");
    let mut f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(10 << 20).unwrap();
    // more segments than an old GNU header holds (4), so extension headers appear
    for i in 1..=7u64 {
        f.seek(SeekFrom::Start(i * 1_300_000)).unwrap();
        f.write_all(format!("segment {i}").as_bytes()).unwrap();
    }
    f.seek(SeekFrom::Start((10 << 20) - 4)).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    let want = std::fs::read(src.join("sparse")).unwrap();
    for (fmt, version) in [
        ("gnu", None),
        ("posix", Some("1.0")),
        ("posix", Some("0.1")),
        ("posix", Some("0.0")),
    ] {
        let tarfile = t.path().join("s.tar");
        let mut cmd = std::process::Command::new("tar");
        cmd.arg("--sparse").arg(format!("--format={fmt}"));
        if let Some(v) = version {
            cmd.arg(format!("--sparse-version={v}"));
        }
        assert!(cmd
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&tarfile)
            .arg(".")
            .status()
            .unwrap()
            .success());
        let dest = t
            .path()
            .join(format!("dest-{fmt}-{}", version.unwrap_or("old")));
        std::fs::create_dir(&dest).unwrap();
        let size = archive::apply_tar(
            std::fs::File::open(&tarfile).unwrap(),
            &dest,
            &ApplyOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{fmt} {version:?}: {e}"));
        assert_eq!(tree(&dest), vec!["sparse"], "{fmt} {version:?}");
        assert_eq!(size, 10 << 20);
        let got = std::fs::read(dest.join("sparse")).unwrap();
        assert!(got == want, "{fmt} {version:?}: content differs");
        // holes stay holes
        let blocks = std::fs::metadata(dest.join("sparse")).unwrap().blocks();
        assert!(
            blocks * 512 < 1 << 20,
            "{fmt} {version:?}: {blocks} blocks allocated"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn privileged_repeated_entries_last_one_wins() {
    cvmfs_testkit::gate::require_root();
    let t = tmp();
    let d = mkdir(t.path(), "diff");
    apply_spec(
        "dir /d 0700 mtime=100\nfile /d/f \"first\"\ndir /d 0750 mtime=200\nfile /d/f 0600 \"second\"",
        &d,
    )
    .unwrap();
    let md = std::fs::metadata(d.join("d")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o750, 200));
    assert_eq!(std::fs::read(d.join("d/f")).unwrap(), b"second");
}

#[test]
#[ignore = "needs root"]
fn privileged_fuse_overlayfs_uppers_write_each_marker_once() {
    cvmfs_testkit::gate::require_root();
    // An upper directory as fuse-overlayfs 1.10 leaves it in a user namespace
    // (cvmfs.mount_program, issue 15): an opaque directory has its own xattr,
    // a raw `.wh..wh..opq` file and a 0/0 device `.wh..opq`; a deleted file
    // is a 0/0 device, or a raw `.wh.<name>` file when mknod is refused.
    let t = tmp();
    let d = mkdir(t.path(), "upper");
    std::fs::create_dir(d.join("run")).unwrap();
    let whiteout_device = |p: std::path::PathBuf| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o700),
            0,
        )
        .unwrap()
    };
    std::fs::write(d.join("run/.wh..wh..opq"), b"").unwrap();
    whiteout_device(d.join("run/.wh..opq"));
    std::fs::write(d.join("run/.containerenv"), b"x").unwrap();
    let set = |p: std::path::PathBuf, k: &str, v: &[u8]| {
        rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty()).unwrap()
    };
    set(d.join("run"), "user.fuseoverlayfs.opaque", b"y");
    std::fs::create_dir(d.join("app")).unwrap();
    whiteout_device(d.join("app/1"));
    std::fs::write(d.join("app/.wh.2"), b"").unwrap();
    std::fs::write(d.join("app/hello.txt"), b"more").unwrap();
    set(
        d.join("app/hello.txt"),
        "user.fuseoverlayfs.origin",
        b"app/hello.txt",
    );
    set(d.join("app/hello.txt"), "user.note", b"kept");
    // The same directory opaque by the xattr this namespace's overlay reads
    // (rootful: trusted.overlay.opaque) and by the raw file: one marker.
    std::fs::create_dir(d.join("var")).unwrap();
    std::fs::write(d.join("var/.wh..wh..opq"), b"").unwrap();
    set(d.join("var"), "trusted.overlay.opaque", b"y");

    let mut tar = Vec::new();
    archive::write_diff_tar(&d, None, &mut tar).unwrap();
    let list = tar_listing(&tar);
    let names: Vec<&str> = list.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "app/",
            "app/.wh.2",
            "app/.wh.1",
            "app/hello.txt",
            "run/",
            "run/.containerenv",
            "run/.wh..wh..opq",
            "var/",
            "var/.wh..wh..opq"
        ]
    );
    let hello = &list[3].5;
    assert!(
        hello.iter().any(|k| k.ends_with("user.note"))
            && !hello.iter().any(|k| k.contains("fuseoverlayfs")),
        "fuse-overlayfs' own xattrs stay out, the user's travel: {hello:?}"
    );
    assert!(
        list.iter()
            .all(|e| !e.5.iter().any(|k| k.contains("fuseoverlayfs"))),
        "{list:?}"
    );
}
