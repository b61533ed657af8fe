//! Layer spec: a tiny text format to build layers in memory for tests (work in progress).

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry;

/// A parse error naming the line.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

pub fn parse(_text: &str) -> Result<Vec<Entry>, ParseError> {
    todo!()
}
pub fn to_tar(_entries: &[Entry]) -> Vec<u8> {
    todo!()
}
