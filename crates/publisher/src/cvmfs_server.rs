//! Publishing into a real CernVM-FS repository: stage, then one `cvmfs_server
//! ingest` (docs/store-format.md, "Publishing into a real CVMFS repository").
//!
//! Why not write through `cvmfs_server transaction`: its `publish` reads every
//! name beginning `.wh.` as an overlay whiteout and drops it, so the raw OCI
//! markers DUCC keeps in `layerfs` would be lost. `cvmfs_server ingest` of a tar
//! stream keeps them, and with `-k` the owners too, but every directory it has
//! to create itself (one the tar does not name) gets uid/gid -1. So:
//!
//! 1. the plain-directory publisher runs against an overlay whose lower layer is
//!    the repository's published revision (`<spool>/rdonly`, read-only) and
//!    whose upper layer is a local staging directory: the upper then holds
//!    exactly what the publish added or changed, every directory on the way
//!    from the repository root included (overlay copies them up with their
//!    metadata), and a whiteout for what it removed;
//! 2. the upper is streamed as one tar (numeric owners, every directory named)
//!    into `cvmfs_server ingest -t - -b / -k`, removals as `-d`: one revision,
//!    nothing visible before the whole image is in.
//!
//! Crash safety: nothing reaches the repository before the ingest starts; a
//! publisher killed during the ingest leaves the repository in a transaction,
//! which the next run (under the same lock) aborts before it starts. One
//! publisher at a time per repository (`<spool>/cvmfs-podman.lock`); a
//! transaction someone else opened is refused by name.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cvmfs_graphdriver::archive::fsutil;

use crate::fsx;
use crate::{Error, Result};

/// Where `server.conf` of each repository lives (`<dir>/<name>/server.conf`);
/// the environment variable overrides it for tests with an emulated server.
pub const REPOSITORIES_D: &str = "/etc/cvmfs/repositories.d";
pub const REPOSITORIES_D_ENV: &str = "CVMFS_PODMAN_REPOSITORIES_D";

/// The part of a repository's `server.conf` the publisher needs.
#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    /// `CVMFS_UNION_DIR`: where the repository is mounted (`/cvmfs/<name>`).
    pub union_dir: PathBuf,
    /// `CVMFS_SPOOL_DIR`: holds `rdonly` (the published revision) and the
    /// server's transaction flags; our lock and staging directory go there.
    pub spool_dir: PathBuf,
    /// `CVMFS_INCLUDE_XATTRS=true`: a publish keeps extended attributes.
    pub include_xattrs: bool,
}

/// A fully qualified repository name as `cvmfs_server` accepts it.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Paths go into an overlay option string and a `-d` list: no separators.
fn plain_path(p: &Path, what: &str) -> Result<()> {
    let b = p.as_os_str().as_bytes();
    if !p.is_absolute() || b.iter().any(|c| b",:\\\n\t ".contains(c)) {
        return Err(Error::msg(format!(
            "{what} {}: must be an absolute path without ',', ':', '\\' or blanks",
            p.display()
        )));
    }
    Ok(())
}

impl Repository {
    /// Read `<repositories.d>/<name>/server.conf` (at most 64 KiB).
    pub fn open(name: &str) -> Result<Repository> {
        if !valid_name(name) {
            return Err(Error::msg(format!(
                "--cvmfs-transaction {name:?}: not a repository name"
            )));
        }
        let dir = std::env::var_os(REPOSITORIES_D_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(REPOSITORIES_D));
        let conf = dir.join(name).join("server.conf");
        let text = fsx::read_record(&conf, 64 << 10).map_err(|e| {
            Error::io(&conf, e).context(format!(
                "repository {name}: no server configuration (is this its stratum 0?)"
            ))
        })?;
        let text = String::from_utf8_lossy(&text);
        let get = |key: &str| {
            text.lines().rev().find_map(|l| {
                let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
                Some(v.trim().trim_matches(['"', '\'']).to_string())
            })
        };
        let union_dir = PathBuf::from(get("CVMFS_UNION_DIR").unwrap_or(format!("/cvmfs/{name}")));
        let spool_dir =
            PathBuf::from(get("CVMFS_SPOOL_DIR").unwrap_or(format!("/var/spool/cvmfs/{name}")));
        plain_path(&union_dir, &format!("{}: CVMFS_UNION_DIR", conf.display()))?;
        plain_path(&spool_dir, &format!("{}: CVMFS_SPOOL_DIR", conf.display()))?;
        Ok(Repository {
            name: name.to_string(),
            union_dir,
            spool_dir,
            include_xattrs: get("CVMFS_INCLUDE_XATTRS").as_deref() == Some("true"),
        })
    }

    fn in_transaction(&self) -> bool {
        self.spool_dir.join("in_transaction.lock").exists()
    }

    /// Is a `cvmfs_server publish`/`ingest` running (its flock on
    /// `is_publishing.lock` is held, also by its children)?
    fn publishing(&self) -> bool {
        let Ok(f) = fs::File::open(self.spool_dir.join("is_publishing.lock")) else {
            return false;
        };
        use rustix::fs::FlockOperation::NonBlockingLockShared;
        rustix::fs::flock(&f, NonBlockingLockShared) == Err(rustix::io::Errno::WOULDBLOCK)
    }

    fn rdonly(&self) -> PathBuf {
        self.spool_dir.join("rdonly")
    }

    /// The published revision (`user.revision` of the read-only mount).
    fn revision(&self) -> Option<Vec<u8>> {
        fsutil::get_xattr(&self.rdonly(), b"user.revision")
            .ok()
            .flatten()
    }

    /// `repo` (where the publisher was told to write) as a path inside the
    /// repository, e.g. `/cvmfs/<name>/images` → `images`.
    fn inner_path(&self, repo: &Path) -> Result<PathBuf> {
        let abs = if repo.is_absolute() {
            repo.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::msg(format!("current directory: {e}")))?
                .join(repo)
        };
        let rel = abs.strip_prefix(&self.union_dir).map_err(|_| {
            Error::msg(format!(
                "--repo {}: not inside repository {} (mounted at {})",
                repo.display(),
                self.name,
                self.union_dir.display()
            ))
        })?;
        let mut out = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                _ => {
                    return Err(Error::msg(format!(
                        "--repo {}: '..' is not allowed",
                        repo.display()
                    )))
                }
            }
        }
        Ok(out)
    }

    fn server(&self, args: &[&str]) -> Result<()> {
        let st = Command::new("cvmfs_server")
            .args(args)
            .arg(&self.name)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| Error::msg(format!("cvmfs_server {}: {e}", args.join(" "))))?;
        if !st.success() {
            return Err(Error::msg(format!(
                "cvmfs_server {} {} failed: {st}",
                args.join(" "),
                self.name
            )));
        }
        Ok(())
    }
}

/// What one publish through ingest did.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    /// tar entries streamed (files, directories, links) and their bytes
    pub entries: usize,
    pub tar_bytes: u64,
    /// paths removed in the same revision (`-d`)
    pub deletions: Vec<String>,
    /// files whose extended attributes the ingest could not carry
    pub xattr_files: usize,
    pub stage_seconds: f64,
    pub ingest_seconds: f64,
}

/// Run `publish` (the plain-directory publisher) against a staged view of
/// `repo` inside repository `name`, then ingest what it wrote in one revision.
pub fn publish_via_ingest(
    name: &str,
    repo: &Path,
    quiet: bool,
    publish: impl FnOnce(&Path) -> Result<()>,
) -> Result<IngestReport> {
    let r = Repository::open(name)?;
    let inner = r.inner_path(repo)?;
    let _lock = fsx::Lock::publisher(&r.spool_dir.join("cvmfs-podman.lock"))?;
    recover_killed_ingest(&r)?;
    if r.in_transaction() {
        return Err(Error::msg(format!(
            "repository {name} is in a transaction someone else opened: publish when it is \
             closed (cvmfs_server publish {name}), or discard it (cvmfs_server abort {name})"
        )));
    }
    let revision = r.revision();
    let start = Instant::now();
    let mut stage = Staging::mount(&r)?;
    publish(&stage.merged.join(&inner))?;
    stage.unmount()?;
    let staged = walk_upper(&stage.upper, &r.rdonly())?;
    let staged_unchanged = staged.unchanged;
    let mut report = IngestReport {
        entries: staged.paths.len(),
        deletions: staged.deletions.clone(),
        xattr_files: staged.xattr_files,
        stage_seconds: start.elapsed().as_secs_f64(),
        ..Default::default()
    };
    if r.revision() != revision {
        return Err(Error::msg(format!(
            "repository {name} got a new revision while this image was staged: run again"
        )));
    }
    if staged.xattr_files > 0 && !r.include_xattrs {
        eprintln!(
            "warning: {} staged files carry extended attributes; repository {name} does not \
             keep them (its server.conf has no CVMFS_INCLUDE_XATTRS=true)",
            staged.xattr_files
        );
    }
    let t = Instant::now();
    report.tar_bytes = ingest(&r, &stage, &staged, quiet, revision.as_deref())?;
    if r.include_xattrs && !staged.xattrs.is_empty() {
        // ingest stores none: a transaction sets them, its publish keeps them
        set_xattrs(&r, &staged.xattrs)?;
    }
    report.ingest_seconds = t.elapsed().as_secs_f64();
    if !quiet {
        eprintln!(
            "ingested {} entries ({:.1} MB of tar, {} removals; {} unchanged copies left out) into {name} in {:.1}s after {:.1}s of staging",
            report.entries,
            report.tar_bytes as f64 / 1e6,
            report.deletions.len(),
            staged_unchanged,
            report.ingest_seconds,
            report.stage_seconds
        );
    }
    Ok(report)
}

/// The ingest marker: written before `cvmfs_server ingest` starts, removed
/// when it has finished. Found under the lock, it means a publisher was
/// killed during its ingest.
fn ingest_marker(r: &Repository) -> PathBuf {
    r.spool_dir.join("cvmfs-podman.ingesting")
}

/// How long a publish waits for a killed publish's ingest to end. A signal
/// to a process group is delivered asynchronously: `cvmfs_server` may still
/// hold its publishing lock for a moment after the publisher is gone, and a
/// publish run right after `kill -9` should not fail for that.
const KILLED_INGEST_WAIT: Duration = Duration::from_secs(10);

/// Whether the publishing lock is free, waiting up to [`KILLED_INGEST_WAIT`]
/// (and saying so once) while it is held.
fn killed_ingest_ended(r: &Repository) -> bool {
    if !r.publishing() {
        return true;
    }
    eprintln!(
        "cvmfs-podman: repository {}: waiting up to {}s for the ingest of a killed publish to end",
        r.name,
        KILLED_INGEST_WAIT.as_secs()
    );
    let deadline = Instant::now() + KILLED_INGEST_WAIT;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if !r.publishing() {
            return true;
        }
    }
    false
}

fn recover_killed_ingest(r: &Repository) -> Result<()> {
    let marker = ingest_marker(r);
    if !marker.exists() {
        return Ok(());
    }
    if !killed_ingest_ended(r) {
        return Err(Error::msg(format!(
            "repository {}: the ingest of a killed cvmfs-podman publish is still running \
             after {}s; run again when it has ended",
            r.name,
            KILLED_INGEST_WAIT.as_secs()
        )));
    }
    if r.in_transaction() {
        eprintln!(
            "cvmfs-podman: repository {}: aborting the transaction a killed publish left open",
            r.name
        );
        r.server(&["abort", "-f"])?;
    }
    fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))
}

/// The staging directory `<spool>/cvmfs-podman-staging/{upper,work,merged}`
/// and the overlay mounted on `merged`. A guardian process (its own process
/// group, so a signal to ours does not reach it) detaches the overlay when
/// this process dies without doing it.
struct Staging {
    root: PathBuf,
    upper: PathBuf,
    merged: PathBuf,
    mounted: bool,
    guardian: Option<Child>,
}

impl Staging {
    fn mount(r: &Repository) -> Result<Staging> {
        let root = r.spool_dir.join("cvmfs-podman-staging");
        let (upper, work, merged) = (root.join("upper"), root.join("work"), root.join("merged"));
        // a killed run's overlay (if its guardian died too) and files
        let _ = rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH);
        fsx::remove_all(&root)?;
        for d in [&root, &upper, &work, &merged] {
            fs::create_dir(d).map_err(|e| Error::io(d, e))?;
        }
        let lower = r.rdonly();
        if !lower.is_dir() {
            return Err(Error::msg(format!(
                "repository {}: {} (its published revision) is not mounted: \
                 cvmfs_server mount {}",
                r.name,
                lower.display(),
                r.name
            )));
        }
        // full copy-ups only, no redirects: the upper must be a plain tree
        let data = format!(
            "lowerdir={},upperdir={},workdir={},metacopy=off,redirect_dir=off,index=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        rustix::mount::mount(
            "cvmfs-podman",
            &merged,
            "overlay",
            rustix::mount::MountFlags::empty(),
            std::ffi::CString::new(data)
                .expect("checked paths have no NUL")
                .as_c_str(),
        )
        .map_err(|e| {
            Error::msg(format!(
                "staging overlay on {} over {}: {e} (publishing into a CVMFS repository needs root)",
                merged.display(),
                lower.display()
            ))
        })?;
        let guardian = Command::new("sh")
            .args(["-c", "read _ ; umount -l \"$1\" 2>/dev/null", "sh"])
            .arg(&merged)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
        Ok(Staging {
            root,
            upper,
            merged,
            mounted: true,
            guardian,
        })
    }

    fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::empty()).map_err(
                |e| {
                    Error::msg(format!(
                        "unmounting the staging overlay {}: {e}",
                        self.merged.display()
                    ))
                },
            )?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH);
        }
        if let Some(mut g) = self.guardian.take() {
            drop(g.stdin.take());
            let _ = g.wait();
        }
        let _ = fsx::remove_all(&self.root);
    }
}

/// What the publish left in the overlay's upper layer.
#[derive(Debug, Default)]
struct Staged {
    /// relative paths, parents before children (NUL-free by construction)
    paths: Vec<Vec<u8>>,
    /// removed repository paths (overlay whiteouts)
    deletions: Vec<String>,
    xattr_files: usize,
    /// extended attributes of staged entries (path, name, value), which the
    /// ingest drops; overlay's own `trusted.overlay.*` are not among them
    xattrs: Vec<(PathBuf, Vec<u8>, Vec<u8>)>,
    bytes: u64,
    /// copied-up entries left out (equal to the published ones)
    unchanged: usize,
}

/// Walk the upper layer; refuse what a tar plus `-d` cannot say. Entries
/// overlay only copied up (a layer file the flat tree links to, a directory on
/// the way to a new file) are left out when they equal the published ones:
/// the ingest would store them again unchanged.
fn walk_upper(upper: &Path, lower: &Path) -> Result<Staged> {
    let mut out = Staged::default();
    walk_dir(upper, lower, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_dir(upper: &Path, lower: &Path, rel: &Path, out: &mut Staged) -> Result<()> {
    let dir = upper.join(rel);
    for name in fsutil::sorted_names(&dir).map_err(|e| Error::io(&dir, e))? {
        let rel = rel.join(&name);
        let p = upper.join(&rel);
        let md = fs::symlink_metadata(&p).map_err(|e| Error::io(&p, e))?;
        if md.file_type().is_char_device() && md.rdev() == 0 {
            out.deletions.push(deletion_path(&rel)?);
            continue;
        }
        let unchanged = same_as_published(&md, &p, &lower.join(&rel));
        if unchanged && !md.is_dir() {
            out.unchanged += 1;
            continue;
        }
        let (paths, xattrs) = (out.paths.len(), out.xattrs.len());
        out.paths.push(rel.as_os_str().as_bytes().to_vec());
        collect_xattrs(&p, &rel, md.is_dir(), out)?;
        if md.is_file() {
            out.bytes += md.len();
        }
        if md.is_dir() {
            walk_dir(upper, lower, &rel, out)?;
            if unchanged && out.paths.len() == paths + 1 {
                // nothing new below: the published directory stays as it is
                out.paths.truncate(paths);
                out.xattrs.truncate(xattrs);
                out.unchanged += 1;
            }
        }
    }
    Ok(())
}

/// Record `p`'s extended attributes (overlay's own excepted); refuse an
/// opaque directory (the publish replaced a published one).
fn collect_xattrs(p: &Path, rel: &Path, is_dir: bool, out: &mut Staged) -> Result<()> {
    let names = fsutil::list_xattrs(p).map_err(|e| Error::io(p, e))?;
    if is_dir && names.iter().any(|x| x == b"trusted.overlay.opaque") {
        return Err(Error::msg(format!(
            "{}: the publish replaced this directory of the repository, which one ingest \
             cannot express; remove it from the repository first",
            rel.display()
        )));
    }
    let mut any = false;
    for x in names.iter().filter(|x| !x.starts_with(b"trusted.overlay.")) {
        if let Some(v) = fsutil::get_xattr(p, x).map_err(|e| Error::io(p, e))? {
            out.xattrs.push((rel.to_path_buf(), x.clone(), v));
            any = true;
        }
    }
    out.xattr_files += usize::from(any);
    Ok(())
}

/// Is the staged entry `upper` a plain copy-up of the published `lower`: same
/// type, mode, owner, mtime, and size or link target? (Content: a copy-up
/// copies it, and nothing publishes while we hold the lock.)
fn same_as_published(md: &fs::Metadata, upper: &Path, lower: &Path) -> bool {
    let Ok(lm) = fs::symlink_metadata(lower) else {
        return false;
    };
    let same = lm.file_type() == md.file_type()
        && (lm.mode(), lm.uid(), lm.gid(), lm.mtime(), lm.mtime_nsec())
            == (md.mode(), md.uid(), md.gid(), md.mtime(), md.mtime_nsec())
        && (md.is_dir() || lm.len() == md.len());
    same && (!md.file_type().is_symlink() || fs::read_link(lower).ok() == fs::read_link(upper).ok())
}

/// `cvmfs_server ingest -d` takes a ':'-separated list of UTF-8 paths.
fn deletion_path(rel: &Path) -> Result<String> {
    match rel.to_str() {
        Some(s) if !s.contains(':') => Ok(s.to_string()),
        _ => Err(Error::msg(format!(
            "{}: the publish removed this path, which cvmfs_server ingest -d cannot name",
            rel.display()
        ))),
    }
}

/// Set `xattrs` on the ingested files in one transaction (a second revision).
/// Names beginning `.wh.` are left alone: the publish would read them as
/// deletions. A publisher killed here leaves the transaction to the next run
/// (the ingest marker), and the image published without these attributes.
fn set_xattrs(r: &Repository, xattrs: &[(PathBuf, Vec<u8>, Vec<u8>)]) -> Result<()> {
    let marker = ingest_marker(r);
    fsx::write_atomic(&marker, std::process::id().to_string().as_bytes(), 0o644)?;
    r.server(&["transaction"])?;
    let set = || -> Result<()> {
        for (rel, name, value) in xattrs {
            let wh = rel.file_name().is_some_and(|n| {
                n.as_bytes().len() >= 4 && n.as_bytes()[..4].eq_ignore_ascii_case(b".wh.")
            });
            if wh {
                eprintln!(
                    "warning: {}: extended attributes of a .wh.* marker cannot be published",
                    rel.display()
                );
                continue;
            }
            let p = r.union_dir.join(rel);
            fsutil::set_xattr(&p, name, value).map_err(|e| {
                Error::io(&p, e).context(format!("setting {}", String::from_utf8_lossy(name)))
            })?;
        }
        r.server(&["publish"])
    };
    if let Err(e) = set() {
        if r.in_transaction() && !r.publishing() {
            let _ = r.server(&["abort", "-f"]);
        }
        let _ = fs::remove_file(&marker);
        return Err(e.context(format!(
            "repository {}: the image is published, its extended attributes are not",
            r.name
        )));
    }
    fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))
}

/// `tar … | cvmfs_server ingest -t - -b / -k [-d …] <name>`, the stream passing
/// through this process for progress. Returns the tar's size. `before` is the
/// revision published before it, to tell on failure whether one was published.
fn ingest(
    r: &Repository,
    stage: &Staging,
    staged: &Staged,
    quiet: bool,
    before: Option<&[u8]>,
) -> Result<u64> {
    let list = stage.root.join("entries");
    let mut l = Vec::new();
    for p in &staged.paths {
        l.extend_from_slice(p);
        l.push(0);
    }
    fs::write(&list, l).map_err(|e| Error::io(&list, e))?;
    let log_path = stage.root.join("ingest.log");
    let log = fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&stage.upper)
        .args([
            "--numeric-owner",
            "--no-recursion",
            "--null",
            "--verbatim-files-from",
            "-T",
        ])
        .arg(&list)
        .args(["-cf", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::msg(format!("tar: {e}")))?;
    let mut args = vec!["ingest", "-t", "-", "-b", "/", "-k"];
    let del = staged.deletions.join(":");
    if !del.is_empty() {
        args.extend(["-d", del.as_str()]);
    }
    let marker = ingest_marker(r);
    fsx::write_atomic(&marker, std::process::id().to_string().as_bytes(), 0o644)?;
    let mut server = Command::new("cvmfs_server")
        .args(&args)
        .arg(&r.name)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().map_err(|e| Error::io(&log_path, e))?)
        .stderr(log)
        .spawn()
        .map_err(|e| Error::msg(format!("cvmfs_server ingest: {e}")))?;
    let streamed = stream(
        tar.stdout.take().expect("piped"),
        server.stdin.take().expect("piped"),
        staged.bytes,
        quiet,
    );
    let tar_st = tar.wait();
    let st = wait_for_server(&mut server, r)?;
    let failed = |why: String| {
        if r.in_transaction() && !r.publishing() {
            let _ = r.server(&["abort", "-f"]);
        }
        let _ = fs::remove_file(&marker);
        Err(Error::msg(format!(
            "cvmfs_server {} {}: {why}; {}{}",
            args.join(" "),
            r.name,
            publish_outcome(r, before),
            log_tail(&log_path)
        )))
    };
    if !st.success() {
        return failed(format!("{st}"));
    }
    let n = match (streamed, tar_st) {
        (Err(e), _) => return failed(format!("streaming the staged tree: {e}")),
        (_, Ok(t)) if !t.success() => return failed(format!("tar {t}")),
        (_, Err(e)) => return failed(format!("tar: {e}")),
        (Ok(n), _) => n,
    };
    fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
    Ok(n)
}

/// What a failed `cvmfs_server ingest` left published, from the revision the
/// read-only mount shows now: it can fail after publishing (its final remount
/// of `<spool>/rdonly`), and then the image *is* in the repository.
fn publish_outcome(r: &Repository, before: Option<&[u8]>) -> String {
    describe_outcome(&r.name, &r.rdonly(), before, r.revision().as_deref())
}

fn describe_outcome(
    name: &str,
    rdonly: &Path,
    before: Option<&[u8]>,
    now: Option<&[u8]>,
) -> String {
    let text = |v: &[u8]| String::from_utf8_lossy(v).trim().to_string();
    match (before, now) {
        (Some(b), Some(n)) if b == n => "nothing was published".to_string(),
        (_, Some(n)) => format!(
            "revision {} was published nevertheless (the failure came after it): the image is \
             in repository {name}; run `cvmfs-podman check` on it before relying on it",
            text(n)
        ),
        (_, None) => format!(
            "whether a revision was published is unknown: {} shows no revision (not mounted?); \
             run `cvmfs_server mount {name}` and compare its revision with {}",
            rdonly.display(),
            before.map_or_else(|| "the one before".to_string(), text)
        ),
    }
}

/// Wait for `cvmfs_server ingest` after the stream ended. Once, after 60 s,
/// say what makes it hang in practice: its final remount of `<spool>/rdonly`
/// waits for the previous `cvmfs2` to exit, which does not happen while a
/// mount namespace made meanwhile (a container, `unshare -m`) still holds a
/// copy of that mount (measured with CernVM-FS 2.12).
fn wait_for_server(server: &mut Child, r: &Repository) -> Result<std::process::ExitStatus> {
    let since = Instant::now();
    let mut warned = false;
    loop {
        match server.try_wait() {
            Ok(Some(st)) => return Ok(st),
            Ok(None) => {}
            Err(e) => return Err(Error::msg(format!("cvmfs_server ingest: {e}"))),
        }
        if !warned && since.elapsed() >= Duration::from_secs(60) {
            warned = true;
            eprintln!(
                "cvmfs-podman: cvmfs_server ingest {} still runs 60 s after the stream ended; if it \
                 hangs remounting {}, another mount namespace still holds the previous revision's \
                 mount (grep {} /proc/*/mountinfo)",
                r.name,
                r.rdonly().display(),
                r.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copy the tar stream into the ingest, printing progress every 2 s.
fn stream(mut from: impl Read, mut to: impl Write, expect: u64, quiet: bool) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut last) = (0u64, Instant::now());
    loop {
        let k = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::msg(format!("reading tar: {e}"))),
        };
        to.write_all(&buf[..k])
            .map_err(|e| Error::msg(format!("writing to cvmfs_server ingest: {e}")))?;
        n += k as u64;
        if !quiet && last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            eprintln!(
                "ingest: {:.1} MB of about {:.1} MB streamed",
                n as f64 / 1e6,
                expect as f64 / 1e6
            );
        }
    }
    Ok(n)
}

/// The last lines `cvmfs_server` wrote, for an error message.
fn log_tail(path: &Path) -> String {
    let Ok(f) = fs::File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = io::BufReader::new(f.take(1 << 20))
        .split(b'\n')
        .map_while(|l| l.ok())
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .collect();
    let tail = &lines[lines.len().saturating_sub(15)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("; it said:\n  {}", tail.join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_ingest_says_what_was_published() {
        let rdonly = Path::new("/var/spool/cvmfs/t.l/rdonly");
        let same = describe_outcome("t.l", rdonly, Some(b"7"), Some(b"7"));
        assert_eq!(same, "nothing was published");
        let newer = describe_outcome("t.l", rdonly, Some(b"7"), Some(b"8"));
        assert!(
            newer.starts_with("revision 8 was published nevertheless"),
            "{newer}"
        );
        let gone = describe_outcome("t.l", rdonly, Some(b"7"), None);
        assert!(
            gone.contains("unknown") && gone.contains("cvmfs_server mount t.l"),
            "{gone}"
        );
        assert!(gone.contains("with 7"), "{gone}");
    }

    #[test]
    fn names_and_paths() {
        assert!(valid_name("test.local"));
        assert!(valid_name("unpacked.cern.ch"));
        for bad in ["", "../x", "a/b", "a b", "-x", ".x", "a;b"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let r = Repository {
            name: "t.l".into(),
            union_dir: "/cvmfs/t.l".into(),
            spool_dir: "/var/spool/cvmfs/t.l".into(),
            include_xattrs: false,
        };
        assert_eq!(
            r.inner_path(Path::new("/cvmfs/t.l/a/b")).unwrap(),
            Path::new("a/b")
        );
        assert_eq!(
            r.inner_path(Path::new("/cvmfs/t.l")).unwrap(),
            Path::new("")
        );
        assert!(r.inner_path(Path::new("/cvmfs/t.l/../x")).is_err());
        assert!(r.inner_path(Path::new("/cvmfs/t.lx/a")).is_err());
        assert!(r.inner_path(Path::new("/srv/x")).is_err());
        assert!(deletion_path(Path::new("a/b:c")).is_err());
        assert!(plain_path(Path::new("/a,b"), "x").is_err());
        assert!(plain_path(Path::new("rel"), "x").is_err());
    }
}
