//! The on-disk contract between the publisher (`cvmfs-podman`) and the driver
//! (`libcvmfs_graphdriver`): the only thing the two programs share is files in a
//! CVMFS repository, and this crate is where their format is defined.
