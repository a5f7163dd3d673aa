//! `kpbuild`: builds offline Kubernetes installer bundles with BuildKit.
//!
//! Each subcommand lives in its own module; this file only parses the command line and
//! renders errors.

mod archive;
mod build;
mod builder;
mod export;
mod export_oci;
mod interrupt;
mod key_cmd;
mod lists;
mod plan_cmd;
mod sbom;
mod serve;
mod sign;
mod spec_arg;
mod store_cmd;
mod sync_images;
mod verify;
mod verify_registry;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kpbuild",
    version,
    about = "Build offline Kubernetes installer bundles with BuildKit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the files, images or checksums a bundle needs, rendered from kubespray's variables.
    Lists(lists::Args),
    /// Print the plan of a Dockerfile.bundle (every module's work per platform) as JSON.
    Plan(plan_cmd::Args),
    /// Build every module of a Dockerfile.bundle, for every platform, into the local store.
    Build(build::Args),
    /// Merge the module results of the store into a bundle: a directory, a .tar.gz/.tar.zst,
    /// or an OCI image (no Docker daemon or BuildKit needed).
    Export(export::Args),
    /// Manage the local content store of module results: ls, prune.
    Store(store_cmd::Args),
    /// Check a bundle (directory or tarball) against its manifest: files, images, packages,
    /// and its SBOMs; with --key PUB its signatures first.
    Verify(verify::Args),
    /// Sign a bundle (directory or tarball): its lock inside, and a tarball beside it
    /// (minisign's format; Debian's `minisign -V` verifies both).
    Sign(sign::Args),
    /// Signing keys: generate a key pair in minisign's format.
    Key(key_cmd::Args),
    /// Print a bundle's SBOM (SPDX 2.3 or CycloneDX 1.6 JSON): the one inside, or one made
    /// from its manifest.
    Sbom(sbom::Args),
    /// Serve an unpacked bundle: the registry (/v2/) and the files, as nginx and registry:2 do.
    Serve(serve::Args),
    /// Fetch images into a registry:2 storage tree (docker/registry/v2/…), every blob once.
    SyncImages(sync_images::SyncImagesArgs),
    /// Check a registry:2 storage tree: blob digests, links, manifest references, leftovers.
    #[command(hide = true)]
    VerifyRegistry(verify_registry::Args),
    /// Run as a BuildKit frontend (the frontend image's entrypoint; stdio is BuildKit's gRPC).
    #[command(hide = true)]
    Frontend,
    /// Run a job file inside a BuildKit exec op (written by the frontend).
    #[command(hide = true)]
    Worker(worker::Args),
}

/// Where the kpbuild binary is in the frontend image (`FROM scratch`, `COPY kpbuild /kpbuild`).
const FRONTEND_BINARY: &str = "/kpbuild";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lists(args) => lists::run(args),
        Command::Plan(args) => plan_cmd::run(args),
        Command::SyncImages(args) => sync_images::run(args),
        Command::Build(args) => build::run(args),
        Command::Export(args) => export::run(args),
        Command::Store(args) => store_cmd::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Key(args) => key_cmd::run(args),
        Command::Sbom(args) => sbom::run(args),
        Command::Serve(args) => serve::run(args),
        Command::VerifyRegistry(args) => verify_registry::run(args),
        Command::Frontend => kpbuild_frontend::run::main_entry(FRONTEND_BINARY),
        Command::Worker(args) => worker::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Library errors carry their causes in their message already; print a cause only
            // when it adds something.
            let mut shown = e.to_string();
            eprintln!("error: {shown}");
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown = text;
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// Writes lines to stdout; a closed pipe (`kpbuild lists … | head`) is not an error.
pub(crate) fn print_lines<I: IntoIterator<Item = String>>(lines: I) -> anyhow::Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in lines {
        if let Err(e) = writeln!(out, "{line}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
