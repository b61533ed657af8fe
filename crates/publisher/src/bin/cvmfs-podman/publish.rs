//! `cvmfs-podman publish`: the arguments, the source and options they make,
//! the CVMFS transaction around the work, and the summary printed after it.
//! The publishing itself is `cvmfs_publisher::publish`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use cvmfs_publisher::publish::{self, Options, Summary};
use cvmfs_publisher::registry::TransferLimits;
use cvmfs_publisher::source::{self, ImageName, Platform, RegistryOptions, Source};
use cvmfs_publisher::{Error, Result};

use crate::progress::Progress;

// `check` names these by their old place in the binary.
pub use cvmfs_publisher::blob::sha256_hex;

#[derive(Args, Clone)]
pub struct PublishArgs {
    image: String,
    /// The repository directory (e.g. /cvmfs/unpacked.example.org)
    #[arg(long)]
    repo: PathBuf,
    /// Publish under this name (registry/repository:tag) instead of the source's
    #[arg(long)]
    name: Option<String>,
    /// os/arch[/variant] to pick from a multi-platform index (default: this host)
    #[arg(long)]
    platform: Option<String>,
    /// Verify registry TLS certificates; false also allows plain http
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// Time every registry transfer (manifest, config, layer, token) gets
    /// besides its size at --transfer-min-rate; a transfer that takes longer
    /// fails (e.g. 90, 90s, 5m; at least 1s)
    #[arg(long, env = "CVMFS_PODMAN_TRANSFER_TIMEOUT", default_value = "60s",
          value_parser = parse_duration, verbatim_doc_comment)]
    transfer_timeout: Duration,
    /// Slowest accepted registry transfer rate in bytes per second (k, M,
    /// G: powers of 1024): a blob of N bytes must arrive within
    /// --transfer-timeout + N / rate
    #[arg(long, env = "CVMFS_PODMAN_TRANSFER_MIN_RATE", default_value = "100k",
          value_parser = parse_rate, verbatim_doc_comment)]
    transfer_min_rate: u64,
    /// The absolute path podman will see the repository at (default: --repo)
    #[arg(long)]
    recorded_repository: Option<PathBuf>,
    /// Layers unpacked in parallel
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
    /// Refuse device nodes in layers (always on when not running as root)
    #[arg(long)]
    no_devices: bool,
    /// Wrap the work in `cvmfs_server transaction`/`publish` of this repository
    #[arg(long)]
    cvmfs_transaction: Option<String>,
    /// Also publish this start-up profile (recorded by `profile record` for
    /// this image)
    #[arg(long)]
    profile_from: Option<PathBuf>,
}

/// `90`, `90s`, `5m`, `1h` (at least one second, at most a day).
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let (num, unit) = match s.trim().strip_suffix(['s', 'm', 'h']) {
        Some(n) => (n, &s.trim()[n.len()..]),
        None => (s.trim(), "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected seconds, e.g. 90, 90s, 5m or 1h"))?;
    let secs = n * match unit {
        "m" => 60.0,
        "h" => 3600.0,
        _ => 1.0,
    };
    if !(1.0..=86400.0).contains(&secs) {
        return Err(format!("{s:?}: must be between 1s and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `102400`, `100k`, `1M`, `1G` bytes per second (at least 1).
fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected bytes per second, e.g. 102400, 100k or 1M"))?;
    match n.checked_mul(mult) {
        Some(r) if r >= 1 => Ok(r),
        _ => Err(format!(
            "{s:?}: must be between 1 and 2^64-1 bytes per second"
        )),
    }
}

/// `cvmfs-podman publish`.
pub fn run(args: &PublishArgs) -> Result<()> {
    let Some(repository) = args.cvmfs_transaction.as_deref() else {
        return publish_image(args);
    };
    // Staged beside the repository, then one `cvmfs_server ingest`
    // (cvmfs_server.rs); the records name the repository, not the stage.
    let quiet = args.quiet || args.json;
    cvmfs_publisher::cvmfs_server::publish_via_ingest(repository, &args.repo, quiet, |staged| {
        let mut staged_args = args.clone();
        staged_args.repo = staged.to_path_buf();
        staged_args.recorded_repository = Some(
            args.recorded_repository
                .clone()
                .unwrap_or_else(|| args.repo.clone()),
        );
        publish_image(&staged_args)
    })
    .map(drop)
}

/// The source the arguments name.
fn open_source(args: &PublishArgs) -> Result<Box<dyn Source>> {
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let registry = RegistryOptions {
        tls_verify: args.tls_verify,
        limits: TransferLimits {
            floor: args.transfer_timeout,
            min_rate: args.transfer_min_rate,
        },
    };
    source::open(&args.image, platform, registry)
}

/// The name to publish under: `--name`, else the one the source carries
/// (RepoTags, a directory name).
fn target_name(args: &PublishArgs, src: &dyn Source) -> Result<ImageName> {
    match &args.name {
        Some(n) => ImageName::parse(n),
        None => src.default_name().map_err(|e| {
            e.context(format!(
                "image {}: the name it carries (give --name to publish it under another)",
                src.describe()
            ))
        }),
    }
}

/// The publish options from the arguments; creates the repository directory.
fn options(args: &PublishArgs, name: ImageName) -> Result<Options> {
    let repo = &args.repo;
    std::fs::create_dir_all(repo).map_err(|e| Error::io(repo, e))?;
    let abs = std::fs::canonicalize(repo).map_err(|e| Error::io(repo, e))?;
    let recorded = match &args.recorded_repository {
        Some(r) if r.is_absolute() => r.display().to_string(),
        Some(r) => {
            return Err(Error::msg(format!(
                "--recorded-repository {}: must be absolute",
                r.display()
            )))
        }
        None => abs.display().to_string(),
    };
    Ok(Options {
        repo: abs,
        recorded_repo: recorded,
        name,
        jobs: args.jobs,
        progress: Arc::new(Progress::new(args.quiet || args.json)),
        no_devices: args.no_devices || !rustix::process::geteuid().is_root(),
    })
}

fn publish_image(args: &PublishArgs) -> Result<()> {
    let src = open_source(args)?;
    let name = target_name(args, src.as_ref())?;
    let opts = options(args, name)?;
    // the name it was to have, besides the source the error names
    let full_name = opts.name.full();
    let s = publish::publish(src.as_ref(), &opts)
        .map_err(|e| e.context(format!("publishing as {full_name}")))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("serializable")
        );
    } else if !args.quiet {
        print_summary(&s);
    }
    match &args.profile_from {
        Some(f) => crate::profile_cmd::publish_file(&args.repo, f, Some(&s.image_id)),
        None => Ok(()),
    }
}

/// Every bar is finished: a plain line.
fn print_summary(s: &Summary) {
    eprintln!(
        "published {} as {} (image {}): {} layers written, {} skipped, flat {}, {:.1} MB in {:.2}s",
        s.image,
        s.name,
        &s.image_id[..12],
        s.layers_written,
        s.layers_skipped,
        s.flat,
        s.uncompressed_bytes_written as f64 / 1e6,
        s.seconds
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_limits_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        for bad in ["0.5s", "0", "2d", "-1", "", "25h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("100k").unwrap(), 102_400);
        assert_eq!(parse_rate("1M").unwrap(), 1 << 20);
        assert_eq!(parse_rate("512").unwrap(), 512);
        for bad in ["0", "k", "-5", "99999999999999999999G", "1.5M"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
