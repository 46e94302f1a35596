//! Replacing a small file so that no reader ever sees half of it: a certificate kauth makes
//! while it may be read, a token cache another `kauth login` may read at the same moment.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` beside `path` with permissions `mode`, makes it durable, and renames it
/// into place.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let staged = path.with_extension("new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&staged)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&staged, path)
}
