//! The crate error type and the result codes of the C ABI.
//!
//! Every error carries an [`ErrorCode`] (what the Go side maps to
//! `graphdriver.ErrLayerUnknown`, `ErrNotSupported`, ...) and a message that
//! names the layer and/or path and the cause, because that message is all a
//! podman user sees.

use std::fmt;
use std::io;
use std::path::Path;

/// The result code of every fallible function of the C ABI and of every
/// error of the driver. This enum is the one definition: cbindgen exports it as the C
/// `cvmfs_result` (`CVMFS_RESULT_OK`, `CVMFS_RESULT_LAYER_UNKNOWN`, ...; see
/// `crates/driver/cbindgen.toml`), the Go bindings take their constants from
/// that header, and `hack/header.sh check` fails when the table in
/// `docs/c-abi.md` disagrees with it. Values never change once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// A required argument was NULL, not UTF-8, or otherwise invalid.
    InvalidArgument = 1,
    /// The layer does not exist (Go: `graphdriver.ErrLayerUnknown`).
    LayerUnknown = 2,
    /// The layer already exists.
    LayerExists = 3,
    /// Not supported here (Go: `graphdriver.ErrNotSupported`; for diffs: use the naive diff).
    NotSupported = 4,
    /// The system lacks something the driver needs (Go: `graphdriver.ErrPrerequisites`).
    Prerequisites = 5,
    /// A filesystem or system call failed.
    Io = 6,
    /// The layer is still mounted or in use.
    Busy = 7,
    /// A CVMFS repository is missing, unmounted, unreachable, or a record is malformed.
    Repository = 8,
    /// A malformed or hostile tar stream.
    BadArchive = 9,
    /// The layer is read-only (it lives in CVMFS or an additional image store).
    ReadOnly = 10,
    /// A panic inside the library was caught at the boundary.
    Panic = 99,
}

/// Every code, in value order (tests and the C ABI's name lookup walk it).
pub const ALL_CODES: [ErrorCode; 12] = [
    ErrorCode::Ok,
    ErrorCode::InvalidArgument,
    ErrorCode::LayerUnknown,
    ErrorCode::LayerExists,
    ErrorCode::NotSupported,
    ErrorCode::Prerequisites,
    ErrorCode::Io,
    ErrorCode::Busy,
    ErrorCode::Repository,
    ErrorCode::BadArchive,
    ErrorCode::ReadOnly,
    ErrorCode::Panic,
];

impl ErrorCode {
    /// The integer crossing the C ABI.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code with value `n`, if there is one.
    pub fn from_i32(n: i32) -> Option<ErrorCode> {
        ALL_CODES.into_iter().find(|c| c.as_i32() == n)
    }

    /// A short lower-case name, used in messages and tests.
    pub fn name(self) -> &'static str {
        // The names are ASCII literals: the fallback is never taken.
        self.c_name().to_str().unwrap_or("?")
    }

    /// [`ErrorCode::name`] as a static C string (`cvmfs_result_name`).
    pub fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            ErrorCode::Ok => c"ok",
            ErrorCode::InvalidArgument => c"invalid argument",
            ErrorCode::LayerUnknown => c"layer unknown",
            ErrorCode::LayerExists => c"layer exists",
            ErrorCode::NotSupported => c"not supported",
            ErrorCode::Prerequisites => c"prerequisites",
            ErrorCode::Io => c"i/o",
            ErrorCode::Busy => c"busy",
            ErrorCode::Repository => c"repository",
            ErrorCode::BadArchive => c"bad archive",
            ErrorCode::ReadOnly => c"read-only",
            ErrorCode::Panic => c"panic",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The crate error: a code plus a human message naming what failed and why.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    code: ErrorCode,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// The result code of this error.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message, without the code.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    pub fn layer_unknown(id: &str) -> Error {
        Error::new(
            ErrorCode::LayerUnknown,
            format!("layer {id}: layer not known"),
        )
    }

    pub fn not_supported(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::NotSupported, message)
    }

    pub fn read_only(id: &str, what: &str) -> Error {
        Error::new(
            ErrorCode::ReadOnly,
            format!("layer {id}: {what}: layer is read-only (it lives in a CVMFS repository or an additional image store)"),
        )
    }

    /// An I/O error on `path` while doing `what`; the code follows the errno
    /// where that tells the caller something (missing file, busy mount).
    pub fn io(what: impl fmt::Display, path: &Path, err: io::Error) -> Error {
        let code = match err.raw_os_error() {
            Some(libc::EBUSY) => ErrorCode::Busy,
            Some(libc::EROFS) => ErrorCode::ReadOnly,
            _ => ErrorCode::Io,
        };
        Error::new(code, format!("{what}: {}: {err}", path.display()))
    }

    /// Like [`Error::io`] for rustix errnos.
    pub fn errno(what: impl fmt::Display, path: &Path, err: rustix::io::Errno) -> Error {
        Error::io(what, path, io::Error::from(err))
    }

    /// Prefix the message with more context (e.g. `layer <id>: get`), keeping the code.
    pub fn context(self, prefix: impl fmt::Display) -> Error {
        Error {
            code: self.code,
            message: format!("{prefix}: {}", self.message),
        }
    }
}

/// Archive errors keep their message; the code says whether the tar was bad
/// or the disk failed.
impl From<crate::archive::ArchiveError> for Error {
    fn from(err: crate::archive::ArchiveError) -> Error {
        use crate::archive::ArchiveError;
        let code = match &err {
            ArchiveError::Io { .. } => ErrorCode::Io,
            ArchiveError::BadEntry { .. } => ErrorCode::BadArchive,
            ArchiveError::Unsupported { .. } => ErrorCode::BadArchive,
            ArchiveError::IdMapping { .. } => ErrorCode::InvalidArgument,
            #[allow(unreachable_patterns)]
            _ => ErrorCode::Io,
        };
        Error::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_c_abi_table() {
        let table = [
            (ErrorCode::Ok, 0),
            (ErrorCode::InvalidArgument, 1),
            (ErrorCode::LayerUnknown, 2),
            (ErrorCode::LayerExists, 3),
            (ErrorCode::NotSupported, 4),
            (ErrorCode::Prerequisites, 5),
            (ErrorCode::Io, 6),
            (ErrorCode::Busy, 7),
            (ErrorCode::Repository, 8),
            (ErrorCode::BadArchive, 9),
            (ErrorCode::ReadOnly, 10),
            (ErrorCode::Panic, 99),
        ];
        for (code, n) in table {
            assert_eq!(code.as_i32(), n, "{code}");
            assert_eq!(ErrorCode::from_i32(n), Some(code));
        }
        assert_eq!(
            table.len(),
            ALL_CODES.len(),
            "a code is missing from the table"
        );
        assert!(ALL_CODES.windows(2).all(|w| w[0].as_i32() < w[1].as_i32()));
        assert_eq!(ErrorCode::from_i32(11), None);
    }

    #[test]
    fn io_error_names_path_and_cause_and_maps_ebusy() {
        let e = Error::io(
            "layer abc: unmount",
            Path::new("/x/merged"),
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert_eq!(e.code(), ErrorCode::Busy);
        assert!(
            e.to_string().starts_with("layer abc: unmount: /x/merged: "),
            "{e}"
        );
        assert!(e.to_string().contains("busy"), "{e}");
        let e = e.context("cvmfs");
        assert!(e.to_string().starts_with("cvmfs: layer abc"), "{e}");
    }
}
