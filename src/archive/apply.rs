use super::{ApplyOptions, ArchiveError};
use std::path::Path;
pub(crate) fn apply<R: std::io::Read>(
    _r: R,
    _dest: &Path,
    _o: &ApplyOptions,
) -> Result<(), ArchiveError> {
    todo!()
}
