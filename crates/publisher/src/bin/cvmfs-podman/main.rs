//! `cvmfs-podman`: publish container images into a CVMFS repository (or any
//! directory standing in for one) as a DUCC-compatible tree plus a read-only image
//! store the `cvmfs` graph driver serves to podman, and check such trees.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cvmfs_publisher::Error;

mod check;
mod profile_cmd; // H-profiles hook
mod progress;
mod publish;
mod registry;
mod source;
mod testimg;

use source::{ImageName, Platform, Source};

#[derive(Parser)]
#[command(name = "cvmfs-podman", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish an image: docker://host[:port]/name:tag, oci:<dir>[:tag] or docker-archive:<file>
    Publish {
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
        /// H-profiles hook: also publish this start-up profile (recorded by
        /// `profile record` for this image)
        #[arg(long)]
        profile_from: Option<PathBuf>,
    },
    /// (testing aid) Build an OCI layout from layer spec files or raw .tar files
    #[command(hide = true)]
    MakeOci {
        dir: PathBuf,
        #[arg(long, default_value = "latest")]
        tag: String,
        #[arg(long, default_value = "gzip")]
        compression: String,
        layers: Vec<PathBuf>,
    },
    /// Remove images whose tags all moved away, and what only they used
    Gc {
        #[arg(long)]
        repo: PathBuf,
        /// Only print what would be removed
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy the records of some published images into a small local store, so
    /// podman loads only those (configure it as cvmfs.imagestore, the repository
    /// in cvmfs.repositories)
    Enable {
        /// registry/repository:tag as published
        names: Vec<String>,
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        store: PathBuf,
    },
    /// Remove images from a store made by `enable`
    Disable {
        names: Vec<String>,
        #[arg(long)]
        store: PathBuf,
    },
    /// Check a published tree and explain what is wrong
    Check {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        /// Also rebuild every layer from tar-split + layerfs and compare digests
        #[arg(long)]
        deep: bool,
    },
    /// Start-up profiles: what a container reads first, prefetched by the
    /// driver on cold starts (H-profiles hook)
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCmd),
}

/// `90`, `90s`, `5m`, `1h` (at least one second, at most a day).
fn parse_duration(s: &str) -> Result<Duration, String> {
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
fn parse_rate(s: &str) -> Result<u64, String> {
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

fn open_source(
    image: &str,
    platform: Platform,
    tls_verify: bool,
    limits: registry::TransferLimits,
) -> Result<Box<dyn Source>, Error> {
    if let Some(s) = image.strip_prefix("oci:") {
        Ok(Box::new(source::OciLayout::new(s, platform)))
    } else if let Some(f) = image.strip_prefix("docker-archive:") {
        Ok(Box::new(source::DockerArchive::open(Path::new(f))?))
    } else if let Some(r) = image.strip_prefix("docker://") {
        Ok(Box::new(source::RegistrySource::new(
            r, platform, tls_verify, limits,
        )?))
    } else {
        Err(Error::msg(format!(
            "{image:?}: expected docker://host/name:tag, oci:<dir>[:tag] or docker-archive:<file>"
        )))
    }
}

/// Image names as the store records them (`busybox` is
/// `docker.io/library/busybox:latest`); an invalid one is refused by name.
fn normal_names(names: &[String]) -> Result<Vec<String>, Error> {
    names
        .iter()
        .map(|n| ImageName::parse(n).map(|p| p.full()))
        .collect()
}

fn run_cvmfs_server(args: &[&str]) -> Result<(), Error> {
    let st = std::process::Command::new("cvmfs_server")
        .args(args)
        .status()
        .map_err(|e| Error::msg(format!("cvmfs_server {}: {e}", args.join(" "))))?;
    if !st.success() {
        return Err(Error::msg(format!(
            "cvmfs_server {} failed: {st}",
            args.join(" ")
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_publish(
    image: &str,
    repo: &Path,
    name: Option<&str>,
    platform: Option<&str>,
    tls_verify: bool,
    limits: registry::TransferLimits,
    recorded: Option<&Path>,
    jobs: usize,
    json: bool,
    quiet: bool,
    no_devices: bool,
) -> Result<String, Error> {
    let platform = match platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let src = open_source(image, platform, tls_verify, limits)?;
    let name = match name {
        Some(n) => ImageName::parse(n)?,
        // a name from the source's own records (RepoTags, a directory name)
        None => src.default_name().map_err(|e| {
            e.context(format!(
                "image {}: the name it carries (give --name to publish it under another)",
                src.describe()
            ))
        })?,
    };
    std::fs::create_dir_all(repo).map_err(|e| Error::io(repo, e))?;
    let abs = std::fs::canonicalize(repo).map_err(|e| Error::io(repo, e))?;
    let recorded = match recorded {
        Some(r) if r.is_absolute() => r.display().to_string(),
        Some(r) => {
            return Err(Error::msg(format!(
                "--recorded-repository {}: must be absolute",
                r.display()
            )))
        }
        None => abs.display().to_string(),
    };
    let progress = progress::Progress::new(quiet || json);
    let opts = publish::Options {
        repo: abs,
        recorded_repo: recorded,
        name,
        jobs,
        progress: progress.clone(),
        no_devices,
    };
    // the name it was to have, besides the source the error names
    let full_name = opts.name.full();
    let s = publish::publish(src.as_ref(), &opts)
        .map_err(|e| e.context(format!("publishing as {full_name}")))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("serializable")
        );
    } else if !quiet {
        // every bar is finished: a plain line
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
    Ok(s.image_id)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Publish {
            image,
            repo,
            name,
            platform,
            tls_verify,
            transfer_timeout,
            transfer_min_rate,
            recorded_repository,
            jobs,
            json,
            quiet,
            cvmfs_transaction,
            no_devices,
            profile_from,
        } => {
            let limits = registry::TransferLimits {
                floor: transfer_timeout,
                min_rate: transfer_min_rate,
            };
            let run = || {
                cmd_publish(
                    &image,
                    &repo,
                    name.as_deref(),
                    platform.as_deref(),
                    tls_verify,
                    limits,
                    recorded_repository.as_deref(),
                    jobs,
                    json,
                    quiet,
                    no_devices || !rustix::process::geteuid().is_root(),
                )
                // H-profiles hook: --profile-from
                .and_then(|image| match &profile_from {
                    Some(f) => profile_cmd::publish_file(&repo, f, Some(&image)),
                    None => Ok(()),
                })
            };
            let res = match &cvmfs_transaction {
                None => run(),
                Some(r) => run_cvmfs_server(&["transaction", r]).and_then(|()| match run() {
                    Ok(()) => run_cvmfs_server(&["publish", r]),
                    Err(e) => {
                        let _ = run_cvmfs_server(&["abort", "-f", r]);
                        Err(e)
                    }
                }),
            };
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cvmfs-podman publish: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::MakeOci {
            dir,
            tag,
            compression,
            layers,
        } => match testimg::make_oci(&dir, &tag, &layers, &compression) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cvmfs-podman make-oci: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Gc {
            repo,
            dry_run,
            json,
        } => {
            let store = cvmfs_publisher::podman::StorePaths::new(repo.join("podmanStore"));
            match cvmfs_publisher::podman::gc(&store, Some(&repo), dry_run) {
                Ok(r) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&r).expect("serializable")
                        );
                    } else {
                        let verb = if dry_run { "would remove" } else { "removed" };
                        for i in &r.images {
                            println!("{verb} image {i}");
                        }
                        for l in &r.layers {
                            println!("{verb} layer record {l}");
                        }
                        for d in r.layer_dirs.iter().chain(&r.flat_dirs) {
                            println!("{verb} {d}");
                        }
                        for t in &r.temporaries {
                            println!("removed leftover {t}");
                        }
                        for o in &r.origins_repaired {
                            println!("repaired {o}");
                        }
                        println!(
                            "gc: {} images, {} layer records, {} layer directories, {} flat directories {verb}",
                            r.images.len(),
                            r.layers.len(),
                            r.layer_dirs.len(),
                            r.flat_dirs.len()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cvmfs-podman gc: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Enable { names, repo, store } => {
            use cvmfs_publisher::podman::{enable, StorePaths};
            let names = match normal_names(&names) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("cvmfs-podman enable: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match enable(
                &StorePaths::new(repo.join("podmanStore")),
                &StorePaths::new(&store),
                &names,
            ) {
                Ok(ids) => {
                    println!(
                        "enabled {} (images {}) in {}",
                        names.join(", "),
                        ids.join(", "),
                        store.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cvmfs-podman enable: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Disable { names, store } => {
            use cvmfs_publisher::podman::{disable, StorePaths};
            let names = match normal_names(&names) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("cvmfs-podman disable: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match disable(&StorePaths::new(&store), &names) {
                Ok(r) => {
                    println!(
                        "disabled {}; removed {} images, {} layer records from {}",
                        names.join(", "),
                        r.images.len(),
                        r.layers.len(),
                        store.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cvmfs-podman disable: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        // H-profiles hook
        Cmd::Profile(cmd) => match profile_cmd::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cvmfs-podman profile: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Check { repo, json, deep } => {
            let r = check::check(&repo, deep);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("serializable")
                );
            } else {
                for n in &r.notes {
                    println!("note: {n}");
                }
                for p in &r.problems {
                    println!("problem: {p}");
                }
                println!(
                    "check {}: {} ({} images, {} layers in podmanStore, {} layer dirs, {} flat dirs, {} tags)",
                    repo.display(),
                    if r.problems.is_empty() {
                        "consistent".to_string()
                    } else {
                        format!("{} problems", r.problems.len())
                    },
                    r.images,
                    r.layers,
                    r.layer_dirs,
                    r.flat_dirs,
                    r.tags
                );
            }
            if r.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
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
