//! examples/axum_app.rs on a real socket: the example's own `app` served by
//! `axum::serve` on an ephemeral port, providers pointing at a recording mock
//! upstream.
//!
//! axum answers the application's routes with no credential work; a provider
//! path goes through `ByokLayer`, which strips the gateway key and injects the
//! secret; a refused request is answered by the layer and never reaches the
//! upstream. No server feature needed: this is the middleware as an embedder
//! builds it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[path = "../examples/axum_app.rs"]
#[expect(
    dead_code,
    reason = "the example's `main` reads the command line; the test calls `app`"
)]
mod axum_app;
#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;

use support::{config, cred, req, send, Mock, Resp, GW};

/// The provider secret of the one credential; the upstream must get it.
const SECRET: &str = "sk-axum-SECRET-0001";

/// The example's app over `mock`, served on an ephemeral port.
async fn serve(mock: &Mock) -> SocketAddr {
    let text = config(mock, &cred("cred-axum", "openai", SECRET, ""));
    let config = byok_proxy::Config::parse(&text).expect("the test config is valid");
    let app = axum_app::app(&config).expect("the app builds");
    // Bound before the task starts: connections queue until it accepts.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `method` on `path` with `key` in `Authorization: Bearer`, and `body`.
async fn call(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> Resp {
    let request = req(method, &format!("http://{addr}{path}"), key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(request).await
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn the_apps_own_routes_are_answered_by_axum_without_credentials() {
    let mock = Mock::ok().await;
    let addr = serve(&mock).await;

    // No key, and a key the layer would refuse: axum answers either way.
    for key in [None, Some("gw-not-registered")] {
        let got = call(addr, "GET", "/healthz", key, "").await;
        assert_eq!((got.status, got.text().as_str()), (200, "ok"), "{key:?}");
    }
    let got = call(addr, "GET", "/version", None, "").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (200, env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(mock.count(), 0, "the app's routes never reach the upstream");
}

#[tokio::test]
async fn a_provider_path_goes_through_the_layer_to_the_upstream() {
    let mock = Mock::ok().await;
    let addr = serve(&mock).await;

    let got = call(addr, "POST", "/openai/v1/chat/completions", Some(GW), CHAT).await;

    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], "chatcmpl-1", "the upstream's own answer");
    assert_eq!(got.header("x-byok-credential-id"), Some("cred-axum"));
    let seen = mock.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let seen = &seen[0];
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/v1/chat/completions")
    );
    let bearer = format!("Bearer {SECRET}");
    assert_eq!(seen.header("authorization"), Some(bearer.as_str()));
    assert!(
        !seen.everything().contains(GW),
        "gateway key forwarded: {seen:#?}"
    );
    assert_eq!(seen.body, CHAT.as_bytes(), "the body as the client sent it");
}

#[tokio::test]
async fn a_bad_gateway_key_is_refused_by_the_layer_and_never_forwarded() {
    let mock = Mock::ok().await;
    let addr = serve(&mock).await;

    let path = "/openai/v1/chat/completions";
    let got = call(addr, "POST", path, Some("gw-not-registered"), CHAT).await;
    assert_eq!(
        (got.status, got.reason().as_str()),
        (401, "invalid_api_key")
    );
    let got = call(addr, "POST", path, None, CHAT).await;
    assert_eq!(
        (got.status, got.reason().as_str()),
        (401, "missing_api_key")
    );
    // Not an app route and no provider: the fallback hands it to the layer,
    // which answers in its own JSON shape, not axum's empty 404.
    let got = call(addr, "GET", "/nothing-here", Some(GW), "").await;
    assert_eq!((got.status, got.reason().as_str()), (404, "not_found"));

    assert_eq!(
        mock.count(),
        0,
        "a refused request never reaches the upstream"
    );
}
