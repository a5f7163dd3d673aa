//! The BuildKit a build runs on, driven through BuildKit's own control API — `Solve`, `Status`
//! and the session — so one code path serves a Docker daemon's BuildKit (v0.8 in Docker 20.10
//! and newer) and a standalone buildkitd (local or remote). `connect` owns the addresses and
//! connections, `session` what kpbuild serves BuildKit during a build.
//!
//! A build here is one `Solve` of kpbuild's frontend (`gateway.v0` with the frontend image as
//! its `source`) with the context uploaded through the session and at most one exporter.

mod connect;
mod session;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bollard_buildkit_proto::moby::buildkit::v1::control_client::ControlClient;
use bollard_buildkit_proto::moby::buildkit::v1::{
    BytesMessage, InfoRequest, ListWorkersRequest, SolveRequest, StatusRequest, StatusResponse,
};
use kpbuild_oci::platform::Platform;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub use connect::{Address, Tls};

/// The largest gRPC message either side sends (BuildKit's own limit).
const MAX_MESSAGE: usize = 16 << 20;

/// A builder kpbuild is connected to.
#[derive(Clone)]
pub struct Builder {
    pub addr: Address,
    control: ControlClient<Channel>,
    /// What the builder says it is, e.g. `BuildKit v0.32.2` (v0.11 and newer report it).
    pub version: String,
    /// The platforms its workers run natively (or through emulation it set up).
    pub platforms: Vec<Platform>,
}

/// Where a build's result goes.
pub enum Export {
    /// Into the Docker daemon as an image of this name (the `moby` exporter); its ID comes back
    /// in [`Solved::image_id`].
    DockerImage(String),
    /// As a tar stream (the `tar` exporter) into this channel.
    Tar(tokio::sync::mpsc::Sender<bytes::Bytes>),
}

/// One build of kpbuild's frontend.
pub struct Solve {
    /// The frontend image (`gateway.v0`'s `source`).
    pub frontend: String,
    /// Frontend options: `filename`, `target`, `platform`, `build-arg:NAME`, `no-cache`.
    pub attrs: HashMap<String, String>,
    /// The build context as a tar.
    pub context: bytes::Bytes,
    pub export: Export,
    /// Entitlements the build needs (`network.host`).
    pub entitlements: Vec<String>,
}

/// What a finished build reported.
#[derive(Debug, Default)]
pub struct Solved {
    /// The image ID (`Export::DockerImage`).
    pub image_id: Option<String>,
}

impl Builder {
    pub async fn connect(addr: &Address, tls: &Tls) -> anyhow::Result<Builder> {
        let channel = connect::control_channel(addr, tls).await?;
        let mut control = ControlClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let workers = control
            .list_workers(ListWorkersRequest::default())
            .await
            .with_context(|| {
                format!(
                    "the builder {addr} does not answer BuildKit's control API{}",
                    if addr.is_docker() {
                        " (is the Docker daemon running? hack/dockerd.sh starts one)"
                    } else if tls.ca.is_some() && tls.cert.is_none() {
                        // A buildkitd with --tlscacert closes the connection of a client
                        // without a certificate once the handshake is done.
                        " (it closed the connection: a buildkitd with mutual TLS wants a client \
                         certificate, --tls-cert and --tls-key)"
                    } else {
                        " (is buildkitd running there? hack/buildkitd.sh starts one)"
                    }
                )
            })?
            .into_inner();
        let platforms = workers
            .record
            .iter()
            .flat_map(|w| &w.platforms)
            .map(|p| Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
            })
            .collect();
        // `Info` came with BuildKit v0.11; older ones (Docker 20.10's v0.8) do not know it.
        let version = match control.info(InfoRequest {}).await {
            Ok(i) => i
                .into_inner()
                .buildkit_version
                .map(|v| format!("BuildKit {}", v.version))
                .unwrap_or_else(|| "BuildKit".into()),
            Err(_) if addr.is_docker() => "the Docker daemon's BuildKit (before v0.11)".into(),
            Err(_) => "BuildKit (before v0.11)".into(),
        };
        Ok(Builder {
            addr: addr.clone(),
            control,
            version,
            platforms,
        })
    }

    /// Whether this builder's workers run `p`.
    pub fn runs(&self, p: &Platform) -> bool {
        self.platforms
            .iter()
            .any(|w| w.os == p.os && w.architecture == p.architecture)
    }

    /// Runs one build, handing every status update to `on_status` as it comes.
    pub async fn solve(
        &self,
        solve: Solve,
        mut on_status: impl FnMut(StatusResponse),
    ) -> anyhow::Result<Solved> {
        let session_id = random_id();
        let build_ref = random_id();
        let upload = random_id();
        let mut attrs = solve.attrs;
        attrs.insert("source".into(), solve.frontend.clone());
        attrs.insert(
            "context".into(),
            format!("http://buildkit-session/{upload}"),
        );
        let (exporter, exporter_attrs, sink) = match solve.export {
            Export::DockerImage(name) => (
                "moby".to_string(),
                HashMap::from([("name".to_string(), name)]),
                None,
            ),
            Export::Tar(tx) => ("tar".to_string(), HashMap::new(), Some(tx)),
        };
        let sink: session::Sink = std::sync::Arc::new(std::sync::Mutex::new(sink));
        let services = session::Services {
            context: Some((upload, solve.context)),
            result: sink.clone(),
        };
        let methods = services.methods();
        let mut headers = vec![
            ("X-Docker-Expose-Session-Uuid", session_id.clone()),
            ("X-Docker-Expose-Session-Name", "kpbuild".to_string()),
            ("X-Docker-Expose-Session-Sharedkey", session_id.clone()),
        ];
        headers.extend(
            methods
                .iter()
                .map(|m| ("X-Docker-Expose-Session-Grpc-Method", m.clone())),
        );
        let io = match &self.addr {
            Address::Docker(sock) => connect::docker_session(sock, &headers).await?,
            _ => self.session_stream(&headers).await?,
        };
        let end = session::End::default();
        let server = tokio::spawn(services.serve(io, end.clone()));

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut status_client = self.control.clone();
        let status_ref = build_ref.clone();
        let status = tokio::spawn(async move {
            let mut stream = status_client
                .status(StatusRequest { r#ref: status_ref })
                .await?
                .into_inner();
            while let Some(m) = stream.message().await? {
                if tx.send(m).is_err() {
                    break;
                }
            }
            Ok::<_, tonic::Status>(())
        });
        let request = SolveRequest {
            r#ref: build_ref,
            session: session_id,
            frontend: "gateway.v0".into(),
            frontend_attrs: attrs,
            exporter_deprecated: exporter,
            exporter_attrs_deprecated: exporter_attrs,
            entitlements: solve.entitlements,
            ..Default::default()
        };
        let mut control = self.control.clone();
        let solving = control.solve(request);
        tokio::pin!(solving);
        let result = loop {
            tokio::select! {
                r = &mut solving => break r,
                Some(m) = rx.recv() => on_status(m),
            }
        };
        // The status stream ends with the build; what it still has comes first.
        let drain = async {
            while let Some(m) = rx.recv().await {
                on_status(m);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
        status.abort();
        // The build is over: a result sender no DiffCopy took goes (its reader sees the end),
        // and the session closes (BuildKit has nothing more to call).
        sink.lock().expect("sink").take();
        end.end();
        server.abort();
        let response = result.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        let r = response.into_inner().exporter_response;
        Ok(Solved {
            image_id: r
                .get("containerimage.config.digest")
                .or_else(|| r.get("containerimage.digest"))
                .cloned(),
        })
    }

    /// A session carried in a `Control.Session` stream (a standalone buildkitd): kpbuild's
    /// side of it is one end of an in-memory pipe whose bytes travel as the stream's messages.
    async fn session_stream(
        &self,
        headers: &[(&str, String)],
    ) -> anyhow::Result<connect::BoxDuplex> {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (from_us, mut to_us) = tokio::io::split(theirs);
        let outgoing = async_read_messages(from_us);
        let mut request = tonic::Request::new(outgoing);
        for (k, v) in headers {
            let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .expect("header name");
            request
                .metadata_mut()
                .append(key, v.parse().context("session metadata")?);
        }
        let mut control = self.control.clone();
        let mut incoming = control
            .session(request)
            .await
            .with_context(|| format!("opening a session with the builder {}", self.addr))?
            .into_inner();
        tokio::spawn(async move {
            while let Ok(Some(m)) = incoming.message().await {
                if to_us.write_all(&m.data).await.is_err() {
                    break;
                }
            }
            let _ = to_us.shutdown().await;
        });
        Ok(Box::pin(ours))
    }
}

/// The bytes read from `r`, as session messages.
fn async_read_messages(
    r: tokio::io::ReadHalf<tokio::io::DuplexStream>,
) -> impl futures_util::Stream<Item = BytesMessage> + Send + 'static {
    futures_util::stream::unfold(r, |mut r| async move {
        let mut buf = vec![0u8; 64 << 10];
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((BytesMessage { data: buf }, r))
            }
        }
    })
}

/// Which builder builds which platform, as the command line and the environment say.
#[derive(Debug, PartialEq)]
pub struct Wanted {
    /// The builder of every platform without one of its own.
    default: Option<Address>,
    per: Vec<(Platform, Address)>,
}

impl Wanted {
    /// From `--builder [PLATFORM=]ADDR` values; with no default among them, `BUILDKIT_HOST`,
    /// else the Docker daemon of `DOCKER_HOST`.
    pub fn parse(
        args: &[String],
        buildkit_host: Option<&str>,
        docker_host: Option<&str>,
    ) -> anyhow::Result<Wanted> {
        let mut w = Wanted {
            default: None,
            per: Vec::new(),
        };
        for a in args {
            // A platform has no `:`; every address has its scheme's.
            match a.split_once('=') {
                Some((platform, addr)) if !platform.contains(':') => {
                    let platform = Platform::parse_bundle(platform)
                        .with_context(|| format!("--builder {a}"))?;
                    if w.per.iter().any(|(p, _)| *p == platform) {
                        anyhow::bail!("--builder {a}: {platform} has a builder already");
                    }
                    w.per.push((platform, Address::parse(addr, docker_host)?));
                }
                _ => {
                    if w.default.is_some() {
                        anyhow::bail!(
                            "--builder {a}: one builder for every platform is given already; \
                             give the others as PLATFORM=ADDR"
                        );
                    }
                    w.default = Some(Address::parse(a, docker_host)?);
                }
            }
        }
        if w.default.is_none() && w.per.is_empty() {
            w.default = Some(match buildkit_host.filter(|h| !h.is_empty()) {
                Some(h) => Address::parse(h, docker_host).context("BUILDKIT_HOST")?,
                None => Address::parse("docker", docker_host)?,
            });
        }
        Ok(w)
    }

    /// The builder of `p`.
    fn address(&self, p: &Platform) -> anyhow::Result<&Address> {
        self.per
            .iter()
            .find(|(q, _)| q == p)
            .map(|(_, a)| a)
            .or(self.default.as_ref())
            .with_context(|| {
                format!(
                    "no builder for {p}: add --builder {p}=ADDR, or --builder ADDR for every \
                     platform without one"
                )
            })
    }

    /// Connects to the builders `platforms` need (each address once) and says on stderr which
    /// builds what.
    pub async fn connect(&self, tls: &Tls, platforms: &[Platform]) -> anyhow::Result<Builders> {
        let mut connected: Vec<Builder> = Vec::new();
        let mut per = Vec::new();
        for p in platforms {
            let addr = self.address(p)?;
            let b = match connected.iter().find(|b| &b.addr == addr) {
                Some(b) => b.clone(),
                None => {
                    let b = Builder::connect(addr, tls).await?;
                    connected.push(b.clone());
                    b
                }
            };
            per.push((p.clone(), b));
        }
        for b in &connected {
            let builds: Vec<String> = per
                .iter()
                .filter(|(_, x)| x.addr == b.addr)
                .map(|(p, _)| {
                    if b.runs(p) {
                        p.to_string()
                    } else {
                        format!("{p} (not a worker platform: emulated, if binfmt is set up)")
                    }
                })
                .collect();
            let workers: Vec<String> = b.platforms.iter().map(|p| p.to_string()).collect();
            eprintln!(
                "builder {}: {} (workers: {}) builds {}",
                b.addr,
                b.version,
                workers.join(", "),
                builds.join(", ")
            );
        }
        Ok(Builders { per })
    }
}

/// The connected builder of every platform of a run.
pub struct Builders {
    per: Vec<(Platform, Builder)>,
}

impl Builders {
    pub fn for_platform(&self, p: &Platform) -> &Builder {
        &self
            .per
            .iter()
            .find(|(q, _)| q == p)
            .expect("every platform of the run has a builder")
            .1
    }
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random bytes");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(args: &[&str], bk: Option<&str>) -> anyhow::Result<Wanted> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Wanted::parse(&args, bk, Some("unix:///d.sock"))
    }

    #[test]
    fn builders_per_platform_and_defaults() {
        let amd = Platform::parse_bundle("linux/amd64").unwrap();
        let arm = Platform::parse_bundle("linux/arm64").unwrap();
        let docker = Address::Docker("/d.sock".into());
        let w = wanted(&[], None).unwrap();
        assert_eq!(w.address(&arm).unwrap(), &docker);
        let w = wanted(&[], Some("unix:///b.sock")).unwrap();
        assert_eq!(w.address(&amd).unwrap(), &Address::Unix("/b.sock".into()));
        let w = wanted(
            &["linux/arm64=unix:///arm.sock", "tcp://amd:1234"],
            Some("x"),
        )
        .unwrap();
        assert_eq!(w.address(&arm).unwrap(), &Address::Unix("/arm.sock".into()));
        assert_eq!(w.address(&amd).unwrap(), &Address::Tcp("amd:1234".into()));
        // Only per-platform builders: another platform has none, and BUILDKIT_HOST is not
        // silently used for it.
        let w = wanted(&["linux/arm64/v8=docker"], Some("unix:///b.sock")).unwrap();
        assert_eq!(w.address(&arm).unwrap(), &docker);
        let e = w.address(&amd).unwrap_err().to_string();
        assert!(e.contains("no builder for linux/amd64"), "{e}");
        for (bad, says) in [
            (&["linux/s390x=docker"][..], "linux/s390x"),
            (
                &["linux/arm64=docker", "linux/arm64=docker"][..],
                "has a builder already",
            ),
            (
                &["docker", "unix:///x"][..],
                "one builder for every platform",
            ),
            (&["ssh://x"][..], "ssh://x"),
        ] {
            let e = format!("{:#}", wanted(bad, None).unwrap_err());
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
