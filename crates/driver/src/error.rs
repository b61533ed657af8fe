//! The crate error type and the result codes of the C ABI.
//!
//! Every error carries an [`ErrorCode`] (what the Go side maps to
//! `graphdriver.ErrLayerUnknown`, `ErrNotSupported`, ...) and a message that
//! names the layer and/or path and the cause, because that message is all a
//! podman user sees.

use std::fmt;
use std::io;
use std::path::Path;

/// Result codes, one to one with the table in `docs/c-abi.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    Ok = 0,
    InvalidArgument = 1,
    LayerUnknown = 2,
    LayerExists = 3,
    NotSupported = 4,
    Prerequisites = 5,
    Io = 6,
    Busy = 7,
    Repository = 8,
    BadArchive = 9,
    ReadOnly = 10,
    Panic = 99,
}

impl ErrorCode {
    /// The integer crossing the C ABI.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// A short lower-case name, used in messages and tests.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::LayerUnknown => "layer unknown",
            ErrorCode::LayerExists => "layer exists",
            ErrorCode::NotSupported => "not supported",
            ErrorCode::Prerequisites => "prerequisites",
            ErrorCode::Io => "i/o",
            ErrorCode::Busy => "busy",
            ErrorCode::Repository => "repository",
            ErrorCode::BadArchive => "bad archive",
            ErrorCode::ReadOnly => "read-only",
            ErrorCode::Panic => "panic",
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
        }
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
