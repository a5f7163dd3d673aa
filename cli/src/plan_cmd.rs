//! `kpbuild plan`: what every module will do, per platform, as JSON; with `--matrix`, the CI
//! matrix of the spec (every distro × platform) on one line, for GitHub Actions' `fromJSON`.

use std::path::{Path, PathBuf};

use kpbuild_modules::plan::{PlanOptions, matrix, plan};
use kpbuild_modules::platform::Platform;
use kpbuild_modules::source::LocalDir;
use kpbuild_modules::spec::SpecFile;

#[derive(clap::Args)]
pub struct Args {
    /// The bundle spec.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "Dockerfile.bundle"
    )]
    spec: PathBuf,
    /// Build context the spec's paths are relative to (default: the spec's directory).
    #[arg(long, value_name = "DIR")]
    context: Option<PathBuf>,
    /// Only these platforms (comma-separated or repeated), e.g. linux/arm64.
    #[arg(long, value_delimiter = ',', value_parser = parse_platform)]
    platform: Vec<Platform>,
    /// Only these modules (default: all).
    #[arg(long)]
    target: Vec<String>,
    /// Only these distros of the os-packages modules (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    distro: Vec<String>,
    /// Extra variable: NAME=VALUE or @FILE.yml.
    #[arg(short = 'e', long = "extra-vars", value_name = "NAME=VALUE")]
    extra: Vec<String>,
    /// Print the CI matrix instead: `{"include":[{"distro":…,"platform":…,"arch":…},…]}`, one
    /// job per distro × platform the spec defines, on one line (for `fromJSON` in GitHub
    /// Actions). Reads only the spec.
    #[arg(long, conflicts_with_all = ["platform", "target", "distro", "extra", "context"])]
    matrix: bool,
}

pub(crate) fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse_bundle(s).map_err(|e| e.to_string())
}

/// The build context: `--context`, else the spec's directory, else the working directory.
pub fn context_dir(spec: &Path, context: Option<&Path>) -> PathBuf {
    context
        .filter(|c| !c.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| {
            spec.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = SpecFile::read(&args.spec)?;
    if args.matrix {
        return crate::print_lines([serde_json::to_string(&matrix(&spec.spec))?]);
    }
    let context = context_dir(&args.spec, args.context.as_deref());
    let opts = PlanOptions {
        extra_vars: args.extra,
        platforms: args.platform,
        targets: args.target,
        distros: args.distro,
    };
    let plan = plan(&spec, &LocalDir::new(context), &opts)?;
    crate::print_lines([serde_json::to_string_pretty(&plan)?])
}
