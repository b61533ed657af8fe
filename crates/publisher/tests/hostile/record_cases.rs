//! Hostile layer records, marker lists, ownership files and caller mount
//! options: what a tampered repository or store, or a confused caller, hands
//! the driver. Each case lays out a stand-in repository (`repo/`, its store
//! `repo/podmanStore`) beside the canary tree, writes a crafted record and
//! calls `get` through the library API podman's C ABI uses. It passes when
//! `get` fails within its time limit with an error naming the file (or the
//! option and layer) and what is wrong, nothing is left mounted under the
//! scratch directory, and the canary is unchanged — and was never visible
//! through a mount (a `get` that succeeds is inspected before it is undone).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cvmfs_graphdriver::Driver;

use crate::support::*;

pub fn cases() -> Vec<Case> {
    vec![
        case("record/repository-root-slash", repository_root_slash),
        case("record/repository-tmp", repository_tmp),
        case("record/repository-ancestor-of-store", repository_ancestor),
        case("record/repository-sibling", repository_sibling),
        case("record/repository-is-the-store", repository_is_store),
        case("record/repository-relative", repository_relative),
        case("record/repository-with-dotdot", repository_dotdot),
        case("record/repository-via-proc-self-root", repository_proc_root),
        case("record/repository-symlink-alias", repository_alias),
        case("record/local-kind-diff-symlink-outside", local_diff_symlink),
        case("record/path-through-symlink-outside", path_symlink_outside),
        case("record/path-absolute-symlink", path_absolute_symlink),
        case("record/path-proc-self-root-magic", path_proc_magic),
        case("record/path-dotdot", path_dotdot),
        case("record/path-absolute", path_absolute),
        case("record/path-is-a-file", path_is_file),
        case("record/flat-outside-by-dotdot", flat_dotdot),
        case("record/flat-through-symlink-outside", flat_symlink_outside),
        case("record/flat-proc-magic-link", flat_proc_magic),
        case("record/markers-3-million", markers_3m),
        case("record/markers-over-cap-small-names", markers_over_cap),
        case("record/markers-deep-distinct-dirs", markers_deep_dirs),
        case("record/markers-at-both-caps-invented", markers_at_caps),
        case("record/markers-real-over-time-limit", markers_over_time),
        case("record/markers-dotdot", markers_dotdot),
        case("record/markers-absolute", markers_absolute),
        case("record/markers-nul", markers_nul),
        case("record/markers-duplicate", markers_duplicate),
        case("record/markers-not-strings", markers_not_strings),
        case(
            "record/markers-under-symlink-outside",
            markers_under_symlink,
        ),
        case("record/truncated-json", truncated_json),
        case("record/duplicate-keys", duplicate_keys),
        case("record/wrong-version", wrong_version),
        case("record/huge-version-number", huge_version),
        case("record/oversized-record", oversized_record),
        case("record/endless-whitespace", endless_whitespace),
        case("record/deeply-nested-json", deeply_nested_json),
        case("record/parent-not-hex", parent_not_hex),
        case("record/parent-cycle", parent_cycle),
        case("record/record-is-a-fifo", record_fifo),
        case("record/record-symlink-to-canary", record_symlink),
        case("owners/ten-million-entries", owners_10m),
        case("owners/duplicate-entries", owners_duplicates),
        case("owners/absurd-ids", owners_absurd_ids),
        case("owners/dotdot-entry", owners_dotdot),
        case("owners/entry-through-symlink", owners_through_symlink),
        case("owners/at-cap-missing-entries", owners_missing_entries),
        case("probes/hundred-thousand-entries", probes_many),
        case("probes/bad-entries", probes_bad_entries),
        case("probes/through-symlink-outside", probes_through_symlink),
        case("mountopt/lowerdir", mountopt_lowerdir),
        case("mountopt/upperdir-workdir", mountopt_upperdir),
        case("mountopt/lowerdir-plus", mountopt_lowerdir_plus),
        case("mountopt/comma-joined", mountopt_comma_joined),
        case("mountopt/label-smuggling", mountopt_label_smuggling),
    ]
}

fn case(name: &'static str, run: fn() -> Outcome) -> Case {
    Case { name, run }
}

/// Layer IDs (64 hex, as store records need).
const ID: &str = "aa11111111111111111111111111111111111111111111111111111111111111";
const PARENT: &str = "bb22222222222222222222222222222222222222222222222222222222222222";

/// The issue's bound for hostile records, marker lists and ownership files.
const HOSTILE_LIMIT: Duration = Duration::from_secs(2);

/// A stand-in repository with one good layer, its store, and the canary.
struct Stage {
    dir: tempfile::TempDir,
    repo: PathBuf,
    store: PathBuf,
    canary: Canary,
}

/// The good layer's directory, relative to the repository.
const LAYER: &str = ".layers/aa/d1/layerfs";
/// Its parent's (overlay refuses one directory twice in a stack).
const PARENT_LAYER: &str = ".layers/bb/d2/layerfs";

impl Stage {
    fn new(name: &str) -> Stage {
        let dir = tmp(&format!("record-{name}-"));
        let repo = dir.path().join("repo");
        let store = repo.join("podmanStore");
        fs::create_dir_all(repo.join(LAYER).join("etc")).unwrap();
        fs::write(repo.join(LAYER).join("etc/f"), b"f").unwrap();
        fs::create_dir_all(repo.join(PARENT_LAYER).join("etc")).unwrap();
        fs::write(repo.join(PARENT_LAYER).join("etc/g"), b"g").unwrap();
        fs::create_dir_all(&store).unwrap();
        let canary = Canary::new(&dir.path().join("canary"));
        Stage {
            dir,
            repo,
            store,
            canary,
        }
    }

    fn record_path(&self, id: &str) -> PathBuf {
        cvmfs_format::StorePaths::new(&self.store).record(id)
    }

    fn write_record(&self, id: &str, text: &[u8]) -> PathBuf {
        let p = self.record_path(id);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// A record of `repository`/`path` with `extra` JSON fields appended.
    fn record(&self, id: &str, repository: &str, path: &str, extra: &str) -> PathBuf {
        let record = cvmfs_format::CvmfsRecord {
            repository: repository.into(),
            path: path.into(),
            parent: None,
            whiteouts: cvmfs_format::Whiteouts::OciRaw,
            ownership: cvmfs_format::Ownership::Kept,
            markers: None,
            flat: None,
            owner_probes: None,
        };
        // The hostile fields go in as raw JSON, after the good ones.
        let text = record.to_json();
        let text = format!("{}{extra}}}", text.strip_suffix('}').unwrap());
        self.write_record(id, text.as_bytes())
    }

    /// A good record of the stand-in layer, with `extra` fields.
    fn good(&self, id: &str, extra: &str) -> PathBuf {
        self.record(id, self.repo.to_str().unwrap(), LAYER, extra)
    }

    fn canary_rel(&self, from: &Path) -> String {
        self.canary
            .root
            .strip_prefix(from)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    fn driver(&self) -> Driver {
        self.driver_with(&[])
    }

    fn driver_with(&self, extra: &[&str]) -> Driver {
        let mut opts = vec![
            format!("cvmfs.repositories={}", self.repo.display()),
            format!("cvmfs.imagestore={}", self.store.display()),
        ];
        opts.extend(extra.iter().map(|s| s.to_string()));
        Driver::new(
            &self.dir.path().join("graph/cvmfs"),
            &self.dir.path().join("run"),
            &opts,
        )
        .unwrap()
    }

    /// `get` of `id` with `opts` must fail within `limit`, its error naming
    /// every needle; nothing mounted under the scratch directory afterwards,
    /// the canary unchanged. A `get` that succeeds fails the case, saying
    /// whether the canary showed through the mount, and is undone.
    fn refused(&self, id: &str, opts: &[&str], needles: &[&str], limit: Duration) -> Outcome {
        if !is_root() {
            return Outcome::Skip("needs root (real overlay mounts)".into());
        }
        let d = self.driver();
        let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        let start = Instant::now();
        let r = d.get(id, None, &opts);
        let took = start.elapsed();
        let verdict = match r {
            Ok(m) => {
                let shows = self.canary_visible(&m);
                let _ = d.put(id);
                let _ = d.cleanup();
                Err(format!(
                    "get succeeded after {took:.2?}, mounted at {}{}",
                    m.display(),
                    if shows {
                        " SHOWING THE CANARY TREE"
                    } else {
                        ""
                    }
                ))
            }
            Err(e) => {
                let msg = e.to_string();
                needles
                    .iter()
                    .try_for_each(|n| {
                        ensure(msg.contains(n), format!("error does not name {n:?}: {msg}"))
                    })
                    .and_then(|()| {
                        ensure(
                            took < limit,
                            format!("took {took:.2?} (limit {limit:?}): {msg}"),
                        )
                    })
            }
        };
        let _ = d.cleanup();
        outcome(
            verdict
                .and_then(|()| self.nothing_mounted())
                .and_then(|()| self.canary.unchanged()),
        )
    }

    /// Whether the canary's files show at the root of mount `m` or of the
    /// canary's own place relative to it.
    fn canary_visible(&self, m: &Path) -> bool {
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let canary = names(&self.canary.root);
        let seen = names(m);
        (!canary.is_empty() && seen == canary)
            || m.join(self.canary.root.strip_prefix("/").unwrap())
                .join("etc/a")
                .exists()
    }

    fn nothing_mounted(&self) -> Result<(), String> {
        let left = cvmfs_graphdriver::mount::mount_points_under(self.dir.path())
            .map_err(|e| format!("read mountinfo: {e}"))?;
        for m in &left {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        ensure(left.is_empty(), format!("left mounted: {left:?}"))
    }
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn rec(s: &Stage, id: &str) -> String {
    s.record_path(id).display().to_string()
}

// ---- item 2: the repository a record names --------------------------------

fn repository_root_slash() -> Outcome {
    let s = Stage::new("slash");
    let path = s.canary_rel(Path::new("/"));
    s.record(ID, "/", &path, "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"repository\"", "/"],
        HOSTILE_LIMIT,
    )
}

fn repository_tmp() -> Outcome {
    let s = Stage::new("tmp");
    let tmp = std::env::temp_dir();
    let path = s.canary_rel(&tmp);
    s.record(ID, tmp.to_str().unwrap(), &path, "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"repository\""],
        HOSTILE_LIMIT,
    )
}

fn repository_ancestor() -> Outcome {
    let s = Stage::new("ancestor");
    // The scratch directory holds both the repository (and so the store) and
    // the canary: "contains the store" was once enough.
    s.record(ID, s.dir.path().to_str().unwrap(), "canary", "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"repository\""],
        HOSTILE_LIMIT,
    )
}

fn repository_sibling() -> Outcome {
    let s = Stage::new("sibling");
    s.record(ID, s.canary.root.to_str().unwrap(), "etc", "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"repository\""],
        HOSTILE_LIMIT,
    )
}

fn repository_is_store() -> Outcome {
    let s = Stage::new("store");
    fs::create_dir_all(s.store.join("x")).unwrap();
    s.record(ID, s.store.to_str().unwrap(), "x", "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"repository\""],
        HOSTILE_LIMIT,
    )
}

fn repository_relative() -> Outcome {
    let s = Stage::new("relative");
    s.record(ID, "repo", LAYER, "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "not an absolute path"],
        HOSTILE_LIMIT,
    )
}

fn repository_dotdot() -> Outcome {
    let s = Stage::new("repodotdot");
    let sneaky = format!("{}/../canary", s.repo.display());
    s.record(ID, &sneaky, "etc", "");
    s.refused(ID, &[], &[&rec(&s, ID), "\"..\""], HOSTILE_LIMIT)
}

fn repository_proc_root() -> Outcome {
    let s = Stage::new("procroot");
    let via = format!(
        "/proc/self/root{}",
        s.canary.root.parent().unwrap().display()
    );
    s.record(ID, &via, "canary", "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"repository\""],
        HOSTILE_LIMIT,
    )
}

fn repository_alias() -> Outcome {
    // Another name of the scratch directory (a symlink): not the configured
    // repository's name, so not accepted even though it leads there.
    let s = Stage::new("alias");
    let alias = s.dir.path().join("alias");
    std::os::unix::fs::symlink(s.dir.path(), &alias).unwrap();
    s.record(ID, alias.to_str().unwrap(), "canary", "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"repository\""],
        HOSTILE_LIMIT,
    )
}

fn local_diff_symlink() -> Outcome {
    // A record of kind "local" (a sibling driver home used as a store) has
    // its files in `diff` beside it: here a symlink to the canary.
    let s = Stage::new("localdiff");
    let p = s.write_record(ID, br#"{"version":1,"kind":"local","parent":null}"#);
    std::os::unix::fs::symlink(&s.canary.root, p.with_file_name("diff")).unwrap();
    s.refused(ID, &[], &[&rec(&s, ID), "diff"], HOSTILE_LIMIT)
}

// ---- item 2: paths inside the repository ----------------------------------

fn path_symlink_outside() -> Outcome {
    let s = Stage::new("pathlink");
    std::os::unix::fs::symlink("../../../canary", s.repo.join(".layers/aa/out")).unwrap();
    s.record(ID, s.repo.to_str().unwrap(), ".layers/aa/out", "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"path\"", "outside the repository"],
        HOSTILE_LIMIT,
    )
}

fn path_absolute_symlink() -> Outcome {
    let s = Stage::new("pathabs");
    std::os::unix::fs::symlink(&s.canary.root, s.repo.join(".layers/aa/abs")).unwrap();
    s.record(ID, s.repo.to_str().unwrap(), ".layers/aa/abs", "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"path\"", "outside the repository"],
        HOSTILE_LIMIT,
    )
}

fn path_proc_magic() -> Outcome {
    let s = Stage::new("pathmagic");
    // A relative climb to /proc, then the magic link to the root directory.
    let depth = s.repo.join(".layers/aa").components().count() - 1;
    let up = "../".repeat(depth);
    std::os::unix::fs::symlink(format!("{up}proc/self/root"), s.repo.join(".layers/aa/m")).unwrap();
    let path = format!(".layers/aa/m/{}", s.canary_rel(Path::new("/")));
    s.record(ID, s.repo.to_str().unwrap(), &path, "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"path\"", "outside the repository"],
        HOSTILE_LIMIT,
    )
}

fn path_dotdot() -> Outcome {
    let s = Stage::new("pathdotdot");
    s.record(ID, s.repo.to_str().unwrap(), "../canary", "");
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "leaves the repository"],
        HOSTILE_LIMIT,
    )
}

fn path_absolute() -> Outcome {
    let s = Stage::new("pathabsolute");
    s.record(
        ID,
        s.repo.to_str().unwrap(),
        s.canary.root.to_str().unwrap(),
        "",
    );
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "not a relative path"],
        HOSTILE_LIMIT,
    )
}

fn path_is_file() -> Outcome {
    let s = Stage::new("pathfile");
    s.record(ID, s.repo.to_str().unwrap(), &format!("{LAYER}/etc/f"), "");
    s.refused(ID, &[], &[&rec(&s, ID), "not a directory"], HOSTILE_LIMIT)
}

// ---- the flat tree a top record names ---------------------------------------

fn flat_dotdot() -> Outcome {
    let s = Stage::new("flatdotdot");
    s.good(ID, r#","flat":"../canary""#);
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "flat", "leaves the repository"],
        HOSTILE_LIMIT,
    )
}

fn flat_symlink_outside() -> Outcome {
    let s = Stage::new("flatlink");
    fs::create_dir_all(s.repo.join(".flat/cd")).unwrap();
    std::os::unix::fs::symlink("../../../canary", s.repo.join(".flat/cd/c1")).unwrap();
    s.good(ID, r#","flat":".flat/cd/c1""#);
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"flat\"", "outside the repository"],
        HOSTILE_LIMIT,
    )
}

fn flat_proc_magic() -> Outcome {
    let s = Stage::new("flatmagic");
    fs::create_dir_all(s.repo.join(".flat/cd")).unwrap();
    let depth = s.repo.join(".flat/cd").components().count() - 1;
    std::os::unix::fs::symlink(
        format!("{}proc/self/root", "../".repeat(depth)),
        s.repo.join(".flat/cd/m"),
    )
    .unwrap();
    let flat = format!(".flat/cd/m/{}", s.canary_rel(Path::new("/")));
    s.good(ID, &format!(r#","flat":{}"#, json(&flat)));
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"flat\"", "outside the repository"],
        HOSTILE_LIMIT,
    )
}

// ---- item 5 and friends: marker lists ---------------------------------------

/// A record whose `markers` field is `list` (JSON text), written straight to
/// the file without building the whole text in one string twice.
fn markers_record(s: &Stage, id: &str, list: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut text = format!(
        r#"{{"version":1,"kind":"cvmfs","repository":{},"path":{},"parent":null,"whiteouts":"oci-raw","ownership":"kept","markers":"#,
        json(s.repo.to_str().unwrap()),
        json(LAYER)
    )
    .into_bytes();
    list(&mut text);
    text.extend_from_slice(b"}");
    s.write_record(id, &text)
}

fn numbered_markers(n: usize, name: impl Fn(usize) -> String) -> impl FnOnce(&mut Vec<u8>) {
    move |out: &mut Vec<u8>| {
        out.push(b'[');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(json(&name(i)).as_bytes());
        }
        out.push(b']');
    }
}

fn markers_3m() -> Outcome {
    let s = Stage::new("markers3m");
    // Under the old caps (4M entries, 64 MiB): `podman run` took 601 s.
    markers_record(
        &s,
        ID,
        numbered_markers(3_000_000, |i| format!("d{}/.wh.f{i}", i % 1000)),
    );
    s.refused(ID, &[], &[&rec(&s, ID), "markers"], HOSTILE_LIMIT)
}

fn markers_over_cap() -> Outcome {
    let s = Stage::new("markerscap");
    let n = cvmfs_graphdriver::mount::whiteouts::MAX_LISTED_MARKERS + 1;
    markers_record(&s, ID, numbered_markers(n, |i| format!(".wh.{i:x}")));
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "markers", "more than"],
        HOSTILE_LIMIT,
    )
}

fn markers_deep_dirs() -> Outcome {
    let s = Stage::new("markersdeep");
    // Every marker in its own chain of new directories: the most directory
    // creation a list under the entry cap can ask for.
    let n = cvmfs_graphdriver::mount::whiteouts::MAX_LISTED_MARKERS;
    markers_record(
        &s,
        ID,
        numbered_markers(n, |i| {
            format!("{i:x}/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/.wh.x")
        }),
    );
    // The stack: the listed layer over a parent, so a whiteout layer is built.
    s.record(PARENT, s.repo.to_str().unwrap(), PARENT_LAYER, "");
    let text = fs::read(s.record_path(ID)).unwrap();
    let text = String::from_utf8(text)
        .unwrap()
        .replace(r#""parent":null"#, &format!(r#""parent":"{PARENT}""#));
    s.write_record(ID, text.as_bytes());
    s.refused(ID, &[], &[&rec(&s, ID), "markers"], HOSTILE_LIMIT)
}

fn markers_at_caps() -> Outcome {
    // The most work a list within both caps can ask for: every marker and
    // every directory the caps allow, deleting names of a parent and hidden
    // above — none of them in the layer. Refused (or, were it real, built)
    // within the limit.
    if !is_root() {
        return Outcome::Skip("needs root (real overlay mounts)".into());
    }
    use cvmfs_graphdriver::mount::whiteouts::{MAX_LISTED_MARKERS, MAX_MARKER_DIRS};
    let s = Stage::new("markerscaps");
    let depth = 16;
    let chains = MAX_MARKER_DIRS / depth;
    let per_dir = MAX_LISTED_MARKERS / chains;
    let chain = (1..depth).map(|k| format!("/{k}")).collect::<String>();
    markers_record(
        &s,
        ID,
        numbered_markers(chains * per_dir, |i| {
            format!("{:x}{chain}/.wh.{}", i / per_dir, i % per_dir)
        }),
    );
    s.record(PARENT, s.repo.to_str().unwrap(), PARENT_LAYER, "");
    let text = String::from_utf8(fs::read(s.record_path(ID)).unwrap())
        .unwrap()
        .replace(r#""parent":null"#, &format!(r#""parent":"{PARENT}""#));
    s.write_record(ID, text.as_bytes());
    let d = s.driver();
    let start = Instant::now();
    let r = d.get(ID, None, &[]);
    let took = start.elapsed();
    let verdict = match &r {
        Ok(m) => ensure(!s.canary_visible(m), "canary visible through the mount"),
        Err(e) => ensure(
            e.to_string().contains(&rec(&s, ID)),
            format!("error does not name the record: {e}"),
        ),
    }
    .and_then(|()| {
        ensure(
            took < HOSTILE_LIMIT,
            format!("get took {took:.2?} (limit {HOSTILE_LIMIT:?}): {r:?}"),
        )
    });
    if r.is_ok() {
        let _ = d.put(ID);
    }
    let _ = d.cleanup();
    outcome(
        verdict
            .and_then(|()| s.nothing_mounted())
            .and_then(|()| s.canary.unchanged()),
    )
}

fn markers_over_time() -> Outcome {
    // Markers that are really there (a layer deleting many names) but more
    // than the whiteout layers can be built for in the configured time:
    // get gives up at the limit, naming the record, and leaves nothing
    // behind (no mount, no half-built whiteout layer).
    if !is_root() {
        return Outcome::Skip("needs root (real overlay mounts)".into());
    }
    let s = Stage::new("mtime");
    let layer = s.repo.join(LAYER);
    let n = 3000;
    let mut list = Vec::with_capacity(n);
    for i in 0..n {
        let dir = format!("d{}", i % 50);
        fs::create_dir_all(layer.join(&dir)).unwrap();
        let m = format!("{dir}/.wh.f{i}");
        fs::write(layer.join(&m), b"").unwrap();
        list.push(m);
    }
    list.sort();
    let text = serde_json::to_string(&list).unwrap();
    markers_record(&s, ID, |out| out.extend_from_slice(text.as_bytes()));
    s.record(PARENT, s.repo.to_str().unwrap(), PARENT_LAYER, "");
    let text = String::from_utf8(fs::read(s.record_path(ID)).unwrap())
        .unwrap()
        .replace(r#""parent":null"#, &format!(r#""parent":"{PARENT}""#));
    s.write_record(ID, text.as_bytes());
    let d = s.driver_with(&["cvmfs.whiteout_timeout=0.001"]);
    let start = Instant::now();
    let r = d.get(ID, None, &[]);
    let took = start.elapsed();
    let verdict = match r {
        Ok(_) => {
            let _ = d.put(ID);
            Err(format!(
                "built {n} whiteouts twice within 1 ms ({took:.2?}): make the case bigger"
            ))
        }
        Err(e) => {
            let msg = e.to_string();
            ensure(
                msg.contains(&rec(&s, ID)),
                format!("record not named: {msg}"),
            )
            .and_then(|()| {
                ensure(
                    msg.contains("time limit"),
                    format!("not the time limit: {msg}"),
                )
            })
            .and_then(|()| ensure(took < HOSTILE_LIMIT, format!("took {took:.2?}: {msg}")))
        }
    };
    let _ = d.cleanup();
    let staging = s.dir.path().join("graph/cvmfs/staging");
    let left: Vec<_> = fs::read_dir(&staging)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    outcome(
        verdict
            .and_then(|()| ensure(left.is_empty(), format!("left in staging: {left:?}")))
            .and_then(|()| s.nothing_mounted())
            .and_then(|()| s.canary.unchanged()),
    )
}

fn one_marker_case(name: &str, marker: &str, needle: &str) -> Outcome {
    let s = Stage::new(name);
    let m = marker.to_string();
    markers_record(&s, ID, move |out| {
        out.extend_from_slice(format!("[{}]", json(&m)).as_bytes())
    });
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "field \"markers\"", needle],
        HOSTILE_LIMIT,
    )
}

fn markers_dotdot() -> Outcome {
    one_marker_case("mdotdot", "../../../../canary/etc/.wh.a", "\"..\"")
}

fn markers_absolute() -> Outcome {
    one_marker_case("mabs", "/etc/.wh.passwd", "not a relative path")
}

fn markers_nul() -> Outcome {
    one_marker_case("mnul", "etc/\u{0}/.wh.x", "not a relative path")
}

fn markers_duplicate() -> Outcome {
    let s = Stage::new("mdup");
    markers_record(&s, ID, |out| {
        out.extend_from_slice(br#"[".wh.a","etc/.wh.b",".wh.a"]"#)
    });
    s.refused(ID, &[], &[&rec(&s, ID), "listed twice"], HOSTILE_LIMIT)
}

fn markers_not_strings() -> Outcome {
    let s = Stage::new("mtypes");
    markers_record(&s, ID, |out| out.extend_from_slice(br#"[".wh.a",7,null]"#));
    s.refused(ID, &[], &[&rec(&s, ID), "malformed"], HOSTILE_LIMIT)
}

fn markers_under_symlink() -> Outcome {
    // A listed marker below a symlink of the layer that leads to the canary:
    // the whiteout layer must neither read nor change anything through it.
    if !is_root() {
        return Outcome::Skip("needs root (real overlay mounts)".into());
    }
    let s = Stage::new("munder");
    let layer = s.repo.join(LAYER);
    std::os::unix::fs::symlink("../../../../canary", layer.join("out")).unwrap();
    markers_record(&s, ID, |out| {
        out.extend_from_slice(br#"["out/etc/.wh.a","out/opaque/.wh..wh..opq"]"#)
    });
    s.record(PARENT, s.repo.to_str().unwrap(), PARENT_LAYER, "");
    let text = String::from_utf8(fs::read(s.record_path(ID)).unwrap())
        .unwrap()
        .replace(r#""parent":null"#, &format!(r#""parent":"{PARENT}""#));
    s.write_record(ID, text.as_bytes());
    // This stack is legitimate as far as the driver can tell (a marker
    // list naming markers the layer does not have is harmless): it mounts.
    // What matters is that the canary neither changes nor shows.
    let d = s.driver();
    let r = d.get(ID, None, &[]);
    let verdict = match r {
        Ok(m) => {
            let shows = s.canary_visible(&m) || m.join("out/etc/a").exists();
            let through = fs::read_link(m.join("out")).ok();
            let _ = d.put(ID);
            ensure(
                !shows || through.is_some(),
                "canary visible through the mount",
            )
        }
        Err(e) => ensure(
            e.to_string().contains(&rec(&s, ID)),
            format!("error does not name the record: {e}"),
        ),
    };
    let _ = d.cleanup();
    outcome(
        verdict
            .and_then(|()| s.nothing_mounted())
            .and_then(|()| s.canary.unchanged()),
    )
}

// ---- the record file itself ---------------------------------------------------

fn raw_case(name: &str, text: &[u8], needles: &[&str]) -> Outcome {
    let s = Stage::new(name);
    s.write_record(ID, text);
    let r = rec(&s, ID);
    let mut n = vec![r.as_str()];
    n.extend_from_slice(needles);
    s.refused(ID, &[], &n, HOSTILE_LIMIT)
}

fn truncated_json() -> Outcome {
    raw_case(
        "trunc",
        br#"{"version":1,"kind":"cvmfs","repos"#,
        &["truncated"],
    )
}

fn duplicate_keys() -> Outcome {
    // Two "repository" keys: whichever one a reader takes, the record is
    // ambiguous and must be refused.
    let s = Stage::new("dupkeys");
    let text = format!(
        r#"{{"version":1,"kind":"cvmfs","repository":{},"path":"etc","repository":"/","parent":null,"whiteouts":"overlay","ownership":"kept"}}"#,
        json(s.repo.to_str().unwrap())
    );
    s.write_record(ID, text.as_bytes());
    s.refused(ID, &[], &[&rec(&s, ID), "duplicate field"], HOSTILE_LIMIT)
}

fn wrong_version() -> Outcome {
    raw_case(
        "version",
        br#"{"version":2,"kind":"cvmfs"}"#,
        &["version 2"],
    )
}

fn huge_version() -> Outcome {
    raw_case(
        "hugever",
        br#"{"version":184467440737095516160000,"kind":"cvmfs"}"#,
        &["malformed"],
    )
}

fn oversized_record() -> Outcome {
    let s = Stage::new("oversized");
    let mut text = br#"{"version":1,"kind":"cvmfs","pad":""#.to_vec();
    text.resize(text.len() + 80 << 20, b'x');
    text.extend_from_slice(br#""}"#);
    s.write_record(ID, &text);
    s.refused(ID, &[], &[&rec(&s, ID), "larger than"], HOSTILE_LIMIT)
}

fn endless_whitespace() -> Outcome {
    // Within the size cap, all of it whitespace around a good record.
    let s = Stage::new("spaces");
    let good = fs::read(s.good(ID, "")).unwrap();
    let mut text = vec![b' '; (cvmfs_graphdriver::layout::RECORD_MAX_BYTES - 4096) as usize];
    text.extend_from_slice(&good);
    s.write_record(ID, &text);
    // Accepted or refused, it must be quick; a good record under the cap mounts.
    if !is_root() {
        return Outcome::Skip("needs root (real overlay mounts)".into());
    }
    let d = s.driver();
    let start = Instant::now();
    let r = d.get(ID, None, &[]);
    let took = start.elapsed();
    if r.is_ok() {
        let _ = d.put(ID);
    }
    let _ = d.cleanup();
    outcome(
        ensure(took < HOSTILE_LIMIT, format!("took {took:.2?}"))
            .and_then(|()| s.nothing_mounted())
            .and_then(|()| s.canary.unchanged()),
    )
}

fn deeply_nested_json() -> Outcome {
    let s = Stage::new("nested");
    let mut text = br#"{"version":1,"kind":"cvmfs","x":"#.to_vec();
    text.extend(std::iter::repeat(b'[').take(100_000));
    s.write_record(ID, &text);
    s.refused(ID, &[], &[&rec(&s, ID), "malformed"], HOSTILE_LIMIT)
}

fn parent_not_hex() -> Outcome {
    let s = Stage::new("parenthex");
    let text = String::from_utf8(fs::read(s.good(ID, "")).unwrap())
        .unwrap()
        .replace(r#""parent":null"#, r#""parent":"../../../canary""#);
    s.write_record(ID, text.as_bytes());
    s.refused(ID, &[], &[&rec(&s, ID), "parent"], HOSTILE_LIMIT)
}

fn parent_cycle() -> Outcome {
    let s = Stage::new("cycle");
    for (id, parent) in [(ID, PARENT), (PARENT, ID)] {
        let text = String::from_utf8(fs::read(s.good(id, "")).unwrap())
            .unwrap()
            .replace(r#""parent":null"#, &format!(r#""parent":"{parent}""#));
        s.write_record(id, text.as_bytes());
    }
    s.refused(ID, &[], &[ID, PARENT, &rec(&s, PARENT)], HOSTILE_LIMIT)
}

fn record_fifo() -> Outcome {
    // A FIFO where the record should be: reading it blocks forever.
    let s = Stage::new("fifo");
    let p = s.record_path(ID);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    s.refused(ID, &[], &[&rec(&s, ID)], HOSTILE_LIMIT)
}

fn record_symlink() -> Outcome {
    // The record is a symlink to a file of the canary: not JSON, and the
    // error must not echo the file's content.
    let s = Stage::new("reclink");
    let p = s.record_path(ID);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(s.canary.root.join("etc/a"), &p).unwrap();
    s.refused(ID, &[], &[&rec(&s, ID)], HOSTILE_LIMIT)
}

// ---- ownership files ---------------------------------------------------------

/// A layer whose repository lost ownership (so `ownership.json` is read),
/// over a parent (so a whiteout layer restores the owners), with the
/// ownership file written by `write`.
fn owners_stage(name: &str, write: impl FnOnce(&mut Vec<u8>)) -> (Stage, PathBuf) {
    let s = Stage::new(name);
    s.record(PARENT, s.repo.to_str().unwrap(), PARENT_LAYER, "");
    let text = String::from_utf8(fs::read(s.good(ID, "")).unwrap())
        .unwrap()
        .replace(r#""parent":null"#, &format!(r#""parent":"{PARENT}""#))
        .replace(r#""ownership":"kept""#, r#""ownership":"lost""#);
    s.write_record(ID, text.as_bytes());
    let mut bytes = Vec::new();
    write(&mut bytes);
    let p = s.record_path(ID).with_file_name("ownership.json");
    fs::write(&p, &bytes).unwrap();
    (s, p)
}

fn owner_entries(n: usize, entry: impl Fn(usize) -> String) -> impl FnOnce(&mut Vec<u8>) {
    move |out: &mut Vec<u8>| {
        out.extend_from_slice(br#"{"version":1,"entries":["#);
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(entry(i).as_bytes());
        }
        out.extend_from_slice(b"]}");
    }
}

fn owners_10m() -> Outcome {
    let (s, p) = owners_stage(
        "own10m",
        owner_entries(10_000_000, |i| {
            format!(r#"{{"path":"{i:x}","uid":1,"gid":1}}"#)
        }),
    );
    s.refused(ID, &[], &[&p.display().to_string()], HOSTILE_LIMIT)
}

fn owners_duplicates() -> Outcome {
    let (s, p) = owners_stage(
        "owndup",
        owner_entries(3, |_| r#"{"path":"etc/f","uid":1,"gid":1}"#.into()),
    );
    s.refused(
        ID,
        &[],
        &[&p.display().to_string(), "listed twice"],
        HOSTILE_LIMIT,
    )
}

fn owners_absurd_ids() -> Outcome {
    let (s, p) = owners_stage(
        "ownids",
        owner_entries(1, |_| {
            r#"{"path":"etc/f","uid":99999999999,"gid":1}"#.into()
        }),
    );
    s.refused(
        ID,
        &[],
        &[&p.display().to_string(), "malformed"],
        HOSTILE_LIMIT,
    )
}

fn owners_dotdot() -> Outcome {
    let (s, p) = owners_stage(
        "owndotdot",
        owner_entries(1, |_| {
            r#"{"path":"../../../../../canary/etc/a","uid":0,"gid":0}"#.into()
        }),
    );
    s.refused(
        ID,
        &[],
        &[&p.display().to_string(), "\"..\""],
        HOSTILE_LIMIT,
    )
}

fn owners_through_symlink() -> Outcome {
    let (s, p) = owners_stage(
        "ownlink",
        owner_entries(1, |_| r#"{"path":"out/etc/a","uid":0,"gid":0}"#.into()),
    );
    std::os::unix::fs::symlink("../../../../canary", s.repo.join(LAYER).join("out")).unwrap();
    s.refused(
        ID,
        &[],
        &[&p.display().to_string(), "not a directory"],
        HOSTILE_LIMIT,
    )
}

// ---- owner probes (issue 13): a few entries' owners as published ----------

fn probes_many() -> Outcome {
    // 100 000 probes (the field allows 8; 3 MB, under the record limit):
    // refused while parsing, quickly,
    // naming the record and the field.
    let s = Stage::new("probesmany");
    let entries = vec![r#"{"gid":1,"path":"a","uid":1}"#; 100_000].join(",");
    s.good(
        ID,
        &format!(r#","owner-probes":{{"version":1,"entries":[{entries}]}}"#),
    );
    s.refused(
        ID,
        &[],
        &[&rec(&s, ID), "owner-probes", "more than 8 entries"],
        parse_limit(),
    )
}

fn probes_bad_entries() -> Outcome {
    for (name, entry, needle) in [
        (
            "dotdot",
            r#"{"gid":0,"path":"../../canary","uid":0}"#,
            "\"..\"",
        ),
        (
            "absolute",
            r#"{"gid":0,"path":"/etc/passwd","uid":0}"#,
            "relative",
        ),
        (
            "reserved-id",
            r#"{"gid":0,"path":"","uid":4294967295}"#,
            "invalid",
        ),
        (
            "negative-id",
            r#"{"gid":0,"path":"a","uid":-1}"#,
            "malformed",
        ),
    ] {
        let s = Stage::new(&format!("probes{name}"));
        s.good(
            ID,
            &format!(r#","owner-probes":{{"version":1,"entries":[{entry}]}}"#),
        );
        if let Outcome::Fail(e) = s.refused(
            ID,
            &[],
            &[&rec(&s, ID), "owner-probes", needle],
            HOSTILE_LIMIT,
        ) {
            return Outcome::Fail(format!("{name}: {e}"));
        }
    }
    Outcome::Pass
}

fn probes_through_symlink() -> Outcome {
    // A probe under a symlink leading out of the layer: never followed
    // (skipped), so the layer mounts and nothing outside is looked at as
    // the layer's (the canary is not reported as a difference).
    let s = Stage::new("probeslink");
    std::os::unix::fs::symlink("../../../../canary", s.repo.join(LAYER).join("out")).unwrap();
    s.good(
        ID,
        r#","owner-probes":{"version":1,"entries":[{"gid":7,"path":"out/etc/a","uid":7}]}"#,
    );
    let d = s.driver();
    let r = (|| {
        let m = d.get(ID, None, &[]).map_err(|e| format!("get: {e}"))?;
        let status = d.status();
        d.put(ID).map_err(|e| format!("put: {e}"))?;
        let line = status
            .iter()
            .find(|(k, _)| k == "CVMFS Client Owners")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if !line.starts_with("as published") {
            return Err(format!("a probe was followed through the symlink: {line}"));
        }
        if s.canary_visible(&m) {
            return Err("the canary is visible in the mount".into());
        }
        Ok(())
    })();
    let _ = d.cleanup();
    outcome(r)
}

fn owners_missing_entries() -> Outcome {
    // Entries for files the layer does not have, as many as the size cap
    // allows: refused at the first one, quickly.
    let n = cvmfs_graphdriver::mount::whiteouts::MAX_OWNER_ENTRIES;
    let (s, p) = owners_stage(
        "ownmissing",
        owner_entries(n, |i| format!(r#"{{"path":"m/{i:x}","uid":1,"gid":1}}"#)),
    );
    s.refused(ID, &[], &[&p.display().to_string()], parse_limit())
}

/// For an input whose refusal takes a full JSON parse of a file at its size
/// cap. The issue's 2 s hold for the driver as podman loads it (a release
/// build); a debug build of this test parses JSON some 20-50 times slower
/// (measured on a loaded 2-core machine: 17 MB in 4.3 s debug; a 500000
/// entry ownership file refused in 12.7 s debug), so it is given 10 times
/// the limit there.
fn parse_limit() -> Duration {
    if cfg!(debug_assertions) {
        HOSTILE_LIMIT * 10
    } else {
        HOSTILE_LIMIT
    }
}

// ---- caller mount options -------------------------------------------------------

fn mountopt_case(name: &str, opt: &str) -> Outcome {
    let s = Stage::new(name);
    s.good(ID, "");
    let canary = s.canary.root.display().to_string();
    let opt = opt.replace("CANARY", &canary);
    s.refused(
        ID,
        &["nodev", &opt],
        &[ID, &format!("{opt:?}"), "refused"],
        HOSTILE_LIMIT,
    )
}

fn mountopt_lowerdir() -> Outcome {
    mountopt_case("optlower", "lowerdir=CANARY")
}

fn mountopt_upperdir() -> Outcome {
    mountopt_case("optupper", "upperdir=CANARY/data")
}

fn mountopt_lowerdir_plus() -> Outcome {
    mountopt_case("optlowerplus", "lowerdir+=CANARY")
}

fn mountopt_comma_joined() -> Outcome {
    mountopt_case("optcomma", "ro,lowerdir=CANARY")
}

fn mountopt_label_smuggling() -> Outcome {
    mountopt_case("optlabel", "context=\"x\",lowerdir=CANARY")
}
