//! [`Forwarder`]: the hyper-util HTTP client as a tower service, the inner
//! service the binary puts under [`ByokLayer`](crate::ByokLayer).
//!
//! It sends each request to the absolute URI the layer set (https through
//! rustls with the webpki roots, or plain http), follows no redirects, sets
//! `TCP_NODELAY`, and bounds each connection attempt by the connect timeout.

use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use tower::Service;

use crate::service::ForwardBody;

/// Settings of the upstream client.
#[derive(Debug, Clone, Copy)]
pub struct ForwarderOptions {
    /// Per upstream connection attempt.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
}

impl Default for ForwarderOptions {
    fn default() -> Self {
        ForwarderOptions {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Sends requests with absolute URIs upstream; cheap to clone (a shared pool).
#[derive(Clone, Debug)]
pub struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, ForwardBody>,
}

impl Forwarder {
    /// A client with a connection pool, TLS via rustls (ring, webpki roots).
    pub fn new(opts: ForwarderOptions) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect_timeout));
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map(|b| {
                b.https_or_http()
                    .enable_http1()
                    .wrap_connector(http.clone())
            })
            .unwrap_or_else(|_| {
                // ring always offers the default protocol versions; this arm
                // only keeps the constructor infallible.
                HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(opts.pool_idle_timeout)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        Forwarder { client }
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
