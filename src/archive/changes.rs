use super::{ArchiveError, Change};
use std::path::{Path, PathBuf};
pub(crate) fn overlay_changes(_d: &Path, _l: &[PathBuf]) -> Result<Vec<Change>, ArchiveError> {
    todo!()
}
