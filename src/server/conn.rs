//! One accepted connection, served: TLS when the listener has it, then
//! HTTP/1.1 or HTTP/2 (chosen by ALPN under TLS, by the client's preface in
//! cleartext: HTTP/2 with prior knowledge), within the listener's limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;

/// The longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request head may take to arrive (HTTP/1.1), and the first
/// bytes of a cleartext connection.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams one HTTP/2 connection may have open at once.
const MAX_STREAMS: u32 = 200;

/// How one listener serves its connections.
pub(super) struct Serving {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
}

impl Serving {
    /// `max_header_bytes` bounds a request head in either protocol.
    pub(super) fn new(max_header_bytes: usize, tls: Option<TlsAcceptor>) -> Self {
        let mut h1 = http1::Builder::new();
        // hyper's read buffer holds the request head: bounding it bounds what
        // an unfinished head can make a connection hold (431 beyond).
        h1.timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(max_header_bytes);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_STREAMS)
            // A peer that stops answering pings is gone: its slot is freed.
            .keep_alive_interval(Duration::from_secs(60))
            .keep_alive_timeout(Duration::from_secs(20));
        Serving {
            http1: h1,
            http2: h2,
            tls,
        }
    }

    /// `https` or `http`, for log lines.
    pub(super) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// A slot of `server.max_connections`, and the open-connections gauge: both
/// given back when the connection ends, however it ends.
pub(super) struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    pub(super) fn new(permit: tokio::sync::OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.connection(true);
        Slot {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection(false);
    }
}

/// Serves `stream` on a task of its own; `watcher` lets a graceful
/// shutdown drain it.
pub(super) fn serve_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    serving: Arc<Serving>,
    watcher: Watcher,
    slot: Option<Slot>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<crate::BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<crate::BoxError>,
{
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    tokio::spawn(async move {
        let _slot = slot;
        let result = match &serving.tls {
            Some(acceptor) => {
                let Some(tls) = within(
                    HANDSHAKE_TIMEOUT,
                    acceptor.accept(stream),
                    peer,
                    "TLS handshake",
                )
                .await
                else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                serving.serve(tls, h2, service, watcher).await
            }
            None => {
                // None inside: the client closed before sending anything.
                let Some(Some(h2)) = within(
                    HEAD_TIMEOUT,
                    prior_knowledge(&stream),
                    peer,
                    "first request bytes",
                )
                .await
                else {
                    return;
                };
                serving.serve(stream, h2, service, watcher).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}

/// What `step` gives within `limit`; `None` (logged at debug, naming
/// `what`) when it fails or takes longer.
async fn within<T>(
    limit: Duration,
    step: impl std::future::Future<Output = std::io::Result<T>>,
    peer: SocketAddr,
    what: &str,
) -> Option<T> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "{what} failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "{what} timed out");
            None
        }
    }
}

impl Serving {
    async fn serve<I, S, B>(
        &self,
        io: I,
        h2: bool,
        service: S,
        watcher: Watcher,
    ) -> Result<(), hyper::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<crate::BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<crate::BoxError>,
    {
        let io = TokioIo::new(io);
        if h2 {
            watcher
                .watch(self.http2.serve_connection(io, service))
                .await
        } else {
            watcher
                .watch(self.http1.serve_connection(io, service))
                .await
        }
    }
}

/// Whether a cleartext client speaks HTTP/2 with prior knowledge: its first
/// bytes are the connection preface (`PRI * HTTP/2.0…`; `PRI` is no HTTP/1
/// method). Looks without reading; `None` when the client closed first.
async fn prior_knowledge(stream: &TcpStream) -> std::io::Result<Option<bool>> {
    const PREFACE: &[u8; 4] = b"PRI ";
    let mut first = [0u8; 4];
    let n = stream.peek(&mut first).await?;
    Ok((n > 0).then(|| n == PREFACE.len() && first == *PREFACE))
}
