//! `kpbuild-faultproxy`: a seeded fault-injecting HTTP/1.1 proxy for tests (see the crate doc).
//!
//! ```text
//! kpbuild-faultproxy --listen 127.0.0.1:5740 --upstream 127.0.0.1:5710 --seed 7 --rate 0.1 \
//!     --stats target/faults/stats.json --log target/faults/requests.jsonl
//! ```
//!
//! Prints `listening on ADDR` on stderr once it accepts connections; SIGTERM or SIGINT
//! writes the stats a last time and exits 0.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use kpbuild_faultproxy::schedule::parse_kinds;
use kpbuild_faultproxy::{AlwaysRule, Config, FaultKind, Proxy, Schedule};

#[derive(Parser, Debug)]
#[command(
    name = "kpbuild-faultproxy",
    about = "A seeded fault-injecting HTTP/1.1 proxy for kpbuild's tests (loopback only)"
)]
struct Args {
    /// Address to listen on (port 0: any free port, printed on stderr)
    #[arg(long, default_value = "127.0.0.1:5740")]
    listen: String,
    /// The server behind the proxy, host:port
    #[arg(long)]
    upstream: String,
    /// Seed of the fault schedule
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of requests that get a fault, 0 to 1
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Fault kinds drawn from, comma-separated, or `all`: 500,502,503,429,reset,truncate,wrong,stall
    #[arg(long, default_value = "all")]
    kinds: String,
    /// Always fault requests whose target contains SUBSTRING with KIND (repeatable)
    #[arg(long = "always", value_name = "SUBSTRING=KIND")]
    always: Vec<AlwaysRule>,
    /// Fault the first request whose target contains SUBSTRING with KIND (repeatable)
    #[arg(long = "once", value_name = "SUBSTRING=KIND")]
    once: Vec<AlwaysRule>,
    /// Draw faults only for targets containing SUBSTRING (repeatable; default: every request)
    #[arg(long = "only", value_name = "SUBSTRING")]
    only: Vec<String>,
    /// Retry-After seconds sent with 429
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// How long a stall lasts, in milliseconds, before the rest of the body is sent
    #[arg(long, default_value_t = 30_000)]
    stall_ms: u64,
    /// Stats file (JSON), rewritten after every request
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Request log (JSON lines), appended
    #[arg(long)]
    log: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.rate),
        "--rate must be between 0 and 1"
    );
    let kinds: Vec<FaultKind> = parse_kinds(&args.kinds).map_err(anyhow::Error::msg)?;
    let cfg = Config {
        upstream: args.upstream.clone(),
        schedule: Schedule {
            seed: args.seed,
            rate: args.rate,
            kinds: kinds.clone(),
            always: args
                .always
                .iter()
                .cloned()
                .chain(
                    args.once
                        .iter()
                        .cloned()
                        .map(|r| AlwaysRule { once: true, ..r }),
                )
                .collect(),
            only: args.only.clone(),
        },
        retry_after: args.retry_after,
        stall: Duration::from_millis(args.stall_ms),
        stats_path: args.stats.clone(),
        log_path: args.log.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let proxy = Proxy::new(cfg).context("cannot open the log")?;
        eprintln!(
            "kpbuild-faultproxy: listening on {} -> {} (seed {}, rate {}, kinds {}, {} forced rules)",
            listener.local_addr()?,
            args.upstream,
            args.seed,
            args.rate,
            kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(","),
            args.always.len() + args.once.len()
        );
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            r = proxy.clone().serve(listener) => r.context("accept failed")?,
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        proxy.write_stats();
        proxy.flush_log();
        Ok(())
    })
}
