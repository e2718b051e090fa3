//! An HTTP client for the proxy's and the admin API's sockets.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

use super::proxy::Proxy;
use super::response::Resp;
use super::PATIENCE;

pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub(crate) fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A request builder with the gateway key in `Authorization: Bearer`.
pub(crate) fn req(method: &str, url: &str, key: Option<&str>) -> http::request::Builder {
    let b = Request::builder().method(method).uri(url);
    match key {
        Some(k) => b.header("authorization", format!("Bearer {k}")),
        None => b,
    }
}

pub(crate) async fn send(r: Request<Full<Bytes>>) -> Resp {
    let res = tokio::time::timeout(PATIENCE, client().request(r))
        .await
        .expect("response within patience")
        .expect("response");
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Resp::new(parts, body)
}

/// POSTs a JSON body with the gateway key.
pub(crate) async fn post(proxy: &Proxy, path: &str, key: &str, body: &str) -> Resp {
    send(
        req("POST", &proxy.url(path), Some(key))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

pub(crate) async fn chat(proxy: &Proxy, key: &str, model: &str) -> Resp {
    post(
        proxy,
        "/openai/v1/chat/completions",
        key,
        &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
    )
    .await
}

/// Writes raw bytes on a fresh connection and reads until the server closes it.
pub(crate) async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
