//! Background prefetch of start-up profiles (issue 16).
//!
//! When `get` mounts a container whose image has a published start-up profile
//! (`<store>/cvmfs/profiles/<top layer id>.json`, format in
//! `cvmfs_format::profile`), a background thread reads the ranges it lists
//! from the CVMFS layer directories (or the image's flat tree, when the driver
//! mounts that) with a few parallel readers. On a cold CVMFS cache the job's
//! first reads are then already fetched, in parallel, when the job asks for
//! them one after another; on a warm cache the reads cost page-cache copies.
//!
//! Rules: `get` never waits for it (everything, including reading the profile,
//! happens on the thread); it stops when the profile is done, when
//! `cvmfs.prefetch_max_bytes` have been read, when the container's mount goes
//! away (`put`, or an unmount by another process), or when the driver shuts
//! down; every file is opened with `openat2` `RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS` from a layer directory the layer's record named
//! (which [`Layout::find`] checked lies beneath the repository), never
//! following a final symlink, never blocking on a FIFO; a stale or hostile
//! profile only costs bandwidth (missing files are counted and skipped).
//! While the container starts ([`STARTUP`] after the mount) one reader reads,
//! at nice 10, so that runc and the entrypoint's first exec keep the CPU;
//! then all readers run at the caller's priority.
//!
//! What each prefetch did is kept in `<run_root>/cvmfs/prefetch/<layer>.json`
//! (the newest [`KEEP_REPORTS`]), so `podman info` (the driver's status) and
//! the layer's `Metadata` in any process show files, bytes and time.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cvmfs_format::profile::{self, Profile, PROFILE_MAX_BYTES};
use serde::{Deserialize, Serialize};

use crate::layout::{Layout, StoreLayer, StoreLayerKind};

/// Parallel readers by default: what a CVMFS client serves concurrently
/// without queueing (its FUSE threads and download slots), not more.
pub const DEFAULT_THREADS: usize = 8;
/// Most parallel readers one prefetch may use.
pub const MAX_THREADS: usize = 64;
/// Bytes one prefetch reads at most by default.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Reports kept in the run directory (older ones are removed).
pub const KEEP_REPORTS: usize = 64;
/// Size of one read.
const READ_CHUNK: usize = 256 << 10;
/// Nice value of the prefetch threads while the container starts (at least;
/// a process already nicer keeps its own): runc and the entrypoint's first
/// exec must not wait for the CPU behind the prefetch. Measured at full size
/// on 2 loaded cores: at the caller's priority, the 8 readers and the FUSE
/// requests they cause delayed the first output by 1.4x.
const NICE: i32 = 10;
/// How long after the mount the prefetch keeps [`NICE`] and reads with one
/// reader only: a container starts in a few hundred ms, and what it reads
/// first is at the head of the profile. The CPU the prefetch costs is mostly
/// not its own but the FUSE client's (cvmfs2) serving its requests, which
/// nice does not reach: only fewer requests leave runc the CPU. Afterwards
/// all readers run, at the caller's priority (when allowed to: lowering a
/// nice value needs privilege), so the entrypoint, which waits for what they
/// fetch, does not wait longer on a busy machine.
pub const STARTUP: Duration = Duration::from_secs(1);
/// How often the job checks the mount and writes its report while running.
const TICK: Duration = Duration::from_millis(100);
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// `cvmfs.prefetch`, `cvmfs.prefetch_threads`, `cvmfs.prefetch_max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefetchConfig {
    pub enabled: bool,
    pub threads: usize,
    pub max_bytes: u64,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            enabled: true,
            threads: DEFAULT_THREADS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl PrefetchConfig {
    /// The option keys this config takes (without `cvmfs.`).
    pub const KEYS: [&'static str; 3] = ["prefetch", "prefetch_threads", "prefetch_max_bytes"];

    /// Set option `key` (one of [`PrefetchConfig::KEYS`]) from `value`; the
    /// error says what is expected.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "prefetch" => {
                self.enabled = match value.to_ascii_lowercase().as_str() {
                    "on" | "true" | "1" | "yes" => true,
                    "off" | "false" | "0" | "no" => false,
                    _ => return Err("expected on or off".into()),
                }
            }
            "prefetch_threads" => {
                self.threads = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_THREADS).contains(n))
                    .ok_or_else(|| format!("expected a number of threads in 1..={MAX_THREADS}"))?
            }
            "prefetch_max_bytes" => self.max_bytes = parse_bytes(value)?,
            _ => return Err(format!("not a prefetch option: {key}")),
        }
        Ok(())
    }
}

/// `1073741824`, `512k`, `512M`, `1G` (powers of 1024), at least 1.
fn parse_bytes(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let (num, mult) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n >= 1)
        .ok_or_else(|| "expected bytes, e.g. 1073741824, 512M or 1G (at least 1)".into())
}

/// What one prefetch did (also its file in the run directory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The layer mounted (the container's).
    pub layer: String,
    /// The image's top layer (the profile's key).
    pub top_layer: String,
    pub profile: String,
    /// `running`, `done`, `stopped: …` or `refused: …`.
    pub state: String,
    pub listed_files: u64,
    pub listed_bytes: u64,
    /// Files opened and read.
    pub files: u64,
    pub bytes: u64,
    /// Entries skipped: missing, not a regular file, outside the stack, refused.
    pub skipped: u64,
    pub seconds: f64,
    /// Where the files were read from: "flat tree" or "layers".
    pub source: String,
}

impl Report {
    /// One line for `Status`/`Metadata`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {}/{} files, {:.1}/{:.1} MiB in {:.2} s from the {} ({} skipped; profile {})",
            self.state,
            self.files,
            self.listed_files,
            self.bytes as f64 / 1048576.0,
            self.listed_bytes as f64 / 1048576.0,
            self.seconds,
            self.source,
            self.skipped,
            self.profile
        )
    }
}

/// The driver's prefetcher: starts jobs, stops them, reports on them.
pub struct Prefetcher {
    config: PrefetchConfig,
    reports: PathBuf,
    /// Cancel flags of this process's running jobs, by mounted layer.
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl Prefetcher {
    /// `run_dir` is `<run_root>/cvmfs`.
    pub fn new(config: PrefetchConfig, run_dir: &Path) -> Prefetcher {
        Prefetcher {
            config,
            reports: run_dir.join("prefetch"),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Start prefetching for layer `id`, just mounted at `merged`, whose
    /// image's top layer is `top` (the layer itself, or a container layer's
    /// parent). Returns at once; nothing happens without a profile.
    pub fn start(&self, id: &str, top: Option<String>, merged: &Path, layout: &Layout, flat: bool) {
        let Some(top) = top else { return };
        if !self.config.enabled || layout.stores().is_empty() || !profile::is_layer_id(&top) {
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            config: self.config,
            layer: id.to_string(),
            top,
            merged: merged.to_path_buf(),
            layout: layout.clone(),
            use_flat: flat,
            reports: self.reports.clone(),
            cancel: cancel.clone(),
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = running.insert(id.to_string(), cancel) {
            old.store(true, Ordering::Relaxed);
        }
        // A thread that cannot be started is a prefetch that does not happen.
        let _ = std::thread::Builder::new()
            .name("cvmfs-prefetch".into())
            .spawn(move || job.run());
    }

    /// Stop the job of layer `id` in this process (its mount is going away).
    pub fn stop(&self, id: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = running.remove(id) {
            c.store(true, Ordering::Relaxed);
        }
    }

    /// The report of layer `id`'s last prefetch (any process), if any.
    pub fn report(&self, id: &str) -> Option<Report> {
        crate::store::validate_id(id).ok()?;
        read_report(&self.reports.join(format!("{id}.json")))
    }

    /// Lines for the driver's `Status`.
    pub fn status(&self) -> Vec<(String, String)> {
        let c = &self.config;
        let setting = if c.enabled {
            format!(
                "on ({} threads, at most {:.0} MiB per container)",
                c.threads,
                c.max_bytes as f64 / 1048576.0
            )
        } else {
            "off".into()
        };
        let mut v = vec![("Prefetch".to_string(), setting)];
        if let Some((_, r)) = newest_reports(&self.reports).into_iter().next() {
            v.push((
                "Prefetch Last".into(),
                format!("layer {}: {}", r.layer, r.summary()),
            ));
        }
        v
    }
}

impl Drop for Prefetcher {
    /// The driver shuts down: its jobs stop.
    fn drop(&mut self) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for c in running.values() {
            c.store(true, Ordering::Relaxed);
        }
    }
}

fn read_report(path: &Path) -> Option<Report> {
    let bytes = read_bounded(path, 64 << 10).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Reports in `dir`, newest first.
fn newest_reports(dir: &Path) -> Vec<(std::time::SystemTime, Report)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            let t = e.metadata().ok()?.modified().ok()?;
            Some((t, read_report(&e.path())?))
        })
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v
}

/// Read a regular file of at most `max` bytes without following a final
/// symlink or blocking on a FIFO. `Ok(None)`: not there.
fn read_bounded(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if md.len() > max {
        return Err(io::Error::other(format!("larger than {max} bytes")));
    }
    let mut b = Vec::new();
    f.take(max + 1).read_to_end(&mut b)?;
    if b.len() as u64 > max {
        return Err(io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(Some(b))
}

/// One prefetch, run on its own thread.
struct Job {
    config: PrefetchConfig,
    layer: String,
    top: String,
    merged: PathBuf,
    layout: Layout,
    use_flat: bool,
    reports: PathBuf,
    cancel: Arc<AtomicBool>,
}

/// The directories a profile's entries are read from, by profile layer index
/// (`None`: not in this stack, or not a CVMFS layer: skipped).
struct Sources {
    dirs: Vec<Option<Arc<OwnedFd>>>,
    description: &'static str,
}

impl Job {
    fn run(self) {
        let started = Instant::now();
        // Before anything else: the readers started below inherit it.
        let restore = lower_priority().map(|nice| (nice, started + STARTUP));
        // The image's top layer in a store, and its profile there.
        let Ok(Some(top)) = self.layout.find(&self.top) else {
            return;
        };
        let StoreLayerKind::Cvmfs { repository, .. } = &top.kind else {
            return;
        };
        let path = profile::profile_path(&top.store, &self.top);
        let mut report = Report {
            layer: self.layer.clone(),
            top_layer: self.top.clone(),
            profile: path.display().to_string(),
            state: "running".into(),
            ..Report::default()
        };
        let profile = match read_bounded(&path, PROFILE_MAX_BYTES) {
            Ok(None) => return self.read_start_files(&top.store, repository, report, started),
            Ok(Some(b)) => profile::parse(&b).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
        .and_then(|p| {
            (p.top_layer == self.top)
                .then_some(p)
                .ok_or_else(|| "profile: names another top layer".to_string())
        });
        let profile = match profile {
            Ok(p) => p,
            Err(e) => {
                report.state = format!("refused: {e}");
                self.write(&report);
                return;
            }
        };
        report.listed_files = profile.entries.len() as u64;
        report.listed_bytes = profile.total_bytes();
        let sources = self.sources(&top, &profile);
        report.source = sources.description.into();
        self.write(&report);
        let state = self.read_all(&profile, &sources, &mut report, started, restore);
        report.state = state;
        report.seconds = started.elapsed().as_secs_f64();
        self.write(&report);
    }

    /// No profile: read the files the image's start links name as what a
    /// container runs first (`exec-N`, found through the top layer's record
    /// directory; docs/store-format.md), all at once, each on its own
    /// thread: the container's first `execve`s would fetch them one after
    /// another. Nothing happens for a store without the links.
    fn read_start_files(&self, store: &Path, repo: &Path, mut report: Report, started: Instant) {
        let Some(image) = crate::mirror::image_of_top_layer(store, &self.top) else {
            return;
        };
        let files = crate::mirror::start_exec_paths(store, &image);
        if files.is_empty() {
            return;
        }
        report.profile = format!("none; the start links of image {image}");
        report.source = "start links".into();
        report.listed_files = files.len() as u64;
        self.write(&report);
        // cvmfs.prefetch_max_bytes holds for them together
        let max = self.config.max_bytes / files.len() as u64;
        let read: Vec<io::Result<u64>> = std::thread::scope(|s| {
            let readers: Vec<_> = files
                .iter()
                .map(|rel| s.spawn(move || crate::mirror::read_exec(repo, rel, max)))
                .collect();
            readers
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err(io::Error::other("reader panicked")))
                })
                .collect()
        });
        for r in &read {
            match r {
                Ok(n) => {
                    report.files += 1;
                    report.bytes += n;
                }
                Err(_) => report.skipped += 1,
            }
        }
        report.listed_bytes = report.bytes;
        report.state = "done".into();
        report.seconds = started.elapsed().as_secs_f64();
        self.write(&report);
    }

    /// Open the directories entries are read from: the flat tree when the
    /// driver mounts it (every entry's path is its path in the image root),
    /// else each CVMFS layer of the stack by ID.
    fn sources(&self, top: &StoreLayer, p: &Profile) -> Sources {
        let open = |d: &Path| open_dir(d).ok().map(Arc::new);
        if self.use_flat {
            if let Some(flat) = &top.flat {
                if let Some(fd) = open(flat) {
                    let dirs = p.layers.iter().map(|_| Some(fd.clone())).collect();
                    return Sources {
                        dirs,
                        description: "flat tree",
                    };
                }
            }
        }
        let mut by_id: HashMap<String, PathBuf> = HashMap::new();
        let mut cur = Some(top.clone());
        while let Some(l) = cur {
            if by_id.len() >= crate::driver::MAX_DEPTH {
                break;
            }
            if matches!(l.kind, StoreLayerKind::Cvmfs { .. }) {
                by_id.insert(l.id.clone(), l.content_dir.clone());
            }
            cur = match &l.parent {
                Some(parent) => self.layout.find(parent).ok().flatten(),
                None => None,
            };
        }
        let dirs = p
            .layers
            .iter()
            .map(|id| by_id.get(id).and_then(|d| open(d)))
            .collect();
        Sources {
            dirs,
            description: "layers",
        }
    }

    /// Read every entry with the configured parallelism; returns the final
    /// state. The calling thread watches the mount and writes progress.
    fn read_all(
        &self,
        p: &Profile,
        src: &Sources,
        report: &mut Report,
        started: Instant,
        restore: Option<(i32, Instant)>,
    ) -> String {
        let shared = Shared {
            next: AtomicUsize::new(0),
            budget: AtomicU64::new(self.config.max_bytes),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            budget_spent: AtomicBool::new(false),
            cancel: &self.cancel,
            restore,
            others_from: started + STARTUP,
        };
        let mount_dev = fs::metadata(&self.merged).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.dev()
        });
        let threads = self.config.threads.min(p.entries.len()).max(1);
        let mut stopped_by_unmount = false;
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|reader| {
                    let shared = &shared;
                    s.spawn(move || shared.work(p, src, reader))
                })
                .collect();
            let mut last_report = Instant::now();
            while !workers.iter().all(|w| w.is_finished()) {
                std::thread::sleep(TICK);
                // (put cancels before it unmounts: that is not this case)
                if !self.cancel.load(Ordering::Relaxed) && mounted_dev(&self.merged) != mount_dev {
                    stopped_by_unmount = true;
                    self.cancel.store(true, Ordering::Relaxed);
                }
                if last_report.elapsed() >= REPORT_EVERY {
                    shared.fill(report, started);
                    self.write(report);
                    last_report = Instant::now();
                }
            }
        });
        shared.fill(report, started);
        if stopped_by_unmount {
            "stopped: the container's mount went away".into()
        } else if shared.budget_spent.load(Ordering::Relaxed) {
            format!(
                "stopped: budget of {} bytes spent (cvmfs.prefetch_max_bytes)",
                self.config.max_bytes
            )
        } else if self.cancel.load(Ordering::Relaxed) {
            "stopped: unmounted or driver shut down".into()
        } else {
            "done".into()
        }
    }

    /// Write `r` atomically as this layer's report, keeping the newest few.
    fn write(&self, r: &Report) {
        let _ = (|| -> io::Result<()> {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.reports)?;
            let dest = self.reports.join(format!("{}.json", self.layer));
            let tmp = self
                .reports
                .join(format!(".tmp.{}.{}", std::process::id(), self.layer));
            fs::write(&tmp, serde_json::to_vec(r).map_err(io::Error::other)?)?;
            fs::rename(&tmp, &dest)
        })();
        if r.state != "running" {
            for (_, old) in newest_reports(&self.reports).iter().skip(KEEP_REPORTS) {
                let _ = fs::remove_file(self.reports.join(format!("{}.json", old.layer)));
            }
        }
    }
}

/// Make the calling thread (and the threads it starts) yield the CPU to the
/// container: nice [`NICE`], or its own nice value if that is higher. On
/// Linux the nice value is per thread (`setpriority(PRIO_PROCESS, 0)`
/// changes the calling thread only), so the driver's caller is unaffected.
/// Returns the nice value it had when it was changed. A failure leaves the
/// priority as it was: the prefetch still works.
fn lower_priority() -> Option<i32> {
    use rustix::process::{getpriority_process, setpriority_process};
    let now = getpriority_process(None).ok()?;
    (now < NICE && setpriority_process(None, NICE).is_ok()).then_some(now)
}

/// The device of the mount at `merged` now (`None`: gone).
fn mounted_dev(merged: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(merged).ok().map(|m| m.dev())
}

pub(crate) fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// What the readers of one job share.
struct Shared<'a> {
    next: AtomicUsize,
    budget: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    skipped: AtomicU64,
    budget_spent: AtomicBool,
    cancel: &'a AtomicBool,
    /// The nice value the readers go back to, and when ([`STARTUP`]).
    restore: Option<(i32, Instant)>,
    /// When readers other than the first start ([`STARTUP`]).
    others_from: Instant,
}

impl Shared<'_> {
    fn stopped(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.budget_spent.load(Ordering::Relaxed)
    }

    fn fill(&self, r: &mut Report, started: Instant) {
        r.files = self.files.load(Ordering::Relaxed);
        r.bytes = self.bytes.load(Ordering::Relaxed);
        r.skipped = self.skipped.load(Ordering::Relaxed);
        r.seconds = started.elapsed().as_secs_f64();
    }

    /// Reader number `reader`: take the next entry in profile order until
    /// none is left or the job stops. Only reader 0 starts at once.
    fn work(&self, p: &Profile, src: &Sources, reader: usize) {
        if reader > 0 {
            self.wait_for_the_start();
        }
        let mut buf = vec![0u8; READ_CHUNK];
        let mut restore = self.restore;
        while !self.stopped() {
            if let Some((nice, _)) = restore.filter(|(_, at)| Instant::now() >= *at) {
                // refused without privilege: the reader stays nice
                let _ = rustix::process::setpriority_process(None, nice);
                restore = None;
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(e) = p.entries.get(i) else { return };
            let read = match &src.dirs[e.layer] {
                Some(dir) => self.read_entry(dir, e, &mut buf),
                None => Err(io::Error::other("layer not in this stack")),
            };
            match read {
                Ok(()) => self.files.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.skipped.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    /// Sleep until [`Shared::others_from`] or until the job stops.
    fn wait_for_the_start(&self) {
        while !self.stopped() {
            let left = self.others_from.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(TICK));
        }
    }

    /// Take up to `want` bytes of the budget; 0 once it is spent.
    fn claim(&self, want: u64) -> u64 {
        let prev = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left > 0).then(|| left - left.min(want))
            })
            .unwrap_or(0);
        let got = prev.min(want);
        if got < want {
            self.budget_spent.store(true, Ordering::Relaxed);
        }
        got
    }

    /// Give back budget claimed and not used.
    fn unclaim(&self, n: u64) {
        if n > 0 {
            self.budget.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Read the ranges of entry `e`. The whole entry's budget is claimed
    /// before the file is opened (on CVMFS the open itself fetches a file
    /// of up to a chunk): once the budget cannot cover an entry, nothing
    /// more is opened.
    fn read_entry(&self, dir: &OwnedFd, e: &profile::Entry, buf: &mut [u8]) -> io::Result<()> {
        let listed = e.ranges.iter().fold(0u64, |a, r| a.saturating_add(r.len()));
        let granted = self.claim(listed);
        if granted < listed {
            self.unclaim(granted);
            return Ok(());
        }
        let f = match open_beneath(dir, &e.path) {
            Ok(f) => f,
            Err(err) => {
                self.unclaim(granted);
                return Err(err);
            }
        };
        let size = rustix::fs::fstat(&f).map_err(io::Error::from)?.st_size as u64;
        let mut unused = granted;
        for r in &e.ranges {
            if r.offset() >= size {
                continue;
            }
            let mut left = r.len().min(size - r.offset());
            unused -= left;
            let mut off = r.offset();
            while left > 0 && !self.cancel.load(Ordering::Relaxed) {
                let n = left.min(buf.len() as u64) as usize;
                let got = match rustix::io::pread(&f, &mut buf[..n], off) {
                    Ok(0) | Err(_) => break,
                    Ok(got) => got,
                };
                self.bytes.fetch_add(got as u64, Ordering::Relaxed);
                off += got as u64;
                left -= got as u64;
            }
            unused += left;
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
        }
        self.unclaim(unused);
        Ok(())
    }
}

/// Open regular file `rel` beneath directory `dir` for reading: no `..` or
/// symlink may leave `dir`, no magic link, no final symlink, no blocking on
/// a FIFO; anything but a regular file is refused.
pub(crate) fn open_beneath(dir: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let fd = openat2(
        dir,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(io::Error::from)?;
    let st = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_refuse() {
        let mut c = PrefetchConfig::default();
        assert!(c.enabled);
        c.set("prefetch", "off").unwrap();
        assert!(!c.enabled);
        c.set("prefetch", "ON").unwrap();
        assert!(c.enabled);
        c.set("prefetch_threads", "16").unwrap();
        assert_eq!(c.threads, 16);
        c.set("prefetch_max_bytes", "512M").unwrap();
        assert_eq!(c.max_bytes, 512 << 20);
        c.set("prefetch_max_bytes", "4096").unwrap();
        assert_eq!(c.max_bytes, 4096);
        for (k, v) in [
            ("prefetch", "maybe"),
            ("prefetch_threads", "0"),
            ("prefetch_threads", "65"),
            ("prefetch_threads", "x"),
            ("prefetch_max_bytes", "0"),
            ("prefetch_max_bytes", "99999999999999999999G"),
            ("prefetch_max_bytes", "1.5G"),
        ] {
            assert!(c.set(k, v).is_err(), "{k}={v}");
        }
    }

    fn fixture() -> (tempfile::TempDir, Arc<OwnedFd>) {
        let t = tempfile::tempdir().unwrap();
        let layer = t.path().join("layer");
        fs::create_dir_all(layer.join("usr")).unwrap();
        fs::write(layer.join("usr/app"), vec![7u8; 1 << 20]).unwrap();
        fs::write(t.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("../secret", layer.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", layer.join("usr/abs")).unwrap();
        std::os::unix::fs::symlink("..", layer.join("dotdot")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            layer.join("fifo"),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let fd = Arc::new(open_dir(&layer).unwrap());
        (t, fd)
    }

    fn shared(cancel: &AtomicBool, budget: u64) -> Shared<'_> {
        Shared {
            next: AtomicUsize::new(0),
            budget: AtomicU64::new(budget),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            budget_spent: AtomicBool::new(false),
            cancel,
            restore: None,
            others_from: Instant::now(),
        }
    }

    fn entry(path: &str, ranges: &[(u64, u64)]) -> profile::Entry {
        profile::Entry {
            layer: 0,
            path: path.into(),
            ranges: ranges.iter().map(|&(o, l)| profile::Range(o, l)).collect(),
        }
    }

    #[test]
    fn reads_stay_beneath_the_layer_directory() {
        let (_t, dir) = fixture();
        for bad in [
            "usr/up",
            "usr/abs",
            "dotdot/secret",
            "fifo",
            "usr",
            "missing",
        ] {
            assert!(open_beneath(&dir, bad).is_err(), "{bad} was opened");
        }
        assert!(open_beneath(&dir, "usr/app").is_ok());
        let cancel = AtomicBool::new(false);
        let s = shared(&cancel, u64::MAX);
        let p = Profile {
            version: 1,
            image: "c".repeat(64),
            top_layer: "b".repeat(64),
            layers: vec!["b".repeat(64)],
            entries: vec![
                entry("usr/up", &[(0, 7)]),
                entry("fifo", &[(0, 7)]),
                entry("usr/app", &[(0, 4096), (1 << 19, 1 << 30)]),
            ],
        };
        let src = Sources {
            dirs: vec![Some(dir)],
            description: "layers",
        };
        s.work(&p, &src, 0);
        assert_eq!(s.files.load(Ordering::Relaxed), 1);
        assert_eq!(s.skipped.load(Ordering::Relaxed), 2);
        // the second range is clamped to the file's end
        assert_eq!(s.bytes.load(Ordering::Relaxed), 4096 + (1 << 19));
    }

    #[test]
    fn prefetch_threads_are_niced_and_the_caller_is_not() {
        use rustix::process::getpriority_process;
        let caller = getpriority_process(None).unwrap();
        let (own, child) = std::thread::spawn(move || {
            assert_eq!(lower_priority(), (caller < NICE).then_some(caller));
            // a reader started by the job inherits its nice value
            let child = std::thread::spawn(|| getpriority_process(None).unwrap())
                .join()
                .unwrap();
            (getpriority_process(None).unwrap(), child)
        })
        .join()
        .unwrap();
        assert_eq!(own, caller.max(NICE));
        assert_eq!(child, own);
        assert_eq!(getpriority_process(None).unwrap(), caller);
    }

    #[test]
    fn readers_go_back_to_the_callers_priority_after_the_start() {
        use rustix::process::getpriority_process;
        let caller = getpriority_process(None).unwrap();
        let (t, dir) = fixture();
        let p = Profile {
            version: 1,
            image: "c".repeat(64),
            top_layer: "b".repeat(64),
            layers: vec!["b".repeat(64)],
            entries: vec![entry("usr/app", &[(0, 4096)]), entry("usr/app", &[(0, 8)])],
        };
        let src = Sources {
            dirs: vec![Some(dir)],
            description: "layers",
        };
        let read_with = |at: Instant| {
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    let cancel = AtomicBool::new(false);
                    let mut s = shared(&cancel, u64::MAX);
                    s.restore = lower_priority().map(|nice| (nice, at));
                    s.work(&p, &src, 1);
                    assert_eq!(s.files.load(Ordering::Relaxed), 2);
                    getpriority_process(None).unwrap()
                })
                .join()
                .unwrap()
            })
        };
        // still starting: the reader stays nice
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(read_with(later), caller.max(NICE));
        // started: back to the caller's priority (root may lower it again)
        let back = read_with(Instant::now());
        if rustix::process::geteuid().is_root() {
            assert_eq!(back, caller);
        }
        drop(t);
    }

    #[test]
    fn only_the_first_reader_reads_while_the_container_starts() {
        let (_t, dir) = fixture();
        let p = Profile {
            version: 1,
            image: "c".repeat(64),
            top_layer: "b".repeat(64),
            layers: vec!["b".repeat(64)],
            entries: vec![entry("usr/app", &[(0, 4096)]); 3],
        };
        let src = Sources {
            dirs: vec![Some(dir)],
            description: "layers",
        };
        let cancel = AtomicBool::new(false);
        let mut s = shared(&cancel, u64::MAX);
        s.others_from = Instant::now() + Duration::from_millis(300);
        let t0 = Instant::now();
        // a second reader waits for the start, then finds the work done
        std::thread::scope(|sc| {
            let second = sc.spawn(|| {
                s.work(&p, &src, 1);
                t0.elapsed()
            });
            s.work(&p, &src, 0);
            assert_eq!(
                s.files.load(Ordering::Relaxed),
                3,
                "reader 0 read everything"
            );
            assert!(t0.elapsed() < Duration::from_millis(300));
            assert!(second.join().unwrap() >= Duration::from_millis(300));
        });
        // a stopped job does not keep a waiting reader
        let mut s = shared(&cancel, u64::MAX);
        s.others_from = Instant::now() + Duration::from_secs(3600);
        cancel.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        s.work(&p, &src, 1);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_budget_stops_the_readers() {
        let (_t, dir) = fixture();
        let cancel = AtomicBool::new(false);
        let s = shared(&cancel, 10_000);
        let mut buf = vec![0u8; READ_CHUNK];
        // clamped to the file's end: only the 4096 bytes there are claimed
        let e = entry("usr/app", &[((1 << 20) - 4096, 8192)]);
        s.read_entry(&dir, &e, &mut buf).unwrap();
        assert_eq!(s.bytes.load(Ordering::Relaxed), 4096);
        assert!(!s.stopped());
        // the rest of the budget cannot cover the next entry: not opened
        let e = entry("usr/app", &[(0, 4096), (8192, 4096)]);
        s.read_entry(&dir, &e, &mut buf).unwrap();
        assert_eq!(s.bytes.load(Ordering::Relaxed), 4096);
        assert!(s.stopped());
        assert_eq!(s.budget.load(Ordering::Relaxed), 10_000 - 4096);
    }
}
