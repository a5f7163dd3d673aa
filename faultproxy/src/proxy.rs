//! The proxy: accepts connections, reads one request each, asks the schedule, and forwards
//! (or doesn't) with the chosen fault.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::schedule::{Fault, FaultKind, Schedule};

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// How the proxy runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `host:port` of the server behind the proxy.
    pub upstream: String,
    pub schedule: Schedule,
    /// The `Retry-After` value (seconds) sent with 429.
    pub retry_after: u64,
    /// How long a stall lasts before the rest of the body is sent (if the client waited).
    pub stall: Duration,
    /// Where to write the stats (JSON, rewritten after every request).
    pub stats_path: Option<PathBuf>,
    /// Where to append the request log (one JSON object a line).
    pub log_path: Option<PathBuf>,
}

/// Requests and faults of one class of request.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassStats {
    pub requests: u64,
    pub faults: u64,
}

/// What the proxy has done so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub seed: u64,
    pub rate: f64,
    /// HTTP requests received.
    pub requests: u64,
    /// Connections that sent something that is not an HTTP request (e.g. a TLS hello).
    pub not_http: u64,
    /// Faults actually applied.
    pub faults_injected: u64,
    /// Applied faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Faults drawn that could not apply (a body fault on a response without a body).
    pub not_applicable: u64,
    /// Requests upstream could not be reached for (answered 502, not counted as faults).
    pub upstream_errors: u64,
    /// Requests and applied faults by class (`ping`, `manifest`, `blob`, `token`, `other`).
    pub by_class: BTreeMap<String, ClassStats>,
    /// Clients that hung up while a stall was going on.
    pub clients_gave_up_in_stall: u64,
}

/// One line of the request log.
#[derive(Debug, Serialize)]
struct LogEntry<'a> {
    seq: u64,
    ms: u128,
    method: &'a str,
    target: &'a str,
    occurrence: u64,
    fault: Option<&'static str>,
    forced: bool,
    applied: bool,
    status: Option<u16>,
    body: Option<u64>,
    sent: u64,
    outcome: &'static str,
}

/// A running proxy's shared state.
pub struct Proxy {
    cfg: Config,
    occurrences: Mutex<HashMap<String, u64>>,
    stats: Mutex<Stats>,
    log: Mutex<Option<BufWriter<File>>>,
    seq: AtomicU64,
    start: Instant,
}

/// The class of a request target, for the stats.
pub fn class_of(target: &str) -> &'static str {
    let path = target.split('?').next().unwrap_or("");
    if path == "/v2/" || path == "/v2" {
        "ping"
    } else if path.starts_with("/v2/") && path.contains("/manifests/") {
        "manifest"
    } else if path.starts_with("/v2/") && path.contains("/blobs/") {
        "blob"
    } else if path.contains("token") {
        "token"
    } else if path.starts_with("/v2/") {
        "other"
    } else {
        "file"
    }
}

/// How a forwarded exchange ended.
struct Outcome {
    status: Option<u16>,
    body: Option<u64>,
    sent: u64,
    applied: bool,
    what: &'static str,
}

impl Outcome {
    fn early(what: &'static str) -> Outcome {
        Outcome {
            status: None,
            body: None,
            sent: 0,
            applied: false,
            what,
        }
    }
}

/// How to end the client connection.
enum Close {
    /// Close cleanly (FIN).
    Fin,
    /// Reset (RST).
    Reset,
    /// The client has gone already.
    Gone,
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    /// The head as it goes upstream (with `Connection: close`).
    upstream_head: Vec<u8>,
    /// Request body bytes still to read from the client after what `rest` holds.
    body_remaining: u64,
    /// Bytes read after the head.
    rest: Vec<u8>,
}

fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Reads and parses a request head. `Ok(None)`: not HTTP, or the client went away.
async fn read_request(client: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 8192];
    loop {
        let n = client.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 96];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let method = req.method.unwrap_or("").to_string();
                let target = req.path.unwrap_or("").to_string();
                let mut head = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
                let mut body_len = 0u64;
                for h in req.headers.iter() {
                    if hop_by_hop(h.name) {
                        continue;
                    }
                    if h.name.eq_ignore_ascii_case("content-length") {
                        body_len = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                    }
                    if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        // Chunked request bodies are not supported (no client here sends them).
                        return Ok(None);
                    }
                    head.extend_from_slice(h.name.as_bytes());
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(h.value);
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"Connection: close\r\n\r\n");
                let rest = buf[len..].to_vec();
                return Ok(Some(Request {
                    method,
                    target,
                    upstream_head: head,
                    body_remaining: body_len.saturating_sub(rest.len() as u64),
                    rest,
                }));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            _ => return Ok(None),
        }
    }
}

/// A response head from upstream.
struct ResponseHead {
    status: u16,
    /// The head bytes, exactly as received.
    bytes: Vec<u8>,
    /// Body length when known (`Content-Length`, or 0 for responses without a body).
    body_len: Option<u64>,
    /// Body bytes read along with the head.
    rest: Vec<u8>,
}

async fn read_response(upstream: &mut TcpStream, head_request: bool) -> io::Result<ResponseHead> {
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 16384];
    loop {
        let n = upstream.read(&mut tmp).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed before the response head",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 96];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(0);
                let mut content_length = None;
                let mut chunked = false;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        content_length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                    }
                    if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = true;
                    }
                }
                let no_body =
                    head_request || status == 204 || status == 304 || (100..200).contains(&status);
                let body_len = if no_body {
                    Some(0)
                } else if chunked {
                    None
                } else {
                    content_length
                };
                return Ok(ResponseHead {
                    status,
                    rest: buf[len..].to_vec(),
                    bytes: {
                        buf.truncate(len);
                        buf
                    },
                    body_len,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(io::Error::other("upstream response head too large"));
            }
            Err(e) => return Err(io::Error::other(format!("bad upstream response: {e}"))),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Resets the connection: RST instead of FIN.
fn reset(client: TcpStream) {
    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
    drop(client);
}

/// Waits for the client to close its side (or fail); never returns otherwise.
async fn client_closed(client: &mut TcpStream) {
    let mut b = [0u8; 512];
    loop {
        match client.read(&mut b).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

impl Proxy {
    pub fn new(cfg: Config) -> io::Result<Arc<Proxy>> {
        let log = match &cfg.log_path {
            Some(p) => Some(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        let stats = Stats {
            seed: cfg.schedule.seed,
            rate: cfg.schedule.rate,
            ..Stats::default()
        };
        let p = Arc::new(Proxy {
            cfg,
            occurrences: Mutex::new(HashMap::new()),
            stats: Mutex::new(stats),
            log: Mutex::new(log),
            seq: AtomicU64::new(0),
            start: Instant::now(),
        });
        p.write_stats();
        Ok(p)
    }

    /// A copy of the stats so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    /// Writes the stats file (atomically: a temporary file renamed over it).
    pub fn write_stats(&self) {
        let Some(path) = &self.cfg.stats_path else {
            return;
        };
        let stats = self.stats.lock().unwrap();
        let json = serde_json::to_vec_pretty(&*stats).expect("stats serialize");
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    /// Flushes the request log.
    pub fn flush_log(&self) {
        if let Some(l) = self.log.lock().unwrap().as_mut() {
            let _ = l.flush();
        }
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move { me.handle(sock).await });
        }
    }

    async fn handle(self: Arc<Self>, mut client: TcpStream) {
        let req = match tokio::time::timeout(HEAD_TIMEOUT, read_request(&mut client)).await {
            Ok(Ok(Some(r))) => r,
            _ => {
                self.stats.lock().unwrap().not_http += 1;
                self.write_stats();
                return;
            }
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let occurrence = {
            let mut occ = self.occurrences.lock().unwrap();
            let c = occ
                .entry(format!("{} {}", req.method, req.target))
                .or_default();
            *c += 1;
            *c - 1
        };
        let fault = self
            .cfg
            .schedule
            .decide(&req.method, &req.target, occurrence);
        let outcome = self.exchange(&mut client, &req, fault).await;
        match outcome {
            Ok((out, close)) => {
                self.record(seq, &req, occurrence, fault, &out);
                match close {
                    Close::Reset => reset(client),
                    Close::Fin => {
                        let _ = client.shutdown().await;
                    }
                    Close::Gone => {}
                }
            }
            Err(e) => {
                let out = Outcome::early(if e.kind() == io::ErrorKind::ConnectionRefused {
                    "upstream-refused"
                } else {
                    "io-error"
                });
                self.record(seq, &req, occurrence, fault, &out);
            }
        }
        self.write_stats();
    }

    /// Does one request. Returns the outcome and how to close the client connection.
    async fn exchange(
        &self,
        client: &mut TcpStream,
        req: &Request,
        fault: Option<Fault>,
    ) -> io::Result<(Outcome, Close)> {
        // Status faults: answered here, upstream never asked.
        if let Some(f) = fault
            && let Some(status) = f.kind.status()
        {
            let body = format!(
                "{{\"errors\":[{{\"code\":\"UNAVAILABLE\",\"message\":\"kpbuild-faultproxy: injected {status}\"}}]}}"
            );
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason(status),
                body.len()
            );
            if status == 429 {
                head.push_str(&format!("Retry-After: {}\r\n", self.cfg.retry_after));
            }
            head.push_str("\r\n");
            client.write_all(head.as_bytes()).await?;
            client.write_all(body.as_bytes()).await?;
            return Ok((
                Outcome {
                    status: Some(status),
                    body: Some(body.len() as u64),
                    sent: body.len() as u64,
                    applied: true,
                    what: "injected-status",
                },
                Close::Fin,
            ));
        }

        let mut upstream = match TcpStream::connect(&self.cfg.upstream).await {
            Ok(u) => u,
            Err(e) => {
                let body = format!("kpbuild-faultproxy: upstream {}: {e}", self.cfg.upstream);
                let head = format!(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                client.write_all(head.as_bytes()).await?;
                client.write_all(body.as_bytes()).await?;
                self.stats.lock().unwrap().upstream_errors += 1;
                return Ok((Outcome::early("upstream-unreachable"), Close::Fin));
            }
        };
        let _ = upstream.set_nodelay(true);
        upstream.write_all(&req.upstream_head).await?;
        upstream.write_all(&req.rest).await?;
        if req.body_remaining > 0 {
            let mut body = (&mut *client).take(req.body_remaining);
            tokio::io::copy(&mut body, &mut upstream).await?;
        }
        let head_request = req.method.eq_ignore_ascii_case("HEAD");
        let resp = read_response(&mut upstream, head_request).await?;
        let body_len = resp.body_len;
        let mut out = Outcome {
            status: Some(resp.status),
            body: body_len,
            sent: 0,
            applied: false,
            what: "ok",
        };

        // Where a body fault strikes, if it can.
        let strike = match (fault, body_len) {
            (Some(f), Some(len)) if len > 0 => Some((f.kind, f.offset(len))),
            _ => None,
        };
        if let Some(f) = fault
            && strike.is_none()
        {
            match f.kind {
                FaultKind::Reset => {
                    out.applied = true;
                    out.what = "reset";
                    return Ok((out, Close::Reset));
                }
                FaultKind::Stall => {
                    out.applied = true;
                    if self.stall(client).await {
                        out.what = "client-gave-up-in-stall";
                        return Ok((out, Close::Gone));
                    }
                }
                _ => out.what = "not-applicable",
            }
        }
        client.write_all(&resp.bytes).await?;

        let mut pending = resp.rest;
        let mut buf = vec![0u8; 64 * 1024];
        let mut done_fault = false;
        loop {
            if let Some(len) = body_len
                && out.sent >= len
            {
                break;
            }
            if pending.is_empty() {
                let n = upstream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
            }
            if let Some(len) = body_len {
                pending.truncate((len - out.sent).min(pending.len() as u64) as usize);
            }
            let chunk_end = out.sent + pending.len() as u64;
            if let Some((kind, at)) = strike
                && !done_fault
                && at < chunk_end
            {
                done_fault = true;
                out.applied = true;
                let split = (at - out.sent) as usize;
                client.write_all(&pending[..split]).await?;
                out.sent += split as u64;
                let mut rest = pending.split_off(split);
                match kind {
                    FaultKind::Reset => {
                        out.what = "reset";
                        return Ok((out, Close::Reset));
                    }
                    FaultKind::Truncate => {
                        out.what = "truncated";
                        return Ok((out, Close::Fin));
                    }
                    FaultKind::Wrong => {
                        rest[0] ^= 0xff;
                        out.what = "wrong-byte";
                    }
                    FaultKind::Stall => {
                        client.flush().await?;
                        if self.stall(client).await {
                            out.what = "client-gave-up-in-stall";
                            return Ok((out, Close::Gone));
                        }
                        out.what = "stalled";
                    }
                    _ => unreachable!("status faults are answered before"),
                }
                pending = rest;
                continue;
            }
            client.write_all(&pending).await?;
            out.sent += pending.len() as u64;
            pending.clear();
        }
        Ok((out, Close::Fin))
    }

    /// Stalls; `true` when the client hung up meanwhile.
    async fn stall(&self, client: &mut TcpStream) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.cfg.stall) => false,
            _ = client_closed(client) => {
                self.stats.lock().unwrap().clients_gave_up_in_stall += 1;
                true
            }
        }
    }

    fn record(
        &self,
        seq: u64,
        req: &Request,
        occurrence: u64,
        fault: Option<Fault>,
        out: &Outcome,
    ) {
        {
            let mut s = self.stats.lock().unwrap();
            s.requests += 1;
            let class = s
                .by_class
                .entry(class_of(&req.target).to_string())
                .or_default();
            class.requests += 1;
            if fault.is_some() && out.applied {
                class.faults += 1;
            }
            if let Some(f) = fault {
                if out.applied {
                    s.faults_injected += 1;
                    *s.faults.entry(f.kind.name().to_string()).or_default() += 1;
                } else {
                    s.not_applicable += 1;
                }
            }
        }
        let entry = LogEntry {
            seq,
            ms: self.start.elapsed().as_millis(),
            method: &req.method,
            target: &req.target,
            occurrence,
            fault: fault.map(|f| f.kind.name()),
            forced: fault.is_some_and(|f| f.forced),
            applied: out.applied,
            status: out.status,
            body: out.body,
            sent: out.sent,
            outcome: out.what,
        };
        if let Some(l) = self.log.lock().unwrap().as_mut() {
            let _ = serde_json::to_writer(&mut *l, &entry);
            let _ = l.write_all(b"\n");
            let _ = l.flush();
        }
    }
}
