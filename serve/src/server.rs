//! The server: what it is given ([`Config`]: roots, addresses, TLS, limits), the state every
//! connection shares ([`State`]: the registry index, blobs verified or found corrupt, the
//! per-client [`Stats`]), and [`serve`], which listens on every address until SIGINT or
//! SIGTERM and then prints the per-client summary.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use kpbuild_oci::registry_layout::Digest;

use crate::listen::{self, Limits};
use crate::registry::Registry;
use crate::tls;

/// Which part an address serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The registry under /v2/ and the files.
    All,
    /// The registry alone.
    Registry,
}

/// Where the server's certificate comes from.
#[derive(Clone, Debug)]
pub enum Tls {
    /// Plain HTTP.
    Off,
    /// A certificate (PEM, with its chain) and its private key (PEM).
    Files { cert: PathBuf, key: PathBuf },
    /// A CA and a server certificate made for `names` (DNS names or IP addresses), written to
    /// `dir` and reused while the names stay the same.
    SelfSigned { dir: PathBuf, names: Vec<String> },
}

/// What to serve, where and how.
pub struct Config {
    /// The files served under `/` (an unpacked bundle's nginx root).
    pub files_root: PathBuf,
    /// The registry storage root (what holds `docker/registry/v2`).
    pub registry_root: PathBuf,
    /// The registry index of `registry_root` ([`Registry::load`]).
    pub registry: Registry,
    /// Addresses serving the registry under `/v2/` and the files.
    pub listen: Vec<SocketAddr>,
    /// Addresses serving the registry alone.
    pub registry_listen: Vec<SocketAddr>,
    pub tls: Tls,
    /// Directory listings (HTML, as nginx's autoindex).
    pub listings: bool,
    /// One line per request on stderr: client, request, status, length.
    pub log_requests: bool,
    pub limits: Limits,
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

/// Serves `config` until SIGINT or SIGTERM: makes or reads the certificate, binds every
/// address (an error names the one already taken), then prints the per-client summary.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let tls = match &config.tls {
        Tls::Off => None,
        Tls::Files { cert, key } => Some(tls::server_config(cert, key)?),
        Tls::SelfSigned { dir, names } => {
            let made = tls::self_signed(dir, names)?;
            let ports: Vec<u16> = config
                .listen
                .iter()
                .chain(&config.registry_listen)
                .map(|a| a.port())
                .collect();
            eprintln!(
                "{}{}",
                if made.made { "" } else { "(reused) " },
                tls::trust_help(&made.ca, names, &ports)
            );
            Some(tls::server_config(&made.cert, &made.key)?)
        }
    };
    let limits = config.limits;
    let state = Arc::new(State {
        files_root: config.files_root,
        registry_root: config.registry_root,
        registry: config.registry,
        listings: config.listings,
        log_requests: config.log_requests,
        stats: Stats::default(),
        verified: Mutex::default(),
        corrupt: Mutex::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut addrs: Vec<(SocketAddr, Role)> =
            config.listen.iter().map(|a| (*a, Role::All)).collect();
        addrs.extend(config.registry_listen.iter().map(|a| (*a, Role::Registry)));
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
