//! `cvmfs-podman`: publish container images into a CVMFS repository (or any
//! directory standing in for one) as a DUCC-compatible tree plus a read-only image
//! store the `cvmfs` graph driver serves to podman, and check such trees.
//!
//! The binary parses arguments and prints; the work is in the library
//! (`cvmfs_publisher`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cvmfs_publisher::Error;

mod check;
mod maintain;
mod owners_cmd;
mod profile_cmd;
mod progress;
mod publish;
mod testimg;

// `check` names the library's sources module by its old place in the binary.
use cvmfs_publisher::source;

#[derive(Parser)]
#[command(name = "cvmfs-podman", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish an image: docker://host[:port]/name:tag, oci:<dir>[:tag] or docker-archive:<file>
    Publish(publish::PublishArgs),
    /// (testing aid) Build an OCI layout from layer spec files or raw .tar files
    #[command(hide = true)]
    MakeOci(testimg::MakeOciArgs),
    /// Remove images whose tags all moved away, and what only they used
    Gc(maintain::GcArgs),
    /// Copy the records of some published images into a small local store, so
    /// podman loads only those (configure it as cvmfs.imagestore, the repository
    /// in cvmfs.repositories)
    Enable(maintain::EnableArgs),
    /// Remove images from a store made by `enable`
    Disable(maintain::DisableArgs),
    /// Check a published tree and explain what is wrong
    Check(maintain::CheckArgs),
    /// Restore the owners of a DUCC image's layers from the registry's
    /// blobs into podman's graph root (DUCC drops them when it ingests)
    Owners(owners_cmd::OwnersArgs),
    /// Start-up profiles: what a container reads first, prefetched by the
    /// driver on cold starts
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCmd),
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::Publish(_) => "publish",
            Cmd::MakeOci(_) => "make-oci",
            Cmd::Gc(_) => "gc",
            Cmd::Enable(_) => "enable",
            Cmd::Disable(_) => "disable",
            Cmd::Check(_) => "check",
            Cmd::Owners(_) => "owners",
            Cmd::Profile(_) => "profile",
        }
    }

    /// Run the subcommand: `Ok(false)` when it ran but found problems.
    fn run(&self) -> Result<bool, Error> {
        match self {
            Cmd::Publish(a) => publish::run(a).map(|()| true),
            Cmd::MakeOci(a) => testimg::run(a).map(|()| true),
            Cmd::Gc(a) => maintain::gc(a).map(|()| true),
            Cmd::Enable(a) => maintain::enable(a).map(|()| true),
            Cmd::Disable(a) => maintain::disable(a).map(|()| true),
            Cmd::Check(a) => Ok(maintain::check(a)),
            Cmd::Owners(a) => owners_cmd::run(a).map(|()| true),
            Cmd::Profile(c) => profile_cmd::run(c.clone()).map(|()| true),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd.run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cvmfs-podman {}: {e}", cli.cmd.name());
            ExitCode::FAILURE
        }
    }
}
