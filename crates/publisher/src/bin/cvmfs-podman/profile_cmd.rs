//! `cvmfs-podman profile …` and `publish --profile-from`: start-up profiles
//! (issue 16; the logic is in `cvmfs_publisher::profile`).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use cvmfs_publisher::podman::StorePaths;
use cvmfs_publisher::profile::{publish_profile, read_profile};
use cvmfs_publisher::Error;

#[derive(Subcommand, Clone)]
pub enum ProfileCmd {
    /// Publish a start-up profile (as `profile record` writes it) for an
    /// image already published in the repository
    Publish {
        file: PathBuf,
        #[arg(long)]
        repo: PathBuf,
    },
    /// Run a container of a published image once and record what it reads
    /// first: podman (cvmfs driver) runs in a private mount namespace where the
    /// repository is seen through a FUSE tap (bench/fuselat, no delay) that
    /// logs every file and chunk fetched; the log becomes the profile
    Record {
        /// registry/repository:tag as published, or the image ID
        image: String,
        #[arg(long)]
        repo: PathBuf,
        /// The podman to run (with the cvmfs driver linked in)
        #[arg(long, default_value = "podman")]
        podman: PathBuf,
        /// The tap: bench/fuselat's binary
        #[arg(long, env = "CVMFS_PODMAN_TAP", default_value = "fuselat")]
        tap: PathBuf,
        /// The podman's driver predates cvmfs.prefetch (do not pass
        /// cvmfs.prefetch=off; a published profile would then be prefetched
        /// and recorded again)
        #[arg(long)]
        old_driver: bool,
        /// Write the profile here (default: standard output)
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Also publish it into the repository
        #[arg(long)]
        publish: bool,
        /// The command to run instead of the image's entrypoint and cmd
        #[arg(last = true)]
        cmd: Vec<String>,
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
        ProfileCmd::Record {
            image,
            repo,
            podman,
            tap,
            old_driver,
            output,
            publish,
            cmd,
        } => {
            let rec = Recording {
                image: &image,
                podman: &podman,
                tap: &tap,
                old_driver,
                cmd: &cmd,
            };
            let repo = std::fs::canonicalize(&repo).map_err(|e| Error::io(&repo, e))?;
            record(&repo, &rec, output.as_deref(), publish)
        }
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

/// What `profile record` runs.
struct Recording<'a> {
    image: &'a str,
    podman: &'a Path,
    tap: &'a Path,
    old_driver: bool,
    cmd: &'a [String],
}

/// The script run in a private mount namespace (`unshare -m`): the repository
/// bound aside as the tap's source, the tap's view bound over the repository
/// path (so the layer records lead into the view), podman run, the tap
/// stopped (by its PID), podman's status returned. Arguments: repository,
/// work directory, tap, then podman's command line.
const RECORD_SCRIPT: &str = r#"
set -u
repo=$1 w=$2 tap=$3
shift 3
mkdir -p "$w/src" "$w/view" || exit 125
mount --bind "$repo" "$w/src" || exit 125
"$tap" -latency 0 -bandwidth 0 -chunk 8388608 -log "$w/fetched.txt" "$w/src" "$w/view" 2>"$w/tap.log" &
tap_pid=$!
i=0
until mountpoint -q "$w/view"; do
  i=$((i + 1))
  if [ $i -gt 200 ] || ! kill -0 $tap_pid 2>/dev/null; then cat "$w/tap.log" >&2; exit 125; fi
  sleep 0.05
done
mount --bind "$w/view" "$repo" || exit 125
"$@"
rc=$?
umount -l "$repo"
kill -TERM $tap_pid
wait $tap_pid
exit $rc
"#;

/// Run the image once under the tap, then turn the fetch log into its
/// profile (written to `output` or stdout, published with `publish`).
fn record(repo: &Path, rec: &Recording, output: Option<&Path>, publish: bool) -> Result<(), Error> {
    let work = std::env::temp_dir().join(format!("cvmfs-podman-record.{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let res = record_in(repo, &work, rec).and_then(|took| {
        eprintln!("recorded: the container ran {took:.2} s under the tap");
        from_log(
            repo,
            &work.join("src"),
            rec.image,
            &work.join("fetched.txt"),
            8 << 20,
            output,
            publish,
        )
    });
    // conmon's exit command (`podman container cleanup`) may still be
    // writing in the run root for a moment after `podman run` returned.
    for _ in 0..20 {
        if std::fs::remove_dir_all(&work).is_ok() || !work.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    res
}

fn record_in(repo: &Path, work: &Path, rec: &Recording) -> Result<f64, Error> {
    let store = repo.join("podmanStore");
    let mut podman: Vec<String> = vec![
        rec.podman.display().to_string(),
        "--root".into(),
        work.join("root").display().to_string(),
        "--runroot".into(),
        work.join("run").display().to_string(),
        "--storage-driver".into(),
        "cvmfs".into(),
        "--storage-opt".into(),
        format!("cvmfs.imagestore={}", store.display()),
        "--storage-opt".into(),
        format!("cvmfs.repositories={}", repo.display()),
    ];
    if !rec.old_driver {
        podman.extend(["--storage-opt".into(), "cvmfs.prefetch=off".into()]);
    }
    podman.extend(["run".into(), "--rm".into(), rec.image.to_string()]);
    podman.extend(rec.cmd.iter().cloned());
    let started = std::time::Instant::now();
    let st = std::process::Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            RECORD_SCRIPT,
            "record",
        ])
        .arg(repo)
        .arg(work)
        .arg(rec.tap)
        .args(&podman)
        .status()
        .map_err(|e| Error::msg(format!("profile record: unshare: {e}")))?;
    let took = started.elapsed().as_secs_f64();
    match st.code() {
        Some(0) => Ok(took),
        Some(125) => Err(Error::msg(format!(
            "profile record: the tap ({}) did not start (root and FUSE needed)",
            rec.tap.display()
        ))),
        _ => Err(Error::msg(format!(
            "profile record: {} run {} failed ({st}); nothing recorded",
            rec.podman.display(),
            rec.image
        ))),
    }
}
