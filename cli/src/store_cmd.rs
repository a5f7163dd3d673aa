//! `kpbuild store ls|prune` and the `--store DIR` option `build` and `export` share: where the
//! local content store of module results is (`kpbuild_store::store` owns its format).

use std::path::PathBuf;

use anyhow::Context;
use kpbuild_store::store::{Access, Store};

/// The store option of `build`, `export` and `store`.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArg {
    /// The local content store of module results (default: $XDG_CACHE_HOME/kpbuild/store,
    /// else ~/.cache/kpbuild/store).
    #[arg(
        long = "store",
        value_name = "DIR",
        env = "KPBUILD_STORE",
        global = true
    )]
    dir: Option<PathBuf>,
}

impl StoreArg {
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(c) => PathBuf::from(c),
            None => PathBuf::from(
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .context("neither --store, KPBUILD_STORE, XDG_CACHE_HOME nor HOME is set: say where the store is with --store DIR")?,
            )
            .join(".cache"),
        };
        Ok(cache.join("kpbuild").join("store"))
    }

    pub fn open(&self, access: Access) -> anyhow::Result<Store> {
        let dir = self.dir()?;
        Ok(Store::open(&dir, access)?)
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List the module results in the store: bundle, version, module, platform, size, tree.
    Ls {
        /// Print the refs as JSON (one array).
        #[arg(long)]
        json: bool,
    },
    /// Remove what no kept module result needs (and leftovers of interrupted writes).
    Prune {
        /// Keep only the N newest versions of each bundle (default: keep every version).
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Ls { json } => {
            let store = args.store.open(Access::Shared)?;
            let refs = store.refs()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&refs)?);
                return Ok(());
            }
            let mut lines = vec![format!(
                "{:<12} {:<10} {:<12} {:<14} {:>8} {:>10}  tree",
                "bundle", "version", "module", "platform", "entries", "MiB"
            )];
            for r in &refs {
                lines.push(format!(
                    "{:<12} {:<10} {:<12} {:<14} {:>8} {:>10.1}  {}",
                    r.key.bundle,
                    r.key.version,
                    r.key.module,
                    r.key.platform.to_string(),
                    r.entries,
                    r.bytes as f64 / 1048576.0,
                    &r.tree.hex()[..12]
                ));
            }
            crate::print_lines(lines)?;
            let u = store.usage()?;
            eprintln!(
                "store {}: {} module results, {} trees, {} files ({:.1} MiB on disk){}",
                store.root().display(),
                refs.len(),
                u.trees,
                u.blobs,
                u.blob_bytes as f64 / 1048576.0,
                if u.leftovers > 0 {
                    format!(
                        "; {} files of interrupted or running writes in tmp/ (`kpbuild store prune` removes them when nothing runs)",
                        u.leftovers
                    )
                } else {
                    String::new()
                }
            );
        }
        Command::Prune { keep_last } => {
            let store = args.store.open(Access::Exclusive)?;
            if keep_last == Some(0) {
                eprintln!("kpbuild store prune: --keep-last 0 removes every module result");
            }
            let p = store.prune(keep_last)?;
            let u = store.usage()?;
            eprintln!(
                "kpbuild store prune {}: removed {} module results, {} trees, {} files and {} leftovers ({:.1} MiB); kept {} files ({:.1} MiB)",
                store.root().display(),
                p.refs,
                p.trees,
                p.blobs,
                p.leftovers,
                p.bytes as f64 / 1048576.0,
                u.blobs,
                u.blob_bytes as f64 / 1048576.0
            );
        }
    }
    Ok(())
}
