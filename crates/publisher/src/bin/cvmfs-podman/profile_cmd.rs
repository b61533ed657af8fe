//! `cvmfs-podman profile …` and `publish --profile-from`: start-up profiles
//! (issue 16; the logic is in `cvmfs_publisher::profile`).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use cvmfs_publisher::podman::StorePaths;
use cvmfs_publisher::profile::{publish_profile, read_profile};
use cvmfs_publisher::Error;

#[derive(Subcommand)]
pub enum ProfileCmd {
    /// Publish a start-up profile (as `profile record` writes it) for an
    /// image already published in the repository
    Publish {
        file: PathBuf,
        #[arg(long)]
        repo: PathBuf,
    },
    /// Make an image's profile from a fetch log (`<bytes>\t<chunk>\t<path>`
    /// per object fetched, in order, as `bench/fuselat -log` writes while a
    /// container of the image runs on a view of the repository)
    FromLog {
        log: PathBuf,
        #[arg(long)]
        repo: PathBuf,
        /// The image: registry/repository:tag as published, or its ID
        #[arg(long)]
        image: String,
        /// The directory the view served (default: --repo)
        #[arg(long)]
        source_root: Option<PathBuf>,
        /// Chunk size of the log's chunk numbers
        #[arg(long, default_value_t = 8 << 20)]
        chunk: u64,
        /// Write the profile here (default: standard output)
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Also publish it into the repository
        #[arg(long)]
        publish: bool,
    },
}

/// Publish the profile in `file` into `repo`'s store; with `image`, it must
/// have been recorded for that image (`publish --profile-from`).
pub fn publish_file(repo: &Path, file: &Path, image: Option<&str>) -> Result<(), Error> {
    let p = read_profile(file)?;
    if let Some(img) = image.filter(|i| *i != p.image) {
        return Err(Error::msg(format!(
            "{}: recorded for image {}, not for the image just published ({img})",
            file.display(),
            p.image
        )));
    }
    let store = StorePaths::new(repo.join("podmanStore"));
    let dest = publish_profile(&store, &p)?;
    eprintln!(
        "published profile of image {} ({} files, {:.1} MB) as {}",
        &p.image[..12],
        p.entries.len(),
        p.total_bytes() as f64 / 1e6,
        dest.display()
    );
    Ok(())
}

pub fn run(cmd: ProfileCmd) -> Result<(), Error> {
    match cmd {
        ProfileCmd::Publish { file, repo } => publish_file(&repo, &file, None),
        ProfileCmd::FromLog {
            log,
            repo,
            image,
            source_root,
            chunk,
            output,
            publish,
        } => {
            let source = source_root.unwrap_or_else(|| repo.clone());
            from_log(
                &repo,
                &source,
                &image,
                &log,
                chunk,
                output.as_deref(),
                publish,
            )
        }
    }
}

fn from_log(
    repo: &Path,
    source: &Path,
    image: &str,
    log: &Path,
    chunk: u64,
    output: Option<&Path>,
    publish: bool,
) -> Result<(), Error> {
    use cvmfs_publisher::profile::{profile_from_fetch_log, FETCH_LOG_MAX_BYTES};
    let store = StorePaths::new(repo.join("podmanStore"));
    let bytes = cvmfs_publisher::fsx::read_record(log, FETCH_LOG_MAX_BYTES)
        .map_err(|e| Error::io(log, e))?;
    let (p, stats) = profile_from_fetch_log(&store, repo, source, image, &bytes, chunk)?;
    let json = p.to_json().map_err(|e| Error::msg(e.to_string()))?;
    match output {
        Some(o) => cvmfs_publisher::fsx::write_atomic(o, &json, 0o644)?,
        None => println!("{}", String::from_utf8_lossy(&json)),
    }
    eprintln!(
        "profile of image {}: {} files, {:.1} MB from {} log lines ({} ignored)",
        &p.image[..12],
        p.entries.len(),
        p.total_bytes() as f64 / 1e6,
        stats.used,
        stats.ignored
    );
    if publish {
        let dest = publish_profile(&store, &p)?;
        eprintln!("published as {}", dest.display());
    }
    Ok(())
}
