//! Management keys scoped to workspaces (SPEC §7), on a writable store: a
//! tenant manages its own credentials and gateway keys through the API,
//! and nothing else exists for it.

use serde_json::{json, Value};

use crate::node::*;
use crate::support::*;

const TENANT: &str = "mgmt-tenant-scoped-key";

/// A SQLite node with the operator key, a key scoped to ws-a and ws-b, and
/// a shared tier in `platform` (which the scoped key also names: it still
/// may not see it).
async fn node(mock: &Mock, dir: &tempfile::TempDir) -> Node {
    let config = store_config(mock, &format!("sqlite://{}/byok.db", dir.path().display()))
        + &format!(
            "\n[[admin.management_keys]]\nhash = \"{}\"\nworkspaces = [\"ws-a\", \"ws-b\", \"platform\"]\n\
             \n[shared]\nworkspace_id = \"platform\"\nworkspaces = [\"*\"]\n",
            hash(TENANT)
        );
    Node::start(&config, MASTER).await
}

/// An admin call with the tenant's key.
async fn tenant(node: &Node, method: &str, path: &str, body: Option<Value>) -> Resp {
    let body = body
        .map(|b| bytes::Bytes::from(b.to_string()))
        .unwrap_or_default();
    send(
        req(
            method,
            &format!("http://{}{path}", node.admin),
            Some(TENANT),
        )
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(body))
        .unwrap(),
    )
    .await
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn a_scoped_key_sees_and_writes_only_its_workspaces() {
    let mock = Mock::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let node = node(&mock, &dir).await;
    // The operator's records: another tenant's, a global one, the shared tier's.
    let foreign = node
        .create(
            json!({"provider": "openai", "key": "sk-foreign-0000000001", "workspace_id": "ws-c"}),
        )
        .await;
    let global = node
        .create(json!({"provider": "openai", "key": "sk-global-00000000001", "workspace_id": null}))
        .await;
    let shared = node
        .create(json!({"provider": "openai", "key": "sk-shared-00000000001", "workspace_id": "platform"}))
        .await;
    let foreign_key = node
        .admin(
            "POST",
            "/api/v1/keys",
            Some(json!({"user_id": "u", "workspace_id": "ws-c"})),
        )
        .await
        .json()["data"]["hash"]
        .as_str()
        .unwrap()
        .to_owned();

    // Its own: created in its first workspace by default, or in another of its own.
    let r = tenant(
        &node,
        "POST",
        "/api/v1/byok",
        Some(json!({"provider": "openai", "key": "sk-tenant-a-000000001"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mine = r.json()["data"].clone();
    assert_eq!(mine["workspace_id"], "ws-a");
    let r = tenant(
        &node,
        "POST",
        "/api/v1/byok",
        Some(json!({"provider": "openai", "key": "sk-tenant-b-000000001", "workspace_id": "ws-b"})),
    )
    .await;
    assert_eq!(r.json()["data"]["workspace_id"], "ws-b");

    // Lists: its first workspace by default, `*` = all of its own, never the others'.
    let ids = |v: Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["workspace_id"].as_str().unwrap_or("null").to_owned())
            .collect()
    };
    assert_eq!(
        ids(tenant(&node, "GET", "/api/v1/byok", None).await.json()),
        ["ws-a"]
    );
    assert_eq!(
        ids(tenant(&node, "GET", "/api/v1/byok?workspace_id=*", None)
            .await
            .json()),
        ["ws-a", "ws-b"]
    );
    for other in ["ws-c", "platform", "nowhere"] {
        let v = tenant(
            &node,
            "GET",
            &format!("/api/v1/byok?workspace_id={other}"),
            None,
        )
        .await
        .json();
        assert_eq!(v, json!({"data": [], "total_count": 0}), "{other}");
    }

    // Another workspace's record, a global one, the shared tier's: exactly a missing one.
    let missing = tenant(
        &node,
        "GET",
        "/api/v1/byok/00000000-0000-4000-8000-000000000000",
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    for cred in [&foreign, &global, &shared] {
        let id = cred["id"].as_str().unwrap();
        for (method, body) in [
            ("GET", None),
            ("PATCH", Some(json!({"name": "x"}))),
            ("DELETE", None),
        ] {
            let r = tenant(&node, method, &format!("/api/v1/byok/{id}"), body).await;
            assert_eq!((r.status, r.text()), (404, missing.text()), "{method} {id}");
        }
        // Unchanged.
        let still = node
            .admin("GET", &format!("/api/v1/byok/{id}"), None)
            .await
            .json();
        assert_eq!(&still["data"], cred);
    }
    let missing_key = tenant(
        &node,
        "GET",
        &format!("/api/v1/keys/{}", "0".repeat(64)),
        None,
    )
    .await;
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"disabled": true}))),
        ("DELETE", None),
    ] {
        let r = tenant(&node, method, &format!("/api/v1/keys/{foreign_key}"), body).await;
        assert_eq!(
            (r.status, r.text()),
            (404, missing_key.text()),
            "{method} key"
        );
    }

    // Creating elsewhere, or a global credential: 403.
    for body in [
        json!({"provider": "openai", "key": "sk-x-000000000001", "workspace_id": "ws-c"}),
        json!({"provider": "openai", "key": "sk-x-000000000002", "workspace_id": null}),
        json!({"provider": "openai", "key": "sk-x-000000000003", "workspace_id": "platform"}),
    ] {
        let r = tenant(&node, "POST", "/api/v1/byok", Some(body.clone())).await;
        assert_eq!((r.status, r.reason()), (403, "forbidden".into()), "{body}");
    }
    let r = tenant(
        &node,
        "POST",
        "/api/v1/keys",
        Some(json!({"user_id": "u", "workspace_id": "ws-c"})),
    )
    .await;
    assert_eq!(r.status, 403);
    // Its own gateway keys work, in its default workspace.
    let r = tenant(&node, "POST", "/api/v1/keys", Some(json!({"user_id": "u"}))).await;
    assert_eq!(r.json()["data"]["workspace_id"], "ws-a");
    // The metrics are every workspace's.
    assert_eq!(tenant(&node, "GET", "/metrics", None).await.status, 403);

    // Its own records: updated and deleted.
    let id = mine["id"].as_str().unwrap();
    let r = tenant(
        &node,
        "PATCH",
        &format!("/api/v1/byok/{id}"),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(r.json()["data"]["name"], "renamed");
    let r = tenant(&node, "DELETE", &format!("/api/v1/byok/{id}"), None).await;
    assert_eq!(r.json(), json!({"deleted": true}));
    // The operator still sees everything.
    let all = node
        .admin("GET", "/api/v1/byok?workspace_id=*", None)
        .await
        .json();
    assert_eq!(all["total_count"], 4);
    assert_eq!(mock.count(), 0);
}
