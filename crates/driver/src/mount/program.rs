//! Overlays made by a FUSE mount program (`cvmfs.mount_program`, like the
//! overlay driver's `mount_program`): fuse-overlayfs, for kernels where
//! kernel overlay cannot be mounted inside a user namespace (before 5.11),
//! or when chosen. fuse-overlayfs honours the whiteout layers the driver
//! builds (0/0 devices, `*.overlay.opaque`) and raw `.wh.*` files itself.
//!
//! The program runs with `-o lowerdir=…,upperdir=…,workdir=…` and mounts
//! before its first process exits (it forks its server); it is given
//! [`MOUNT_TIMEOUT`] and killed (by its own PID) after that. Kernel-overlay
//! options (`userxattr`, `metacopy`, `redirect_dir`, …) mean nothing to it
//! and are dropped; the per-mount flags `nodev`, `nosuid`, `noexec`, `ro` are
//! passed on. Unmounting is the kernel's (lazy) unmount, as for overlay: the
//! server exits with its mount.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{split_options, MountApi, Mounter, OverlaySpec, RealSyscalls, Syscalls};
use crate::error::{Error, ErrorCode, Result};

/// How long the mount program may take to mount.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `-o` argument the kernel passes to a program (MAX_ARG_STRLEN).
const MAX_ARG_BYTES: usize = 128 * 1024;
/// At most this much of the program's stderr goes into an error message.
const MAX_STDERR_BYTES: u64 = 4096;

/// Mounts overlays with a FUSE program instead of the kernel.
#[derive(Debug, Clone)]
pub struct ProgramMounter {
    program: PathBuf,
    /// Why this program is in use (for `podman info`).
    reason: String,
}

impl ProgramMounter {
    pub fn new(program: PathBuf, reason: impl Into<String>) -> ProgramMounter {
        ProgramMounter {
            program,
            reason: reason.into(),
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The `-o` argument for `spec`.
    pub fn options_arg(spec: &OverlaySpec) -> Result<String> {
        let (attrs, _kernel_only) = split_options(&spec.options);
        let mut opts = vec![format!(
            "lowerdir={}",
            spec.lowers
                .iter()
                .map(|l| escape(l))
                .collect::<Result<Vec<_>>>()?
                .join(":")
        )];
        if let (Some(upper), Some(work)) = (&spec.upper, &spec.work) {
            opts.push(format!("upperdir={}", escape(upper)?));
            opts.push(format!("workdir={}", escape(work)?));
        }
        opts.extend(
            attrs
                .names()
                .into_iter()
                .filter(|n| matches!(*n, "ro" | "nodev" | "nosuid" | "noexec"))
                .map(str::to_string),
        );
        let arg = opts.join(",");
        if arg.len() > MAX_ARG_BYTES {
            return Err(Error::new(
                ErrorCode::Io,
                format!(
                    "mount program: {} lower directories make a {}-byte option string, longer than the kernel passes to a program ({MAX_ARG_BYTES})",
                    spec.lowers.len(),
                    arg.len()
                ),
            ));
        }
        Ok(arg)
    }

    fn run(&self, arg: &str, target: &Path) -> Result<()> {
        let failed = |why: String| {
            Error::new(
                ErrorCode::Io,
                format!(
                    "mount program {} on {}: {why}",
                    self.program.display(),
                    target.display()
                ),
            )
        };
        let mut child = Command::new(&self.program)
            .arg("-o")
            .arg(arg)
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot start it: {e}")))?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < MOUNT_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failed(format!(
                        "no answer within {}s: killed",
                        MOUNT_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(failed(format!("waiting for it: {e}"))),
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut err = String::new();
        if let Some(s) = child.stderr.take() {
            let _ = s.take(MAX_STDERR_BYTES).read_to_string(&mut err);
        }
        Err(failed(format!("{status}: {}", err.trim())))
    }
}

/// A path in a fuse-overlayfs option: `\`, `:` and `,` escaped with `\`.
fn escape(p: &Path) -> Result<String> {
    let s = p.to_str().ok_or_else(|| {
        Error::invalid(format!("mount program: path {} is not UTF-8", p.display()))
    })?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

impl Mounter for ProgramMounter {
    fn mount_overlay(&self, spec: &OverlaySpec, target: &Path) -> Result<()> {
        if spec.lowers.is_empty() || spec.upper.is_some() != spec.work.is_some() {
            return Err(Error::invalid(format!(
                "overlay on {}: needs lowers, and an upper with a work directory",
                target.display()
            )));
        }
        let arg = Self::options_arg(spec)?;
        self.run(&arg, target)
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        match RealSyscalls.unmount(target) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(()),
            Err(e) => Err(Error::io("unmount", target, e)),
        }
    }

    fn is_mounted(&self, target: &Path) -> Result<bool> {
        RealSyscalls
            .is_mounted(target)
            .map_err(|e| Error::io("check mount", target, e))
    }

    fn api(&self, _probe_dir: &Path) -> MountApi {
        MountApi::Program
    }

    fn known_api(&self) -> Option<MountApi> {
        Some(MountApi::Program)
    }

    fn program(&self) -> Option<(&Path, &str)> {
        Some((&self.program, &self.reason))
    }
}

/// The FUSE program to use when the kernel cannot mount overlay in this
/// user namespace (rootless before Linux 5.11), if one is installed.
pub fn automatic_fallback() -> Option<ProgramMounter> {
    if !crate::rootless::active() || kernel_overlay_in_userns(&kernel_release()) {
        return None;
    }
    [
        "/usr/bin/fuse-overlayfs",
        "/usr/local/bin/fuse-overlayfs",
        "/bin/fuse-overlayfs",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .map(|p| {
        ProgramMounter::new(
            p,
            "automatic: kernel overlay cannot be mounted in a user namespace before Linux 5.11",
        )
    })
}

fn kernel_release() -> String {
    let mut release = String::new();
    let _ = std::fs::File::open("/proc/sys/kernel/osrelease")
        .and_then(|f| f.take(256).read_to_string(&mut release));
    release.trim().to_string()
}

/// Whether kernel `release` (`uname -r`) mounts overlay in a user
/// namespace (5.11 and later). An unparsable release counts as new.
pub fn kernel_overlay_in_userns(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 11),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_escaped_paths_and_only_what_fuse_overlayfs_knows() {
        let spec = OverlaySpec {
            lowers: vec!["/r/a:b".into(), "/r/c,d".into()],
            upper: Some("/h/up".into()),
            work: Some("/h/work".into()),
            options: vec!["nodev".into(), "userxattr".into(), "metacopy=on".into()],
            ..OverlaySpec::default()
        };
        assert_eq!(
            ProgramMounter::options_arg(&spec).unwrap(),
            r"lowerdir=/r/a\:b:/r/c\,d,upperdir=/h/up,workdir=/h/work,nodev"
        );
        let ro = OverlaySpec {
            lowers: vec!["/r/a".into()],
            options: vec!["ro".into()],
            ..OverlaySpec::default()
        };
        assert_eq!(
            ProgramMounter::options_arg(&ro).unwrap(),
            "lowerdir=/r/a,ro"
        );
    }

    #[test]
    fn an_option_string_too_long_for_a_program_is_refused() {
        let spec = OverlaySpec {
            lowers: (0..2000)
                .map(|i| PathBuf::from(format!("/{}/{i}", "x".repeat(80))))
                .collect(),
            ..OverlaySpec::default()
        };
        let e = ProgramMounter::options_arg(&spec).unwrap_err();
        assert!(e.to_string().contains("2000 lower directories"), "{e}");
    }

    #[test]
    fn kernels_before_5_11_cannot_mount_overlay_in_a_user_namespace() {
        assert!(!kernel_overlay_in_userns("5.10.0-28-amd64"));
        assert!(!kernel_overlay_in_userns("4.18.0-553.el8_10.x86_64"));
        assert!(kernel_overlay_in_userns("5.11.0"));
        assert!(kernel_overlay_in_userns("6.18.44-fc-v1272"));
        assert!(kernel_overlay_in_userns("weird"));
    }

    #[test]
    fn a_failing_program_reports_its_stderr_and_status() {
        let m = ProgramMounter::new("/bin/sh".into(), "test");
        // `sh -o <arg> <target>`: an invalid option makes sh fail, saying so.
        let spec = OverlaySpec {
            lowers: vec!["/nonexistent".into()],
            ..OverlaySpec::default()
        };
        let e = m
            .mount_overlay(&spec, Path::new("/nonexistent-target"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("mount program /bin/sh on /nonexistent-target"),
            "{msg}"
        );
        assert!(
            msg.contains("lowerdir"),
            "sh's complaint is in the message: {msg}"
        );
    }
}
