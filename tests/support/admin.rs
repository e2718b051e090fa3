//! The admin API of the binary: management keys, an `[admin]` section,
//! requests with exactly the headers a test gives, and its error shape.

use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

use super::client::send;
use super::config::config;
use super::hash;
use super::mock::{Mock, Reply};
use super::recording::Recorded;
use super::response::Resp;

/// The management key of the admin tests.
pub(crate) const MGMT: &str = "mk-test-management-key-one";

/// Where the admin API listens in these tests: an ephemeral port on the
/// proxy's address, which the config check allows although `server.listen`
/// asks for one too (see `admin_and_proxy_may_both_take_an_ephemeral_port_on_one_address`).
pub(crate) const ADMIN_LISTEN: &str = "127.0.0.1:0";

/// An `[admin]` section on `listen` accepting `keys`.
pub(crate) fn admin_section(listen: &str, keys: &[&str]) -> String {
    let hashes: Vec<String> = keys.iter().map(|k| format!("\"{}\"", hash(k))).collect();
    format!(
        "\n[admin]\nlisten = \"{listen}\"\nmanagement_key_hashes = [{}]\n",
        hashes.join(", ")
    )
}

/// A config whose providers point at `mock`, with an `[admin]` section
/// accepting `keys`, then `creds`.
pub(crate) fn admin_config(mock: &Mock, keys: &[&str], creds: &str) -> String {
    config(
        mock,
        &format!("{}{creds}", admin_section(ADMIN_LISTEN, keys)),
    )
}

pub(crate) fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Standard base64, for `Authorization: Basic`.
pub(crate) fn base64(input: &[u8]) -> String {
    ::base64::engine::general_purpose::STANDARD.encode(input)
}

/// One request to the admin listener with exactly these headers.
pub(crate) async fn admin_req(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    send(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

/// GET with the management key.
pub(crate) async fn admin_get(addr: SocketAddr, path: &str) -> Resp {
    admin_req(addr, "GET", path, &[("authorization", bearer(MGMT))], "").await
}

/// GET with the management key; must be 200 JSON.
pub(crate) async fn admin_json(addr: SocketAddr, path: &str) -> Value {
    let r = admin_get(addr, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    r.json()
}

/// `GET /api/v1/byok?{query}`: the ids of the page and `total_count`.
pub(crate) async fn list_ids(addr: SocketAddr, query: &str) -> (Vec<String>, u64) {
    let v = admin_json(addr, &format!("/api/v1/byok?{query}")).await;
    let ids = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {v}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, v["total_count"].as_u64().unwrap())
}

/// The keys of a JSON object, sorted.
pub(crate) fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// A §6 error: exactly `{"error": {"code", "message", "metadata": {"reason"}}}`.
pub(crate) fn assert_refusal(r: &Resp, status: u16, reason: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let v = r.json();
    assert_eq!(keys(&v), ["error"], "{what}: {v}");
    assert_eq!(keys(&v["error"]), ["code", "message", "metadata"], "{what}");
    assert_eq!(v["error"]["code"], status, "{what}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert_eq!(keys(&v["error"]["metadata"]), ["reason"], "{what}");
    assert_eq!(v["error"]["metadata"]["reason"], reason, "{what}: {v}");
}

/// The mock's answer by the secret it receives: `sk-429-…` answers 429.
pub(crate) fn rate_limit_sk_429(r: &Recorded) -> Reply {
    let secret = r
        .header("x-api-key")
        .or_else(|| r.header("authorization"))
        .unwrap_or("");
    if secret.contains("sk-429-") {
        Reply::json(429, r#"{"error":"rate limited"}"#)
    } else {
        Reply::json(200, r#"{"ok":true}"#)
    }
}
