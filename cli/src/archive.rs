//! Bundle tarballs on disk (`.tar.zst`, `.tar.gz`, `.tar`), as `kpbuild export` writes them and
//! `kpbuild sign` rewrites them:
//!
//! - [`write`]: the tar stream goes through a compressor on several threads into `OUT.partial`;
//!   the sha256 of the compressed bytes is computed as they are written and, when the archive is
//!   signed, so is minisign's prehash (on a thread of its own, fed through a pipe): no second
//!   read of the archive. Then `OUT.sha256` (and `OUT.minisig`) are written and all renamed
//!   into place, data on disk before the names (`kpbuild_store::durable`); on SIGINT or SIGTERM
//!   the partial output is removed ([`crate::interrupt`]). An unsigned archive removes a stale
//!   `OUT.minisig` beside it (it cannot be the new archive's).
//! - [`Extras`]: files added to a tar stream in path order (`kubeplay.lock.json.minisig` after
//!   the lock), so the stream stays in the bundle tar's order (`kpbuild_store::bundle_tar`).
//! - [`decompressed`]: the reader matching an archive's name, for `verify` and `sign`.

use std::cmp::Ordering;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow, bail};
use kpbuild_sign::{SecretKey, TrustedComment};
use kpbuild_store::bundle_tar;
use kpbuild_store::durable;
use sha2::Digest as _;

use crate::interrupt::{self, Partial};

/// How a bundle tarball is compressed, read from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    Zstd,
    Gzip,
    None,
}

impl Compression {
    /// `.tar.zst`, `.tar.gz` or `.tgz`, `.tar`; anything else is not a bundle tarball.
    pub fn of_path(path: &Path) -> Option<Compression> {
        let name = path.file_name()?.to_string_lossy();
        if name.ends_with(".tar.zst") {
            Some(Compression::Zstd)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Compression::Gzip)
        } else if name.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// The uncompressed tar stream of `file`, compressed as `compression` says.
pub(crate) fn decompressed<'a, R: Read + 'a>(
    compression: Compression,
    file: R,
) -> anyhow::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::None => Box::new(file),
    })
}

/// `OUT.partial`: where an output is written before it is complete.
pub(crate) fn partial_path(out: &Path) -> PathBuf {
    sibling(out, ".partial")
}

/// `OUT<suffix>` beside `OUT` (`.sha256`, `.minisig`).
pub(crate) fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    out.with_file_name(name)
}

/// How hard and on how many threads to compress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// zstd 1–19 (default 3), gzip 1–9 (default 6).
    pub level: Option<i32>,
    pub threads: usize,
}

impl Settings {
    /// All cores unless `threads` says otherwise.
    pub fn new(level: Option<i32>, threads: Option<usize>) -> Settings {
        Settings {
            level,
            threads: threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }),
        }
    }
}

/// The size of the writes into a compressor.
const FEED: usize = 1 << 20;

/// What the archive's bytes are copied to as they are written: the sha256, and the pipe to
/// the signing thread.
struct Tee {
    sha256: sha2::Sha256,
    pipe: Option<std::io::PipeWriter>,
}

/// A writer that hands what passes through to a [`Tee`] (shared: gzip's compressor owns its
/// writer on a thread of its own).
struct TeeWriter<W: Write> {
    inner: W,
    tee: Arc<Mutex<Tee>>,
}

impl<W: Write> Write for TeeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut tee = self.tee.lock().expect("tee lock");
        tee.sha256.update(&buf[..n]);
        if let Some(pipe) = tee.pipe.as_mut() {
            pipe.write_all(&buf[..n])?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A tar builder over the compressor (its buffer takes entry data directly from the tar
/// writer's copies: no small intermediate copies).
pub(crate) type TarOut<'a> = tar::Builder<BufWriter<&'a mut dyn Write>>;

/// What [`write`] wrote.
pub(crate) struct Written<T> {
    /// What the tar writer returned.
    pub value: T,
    /// The compressed archive's sha256 (hex), as in `OUT.sha256`.
    pub sha256: String,
}

/// Writes the bundle tarball `out`: `tar` writes the entries (and finishes the tar), the
/// compressed bytes go to `OUT.partial`, hashed and, with `sign`, signed as they pass; then
/// `OUT.sha256` (and `OUT.minisig` with `sign`'s trusted comment) and the renames.
pub(crate) fn write<T>(
    out: &Path,
    compression: Compression,
    settings: Settings,
    sign: Option<(&SecretKey, TrustedComment)>,
    tar: impl FnOnce(&mut TarOut<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<Written<T>> {
    // A stale `.partial` (a run killed with SIGKILL) is truncated.
    let partial = Partial::new(partial_path(out));
    let file = interrupt::fs(|| std::fs::File::create(partial.path()))
        .with_context(|| format!("creating {}", partial.path().display()))?;
    let mut signer = None;
    let mut pipe = None;
    if let Some((key, comment)) = sign {
        let (reader, writer) = std::io::pipe().context("a pipe to the signing thread")?;
        let key = key.clone();
        signer = Some(std::thread::spawn(move || {
            kpbuild_sign::sign(&key, reader, &comment)
        }));
        pipe = Some(writer);
    }
    let tee = Arc::new(Mutex::new(Tee {
        sha256: sha2::Sha256::new(),
        pipe,
    }));
    let sink = TeeWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        tee: tee.clone(),
    };
    let result = compress(sink, compression, settings, tar);
    // The signing thread reads to the end of the pipe: closing it ends the prehash.
    let pipe = tee.lock().expect("tee lock").pipe.take();
    drop(pipe);
    let signature = signer.map(|t| t.join().map_err(|_| anyhow!("the signing thread panicked")));
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            partial.discard();
            return Err(e);
        }
    };
    let signature = match signature {
        Some(Ok(Ok(text))) => Some(text),
        Some(Ok(Err(e))) => {
            partial.discard();
            return Err(e.into());
        }
        Some(Err(e)) => {
            partial.discard();
            return Err(e);
        }
        None => None,
    };
    let sha256 = hex::encode(tee.lock().expect("tee lock").sha256.clone().finalize());
    let name = out
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let sum = sibling(out, ".sha256");
    let sig = sibling(out, kpbuild_sign::SUFFIX);
    let (sum_partial, sig_partial) = (partial_path(&sum), partial_path(&sig));
    // The small files are written and all renamed in one step an interruption cannot split.
    partial
        .complete(|p| {
            // Data on disk before the names, names on disk after (kpbuild_store::durable).
            let done = (|| {
                std::fs::write(&sum_partial, format!("{sha256}  {name}\n"))?;
                durable::sync_path(&sum_partial)?;
                if let Some(text) = &signature {
                    std::fs::write(&sig_partial, text)?;
                    durable::sync_path(&sig_partial)?;
                }
                durable::rename(p, out)?;
                durable::rename(&sum_partial, &sum)?;
                match &signature {
                    Some(_) => durable::rename(&sig_partial, &sig),
                    None => interrupt::remove(&sig)
                        .and_then(|_| durable::sync_parent(&sig))
                        .map(|_| ()),
                }
            })();
            if done.is_err() {
                for f in [p, sum_partial.as_path(), sig_partial.as_path()] {
                    let _ = std::fs::remove_file(f);
                }
            }
            done
        })
        .with_context(|| format!("writing {} and {}", out.display(), sum.display()))?;
    Ok(Written { value, sha256 })
}

fn compress<W: Write + Send + 'static, T>(
    sink: W,
    compression: Compression,
    settings: Settings,
    tar: impl FnOnce(&mut TarOut<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    /// Runs `tar` over `enc` and flushes what it wrote into it.
    fn entries<T>(
        enc: &mut dyn Write,
        tar: impl FnOnce(&mut TarOut<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(FEED, enc));
        let value = tar(&mut builder)?;
        builder
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?;
        Ok(value)
    }
    match compression {
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(sink, settings.level.unwrap_or(3))?;
            enc.multithread(settings.threads as u32)?;
            enc.include_checksum(true)?;
            let value = entries(&mut enc, tar)?;
            enc.finish()?.flush()?;
            Ok(value)
        }
        Compression::Gzip => {
            use gzp::ZWriter;
            let lvl = settings.level.unwrap_or(6).clamp(1, 9) as u32;
            let mut enc: gzp::par::compress::ParCompress<gzp::deflate::Gzip, _> =
                gzp::par::compress::ParCompressBuilder::new()
                    .num_threads(settings.threads.max(1))
                    .map_err(|e| anyhow!("gzip threads: {e}"))?
                    .compression_level(gzp::Compression::new(lvl))
                    .from_writer(sink);
            let value = entries(&mut enc, tar)?;
            enc.finish().map_err(|e| anyhow!("gzip: {e}"))?;
            Ok(value)
        }
        Compression::None => {
            let mut sink = sink;
            let value = entries(&mut sink, tar)?;
            sink.flush()?;
            Ok(value)
        }
    }
}

/// A reader that hashes what it reads (sha256): the archive's `.sha256` checked in the same
/// read as its signature.
pub(crate) struct HashingReader<R> {
    inner: R,
    sha256: sha2::Sha256,
    /// No seek: what was hashed is the stream from its start.
    whole: bool,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            sha256: sha2::Sha256::new(),
            whole: true,
        }
    }

    /// The sha256 (hex) of what was read, unless the reader was moved by a seek.
    pub fn sha256(self) -> Option<String> {
        self.whole.then(|| hex::encode(self.sha256.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for HashingReader<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.whole = false;
        self.inner.seek(pos)
    }
}

/// A file added to a bundle's tar stream: its path from the bundle root and its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extra {
    pub path: String,
    pub data: Vec<u8>,
}

/// Files to add to a stream of entries in path order, each handed out when the stream reaches
/// its place.
pub(crate) struct Extras {
    items: Vec<Extra>,
    next: usize,
}

impl Extras {
    pub fn new(mut items: Vec<Extra>) -> Extras {
        items.sort_by(|a, b| bundle_tar::path_order(&a.path, &b.path));
        Extras { items, next: 0 }
    }

    /// Whether one of them has this path.
    pub fn holds(&self, path: &str) -> bool {
        self.items.iter().any(|e| e.path == path)
    }

    /// The ones that go before the entry `path` (from the bundle root), not handed out yet.
    pub fn before(&mut self, path: &str) -> &[Extra] {
        let start = self.next;
        while self.next < self.items.len()
            && bundle_tar::path_order(&self.items[self.next].path, path) == Ordering::Less
        {
            self.next += 1;
        }
        &self.items[start..self.next]
    }

    /// The ones not handed out yet (at the end of the stream).
    pub fn rest(&mut self) -> &[Extra] {
        let start = self.next;
        self.next = self.items.len();
        &self.items[start..]
    }
}

/// Refuses an archive name `kpbuild` cannot write.
pub(crate) fn require(path: &Path) -> anyhow::Result<Compression> {
    match Compression::of_path(path) {
        Some(c) => Ok(c),
        None => bail!(
            "{}: a bundle tarball is named *.tar.zst, *.tar.gz, *.tgz or *.tar",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_come_in_path_order() {
        let mut x = Extras::new(vec![
            Extra {
                path: "kubeplay.lock.json.minisig".into(),
                data: vec![],
            },
            Extra {
                path: "a/z".into(),
                data: vec![],
            },
        ]);
        assert!(x.holds("a/z") && !x.holds("a"));
        let paths = |s: &[Extra]| s.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert!(x.before("a").is_empty());
        assert_eq!(paths(x.before("a-b")), ["a/z"]);
        // `kubeplay.lock.json-x` sorts before `….json.minisig`; `library` after it.
        assert!(x.before("kubeplay.lock.json").is_empty());
        assert!(x.before("kubeplay.lock.json-x").is_empty());
        assert_eq!(paths(x.before("library")), ["kubeplay.lock.json.minisig"]);
        assert!(x.rest().is_empty());
    }

    #[test]
    fn names_beside_an_archive() {
        let p = Path::new("/o/kubeplay-v0.1.0-linux-amd64.tar.zst");
        assert_eq!(
            sibling(p, ".minisig"),
            Path::new("/o/kubeplay-v0.1.0-linux-amd64.tar.zst.minisig")
        );
        assert_eq!(Compression::of_path(p), Some(Compression::Zstd));
        assert_eq!(
            Compression::of_path(Path::new("b.tgz")),
            Some(Compression::Gzip)
        );
        assert!(require(Path::new("b.zip")).is_err());
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;

    fn key() -> (SecretKey, kpbuild_sign::PublicKey) {
        let kp = kpbuild_sign::KeyPairFiles::generate(None).unwrap();
        let sk = kpbuild_sign::SecretKeyFile::parse(&kp.secret)
            .unwrap()
            .unlock(None)
            .unwrap();
        (sk, kp.public_key)
    }

    fn one_file(b: &mut TarOut<'_>) -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "kubeplay/x", &b"hello"[..])?;
        b.finish()?;
        Ok(())
    }

    #[test]
    fn a_signed_archive_is_hashed_and_signed_as_it_is_written() {
        let d = tempfile::tempdir().unwrap();
        let (sk, pk) = key();
        for (name, c) in [
            ("b.tar.zst", Compression::Zstd),
            ("b.tar.gz", Compression::Gzip),
            ("b.tar", Compression::None),
        ] {
            let out = d.path().join(name);
            let comment = TrustedComment::new(
                1,
                name,
                kpbuild_sign::Subject {
                    bundle: "b".into(),
                    version: "v1".into(),
                    platform: "linux/amd64".into(),
                    lock_sha256: "0".repeat(64),
                },
            )
            .unwrap();
            let w = write(
                &out,
                c,
                Settings::new(None, Some(2)),
                Some((&sk, comment.clone())),
                one_file,
            )
            .unwrap();
            let bytes = std::fs::read(&out).unwrap();
            assert_eq!(w.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
            assert_eq!(
                std::fs::read_to_string(sibling(&out, ".sha256")).unwrap(),
                format!("{}  {name}\n", w.sha256)
            );
            let sig = std::fs::read_to_string(sibling(&out, ".minisig")).unwrap();
            let v = kpbuild_sign::verify(&pk, &sig, std::io::Cursor::new(&bytes)).unwrap();
            assert_eq!(v.comment, comment);
            let mut names = std::fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>();
            names.sort();
            assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
            // The content reads back through the matching decompressor.
            let mut ar = tar::Archive::new(decompressed(c, &bytes[..]).unwrap());
            assert_eq!(ar.entries().unwrap().count(), 1);

            // Written again unsigned: the stale signature beside it goes.
            write(&out, c, Settings::new(None, Some(2)), None, one_file).unwrap();
            assert!(!sibling(&out, ".minisig").exists());
        }
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let (sk, _) = key();
        let out = d.path().join("b.tar.zst");
        std::fs::write(&out, b"the old archive").unwrap();
        let comment = TrustedComment::new(
            1,
            "b.tar.zst",
            kpbuild_sign::Subject {
                bundle: "b".into(),
                version: "v1".into(),
                platform: "p".into(),
                lock_sha256: "0".repeat(64),
            },
        )
        .unwrap();
        let e = write(
            &out,
            Compression::Zstd,
            Settings::new(None, Some(2)),
            Some((&sk, comment)),
            |_| -> anyhow::Result<()> { bail!("the source failed") },
        );
        assert!(e.is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"the old archive");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
