//! `kpbuild serve DIR`: serves an unpacked bundle (what `kpbuild export --format dir` writes)
//! on a machine with nothing installed — the registry under `/v2/` from `resources/registry`,
//! and every other path a file under `resources/nginx`, as nginx lays them out. This file is
//! the command line and the checks before serving: the directory must hold a bundle that
//! passes `kpbuild verify --no-hash` (every file, blob, package and artifact present with its
//! size; every link, tag, manifest reference and repository index consistent). The server
//! itself, and how it checks digests while serving, is the `kpbuild-serve` crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use kpbuild_bundle::layout;

use kpbuild_serve::{Config, Limits, Registry, Tls};

#[derive(clap::Args)]
pub struct Args {
    /// The unpacked bundle (the directory holding kubeplay.lock.json).
    dir: PathBuf,
    /// Address serving everything: the registry under /v2/ and the files (repeatable).
    #[arg(long = "listen", default_value = "0.0.0.0:8080")]
    listen: Vec<SocketAddr>,
    /// An address serving the registry alone, as the deploy side's `registry_host` expects
    /// (repeatable; e.g. 0.0.0.0:5000).
    #[arg(long = "registry-listen")]
    registry_listen: Vec<SocketAddr>,
    /// TLS: the server certificate (PEM, with its chain) ...
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// ... and its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS with a CA and a server certificate made here for these names (DNS names or IP
    /// addresses), written to --tls-dir and reused while the names stay the same.
    #[arg(long, num_args = 1.., value_name = "NAME")]
    tls_self_signed: Vec<String>,
    /// Where --tls-self-signed writes ca.pem, server.pem and their keys.
    #[arg(long, default_value = "kpbuild-serve-tls")]
    tls_dir: PathBuf,
    /// Directory listings (HTML, as nginx's autoindex); off by default.
    #[arg(long)]
    listings: bool,
    /// One line per request on stderr: client, request, status, length.
    #[arg(long)]
    log_requests: bool,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Bytes a request's line and headers may take (at least 8192); more is answered 431.
    #[arg(long, default_value_t = 16 * 1024)]
    max_header_bytes: usize,
    /// Seconds a client has to send a request's headers (a TLS handshake too).
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a connection may pass without a byte read or written before it is closed.
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = &args.dir;
    if !dir.join(layout::LOCK_FILE).is_file() {
        bail!(
            "{} is not an unpacked bundle (no {}); give the directory `kpbuild export --format dir` \
             wrote, or the kubeplay/ directory of an untarred bundle",
            dir.display(),
            layout::LOCK_FILE
        );
    }
    let t = std::time::Instant::now();
    let report = crate::verify::check_dir_no_hash(dir)?;
    let registry = Registry::load(&dir.join(layout::REGISTRY_ROOT))
        .with_context(|| format!("reading the registry tree of {}", dir.display()))?;
    eprintln!(
        "kpbuild serve {}: verify --no-hash OK ({}) and {} manifests hashed ({} referrers) in {:.1} s",
        dir.display(),
        report.summary(),
        registry.manifest_count(),
        registry.referrer_count(),
        t.elapsed().as_secs_f64()
    );
    if args.max_header_bytes < 8192 {
        bail!("--max-header-bytes must be at least 8192");
    }
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Tls::Files { cert, key },
        _ if !args.tls_self_signed.is_empty() => Tls::SelfSigned {
            dir: args.tls_dir,
            names: args.tls_self_signed,
        },
        _ => Tls::Off,
    };
    kpbuild_serve::serve(Config {
        files_root: dir.join(layout::NGINX_ROOT),
        registry_root: dir.join(layout::REGISTRY_ROOT),
        registry,
        listen: args.listen,
        registry_listen: args.registry_listen,
        tls,
        listings: args.listings,
        log_requests: args.log_requests,
        limits: Limits {
            max_connections: args.max_connections.max(1),
            max_header_bytes: args.max_header_bytes,
            header_timeout: Duration::from_secs(args.header_timeout.max(1)),
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        },
    })
}
