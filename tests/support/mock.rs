//! A recording mock upstream on a real socket, plain or behind TLS: it answers
//! by a behaviour chosen per test and records every request it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use super::recording::{Recorded, Recording};

/// What the mock answers.
pub(crate) enum Reply {
    /// A complete response.
    Full(u16, Vec<(&'static str, String)>, String),
    /// A complete response whose body need not be text.
    Bytes(u16, Vec<(&'static str, String)>, Bytes),
    /// A streamed body: `first` at once, then the rest once `gate` is notified.
    /// `cancelled` is notified if the reader goes away while waiting.
    Stream {
        first: String,
        rest: Vec<String>,
        gate: Arc<Notify>,
        cancelled: Arc<Notify>,
    },
    /// Never answer.
    Hang,
}

impl Reply {
    pub(crate) fn json(status: u16, body: &str) -> Reply {
        Reply::Full(
            status,
            vec![("content-type", "application/json".into())],
            body.to_owned(),
        )
    }
}

type Behavior = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A mock upstream on `127.0.0.1`, recording every request it answers.
pub(crate) struct Mock {
    pub(crate) addr: SocketAddr,
    recording: Recording<Recorded>,
    /// Notified on every recorded request.
    pub(crate) arrived: Arc<Notify>,
}

impl Mock {
    pub(crate) async fn start(
        behavior: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Mock {
        Mock::start_with(Arc::new(behavior), None).await
    }

    /// The same mock behind TLS, with the certificate in tests/fixtures
    /// (for `localhost` and `127.0.0.1`, signed by tests/fixtures/ca.pem).
    pub(crate) async fn start_tls(
        behavior: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Mock {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let certs = CertificateDer::pem_file_iter(format!("{dir}/upstream.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/upstream.key")).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Mock::start_with(Arc::new(behavior), Some(acceptor)).await
    }

    async fn start_with(behavior: Behavior, tls: Option<tokio_rustls::TlsAcceptor>) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recording = Recording::default();
        let arrived = recording.arrived();
        let log2 = recording.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (behavior, log) = (behavior.clone(), log2.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (behavior, log) = (behavior.clone(), log.clone());
                        async move { Ok::<_, Infallible>(answer(req, &behavior, &log).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            // A handshake the client aborts (untrusted
                            // certificate) never becomes a request.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Mock {
            addr,
            recording,
            arrived,
        }
    }

    /// A mock that answers 200 with a small JSON body to everything.
    pub(crate) async fn ok() -> Mock {
        Mock::start(|_| Reply::json(200, r#"{"id":"chatcmpl-1","ok":true}"#)).await
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.recording.all()
    }

    pub(crate) fn count(&self) -> usize {
        self.recording.count()
    }

    /// The bearer secrets of the requests from the `from`-th on, in order:
    /// which credentials a request tried.
    pub(crate) fn secrets_from(&self, from: usize) -> Vec<String> {
        self.requests()[from..]
            .iter()
            .map(|r| {
                r.header("authorization")
                    .unwrap_or_default()
                    .trim_start_matches("Bearer ")
                    .to_owned()
            })
            .collect()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

type MockBody = http_body_util::Either<Full<Bytes>, ChannelBody>;

async fn answer(
    req: Request<Incoming>,
    behavior: &Behavior,
    log: &Recording<Recorded>,
) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    let reply = behavior(&rec);
    log.record(rec);
    match reply {
        Reply::Full(status, headers, body) => full(status, headers, Bytes::from(body)),
        Reply::Bytes(status, headers, body) => full(status, headers, body),
        Reply::Stream {
            first,
            rest,
            gate,
            cancelled,
        } => {
            let (tx, rx) = mpsc::channel::<Bytes>(64);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from(first)).await;
                tokio::select! {
                    _ = gate.notified() => {
                        for chunk in rest {
                            if tx.send(Bytes::from(chunk)).await.is_err() {
                                cancelled.notify_one();
                                return;
                            }
                        }
                    }
                    _ = tx.closed() => cancelled.notify_one(),
                }
            });
            let mut res = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
            res.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            res
        }
        Reply::Hang => std::future::pending().await,
    }
}

/// A complete response of `status`, `headers` and `body`.
fn full(status: u16, headers: Vec<(&'static str, String)>, body: Bytes) -> Response<MockBody> {
    let mut res = Response::new(http_body_util::Either::Left(Full::new(body)));
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        res.headers_mut().insert(k, v.parse().unwrap());
    }
    res
}

/// A response body fed by a channel, so the mock controls when each chunk goes.
pub(crate) struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}
