//! `cvmfs-podman owners IMAGE`: the owners of a DUCC image's layers, which
//! DUCC drops when it ingests them, read back from the registry's layer
//! blobs (tar headers streamed, file contents skipped, nothing unpacked)
//! into the driver home of a podman graph root, where the `cvmfs` driver
//! applies them to those layers' mounts (`docs/cvmfs-layers.md`).

use std::path::PathBuf;

use cvmfs_graphdriver::ducc::owners_cache_file;
use cvmfs_publisher::publish::owners_from_blob;
use cvmfs_publisher::registry::TransferLimits;
use cvmfs_publisher::source::{self, Platform, RegistryOptions};
use cvmfs_publisher::{digest_hex, fsx, Error};

#[derive(clap::Args)]
pub struct OwnersArgs {
    /// The image as DUCC converted it: docker://host[:port]/name:tag (or
    /// oci:<dir>[:tag] holding the same blobs)
    image: String,
    /// podman's graph root (`podman --root`, storage.conf `graphroot`)
    #[arg(long, default_value = "/var/lib/containers/storage")]
    root: PathBuf,
    /// Verify registry TLS certificates; false also allows plain http
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
}

const FOREIGN: &str = "foreign";

pub fn run(a: &OwnersArgs) -> Result<(), Error> {
    let registry = RegistryOptions {
        tls_verify: a.tls_verify,
        limits: TransferLimits::default(),
    };
    let src = source::open(&a.image, Platform::host(), registry)?;
    let manifest = source::image_manifest(&src.manifest()?)?;
    let home = a.root.join("cvmfs");
    for desc in manifest
        .layers
        .iter()
        .filter(|d| !d.media_type.contains(FOREIGN))
    {
        let hex = digest_hex(&desc.digest)?;
        match owners_from_blob(src.as_ref(), desc)? {
            Ok(json) => {
                let dest = owners_cache_file(&home, hex);
                std::fs::create_dir_all(dest.parent().expect("a cache directory"))
                    .map_err(|e| Error::io(&dest, e))?;
                fsx::write_atomic(&dest, &json, 0o644)?;
                println!("{}: owners written to {}", desc.digest, dest.display());
            }
            Err(why) => eprintln!("{}: owners not kept ({why})", desc.digest),
        }
    }
    Ok(())
}
