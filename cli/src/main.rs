//! `kpbuild`: build offline Kubernetes installer bundles with BuildKit.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod sync_images;

#[derive(Parser, Debug)]
#[command(
    name = "kpbuild",
    version,
    about = "Build offline Kubernetes installer bundles with BuildKit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fetch images into a registry:2 storage tree (docker/registry/v2/...)
    SyncImages(sync_images::SyncImagesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::SyncImages(args) => sync_images::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
