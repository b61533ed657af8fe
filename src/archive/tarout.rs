use super::{ArchiveError, IdMappings};
use std::path::Path;
pub(crate) fn write_diff_tar<W: std::io::Write>(
    _d: &Path,
    _m: Option<&IdMappings>,
    _w: W,
) -> Result<(), ArchiveError> {
    todo!()
}
