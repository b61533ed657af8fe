//! Rootless podman: what changes when the driver runs inside a user namespace.
//!
//! Rootless podman calls the driver from inside its user namespace, where the
//! process is "root" only over the IDs that namespace maps. Measured on this
//! project's machines (kernel 6.18, `hack/measure-rootless.sh`,
//! docs/rootless.md):
//!
//! * kernel overlay mounts there only honour `user.overlay.*` xattrs (mount
//!   option `userxattr`); `trusted.overlay.*` can be neither set nor read, so
//!   opaque directories of whiteout layers and of local layers are marked
//!   with `user.overlay.opaque`. 0/0 whiteout devices can be made without
//!   privilege, so they stay as they are;
//! * `metacopy=on` is refused together with `userxattr`, so the rootful
//!   restoration of lost owners (metadata-only copies) is not available;
//! * repository files owned by IDs the namespace does not map (host root,
//!   typically) show as the overflow ID 65534, and ID-mapped mounts that would
//!   map them need privilege over the repository's filesystem: `podman info`
//!   says so ([`status`]).
//!
//! Detection reads `/proc/self/uid_map` once: the initial namespace maps the
//! whole ID range onto itself (`0 0 4294967295`); anything else is rootless.
//!
//! **ID-mapped views.** The privileged helper `cvmfs-idmap-view`
//! (`helper/`, installed setuid root like `newuidmap`) attaches, in podman's
//! mount namespace, a read-only clone of a repository's mount ID-mapped
//! through podman's own user namespace, at
//! `$XDG_RUNTIME_DIR/cvmfs-idmapped/<escaped repository path>` ([`view_name`]):
//! there on-disk owner N shows as N, exactly as rootful. Records name the
//! repository by its path, so [`find_views`] tells the layout which
//! repositories to read through a view instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The opaque-directory xattr overlayfs reads in the initial namespace.
pub const TRUSTED_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The opaque-directory xattr overlayfs reads with `userxattr`.
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
/// The overflow ID the kernel shows for an unmapped owner
/// (`/proc/sys/kernel/overflowuid`'s default).
pub const OVERFLOW_ID: u32 = 65534;
/// Longest `uid_map` read (the kernel allows 340 lines of at most ~33 bytes).
const MAX_MAP_BYTES: usize = 16 * 1024;

/// One line of `/proc/self/{uid,gid}_map`: `inside` .. `inside+count` in this
/// namespace are `outside` .. in the parent namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// What the driver knows of the user namespace it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
}

impl Namespace {
    /// Whether these maps describe a namespace other than the initial one.
    pub fn is_rootless(&self) -> bool {
        let initial = [IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }];
        self.uid_map != initial
    }

    /// Whether parent-namespace uid `id` is mapped here.
    pub fn maps_host_uid(&self, id: u32) -> bool {
        self.uid_map
            .iter()
            .any(|r| id >= r.outside && id - r.outside < r.count)
    }
}

/// Parse a `uid_map`/`gid_map` text: lines of three decimal numbers; bounded.
pub fn parse_id_map(text: &str) -> Result<Vec<IdRange>, String> {
    if text.len() > MAX_MAP_BYTES {
        return Err(format!("ID map of {} bytes is too long", text.len()));
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let n: Vec<u32> = line
                .split_whitespace()
                .map(|f| f.parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("ID map line '{line}': {e}"))?;
            match n[..] {
                [inside, outside, count] => Ok(IdRange {
                    inside,
                    outside,
                    count,
                }),
                _ => Err(format!("ID map line '{line}': not three numbers")),
            }
        })
        .collect()
}

fn read_map(path: &str) -> Vec<IdRange> {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MAP_BYTES as u64 + 1).read_to_string(&mut text));
    match read
        .map_err(|e| e.to_string())
        .and_then(|_| parse_id_map(&text))
    {
        Ok(m) => m,
        // No procfs: behave as before this module existed (rootful).
        Err(_) => vec![IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }],
    }
}

/// The namespace of this process, read once (podman never changes it under
/// a running driver).
pub fn namespace() -> &'static Namespace {
    static NS: OnceLock<Namespace> = OnceLock::new();
    NS.get_or_init(|| Namespace {
        uid_map: read_map("/proc/self/uid_map"),
        gid_map: read_map("/proc/self/gid_map"),
    })
}

/// Whether the driver runs rootless (inside a user namespace).
pub fn active() -> bool {
    namespace().is_rootless()
}

/// The xattr that marks a directory opaque for the overlay mounts this
/// process makes.
pub fn opaque_xattr() -> &'static str {
    if active() {
        USER_OPAQUE_XATTR
    } else {
        TRUSTED_OPAQUE_XATTR
    }
}

/// Suffix of whiteout-layer cache keys: their xattr namespace differs.
pub fn aux_key_suffix() -> &'static str {
    if active() {
        "-ux"
    } else {
        ""
    }
}

/// Mount options for an overlay made in this namespace: `userxattr` when
/// rootless, and never `metacopy=on` there (the kernel refuses the pair).
pub fn adjust_mount_options(opts: &mut Vec<String>, rootless: bool) {
    if !rootless {
        return;
    }
    opts.retain(|o| o != "metacopy=on");
    if !opts.iter().any(|o| o == "userxattr") {
        opts.push("userxattr".into());
    }
}

/// The owner to give a directory the driver makes to look like `uid`:`gid`
/// (as seen here): a new local layer's root that starts as its parent's,
/// a whiteout-layer directory copying a layer's. Rootless, an owner that is
/// an unmapped host ID shows as the overflow ID, which cannot be given to a
/// file (EINVAL when the namespace maps only the user); such directories
/// become the namespace root's, as an image's directories nearly always are,
/// so that container root may create files in them.
pub fn settable_owner(uid: u32, gid: u32) -> (u32, u32) {
    root_owner_in(active(), uid, gid)
}

fn root_owner_in(rootless: bool, uid: u32, gid: u32) -> (u32, u32) {
    if !rootless {
        return (uid, gid);
    }
    let fix = |id| if id == OVERFLOW_ID { 0 } else { id };
    (fix(uid), fix(gid))
}

/// Whether xattr `name` is overlayfs' own for mounts made here (never copied
/// from a layer into a whiteout layer).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || (active() && name.starts_with(b"user.overlay."))
}

/// Directory name of a repository's view: its absolute path without the
/// leading `/`, with `%` and `/` percent-encoded (reversible, so two
/// repositories never share a view). The helper's setup script
/// (`hack/cvmfs-rootless-setup`) spells it the same way.
pub fn view_name(repository: &Path) -> String {
    let s = repository.to_string_lossy();
    s.trim_start_matches('/')
        .replace('%', "%25")
        .replace('/', "%2F")
}

/// Where the views are attached (rootless only): `$XDG_RUNTIME_DIR/cvmfs-idmapped`.
/// Not under the graphroot or the runroot, which `podman system reset`
/// removes recursively: a read-only mount there would make it fail.
pub fn views_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let run = std::env::var_os("XDG_RUNTIME_DIR")?;
        let run = PathBuf::from(run);
        (active() && run.is_absolute()).then(|| run.join("cvmfs-idmapped"))
    })
    .as_deref()
}

/// Whether `path` lies in an ID-mapped view.
pub fn is_in_view(path: &Path) -> bool {
    views_dir().is_some_and(|d| path.starts_with(d))
}

/// Whether `path` is the root of a mount (not a symlink to one).
fn is_mount_root(path: &Path) -> bool {
    use rustix::fs::{statx, AtFlags, FileType, StatxAttributes, StatxFlags, CWD};
    match statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Ok(x) => {
            FileType::from_raw_mode(x.stx_mode.into()) == FileType::Directory
                && x.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
                && x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        Err(_) => false,
    }
}

/// The repositories (of `repositories`) that have an ID-mapped view in
/// `dir`, each with its view. A view is a mount attached there; anything
/// else (an empty directory left after the namespace was made anew) is
/// ignored, and the repository is read directly.
pub fn find_views(dir: &Path, repositories: &[PathBuf]) -> BTreeMap<PathBuf, PathBuf> {
    repositories
        .iter()
        .filter_map(|r| {
            let view = dir.join(view_name(r));
            is_mount_root(&view).then(|| (r.clone(), view))
        })
        .collect()
}

/// The root service that attaches views on request (`cvmfs-idmap-view
/// --serve` behind a socket, helper/systemd/): `CVMFS_IDMAP_VIEW_SOCKET`, or
/// `/run/cvmfs-idmap-view.sock`.
pub fn view_socket() -> PathBuf {
    std::env::var_os("CVMFS_IDMAP_VIEW_SOCKET")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/run/cvmfs-idmap-view.sock"))
}

/// The automatic set-up: asks the service at `socket` for a view in `dir`
/// of each repository that has none. The driver runs inside podman's user
/// namespace, where the setuid helper cannot run (the kernel ignores the
/// setuid bit of a program whose owner the namespace does not map); a
/// connection to a root service's socket crosses no namespace, and the
/// service checks the connecting process exactly as the setuid form checks
/// its caller. Nothing happens without a service (no socket); a repository
/// the service does not list is skipped quietly. Returns what went wrong
/// otherwise, one message a repository.
pub fn request_missing_views(dir: &Path, repositories: &[PathBuf], socket: &Path) -> Vec<String> {
    if !socket.exists() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for repository in repositories {
        let target = dir.join(view_name(repository));
        if is_mount_root(&target) {
            continue;
        }
        match request_view(socket, repository, &target) {
            Ok(()) => {}
            Err(e) if e.contains("is not listed in") || e.contains("already a mount point") => {}
            Err(e) => problems.push(format!(
                "cvmfs: no ID-mapped view of {} from the view service {}: {e} (files owned by IDs this namespace does not map show as {OVERFLOW_ID})",
                repository.display(),
                socket.display()
            )),
        }
    }
    problems
}

/// Longest answer read from the view service.
const MAX_ANSWER_BYTES: u64 = 8 * 1024;
/// How long the view service may take to answer (it clones one mount).
const VIEW_SERVICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One request to the view service: `REPOSITORY\0TARGET\0`, answered by
/// `ok: ...` or `error: ...`.
fn request_view(socket: &Path, repository: &Path, target: &Path) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect: {e}"))?;
    conn.set_read_timeout(Some(VIEW_SERVICE_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(VIEW_SERVICE_TIMEOUT)))
        .map_err(|e| format!("cannot set a timeout: {e}"))?;
    let mut request = Vec::new();
    for part in [repository.as_os_str(), target.as_os_str()] {
        request.extend_from_slice(part.as_bytes());
        request.push(0);
    }
    conn.write_all(&request)
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = String::new();
    conn.take(MAX_ANSWER_BYTES)
        .read_to_string(&mut answer)
        .map_err(|e| format!("no answer within {VIEW_SERVICE_TIMEOUT:?}: {e}"))?;
    let answer = answer.trim_end();
    if answer.starts_with("ok: ") {
        Ok(())
    } else if let Some(why) = answer.strip_prefix("error: ") {
        Err(why.to_string())
    } else {
        Err(format!(
            "unexpected answer {:?}",
            answer.chars().take(200).collect::<String>()
        ))
    }
}

/// What `podman info` reports about owners when rootless.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnersReport {
    /// The FUSE mount program in use and why (`None`: kernel overlay).
    pub mount_program: Option<String>,
    /// Repositories read through an ID-mapped view, with the view.
    pub viewed: BTreeMap<PathBuf, PathBuf>,
    /// Repositories read directly, with the owner of their root as seen
    /// here (`None`: it did not answer in time).
    pub direct: Vec<(PathBuf, Option<u32>)>,
    /// CVMFS layers used so far from repositories read directly.
    pub affected_layers: Vec<String>,
}

/// `podman info` entries for the rootless path (nothing when rootful):
/// `Rootless` names the mount path, the ID map and the views in use;
/// `Rootless Ownership` says whether owners are right and, where not, which
/// repositories and layers are affected.
pub fn status(ns: &Namespace, report: &OwnersReport) -> Vec<(String, String)> {
    if !ns.is_rootless() {
        return Vec::new();
    }
    let map = ns
        .uid_map
        .iter()
        .map(|r| format!("{}->{}+{}", r.inside, r.outside, r.count))
        .collect::<Vec<_>>()
        .join(",");
    let views = if report.viewed.is_empty() {
        "none (cvmfs-rootless-setup attaches them; docs/rootless.md)".to_string()
    } else {
        report
            .viewed
            .iter()
            .map(|(r, v)| format!("{} at {}", r.display(), v.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mounts = match &report.mount_program {
        Some(program) => format!("FUSE mount program {program} in the user namespace (whiteout layers and raw .wh.* files)"),
        None => "kernel overlay in the user namespace (userxattr, user.overlay.* whiteout layers, no metacopy)".into(),
    };
    let path = format!("{mounts}; uid map {map}; ID-mapped views: {views}");
    vec![
        ("Rootless".into(), path),
        ("Rootless Ownership".into(), owners_text(ns, report)),
    ]
}

fn owners_text(ns: &Namespace, report: &OwnersReport) -> String {
    let mapped: u64 = ns.uid_map.iter().map(|r| u64::from(r.count)).sum();
    let single = if mapped <= 1 {
        format!("single-ID mapping (no /etc/subuid entry for this user): only files owned by host root can show their owner (through a view); every other owner shows as {OVERFLOW_ID}. ")
    } else {
        String::new()
    };
    let unmapped: Vec<String> = report
        .direct
        .iter()
        .filter(|(_, o)| *o == Some(OVERFLOW_ID))
        .map(|(r, _)| r.display().to_string())
        .collect();
    let mut parts = Vec::new();
    if !unmapped.is_empty() {
        let layers = if report.affected_layers.is_empty() {
            "none used yet".to_string()
        } else {
            report.affected_layers.join(",")
        };
        parts.push(format!(
            "wrong for every CVMFS layer of {}: files owned by host IDs this namespace does not map show as {OVERFLOW_ID}:{OVERFLOW_ID} and container root cannot modify them (no ID-mapped view: run cvmfs-rootless-setup, docs/rootless.md); layers affected so far: {layers}",
            unmapped.join(",")
        ));
    }
    for (r, owner) in &report.direct {
        match owner {
            Some(OVERFLOW_ID) => {}
            Some(o) => parts.push(format!(
                "{}: files show the owners this namespace maps (its root as {o}); owners recorded in ownership metadata are not restored (that needs metacopy)",
                r.display()
            )),
            None => parts.push(format!("{}: unknown (its root did not answer)", r.display())),
        }
    }
    if !report.viewed.is_empty() {
        parts.push(format!(
            "as in the image for {} (ID-mapped view)",
            report
                .viewed
                .keys()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if parts.is_empty() {
        parts.push("unknown (no repository configured)".into());
    }
    format!("{single}{}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(uid_map: &str) -> Namespace {
        Namespace {
            uid_map: parse_id_map(uid_map).unwrap(),
            gid_map: parse_id_map(uid_map).unwrap(),
        }
    }

    #[test]
    fn the_initial_namespace_is_rootful_anything_else_rootless() {
        assert!(!ns("         0          0 4294967295\n").is_rootless());
        let podman = ns("0 1001 1\n1 3100000 65536\n");
        assert!(podman.is_rootless());
        assert!(podman.maps_host_uid(1001));
        assert!(podman.maps_host_uid(3100000 + 65535));
        assert!(!podman.maps_host_uid(0));
        assert!(!podman.maps_host_uid(3100000 + 65536));
    }

    #[test]
    fn hostile_maps_are_refused() {
        assert!(parse_id_map("0 0").is_err());
        assert!(parse_id_map("0 0 1 2").is_err());
        assert!(parse_id_map("a b c").is_err());
        assert!(parse_id_map("0 0 99999999999").is_err());
        assert!(parse_id_map(&"0 0 1\n".repeat(4000)).is_err());
    }

    #[test]
    fn rootless_mounts_get_userxattr_and_lose_metacopy() {
        let mut o = vec!["nodev".to_string(), "metacopy=on".to_string()];
        adjust_mount_options(&mut o, false);
        assert_eq!(o, ["nodev", "metacopy=on"]);
        adjust_mount_options(&mut o, true);
        assert_eq!(o, ["nodev", "userxattr"]);
        adjust_mount_options(&mut o, true);
        assert_eq!(o, ["nodev", "userxattr"], "userxattr only once");
    }

    #[test]
    fn unmapped_parent_roots_become_the_namespace_roots_only_rootless() {
        assert_eq!(
            root_owner_in(false, OVERFLOW_ID, OVERFLOW_ID),
            (OVERFLOW_ID, OVERFLOW_ID)
        );
        assert_eq!(root_owner_in(true, OVERFLOW_ID, OVERFLOW_ID), (0, 0));
        assert_eq!(root_owner_in(true, 1000, OVERFLOW_ID), (1000, 0));
        assert_eq!(root_owner_in(true, 1000, 100), (1000, 100));
    }

    #[test]
    fn status_names_the_path_and_says_when_owners_are_wrong() {
        let direct = |o| OwnersReport {
            direct: vec![(PathBuf::from("/cvmfs/r"), Some(o))],
            ..OwnersReport::default()
        };
        assert!(status(&ns("0 0 4294967295"), &direct(0)).is_empty());
        let podman = ns("0 1001 1\n1 3100000 65536");
        let s = status(&podman, &direct(OVERFLOW_ID));
        assert_eq!(s[0].0, "Rootless");
        assert!(s[0].1.contains("userxattr") && s[0].1.contains("0->1001+1"));
        assert!(s[0].1.contains("views: none"), "{}", s[0].1);
        assert_eq!(s[1].0, "Rootless Ownership");
        assert!(
            s[1].1.starts_with("wrong")
                && s[1].1.contains("65534")
                && s[1].1.contains("every CVMFS layer of /cvmfs/r")
                && s[1].1.contains("none used yet"),
            "{}",
            s[1].1
        );
        let own = status(&ns("0 1001 1\n1 3100000 65536"), &direct(0));
        assert!(!own[1].1.contains("wrong"), "{}", own[1].1);
    }

    #[test]
    fn status_with_views_names_them_and_the_layers_still_affected() {
        let mut report = OwnersReport {
            direct: vec![(PathBuf::from("/cvmfs/other"), Some(OVERFLOW_ID))],
            affected_layers: vec!["abc".into()],
            ..OwnersReport::default()
        };
        report
            .viewed
            .insert("/cvmfs/r".into(), "/run/u/cvmfs-idmapped/cvmfs%2Fr".into());
        let s = status(&ns("0 1001 1\n1 3100000 65536"), &report);
        assert!(s[0]
            .1
            .contains("/cvmfs/r at /run/u/cvmfs-idmapped/cvmfs%2Fr"));
        assert!(s[1].1.contains("of /cvmfs/other") && s[1].1.contains("so far: abc"));
        assert!(
            s[1].1.contains("as in the image for /cvmfs/r"),
            "{}",
            s[1].1
        );
        report.direct.clear();
        let single = status(&ns("0 1001 1"), &report);
        assert!(
            single[1]
                .1
                .starts_with("single-ID mapping (no /etc/subuid entry"),
            "{}",
            single[1].1
        );
    }

    #[test]
    fn view_names_are_reversible_and_distinct() {
        assert_eq!(
            view_name(Path::new("/cvmfs/unpacked.cern.ch")),
            "cvmfs%2Funpacked.cern.ch"
        );
        assert_ne!(
            view_name(Path::new("/a/b%2Fc")),
            view_name(Path::new("/a/b/c"))
        );
        assert_eq!(view_name(Path::new("/a/b%2Fc")), "a%2Fb%252Fc");
    }

    #[test]
    fn only_mount_roots_count_as_views() {
        let dir = std::env::temp_dir().join(format!("rl-views-{}", std::process::id()));
        let repo = PathBuf::from("/srv/repo");
        std::fs::create_dir_all(dir.join(view_name(&repo))).unwrap();
        // A directory left behind, not a mount: the repository is read directly.
        assert!(find_views(&dir, std::slice::from_ref(&repo)).is_empty());
        // /proc is a mount root wherever these tests run.
        let proc_root = PathBuf::from("/");
        let views = find_views(Path::new("/"), &[PathBuf::from("/proc")]);
        assert_eq!(views.get(Path::new("/proc")), Some(&proc_root.join("proc")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stand-in view service on a socket in a fresh directory: answers each
    /// connection with `answer(request)`; returns the socket and the requests.
    fn fake_service(
        answer: fn(&[u8]) -> String,
        connections: usize,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        std::thread::JoinHandle<Vec<Vec<u8>>>,
    ) {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for _ in 0..connections {
                let (mut c, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while request.iter().filter(|b| **b == 0).count() < 2 {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0, "request ended early: {request:?}");
                    request.extend_from_slice(&buf[..n]);
                }
                c.write_all(answer(&request).as_bytes()).unwrap();
                requests.push(request);
            }
            requests
        });
        (dir, socket, server)
    }

    #[test]
    fn the_view_service_gets_repository_and_target_and_its_refusals_are_reported() {
        let (tmp, socket, server) = fake_service(
            |req| {
                if req.starts_with(b"/cvmfs/listed\0") {
                    "ok: view attached\n".into()
                } else if req.starts_with(b"/cvmfs/unlisted\0") {
                    "error: repository /cvmfs/unlisted is not listed in /etc/x: refused\n".into()
                } else {
                    "error: target: not a directory owned by you\n".into()
                }
            },
            3,
        );
        let views = tmp.path().join("views");
        let repos = [
            PathBuf::from("/cvmfs/listed"),
            PathBuf::from("/cvmfs/unlisted"),
            PathBuf::from("/cvmfs/other"),
        ];
        let problems = request_missing_views(&views, &repos, &socket);
        let requests = server.join().unwrap();
        let target = views.join(view_name(&repos[0]));
        let mut want = b"/cvmfs/listed\0".to_vec();
        want.extend_from_slice(target.as_os_str().as_encoded_bytes());
        want.push(0);
        assert_eq!(requests[0], want);
        // The target exists for the service to check, owned by us, 0700.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o700);
        // Unlisted: quiet; any other refusal: one message naming the repository.
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("/cvmfs/other"), "{}", problems[0]);
        assert!(
            problems[0].contains("not a directory owned by you"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn no_view_service_means_no_request_and_a_garbled_answer_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let none = tmp.path().join("absent.sock");
        let repos = [PathBuf::from("/cvmfs/r")];
        assert!(request_missing_views(&tmp.path().join("v"), &repos, &none).is_empty());
        assert!(
            !tmp.path().join("v").exists(),
            "nothing is created without a service"
        );

        let (tmp2, socket, server) = fake_service(|_| "whatever\n".into(), 1);
        let problems = request_missing_views(&tmp2.path().join("v"), &repos, &socket);
        server.join().unwrap();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("unexpected answer"), "{}", problems[0]);
    }
}
