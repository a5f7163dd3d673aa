//! Where a builder is and how to reach it: the address forms `kpbuild build --builder` takes,
//! and the two connections every build needs — the control channel (Solve, Status) and the
//! session's byte stream (BuildKit calls back into kpbuild over it).
//!
//! A standalone buildkitd (`unix://`, `tcp://`, TLS from files) serves the control API on its
//! socket and carries the session inside a `Control.Session` stream. A Docker daemon serves the
//! same API behind two HTTP upgrades: `POST /grpc` for the control channel, `POST /session` for
//! the session (headers name the session and the methods it serves).

use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A byte stream in both directions.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Duplex for T {}
pub type BoxDuplex = Pin<Box<dyn Duplex>>;

/// A builder's address, as given to `--builder` (or `BUILDKIT_HOST`, `DOCKER_HOST`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A buildkitd's unix socket.
    Unix(PathBuf),
    /// A buildkitd on TCP (`host:port`); TLS when certificate files are given.
    Tcp(String),
    /// The BuildKit inside a Docker daemon, at its socket.
    Docker(PathBuf),
}

impl Address {
    /// Parses `unix:///path`, `tcp://host:port`, `docker` / `docker://` (the daemon of
    /// `DOCKER_HOST`, default `/var/run/docker.sock`) or `docker://unix:///path`.
    pub fn parse(s: &str, docker_host: Option<&str>) -> anyhow::Result<Address> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                bail!(
                    "builder address {s:?}: no socket path (unix:///run/buildkit/buildkitd.sock)"
                );
            }
            return Ok(Address::Unix(path.into()));
        }
        if let Some(hostport) = s.strip_prefix("tcp://") {
            if !hostport.contains(':') {
                bail!("builder address {s:?}: give host:port (tcp://buildkitd.example:1234)");
            }
            return Ok(Address::Tcp(hostport.trim_end_matches('/').to_string()));
        }
        if s == "docker" || s == "docker://" {
            let host = docker_host.unwrap_or("unix:///var/run/docker.sock");
            return match host.strip_prefix("unix://") {
                Some(p) if !p.is_empty() => Ok(Address::Docker(p.into())),
                _ => bail!(
                    "DOCKER_HOST={host}: kpbuild reaches a Docker daemon's BuildKit on its unix \
                     socket only (unix:///var/run/docker.sock); for a remote BuildKit give \
                     --builder tcp://HOST:PORT"
                ),
            };
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return Address::parse("docker", Some(rest));
        }
        bail!(
            "builder address {s:?}: expected unix:///PATH or tcp://HOST:PORT (a buildkitd), or \
             docker / docker://unix:///PATH (a Docker daemon's BuildKit)"
        )
    }

    pub fn is_docker(&self) -> bool {
        matches!(self, Address::Docker(_))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp(h) => write!(f, "tcp://{h}"),
            Address::Docker(p) => write!(f, "docker://unix://{}", p.display()),
        }
    }
}

/// TLS files for `tcp://` builders (as buildctl's `--tlscacert`, `--tlscert`, `--tlskey`).
#[derive(Clone, Debug, Default)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Tls {
    fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    fn config(&self, host: &str) -> anyhow::Result<ClientTlsConfig> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p)
                .with_context(|| format!("reading the builder's TLS {what} {}", p.display()))
        };
        // The server's certificate must name the address's host.
        let mut c = ClientTlsConfig::new().domain_name(host);
        if let Some(ca) = &self.ca {
            c = c.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                c = c.identity(Identity::from_pem(
                    read(cert, "certificate")?,
                    read(key, "key")?,
                ))
            }
            (None, None) => {}
            _ => bail!("--tls-cert and --tls-key go together (the client certificate and its key)"),
        }
        Ok(c)
    }
}

/// The control channel to a builder.
pub async fn control_channel(addr: &Address, tls: &Tls) -> anyhow::Result<Channel> {
    // The authority is not looked at by either server; the connector decides where bytes go.
    let local = || Endpoint::from_static("http://buildkit.invalid");
    let channel = match addr {
        Address::Unix(path) => {
            let path = path.clone();
            local()
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        tokio::net::UnixStream::connect(&path)
                            .await
                            .map(TokioIo::new)
                    }
                }))
                .await
        }
        Address::Tcp(hostport) => {
            let host = hostport
                .rsplit_once(':')
                .map_or(hostport.as_str(), |(h, _)| h);
            if tls.is_set() {
                Endpoint::from_shared(format!("https://{hostport}"))?
                    .tls_config(tls.config(host)?)?
                    .connect()
                    .await
            } else {
                Endpoint::from_shared(format!("http://{hostport}"))?
                    .connect()
                    .await
            }
        }
        Address::Docker(sock) => {
            let sock = sock.clone();
            local()
                .connect_with_connector(tower::service_fn(move |_| {
                    let sock = sock.clone();
                    async move {
                        upgrade(&sock, "/grpc", &[])
                            .await
                            .map(TokioIo::new)
                            .map_err(std::io::Error::other)
                    }
                }))
                .await
        }
    };
    channel.map_err(|e| {
        // The error's causes, each once (rustls' message is repeated by its wrapper).
        let mut causes: Vec<String> = vec![];
        for c in anyhow::Error::from(e).chain() {
            let c = c.to_string();
            if !causes.iter().any(|seen| seen.contains(&c)) {
                causes.push(c);
            }
        }
        let chain = causes.join(": ");
        let hint = if chain.contains("UnknownIssuer") || chain.contains("invalid peer certificate")
        {
            match &tls.ca {
                Some(ca) => format!(
                    ": its TLS certificate is not trusted (not signed by --tls-ca {}, or not \
                     for this host)",
                    ca.display()
                ),
                None => ": its TLS certificate is not trusted by the system's roots (give its \
                          CA with --tls-ca)"
                    .to_string(),
            }
        } else {
            String::new()
        };
        anyhow::anyhow!("connecting to the builder {addr}{hint}: {chain}")
    })
}

/// Opens a Docker daemon's session endpoint for the session `headers` describe.
pub async fn docker_session(sock: &Path, headers: &[(&str, String)]) -> anyhow::Result<BoxDuplex> {
    upgrade(sock, "/session", headers).await
}

/// `POST path` on the Docker daemon at `sock`, upgraded to a raw stream (`h2c`: the daemon
/// speaks HTTP/2 on it next).
async fn upgrade(sock: &Path, path: &str, headers: &[(&str, String)]) -> anyhow::Result<BoxDuplex> {
    use http_body_util::Empty;
    let stream = tokio::net::UnixStream::connect(sock)
        .await
        .with_context(|| format!("connecting to the Docker daemon at {}", sock.display()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream))
            .await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = hyper::Request::post(path)
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "h2c");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = sender.send_request(req.body(Empty::new())?).await?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        bail!(
            "the Docker daemon at {} answered {} to POST {path} (a Docker Engine with BuildKit, \
             18.09 or newer, upgrades it)",
            sock.display(),
            resp.status()
        );
    }
    let upgraded = hyper::upgrade::on(resp).await?;
    Ok(Box::pin(TokioIo::new(upgraded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let p = |s: &str| Address::parse(s, Some("unix:///d.sock"));
        assert_eq!(
            p("unix:///run/b.sock").unwrap(),
            Address::Unix("/run/b.sock".into())
        );
        assert_eq!(p("tcp://b:1234").unwrap(), Address::Tcp("b:1234".into()));
        assert_eq!(p("docker").unwrap(), Address::Docker("/d.sock".into()));
        assert_eq!(p("docker://").unwrap(), Address::Docker("/d.sock".into()));
        assert_eq!(
            p("docker://unix:///x.sock").unwrap(),
            Address::Docker("/x.sock".into())
        );
        assert_eq!(
            Address::parse("docker", None).unwrap(),
            Address::Docker("/var/run/docker.sock".into())
        );
        for bad in ["unix://", "tcp://b", "ssh://b", "b:1234"] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains(bad) || e.contains("unix:///"), "{bad}: {e}");
        }
        let e = Address::parse("docker", Some("tcp://d:2375"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("DOCKER_HOST=tcp://d:2375"), "{e}");
        assert_eq!(p("docker").unwrap().to_string(), "docker://unix:///d.sock");
    }
}
