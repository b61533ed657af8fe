//! The on-disk contract between the publisher (`cvmfs-podman`) and the driver
//! (`libcvmfs_graphdriver`): the only thing the two programs share is files in a
//! CVMFS repository, and this crate is where their format is defined. Each
//! file has one writer type and one reader (a function or type of this crate),
//! one version and one size limit; both programs and `cvmfs-podman check`
//! compile against them.
//!
//! # The repository (DUCC's layout, plus `podmanStore/`)
//!
//! Paths: [`RepoPaths`] and [`StorePaths`] (neither program spells them
//! otherwise).
//! `<d>` = hex of a layer's compressed blob digest, `<c>` = hex of an image's
//! config digest (= image ID), `XX` = their first two digits, `<id>` = a layer
//! ID (containers/image's chain ID, [`is_hex64`]).
//!
//! ```text
//! <repo>/                                    file format (version, limit)       written by / read by
//! ├── .layers/XX/<d>/
//! │   ├── layerfs/                           the layer unpacked, raw .wh.* files publisher, DUCC / driver, check
//! │   └── .metadata/layers.json              [LayerInfo] (one-element array)     publisher, DUCC / check, publisher
//! │                 origin.json              [Origin] (16 MiB)                   publisher, DUCC / publisher (gc), check
//! ├── .flat/XX/<c>/                          the image's root filesystem         publisher, DUCC / driver (record "flat")
//! ├── .metadata/<reg>/<repo>:<tag>/manifest.json   [Manifest] (4 MiB)         publisher, DUCC / check
//! ├── <reg>/<repo>:<tag> -> ../../.flat/XX/<c>     tag link ([RepoPaths::tag_target]) publisher / check, users
//! └── podmanStore/                           containers/storage read-only store
//!     ├── cvmfs-images/images.json, images.lock, <c>/<big data>   c/storage's JSON   publisher / podman, check
//!     ├── cvmfs-layers/layers.json, layers.lock                   c/storage's JSON   publisher / podman, check
//!     │   └── <id>.tar-split.gz              [TarSplitEntry] lines, gzip        publisher / podman (push, save), check
//!     └── cvmfs/
//!         ├── publisher.lock                 empty; flock of publish and gc      publisher
//!         ├── layers/<id>/layer.json         [CvmfsRecord] (v1, 4 MiB)          publisher / driver, check
//!         ├── layers/<id>/ownership.json     [OwnershipFile] (v1, 32 MiB, 500 000 entries)  publisher / driver, check
//!         ├── start/<c>/record, layer        symlinks to the top layer's record and directory
//!         ├── start/<c>/exec-N               symlinks to the files a container runs first
//!         ├── layers/<id>/start              symlink to the start/<c> of the image on top layer <id>
//!         │                                  ([paths::start_record_target], [paths::start_layer_target])  publisher / driver (read ahead)
//!         ├── flat/<c>.json                  note: this publisher built .flat/XX/<c>   publisher / publisher (gc)
//!         └── tar-split/<d>.tar-split.gz     the same, per blob (reuse)          publisher / publisher, check --deep
//!             tar-split/<d>.ownership.json   [OwnershipFile] per blob (reuse)    publisher / publisher
//!             tar-split/<d>.ownership-lost   marker: <d>'s layerfs lost owners   publisher / publisher
//!             tar-split/<d>.markers.json     [MarkerList] (16 384 markers/dirs)  publisher / publisher
//! ```
//!
//! # The driver home (local state of one driver)
//!
//! ```text
//! <home>/layers/<id>/layer.json              [LocalRecord] (v1, 4 MiB)          driver / driver
//! <home>/layers/<id>/{diff,work,merged}      overlay directories                driver
//! <home>/l/<link> -> ../layers/<id>/diff     short names for mount(2)           driver
//! <home>/empty/                              lower directory of parentless layers driver
//! <home>/aux/<key>/                          generated whiteout layers          driver
//! <home>/staging/<pid>-<seq>-<what>          half-built or half-removed layers  driver
//! ```
//!
//! A driver home may also serve as an additional store: its `"local"`
//! records are then read by [`parse_store_record`].
//!
//! # Where to change a record field
//!
//! A field of `layer.json` is a field of [`CvmfsRecord`] (what is written, in
//! [`CvmfsRecord::to_json`]'s field order, which must stay alphabetical for
//! byte compatibility) and of the reader in [`record`] (`StoreRecordIn` and
//! its checks in [`parse_store_record`]). Records in repositories are
//! permanent: a new field must be optional on reading, and a change that old
//! drivers would misread needs [`CVMFS_RECORD_VERSION`] raised with the old
//! version still read. Then the driver uses it in `cvmfs_graphdriver::layout`
//! (`StoreLayer`, `Layout::parse_record`), the publisher fills it in
//! `cvmfs_publisher::podman` (`NewLayer`, `layer_record`, `updated_record`
//! for records already published), and `cvmfs-podman check` checks it
//! against the tree (`check_layer_record`). The tests of this crate pin the
//! bytes.
//!
//! The crate does no filesystem access: every reader takes bytes and every
//! writer returns them, so both programs (and the fuzzers) use the same pure
//! functions, and each program decides how it reads (timeouts, `openat2`,
//! atomic writes).

#![forbid(unsafe_code)]

pub mod capped;
pub mod ducc;
pub mod error;
pub mod id;
pub mod markers;
pub mod ownership;
pub mod paths;
pub mod profile;
pub mod record;
pub mod tarsplit;

pub use ducc::{LayerInfo, Manifest, Origin};
pub use error::{FormatError, Result};
pub use id::{digest_hex, is_hex64, sha256_digest, validate_store_layer_id};
pub use markers::{parse_marker_list, parse_marker_list_json, Marker, MarkerList};
pub use ownership::{parse_owners, Owner, OwnerEntry, OwnerProbes, OwnershipFile};
pub use paths::{
    flat_rel, layerfs_rel, store_repository, tar_split_file_name, RepoPaths, StorePaths,
};
pub use record::{
    parse_store_record, CvmfsRecord, LocalRecord, Ownership, RecordKind, StoreRecord, Whiteouts,
    CVMFS_RECORD_VERSION, LOCAL_RECORD_VERSION, RECORD_MAX_BYTES,
};
pub use tarsplit::TarSplitEntry;
