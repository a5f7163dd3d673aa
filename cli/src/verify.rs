//! `kpbuild verify PATH`: checks a bundle — a directory or a `.tar.gz` / `.tar.zst` / `.tar` —
//! against its manifest (`kubeplay.lock.json`), with a precise report of every fault and a
//! non-zero exit when there is one. A tarball is first checked against its `.sha256` file (when
//! present), then unpacked into a temporary directory (entries that could escape are refused).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kpbuild_modules::bundle_tar::{self, BUNDLE_ROOT};
use kpbuild_modules::verify::{Fault, verify_bundle};
use sha2::Digest as _;

#[derive(clap::Args)]
pub struct Args {
    /// The bundle: a directory (the kubeplay tree) or a tarball.
    path: PathBuf,
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
    let r = verify_bundle(&root);
    faults.extend(r.faults.iter().cloned());
    report(&args.path, faults, Some(&r))
}

fn report(
    path: &Path,
    faults: Vec<Fault>,
    r: Option<&kpbuild_modules::verify::Report>,
) -> anyhow::Result<()> {
    if let Some(r) = r {
        eprintln!(
            "kpbuild verify {}: {} files, {} images ({} blobs), {} packages, {} artifacts checked",
            path.display(),
            r.files,
            r.images,
            r.blobs,
            r.packages,
            r.artifacts
        );
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
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got = hex::encode(h.finalize());
    Ok(if got == want {
        vec![]
    } else {
        vec![Fault {
            at: path.display().to_string(),
            what: format!("sha256 {got}, but {} says {want}", sum.display()),
        }]
    })
}

fn unpack(path: &Path, dest: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".tar.zst") {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("reading the tarball")? {
        let mut entry = entry.context("the tarball is truncated or corrupt")?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let rel = bundle_tar::normalize_entry(&raw)?;
        if let Some(target) = entry.link_name()?.map(|l| l.to_string_lossy().into_owned())
            && entry.header().entry_type() == tar::EntryType::Symlink
        {
            bundle_tar::check_symlink(&rel, &target)?;
        }
        let out = dest.join(&rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry
            .unpack(&out)
            .with_context(|| format!("the tarball is truncated or corrupt at `{raw}`"))?;
    }
    Ok(())
}
