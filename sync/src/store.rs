//! Writing into a registry storage tree: every file is written to a temporary file in
//! `<root>/.kpbuild-tmp` and renamed into place, so a file that exists is complete; blobs are
//! renamed only after their sha256 matched.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use kpbuild_modules::registry_layout::{Digest, Layout};

/// The directory under the storage root that holds files being written.
pub const TMP_DIR: &str = ".kpbuild-tmp";

/// A registry storage tree being written.
#[derive(Debug)]
pub struct Store {
    layout: Layout,
    tmp: PathBuf,
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
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
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
    pub fn open(root: &Path) -> io::Result<Store> {
        let layout = Layout::new(root);
        fs::create_dir_all(layout.blobs_dir())?;
        fs::create_dir_all(layout.v2().join("repositories"))?;
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp)?;
        Ok(Store { layout, tmp })
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
    pub fn blob_intact(&self, d: &Digest, size: Option<u64>) -> io::Result<bool> {
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
    pub fn put_blob_bytes(&self, d: &Digest, bytes: &[u8]) -> io::Result<bool> {
        debug_assert_eq!(Digest::of_bytes(bytes), *d);
        if self.blob_intact(d, Some(bytes.len() as u64))? {
            return Ok(false);
        }
        let mut tmp = self.temp("manifest-")?;
        tmp.write_all(bytes)?;
        persist(tmp, &self.layout.blob_data(d))?;
        Ok(true)
    }

    /// Starts writing a blob that arrives in pieces.
    pub fn blob_writer(&self, d: &Digest) -> io::Result<BlobWriter> {
        Ok(BlobWriter {
            out: BufWriter::with_capacity(1 << 20, self.temp("blob-")?),
            hasher: Sha256::new(),
            len: 0,
            digest: d.clone(),
            dest: self.layout.blob_data(d),
        })
    }

    /// Writes a link file (no newline added), unless it already holds `contents`.
    pub fn write_link(&self, path: &Path, contents: &str) -> io::Result<()> {
        if fs::read(path).is_ok_and(|c| c == contents.as_bytes()) {
            return Ok(());
        }
        let mut tmp = self.temp("link-")?;
        tmp.write_all(contents.as_bytes())?;
        persist(tmp, path)
    }

    /// Removes the temporary directory if nothing is left in it.
    pub fn close(&self) {
        let _ = fs::remove_dir(&self.tmp);
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
        assert!(
            files_under(&dir.path().join(TMP_DIR)).is_empty(),
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
