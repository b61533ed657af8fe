//! The on-disk contract between the publisher (`cvmfs-podman`) and the driver
//! (`libcvmfs_graphdriver`): the only thing the two programs share is files in a
//! CVMFS repository, and this crate is where their format is defined.

// H-profiles hook: start-up profiles (issue 16)
pub mod profile;
