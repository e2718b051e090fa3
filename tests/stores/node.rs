//! Proxies on a database store, and the admin API calls the tests make.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::support::*;

/// The management key of every store test.
pub(crate) const MGMT: &str = "mgmt-store-tests";

/// A master key (64 hex) for the stores.
pub(crate) const MASTER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff";
/// Another one, for rotation.
pub(crate) const MASTER2: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

/// A config on `store_url`, with the admin API on an ephemeral port and every
/// provider pointing at `mock`.
pub(crate) fn store_config(mock: &Mock, store_url: &str) -> String {
    let up = mock.url();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
first_byte_timeout_secs = 10

[store]
url = "{store_url}"
default_workspace_id = "ws-1"

[admin]
listen = "127.0.0.1:0"
management_key_hashes = ["{mgmt}"]

[providers.openai]
base_url = "{up}"
[providers.anthropic]
base_url = "{up}"
"#,
        mgmt = hash(MGMT),
    )
}

/// A running proxy on a database store, and its admin address.
pub(crate) struct Node {
    pub(crate) proxy: Proxy,
    pub(crate) admin: SocketAddr,
}

impl Node {
    pub(crate) async fn start(config: &str, master: &str) -> Node {
        let proxy = Proxy::start_with_env(config, &[("BYOK_MASTER_KEY", master)]).await;
        let admin = proxy.admin_addr().await;
        Node { proxy, admin }
    }

    /// A node on Postgres, once it follows the store: its first resync is
    /// done, so every later write reaches it as a notification.
    pub(crate) async fn start_following(config: &str, master: &str) -> Node {
        let node = Node::start(config, master).await;
        node.proxy.wait_log("resynchronised from the store").await;
        node
    }

    /// An admin API call with the management key.
    pub(crate) async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        send(
            req(method, &format!("http://{}{path}", self.admin), Some(MGMT))
                .header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap(),
        )
        .await
    }

    /// Creates a credential; returns its BYOKKey.
    pub(crate) async fn create(&self, body: Value) -> Value {
        let r = self.admin("POST", "/api/v1/byok", Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["data"].clone()
    }

    /// Creates a gateway key for `user`; returns (raw key, hash).
    pub(crate) async fn create_key(&self, user: &str) -> (String, String) {
        let r = self
            .admin(
                "POST",
                "/api/v1/keys",
                Some(serde_json::json!({"user_id": user})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["key"].as_str().unwrap().to_owned(),
            v["data"]["hash"].as_str().unwrap().to_owned(),
        )
    }

    /// Every credential the registry holds, as (id, name, sort_order),
    /// sorted: what the node serves, to hold beside the database.
    pub(crate) async fn listed(&self) -> Vec<(String, Option<String>, i64)> {
        let v = self
            .admin("GET", "/api/v1/byok?limit=100", None)
            .await
            .json();
        let mut seen: Vec<(String, Option<String>, i64)> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["name"].as_str().map(str::to_owned),
                    c["sort_order"].as_i64().unwrap(),
                )
            })
            .collect();
        seen.sort();
        seen
    }

    /// A chat completion through the proxy with gateway key `key`.
    pub(crate) async fn chat(&self, key: &str, model: &str) -> Resp {
        chat(&self.proxy, key, model).await
    }
}
