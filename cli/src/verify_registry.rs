//! `kpbuild verify-registry DIR`: checks a `registry:2` storage tree (every blob's sha256,
//! every link, every manifest's references, no temporary or stray files) and prints the report:
//! a summary line, then one line per fault, `<path>: <what is wrong> [<code>]`. Exits non-zero
//! when there is a fault. Hidden until `kpbuild verify` (which builds on the same library
//! function, `registry_verify::verify_registry_tree`) exists.

use std::path::PathBuf;

use anyhow::{Result, bail};

use kpbuild_oci::registry_verify::{VerifyOptions, verify_registry_tree_with};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The storage root: the directory holding docker/registry/v2
    #[arg(value_name = "DIR")]
    dir: PathBuf,

    /// Check blobs by path and size only, without hashing them
    #[arg(long)]
    no_hash: bool,

    /// Report what an interrupted sync leaves (temporary files, directories of files never
    /// renamed into place, tags without a current link), but do not fail on it
    #[arg(long)]
    allow_interrupted: bool,
}

pub fn run(args: Args) -> Result<()> {
    let opts = VerifyOptions {
        hash_blobs: !args.no_hash,
        ..VerifyOptions::default()
    };
    let report = verify_registry_tree_with(&args.dir, &opts);
    let lines: Vec<String> = std::iter::once(report.summary())
        .chain(report.problems.iter().map(|p| format!("  {p}")))
        .collect();
    crate::print_lines(lines)?;
    let failing = if args.allow_interrupted {
        report.problems_besides_interrupted_writes().count()
    } else {
        report.problems.len()
    };
    if failing > 0 {
        bail!(
            "{}: {failing} problem{} in the registry tree",
            args.dir.display(),
            if failing == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
