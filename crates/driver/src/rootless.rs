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

/// `podman info` entries for the rootless path (nothing when rootful).
/// `repo_owner_seen` is the owner of the repositories' root as this
/// namespace sees it (the overflow ID when the host owner is unmapped).
pub fn status(ns: &Namespace, repo_owner_seen: Option<u32>) -> Vec<(String, String)> {
    if !ns.is_rootless() {
        return Vec::new();
    }
    let map = ns
        .uid_map
        .iter()
        .map(|r| format!("{}->{}+{}", r.inside, r.outside, r.count))
        .collect::<Vec<_>>()
        .join(",");
    let path = format!(
        "kernel overlay in the user namespace (userxattr, user.overlay.* whiteout layers, no metacopy); uid map {map}"
    );
    let owners = match repo_owner_seen {
        Some(OVERFLOW_ID) => format!(
            "wrong for every CVMFS layer: the repositories' files are owned by a host ID this namespace does not map, so they show as {OVERFLOW_ID}:{OVERFLOW_ID} and container root cannot modify them (ID-mapped mounts need real root; docs/rootless.md)"
        ),
        Some(owner) => format!(
            "repository files show as owned by {owner} here; owners recorded in ownership metadata are not restored (that needs metacopy)"
        ),
        None => "unknown (no repository configured)".into(),
    };
    vec![
        ("Rootless".into(), path),
        ("Rootless Ownership".into(), owners),
    ]
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
        assert!(status(&ns("0 0 4294967295"), Some(0)).is_empty());
        let s = status(&ns("0 1001 1\n1 3100000 65536"), Some(OVERFLOW_ID));
        assert_eq!(s[0].0, "Rootless");
        assert!(s[0].1.contains("userxattr") && s[0].1.contains("0->1001+1"));
        assert_eq!(s[1].0, "Rootless Ownership");
        assert!(
            s[1].1.starts_with("wrong")
                && s[1].1.contains("65534")
                && s[1].1.contains("every CVMFS layer")
        );
        let own = status(&ns("0 1001 1"), Some(0));
        assert!(!own[1].1.starts_with("wrong"), "{}", own[1].1);
    }
}
