//! `kpbuild sbom BUNDLE [--format spdx|cyclonedx]`: prints the SBOM of a bundle, a directory
//! or a tarball (`.tar.gz`, `.tar.zst`, `.tar`, read as a stream: only the manifest and the
//! SBOMs are kept, nothing is unpacked). The bundle's own SBOM when it has one (said on stderr,
//! with a warning when it is not what its manifest gives: `kpbuild verify` names that fault),
//! else, for a bundle made before kpbuild wrote them, the SBOM made from its manifest (said on
//! stderr too). The bytes are those the build would have written.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kpbuild_bundle::layout::LOCK_FILE;
use kpbuild_bundle::sbom::{Format, render};
use kpbuild_bundle::verify::parse_lock;
use kpbuild_store::bundle_tar::BUNDLE_ROOT;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FormatArg {
    /// SPDX 2.3 JSON (`kubeplay.spdx.json`).
    Spdx,
    /// CycloneDX 1.6 JSON (`kubeplay.cdx.json`).
    Cyclonedx,
}

#[derive(clap::Args)]
pub struct Args {
    /// The bundle: a directory (the kubeplay tree) or a tarball.
    path: PathBuf,
    /// The SBOM's format.
    #[arg(long, value_enum, default_value = "spdx")]
    format: FormatArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let format = match args.format {
        FormatArg::Spdx => Format::Spdx,
        FormatArg::Cyclonedx => Format::CycloneDx,
    };
    let (lock_bytes, inside) = if args.path.is_dir() {
        read_dir(&args.path, format)?
    } else {
        read_tarball(&args.path, format)?
    };
    let text = String::from_utf8(lock_bytes)
        .with_context(|| format!("{}: {LOCK_FILE} is not UTF-8", args.path.display()))?;
    let lock = parse_lock(&text)
        .map_err(|e| anyhow::anyhow!("{}: {LOCK_FILE}: {e}", args.path.display()))?;
    let made = render(&lock, text.as_bytes(), format)?;
    let out = match inside {
        Some(bytes) => {
            if bytes == made {
                eprintln!("kpbuild sbom: the bundle's {}", format.file());
            } else {
                eprintln!(
                    "kpbuild sbom: WARNING: the bundle's {} is not what its {LOCK_FILE} gives \
                     (`kpbuild verify` reports it); printing the bundle's",
                    format.file()
                );
            }
            bytes
        }
        None => {
            eprintln!(
                "kpbuild sbom: the bundle has no {} (made before kpbuild wrote SBOMs): made \
                 from its {LOCK_FILE}",
                format.file()
            );
            made
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// The manifest and the SBOM of a bundle directory (the tree itself, or a directory holding
/// `kubeplay/`, as a tarball unpacks).
fn read_dir(path: &Path, format: Format) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let root = if !path.join(LOCK_FILE).exists() && path.join(BUNDLE_ROOT).join(LOCK_FILE).exists()
    {
        path.join(BUNDLE_ROOT)
    } else {
        path.to_path_buf()
    };
    let lock = std::fs::read(root.join(LOCK_FILE))
        .with_context(|| format!("reading {}", root.join(LOCK_FILE).display()))?;
    let sbom = match std::fs::read(root.join(format.file())) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context(format!("reading {}", root.join(format.file()).display())),
    };
    Ok((lock, sbom))
}

/// The manifest and the SBOM of a tarball, read from its stream (at its root or under
/// `kubeplay/`); it stops once both are read.
fn read_tarball(path: &Path, format: Format) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let mut archive = crate::verify::open_tarball(path)?;
    let (mut lock, mut sbom) = (None, None);
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let mut entry = entry
            .with_context(|| format!("{}: the tarball is truncated or corrupt", path.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let name = name.strip_prefix("./").unwrap_or(&name);
        let name = name
            .strip_prefix(BUNDLE_ROOT)
            .and_then(|n| n.strip_prefix('/'))
            .unwrap_or(name);
        let slot = if name == LOCK_FILE {
            &mut lock
        } else if name == format.file() {
            &mut sbom
        } else {
            continue;
        };
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: reading {name}", path.display()))?;
        *slot = Some(bytes);
        if lock.is_some() && sbom.is_some() {
            break;
        }
    }
    match lock {
        Some(l) => Ok((l, sbom)),
        None => bail!("{}: no {LOCK_FILE} in the tarball", path.display()),
    }
}
