//! `kpbuild lists`: the lists of an offline bundle, rendered from kubespray's variables.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::ValueEnum;
use kpbuild_ansible::kubespray::{Arch, Item, Kubespray};
use kpbuild_bundle::plan::load_vars;
use kpbuild_bundle::spec::SpecFile;
use kpbuild_paths::source::{FileSource, LocalDir};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    /// Every `*_download_url` of the download defaults (generate_list.sh's files.list).
    Files,
    /// Every `repo:tag` of `downloads` plus the kubeadm images (generate_list.sh's images.list).
    Images,
    /// `<checksum> <url>` of every file download: sha256 as bare hex, others as `sha512:<hex>`.
    Checksums,
    /// Files and images together, as `file <url>` and `image <ref>` lines.
    All,
}

#[derive(clap::Args)]
pub struct Args {
    /// Which list.
    kind: Kind,
    /// A kubespray checkout (either variable layout).
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "spec",
        required_unless_present = "spec"
    )]
    kubespray: Option<PathBuf>,
    /// Take the kubespray directory and variables from a Dockerfile.bundle.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Build context the spec's paths are relative to (default: the spec's directory).
    #[arg(long, value_name = "DIR", requires = "spec")]
    context: Option<PathBuf>,
    /// Target architecture (default: amd64, or the spec's only platform).
    #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
    arch: Option<Arch>,
    /// Extra variable, highest precedence: NAME=VALUE (a YAML scalar) or @FILE.yml.
    #[arg(short = 'e', long = "extra-vars", value_name = "NAME=VALUE")]
    extra: Vec<String>,
    /// Only what the configured cluster enables: `downloads` entries whose `enabled` holds, plus
    /// the kubeadm images; lines read `file <url>` and `image <ref>`.
    #[arg(long)]
    enabled_only: bool,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::parse(s)
        .ok_or_else(|| format!("unknown architecture `{s}`; use amd64, arm64, arm or ppc64le"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let kubespray = load(&args)?;
    let lines: Vec<String> = match (args.kind, args.enabled_only) {
        (Kind::Files, false) => kubespray.files()?,
        (Kind::Images, false) => kubespray.images()?,
        (Kind::Checksums, false) => kubespray
            .checksums()?
            .into_iter()
            .filter_map(|f| match f.pin {
                Some(pin) => Some(format!("{pin} {}", f.url)),
                None => {
                    eprintln!(
                        "warning: {} has no checksum in kubespray's variables; left out",
                        f.url
                    );
                    None
                }
            })
            .collect(),
        (Kind::Checksums, true) => bail!("--enabled-only applies to files, images and all"),
        (Kind::All, false) => {
            let files = kubespray.files()?.into_iter().map(Item::File);
            let images = kubespray.images()?.into_iter().map(Item::Image);
            files.chain(images).map(|i| i.to_string()).collect()
        }
        (kind, true) => kubespray
            .enabled()?
            .into_iter()
            .filter(|i| match kind {
                Kind::Files => matches!(i, Item::File(_)),
                Kind::Images => matches!(i, Item::Image(_)),
                _ => true,
            })
            .map(|i| i.to_string())
            .collect(),
    };
    // Files kubespray has no build of for this architecture (checksum `0` or empty): left out
    // of every list, said once here.
    for u in kubespray.unbuilt() {
        if u.enabled || !args.enabled_only {
            eprintln!("note: {u}");
        }
    }
    let sorted: BTreeSet<String> = lines.into_iter().collect();
    crate::print_lines(sorted)
}

fn load(args: &Args) -> anyhow::Result<Kubespray> {
    if let Some(dir) = &args.kubespray {
        let arch = args.arch.unwrap_or(Arch::Amd64);
        return Ok(Kubespray::load(dir, arch, &args.extra)?);
    }
    let spec_path = args
        .spec
        .as_deref()
        .expect("clap requires --kubespray or --spec");
    let spec = SpecFile::read(spec_path)?;
    let context = crate::spec_arg::context_dir(spec_path, args.context.as_deref());
    let Some(dir) = spec.spec.vars.kubespray.clone() else {
        bail!(
            "{}: `vars.kubespray` is not set, so there is nothing to list",
            spec_path.display()
        );
    };
    let arch = match (args.arch, spec.spec.platforms.as_slice()) {
        (Some(a), _) => a,
        (None, [only]) => only.arch().expect("spec platforms are bundle platforms"),
        (None, many) => bail!(
            "{} targets {}; choose one with --arch",
            spec_path.display(),
            many.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let ctx = LocalDir::new(context);
    let vars = load_vars(&spec, &ctx)
        .with_context(|| format!("loading the variables of {}", spec_path.display()))?;
    Ok(Kubespray::from_vars(
        &ctx.display(&dir),
        vars,
        arch,
        &args.extra,
    )?)
}
