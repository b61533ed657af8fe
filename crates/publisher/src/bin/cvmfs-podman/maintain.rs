//! The store maintenance subcommands: `gc`, `enable`, `disable` and `check`,
//! their arguments and what they print.

use std::path::PathBuf;

use clap::Args;
use cvmfs_publisher::podman::{self, StorePaths};
use cvmfs_publisher::source::ImageName;
use cvmfs_publisher::Result;

use crate::check;

#[derive(Args)]
pub struct GcArgs {
    #[arg(long)]
    repo: PathBuf,
    /// Only print what would be removed
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EnableArgs {
    /// registry/repository:tag as published
    names: Vec<String>,
    #[arg(long)]
    repo: PathBuf,
    #[arg(long)]
    store: PathBuf,
}

#[derive(Args)]
pub struct DisableArgs {
    names: Vec<String>,
    #[arg(long)]
    store: PathBuf,
}

#[derive(Args)]
pub struct CheckArgs {
    repo: PathBuf,
    #[arg(long)]
    json: bool,
    /// Also rebuild every layer from tar-split + layerfs and compare digests
    #[arg(long)]
    deep: bool,
    /// List every repository file whose content check read (on a client
    /// mount: what it fetched); the summary line is always printed
    #[arg(long)]
    show_fetched: bool,
}

/// Image names as the store records them (`busybox` is
/// `docker.io/library/busybox:latest`); an invalid one is refused by name.
fn normal_names(names: &[String]) -> Result<Vec<String>> {
    names
        .iter()
        .map(|n| ImageName::parse(n).map(|p| p.full()))
        .collect()
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// `cvmfs-podman gc`.
pub fn gc(a: &GcArgs) -> Result<()> {
    let store = cvmfs_format::RepoPaths::new(&a.repo).store();
    let r = podman::gc(&store, Some(&a.repo), a.dry_run)?;
    if a.json {
        print_json(&r);
        return Ok(());
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
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
    Ok(())
}

/// `cvmfs-podman enable`.
pub fn enable(a: &EnableArgs) -> Result<()> {
    let names = normal_names(&a.names)?;
    let ids = podman::enable(
        &cvmfs_format::RepoPaths::new(&a.repo).store(),
        &StorePaths::new(&a.store),
        &names,
    )?;
    println!(
        "enabled {} (images {}) in {}",
        names.join(", "),
        ids.join(", "),
        a.store.display()
    );
    Ok(())
}

/// `cvmfs-podman disable`.
pub fn disable(a: &DisableArgs) -> Result<()> {
    let names = normal_names(&a.names)?;
    let r = podman::disable(&StorePaths::new(&a.store), &names)?;
    println!(
        "disabled {}; removed {} images, {} layer records from {}",
        names.join(", "),
        r.images.len(),
        r.layers.len(),
        a.store.display()
    );
    Ok(())
}

/// What `check` read the content of: one summary line, and with `list` one
/// line per file (`fetched: <kind> <bytes> <path>`).
fn print_content_read(c: &check::ContentReads, list: bool) {
    if list {
        for e in &c.list {
            println!("fetched: {} {} {}", e.kind, e.bytes, e.path);
        }
    }
    let kinds: Vec<String> = c.by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "read content of {} files, {} bytes ({}){}",
        c.files,
        c.bytes,
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        },
        if list {
            ""
        } else {
            "; --show-fetched lists them"
        }
    );
}

/// `cvmfs-podman check`: true when the tree is consistent.
pub fn check(a: &CheckArgs) -> bool {
    let r = check::check(&a.repo, a.deep);
    if a.json {
        print_json(&r);
        return r.problems.is_empty();
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    for p in &r.problems {
        println!("problem: {p}");
    }
    print_content_read(&r.content_read, a.show_fetched);
    let verdict = if r.problems.is_empty() {
        "consistent".to_string()
    } else {
        format!("{} problems", r.problems.len())
    };
    println!(
        "check {}: {verdict} ({} images, {} layers in podmanStore, {} layer dirs, {} flat dirs, {} tags)",
        a.repo.display(),
        r.images,
        r.layers,
        r.layer_dirs,
        r.flat_dirs,
        r.tags
    );
    r.problems.is_empty()
}
