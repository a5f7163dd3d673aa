//! The build's session: the gRPC server kpbuild runs for BuildKit on the session's byte stream.
//! It serves the build context (`Upload`: the frontend fetches `http://buildkit-session/<id>`)
//! and receives a result (`FileSend`: the `tar` exporter writes into it), plus the health
//! check every session answers. BuildKit calls only the methods the session names.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bollard_buildkit_proto::health::health_check_response::ServingStatus;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::filesync::v1::BytesMessage as FileBytes;
use bollard_buildkit_proto::moby::filesync::v1::file_send_server::{FileSend, FileSendServer};
use bollard_buildkit_proto::moby::upload::v1::BytesMessage as UploadBytes;
use bollard_buildkit_proto::moby::upload::v1::upload_server::{Upload, UploadServer};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::{Request, Response, Status, Streaming};

use super::MAX_MESSAGE;
use super::connect::BoxDuplex;

/// The context goes up in 1 MiB pieces (messages may be up to [`MAX_MESSAGE`]).
const UPLOAD_CHUNK: usize = 1 << 20;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What a session offers BuildKit.
pub struct Services {
    /// The build context as a tar, served under `http://buildkit-session/<id>`.
    pub context: Option<(String, bytes::Bytes)>,
    /// Where a `tar` exporter's stream goes. Shared with the caller, who drops it when the
    /// build is over (the receiving side then sees the end, also when nothing was exported).
    pub result: Sink,
}

/// The sender of a result stream, taken by the first `DiffCopy` (or dropped by the owner).
pub type Sink = Arc<Mutex<Option<tokio::sync::mpsc::Sender<bytes::Bytes>>>>;

impl Services {
    /// The method URLs BuildKit may call (it asks for nothing else).
    pub fn methods(&self) -> Vec<String> {
        let mut m = vec!["/grpc.health.v1.Health/Check".to_string()];
        if self.context.is_some() {
            m.push("/moby.upload.v1.Upload/Pull".into());
        }
        if self.result.lock().expect("sink").is_some() {
            m.push("/moby.filesync.v1.FileSend/DiffCopy".into());
        }
        m
    }

    /// Serves the session on `io` until BuildKit closes it or `end` is ended (the build is
    /// over: the connection closes at once, whatever BuildKit still holds open).
    pub async fn serve(self, io: BoxDuplex, end: End) -> Result<(), tonic::transport::Error> {
        let upload = UploadServer::new(UploadContext {
            content: self.context,
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
        let send = FileSendServer::new(ResultSink { sink: self.result })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(Healthy))
            .add_service(upload)
            .add_service(send)
            .serve_with_incoming(futures_util::stream::iter([Ok::<_, std::io::Error>(
                SessionIo { io, end },
            )]))
            .await
    }
}

struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn list(
        &self,
        _: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

struct UploadContext {
    content: Option<(String, bytes::Bytes)>,
}

#[tonic::async_trait]
impl Upload for UploadContext {
    type PullStream = BoxStream<UploadBytes>;

    async fn pull(
        &self,
        request: Request<Streaming<UploadBytes>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let path = request
            .metadata()
            .get("urlpath")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match &self.content {
            Some((id, data)) if path.trim_start_matches('/') == id => {
                let data = data.clone();
                let pieces = (0..data.len().div_ceil(UPLOAD_CHUNK)).map(move |i| {
                    let end = ((i + 1) * UPLOAD_CHUNK).min(data.len());
                    Ok(UploadBytes {
                        data: data[i * UPLOAD_CHUNK..end].to_vec(),
                    })
                });
                Ok(Response::new(Box::pin(futures_util::stream::iter(pieces))))
            }
            _ => Err(Status::not_found(format!(
                "this session uploads no {path:?}"
            ))),
        }
    }
}

struct ResultSink {
    sink: Sink,
}

#[tonic::async_trait]
impl FileSend for ResultSink {
    type DiffCopyStream = BoxStream<FileBytes>;

    async fn diff_copy(
        &self,
        request: Request<Streaming<FileBytes>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let Some(sink) = self.sink.lock().expect("sink").take() else {
            return Err(Status::already_exists(
                "this session takes one result and has it already",
            ));
        };
        let mut input = request.into_inner();
        while let Some(m) = input.next().await {
            let m = m?;
            if sink.send(bytes::Bytes::from(m.data)).await.is_err() {
                return Err(Status::aborted("kpbuild stopped reading the result"));
            }
        }
        Ok(Response::new(Box::pin(futures_util::stream::empty())))
    }
}

/// Ends a session's connection from kpbuild's side.
#[derive(Clone, Default)]
pub struct End(Arc<EndState>);

#[derive(Default)]
struct EndState {
    ended: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl End {
    pub fn end(&self) {
        self.0
            .ended
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.waker.wake();
    }

    fn ended(&self, cx: &Context<'_>) -> bool {
        self.0.waker.register(cx.waker());
        self.0.ended.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The session's stream as tonic's server wants a connection; once ended it reads as closed
/// and refuses writes, so the connection's task ends.
struct SessionIo {
    io: BoxDuplex,
    end: End,
}

impl tonic::transport::server::Connected for SessionIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for SessionIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.end.ended(cx) {
            return Poll::Ready(Ok(()));
        }
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for SessionIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.end.ended(cx) {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        self.io.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}
