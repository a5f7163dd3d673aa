//! `kpbuild sign BUNDLE --key KEY`, and the signing `kpbuild export --sign` shares: the secret
//! key read (its password from `KPBUILD_SIGN_PASSWORD`, else asked on the terminal, never a
//! command-line argument), the lock's facts (sha256, bundle, version, platform) that every
//! trusted comment names, and the lock's signature `kubeplay.lock.json.minisig`.
//!
//! - a directory: the lock's signature is written beside the lock (temporary name, renamed);
//! - a tarball: the lock is read from the start of the archive (it sorts before `resources/`),
//!   signed, and the archive rewritten in one pass into `ARCHIVE.partial` with the signature
//!   entry after the lock's (an older one replaced), every other entry copied header and data as
//!   they were, recompressed alike (`--level`, `--threads`); the new archive is signed as it is
//!   written; then `ARCHIVE`, `ARCHIVE.sha256` (the digest changes) and `ARCHIVE.minisig` are
//!   renamed into place ([`crate::archive::write`]). The input is checked as it is read: its
//!   `.sha256` (when there is one) and its compression's own checksum; a damaged archive is
//!   not signed.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use kpbuild_bundle::layout::{LOCK_FILE, LOCK_SIGNATURE};
use kpbuild_bundle::lock::Lock;
use kpbuild_sign::{SecretKey, SecretKeyFile, Subject, TrustedComment};
use kpbuild_store::bundle_tar::BUNDLE_ROOT;
use kpbuild_store::durable;
use sha2::Digest as _;

use crate::archive::{self, Compression, Extra, Extras, HashingReader};

/// Where an encrypted secret key's password comes from when no terminal can ask (CI).
pub(crate) const PASSWORD_ENV: &str = "KPBUILD_SIGN_PASSWORD";

#[derive(clap::Args)]
pub struct Args {
    /// The bundle: a directory (the kubeplay tree) or a tarball (.tar.zst, .tar.gz, .tar).
    bundle: PathBuf,
    /// The secret key (minisign's format, `kpbuild key generate`); an encrypted key's password
    /// comes from KPBUILD_SIGN_PASSWORD, else from the terminal.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Compression level of the rewritten tarball (zstd 1–19, default 3; gzip 1–9, default 6).
    #[arg(long)]
    level: Option<i32>,
    /// Compression threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let key = read_secret_key(&args.key)?;
    let started = std::time::Instant::now();
    if args.bundle.is_dir() {
        let (sig, subject) = sign_dir(&args.bundle, &key)?;
        eprintln!(
            "kpbuild sign: {} (key ID {}): {subject}",
            sig.display(),
            key.id()
        );
        return Ok(());
    }
    let compression = archive::require(&args.bundle)?;
    // The signal handler's task runs on the runtime's own thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    crate::interrupt::remove_partials_on_signal(&runtime, "kpbuild sign")?;
    let settings = archive::Settings::new(args.level, args.threads);
    let (subject, sha256) = sign_archive(&args.bundle, compression, &key, settings)?;
    eprintln!(
        "kpbuild sign: {} (key ID {}): {subject}\n  rewritten with {BUNDLE_ROOT}/{LOCK_SIGNATURE} \
         inside (sha256 {sha256}), {} and {} beside it, in {:.1}s",
        args.bundle.display(),
        key.id(),
        archive::sibling(&args.bundle, ".sha256").display(),
        archive::sibling(&args.bundle, kpbuild_sign::SUFFIX).display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Seconds since the epoch: when a signature is made.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads a secret key, asking for its password when it is encrypted.
pub(crate) fn read_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret key {}", path.display()))?;
    let file = SecretKeyFile::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let password = if file.is_encrypted() {
        let what = format!("the secret key {}", path.display());
        Some(password(
            std::env::var(PASSWORD_ENV),
            |p| rpassword::prompt_password(p),
            false,
            &what,
        )?)
    } else {
        None
    };
    file.unlock(password.as_deref())
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// A password: `KPBUILD_SIGN_PASSWORD` when set (`env`), else asked through `prompt` (the
/// terminal), twice when `confirm`; never empty.
pub(crate) fn password(
    env: Result<String, std::env::VarError>,
    mut prompt: impl FnMut(&str) -> std::io::Result<String>,
    confirm: bool,
    what: &str,
) -> anyhow::Result<String> {
    let p = match env {
        Ok(p) => {
            if p.is_empty() {
                bail!("{PASSWORD_ENV} is set but empty: {what} needs a password");
            }
            return Ok(p);
        }
        Err(std::env::VarError::NotUnicode(_)) => bail!("{PASSWORD_ENV} is not UTF-8"),
        Err(std::env::VarError::NotPresent) => {
            prompt(&format!("Password for {what}: ")).map_err(|e| {
                anyhow!(
                    "{what} needs a password: set {PASSWORD_ENV}, or run on a terminal to be \
                     asked ({e})"
                )
            })?
        }
    };
    if p.is_empty() {
        bail!("an empty password for {what}: give one (or use an unencrypted key, --unencrypted)");
    }
    if confirm && prompt(&format!("Password for {what} (again): "))? != p {
        bail!("the two passwords for {what} differ");
    }
    Ok(p)
}

/// What a lock's signature vouches for: its sha256, and its header when it reads as a lock.
pub(crate) struct LockFacts {
    pub sha256: String,
    /// `bundle.name`, `bundle.version`, `bundle.platform`; `Err` when it is no lock.
    pub header: Result<(String, String, String), String>,
}

impl LockFacts {
    pub fn of(lock: &[u8]) -> LockFacts {
        LockFacts {
            sha256: hex::encode(sha2::Sha256::digest(lock)),
            header: serde_json::from_slice::<Lock>(lock)
                .map(|l| (l.bundle.name, l.bundle.version, l.bundle.platform))
                .map_err(|e| e.to_string()),
        }
    }

    /// The subject of its signatures; an error when it is no lock.
    pub fn subject(&self) -> anyhow::Result<Subject> {
        let (bundle, version, platform) = self
            .header
            .clone()
            .map_err(|e| anyhow!("{LOCK_FILE} is not a bundle manifest: {e}"))?;
        Ok(Subject {
            bundle,
            version,
            platform,
            lock_sha256: self.sha256.clone(),
        })
    }
}

/// The lock's signature, as the file `kubeplay.lock.json.minisig` at the bundle root.
pub(crate) fn lock_signature(
    key: &SecretKey,
    lock: &[u8],
    subject: &Subject,
    timestamp: u64,
) -> anyhow::Result<Extra> {
    let comment = TrustedComment::new(timestamp, LOCK_FILE, subject.clone())?;
    Ok(Extra {
        path: LOCK_SIGNATURE.to_string(),
        data: kpbuild_sign::sign(key, lock, &comment)?.into_bytes(),
    })
}

/// Signs the lock of the bundle directory `dir`: `dir/kubeplay.lock.json.minisig`.
pub(crate) fn sign_dir(dir: &Path, key: &SecretKey) -> anyhow::Result<(PathBuf, Subject)> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::read(&lock_path).with_context(|| {
        format!(
            "reading {}: is {} a bundle?",
            lock_path.display(),
            dir.display()
        )
    })?;
    let subject = LockFacts::of(&lock).subject()?;
    let sig = lock_signature(key, &lock, &subject, now())?;
    let dest = dir.join(&sig.path);
    let tmp = archive::partial_path(&dest);
    std::fs::write(&tmp, &sig.data)
        .and_then(|()| durable::rename(&tmp, &dest))
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok((dest, subject))
}

/// The path of an entry of a bundle tarball from the bundle root (`kubeplay/a` → `a`).
fn in_bundle(name: &str) -> &str {
    name.strip_prefix(BUNDLE_ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(name)
}

fn entry_name(path: &Path, e: &tar::Entry<'_, impl Read>) -> anyhow::Result<String> {
    String::from_utf8(e.path_bytes().into_owned())
        .map_err(|_| anyhow!("{}: an entry's name is not UTF-8", path.display()))
}

/// The lock of a bundle tarball, read from its start.
fn read_lock(path: &Path, compression: Compression) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ar = tar::Archive::new(archive::decompressed(compression, f)?);
    for entry in ar.entries().context("reading the tarball")? {
        let mut e = entry.with_context(|| format!("{} is truncated or corrupt", path.display()))?;
        if in_bundle(&entry_name(path, &e)?) == LOCK_FILE
            && e.header().entry_type() == tar::EntryType::Regular
        {
            let mut lock = Vec::new();
            e.read_to_end(&mut lock)
                .with_context(|| format!("{} is truncated or corrupt", path.display()))?;
            return Ok(lock);
        }
    }
    bail!(
        "{} holds no {BUNDLE_ROOT}/{LOCK_FILE}: not a bundle",
        path.display()
    )
}

/// Signs a bundle tarball (see the module's documentation): what it signed, and the new
/// archive's sha256.
fn sign_archive(
    path: &Path,
    compression: Compression,
    key: &SecretKey,
    settings: archive::Settings,
) -> anyhow::Result<(Subject, String)> {
    let lock = read_lock(path, compression)?;
    let subject = LockFacts::of(&lock).subject()?;
    let now = now();
    let extras = Extras::new(vec![lock_signature(key, &lock, &subject, now)?]);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let comment = TrustedComment::new(now, name, subject.clone())?;
    let sum = archive::sibling(path, ".sha256");
    let want = match std::fs::read_to_string(&sum) {
        Ok(text) => Some(text.split_whitespace().next().unwrap_or("").to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", sum.display())),
    };
    let written = archive::write(path, compression, settings, Some((key, comment)), |b| {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut hashed = HashingReader::new(f);
        {
            let mut dec = archive::decompressed(compression, &mut hashed)?;
            copy_entries(path, &mut dec, b, extras)?;
            // To the end of the compressed stream: its own checksum is checked there.
            std::io::copy(&mut dec, &mut std::io::sink())
                .with_context(|| format!("{} is truncated or corrupt", path.display()))?;
        }
        std::io::copy(&mut hashed, &mut std::io::sink())?;
        let got = hashed.sha256().unwrap_or_default();
        if let Some(want) = &want
            && *want != got
        {
            bail!(
                "{} has sha256 {got}, but {} says {want}: a damaged archive is not signed",
                path.display(),
                sum.display()
            );
        }
        Ok(())
    })?;
    Ok((subject, written.sha256))
}

/// Copies the entries of the tar stream `input` into `b`, headers and data as they are, the
/// `extras` in their places and an older lock signature left out.
fn copy_entries(
    path: &Path,
    input: &mut dyn Read,
    b: &mut archive::TarOut<'_>,
    mut extras: Extras,
) -> anyhow::Result<()> {
    let corrupt = || format!("{} is truncated or corrupt", path.display());
    let mut ar = tar::Archive::new(input);
    let mut epoch = 0;
    for entry in ar.entries().with_context(corrupt)? {
        let mut e = entry.with_context(corrupt)?;
        let name = entry_name(path, &e)?;
        let rel = in_bundle(&name).to_string();
        if rel == LOCK_SIGNATURE {
            continue;
        }
        if rel == LOCK_FILE {
            epoch = e.header().mtime()?;
        }
        for x in extras.before(&rel) {
            crate::export::append_extra(b, x, epoch, &format!("{BUNDLE_ROOT}/{}", x.path))?;
        }
        let mut h = e.header().clone();
        match h.entry_type() {
            tar::EntryType::Directory => b.append_data(&mut h, &name, std::io::empty())?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                b.append_data(&mut h, &name, &mut e).with_context(corrupt)?
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("{}: link `{name}` has no target", path.display()))?
                    .into_owned();
                b.append_link(&mut h, &name, OsStr::from_bytes(&target))?
            }
            other => bail!(
                "{}: entry `{name}` has type {other:?}; a bundle holds files, directories and \
                 links only",
                path.display()
            ),
        }
    }
    for x in extras.rest() {
        crate::export::append_extra(b, x, epoch, &format!("{BUNDLE_ROOT}/{}", x.path))?;
    }
    b.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::env::VarError;
    use std::io::ErrorKind;

    use super::*;

    fn no_prompt(_: &str) -> std::io::Result<String> {
        panic!("asked on the terminal")
    }

    #[test]
    fn the_password_comes_from_the_environment_first_then_the_terminal() {
        assert_eq!(
            password(Ok("from env".into()), no_prompt, true, "k").unwrap(),
            "from env"
        );
        let e = password(Ok(String::new()), no_prompt, false, "k").unwrap_err();
        assert!(e.to_string().contains("set but empty"), "{e}");
        // Asked twice when confirming; the two must agree.
        let mut answers = vec!["pw", "pw"].into_iter();
        let p = password(
            Err(VarError::NotPresent),
            |_| Ok(answers.next().unwrap().to_string()),
            true,
            "k",
        );
        assert_eq!(p.unwrap(), "pw");
        let mut answers = vec!["pw", "other"].into_iter();
        let e = password(
            Err(VarError::NotPresent),
            |_| Ok(answers.next().unwrap().to_string()),
            true,
            "k",
        )
        .unwrap_err();
        assert!(e.to_string().contains("differ"), "{e}");
        let e = password(Err(VarError::NotPresent), |_| Ok(String::new()), false, "k").unwrap_err();
        assert!(e.to_string().contains("empty password"), "{e}");
        // No terminal: the message says where a password comes from.
        let e = password(
            Err(VarError::NotPresent),
            |_| Err(std::io::Error::from(ErrorKind::NotFound)),
            false,
            "the secret key k.key",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the secret key k.key needs a password: set KPBUILD_SIGN_PASSWORD"),
            "{e}"
        );
    }

    #[test]
    fn lock_facts_name_the_bundle_or_say_it_is_none() {
        let lock = br#"{"format": "kpbuild.lock/v1", "kpbuild": "0.1.0",
            "bundle": {"name": "kubeplay", "version": "v0.1.0", "platform": "linux/arm64", "modules": []},
            "spec": {"file": "Dockerfile.bundle", "sha256": "00"}}"#;
        let s = LockFacts::of(lock).subject().unwrap();
        assert_eq!(
            (s.bundle.as_str(), s.version.as_str(), s.platform.as_str()),
            ("kubeplay", "v0.1.0", "linux/arm64")
        );
        assert_eq!(s.lock_sha256, hex::encode(sha2::Sha256::digest(lock)));
        let e = LockFacts::of(b"{}").subject().unwrap_err().to_string();
        assert!(
            e.starts_with("kubeplay.lock.json is not a bundle manifest"),
            "{e}"
        );
        assert_eq!(in_bundle("kubeplay/a/b"), "a/b");
        assert_eq!(in_bundle("kubeplay/"), "");
        assert_eq!(in_bundle("other/a"), "other/a");
    }

    #[test]
    fn the_lock_signature_name_is_the_lock_and_the_suffix() {
        assert_eq!(
            LOCK_SIGNATURE,
            format!("{LOCK_FILE}{}", kpbuild_sign::SUFFIX)
        );
    }
}
