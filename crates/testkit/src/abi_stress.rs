//! The C ABI stress test: 8 threads × 1000 random operations on one driver
//! handle, through the exported `cvmfs_driver_*` functions, with real overlay
//! mounts. Run by `cargo test --test driver_stress` (so by `make test`) and
//! as the hostile case `abi/eight-threads-racing-one-handle`.
//!
//! What the C ABI promises (docs/c-abi.md, "Threading"): any function may be
//! called concurrently on one handle. What a user would check afterwards, and
//! what this asserts: no mount point ever carries two mounts, nothing is
//! mounted outside a layer's `merged`, removing every layer leaves nothing
//! mounted below the driver home or run root, `cleanup` succeeds, and neither
//! `staging/` nor the mount counts keep anything.
//!
//! Layers are tiny and the home lives on tmpfs (`/dev/shm`) when there is one,
//! so an operation costs about a mount, not a disk flush.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::Arc;

use cvmfs_graphdriver::ffi::*;

pub const THREADS: u64 = 8;
pub const OPS_PER_THREAD: u64 = 1000;

/// splitmix64: tiny, deterministic per seed (printed, so a run's choice of
/// operations can be replayed with `CVMFS_STRESS_SEED`).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub fn seed() -> u64 {
    std::env::var("CVMFS_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Every mount point at or below `dir`, once per mount (a point with two
/// stacked mounts appears twice), as mountinfo shows it.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let prefix = dir.to_str().unwrap().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

/// The test directory; on drop, whatever is still mounted below it is
/// detached first, so that a failing run does not leak mounts (or delete
/// through them).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let shm = Path::new("/dev/shm");
        let on_tmpfs = rustix::fs::statfs(shm).is_ok_and(|s| s.f_type as u64 == 0x01021994);
        let mut b = tempfile::Builder::new();
        b.prefix(prefix);
        let dir = if on_tmpfs {
            b.tempdir_in(shm)
        } else {
            b.tempdir()
        }
        .unwrap();
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for _ in 0..64 {
            let left = mounts_below(self.dir.path());
            if left.is_empty() {
                break;
            }
            for p in left.iter().rev() {
                let _ = rustix::mount::unmount(p.as_str(), rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// One handle, shared by the threads.
struct Handle(*mut cvmfs_driver);
// SAFETY (test): the C ABI promises a handle may be used from any thread.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from cvmfs_driver_new and is freed once,
        // after every thread using it has been joined.
        unsafe { cvmfs_driver_free(self.0) };
    }
}

/// Result code and message of one call; the error object is freed.
// A test helper: `err` is only ever what the library just returned.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn take(rc: cvmfs_result, err: *mut cvmfs_error) -> (cvmfs_result, String) {
    if err.is_null() {
        return (rc, String::new());
    }
    // SAFETY: err is an error the library just returned; freed once.
    let msg = unsafe { CStr::from_ptr(cvmfs_error_message(err)) }
        .to_string_lossy()
        .into_owned();
    unsafe { cvmfs_error_free(err) };
    (rc, msg)
}

fn free_string(s: *mut c_char) {
    // SAFETY: NULL or a string the library returned; freed once.
    unsafe { cvmfs_string_free(s) };
}

/// The layers the threads fight over: three bases and one child of `s0`.
const IDS: [&str; 4] = ["s0", "s1", "s2", "c0"];

fn parent_of(id: &str) -> Option<&'static str> {
    (id == "c0").then_some("s0")
}

/// A one-file tar to apply.
fn tiny_tar(path: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("f").unwrap();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// One random operation; returns its name and result.
fn one_op(d: *mut cvmfs_driver, rng: &mut Rng, tar: &Path) -> (&'static str, cvmfs_result, String) {
    let id = IDS[rng.below(IDS.len() as u64) as usize];
    let cid = CString::new(id).unwrap();
    let parent = parent_of(id).map(|p| CString::new(p).unwrap());
    let parent_ptr = parent.as_ref().map_or(null(), |p| p.as_ptr());
    let mut err: *mut cvmfs_error = null_mut();
    // SAFETY (all calls below): valid NUL-terminated strings, a live handle,
    // and output pointers to local variables, as docs/c-abi.md requires.
    let (name, rc) = match rng.below(12) {
        0 | 1 => ("create", unsafe {
            cvmfs_driver_create(d, cid.as_ptr(), parent_ptr, true, null(), 0, &mut err)
        }),
        2..=4 => {
            let mut path: *mut c_char = null_mut();
            let rc = unsafe {
                cvmfs_driver_get(d, cid.as_ptr(), null(), null(), 0, &mut path, &mut err)
            };
            free_string(path);
            ("get", rc)
        }
        5..=7 => ("put", unsafe {
            cvmfs_driver_put(d, cid.as_ptr(), &mut err)
        }),
        8 => ("remove", unsafe {
            cvmfs_driver_remove(d, cid.as_ptr(), &mut err)
        }),
        9 => {
            let mut e = false;
            ("exists", unsafe {
                cvmfs_driver_exists(d, cid.as_ptr(), &mut e, &mut err)
            })
        }
        10 => {
            let mut size = 0i64;
            ("diff_size", unsafe {
                cvmfs_driver_diff_size(d, cid.as_ptr(), parent_ptr, &mut size, &mut err)
            })
        }
        _ => {
            let f = std::fs::File::open(tar).unwrap();
            let mut size = 0i64;
            ("apply_diff", unsafe {
                cvmfs_driver_apply_diff(d, cid.as_ptr(), f.as_raw_fd(), null(), &mut size, &mut err)
            })
        }
    };
    let (rc, msg) = take(rc, err);
    (name, rc, msg)
}

/// Run the stress test; `Ok(summary)` or `Err(what went wrong)`.
pub fn run(seed: u64) -> Result<String, String> {
    let scratch = Scratch::new("cvmfs-abi-stress");
    let home = scratch.dir.path().join("graph/cvmfs");
    let run_root = scratch.dir.path().join("run");
    let tar = scratch.dir.path().join("tiny.tar");
    tiny_tar(&tar);
    let (chome, crun) = (
        CString::new(home.to_str().unwrap()).unwrap(),
        CString::new(run_root.to_str().unwrap()).unwrap(),
    );
    let mut d: *mut cvmfs_driver = null_mut();
    let mut err: *mut cvmfs_error = null_mut();
    // SAFETY: valid strings and output pointers.
    let rc =
        unsafe { cvmfs_driver_new(chome.as_ptr(), crun.as_ptr(), null(), 0, &mut d, &mut err) };
    let (rc, msg) = take(rc, err);
    if rc != cvmfs_result::Ok {
        return Err(format!("cvmfs_driver_new: {rc}: {msg}"));
    }
    let handle = Arc::new(Handle(d));
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = handle.clone();
            let tar = tar.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x2545F4914F6CDD1D));
                let mut seen: BTreeMap<String, u64> = BTreeMap::new();
                let mut bad = Vec::new();
                for _ in 0..OPS_PER_THREAD {
                    let (name, rc, msg) = one_op(handle.0, &mut rng, &tar);
                    *seen.entry(format!("{name}={rc}")).or_default() += 1;
                    // Races give "unknown", "exists", I/O errors on a layer
                    // removed underneath; never these.
                    let never = [
                        cvmfs_result::Panic,
                        cvmfs_result::InvalidArgument,
                        cvmfs_result::BadArchive,
                    ];
                    if never.contains(&rc) {
                        bad.push(format!("{name}: {rc}: {msg}"));
                    }
                }
                (seen, bad)
            })
        })
        .collect();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut bad = Vec::new();
    for t in threads {
        let (s, b) = t
            .join()
            .map_err(|_| "a stress thread panicked".to_string())?;
        for (k, v) in s {
            *seen.entry(k).or_default() += v;
        }
        bad.extend(b);
    }
    let elapsed = started.elapsed();
    if !bad.is_empty() {
        return Err(format!(
            "{} calls failed as they never may: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        ));
    }
    // Mounted now: only layers' own mount points, one mount each.
    let mounted = mounts_below(&home);
    let mut per_point: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &mounted {
        *per_point.entry(p.as_str()).or_default() += 1;
    }
    let layers = std::fs::canonicalize(home.join("layers")).unwrap();
    for (p, n) in &per_point {
        let ok_place = Path::new(p).parent().and_then(Path::parent) == Some(layers.as_path())
            && p.ends_with("/merged");
        if *n > 1 || !ok_place {
            return Err(format!(
                "after the race: {p} carries {n} mount(s); all mounts: {mounted:?}"
            ));
        }
    }
    // Removing every layer unmounts it, whatever its count.
    for id in ["c0", "s0", "s1", "s2"] {
        let cid = CString::new(id).unwrap();
        let mut err: *mut cvmfs_error = null_mut();
        // SAFETY: as above.
        let (rc, msg) = take(
            unsafe { cvmfs_driver_remove(handle.0, cid.as_ptr(), &mut err) },
            err,
        );
        if rc != cvmfs_result::Ok {
            return Err(format!("remove {id}: {rc}: {msg}"));
        }
    }
    let left = [mounts_below(&home), mounts_below(&run_root)].concat();
    if !left.is_empty() {
        return Err(format!("mounts left after removing every layer: {left:?}"));
    }
    let mut err: *mut cvmfs_error = null_mut();
    // SAFETY: as above.
    let (rc, msg) = take(unsafe { cvmfs_driver_cleanup(handle.0, &mut err) }, err);
    if rc != cvmfs_result::Ok {
        return Err(format!("cleanup: {rc}: {msg}"));
    }
    let mut json: *mut c_char = null_mut();
    let mut err: *mut cvmfs_error = null_mut();
    // SAFETY: as above; json is freed below.
    let (rc, msg) = take(
        unsafe { cvmfs_driver_list_layers(handle.0, &mut json, &mut err) },
        err,
    );
    if rc != cvmfs_result::Ok {
        return Err(format!("list layers: {rc}: {msg}"));
    }
    // SAFETY: a string the library returned.
    let list = unsafe { CStr::from_ptr(json) }
        .to_string_lossy()
        .into_owned();
    free_string(json);
    drop(handle);
    let names = |d: PathBuf| -> Vec<String> {
        std::fs::read_dir(&d)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let staging = names(home.join("staging"));
    let counts = names(run_root.join("cvmfs/mounts"));
    let problems: Vec<String> = [
        (list != "[]").then(|| format!("layers listed after removing all: {list}")),
        (!staging.is_empty()).then(|| format!("staging entries left: {staging:?}")),
        (!counts.is_empty()).then(|| format!("mount counts left: {counts:?}")),
        (!mounts_below(scratch.dir.path()).is_empty()).then(|| "mounts left after cleanup".into()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(format!(
        "{} threads x {} operations in {:.1}s (seed {seed}; CVMFS_STRESS_SEED={seed} replays the choices): {seen:?}",
        THREADS,
        OPS_PER_THREAD,
        elapsed.as_secs_f64()
    ))
}
