//! Response bodies: whole (in memory: manifests, JSON, error bodies) or streamed from a file by
//! a blocking reader through a small channel (two chunks in flight per response, so memory
//! stays bounded by the connection limit, not by what is served), with the bytes sent counted
//! per client and, for a whole blob served the first time, its sha256 checked before the last
//! chunk leaves (see `mod.rs` for the policy).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use kpbuild_oci::registry_layout::Digest;
use sha2::Digest as _;
use tokio::sync::mpsc;

use crate::server::State;

/// The body type of every response.
pub type ResponseBody = http_body_util::combinators::BoxBody<Bytes, io::Error>;

const CHUNK: usize = 128 * 1024;

/// A body held in memory.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// No body (HEAD, 304, errors without one).
pub fn empty() -> ResponseBody {
    full(Bytes::new())
}

/// Counts what a body sends for one client in the server's summary.
struct Counted<B> {
    inner: B,
    state: Arc<State>,
    client: IpAddr,
}

impl<B: Body<Data = Bytes, Error = io::Error> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let p = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &p
            && let Some(d) = f.data_ref()
        {
            self.state.stats.add_bytes(self.client, d.len() as u64);
        }
        p
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a body so that its bytes count for `client`.
pub fn counted(inner: ResponseBody, state: &Arc<State>, client: IpAddr) -> ResponseBody {
    Counted {
        inner,
        state: state.clone(),
        client,
    }
    .boxed()
}

/// A body fed by a blocking reader.
struct Channel {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    len: u64,
}

impl Body for Channel {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// What to check while streaming: a blob's digest, recorded in the state as verified or
/// corrupt once the whole blob went through.
pub struct Check {
    pub digest: Digest,
    pub path: std::path::PathBuf,
}

/// Streams `len` bytes of `file` from `start`; with `check`, hashes them and holds the last
/// chunk back until the digest matched (a mismatch cuts the response short instead).
pub fn file(
    mut file: File,
    start: u64,
    len: u64,
    check: Option<Check>,
    state: Arc<State>,
) -> ResponseBody {
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let result = (|| -> io::Result<()> {
            file.seek(SeekFrom::Start(start))?;
            let mut hasher = check.as_ref().map(|_| sha2::Sha256::new());
            let mut left = len;
            while left > 0 {
                let want = left.min(CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                file.read_exact(&mut buf)?;
                left -= want as u64;
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf);
                }
                if left == 0
                    && let (Some(h), Some(c)) = (hasher.take(), check.as_ref())
                {
                    let actual = Digest::from_hasher(h);
                    if actual != c.digest {
                        state.blob_corrupt(&c.digest, &c.path, &actual);
                        return Err(io::Error::other(format!(
                            "{}: hashes to {actual}, not {}",
                            c.path.display(),
                            c.digest
                        )));
                    }
                    state.blob_verified(&c.digest);
                }
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the client went away
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Channel { rx, len }.boxed()
}
