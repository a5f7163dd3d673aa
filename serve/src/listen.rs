//! Accepting connections: at most `max_connections` at once (the next waits in the listen
//! backlog), a TLS handshake bounded by the header timeout, HTTP/1.1 through hyper with a
//! bounded header buffer (431 beyond it) and a header read timeout (slow clients are cut), and
//! an idle timeout on every connection (no byte read or written for that long closes it).

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::handler;
use crate::server::{Role, State};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<State>,
    role: Role,
    conns: Arc<Semaphore>,
    limits: Limits,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok(permit) = conns.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                eprintln!("kpbuild serve: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let io = Tracked {
                inner: stream,
                activity: activity.clone(),
                start,
            };
            let client = peer.ip();
            match acceptor {
                None => serve(io, state, role, client, limits, activity, start).await,
                Some(a) => match tokio::time::timeout(limits.header_timeout, a.accept(io)).await {
                    Ok(Ok(tls)) => serve(tls, state, role, client, limits, activity, start).await,
                    Ok(Err(e)) => {
                        if state.log_requests {
                            eprintln!("{client} TLS handshake failed: {e}");
                        }
                    }
                    Err(_) => {
                        if state.log_requests {
                            eprintln!("{client} TLS handshake timed out");
                        }
                    }
                },
            }
        });
    }
}

async fn serve<I>(
    io: I,
    state: Arc<State>,
    role: Role,
    client: IpAddr,
    limits: Limits,
    activity: Arc<AtomicU64>,
    start: Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move {
            state.stats.add_request(client);
            Ok::<_, std::convert::Infallible>(handler::handle(&req, &state, role, client))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(100)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(idle / 4) => {
                let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                if start.elapsed().saturating_sub(last) > idle {
                    // Dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}

/// A stream that records when it last read or wrote a byte (milliseconds since `start`).
struct Tracked {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    start: Instant,
}

impl Tracked {
    fn touch(&self) {
        self.activity
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let p = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(p, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        p
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(p, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        p
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
