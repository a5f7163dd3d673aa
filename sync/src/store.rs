//! Writing into a registry storage tree: every file is written to a temporary file in
//! `<root>/.kpbuild-tmp/run-<random>/` and renamed into place, so a file that exists is
//! complete; blobs are renamed only after their sha256 matched.
//!
//! Each run holds an exclusive `flock` on `run-<random>/lock` while it lives. A run that was
//! killed (SIGKILL, a crash, a power cut) leaves its directory behind with the lock released by
//! the kernel; the next run that opens the tree removes such directories, while the directories
//! of runs still alive (their lock held) are left alone.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use kpbuild_oci::registry_layout::{Digest, Layout};

/// The directory under the storage root that holds files being written.
pub const TMP_DIR: &str = kpbuild_oci::registry_verify::TEMP_DIR;

/// A registry storage tree being written.
#[derive(Debug)]
pub struct Store {
    layout: Layout,
    /// `<root>/.kpbuild-tmp`
    tmp_root: PathBuf,
    /// This run's directory in it.
    tmp: PathBuf,
    /// Holds the run's lock (released when dropped, or by the kernel when the process dies).
    _lock: File,
}

/// Takes an exclusive lock (`flock` on Linux) without waiting; `Ok(false)` when another
/// process holds it.
fn try_lock(f: &File) -> io::Result<bool> {
    match f.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// How old a run directory without a lock file (a run killed while creating it) or a loose
/// file must be before it is removed.
const STALE_AGE: std::time::Duration = std::time::Duration::from_secs(600);

fn older_than(path: &Path, age: std::time::Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}

/// Removes what runs that are no longer alive left in `tmp_root`. Returns how many
/// directories and files were removed.
pub(crate) fn sweep_dead_runs(tmp_root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let rd = match fs::read_dir(tmp_root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type()?;
        if ft.is_dir() && (name.starts_with("run-") || name.starts_with(".new-")) {
            let dead = match File::open(path.join("lock")) {
                Ok(f) => try_lock(&f)?,
                // No lock file: being created right now, or killed while being created.
                Err(e) if e.kind() == io::ErrorKind::NotFound => older_than(&path, STALE_AGE),
                Err(e) => return Err(e),
            };
            if dead {
                fs::remove_dir_all(&path)?;
                removed += 1;
            }
        } else if older_than(&path, STALE_AGE) {
            // Loose files (written by kpbuild versions before run directories).
            if ft.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

/// Why a finished blob was not stored.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("sha256 of the bytes is {0}")]
    Mismatch(Digest),
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn make_readable(f: &File) -> io::Result<()> {
    // Temporary files are 0600; a registry running as another user must read them.
    f.set_permissions(fs::Permissions::from_mode(0o644))
}

fn persist(tmp: NamedTempFile, dest: &Path) -> io::Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    make_readable(tmp.as_file())?;
    // The data on disk before the name, the name on disk after: a power loss never leaves a
    // complete-looking blob or link over incomplete data.
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    kpbuild_store::durable::sync_parent(dest)
}

/// sha256 of a file's contents.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((Digest::from_hasher(h), n))
}

impl Store {
    /// Opens (creating) the tree at `root`, the directory a registry mounts as
    /// `/var/lib/registry`.
    ///
    /// Removes what killed runs left in the temporary directory first.
    pub fn open(root: &Path) -> io::Result<Store> {
        let layout = Layout::new(root);
        fs::create_dir_all(layout.blobs_dir())?;
        fs::create_dir_all(layout.v2().join("repositories"))?;
        let tmp_root = root.join(TMP_DIR);
        fs::create_dir_all(&tmp_root)?;
        sweep_dead_runs(&tmp_root)?;
        // Lock first, then make the directory visible under its run name, so that a sweeper
        // never sees a live run without its lock.
        let new = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&tmp_root)?
            .keep();
        let lock = File::create(new.join("lock"))?;
        if !try_lock(&lock)? {
            return Err(io::Error::other("cannot lock a fresh run directory"));
        }
        let name = new
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(".new-"))
            .unwrap_or("x")
            .to_string();
        let tmp = tmp_root.join(format!("run-{name}"));
        fs::rename(&new, &tmp)?;
        Ok(Store {
            layout,
            tmp_root,
            tmp,
            _lock: lock,
        })
    }

    /// The layout's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn temp(&self, prefix: &str) -> io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(&self.tmp)
    }

    /// Whether the blob is present with the right size (when given) and sha256. A present
    /// but damaged blob is removed, so it is fetched again.
    pub(crate) fn blob_intact(&self, d: &Digest, size: Option<u64>) -> io::Result<bool> {
        let path = self.layout.blob_data(d);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let ok =
            meta.is_file() && size.is_none_or(|s| s == meta.len()) && hash_file(&path)?.0 == *d;
        if !ok {
            fs::remove_file(&path)?;
        }
        Ok(ok)
    }

    /// Stores bytes already in memory (manifests) under their digest, unless present and
    /// intact. `Ok(true)` when written.
    pub(crate) fn put_blob_bytes(&self, d: &Digest, bytes: &[u8]) -> io::Result<bool> {
        debug_assert_eq!(Digest::of_bytes(bytes), *d);
        if self.blob_intact(d, Some(bytes.len() as u64))? {
            return Ok(false);
        }
        let mut tmp = self.temp("manifest-")?;
        tmp.write_all(bytes)?;
        persist(tmp, &self.layout.blob_data(d))?;
        Ok(true)
    }

    /// Stores the blob `d` from `src` (a file of another tree, e.g. a blob cache), hashing
    /// while copying: `Ok(false)`, and `src` removed, when `src` is not the blob (missing,
    /// another size, other bytes); nothing unverified is renamed into place.
    pub(crate) fn copy_blob_from(&self, src: &Path, d: &Digest, size: u64) -> io::Result<bool> {
        let mut f = match File::open(src) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if f.metadata()?.len() != size {
            let _ = fs::remove_file(src);
            return Ok(false);
        }
        let mut w = self.blob_writer(d)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        match w.finish() {
            Ok(()) => Ok(true),
            Err(FinishError::Mismatch(_)) => {
                let _ = fs::remove_file(src);
                Ok(false)
            }
            Err(FinishError::Io(e)) => Err(e),
        }
    }

    /// Stores a copy of `src`, a verified blob `d` of another tree (the kernel copies the
    /// bytes), unless a file of the same size is there already.
    pub(crate) fn put_blob_copy(&self, d: &Digest, src: &Path) -> io::Result<()> {
        let dest = self.layout.blob_data(d);
        let len = fs::metadata(src)?.len();
        if fs::metadata(&dest).is_ok_and(|m| m.len() == len) {
            return Ok(());
        }
        let tmp = self.temp("copy-")?;
        fs::copy(src, tmp.path())?;
        persist(tmp, &dest)
    }

    /// Starts writing a blob that arrives in pieces.
    pub(crate) fn blob_writer(&self, d: &Digest) -> io::Result<BlobWriter> {
        Ok(BlobWriter {
            out: BufWriter::with_capacity(1 << 20, self.temp("blob-")?),
            hasher: Sha256::new(),
            len: 0,
            digest: d.clone(),
            dest: self.layout.blob_data(d),
        })
    }

    /// Writes a link file (no newline added), unless it already holds `contents`.
    pub(crate) fn write_link(&self, path: &Path, contents: &str) -> io::Result<()> {
        if fs::read(path).is_ok_and(|c| c == contents.as_bytes()) {
            return Ok(());
        }
        let mut tmp = self.temp("link-")?;
        tmp.write_all(contents.as_bytes())?;
        persist(tmp, path)
    }

    /// Removes this run's temporary directory, and the temporary root if nothing else is in
    /// it. Files still being written are gone with it. Also done on drop.
    pub fn close(&self) {
        let _ = fs::remove_dir_all(&self.tmp);
        let _ = fs::remove_dir(&self.tmp_root);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// A blob being written: hashed as it is written, renamed into place only if its sha256
/// matches. Dropped without [`BlobWriter::finish`], nothing is left behind.
pub struct BlobWriter {
    out: BufWriter<NamedTempFile>,
    hasher: Sha256,
    len: u64,
    digest: Digest,
    dest: PathBuf,
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        self.out.write_all(chunk)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts over (after a connection dropped mid-blob).
    pub fn reset(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let f = self.out.get_mut().as_file_mut();
        f.set_len(0)?;
        f.rewind()?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// The sha256 of what was written so far, when it is not the expected digest.
    pub fn mismatch(&self) -> Option<Digest> {
        let actual = Digest::from_hasher(self.hasher.clone());
        (actual != self.digest).then_some(actual)
    }

    /// Checks the sha256 and renames the blob into place.
    pub fn finish(self) -> Result<(), FinishError> {
        let actual = Digest::from_hasher(self.hasher);
        if actual != self.digest {
            return Err(FinishError::Mismatch(actual));
        }
        let tmp = self.out.into_inner().map_err(|e| e.into_error())?;
        persist(tmp, &self.dest)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    out.extend(files_under(&path));
                } else {
                    out.push(path);
                }
            }
        }
        out
    }

    #[test]
    fn blobs_copied_from_a_cache_are_verified() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (cache, tree) = (
            Store::open(a.path()).unwrap(),
            Store::open(b.path()).unwrap(),
        );
        let good = b"layer bytes";
        let d = Digest::of_bytes(good);
        let src = tree.layout().blob_data(&d);
        fs::create_dir_all(src.parent().unwrap()).unwrap();
        fs::write(&src, good).unwrap();
        cache.put_blob_copy(&d, &src).unwrap();
        fs::remove_file(&src).unwrap();
        let cached = cache.layout().blob_data(&d);
        assert!(tree.copy_blob_from(&cached, &d, good.len() as u64).unwrap());
        assert_eq!(fs::read(&src).unwrap(), good);
        // Damaged (same size, other bytes): not stored, and dropped from the cache.
        fs::remove_file(&src).unwrap();
        fs::write(&cached, b"LAYER BYTES").unwrap();
        assert!(!tree.copy_blob_from(&cached, &d, good.len() as u64).unwrap());
        assert!(!src.exists() && !cached.exists());
        assert!(!tree.copy_blob_from(&cached, &d, 1).unwrap(), "missing");
    }

    #[test]
    fn blob_is_stored_only_when_its_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let good = b"hello world";
        let d = Digest::of_bytes(good);

        let mut w = s.blob_writer(&d).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"there").unwrap();
        match w.finish() {
            Err(FinishError::Mismatch(actual)) => {
                assert_eq!(actual, Digest::of_bytes(b"hello there"))
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        assert!(!s.layout().blob_data(&d).exists());
        assert_eq!(
            files_under(&dir.path().join(TMP_DIR)),
            [s.tmp.join("lock")],
            "temp file left"
        );

        let mut w = s.blob_writer(&d).unwrap();
        w.write(b"garbage").unwrap();
        w.reset().unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        assert_eq!(w.len(), 11);
        w.finish().unwrap();
        let path = s.layout().blob_data(&d);
        assert_eq!(fs::read(&path).unwrap(), good);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(s.blob_intact(&d, Some(11)).unwrap());
        s.close();
        assert!(!dir.path().join(TMP_DIR).exists());
    }

    #[test]
    fn killed_runs_are_swept_and_live_runs_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let tmp_root = dir.path().join(TMP_DIR);
        // What a SIGKILLed run leaves: its directory, a lock nobody holds, a partial blob.
        let dead = tmp_root.join("run-dead");
        fs::create_dir_all(&dead).unwrap();
        fs::write(dead.join("lock"), b"").unwrap();
        fs::write(dead.join("blob-partial"), b"half a blob").unwrap();
        // A run being created this very moment (no lock file yet): too young to remove.
        fs::create_dir_all(tmp_root.join(".new-young")).unwrap();

        let live = Store::open(dir.path()).unwrap();
        assert!(!dead.exists(), "the dead run's leftovers are removed");
        assert!(tmp_root.join(".new-young").exists());
        let d = Digest::of_bytes(b"from the live run");
        let mut w = live.blob_writer(&d).unwrap();
        w.write(b"from the live run").unwrap();

        // A second run opening the same tree leaves the live one's files alone.
        let other = Store::open(dir.path()).unwrap();
        assert!(live.tmp.join("lock").exists());
        assert_eq!(
            files_under(&live.tmp).len(),
            2,
            "lock and the blob being written"
        );
        w.finish().unwrap();
        assert!(live.blob_intact(&d, None).unwrap());
        drop(other);
        assert!(
            live.tmp.exists(),
            "closing one run keeps the other's directory"
        );
        fs::remove_dir(tmp_root.join(".new-young")).unwrap();
        drop(live);
        assert!(
            !tmp_root.exists(),
            "the last run out removes the temporary root"
        );
    }

    #[test]
    fn damaged_blobs_are_removed_for_refetch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"abc");
        assert!(!s.blob_intact(&d, None).unwrap());
        assert!(s.put_blob_bytes(&d, b"abc").unwrap());
        assert!(
            !s.put_blob_bytes(&d, b"abc").unwrap(),
            "rewritten although intact"
        );
        fs::write(s.layout().blob_data(&d), b"abd").unwrap();
        assert!(!s.blob_intact(&d, Some(3)).unwrap());
        assert!(!s.layout().blob_data(&d).exists());
        assert!(s.put_blob_bytes(&d, b"abc").unwrap());
        // Wrong size is damage too.
        assert!(!s.blob_intact(&d, Some(4)).unwrap());
    }

    #[test]
    fn links_have_exact_contents() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"x");
        let p = s.layout().tag_current_link("a/b", "v1");
        s.write_link(&p, &d.link_contents()).unwrap();
        assert_eq!(
            fs::read(&p).unwrap(),
            format!("sha256:{}", d.hex()).as_bytes()
        );
        fs::write(&p, format!("{d}\n")).unwrap();
        s.write_link(&p, &d.link_contents()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), d.to_string().as_bytes());
    }
}
