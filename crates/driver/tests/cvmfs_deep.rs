//! Deep stacks of DUCC-style CVMFS layers (raw whiteouts, no flat tree, so
//! every layer also takes a generated whiteout layer): the overlay lines in
//! `/proc/self/mountinfo` must stay short, because runc and every other
//! mountinfo reader breaks on long lines (runc: 64 KiB per line). Issue 13:
//! a 151-layer stack made a 42 722-byte line with full lower paths.
//! Needs root (real mounts).

mod cvmfs;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cvmfs::{corpus, Style};
use cvmfs_publisher::layer_spec;

/// Longest mountinfo line accepted for any mount of the stack.
const LINE_LIMIT: usize = 8 << 10;

/// The overlay mountinfo lines of mounts at or below `root`: (mount point,
/// line length, number of lower directories).
fn overlay_lines(root: &Path) -> Vec<(PathBuf, usize, usize)> {
    let root = fs::canonicalize(root).unwrap();
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter(|l| l.contains(" - overlay "))
        .filter_map(|l| {
            let point = PathBuf::from(l.split(' ').nth(4)?);
            point.starts_with(&root).then(|| {
                let lowers = l.matches("lowerdir+=").count()
                    + l.split("lowerdir=")
                        .nth(1)
                        .map_or(0, |v| v.split(',').next().unwrap().split(':').count());
                (point, l.len(), lowers)
            })
        })
        .collect()
}

/// What the line's lower directories would take written as full paths (as
/// before short names): the targets of the mount's short links.
fn full_path_bytes(point: &Path) -> usize {
    let links = cvmfs_graphdriver::mount::link_dir(point);
    fs::read_dir(&links)
        .map(|r| {
            r.flatten()
                .map(|e| ",lowerdir+=".len() + fs::read_link(e.path()).unwrap().as_os_str().len())
                .sum()
        })
        .unwrap_or(0)
}

/// What `lowers` short names take in the line: `,lowerdir+=0` ... .
fn short_name_bytes(lowers: usize) -> usize {
    (0..lowers)
        .map(|i| ",lowerdir+=".len() + i.to_string().len())
        .sum()
}

fn deep_stack(n: usize) {
    cvmfs_testkit::gate::require_root();
    // A long prefix, as a real graph root under /var/lib/containers/storage.
    let t = tempfile::Builder::new()
        .prefix("cvmfs-deep-var-lib-containers-storage")
        .tempdir()
        .unwrap();
    let image = corpus::many_layers(&format!("{n}-layers"), n);
    let tars: Vec<Vec<u8>> = image
        .layers
        .iter()
        .map(|s| layer_spec::spec_to_tar(s).unwrap())
        .collect();
    let repo = t.path().join("cvmfs/unpacked.example.org");
    let store = repo.join("podmanStore");
    let layers = cvmfs::lay_out(&repo, &tars, Style::Ducc);
    cvmfs::write_records(&store, &repo, &layers, "lost");
    let run = t.path().join("run");
    let d = cvmfs::repo_driver(&t.path().join("graph/cvmfs"), &run, &repo, &store);
    let top = &layers.last().unwrap().id;
    let start = Instant::now();
    let m = d.get(top, None, &[]).unwrap();
    let took = start.elapsed();
    // The stack is what it should be: the top layer's file, the one below
    // whited out, the last opaque directory's content only.
    let last = n - 1;
    assert_eq!(
        fs::read_to_string(m.join(format!("m/f{last}"))).unwrap(),
        last.to_string()
    );
    assert!(!m.join(format!("m/f{}", last - 1)).exists());
    assert_eq!(
        fs::read_to_string(m.join("m/shared")).unwrap(),
        format!("v{last}")
    );
    let lines: Vec<_> = overlay_lines(&run)
        .into_iter()
        .map(|(point, len, lowers)| {
            let full = len + full_path_bytes(&point) - short_name_bytes(lowers);
            (point, len, lowers, full)
        })
        .collect();
    d.put(top).unwrap();
    d.cleanup().unwrap();
    assert!(!lines.is_empty(), "no overlay mount found below {run:?}");
    for (point, len, lowers, full) in &lines {
        println!(
            "{n} layers: mount {} has {lowers} lowers, mountinfo line {len} bytes \
             (with full lower paths it would be {full}); get took {took:?}",
            point.display(),
        );
    }
    for (point, len, _, _) in &lines {
        assert!(
            *len < LINE_LIMIT,
            "{n} layers: mountinfo line of {} is {len} bytes",
            point.display()
        );
    }
}

#[test]
#[ignore = "needs root"]
fn stack_of_150_layers_has_short_mountinfo_lines() {
    deep_stack(150);
}

#[test]
#[ignore = "needs root"]
fn stack_of_320_layers_has_short_mountinfo_lines() {
    deep_stack(320);
}

#[test]
#[ignore = "needs root"]
fn stack_of_500_layers_has_short_mountinfo_lines() {
    deep_stack(500);
}
