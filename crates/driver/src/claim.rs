//! Noticing a CVMFS client that does not show the owners the repository
//! holds.
//!
//! CVMFS's `default.conf` sets `CVMFS_CLAIM_OWNERSHIP=yes`: such a client
//! reports every file as owned by the uid of its `cvmfs2` process (only the
//! container and graph-driver client profiles set `no`); `CVMFS_UID_MAP`
//! and `CVMFS_GID_MAP` remap owners instead. Either way the layer directories
//! no longer show the image's owners, and nothing in a directory listing
//! says so.
//!
//! Our publisher records, in each layer record, the owners a few entries have
//! as published (`owner-probes`: the layer root and up to seven entries not
//! owned 0:0, [`cvmfs_format::OwnerProbes`]). At the first use of a layer the
//! driver looks at each of them once (one lookup and `fstat` per probe, no
//! read of any content) and compares. Records without probes (older
//! publishers) fall back to the layer root of a layer that kept its owners,
//! expected to be root's (an OCI layer's root is 0:0 in practice); a
//! repository whose layers lost their owners and carry no probes is not
//! checked.
//!
//! What is found is reported per repository in the driver status, with the
//! client setting that fixes it, and the owners are restored from the
//! layer's `ownership.json` (see `mount::whiteouts::apply_owners`).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::mount::whiteouts::Owner;

/// Most probes looked at per layer (the record's field allows no more).
const MAX_PROBES: usize = cvmfs_format::ownership::MAX_OWNER_PROBES;

/// How one probe compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The entry, relative to the layer directory (`""`: its root).
    pub path: PathBuf,
    pub published: (u32, u32),
    pub shown: (u32, u32),
}

/// Look at `probes` in the layer directory `layer`: the first entry whose
/// owner differs from the one published, or `None` when every entry that
/// is there shows its published owner. Entries are reached from the layer
/// without any symlink (`openat2` `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`,
/// `O_PATH | O_NOFOLLOW`); an entry that is not there (or not reachable so)
/// is skipped, never followed.
pub fn first_mismatch(layer: &Path, probes: &[Owner]) -> io::Result<Option<Mismatch>> {
    use rustix::fs::{fstat, openat2, Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        layer,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    for p in probes.iter().take(MAX_PROBES) {
        let rel = if p.path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p.path.as_path()
        };
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(fd) = openat2(&root, rel, flags, Mode::empty(), resolve) else {
            continue;
        };
        let st = fstat(&fd).map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
        let shown = (st.st_uid, st.st_gid);
        if shown != (p.uid, p.gid) {
            return Ok(Some(Mismatch {
                path: p.path.clone(),
                published: (p.uid, p.gid),
                shown,
            }));
        }
    }
    Ok(None)
}

/// The probes of a layer: its record's, or for a record without them the
/// layer root expected to be root's when the layer kept its owners.
pub fn probes_of(recorded: Option<&[Owner]>, kept: bool) -> Vec<Owner> {
    match recorded {
        Some(p) => p.to_vec(),
        None if kept => vec![Owner {
            path: PathBuf::new(),
            uid: 0,
            gid: 0,
        }],
        None => Vec::new(),
    }
}

/// What was found about one repository's client, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReport {
    /// The first difference seen, and in which layer.
    pub example: Mismatch,
    pub layer: String,
    /// Layers whose owners the driver restores on this client.
    pub restored: usize,
    /// Layers it cannot restore (no `ownership.json`): their IDs.
    pub unrestorable: Vec<String>,
}

/// The `CVMFS Client Owners` status value for `reports` (by repository).
pub fn status_line(reports: &BTreeMap<PathBuf, ClientReport>) -> String {
    if reports.is_empty() {
        return "as published for every repository used so far".into();
    }
    let mut parts = Vec::new();
    for (repo, r) in reports {
        let m = &r.example;
        let entry = if m.path.as_os_str().is_empty() {
            "the layer root".to_string()
        } else {
            m.path.display().to_string()
        };
        let fix = match repo.file_name() {
            Some(name) => format!(
                "set CVMFS_CLAIM_OWNERSHIP=no in /etc/cvmfs/config.d/{}.local and remount",
                name.to_string_lossy()
            ),
            None => "set CVMFS_CLAIM_OWNERSHIP=no for this repository".into(),
        };
        let restored = if r.unrestorable.is_empty() {
            format!(
                "the driver restores the image's owners ({} layer(s) so far, from their ownership metadata, built once in its home)",
                r.restored
            )
        } else {
            format!(
                "the driver restores the image's owners of {} layer(s); {} layer(s) have no ownership metadata and show the client's owners: {}",
                r.restored,
                r.unrestorable.len(),
                r.unrestorable.join(",")
            )
        };
        parts.push(format!(
            "{}: the client does not show the owners the repository holds ({entry} of layer {} is {}:{} as published, shown as {}:{}; a client with CVMFS_CLAIM_OWNERSHIP=yes, CVMFS's default, shows every file as its own); {restored}; fix: {fix}",
            repo.display(),
            r.layer,
            m.published.0,
            m.published.1,
            m.shown.0,
            m.shown.1,
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn owner(path: &str, uid: u32, gid: u32) -> Owner {
        Owner {
            path: path.into(),
            uid,
            gid,
        }
    }

    #[test]
    #[ignore = "needs root"]
    fn probes_compare_owners_and_never_follow_symlinks() {
        // (cvmfs_testkit::gate::require_root, which a unit test cannot link)
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (ownership): run it as root, or leave out --include-ignored"
        );
        let t = tempfile::tempdir().unwrap();
        let l = t.path().join("layer");
        fs::create_dir_all(l.join("home/u")).unwrap();
        std::os::unix::fs::chown(l.join("home/u"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::symlink(t.path(), l.join("out")).unwrap();
        fs::write(t.path().join("secret"), b"").unwrap();
        let probes = [owner("", 0, 0), owner("home/u", 1000, 1000)];
        assert_eq!(first_mismatch(&l, &probes).unwrap(), None);
        // A client that shows everything as root's: the 1000 entry differs.
        std::os::unix::fs::chown(l.join("home/u"), Some(0), Some(0)).unwrap();
        let m = first_mismatch(&l, &probes).unwrap().unwrap();
        assert_eq!(
            (m.path.clone(), m.published, m.shown),
            (PathBuf::from("home/u"), (1000, 1000), (0, 0))
        );
        // Missing entries and entries behind a symlink are skipped.
        let far = [owner("gone", 5, 5), owner("out/secret", 5, 5)];
        assert_eq!(first_mismatch(&l, &far).unwrap(), None);
    }

    #[test]
    fn without_recorded_probes_only_kept_layers_are_checked_at_the_root() {
        assert_eq!(probes_of(None, true), vec![owner("", 0, 0)]);
        assert!(probes_of(None, false).is_empty());
        let rec = [owner("a", 1, 2)];
        assert_eq!(probes_of(Some(&rec), false), rec.to_vec());
    }

    #[test]
    fn the_status_names_the_repository_the_difference_and_the_fix() {
        assert_eq!(
            status_line(&BTreeMap::new()),
            "as published for every repository used so far"
        );
        let mut r = BTreeMap::new();
        r.insert(
            PathBuf::from("/cvmfs/test.local"),
            ClientReport {
                example: Mismatch {
                    path: "home/u".into(),
                    published: (1000, 1000),
                    shown: (4242, 4242),
                },
                layer: "ab".repeat(32),
                restored: 2,
                unrestorable: vec![],
            },
        );
        let s = status_line(&r);
        assert!(
            s.starts_with("/cvmfs/test.local: the client does not show"),
            "{s}"
        );
        assert!(s.contains("home/u of layer abab"), "{s}");
        assert!(
            s.contains("1000:1000 as published, shown as 4242:4242"),
            "{s}"
        );
        assert!(
            s.contains("fix: set CVMFS_CLAIM_OWNERSHIP=no in /etc/cvmfs/config.d/test.local.local"),
            "{s}"
        );
    }
}
