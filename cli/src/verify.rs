//! `kpbuild verify PATH`: checks a bundle — a directory or a `.tar.gz` / `.tar.zst` / `.tar` —
//! against its manifest (`kubeplay.lock.json`), with a precise report of every fault and a
//! non-zero exit when there is one. A tarball is first checked against its `.sha256` file (when
//! present), then unpacked into a temporary directory (entries that could escape are refused).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use kpbuild_bundle::verify::{Fault, Options, verify_bundle_with};
use kpbuild_oci::registry_verify;
use kpbuild_paths::safe_path::{self, EntryKind, TarEntryChecker};
use kpbuild_store::bundle_tar::BUNDLE_ROOT;

#[derive(clap::Args)]
pub struct Args {
    /// The bundle: a directory (the kubeplay tree) or a tarball.
    path: PathBuf,
    /// Check sizes, links, indexes and manifests without hashing files and blobs (fast; what
    /// `kpbuild serve` checks before it starts).
    #[arg(long)]
    no_hash: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut faults: Vec<Fault> = Vec::new();
    let tmp;
    let root = if args.path.is_dir() {
        args.path.clone()
    } else {
        faults.extend(check_sha256_file(&args.path)?);
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
    let r = verify_bundle_with(
        &root,
        Options {
            hash: !args.no_hash,
        },
    );
    faults.extend(r.faults.iter().cloned());
    report(&args.path, faults, Some(&r))
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

/// Compares a tarball with the digest in `<tarball>.sha256`, when that file exists.
fn check_sha256_file(path: &Path) -> anyhow::Result<Vec<Fault>> {
    let sum = PathBuf::from(format!("{}.sha256", path.display()));
    let Ok(text) = std::fs::read_to_string(&sum) else {
        return Ok(vec![]);
    };
    let want = text.split_whitespace().next().unwrap_or("").to_string();
    let got = registry_verify::sha256_file(path)
        .with_context(|| format!("reading {}", path.display()))?
        .hex()
        .to_string();
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
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".tar.zst") {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
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
