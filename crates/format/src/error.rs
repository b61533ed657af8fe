//! The format crate's one error type: what is wrong, in which file and which
//! field, with a message meant for an operator.

use std::fmt;
use std::path::{Path, PathBuf};

/// A file of the store format that does not follow it.
///
/// `message` is the full explanation (it already names the field the way the
/// programs have always worded it, e.g. `field "whiteouts" is …`); `field` and
/// `file` are there for callers that want to act on them. `Display` prefixes
/// the file when it is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FormatError {
    /// The file read or written, when the caller said which.
    pub file: Option<PathBuf>,
    /// The JSON field at fault (`"markers"`, `"entries"`, …), if one is.
    pub field: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "{}: {}", p.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl FormatError {
    pub fn new(message: impl Into<String>) -> FormatError {
        FormatError {
            file: None,
            field: None,
            message: message.into(),
        }
    }

    /// The same error, about field `field`.
    pub fn field(mut self, field: &'static str) -> FormatError {
        self.field = Some(field);
        self
    }

    /// The same error, about file `path`.
    pub fn in_file(mut self, path: &Path) -> FormatError {
        self.file = Some(path.to_path_buf());
        self
    }

    /// Prefix the message with `what` (`"field \"markers\""`, `"parent"`).
    pub fn context(mut self, what: impl fmt::Display) -> FormatError {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

pub type Result<T> = std::result::Result<T, FormatError>;
