//! [`Forwarder`]: the hyper-util HTTP client as a tower service, the inner
//! service the binary puts under [`ByokLayer`](crate::ByokLayer).
//!
//! It sends each request to the absolute URI the layer set (https through
//! rustls with the webpki roots, or plain http), follows no redirects, sets
//! `TCP_NODELAY`, and bounds each connection attempt by the connect timeout.
//! Certificates are verified against the webpki roots and any extra roots
//! configured (`server.upstream_ca_file`); an unverified upstream never sees
//! a request, let alone a secret.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use tower::Service;

use super::body::ForwardBody;
use crate::common::tls::client_tls;

/// Settings of the upstream client.
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Per upstream connection attempt.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Certificates trusted for upstream TLS besides the webpki (Mozilla) roots:
    /// a private gateway's or an egress proxy's CA.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for ForwarderOptions {
    fn default() -> Self {
        ForwarderOptions {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            extra_roots: Vec::new(),
        }
    }
}

/// Sends requests with absolute URIs upstream; cheap to clone (one `Arc`
/// around the client and its pool, since the layer clones its inner service
/// for every request).
#[derive(Clone, Debug)]
pub struct Forwarder {
    client: Arc<Client<SharedConnector, ForwardBody>>,
}

/// The TLS connector behind one `Arc`. The client clones its connector for
/// every request, in case it needs a new connection; the rustls connector's
/// own clone is several reference counts, touched by every worker thread.
#[derive(Clone, Debug)]
struct SharedConnector(Arc<HttpsConnector<HttpConnector>>);

impl Service<Uri> for SharedConnector {
    type Response = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
    type Error = <HttpsConnector<HttpConnector> as Service<Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as Service<Uri>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The HTTP connector underneath is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Only now, when a connection is really opened, is the connector cloned.
        HttpsConnector::clone(&self.0).call(uri)
    }
}

impl Forwarder {
    /// A client with a connection pool and TLS via rustls (ring), trusting the
    /// webpki roots plus `extra_roots`. Fails only on an unusable extra root.
    pub fn new(opts: ForwarderOptions) -> Result<Self, rustls::Error> {
        let tls = client_tls(&opts.extra_roots)?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect_timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(opts.pool_idle_timeout)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(SharedConnector(Arc::new(https)));
        Ok(Forwarder {
            client: Arc::new(client),
        })
    }
}

impl Service<http::Request<ForwardBody>> for Forwarder {
    type Response = http::Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<ForwardBody>) -> Self::Future {
        self.client.request(req)
    }
}
