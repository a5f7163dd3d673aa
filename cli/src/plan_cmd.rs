//! `kpbuild plan`: what every module will do, per platform, as JSON; with `--matrix`, the CI
//! matrix of the spec (every distro × platform) on one line, for GitHub Actions' `fromJSON`.

use kpbuild_bundle::plan::{PlanOptions, matrix, plan};
use kpbuild_paths::source::LocalDir;

use crate::spec_arg::{ContextArg, SpecArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    spec: SpecArg,
    #[command(flatten)]
    context: ContextArg,
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = args.spec.read()?;
    if args.matrix {
        return crate::print_lines([serde_json::to_string(&matrix(&spec.spec))?]);
    }
    let context = args.context.dir(&args.spec.spec);
    let opts = PlanOptions {
        extra_vars: args.extra,
        platforms: args.spec.platform,
        targets: args.target,
        distros: args.distro,
    };
    let plan = plan(&spec, &LocalDir::new(context), &opts)?;
    crate::print_lines([serde_json::to_string_pretty(&plan)?])
}
