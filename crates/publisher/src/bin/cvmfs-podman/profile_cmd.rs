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
    }
}
