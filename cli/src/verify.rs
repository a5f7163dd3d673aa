//! `kpbuild verify PATH [--key PUB]`: checks a bundle — a directory or a `.tar.gz` / `.tar.zst` /
//! `.tar` — against its manifest (`kubeplay.lock.json`), with a precise report of every fault and
//! a non-zero exit when there is one. A tarball is first checked against its `.sha256` file
//! (when present), then unpacked into a temporary directory (entries that could escape are
//! refused).
//!
//! With `--key` the signatures come first, and a bundle whose signature is refused is not
//! checked further: the archive's (`ARCHIVE.minisig` beside a tarball, when there; checked in
//! the same read as its sha256), then the lock's (`kubeplay.lock.json.minisig`, required). Each
//! refusal names what failed: the lock changed after signing, another bundle's signature (its
//! trusted comment names another bundle, version, platform or lock), another key (both key
//! IDs), an archive changed or truncated after signing, a missing signature.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use kpbuild_bundle::layout::{LOCK_FILE, LOCK_SIGNATURE};
use kpbuild_bundle::verify::{Fault, Options, verify_bundle_with};
use kpbuild_oci::registry_verify;
use kpbuild_paths::safe_path::{self, EntryKind, TarEntryChecker};
use kpbuild_sign::{PublicKey, Subject, Verified, VerifyError};
use kpbuild_store::bundle_tar::BUNDLE_ROOT;

use crate::archive::{self, HashingReader};
use crate::sign::LockFacts;

#[derive(clap::Args)]
pub struct Args {
    /// The bundle: a directory (the kubeplay tree) or a tarball.
    path: PathBuf,
    /// Check sizes, links, indexes and manifests without hashing files and blobs (fast; what
    /// `kpbuild serve` checks before it starts).
    #[arg(long)]
    no_hash: bool,
    /// The public key (minisign's format) the bundle must be signed with: the signatures are
    /// checked first (a missing one is refused), then every entry.
    #[arg(long, value_name = "PUB")]
    key: Option<PathBuf>,
}

/// The public key of `--key`, with its file for messages.
pub(crate) struct GivenKey {
    pub key: PublicKey,
    pub path: PathBuf,
}

impl GivenKey {
    pub fn read(path: &Path) -> anyhow::Result<GivenKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the public key {}", path.display()))?;
        Ok(GivenKey {
            key: PublicKey::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?,
            path: path.to_path_buf(),
        })
    }

    /// A refusal's message: another key's names both IDs and the key file.
    fn refusal(&self, e: &VerifyError) -> String {
        match e {
            VerifyError::WrongKey { .. } => format!("{e} ({})", self.path.display()),
            _ => e.to_string(),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let key = args.key.as_deref().map(GivenKey::read).transpose()?;
    let mut faults: Vec<Fault> = Vec::new();
    let mut archive_signature = None;
    let tmp;
    let root = if args.path.is_dir() {
        args.path.clone()
    } else {
        let mut sha256 = None;
        if let Some(key) = &key {
            match check_archive_signature(&args.path, key)? {
                Ok(None) => eprintln!(
                    "kpbuild verify: no {} beside {}: the archive's own signature is not \
                     checked, the lock's is",
                    archive::sibling(&args.path, kpbuild_sign::SUFFIX).display(),
                    args.path.display()
                ),
                Ok(Some((v, digest))) => {
                    eprintln!(
                        "kpbuild verify: {}: signature OK (key ID {}; {})",
                        args.path.display(),
                        v.key,
                        v.comment
                    );
                    archive_signature = Some(v);
                    sha256 = digest;
                }
                Err(fault) => return refused(&args.path, fault),
            }
        }
        faults.extend(check_sha256_file(&args.path, sha256)?);
        tmp = tempfile::Builder::new()
            .prefix("kpbuild-verify-")
            .tempdir()?;
        if let Err(e) = unpack(&args.path, tmp.path()) {
            faults.push(Fault {
                at: args.path.display().to_string(),
                what: format!("{e:#}"),
            });
            return report(&args.path, faults, None);
        }
        let inner = tmp.path().join(BUNDLE_ROOT);
        if inner.is_dir() {
            inner
        } else {
            tmp.path().to_path_buf()
        }
    };
    if let Some(key) = &key {
        match check_lock_signature(&root, key, archive_signature.as_ref()) {
            Ok(v) => eprintln!(
                "kpbuild verify: {LOCK_FILE}: signature OK (key ID {}; {})",
                v.key, v.comment
            ),
            Err(fault) => return refused(&args.path, fault),
        }
    } else if root.join(LOCK_SIGNATURE).exists() {
        eprintln!(
            "kpbuild verify: the bundle is signed ({LOCK_SIGNATURE}); --key PUB checks the \
             signature"
        );
    }
    let r = verify_bundle_with(
        &root,
        Options {
            hash: !args.no_hash,
        },
    );
    faults.extend(r.faults.iter().cloned());
    report(&args.path, faults, Some(&r))
}

/// A refused signature: reported, and nothing else checked.
fn refused(path: &Path, fault: Fault) -> anyhow::Result<()> {
    eprintln!("kpbuild verify: the signature is refused; the entries were not checked");
    report(path, vec![fault], None)
}

/// The archive's own signature (`ARCHIVE.minisig`), when there is one, checked in the same read
/// as its sha256: `Ok(None)` when it is not there, `Ok(Some(..))` with what it vouches for and
/// the archive's sha256, `Err(fault)` when it is refused. An error reading the files is an
/// error.
#[allow(clippy::type_complexity)]
fn check_archive_signature(
    path: &Path,
    key: &GivenKey,
) -> anyhow::Result<Result<Option<(Verified, Option<String>)>, Fault>> {
    let sig_path = archive::sibling(path, kpbuild_sign::SUFFIX);
    let sig = match std::fs::read_to_string(&sig_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut data = HashingReader::new(file);
    let fault = |at: &Path, what: String| {
        Ok(Err(Fault {
            at: at.display().to_string(),
            what,
        }))
    };
    match kpbuild_sign::verify(&key.key, &sig, &mut data) {
        Ok(v) => Ok(Ok(Some((v, data.sha256())))),
        Err(VerifyError::Mismatch { claims: Ok(c) }) if c.file == name => fault(
            path,
            format!(
                "does not match its signature {}: changed or truncated after it was signed \
                 ({size} bytes now)",
                sig_path.display()
            ),
        ),
        Err(VerifyError::Mismatch { claims: Ok(c) }) => fault(
            &sig_path,
            format!(
                "is the signature of {} ({}), not of {name}: another bundle's signature",
                c.file, c.subject
            ),
        ),
        Err(VerifyError::Mismatch { claims: Err(why) }) => fault(
            &sig_path,
            format!("does not verify against {name}, and {why}"),
        ),
        Err(VerifyError::Io(e)) => Err(anyhow!("reading {}: {e}", path.display())),
        Err(e) => fault(&sig_path, key.refusal(&e)),
    }
}

/// The lock's signature (`kubeplay.lock.json.minisig`, required): what it vouches for, or the
/// fault that refuses it. With the archive's signature, both must name the same bundle and lock.
fn check_lock_signature(
    root: &Path,
    key: &GivenKey,
    archive: Option<&Verified>,
) -> Result<Verified, Fault> {
    let fault = |at: &str, what: String| Fault {
        at: at.to_string(),
        what,
    };
    let lock = std::fs::read(root.join(LOCK_FILE))
        .map_err(|e| fault(LOCK_FILE, format!("cannot read the bundle manifest: {e}")))?;
    let sig = match std::fs::read_to_string(root.join(LOCK_SIGNATURE)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fault(
                LOCK_SIGNATURE,
                format!(
                    "missing: --key {} requires a signed bundle (kpbuild sign BUNDLE --key \
                     SECRET, or kpbuild export --sign SECRET)",
                    key.path.display()
                ),
            ));
        }
        Err(e) => return Err(fault(LOCK_SIGNATURE, format!("cannot read it: {e}"))),
    };
    let facts = LockFacts::of(&lock);
    let this = facts.subject();
    let v = match kpbuild_sign::verify(&key.key, &sig, std::io::Cursor::new(&lock)) {
        Ok(v) => v,
        Err(VerifyError::Mismatch { claims: Ok(c) }) => {
            return Err(mismatch(&c.subject, &facts, this.ok().as_ref()));
        }
        Err(VerifyError::Mismatch { claims: Err(why) }) => {
            return Err(fault(
                LOCK_SIGNATURE,
                format!("does not verify against {LOCK_FILE}, and {why}"),
            ));
        }
        Err(e) => return Err(fault(LOCK_SIGNATURE, key.refusal(&e))),
    };
    let this = this.map_err(|e| fault(LOCK_FILE, format!("{e:#}")))?;
    let diffs = v.comment.subject.differences(&this);
    if !diffs.is_empty() {
        return Err(fault(
            LOCK_SIGNATURE,
            format!(
                "verifies, but its trusted comment names another bundle ({}): another \
                 bundle's signature",
                diffs.join(", ")
            ),
        ));
    }
    if v.comment.file != LOCK_FILE {
        return Err(fault(
            LOCK_SIGNATURE,
            format!(
                "verifies, but its trusted comment names the file {}, not {LOCK_FILE}",
                v.comment.file
            ),
        ));
    }
    if let Some(a) = archive {
        let diffs = a.comment.subject.differences(&this);
        if !diffs.is_empty() {
            return Err(fault(
                &a.comment.file,
                format!(
                    "the archive's signature names another bundle than the lock inside it ({})",
                    diffs.join(", ")
                ),
            ));
        }
    }
    Ok(v)
}

/// Why a lock's signature does not verify, from what its (unauthenticated) trusted comment
/// claims: the lock changed after signing, or the signature is another bundle's.
fn mismatch(claims: &Subject, facts: &LockFacts, this: Option<&Subject>) -> Fault {
    let (at, what) = if claims.lock_sha256 == facts.sha256 {
        (
            LOCK_SIGNATURE,
            format!(
                "does not verify, though it names this {LOCK_FILE} (sha256 {}): the signature \
                 or its trusted comment was altered",
                facts.sha256
            ),
        )
    } else {
        match this {
            Some(this)
                if (&this.bundle, &this.version, &this.platform)
                    != (&claims.bundle, &claims.version, &claims.platform) =>
            {
                (
                    LOCK_SIGNATURE,
                    format!(
                        "is another bundle's signature: it signs {claims}; this bundle is \
                         {this} (or this lock was changed after signing)"
                    ),
                )
            }
            _ => (
                LOCK_FILE,
                format!(
                    "does not match its signature {LOCK_SIGNATURE}: changed after it was signed \
                     (sha256 {} now, {} signed)",
                    facts.sha256, claims.lock_sha256
                ),
            ),
        }
    };
    Fault {
        at: at.to_string(),
        what,
    }
}

/// `kpbuild verify --no-hash DIR` for `kpbuild serve`: the bundle directory's report, or an
/// error listing its faults (at most 20) and saying how to see them all.
pub fn check_dir_no_hash(root: &Path) -> anyhow::Result<kpbuild_bundle::verify::Report> {
    let r = verify_bundle_with(root, Options { hash: false });
    if r.ok() {
        return Ok(r);
    }
    let mut text = String::new();
    for f in r.faults.iter().take(20) {
        text.push_str(&format!("\n  FAULT {f}"));
    }
    bail!(
        "{} fails `kpbuild verify --no-hash` with {} fault(s); nothing is served:{text}\n\
         run `kpbuild verify {}` for the whole report",
        root.display(),
        r.faults.len(),
        root.display()
    )
}

fn report(
    path: &Path,
    faults: Vec<Fault>,
    r: Option<&kpbuild_bundle::verify::Report>,
) -> anyhow::Result<()> {
    if let Some(r) = r {
        eprintln!("kpbuild verify {}: {} checked", path.display(), r.summary());
    }
    if faults.is_empty() {
        eprintln!("kpbuild verify: OK");
        return Ok(());
    }
    for f in &faults {
        println!("FAULT {f}");
    }
    bail!("{} fault(s) in {}", faults.len(), path.display())
}

/// Compares a tarball with the digest in `<tarball>.sha256`, when that file exists; `known` is
/// its sha256 when it was read already (with its signature).
fn check_sha256_file(path: &Path, known: Option<String>) -> anyhow::Result<Vec<Fault>> {
    let sum = archive::sibling(path, ".sha256");
    let Ok(text) = std::fs::read_to_string(&sum) else {
        return Ok(vec![]);
    };
    let want = text.split_whitespace().next().unwrap_or("").to_string();
    let got = match known {
        Some(d) => d,
        None => registry_verify::sha256_file(path)
            .with_context(|| format!("reading {}", path.display()))?
            .hex()
            .to_string(),
    };
    Ok(if got == want {
        vec![]
    } else {
        vec![Fault {
            at: path.display().to_string(),
            what: format!("sha256 {got}, but {} says {want}", sum.display()),
        }]
    })
}

/// A bundle tarball's tar stream, decompressed by its name (`.tar.zst`, `.tar.gz`, `.tgz`,
/// else plain `.tar`).
pub(crate) fn open_tarball(path: &Path) -> anyhow::Result<tar::Archive<Box<dyn Read>>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Anything not named .tar.zst or .tar.gz is read as a plain tar.
    let compression = archive::Compression::of_path(path).unwrap_or(archive::Compression::None);
    let reader: Box<dyn Read> = archive::decompressed(compression, f)?;
    Ok(tar::Archive::new(reader))
}

fn unpack(path: &Path, dest: &Path) -> anyhow::Result<()> {
    let mut archive = open_tarball(path)?;
    // Names, link targets and writes through earlier links are checked before anything is
    // written: a crafted tarball cannot reach outside `dest`.
    let mut checker = TarEntryChecker::new();
    for entry in archive.entries().context("reading the tarball")? {
        let mut entry = entry.context("the tarball is truncated or corrupt")?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let link = entry
            .link_name()?
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Symlink => EntryKind::Symlink(&link),
            tar::EntryType::Link => EntryKind::Hardlink(&link),
            other => bail!(
                "{}: entry `{raw}` has type {other:?}; a bundle holds files, directories and links only",
                path.display()
            ),
        };
        let rel = checker
            .check(&raw, kind)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let out = dest.join(&rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if let EntryKind::Hardlink(target) = kind {
            // Relative to the archive's root (the checker refused anything else), not to the
            // working directory as `Entry::unpack` would take it.
            let target = safe_path::relative_path(target, "the bundle")
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            std::fs::hard_link(dest.join(&target), &out).with_context(|| {
                format!("the tarball's hard link `{raw}` names `{target}`, which is not before it")
            })?;
            continue;
        }
        entry
            .unpack(&out)
            .with_context(|| format!("the tarball is truncated or corrupt at `{raw}`"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(dir: &Path, entries: &[(&str, Option<&str>, bool)]) -> PathBuf {
        // (name, link target, hard link?) — no target: a small file.
        let p = dir.join("bundle.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
        for (name, target, hard) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match target {
                None => {
                    h.set_size(4);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, name, &b"data"[..]).unwrap();
                }
                Some(t) => {
                    h.set_size(0);
                    h.set_entry_type(if *hard {
                        tar::EntryType::Link
                    } else {
                        tar::EntryType::Symlink
                    });
                    b.append_link(&mut h, name, t).unwrap();
                }
            }
        }
        b.finish().unwrap();
        p
    }

    #[test]
    fn unpack_refuses_a_write_through_a_link_out_of_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        // d -> . ; x -> d/.. (climbs out through d) ; x/evil would land beside dest.
        let t = tarball(
            dir.path(),
            &[
                ("d", Some("."), false),
                ("x", Some("d/.."), false),
                ("x/evil", None, false),
            ],
        );
        let e = unpack(&t, &dest).unwrap_err().to_string();
        assert!(e.contains("bundle.tar") && e.contains('x'), "{e}");
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn unpack_makes_hard_links_inside_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let t = tarball(
            dir.path(),
            &[("a/f", None, false), ("a/g", Some("a/f"), true)],
        );
        unpack(&t, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("a/g")).unwrap(), b"data");
        let out = tarball(
            dir.path(),
            &[("a/f", None, false), ("a/g", Some("../f"), true)],
        );
        let dest2 = dir.path().join("dest2");
        std::fs::create_dir(&dest2).unwrap();
        assert!(unpack(&out, &dest2).is_err());
    }
}
