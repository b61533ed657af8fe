//! Measurements behind docs/cvmfs-layers.md (printed as `MEASURE:` lines by
//! `make test-cvmfs`): what the generated whiteout layers cost at first mount,
//! and what a deep stack costs in lookups compared with one flat directory
//! (the question whether a `.flat` tree would be worth using as a single
//! lower). Checks only that the views agree; times are reported, not judged.

mod cvmfs;

use std::fs;
use std::path::Path;
use std::time::Instant;

use cvmfs::{corpus, Style};
use cvmfs_publisher::layer_spec;

/// stat every path of `paths` under `root`, `rounds` times; also `misses`
/// names that exist nowhere (a PATH search), which must visit every layer.
fn lookups(root: &Path, paths: &[String], rounds: usize) -> (f64, f64) {
    let start = Instant::now();
    for _ in 0..rounds {
        for p in paths {
            let _ = fs::symlink_metadata(root.join(p));
        }
    }
    let hit = start.elapsed().as_secs_f64() / (rounds * paths.len()) as f64;
    let start = Instant::now();
    for i in 0..rounds * 200 {
        let _ = fs::symlink_metadata(root.join(format!("m/missing-{i}")));
    }
    let miss = start.elapsed().as_secs_f64() / (rounds * 200) as f64;
    (hit * 1e6, miss * 1e6)
}

#[test]
#[ignore = "needs root"]
fn deep_stack_costs_against_a_flat_tree() {
    cvmfs_testkit::gate::require_root();
    let t = tempfile::Builder::new()
        .prefix("cvmfs-measure")
        .tempdir()
        .unwrap();
    for n in [10usize, 100, 200] {
        let image = corpus::many_layers(&format!("{n}-layers"), n);
        let tars: Vec<Vec<u8>> = image
            .layers
            .iter()
            .map(|s| layer_spec::spec_to_tar(s).unwrap())
            .collect();
        let reference = cvmfs::umoci_reference(&t.path().join(format!("ref{n}")), &tars);
        // DUCC's records (the driver looks for the markers), ours listing
        // them, and ours naming the publisher's flat tree.
        for style in [Style::Ducc, Style::PublisherListed, Style::PublisherFlat] {
            measure(
                &t.path().join(format!("n{n}-{style:?}")),
                n,
                &tars,
                &reference,
                style,
            );
        }
    }
}

fn measure(work: &Path, n: usize, tars: &[Vec<u8>], flat: &Path, style: Style) {
    let repo = work.join("cvmfs/r");
    let store = repo.join("podmanStore");
    let (layers, _) = cvmfs::publish_as(&repo, &store, tars, style);
    let d = cvmfs::repo_driver(&work.join("graph/cvmfs"), &work.join("run"), &repo, &store);
    let top = &layers.last().unwrap().id;
    let start = Instant::now();
    let m = d.get(top, None, &[]).unwrap();
    let first = start.elapsed().as_secs_f64();
    d.put(top).unwrap();
    let start = Instant::now();
    let m2 = d.get(top, None, &[]).unwrap();
    let again = start.elapsed().as_secs_f64();
    assert_eq!(m, m2);
    let paths: Vec<String> = layer_spec::snapshot(flat)
        .unwrap()
        .lines()
        .map(|l| {
            l.split(' ')
                .next()
                .unwrap()
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    let (stack_hit, stack_miss) = lookups(&m, &paths, 20);
    let (flat_hit, flat_miss) = lookups(flat, &paths, 20);
    let aux: u64 = fs::read_dir(work.join("graph/cvmfs/aux"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count() as u64;
    let home = dir_bytes(&work.join("graph/cvmfs/aux"));
    let records = match style {
        Style::Ducc => "records without marker lists",
        Style::PublisherFlat => "records naming a flat tree",
        _ => "records listing the markers",
    };
    println!(
        "MEASURE: {n} raw layers, {records}: {aux} whiteout layers ({:.0} KiB); first get {:.3}s, next get {:.3}s; \
         stat of an existing path {:.1}us in the mount vs {:.1}us in a plain directory ({:.1}x), \
         of a missing path {:.1}us vs {:.1}us ({:.1}x)",
        home as f64 / 1024.0,
        first,
        again,
        stack_hit,
        flat_hit,
        stack_hit / flat_hit,
        stack_miss,
        flat_miss,
        stack_miss / flat_miss
    );
    let want = layer_spec::snapshot(flat).unwrap();
    let want = if style.is_publisher() {
        want
    } else {
        cvmfs::owners_to_root(&want)
    };
    assert_eq!(layer_spec::snapshot(&m).unwrap(), want);
    d.put(top).unwrap();
    d.cleanup().unwrap();
}

/// Bytes of everything under `dir` (files and directories, as `du -sb`).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let md = e.metadata().unwrap();
            total += md.len();
            if md.is_dir() {
                todo.push(e.path());
            }
        }
    }
    total
}
