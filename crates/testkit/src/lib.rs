//! Test-only helpers shared by the workspace's integration tests, the hostile
//! suite and the fuzz targets. A dev-dependency: nothing here ships.
//!
//! - [`rawtar`]: tar streams crafted block by block, as an attacker writes them;
//! - [`cli`]: running a workspace binary and writing layer specs;
//! - [`abi_stress`]: the C ABI stress run (threads racing one driver handle);
//! - [`fuzzing`]: the table of fuzz targets that `fuzz/` runs and
//!   `fuzz_replay` replays;
//! - [`gate`]: root and helper gating (`#[ignore = "needs root"]` tests);
//! - [`fuselat`]: building the FUSE view `bench/fuselat`.

// Only the C ABI callers may use `unsafe`: they play the C side of the
// exports (raw pointers in, strings and error objects to free).
#![deny(unsafe_code)]

#[doc(hidden)]
#[allow(unsafe_code)]
pub mod abi_stress;
pub mod cli;
pub mod fuselat;
pub mod fuzzing;
pub mod gate;
pub mod rawtar;
