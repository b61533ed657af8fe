//! # cvmfs-graphdriver
//!
//! A [containers/storage] graph driver named `cvmfs` that lets podman (and buildah,
//! skopeo, any Go program linking the storage module) run container images straight
//! out of a CernVM-FS repository.
//!
//! ## Overview
//!
//! Read-only image layers that a CVMFS repository already holds unpacked are mounted
//! in place (CVMFS fetches file content lazily, so a container starts in the time it
//! takes to read what it touches). Everything else — the container's writable layer,
//! layers a user builds, commits or pulls that CVMFS lacks — lives on local disk in
//! the driver home, exactly like the `overlay` driver keeps it. Both kinds stack in
//! one kernel overlayfs mount. An image our publisher built a flat root filesystem
//! for mounts that one directory instead of its layers (see `docs/cvmfs-layers.md`).
//!
//! ## Architecture
//!
//! ```text
//!   podman / containers-storage (Go)
//!        │  go-bindings/ (cgo, drivers/cvmfs in the patched storage module)
//!        ▼
//!   ffi        C ABI: opaque handles, error objects, panic boundary (all raw pointers)
//!   error      the crate error and `ErrorCode`, exported as the C `cvmfs_result`
//!   driver     the Driver operations: create, get/put, diff, apply, …; finds a
//!   │          layer in the home, the separate image store's home, or a layout
//!   ├── stack    composing one overlay mount: members, whiteout layers, flat
//!   │            stand-ins, nested mounts for deep or owner-restoring stacks
//!   ├── options  parsing of `cvmfs.<key>=<value>` driver options
//!   ├── store    driver home: layer records, layer directories, mount refcounts
//!   ├── layout   CVMFS repositories and read-only image stores: resolving layer records
//!   ├── mount    overlay mounts behind the `Mounter` trait (real + recording fake);
//!   │            owner images (`mount::owner_image`, written by crates/erofs)
//!   ├── owner_mounts  owner images in a stack: built, cached, mounted
//!   ├── prefetch background reads of a published start-up profile on `get`
//!   ├── rootless what changes inside a user namespace (userxattr, no metacopy)
//!   └── archive  tar in/out, OCI <-> overlay whiteout conversion, changes, copies
//! ```
//!
//! This crate owns the driver's side only: it reads what the publisher wrote
//! through the `cvmfs-store-format` crate (`cvmfs_format`), whose documentation
//! has the repository tree with each file's type, version and limit, and it
//! never depends on the publisher (`docs/architecture.md`).
//!
//! ## On-disk layout of the driver home (`<graphroot>/cvmfs/`)
//!
//! ```text
//! <graphroot>/cvmfs/
//! ├── layers/<id>/          one directory per local layer
//! │   ├── layer.json        record: kind, parent, read-write flag (versioned)
//! │   ├── diff/             the layer's own files, overlay-format whiteouts
//! │   ├── diff1/, diff2/ …  earlier uppers, kept below `diff` after an ID-map update
//! │   ├── work/             overlayfs work directory
//! │   └── merged/           mount point used by Get
//! ├── l/                    short symlinks to diff directories (mount(2) fallback)
//! ├── aux/                  generated whiteout directories for raw CVMFS layers
//! │   ├── v2-<U>-<D>[-own]  between CVMFS layer U and its parent D: 0/0 devices and
//! │   │                     opaque dirs for U's `.wh.*` markers, D's markers hidden,
//! │   │                     with `-own` D's restored owners (metacopy)
//! │   ├── v2-top-<D>[-own]  above the topmost raw layer: its markers and every
//! │   │                     layer's `.cvmfscatalog`/`.cvmfsautocatalog` hidden
//! │   ├── v2-<U>-local      under raw layer U when no raw layer is below it
//! │   ├── v2-top-<D>-flat   above the published flat tree standing in for D's
//! │   │                     chain: hides the tree's `.cvmfscatalog`
//! │   ├── v1-<D>[-as<u>.<g>].erofs  owner image of CVMFS layer D (owner_mounts):
//! │   │                     its whole tree with the image's owners, files as
//! │   │                     metacopy holes redirected into the repository
//! │   └── <key>.none        remembers that a pair needs no directory (when the
//!                           markers had to be looked for)
//! ├── empty/                an empty lower directory for parentless layers
//! └── staging/              half-created or half-removed layers and half-built
//!                           aux directories (crash recovery)
//! <runroot>/cvmfs/
//! ├── mounts/<id>           per-layer mount reference counts; their `flock` is the
//! │                         layer's lock (create/remove/get/put hold it)
//! ├── nested-locks/<k>      locks for building the nested mounts below
//! ├── erofs/<key>/          owner images mounted (file-backed EROFS), shared
//! ├── erofs-locks/<key>     their locks
//! ├── merged/<id>/          mount points of CVMFS (store) layers mounted by Get
//! └── nested/               read-only mounts used as one lower of a bigger stack
//!     ├── <k>               CVMFS layer k and all below it, when a stack needs
//!     │                     more than 500 lower directories (split once)
//!     └── <k>.full          a whole CVMFS stack with restored owners (metacopy=on),
//!                           under a writable layer
//! ```
//!
//! [containers/storage]: https://github.com/containers/storage

#![deny(unsafe_code)]

pub mod archive;
pub mod claim;
pub mod driver;
pub mod ducc;
pub mod error;
pub mod layout;
pub mod mirror;
pub mod mount;
pub mod options;
mod owner_mounts;
pub mod prefetch;
pub mod rootless;
mod stack;
pub mod store;

// Public so that tests call the exports with their real signatures; the
// contract for C callers is the generated header and docs/c-abi.md.
// The one module allowed to use `unsafe` (raw pointers from C, one syscall).
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod ffi;

pub use driver::Driver;
pub use error::{Error, ErrorCode};
