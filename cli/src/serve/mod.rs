//! `kpbuild serve DIR`: serves an unpacked bundle (what `kpbuild export --format dir` writes)
//! on a machine with nothing installed — the registry under `/v2/` from `resources/registry`,
//! and every other path a file under `resources/nginx`, as nginx lays them out — so that an
//! offline install needs neither a container engine nor the nginx and registry images first.
//!
//! Files of this directory:
//! - `mod.rs` (this file): the command line, the checks before serving (`verify --no-hash`,
//!   the registry index), the shared state and its per-client summary, signals;
//! - `listen.rs`: listeners, TLS handshakes, the connection limit, header and idle timeouts;
//! - `handler.rs`: one request to one response (registry, files, `/-/healthy`);
//! - `body.rs`: response bodies, streamed from files with bounded memory, counted per client,
//!   blob digests checked;
//! - `tls.rs`: certificates from files or made here (`--tls-self-signed`).
//!
//! The pure logic (request paths, ranges, registry routes and index) is in
//! `kpbuild_modules::serve`.
//!
//! **Digest policy.** Before serving, the bundle must pass `kpbuild verify --no-hash` (every
//! file, blob, package and artifact present with its size; every link, tag, manifest reference
//! and repository index consistent) and every manifest is hashed against its digest while the
//! registry index is read. Blobs are hashed while served: the first time a blob is sent whole,
//! its sha256 is computed on the way and the last chunk is held back until it matches, so no
//! client ever receives a complete blob with the wrong content; on a mismatch the response is
//! cut short, the path is logged, and the blob is answered with 500 from then on. A blob once
//! matched is not hashed again while the process lives. Range requests are not hashed (clients
//! check the digest of what they assemble). Files under `resources/nginx` are served as they
//! are: `kpbuild verify` (with hashing) checks them against `kubeplay.lock.json`, and apt checks
//! each package against the repository index.

mod body;
mod handler;
mod listen;
mod tls;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use kpbuild_modules::layout;
use kpbuild_modules::registry_layout::Digest;
use kpbuild_modules::serve::registry::Registry;

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

/// Which part an address serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The registry under /v2/ and the files.
    All,
    /// The registry alone.
    Registry,
}

/// What every connection shares.
pub struct State {
    pub files_root: PathBuf,
    pub registry_root: PathBuf,
    pub registry: Registry,
    pub listings: bool,
    pub log_requests: bool,
    pub stats: Stats,
    verified: Mutex<HashSet<Digest>>,
    corrupt: Mutex<HashSet<Digest>>,
}

impl State {
    pub fn is_verified(&self, d: &Digest) -> bool {
        self.verified.lock().unwrap().contains(d)
    }
    pub fn is_corrupt(&self, d: &Digest) -> bool {
        self.corrupt.lock().unwrap().contains(d)
    }
    pub fn blob_verified(&self, d: &Digest) {
        self.verified.lock().unwrap().insert(d.clone());
    }
    pub fn blob_corrupt(&self, d: &Digest, path: &Path, actual: &Digest) {
        eprintln!(
            "kpbuild serve: ERROR blob {d} ({}) hashes to {actual}: the response was cut short and the blob is refused from now on; run `kpbuild verify`",
            path.display()
        );
        self.corrupt.lock().unwrap().insert(d.clone());
    }
}

/// Requests and bytes sent per client address.
#[derive(Default)]
pub struct Stats {
    clients: Mutex<BTreeMap<IpAddr, (u64, u64)>>,
}

impl Stats {
    pub fn add_request(&self, client: IpAddr) {
        self.clients.lock().unwrap().entry(client).or_default().0 += 1;
    }
    pub fn add_bytes(&self, client: IpAddr, n: u64) {
        self.clients.lock().unwrap().entry(client).or_default().1 += n;
    }
    /// One line per client: requests and bytes of response bodies sent.
    pub fn summary(&self) -> Vec<String> {
        self.clients
            .lock()
            .unwrap()
            .iter()
            .map(|(ip, (req, bytes))| {
                format!(
                    "kpbuild serve: client {ip}: {req} requests, {bytes} bytes ({:.1} MiB)",
                    *bytes as f64 / 1048576.0
                )
            })
            .collect()
    }
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
        "kpbuild serve {}: verify --no-hash OK ({} files, {} images, {} blobs, {} packages) and {} manifests hashed in {:.1} s",
        dir.display(),
        report.files,
        report.images,
        report.blobs,
        report.packages,
        registry.manifest_count(),
        t.elapsed().as_secs_f64()
    );
    if args.max_header_bytes < 8192 {
        bail!("--max-header-bytes must be at least 8192");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls::server_config(c, k)?),
        _ if !args.tls_self_signed.is_empty() => {
            let made = tls::self_signed(&args.tls_dir, &args.tls_self_signed)?;
            let ports: Vec<u16> = args
                .listen
                .iter()
                .chain(&args.registry_listen)
                .map(|a| a.port())
                .collect();
            eprintln!(
                "{}{}",
                if made.made { "" } else { "(reused) " },
                tls::trust_help(&made.ca, &args.tls_self_signed, &ports)
            );
            Some(tls::server_config(&made.cert, &made.key)?)
        }
        _ => None,
    };
    let state = Arc::new(State {
        files_root: dir.join(layout::NGINX_ROOT),
        registry_root: dir.join(layout::REGISTRY_ROOT),
        registry,
        listings: args.listings,
        log_requests: args.log_requests,
        stats: Stats::default(),
        verified: Mutex::default(),
        corrupt: Mutex::default(),
    });
    let limits = listen::Limits {
        max_connections: args.max_connections.max(1),
        max_header_bytes: args.max_header_bytes,
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut addrs: Vec<(SocketAddr, Role)> =
            args.listen.iter().map(|a| (*a, Role::All)).collect();
        addrs.extend(args.registry_listen.iter().map(|a| (*a, Role::Registry)));
        let conns = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        for (addr, role) in addrs {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("listening on {addr}: is another server on that port? (--listen / --registry-listen)")
            })?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            eprintln!(
                "kpbuild serve: {scheme}://{} serves {}",
                l.local_addr()?,
                match role {
                    Role::All => "the registry (/v2/) and the files",
                    Role::Registry => "the registry (/v2/)",
                }
            );
            tokio::spawn(listen::accept_loop(
                l,
                tls.clone(),
                state.clone(),
                role,
                conns.clone(),
                limits,
            ));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("kpbuild serve: stopping");
        for line in state.stats.summary() {
            eprintln!("{line}");
        }
        anyhow::Ok(())
    })?;
    // Connections still streaming are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
