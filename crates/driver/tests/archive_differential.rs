//! Randomised layers (deterministic seeds): every layer must survive apply ->
//! write_diff_tar -> apply unchanged, and when `CVMFS_GO_ARCHIVE` /
//! `CVMFS_GO_CHANGES` point at `tests/archive_support/gocheck`, our trees, sizes and
//! change lists must equal containers/storage's for the same tars.

#[path = "archive_support/mod.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cvmfs_graphdriver::archive::{self, ApplyOptions};
use cvmfs_publisher::layer_spec;
use support::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &["a", "b", "c", "d", "e"];

/// A layer as real tools write it: parents before children, each name once per
/// layer, whiteouts and opaque markers only in upper layers, hardlinks to earlier
/// files of the same layer.
///
/// Symlinks only where `symlinks` is set: Go's OverlayChanges stats parent layers
/// *following* symlinks (so a dangling or looping one below changes its answer, or
/// fails it), where ours looks at the entries themselves; the top layer may have them.
fn gen_layer(rng: &mut Rng, upper: bool, symlinks: bool) -> String {
    let mut spec = String::new();
    let mut files = Vec::new();
    let mut g = Gen { upper, symlinks };
    g.dir(rng, "", 0, &mut spec, &mut files);
    spec
}

struct Gen {
    upper: bool,
    symlinks: bool,
}

impl Gen {
    fn dir(
        &mut self,
        rng: &mut Rng,
        prefix: &str,
        depth: u32,
        spec: &mut String,
        files: &mut Vec<String>,
    ) {
        let upper = self.upper;
        for name in NAMES {
            let path = format!("{prefix}/{name}");
            let own = rng.pick(&["0:0", "1000:1000", "0:42"]).to_string();
            let mtime = rng.pick(&["1600000000", "1700000000"]);
            match rng.below(if upper { 10 } else { 8 }) {
                0 | 1 => {}
                2 | 3 if depth < 3 => {
                    let mode = rng.pick(&["0755", "0700"]);
                    spec.push_str(&format!("dir {path} {mode} {own} mtime={mtime}\n"));
                    if upper && rng.below(4) == 0 {
                        spec.push_str(&format!("opaque {path}\n"));
                    }
                    self.dir(rng, &path, depth + 1, spec, files);
                }
                2..=5 => {
                    let mode = rng.pick(&["0644", "0600", "0755", "04755"]);
                    let content = rng.pick(&["one", "two", "", "three\\n"]);
                    spec.push_str(&format!(
                        "file {path} {mode} {own} mtime={mtime} \"{content}\"\n"
                    ));
                    if rng.below(3) == 0 {
                        spec.push_str(&format!("xattr {path} user.x={}\n", rng.pick(&["1", "2"])));
                    }
                    files.push(path);
                }
                6 if self.symlinks => {
                    let target = rng.pick(&["a", "b/c", "/abs/x", "e"]);
                    spec.push_str(&format!("symlink {path} -> {target} {own}\n"));
                }
                7 if !files.is_empty() => {
                    let t = files[rng.below(files.len() as u64) as usize].clone();
                    // sometimes with metadata differing from the file's own entry
                    let meta = if rng.below(2) == 0 {
                        " 0600 1000:1000 mtime=1500000000"
                    } else {
                        ""
                    };
                    spec.push_str(&format!("hardlink {path} => {t}{meta}\n"));
                }
                6 | 7 => spec.push_str(&format!("fifo {path} 0600 {own} mtime={mtime}\n")),
                _ => spec.push_str(&format!("whiteout {path}\n")),
            }
        }
    }
}

fn go_untar(go: &str, tar: &[u8], dest: &Path) -> u64 {
    let mut child = Command::new(go)
        .arg("untar")
        .arg(dest)
        // production runs Untar chrooted into the layer: relative hardlink names
        // resolve inside it
        .current_dir(dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "go untar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn go_changes(go: &str, rw: &Path, lowers: &[PathBuf]) -> Result<String, String> {
    let out = Command::new(go)
        .arg("changes")
        .arg(rw)
        .args(lowers)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout).unwrap().trim().to_string())
}

#[test]
#[ignore = "needs root, CVMFS_GO_ARCHIVE and CVMFS_GO_CHANGES"]
fn privileged_random_layers_roundtrip_and_match_go() {
    cvmfs_testkit::gate::require_root();
    let go_archive = Some(cvmfs_testkit::gate::require_env("CVMFS_GO_ARCHIVE"));
    let go_chg = Some(cvmfs_testkit::gate::require_env("CVMFS_GO_CHANGES"));
    let (mut compared, mut go_failed) = (0, 0);
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let t = tmp();
        // a chain of three layers, nearest parent first in `lowers`
        let specs = [
            gen_layer(&mut rng, false, false),
            gen_layer(&mut rng, true, false),
            gen_layer(&mut rng, true, true),
        ];
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let ctx = format!("seed {seed} layer {i}:\n{spec}");
            let tar = layer_spec::spec_to_tar(spec).unwrap();
            let d = mkdir(t.path(), &format!("l{i}"));
            let size = archive::apply_tar(&tar[..], &d, &ApplyOptions::default())
                .unwrap_or_else(|e| panic!("{ctx}\napply: {e}"));
            assert_eq!(size, archive::dir_size(&d).unwrap(), "{ctx}");

            // roundtrip through our own diff tar
            let mut out = Vec::new();
            archive::write_diff_tar(&d, None, &mut out).unwrap();
            let back = mkdir(t.path(), &format!("back{i}"));
            archive::apply_tar(&out[..], &back, &ApplyOptions::default()).unwrap();
            assert_eq!(snap(&d), snap(&back), "{ctx}");

            if let Some(go) = &go_archive {
                let g = mkdir(t.path(), &format!("go{i}"));
                assert_eq!(go_untar(go, &tar, &g), size, "{ctx}");
                assert_eq!(snap(&d), snap(&g), "{ctx}");
            }
            let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
            let ours =
                archive::changes(&d, &lowers).unwrap_or_else(|e| panic!("{ctx}\nchanges: {e}"));
            if let Some(go) = &go_chg {
                let ours = serde_json::to_string(&ours).unwrap();
                match go_changes(go, &d, &lowers) {
                    Ok(theirs) => {
                        assert_eq!(ours, theirs, "{ctx}");
                        compared += 1;
                    }
                    // Go fails where a parent has a file in place of one of this
                    // layer's directories (it stats through it and treats ENOTDIR
                    // as fatal); we count such a path as new instead.
                    Err(e) if e.contains("not a directory") => go_failed += 1,
                    Err(e) => panic!("{ctx}\ngo changes: {e}"),
                }
            }
            dirs.push(d);
        }
    }
    if go_chg.is_some() {
        println!("change lists equal to Go's: {compared}; Go failed (ENOTDIR): {go_failed}");
        assert!(compared > 60, "too few comparable scenarios: {compared}");
    }
}
