//! Overlay mounts behind the [`Mounter`] trait.
//!
//! [`OverlayMounter`] turns an [`OverlaySpec`] into system calls through the
//! [`Syscalls`] trait. With [`RealSyscalls`] it mounts for real: the new mount
//! API (`fsopen("overlay")`, one `fsconfig(lowerdir+)` per lower, so stacks much
//! deeper than one page of mount data work), falling back once and for all to
//! classic `mount(2)` with short link paths when the kernel lacks `lowerdir+`
//! (before 6.8). With [`fake::RecordingSyscalls`] it records every call, so unit
//! tests check the exact keys, values and fallback data string without root.
//!
//! Why one `lowerdir+` per lower rather than one `lowerdir=a:b:c` string:
//! `fsconfig` string values are limited to 256 bytes (longer ones fail with
//! EINVAL), two or three layer paths. Using `mount(2)` whenever its data fits
//! a page was measured against this (21-layer stack, same machine): no
//! difference beyond noise without strace, which inflates every syscall.
//!
//! Lower directories of deep stacks (more than [`FULL_PATHS_MAX`] bytes of
//! full paths) are passed by short names: before mounting on
//! `<dir>/<name>`, the mounter fills `<dir>/<name>.lowers/` with symlinks
//! `0`, `1`, ... (topmost first) to the lowers and passes `lowerdir+=0`,
//! `lowerdir+=1`, ... relative to that directory, from a thread whose working
//! directory is its own (see [`Syscalls::in_dir`]). overlayfs shows the
//! strings it was given in `/proc/self/mountinfo`; with full paths a
//! 151-layer stack made a 42 722-byte line, and runc, which reads mountinfo
//! with a 64 KiB line limit, failed beside any 321-layer mount. Short names
//! keep the line of the deepest mount (500 lowers) under 8 KiB. A file
//! descriptor per lower (`FSCONFIG_SET_FD`) would not help: overlayfs then
//! shows the directory's full path. The links stay while the mount exists
//! (what `3` is can be read with `ls -l`) and go with its unmount.
//!
//! Unmounting an overlay with an upper directory syncs the whole upper
//! filesystem (overlayfs' `sync_fs` on superblock shutdown), including dirty
//! data of unrelated processes: the first unmount after a burst of writes can
//! take 100 ms. The overlay driver pays the same, usually earlier, in its
//! `Init` feature-check mounts. Only `volatile` avoids it, which gives up
//! durability of the layer, so it is not used.

pub mod fake;
pub mod owner_image;
pub mod owner_tarsplit;
pub mod program;
mod real;
pub mod whiteouts;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use real::{mount_points_under, RealSyscalls};

use crate::error::{Error, ErrorCode, Result};

/// What to mount: an overlay of `lowers` (top first) with an optional upper.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverlaySpec {
    /// Lower directories, topmost first. At least one.
    pub lowers: Vec<PathBuf>,
    /// Shorter paths to the same directories (symlinks in `<home>/l/`), used only
    /// by the `mount(2)` fallback where all lowers must fit in one page. Empty
    /// means "use `lowers`".
    pub short_lowers: Vec<PathBuf>,
    /// Upper directory; `None` mounts read-only.
    pub upper: Option<PathBuf>,
    /// Work directory, required with an upper.
    pub work: Option<PathBuf>,
    /// Other mount options: `ro`, `nodev`, ... or overlay `key=value` options.
    pub options: Vec<String>,
    /// Data-only lower directories (`datadir+`, below every lower): reached
    /// only through the absolute redirects of metacopy files, which the
    /// owner images ([`owner_image`]) point into them.
    pub data_lowers: Vec<PathBuf>,
}

/// Which kernel interface mounts go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountApi {
    /// `fsopen`/`fsconfig(lowerdir+)`/`fsmount`/`move_mount` (Linux ≥ 6.8).
    Fsconfig,
    /// Classic `mount(2)` with `lowerdir=a:b:c` data limited to one page.
    Legacy,
    /// A FUSE mount program (`cvmfs.mount_program`, [`program`]).
    Program,
}

impl fmt::Display for MountApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MountApi::Fsconfig => "fsconfig lowerdir+",
            MountApi::Legacy => "mount(2)",
            MountApi::Program => "FUSE mount program",
        })
    }
}

/// Mounts overlays; implemented by [`OverlayMounter`] (real or recording).
pub trait Mounter: Send + Sync {
    /// Mount `spec` on `target`.
    fn mount_overlay(&self, spec: &OverlaySpec, target: &Path) -> Result<()>;
    /// Unmount `target` (lazily); not being mounted is not an error.
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Whether `target` is the root of a mount.
    fn is_mounted(&self, target: &Path) -> Result<bool>;
    /// The interface in use, probing the kernel once if needed (with `probe_dir`
    /// as a harmless lower directory).
    fn api(&self, probe_dir: &Path) -> MountApi;
    /// The interface in use if already known (no probing).
    fn known_api(&self) -> Option<MountApi>;
    /// The FUSE mount program in use and why, if overlays are not the kernel's.
    fn program(&self) -> Option<(&Path, &str)> {
        None
    }
    /// Mount the EROFS image file `image` (file-backed, read-only) on `target`.
    fn mount_erofs(&self, image: &Path, target: &Path) -> Result<()> {
        let _ = target;
        Err(Error::not_supported(format!(
            "mount {}: this mounter mounts no EROFS images",
            image.display()
        )))
    }
}

/// Mount-point attributes that are per-mount flags, not overlay options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountAttrs {
    pub read_only: bool,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    pub noatime: bool,
    pub nodiratime: bool,
    pub relatime: bool,
    pub strictatime: bool,
}

impl MountAttrs {
    /// Names of the set flags, in a fixed order (for records and messages).
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (set, name) in [
            (self.read_only, "ro"),
            (self.nodev, "nodev"),
            (self.nosuid, "nosuid"),
            (self.noexec, "noexec"),
            (self.noatime, "noatime"),
            (self.nodiratime, "nodiratime"),
            (self.relatime, "relatime"),
            (self.strictatime, "strictatime"),
        ] {
            if set {
                v.push(name);
            }
        }
        v
    }
}

/// Split mount options into per-mount flags and overlay options.
pub fn split_options(options: &[String]) -> (MountAttrs, Vec<String>) {
    let mut a = MountAttrs::default();
    let mut rest = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => a.read_only = true,
            "rw" | "" => {}
            "nodev" => a.nodev = true,
            "nosuid" => a.nosuid = true,
            "noexec" => a.noexec = true,
            "noatime" => a.noatime = true,
            "nodiratime" => a.nodiratime = true,
            "relatime" => a.relatime = true,
            "strictatime" => a.strictatime = true,
            other => {
                if !rest.iter().any(|r: &String| r == other) {
                    rest.push(other.to_string())
                }
            }
        }
    }
    (a, rest)
}

/// The system calls a mount needs. The real implementation calls the kernel;
/// the recording fake logs the calls.
pub trait Syscalls: Send + Sync {
    /// An open filesystem context (`fsopen` fd).
    type Context;
    fn fsopen(&self, fstype: &str) -> io::Result<Self::Context>;
    fn fsconfig_flag(&self, ctx: &Self::Context, key: &str) -> io::Result<()>;
    fn fsconfig_string(&self, ctx: &Self::Context, key: &str, value: &str) -> io::Result<()>;
    fn fsconfig_create(&self, ctx: &Self::Context) -> io::Result<()>;
    /// Kernel messages logged on the context (why a create failed).
    fn context_log(&self, ctx: &Self::Context) -> Vec<String>;
    /// `fsmount` with `attrs`, then `move_mount` onto `target`.
    fn fsmount_move(&self, ctx: &Self::Context, attrs: MountAttrs, target: &Path)
        -> io::Result<()>;
    /// Classic `mount(2)`.
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        attrs: MountAttrs,
        data: &str,
    ) -> io::Result<()>;
    fn unmount(&self, target: &Path) -> io::Result<()>;
    fn is_mounted(&self, target: &Path) -> io::Result<bool>;
    /// Make `dir` (mode 0700, emptied first if it exists) hold one symlink
    /// per `(name, target)`.
    fn make_links(&self, dir: &Path, links: &[(String, PathBuf)]) -> io::Result<()>;
    /// Remove `dir` made by [`Syscalls::make_links`]; missing is fine.
    fn remove_links(&self, dir: &Path) -> io::Result<()>;
    /// Run `f` with `dir` as working directory for relative paths, without
    /// changing the working directory of any other thread.
    fn in_dir<R: Send>(&self, dir: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R>;
}

/// Lower directories whose full paths together stay within this many bytes
/// are passed as they are (the overlay driver's threshold for switching to
/// short names is one page of mount data too).
pub const FULL_PATHS_MAX: usize = 4096;
/// The longest value `fsconfig` takes for one key (it refuses 256 bytes).
const FSCONFIG_VALUE_MAX: usize = 255;

/// The lowers as full-path `lowerdir+` values, when they are few and short
/// enough for the mountinfo line to stay small; `None`: use short names.
fn full_path_lowers(lowers: &[PathBuf]) -> Option<Vec<String>> {
    let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    if total > FULL_PATHS_MAX {
        return None;
    }
    lowers
        .iter()
        .map(|l| {
            l.to_str()
                .filter(|s| s.len() <= FSCONFIG_VALUE_MAX && l.is_absolute())
                .map(str::to_string)
        })
        .collect()
}

/// Where the short links of the mount on `target` live: `<target>.lowers`
/// beside it (inside the layer's own directory for a local layer, so they
/// go with it).
pub fn link_dir(target: &Path) -> PathBuf {
    let mut name = target
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "mount".into());
    name.push(".lowers");
    target.with_file_name(name)
}

/// The short name of the `i`-th lower (topmost is 0).
fn lower_name(i: usize) -> String {
    i.to_string()
}

/// One page: the most mount data `mount(2)` accepts.
pub const MOUNT_DATA_MAX: usize = 4096;

/// Composes overlay mounts from an [`OverlaySpec`].
pub struct OverlayMounter<S: Syscalls> {
    sys: S,
    api: OnceLock<MountApi>,
}

impl<S: Syscalls> OverlayMounter<S> {
    pub fn new(sys: S) -> OverlayMounter<S> {
        OverlayMounter {
            sys,
            api: OnceLock::new(),
        }
    }

    /// Start with a known API (tests, or when the caller already knows).
    pub fn with_api(sys: S, api: MountApi) -> OverlayMounter<S> {
        let m = OverlayMounter::new(sys);
        let _ = m.api.set(api);
        m
    }

    pub fn syscalls(&self) -> &S {
        &self.sys
    }

    /// The fallback data string `lowerdir=..,upperdir=..,workdir=..,opts`.
    pub fn legacy_data(spec: &OverlaySpec) -> String {
        let (_, rest) = split_options(&spec.options);
        let lowers =
            if spec.short_lowers.len() == spec.lowers.len() && !spec.short_lowers.is_empty() {
                &spec.short_lowers
            } else {
                &spec.lowers
            };
        // Data-only lowers follow the lowers after "::" each.
        let data: String = spec
            .data_lowers
            .iter()
            .map(|d| format!("::{}", d.display()))
            .collect();
        let mut parts = vec![format!(
            "lowerdir={}{data}",
            lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        )];
        if let Some(u) = &spec.upper {
            parts.push(format!("upperdir={}", u.display()));
        }
        if let Some(w) = &spec.work {
            parts.push(format!("workdir={}", w.display()));
        }
        parts.extend(rest);
        parts.join(",")
    }

    fn check_spec(spec: &OverlaySpec, target: &Path) -> Result<()> {
        if spec.lowers.is_empty() {
            return Err(Error::invalid(format!(
                "mount {}: overlay needs at least one lower directory",
                target.display()
            )));
        }
        if spec.upper.is_some() != spec.work.is_some() {
            return Err(Error::invalid(format!(
                "mount {}: upper and work directories go together",
                target.display()
            )));
        }
        Ok(())
    }

    /// Mount through `fsconfig`, lowers passed by their short names in
    /// [`link_dir`]`(target)`.
    fn mount_fsconfig(
        &self,
        spec: &OverlaySpec,
        target: &Path,
        probing: bool,
    ) -> std::result::Result<(), FsconfigFailure> {
        if let Some(full) = full_path_lowers(&spec.lowers) {
            // A shallow stack: its full paths keep the mountinfo line short,
            // and the calling thread mounts without links or a helper thread
            // (which costs a scheduling round trip per mount on a busy host).
            return self.fsconfig_with_lowers(spec, target, probing, &full);
        }
        let what = format!("mount overlay on {}", target.display());
        let links_at = link_dir(target);
        let links: Vec<(String, PathBuf)> = spec
            .lowers
            .iter()
            .enumerate()
            .map(|(i, l)| (lower_name(i), l.clone()))
            .collect();
        self.sys.make_links(&links_at, &links).map_err(|e| {
            FsconfigFailure::Error(Error::io(
                format!("{what}: short links to the lower directories"),
                &links_at,
                e,
            ))
        })?;
        let mounted = self
            .sys
            .in_dir(&links_at, || self.fsconfig_in_links(spec, target, probing))
            .map_err(|e| {
                FsconfigFailure::Error(Error::io(
                    format!("{what}: enter the directory of short links"),
                    &links_at,
                    e,
                ))
            })
            .and_then(|r| r);
        if mounted.is_err() {
            let _ = self.sys.remove_links(&links_at);
        }
        mounted
    }

    /// The `fsconfig` calls of [`Self::mount_fsconfig`], run with the link
    /// directory as working directory.
    fn fsconfig_in_links(
        &self,
        spec: &OverlaySpec,
        target: &Path,
        probing: bool,
    ) -> std::result::Result<(), FsconfigFailure> {
        let short: Vec<String> = (0..spec.lowers.len()).map(lower_name).collect();
        self.fsconfig_with_lowers(spec, target, probing, &short)
    }

    /// `fsopen` to `move_mount`, the lowers passed as `lowers` name them.
    fn fsconfig_with_lowers(
        &self,
        spec: &OverlaySpec,
        target: &Path,
        probing: bool,
        lowers: &[String],
    ) -> std::result::Result<(), FsconfigFailure> {
        let what = format!("mount overlay on {}", target.display());
        let ctx = self.sys.fsopen("overlay").map_err(|e| {
            if probing && matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
                FsconfigFailure::Unsupported
            } else {
                FsconfigFailure::Error(Error::io(
                    format!("{what}: fsopen"),
                    Path::new("overlay"),
                    e,
                ))
            }
        })?;
        let (attrs, rest) = split_options(&spec.options);
        let with_log = |e: io::Error, step: &str, path: &Path| {
            let log = self.sys.context_log(&ctx);
            let mut err = Error::io(format!("{what}: {step}"), path, e);
            if !log.is_empty() {
                err = Error::new(
                    err.code(),
                    format!("{} (kernel: {})", err.message(), log.join("; ")),
                );
            }
            err
        };
        self.sys
            .fsconfig_string(&ctx, "source", "overlay")
            .map_err(|e| FsconfigFailure::Error(with_log(e, "fsconfig source", target)))?;
        for (i, lower) in spec.lowers.iter().enumerate() {
            if let Err(e) = self.sys.fsconfig_string(&ctx, "lowerdir+", &lowers[i]) {
                if probing && i == 0 && e.raw_os_error() == Some(libc::EINVAL) {
                    return Err(FsconfigFailure::Unsupported);
                }
                return Err(FsconfigFailure::Error(with_log(
                    e,
                    "fsconfig lowerdir+",
                    lower,
                )));
            }
        }
        let data = spec.data_lowers.iter().map(|d| ("datadir+", Some(d)));
        let more = [
            ("upperdir", spec.upper.as_ref()),
            ("workdir", spec.work.as_ref()),
        ];
        for (key, dir) in data.chain(more) {
            if let Some(dir) = dir {
                let value = dir.to_str().ok_or_else(|| {
                    FsconfigFailure::Error(Error::invalid(format!(
                        "{what}: {key} {} is not UTF-8",
                        dir.display()
                    )))
                })?;
                self.sys.fsconfig_string(&ctx, key, value).map_err(|e| {
                    FsconfigFailure::Error(with_log(e, &format!("fsconfig {key}"), dir))
                })?;
            }
        }
        for opt in &rest {
            let r = match opt.split_once('=') {
                // Quotes keep an SELinux label's commas in mount(2) data;
                // fsconfig takes the value as it is.
                Some((k, v)) if k.ends_with("context") => {
                    let unquoted = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                    self.sys.fsconfig_string(&ctx, k, unquoted.unwrap_or(v))
                }
                Some((k, v)) => self.sys.fsconfig_string(&ctx, k, v),
                None => self.sys.fsconfig_flag(&ctx, opt),
            };
            r.map_err(|e| FsconfigFailure::Error(with_log(e, &format!("option {opt:?}"), target)))?;
        }
        self.sys
            .fsconfig_create(&ctx)
            .map_err(|e| FsconfigFailure::Error(with_log(e, "create superblock", target)))?;
        self.sys
            .fsmount_move(&ctx, attrs, target)
            .map_err(|e| FsconfigFailure::Error(with_log(e, "attach mount", target)))?;
        Ok(())
    }

    fn mount_legacy(&self, spec: &OverlaySpec, target: &Path) -> Result<()> {
        let (attrs, _) = split_options(&spec.options);
        let data = Self::legacy_data(spec);
        if data.len() + 1 > MOUNT_DATA_MAX {
            return Err(Error::new(
                ErrorCode::NotSupported,
                format!(
                    "mount overlay on {}: {} lower layers need {} bytes of mount data, more than one page ({MOUNT_DATA_MAX}); \
                     this kernel lacks fsconfig lowerdir+ (Linux 6.8 or later) that has no such limit",
                    target.display(),
                    spec.lowers.len(),
                    data.len() + 1
                ),
            ));
        }
        self.sys
            .mount("overlay", target, "overlay", attrs, &data)
            .map_err(|e| Error::io("mount overlay (mount(2))", target, e))
    }
}

enum FsconfigFailure {
    /// The kernel lacks the new API or `lowerdir+`: fall back to `mount(2)`.
    Unsupported,
    Error(Error),
}

impl<S: Syscalls> Mounter for OverlayMounter<S> {
    fn mount_overlay(&self, spec: &OverlaySpec, target: &Path) -> Result<()> {
        Self::check_spec(spec, target)?;
        match self.api.get() {
            Some(MountApi::Legacy | MountApi::Program) => self.mount_legacy(spec, target),
            Some(MountApi::Fsconfig) => match self.mount_fsconfig(spec, target, false) {
                Ok(()) => Ok(()),
                Err(FsconfigFailure::Error(e)) => Err(e),
                Err(FsconfigFailure::Unsupported) => unreachable!("only reported while probing"),
            },
            None => match self.mount_fsconfig(spec, target, true) {
                Ok(()) => {
                    let _ = self.api.set(MountApi::Fsconfig);
                    Ok(())
                }
                Err(FsconfigFailure::Unsupported) => {
                    let _ = self.api.set(MountApi::Legacy);
                    self.mount_legacy(spec, target)
                }
                Err(FsconfigFailure::Error(e)) => Err(e),
            },
        }
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        match self.sys.unmount(target) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {}
            Err(e) => return Err(Error::io("unmount", target, e)),
        }
        // The kernel resolved the links when mounting; they only served to
        // read the mount's short names.
        let links = link_dir(target);
        self.sys
            .remove_links(&links)
            .map_err(|e| Error::io("unmount: remove the short links", &links, e))
    }

    fn is_mounted(&self, target: &Path) -> Result<bool> {
        self.sys
            .is_mounted(target)
            .map_err(|e| Error::io("check mount", target, e))
    }

    fn known_api(&self) -> Option<MountApi> {
        self.api.get().copied()
    }

    fn mount_erofs(&self, image: &Path, target: &Path) -> Result<()> {
        let source = image.to_str().ok_or_else(|| {
            Error::invalid(format!("mount {}: path is not UTF-8", image.display()))
        })?;
        let attrs = MountAttrs {
            read_only: true,
            nodev: true,
            nosuid: true,
            ..MountAttrs::default()
        };
        self.sys
            .mount(source, target, "erofs", attrs, "")
            .map_err(|e| Error::io(format!("mount EROFS image {source}"), target, e))
    }

    fn api(&self, probe_dir: &Path) -> MountApi {
        *self.api.get_or_init(|| {
            let Ok(ctx) = self.sys.fsopen("overlay") else {
                return MountApi::Legacy;
            };
            match probe_dir
                .to_str()
                .map(|d| self.sys.fsconfig_string(&ctx, "lowerdir+", d))
            {
                Some(Ok(())) => MountApi::Fsconfig,
                _ => MountApi::Legacy,
            }
        })
    }
}

/// The real mounter used by the driver.
pub fn real_mounter() -> OverlayMounter<RealSyscalls> {
    OverlayMounter::new(RealSyscalls)
}

#[cfg(test)]
mod tests {
    use super::fake::{MountCall, RecordingSyscalls};
    use super::*;

    fn spec(n: usize, upper: bool) -> OverlaySpec {
        OverlaySpec {
            lowers: (0..n)
                .map(|i| {
                    PathBuf::from(format!(
                        "/var/lib/containers/storage/cvmfs/layers/layer{i}/diff"
                    ))
                })
                .collect(),
            short_lowers: (0..n)
                .map(|i| PathBuf::from(format!("/h/l/L{i:09}")))
                .collect(),
            upper: upper.then(|| PathBuf::from("/h/layers/top/diff")),
            work: upper.then(|| PathBuf::from("/h/layers/top/work")),
            options: vec!["nodev".into(), "metacopy=on".into(), "userxattr".into()],
            data_lowers: Vec::new(),
        }
    }

    #[test]
    fn data_only_lowers_follow_the_lowers_in_both_apis() {
        let mut sp = spec(2, false);
        sp.data_lowers = vec![PathBuf::from("/cvmfs/a"), PathBuf::from("/cvmfs/b")];
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        m.mount_overlay(&sp, Path::new("/m")).unwrap();
        let keys: Vec<(String, String)> = m
            .syscalls()
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                MountCall::FsconfigString { key, value } if key.ends_with("dir+") => {
                    Some((key, value))
                }
                _ => None,
            })
            .collect();
        let l = |i: usize| sp.lowers[i].display().to_string();
        assert_eq!(
            keys,
            vec![
                (s("lowerdir+"), l(0)),
                (s("lowerdir+"), l(1)),
                (s("datadir+"), s("/cvmfs/a")),
                (s("datadir+"), s("/cvmfs/b")),
            ]
        );
        let data = OverlayMounter::<RecordingSyscalls>::legacy_data(&sp);
        assert!(
            data.starts_with("lowerdir=/h/l/L000000000:/h/l/L000000001::/cvmfs/a::/cvmfs/b,"),
            "{data}"
        );
    }

    #[test]
    fn erofs_images_are_mounted_read_only_nodev_nosuid_from_their_file() {
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        m.mount_erofs(Path::new("/h/aux/v1-x.erofs"), Path::new("/run/erofs/v1-x"))
            .unwrap();
        assert_eq!(
            m.syscalls().calls(),
            vec![MountCall::Mount {
                source: s("/h/aux/v1-x.erofs"),
                target: PathBuf::from("/run/erofs/v1-x"),
                fstype: s("erofs"),
                attrs: vec![s("ro"), s("nodev"), s("nosuid")],
                data: s(""),
            }]
        );
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    /// Lower paths too long for `fsconfig` values: short names are needed
    /// even for two of them.
    const LONG: &str = "/var/lib/containers/storage/cvmfs/layers/long";

    fn long_spec(n: usize) -> OverlaySpec {
        let mut sp = spec(n, true);
        let pad = "x".repeat(260);
        sp.lowers = (0..n)
            .map(|i| PathBuf::from(format!("{LONG}{pad}{i}/diff")))
            .collect();
        sp
    }

    /// The `lowerdir+` values of recorded mount calls, in order.
    fn lowerdir_values(calls: &[MountCall]) -> Vec<&str> {
        calls
            .iter()
            .filter_map(|c| match c {
                MountCall::FsconfigString { key, value } if key == "lowerdir+" => {
                    Some(value.as_str())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn shallow_stacks_pass_full_paths_from_the_calling_thread() {
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        m.mount_overlay(&spec(2, true), Path::new("/h/layers/top/merged"))
            .unwrap();
        let calls = m.syscalls().calls();
        let lowers = lowerdir_values(&calls);
        assert_eq!(
            lowers,
            [
                "/var/lib/containers/storage/cvmfs/layers/layer0/diff",
                "/var/lib/containers/storage/cvmfs/layers/layer1/diff"
            ]
        );
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, MountCall::Links { .. } | MountCall::EnterDir { .. })),
            "no links and no thread of its own: {calls:?}"
        );
        // Just over the threshold: short names.
        let per = spec(1, true).lowers[0].as_os_str().len() + 1;
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        m.mount_overlay(&spec(FULL_PATHS_MAX / per + 1, true), Path::new("/m"))
            .unwrap();
        assert!(matches!(m.syscalls().calls()[0], MountCall::Links { .. }));
    }

    #[test]
    fn fsconfig_calls_are_exact() {
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        m.mount_overlay(&long_spec(2), Path::new("/h/layers/top/merged"))
            .unwrap();
        assert_eq!(m.api(Path::new("/x")), MountApi::Fsconfig);
        let l = format!("{LONG}{}", "x".repeat(260));
        let links = PathBuf::from("/h/layers/top/merged.lowers");
        assert_eq!(
            m.syscalls().calls(),
            vec![
                MountCall::Links {
                    dir: links.clone(),
                    links: vec![
                        (s("0"), PathBuf::from(format!("{l}0/diff"))),
                        (s("1"), PathBuf::from(format!("{l}1/diff"))),
                    ]
                },
                MountCall::EnterDir { dir: links.clone() },
                MountCall::Fsopen {
                    fstype: s("overlay")
                },
                MountCall::FsconfigString {
                    key: s("source"),
                    value: s("overlay")
                },
                MountCall::FsconfigString {
                    key: s("lowerdir+"),
                    value: s("0")
                },
                MountCall::FsconfigString {
                    key: s("lowerdir+"),
                    value: s("1")
                },
                MountCall::FsconfigString {
                    key: s("upperdir"),
                    value: s("/h/layers/top/diff")
                },
                MountCall::FsconfigString {
                    key: s("workdir"),
                    value: s("/h/layers/top/work")
                },
                MountCall::FsconfigString {
                    key: s("metacopy"),
                    value: s("on")
                },
                MountCall::FsconfigFlag {
                    key: s("userxattr")
                },
                MountCall::FsconfigCreate,
                MountCall::Fsmount {
                    attrs: vec![s("nodev")]
                },
                MountCall::MoveMount {
                    target: PathBuf::from("/h/layers/top/merged")
                },
                MountCall::LeaveDir,
            ]
        );
        assert!(m.is_mounted(Path::new("/h/layers/top/merged")).unwrap());
        m.syscalls().clear();
        m.unmount(Path::new("/h/layers/top/merged")).unwrap();
        assert!(!m.is_mounted(Path::new("/h/layers/top/merged")).unwrap());
        assert_eq!(
            m.syscalls().calls(),
            vec![
                MountCall::Unmount {
                    target: PathBuf::from("/h/layers/top/merged")
                },
                MountCall::RemoveLinks { dir: links },
            ],
            "the links go with the mount"
        );
    }

    #[test]
    fn five_hundred_lowers_take_short_names_only() {
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        m.mount_overlay(&spec(500, true), Path::new("/h/layers/top/merged"))
            .unwrap();
        let calls = m.syscalls().calls();
        let names = lowerdir_values(&calls);
        let expected: Vec<String> = (0..500).map(|i| i.to_string()).collect();
        assert_eq!(names, expected);
        // What mountinfo will show for them: well under 8 KiB.
        let shown: usize = names.iter().map(|n| ",lowerdir+=".len() + n.len()).sum();
        assert!(shown < 7000, "{shown}");
        // Every name is a link to its lower, made before entering the directory.
        let MountCall::Links { links, .. } = &calls[0] else {
            panic!("links first: {calls:?}")
        };
        assert_eq!(links.len(), 500);
        assert_eq!(links[499].1, spec(500, true).lowers[499]);
        assert!(matches!(calls[1], MountCall::EnterDir { .. }));
        assert_eq!(calls.last(), Some(&MountCall::LeaveDir));
    }

    #[test]
    fn a_failed_mount_removes_its_links() {
        let sys = RecordingSyscalls::new(true);
        sys.fail_create(libc::EINVAL, "overlay: boom");
        let m = OverlayMounter::with_api(sys, MountApi::Fsconfig);
        assert!(m.mount_overlay(&long_spec(2), Path::new("/m")).is_err());
        assert_eq!(
            m.syscalls().calls().last(),
            Some(&MountCall::RemoveLinks {
                dir: PathBuf::from("/m.lowers")
            })
        );
    }

    #[test]
    fn read_only_mount_has_no_upper_and_sets_the_ro_attribute() {
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        let mut sp = spec(1, false);
        sp.options = vec![s("ro")];
        m.mount_overlay(&sp, Path::new("/m")).unwrap();
        let calls = m.syscalls().calls();
        assert!(!calls
            .iter()
            .any(|c| matches!(c, MountCall::FsconfigString { key, .. } if key == "upperdir")));
        assert!(calls.contains(&MountCall::Fsmount {
            attrs: vec![s("ro")]
        }));
    }

    #[test]
    fn falls_back_to_mount2_with_short_links_when_lowerdir_plus_is_missing() {
        let m = OverlayMounter::new(RecordingSyscalls::new(false));
        m.mount_overlay(&spec(3, true), Path::new("/m")).unwrap();
        assert_eq!(m.api(Path::new("/x")), MountApi::Legacy);
        let calls = m.syscalls().calls();
        assert_eq!(
            calls.last().unwrap(),
            &MountCall::Mount {
                source: s("overlay"),
                target: PathBuf::from("/m"),
                fstype: s("overlay"),
                attrs: vec![s("nodev")],
                data: s("lowerdir=/h/l/L000000000:/h/l/L000000001:/h/l/L000000002,upperdir=/h/layers/top/diff,workdir=/h/layers/top/work,metacopy=on,userxattr"),
            }
        );
        // Once known, later mounts go straight to mount(2).
        m.syscalls().clear();
        m.mount_overlay(&spec(1, false), Path::new("/n")).unwrap();
        let calls = m.syscalls().calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(
            matches!(&calls[0], MountCall::Mount { data, .. } if data == "lowerdir=/h/l/L000000000,metacopy=on,userxattr")
        );
    }

    #[test]
    fn fallback_refuses_data_longer_than_a_page() {
        let m = OverlayMounter::with_api(RecordingSyscalls::new(false), MountApi::Legacy);
        let e = m
            .mount_overlay(&spec(400, true), Path::new("/m"))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotSupported);
        assert!(e.to_string().contains("400 lower layers"), "{e}");
        assert!(e.to_string().contains("lowerdir+"), "{e}");
        assert!(m.syscalls().calls().is_empty());
    }

    #[test]
    fn deep_stacks_work_with_fsconfig() {
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        m.mount_overlay(&spec(400, true), Path::new("/m")).unwrap();
        let n = m
            .syscalls()
            .calls()
            .iter()
            .filter(|c| matches!(c, MountCall::FsconfigString { key, .. } if key == "lowerdir+"))
            .count();
        assert_eq!(n, 400);
    }

    #[test]
    fn kernel_errors_are_reported_with_the_path() {
        let sys = RecordingSyscalls::new(true);
        sys.fail_create(libc::EINVAL, "overlay: failed to resolve '/nope': -2");
        let m = OverlayMounter::with_api(sys, MountApi::Fsconfig);
        let e = m
            .mount_overlay(&spec(1, true), Path::new("/m"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("mount overlay on /m"), "{msg}");
        assert!(msg.contains("failed to resolve '/nope'"), "{msg}");
    }

    #[test]
    fn bad_specs_are_rejected() {
        let m = OverlayMounter::new(RecordingSyscalls::new(true));
        let e = m
            .mount_overlay(&OverlaySpec::default(), Path::new("/m"))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let mut sp = spec(1, true);
        sp.work = None;
        assert!(m.mount_overlay(&sp, Path::new("/m")).is_err());
    }

    #[test]
    fn option_splitting() {
        let (a, rest) = split_options(&[
            s("ro"),
            s("rw"),
            s("nosuid"),
            s("index=off"),
            s("index=off"),
        ]);
        assert_eq!(a.names(), vec!["ro", "nosuid"]);
        assert_eq!(rest, vec![s("index=off")]);
    }
}
