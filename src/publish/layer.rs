//! Unpacking one layer into a DUCC `layerfs` directory while recording its
//! diffID, size and tar-split, in a single pass over the uncompressed stream.
//!
//! The hardened [`archive::apply_tar`](crate::archive::apply_tar) does the unpacking
//! (paths kept beneath the root, no symlink ever followed, hostile entries
//! rejected). It converts OCI whiteouts to overlay form; DUCC's `layerfs` keeps
//! them as the raw `.wh.*` regular files of the tar instead, so afterwards each
//! whiteout the tar-split recorder saw is turned back into its marker file, with
//! the mode, owner and time the tar gave it.

use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags, Timespec, Timestamps};
use sha2::{Digest, Sha256};

use super::tarsplit::{EntryInfo, TarSplitter};
use super::{Error, Result};
use crate::archive::{self, ApplyOptions, OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// What unpacking a layer produced.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// `sha256:<hex>` of the uncompressed tar (the diffID).
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub diff_size: u64,
    /// Entries of the tar, in order.
    pub entries: Vec<EntryInfo>,
}

/// Feeds everything read through it to the diffID hash and the tar-split recorder.
struct Tee<'a, R, W: Write> {
    inner: R,
    hash: Sha256,
    size: u64,
    split: &'a mut TarSplitter<W>,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        self.split.feed(&buf[..n]);
        if let Some(e) = self.split.error() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
        Ok(n)
    }
}

/// Unpack the uncompressed layer tar `input` into `layerfs` (created, must not
/// exist), writing its tar-split JSON lines to `tar_split`.
/// With `reject_devices`, a device node entry fails the layer.
pub fn unpack<R: Read, W: Write>(
    input: R,
    layerfs: &Path,
    tar_split: W,
    reject_devices: bool,
) -> Result<(Unpacked, W)> {
    std::fs::create_dir(layerfs).map_err(|e| Error::io(layerfs, e))?;
    let mut split = TarSplitter::new(tar_split).reject_devices(reject_devices);
    let mut tee = Tee {
        inner: input,
        hash: Sha256::new(),
        size: 0,
        split: &mut split,
    };
    // Unprivileged, files belong to the publisher (the records then say
    // "ownership":"lost"), as with DUCC.
    let opts = ApplyOptions {
        ignore_chown_errors: !rustix::process::geteuid().is_root(),
        ..ApplyOptions::default()
    };
    let applied = archive::apply_tar(&mut tee, layerfs, &opts);
    if let Err(e) = applied {
        // the recorder's own complaint is the more precise one
        if let Some(se) = tee.split.error() {
            return Err(Error::msg(se));
        }
        return Err(Error::msg(format!("{e}")));
    }
    // The tar reader stops at the end-of-archive blocks; the diffID and tar-split
    // cover every byte of the stream, trailing padding included.
    io::copy(&mut tee, &mut io::sink()).map_err(|e| Error::msg(format!("reading layer: {e}")))?;
    let diff_id = format!("sha256:{}", hex(&tee.hash.clone().finalize()));
    let diff_size = tee.size;
    let (w, entries) = split.finish().map_err(Error::msg)?;
    restore_raw_whiteouts(layerfs, &entries)?;
    Ok((
        Unpacked {
            diff_id,
            diff_size,
            entries,
        },
        w,
    ))
}

/// The raw whiteout marker files [`unpack`] (or DUCC) leaves in `layerfs` for
/// a tar with `entries` (paths relative to `layerfs`, sorted, each once), for the
/// driver's layer record: with the list it never has to walk the layer to
/// find them. `None` when a marker's name is not UTF-8 (JSON cannot carry
/// it; the driver then walks the layer).
pub fn marker_list(entries: &[EntryInfo]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for e in entries {
        let Some((base, dir)) = name_components(&e.name) else {
            continue;
        };
        // AUFS metadata (`.wh..wh.plnk`) is listed too: unpacking drops it,
        // DUCC keeps it, and hiding a name that is not there is harmless.
        if !base.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            continue;
        }
        let mut path = Vec::with_capacity(e.name.len());
        for c in dir {
            path.extend_from_slice(c);
            path.push(b'/');
        }
        path.extend_from_slice(base);
        out.push(String::from_utf8(path).ok()?);
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// A tar name's last component and its directories, as unpacking resolves
/// them (empty and `.` components dropped); `None` for the root.
fn name_components(name: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let mut comps: Vec<&[u8]> = name
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let base = comps.pop()?;
    Some((base, comps))
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn ioe(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Open directory `rel` (components) beneath `root`, never following a symlink.
fn open_dir(root: &Path, rel: &[&[u8]]) -> io::Result<std::os::fd::OwnedFd> {
    let mut fd = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(ioe)?;
    for c in rel {
        fd = rustix::fs::openat(
            &fd,
            std::ffi::OsStr::from_bytes(c),
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(ioe)?;
    }
    Ok(fd)
}

use std::os::unix::ffi::OsStrExt;

/// Turn the overlay-form whiteouts `apply_tar` made back into DUCC's raw markers.
fn restore_raw_whiteouts(layerfs: &Path, entries: &[EntryInfo]) -> Result<()> {
    for e in entries {
        let Some((base, dir)) = name_components(&e.name) else {
            continue;
        };
        let base = &base;
        let dir = dir.as_slice();
        if !base.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            continue;
        }
        let what = || {
            format!(
                "entry {:?}: restoring the raw whiteout marker",
                String::from_utf8_lossy(&e.name)
            )
        };
        let dirfd =
            open_dir(layerfs, dir).map_err(|err| Error::msg(format!("{}: {err}", what())))?;
        // keep the directory's times as the tar set them
        let dir_times = rustix::fs::fstat(&dirfd).ok().map(|st| Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime as _,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime as _,
                tv_nsec: st.st_mtime_nsec as _,
            },
        });
        if *base == WHITEOUT_OPAQUE.as_bytes() {
            let dpath = dir.iter().fold(layerfs.to_path_buf(), |p, c| {
                p.join(std::ffi::OsStr::from_bytes(c))
            });
            match rustix::fs::lremovexattr(&dpath, OVERLAY_OPAQUE_XATTR) {
                Ok(()) | Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => {}
                Err(err) => return Err(Error::msg(format!("{}: {}", what(), ioe(err)))),
            }
        } else if base.starts_with(b".wh..wh.") {
            // AUFS metadata (.wh..wh.plnk, ...): apply_tar ignores it, DUCC keeps
            // whatever the tar had; we keep nothing.
            continue;
        } else {
            let target = &base[WHITEOUT_PREFIX.len()..];
            let target = std::ffi::OsStr::from_bytes(target);
            if let Ok(st) =
                rustix::fs::statat(&dirfd, target, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            {
                let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
                if ft == rustix::fs::FileType::CharacterDevice && st.st_rdev == 0 {
                    rustix::fs::unlinkat(&dirfd, target, rustix::fs::AtFlags::empty())
                        .map_err(|err| Error::msg(format!("{}: {}", what(), ioe(err))))?;
                }
            }
        }
        let name = std::ffi::OsStr::from_bytes(base);
        let fd = rustix::fs::openat(
            &dirfd,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|err| Error::msg(format!("{}: {}", what(), ioe(err))))?;
        let set = || -> rustix::io::Result<()> {
            match rustix::fs::fchown(
                &fd,
                Some(rustix::process::Uid::from_raw(e.uid)),
                Some(rustix::process::Gid::from_raw(e.gid)),
            ) {
                // unprivileged: the marker keeps the publisher as owner
                Ok(()) | Err(rustix::io::Errno::PERM) => {}
                Err(e) => return Err(e),
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(e.mode & 0o7777))?;
            let t = Timespec {
                tv_sec: e.mtime,
                tv_nsec: 0,
            };
            rustix::fs::futimens(
                &fd,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )
        };
        set().map_err(|err| Error::msg(format!("{}: {}", what(), ioe(err))))?;
        if let Some(t) = dir_times {
            let _ = rustix::fs::futimens(&dirfd, &t);
        }
    }
    Ok(())
}

/// True if `md` is an overlay-style whiteout (0/0 character device).
pub fn is_overlay_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> EntryInfo {
        EntryInfo {
            name: name.as_bytes().to_vec(),
            typeflag: b'0',
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    #[test]
    fn marker_list_names_every_marker_once_as_unpacked() {
        let entries: Vec<EntryInfo> = [
            "./etc/",
            "./etc/.wh.passwd",
            "etc//.wh.passwd",
            "/var/cache/.wh..wh..opq",
            "usr/bin/tool",
            "./.wh..wh.plnk",
            ".wh.top",
        ]
        .into_iter()
        .map(entry)
        .collect();
        assert_eq!(
            marker_list(&entries).unwrap(),
            vec![
                ".wh..wh.plnk",
                ".wh.top",
                "etc/.wh.passwd",
                "var/cache/.wh..wh..opq"
            ]
        );
        let mut odd = entry("x/.wh.");
        odd.name.push(0xff);
        assert_eq!(
            marker_list(&[odd]),
            None,
            "non-UTF-8 names cannot be listed"
        );
        assert_eq!(marker_list(&[entry("./")]).unwrap(), Vec::<String>::new());
    }
}
