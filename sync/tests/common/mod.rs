//! The scripted HTTP/1.1 server the fault tests share: on 127.0.0.1 in the test's process, it
//! answers each request with what the test's handler says, including the faults a real server
//! cannot be asked for (a body cut short, a stall, `Retry-After`), and counts and logs the
//! requests it got.

// Each test file uses its own part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Where a reply pauses.
pub enum Stall {
    /// Before the first body byte.
    BeforeBody(Duration),
    /// After half the body.
    Midway(Duration),
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send only this many body bytes, then close (Content-Length still says the full size).
    pub cut_at: Option<usize>,
    pub stall: Option<Stall>,
}

pub fn reply(status: u16, body: &[u8]) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: body.to_vec(),
        cut_at: None,
        stall: None,
    }
}

impl Reply {
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// What the handler is told of a request.
pub struct Req {
    pub path: String,
    pub authorization: Option<String>,
    /// The first byte of a `Range: bytes=N-` request.
    pub range_start: Option<u64>,
}

/// `handler(request, n)`, where n counts the earlier requests for the same path (query left out).
pub type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

/// Every request: its path and range start.
type Log = Arc<Mutex<Vec<(String, Option<u64>)>>>;

pub struct Server {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    log: Log,
}

impl Server {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests per path so far.
    pub fn hits(&self) -> HashMap<String, usize> {
        self.hits.lock().unwrap().clone()
    }

    /// Every request so far, in order: path and range start.
    pub fn log(&self) -> Vec<(String, Option<u64>)> {
        self.log.lock().unwrap().clone()
    }
}

pub async fn serve(handler: Arc<Handler>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server {
        addr: listener.local_addr().unwrap().to_string(),
        hits: Arc::default(),
        log: Arc::default(),
    };
    let (hits, log) = (server.hits.clone(), server.log.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (handler, hits, log) = (handler.clone(), hits.clone(), log.clone());
            tokio::spawn(async move {
                let Some(req) = read_request(&mut sock).await else {
                    return;
                };
                log.lock()
                    .unwrap()
                    .push((req.path.clone(), req.range_start));
                let n = {
                    let mut h = hits.lock().unwrap();
                    let c = h
                        .entry(req.path.split('?').next().unwrap().to_string())
                        .or_default();
                    *c += 1;
                    *c - 1
                };
                let r = handler(&req, n);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    r.status,
                    r.body.len()
                );
                for (k, v) in &r.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = sock.write_all(head.as_bytes()).await;
                let body = &r.body[..r.cut_at.unwrap_or(r.body.len())];
                let (first, pause) = match r.stall {
                    None => (body.len(), None),
                    Some(Stall::BeforeBody(d)) => (0, Some(d)),
                    Some(Stall::Midway(d)) => (body.len() / 2, Some(d)),
                };
                let _ = sock.write_all(&body[..first]).await;
                if let Some(d) = pause {
                    tokio::time::sleep(d).await;
                }
                let _ = sock.write_all(&body[first..]).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    server
}

/// The request line and headers; `None` for a connection that closed first or is not HTTP (a
/// TLS hello is answered as Go's server does).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        if !buf[0].is_ascii_uppercase() {
            let _ = sock.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
            return None;
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split(' ').nth(1).unwrap_or("").to_string();
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    Some(Req {
        authorization: header("authorization").map(str::to_string),
        range_start: header("range")
            .and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()),
        path,
    })
}
