//! Driver options: the `cvmfs.<key>=<value>` strings containers/storage passes to
//! `Init` (the `cvmfs.` prefix is optional because storage passes both forms).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Every key we accept; anything else is rejected so a typo in storage.conf is
/// reported instead of silently ignored.
pub const KNOWN_KEYS: &[&str] = &[
    "repositories",
    "imagestore",
    "separate_image_store",
    "mountopt",
    "ignore_chown_errors",
    "force_mask",
    "repository_timeout",
    "use_flat",
    "whiteout_timeout",
    "owner_images",
    // crate::prefetch::PrefetchConfig::KEYS
    "prefetch",
    "prefetch_threads",
    "prefetch_max_bytes",
    "ducc_repositories",
    "ducc_images",
    "ducc_listing",
    "mount_program",
    "store_views",
];

/// Parsed driver options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// CVMFS repository roots where CVMFS layer records may point.
    pub repositories: Vec<PathBuf>,
    /// Additional read-only image store roots (graphroots), in the given order.
    pub image_stores: Vec<PathBuf>,
    /// The separate image store (storage.conf `imagestore`, `--image-store`):
    /// a writable graph root of its own whose `cvmfs/` home holds the image
    /// (read-only) layers this driver creates, as overlay keeps them in
    /// `<imagestore>/overlay`. Container layers stay in the driver home.
    pub separate_image_store: Option<PathBuf>,
    /// Extra overlay mount options applied to every mount.
    pub mount_options: Vec<String>,
    /// Ignore EPERM from chown while applying diffs.
    pub ignore_chown_errors: bool,
    /// Permission mask forced on applied files (as the overlay driver's `force_mask`).
    pub force_mask: Option<u32>,
    /// How long a repository may take to answer before it counts as
    /// unreachable. Slow answers (a first catalog load, an autofs mount) are
    /// waited for with progress lines on stderr; conditions an answer
    /// decides (nothing mounted, layer missing) are reported at once.
    pub repository_timeout: Duration,
    /// Mount a published image's flat root filesystem (when its top layer's
    /// record names one) instead of stacking its layers.
    pub use_flat: bool,
    /// How long building the whiteout layers of one stack may take (they
    /// come from records, and the build runs inside a podman call).
    pub whiteout_timeout: Duration,
    /// Restore owners with one metadata-only EROFS image per layer (where
    /// the kernel allows, see `crate::owner_mounts`) rather than with
    /// metacopy whiteout layers.
    pub owner_images: bool,
    /// background prefetch of start-up profiles.
    pub prefetch: crate::prefetch::PrefetchConfig,
    /// Repositories holding only what DUCC writes: the driver synthesises a
    /// store for each from DUCC's metadata (`ducc/`).
    pub ducc_repositories: Vec<PathBuf>,
    /// Which DUCC images to list: names, or prefixes ending in `*`; empty:
    /// all (bounds what podman parses per command to what the user uses).
    pub ducc_images: Vec<String>,
    /// List every DUCC image (`all`) or only the images asked for so far
    /// (`on-demand`, the default: containers/storage asks the driver on a
    /// miss, see `ducc::ondemand`).
    pub ducc_listing_all: bool,
    /// Not an option: the stores `ducc::add_ducc_stores` synthesised at
    /// `Init` (also in `image_stores`); their layers are completed on first
    /// use (`ducc::complete`).
    pub ducc_stores: Vec<PathBuf>,
    /// A FUSE program mounting the overlays instead of the kernel
    /// (fuse-overlayfs; as the overlay driver's `mount_program`).
    pub mount_program: Option<PathBuf>,
    /// Give containers/storage local copies of the repository image stores
    /// (`crate::mirror`: fewer round trips on a cold client); `false` hands
    /// it the repository's stores as they are (a long-running podman then
    /// sees a new publish without restarting).
    pub store_views: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            repositories: Vec::new(),
            image_stores: Vec::new(),
            separate_image_store: None,
            mount_options: Vec::new(),
            ignore_chown_errors: false,
            force_mask: None,
            repository_timeout: Duration::from_secs(60),
            use_flat: true,
            whiteout_timeout: Duration::from_secs(20),
            owner_images: true,
            prefetch: Default::default(),
            ducc_repositories: Vec::new(),
            ducc_images: Vec::new(),
            ducc_listing_all: false,
            ducc_stores: Vec::new(),
            mount_program: None,
            store_views: true,
        }
    }
}

/// Mount options that only set per-mount flags (see `mount::split_options`).
const FLAG_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "nodev",
    "nosuid",
    "noexec",
    "noatime",
    "nodiratime",
    "relatime",
    "strictatime",
];

/// Overlay options (with the values accepted) a caller or storage.conf may
/// set: the ones containers/storage's overlay driver itself adds or passes
/// through. Directories (`lowerdir`, `upperdir`, `workdir`, `datadir+`,
/// `lowerdir+`) are the driver's alone.
const OVERLAY_OPTIONS: &[(&str, &[&str])] = &[
    ("metacopy", &["on", "off"]),
    ("redirect_dir", &["on", "off", "follow", "nofollow"]),
    ("index", &["on", "off"]),
    ("xino", &["on", "off", "auto"]),
    ("volatile", &[]),
    ("userxattr", &[]),
];

/// SELinux label options (`label.FormatMountLabel` writes `context="<label>"`).
const LABEL_OPTIONS: &[&str] = &["context", "fscontext", "defcontext", "rootcontext"];

/// Why mount option `opt` is not one a caller may pass, if it is not: only
/// allow-listed flags, overlay options with known values and SELinux labels
/// (a label may contain commas only inside double quotes, as MCS categories
/// do: `context="system_u:object_r:container_file_t:s0:c1,c2"`).
pub fn mount_option_refusal(opt: &str) -> Option<String> {
    if FLAG_OPTIONS.contains(&opt) {
        return None;
    }
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    if LABEL_OPTIONS.contains(&key) {
        let v = value.unwrap_or("");
        let inner = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        let label_char = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
        let quoted = inner.len() + 2 == v.len();
        let ok = !inner.is_empty() && inner.chars().all(|c| label_char(c) || (quoted && c == ','));
        return (!ok).then(|| {
            format!("SELinux label {key}= must be a label ([A-Za-z0-9_.:-], commas only inside double quotes)")
        });
    }
    if opt.contains(',') {
        return Some("contains ',' (one option per entry)".into());
    }
    match OVERLAY_OPTIONS.iter().find(|(k, _)| *k == key) {
        Some((_, [])) if value.is_none() => None,
        Some((_, values)) if value.is_some_and(|v| values.contains(&v)) => None,
        Some((_, values)) => Some(format!(
            "accepted values: {}",
            if values.is_empty() {
                "none (a flag)".to_string()
            } else {
                values.join(", ")
            }
        )),
        None if key.starts_with("lowerdir")
            || key.starts_with("upperdir")
            || key.starts_with("workdir")
            || key.starts_with("datadir") =>
        {
            Some("directories are set by the driver itself".into())
        }
        None => Some(format!(
            "not an allowed mount option (allowed: {}, {}, {}=<label>)",
            FLAG_OPTIONS.join(", "),
            OVERLAY_OPTIONS
                .iter()
                .map(|(k, v)| if v.is_empty() {
                    k.to_string()
                } else {
                    format!("{k}={}", v.join("|"))
                })
                .collect::<Vec<_>>()
                .join(", "),
            LABEL_OPTIONS.join("|")
        )),
    }
}

/// Check the mount options a caller passed to `get` of `layer` against the
/// allow-list ([`mount_option_refusal`]); the error names option and layer.
pub fn check_caller_mount_options(layer: &str, options: &[String]) -> Result<()> {
    for o in options.iter().filter(|o| !o.is_empty()) {
        if let Some(why) = mount_option_refusal(o) {
            return Err(Error::invalid(format!(
                "layer {layer}: get: mount option {o:?} refused: {why}"
            )));
        }
    }
    Ok(())
}

fn parse_seconds(item: &str, value: &str) -> Result<Duration> {
    let secs: f64 = value
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
        .ok_or_else(|| bad(item, "expected a number of seconds in (0, 3600]"))?;
    Ok(Duration::from_secs_f64(secs))
}

fn bad(option: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("cvmfs: option {option:?}: {why}"))
}

fn absolute_dir(option: &str, value: &str) -> Result<PathBuf> {
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(bad(option, format!("{value:?} is not an absolute path")));
    }
    Ok(path)
}

fn parse_bool(option: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(option, "expected true or false")),
    }
}

fn parse_mask(option: &str, value: &str) -> Result<u32> {
    // Same spellings as the overlay driver's force_mask.
    let mask = match value {
        "shared" => 0o755,
        "private" => 0o700,
        v => u32::from_str_radix(v.trim_start_matches("0o"), 8)
            .map_err(|_| bad(option, "expected an octal mode, \"shared\" or \"private\""))?,
    };
    if mask > 0o7777 {
        return Err(bad(option, "mode has bits outside 07777"));
    }
    Ok(mask)
}

impl Options {
    /// Parse option strings; unknown keys and malformed values are errors that
    /// name the option.
    pub fn parse<I, S>(items: I) -> Result<Options>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut opts = Options::default();
        for item in items {
            let item = item.as_ref();
            let Some((raw_key, value)) = item.split_once('=') else {
                return Err(bad(item, "expected <key>=<value>"));
            };
            let key = raw_key.trim().to_ascii_lowercase();
            let key = key.strip_prefix("cvmfs.").unwrap_or(&key);
            let value = value.trim();
            match key {
                "repositories" => {
                    for repo in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let repo = absolute_dir(item, repo)?;
                        if !opts.repositories.contains(&repo) {
                            opts.repositories.push(repo);
                        }
                    }
                }
                "ducc_repositories" => {
                    for repo in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let repo = absolute_dir(item, repo)?;
                        if !opts.ducc_repositories.contains(&repo) {
                            opts.ducc_repositories.push(repo);
                        }
                    }
                }
                "ducc_images" => {
                    for p in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if p.len() > 512 || p.chars().any(char::is_control) {
                            return Err(bad(item, format!("{p:?}: not an image name or prefix*")));
                        }
                        opts.ducc_images.push(p.to_string());
                    }
                }
                "ducc_listing" => {
                    opts.ducc_listing_all = match value {
                        "all" => true,
                        "on-demand" => false,
                        _ => return Err(bad(item, "expected \"on-demand\" or \"all\"")),
                    }
                }
                "imagestore" => {
                    for store in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let store = absolute_dir(item, store)?;
                        if !opts.image_stores.contains(&store) {
                            opts.image_stores.push(store);
                        }
                    }
                }
                "mount_program" => {
                    let p = PathBuf::from(value);
                    if !p.is_absolute() || value.len() > 4096 {
                        return Err(bad(item, format!("{value:?}: not an absolute path")));
                    }
                    opts.mount_program = Some(p);
                }
                "separate_image_store" => {
                    opts.separate_image_store = Some(absolute_dir(item, value)?);
                }
                "mountopt" => {
                    for o in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if let Some(why) = mount_option_refusal(o) {
                            return Err(bad(item, format!("{o:?}: {why}")));
                        }
                        opts.mount_options.push(o.to_string());
                    }
                }
                "ignore_chown_errors" => opts.ignore_chown_errors = parse_bool(item, value)?,
                "force_mask" => opts.force_mask = Some(parse_mask(item, value)?),
                "use_flat" => opts.use_flat = parse_bool(item, value)?,
                "owner_images" => opts.owner_images = parse_bool(item, value)?,
                "store_views" => opts.store_views = parse_bool(item, value)?,
                "repository_timeout" => opts.repository_timeout = parse_seconds(item, value)?,
                "whiteout_timeout" => opts.whiteout_timeout = parse_seconds(item, value)?,
                "prefetch" | "prefetch_threads" | "prefetch_max_bytes" => opts
                    .prefetch
                    .set(key, value)
                    .map_err(|why| bad(item, why))?,
                _ => {
                    return Err(Error::invalid(format!(
                        "cvmfs: unknown option {:?} (known: {})",
                        raw_key.trim(),
                        KNOWN_KEYS
                            .iter()
                            .map(|k| format!("cvmfs.{k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn defaults_when_empty() {
        let o = Options::parse(Vec::<String>::new()).unwrap();
        assert_eq!(o, Options::default());
        assert_eq!(o.repository_timeout, Duration::from_secs(60));
        assert!(o.use_flat);
        assert!(o.store_views);
    }

    #[test]
    fn parses_every_key_with_and_without_prefix() {
        let o = Options::parse([
            "cvmfs.repositories=/cvmfs/a.cern.ch, /cvmfs/b.cern.ch",
            "imagestore=/s1",
            "cvmfs.imagestore=/s2",
            "cvmfs.separate_image_store=/images",
            "cvmfs.mountopt=nodev,metacopy=on",
            "ignore_chown_errors=true",
            "cvmfs.force_mask=0755",
            "cvmfs.repository_timeout=2.5",
            "cvmfs.use_flat=false",
            "cvmfs.whiteout_timeout=7",
            "cvmfs.store_views=false",
        ])
        .unwrap();
        assert_eq!(
            o.repositories,
            vec![
                PathBuf::from("/cvmfs/a.cern.ch"),
                PathBuf::from("/cvmfs/b.cern.ch")
            ]
        );
        assert_eq!(
            o.image_stores,
            vec![PathBuf::from("/s1"), PathBuf::from("/s2")]
        );
        assert_eq!(o.separate_image_store, Some(PathBuf::from("/images")));
        assert_eq!(o.mount_options, vec!["nodev", "metacopy=on"]);
        assert!(o.ignore_chown_errors);
        assert_eq!(o.force_mask, Some(0o755));
        assert_eq!(o.repository_timeout, Duration::from_millis(2500));
        assert!(!o.use_flat);
        assert_eq!(o.whiteout_timeout, Duration::from_secs(7));
        assert!(!o.store_views);
    }

    #[test]
    fn ducc_listing_is_on_demand_unless_all() {
        assert!(
            !Options::parse(Vec::<String>::new())
                .unwrap()
                .ducc_listing_all
        );
        assert!(
            Options::parse(["cvmfs.ducc_listing=all"])
                .unwrap()
                .ducc_listing_all
        );
        let o = Options::parse(["cvmfs.ducc_listing=on-demand"]).unwrap();
        assert!(!o.ducc_listing_all);
        let e = Options::parse(["cvmfs.ducc_listing=some"]).unwrap_err();
        assert!(e.to_string().contains("on-demand"), "{e}");
    }

    #[test]
    fn force_mask_names() {
        let o = Options::parse(["force_mask=private"]).unwrap();
        assert_eq!(o.force_mask, Some(0o700));
        let o = Options::parse(["force_mask=shared"]).unwrap();
        assert_eq!(o.force_mask, Some(0o755));
        let e = Options::parse(["force_mask=99"]).unwrap_err();
        assert!(e.to_string().contains("octal"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_and_known_keys_listed() {
        let e = Options::parse(["cvmfs.foo=bar"]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let msg = e.to_string();
        assert!(
            msg.starts_with("cvmfs: unknown option \"cvmfs.foo\""),
            "{msg}"
        );
        for k in KNOWN_KEYS {
            assert!(msg.contains(&format!("cvmfs.{k}")), "{msg} lacks {k}");
        }
        // Other drivers' options are not ours either.
        let e = Options::parse(["overlay.mountopt=nodev"]).unwrap_err();
        assert!(e.to_string().contains("\"overlay.mountopt\""), "{e}");
    }

    #[test]
    fn malformed_values_are_rejected_with_the_option_named() {
        for (opt, needle) in [
            ("cvmfs.repositories=relative/path", "not an absolute path"),
            ("cvmfs.ignore_chown_errors=maybe", "true or false"),
            ("cvmfs.use_flat=sometimes", "true or false"),
            ("cvmfs.repository_timeout=0", "seconds"),
            ("cvmfs.repository_timeout=abc", "seconds"),
            ("cvmfs.mountopt=upperdir=/x", "set by the driver"),
            ("cvmfs.mountopt=nodev,index=maybe", "accepted values"),
            ("cvmfs.mountopt=lowerdir+=/", "set by the driver"),
            ("cvmfs.repositories", "<key>=<value>"),
        ] {
            let e = Options::parse([opt]).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument);
            assert!(e.to_string().contains(opt), "{e} should name {opt}");
            assert!(e.to_string().contains(needle), "{e} should say {needle}");
        }
    }

    #[test]
    fn caller_mount_options_are_allow_listed() {
        let ok = |o: &[&str]| {
            let v: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            check_caller_mount_options("L", &v)
        };
        ok(&[
            "ro",
            "nodev",
            "nosuid",
            "noexec",
            "metacopy=on",
            "volatile",
            "",
            "context=\"system_u:object_r:container_file_t:s0:c1,c2\"",
            "context=system_u:object_r:container_file_t:s0",
        ])
        .unwrap();
        for (o, needle) in [
            ("lowerdir=/etc", "set by the driver"),
            ("upperdir=/tmp/x", "set by the driver"),
            ("workdir=/tmp/w", "set by the driver"),
            ("lowerdir+=/", "set by the driver"),
            ("datadir+=/", "set by the driver"),
            ("ro,lowerdir=/", "contains ','"),
            ("context=a,lowerdir=/", "SELinux label"),
            ("context=\"a\",lowerdir=/\"", "SELinux label"),
            ("metacopy=yes", "accepted values"),
            ("volatile=1", "accepted values"),
            ("bind", "not an allowed mount option"),
            ("source=/dev/sda", "not an allowed mount option"),
        ] {
            let e = ok(&["ro", o]).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{o}");
            let msg = e.to_string();
            assert!(msg.contains(needle), "{o}: {msg}");
            assert!(msg.contains(&format!("{o:?}")), "{o}: {msg}");
            assert!(msg.contains("layer L"), "{o}: {msg}");
        }
    }
}
