//! Writes that survive a power loss: a file's data, or a whole file system's, on disk before
//! the rename that gives it its final name, and the directory entry of that name on disk after
//! it — so a crash leaves either no final name or a complete file under it. Used by the
//! exports, the content store, the sync engine's tree and the file fetcher.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Writes a file's (or a directory's entries') data to disk.
pub fn sync_path(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Writes the directory holding `path` to disk (its entry for `path`).
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_path(p),
        _ => sync_path(Path::new(".")),
    }
}

/// Flushes every write of the file system `path` is on (one call for a tree of many files).
pub(crate) fn sync_fs(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(path)?;
    // SAFETY: syncfs takes an open descriptor and has no other effect on memory.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Renames the file `tmp` to `dest` with its data on disk before and the new name after.
pub fn rename(tmp: &Path, dest: &Path) -> io::Result<()> {
    sync_path(tmp)?;
    fs::rename(tmp, dest)?;
    sync_parent(dest)
}

/// Renames the tree `tmp` (a directory, or a file) to `dest` with the whole file system
/// flushed before and the new name on disk after.
pub fn rename_tree(tmp: &Path, dest: &Path) -> io::Result<()> {
    sync_fs(tmp)?;
    fs::rename(tmp, dest)?;
    sync_parent(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_files_and_trees() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.partial"), d.path().join("a"));
        fs::write(&a, b"x").unwrap();
        rename(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"x");
        let (t, u) = (d.path().join("t.partial"), d.path().join("t"));
        fs::create_dir_all(t.join("s")).unwrap();
        fs::write(t.join("s/f"), b"y").unwrap();
        rename_tree(&t, &u).unwrap();
        assert_eq!(fs::read(u.join("s/f")).unwrap(), b"y");
        assert!(rename(&a, &b).is_err(), "a missing source is an error");
    }
}
