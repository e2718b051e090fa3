//! The embedded SQLite store through the real binary: the write API as
//! OpenRouter defines it, gateway keys, persistence, secrets at rest.

use serde_json::{json, Value};

use crate::node::*;
use crate::support::*;

struct Sqlite {
    mock: Mock,
    dir: tempfile::TempDir,
}

impl Sqlite {
    async fn new() -> Sqlite {
        Sqlite {
            mock: Mock::ok().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("byok.db")
    }

    fn config(&self) -> String {
        store_config(&self.mock, &format!("sqlite://{}", self.path().display()))
    }

    /// Every byte the database keeps on disk (main file and WAL).
    fn on_disk(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        all
    }
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn writes_follow_openrouter_and_take_effect_on_the_next_request() {
    let db = Sqlite::new().await;
    let node = Node::start(&db.config(), MASTER).await;
    let (key, key_hash) = node.create_key("user-1").await;

    // Nothing yet: no credential for openai.
    let r = node.chat(&key, "gpt-4o").await;
    assert_eq!((r.status, r.reason()), (403, "no_credential".into()));

    let created = node
        .create(json!({
            "provider": "openai",
            "key": "sk-store-SECRET-0001-AbCd",
            "name": "first",
            "allowed_models": ["openai/gpt-4o"],
        }))
        .await;
    assert_eq!(created["label"], "sk-...AbCd");
    assert_eq!(created["workspace_id"], "ws-1", "the default workspace");
    assert_eq!(created["allowed_api_key_hashes"], serde_json::Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);

    let r = node.chat(&key, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-byok-credential-id"), Some(&*id));
    let metrics = node.admin("GET", "/metrics", None).await.text();
    assert!(
        metrics.contains("byok_registry_credentials 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("byok_registry_api_keys 1\n"), "{metrics}");
    assert_eq!(
        db.mock.requests()[0].header("authorization"),
        Some("Bearer sk-store-SECRET-0001-AbCd")
    );
    assert_eq!(node.chat(&key, "o1").await.status, 403);

    // PATCH: omitted unchanged, null clears, array replaces, key rotates in place.
    let r = node
        .admin(
            "PATCH",
            &format!("/api/v1/byok/{id}"),
            Some(json!({"allowed_models": null, "allowed_api_key_hashes": [key_hash], "key": "sk-store-ROTATED-0002-WxYz", "sort_order": 7})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let patched = r.json()["data"].clone();
    assert_eq!(patched["name"], "first");
    assert_eq!(patched["allowed_models"], serde_json::Value::Null);
    assert_eq!(patched["allowed_api_key_hashes"], json!([key_hash]));
    assert_eq!(patched["label"], "sk-...WxYz");
    assert_eq!(patched["sort_order"], 7);
    assert_eq!(patched["created_at"], created["created_at"]);
    let r = node.chat(&key, "o1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        db.mock.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-store-ROTATED-0002-WxYz")
    );

    // GET and list agree.
    let got = node
        .admin("GET", &format!("/api/v1/byok/{id}"), None)
        .await
        .json();
    assert_eq!(got["data"], patched);
    let list = node.admin("GET", "/api/v1/byok", None).await.json();
    assert_eq!(list["total_count"], 1);

    // DELETE: gone from lists and from the next request.
    let r = node
        .admin("DELETE", &format!("/api/v1/byok/{id}"), None)
        .await;
    assert_eq!((r.status, r.json()), (200, json!({"deleted": true})));
    assert_eq!(
        node.admin("GET", &format!("/api/v1/byok/{id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        node.admin("DELETE", &format!("/api/v1/byok/{id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        node.admin("GET", "/api/v1/byok", None).await.json()["total_count"],
        0
    );
    assert_eq!(node.chat(&key, "o1").await.reason(), "no_credential");
    let metrics = node.admin("GET", "/metrics", None).await.text();
    assert!(
        metrics.contains("byok_registry_credentials 0\n"),
        "{metrics}"
    );
    // The secret is wiped from the row.
    assert!(!contains_bytes(&db.on_disk(), "sk-store-ROTATED"));
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn invalid_writes_are_400_naming_the_field_and_never_the_secret() {
    let db = Sqlite::new().await;
    let node = Node::start(&db.config(), MASTER).await;
    let base = json!({"provider": "openai", "key": "sk-store-CANARY-0003"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (
            with("allowed_api_key_hashes", json!([])),
            "allowed_api_key_hashes: []",
        ),
        (
            with("allowed_api_key_hashes", json!(["ABC"])),
            "allowed_api_key_hashes[0]: not 64",
        ),
        (
            with("allowed_models", json!(vec!["m"; 101])),
            "allowed_models: more than 100",
        ),
        (
            with("provider", json!("nope")),
            "provider: unknown provider",
        ),
        (with("provider", json!("azure")), "base_url: required"),
        (
            with("key", json!("sk-store-CANARY\u{1}-0003")),
            "key: must be",
        ),
        (with("key", json!("sk-store CANARY-0003")), "key: must be"),
        (
            with("sort_order", json!("sk-store-CANARY-0003")),
            "sort_order: invalid type: string",
        ),
        (with("unknown", json!(1)), "unknown field `unknown`"),
        (
            json!({"key": "sk-store-CANARY-0003"}),
            "missing field `provider`",
        ),
    ];
    for (body, want) in cases {
        let r = node.admin("POST", "/api/v1/byok", Some(body.clone())).await;
        assert_eq!(
            (r.status, r.reason()),
            (400, "invalid_request".into()),
            "{body}: {}",
            r.text()
        );
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(want), "want {want:?} in {msg:?}");
        assert!(!msg.contains("CANARY"), "{msg}");
    }
    // Not JSON at all.
    let r = send(
        req(
            "POST",
            &format!("http://{}/api/v1/byok", node.admin),
            Some(MGMT),
        )
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{oops",
        )))
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    // Nothing was written, and a PATCH that breaks a rule leaves the row as it was.
    assert_eq!(
        node.admin("GET", "/api/v1/byok", None).await.json()["total_count"],
        0
    );
    let id = node.create(base.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = node
        .admin(
            "PATCH",
            &format!("/api/v1/byok/{id}"),
            Some(json!({"allowed_api_key_hashes": [], "name": "x"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let row = node
        .admin("GET", &format!("/api/v1/byok/{id}"), None)
        .await
        .json();
    assert_eq!(
        row["data"].get("name"),
        None,
        "the refused patch changed the row"
    );
    assert_eq!(
        node.admin(
            "PATCH",
            "/api/v1/byok/no-such-id",
            Some(json!({"name": "x"}))
        )
        .await
        .status,
        404
    );
    assert!(!db.proxy_logs_contain(&node, "CANARY"));
}

impl Sqlite {
    fn proxy_logs_contain(&self, node: &Node, needle: &str) -> bool {
        node.proxy.logs().contains(needle)
    }
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn gateway_keys_are_created_once_listed_by_hash_disabled_and_removed() {
    let db = Sqlite::new().await;
    let node = Node::start(&db.config(), MASTER).await;
    node.create(json!({"provider": "openai", "key": "sk-store-0004-keys"}))
        .await;
    let (key, hash) = node.create_key("user-9").await;
    assert!(key.starts_with("byok-"));
    assert_eq!(hash, crate::support::hash(&key));
    assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);

    let list = node
        .admin("GET", "/api/v1/keys?workspace_id=ws-1", None)
        .await;
    let text = list.text();
    assert!(
        !text.contains(&key),
        "the raw key is shown once, at creation"
    );
    let v = list.json();
    assert_eq!(v["total_count"], 1);
    let listed = &v["data"][0];
    let created = listed["created_at"].as_str().unwrap();
    let used = listed["last_used_at"]
        .as_str()
        .expect("used by the chat above");
    assert!(used >= created, "{used} < {created}");
    assert_eq!(
        listed,
        &json!({"hash": hash, "label": format!("{}...{}", &key[..7], &key[key.len() - 4..]),
                "name": "", "workspace_id": "ws-1", "user_id": "user-9", "creator_user_id": "user-9",
                "external_user": null, "disabled": false,
                "created_at": created, "updated_at": created, "expires_at": null, "require_zdr": false,
                "limit": null, "limit_remaining": null, "limit_reset": null,
                "include_byok_in_limit": false,
                "usage": 0.0, "usage_daily": 0.0, "usage_weekly": 0.0, "usage_monthly": 0.0,
                "byok_usage": 0.0, "byok_usage_daily": 0.0, "byok_usage_weekly": 0.0,
                "byok_usage_monthly": 0.0, "last_used_at": used})
    );

    // Expired: answered exactly like an unknown key; un-expired by a PATCH.
    let unknown = node.chat("byok-never-issued-key", "gpt-4o").await;
    let r = node
        .admin(
            "PATCH",
            &format!("/api/v1/keys/{hash}"),
            Some(json!({"expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.json()["data"]["expires_at"], "2020-01-01T00:00:00Z");
    // Renewed by the PATCH (to the second: it may equal created_at).
    assert!(r.json()["data"]["updated_at"].as_str().unwrap() >= created);
    let expired = node.chat(&key, "gpt-4o").await;
    assert_eq!(
        (expired.status, expired.text()),
        (unknown.status, unknown.text())
    );
    let r = node
        .admin(
            "PATCH",
            &format!("/api/v1/keys/{hash}"),
            Some(json!({"expires_at": null})),
        )
        .await;
    assert_eq!(r.json()["data"]["expires_at"], Value::Null);
    assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);
    let r = node
        .admin(
            "PATCH",
            &format!("/api/v1/keys/{hash}"),
            Some(json!({"expires_at": "soon"})),
        )
        .await;
    assert_eq!((r.status, r.reason()), (400, "invalid_request".into()));
    assert!(
        r.message().contains("expires_at: not an RFC 3339"),
        "{}",
        r.message()
    );

    // Requiring zero data retention: the one credential is not declared ZDR.
    let r = node
        .admin(
            "PATCH",
            &format!("/api/v1/keys/{hash}"),
            Some(json!({"require_zdr": true})),
        )
        .await;
    assert_eq!(r.json()["data"]["require_zdr"], true);
    let refused = node.chat(&key, "gpt-4o").await;
    assert_eq!(
        (refused.status, refused.reason()),
        (403, "no_eligible_credential".into())
    );
    assert!(
        refused.message().contains("zero data retention"),
        "{}",
        refused.message()
    );
    node.admin(
        "PATCH",
        &format!("/api/v1/keys/{hash}"),
        Some(json!({"require_zdr": false})),
    )
    .await;
    assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);

    let r = node
        .admin(
            "PATCH",
            &format!("/api/v1/keys/{hash}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(r.json()["data"]["disabled"], true);
    let refused = node.chat(&key, "gpt-4o").await;
    assert_eq!(
        (refused.status, refused.reason()),
        (401, "invalid_api_key".into())
    );
    node.admin(
        "PATCH",
        &format!("/api/v1/keys/{hash}"),
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);

    let r = node
        .admin("DELETE", &format!("/api/v1/keys/{hash}"), None)
        .await;
    assert_eq!(r.json(), json!({"deleted": true}));
    assert_eq!(node.chat(&key, "gpt-4o").await.reason(), "invalid_api_key");
    assert_eq!(
        node.admin("GET", &format!("/api/v1/keys/{hash}"), None)
            .await
            .status,
        404
    );
    assert!(
        !contains_bytes(&db.on_disk(), &key),
        "the raw gateway key reached the database"
    );
}

#[tokio::test]
async fn everything_survives_a_restart_and_no_secret_is_stored_in_plaintext() {
    let db = Sqlite::new().await;
    let secret = "sk-store-PLAINTEXT-CANARY-0005";
    let (key, id) = {
        let node = Node::start(&db.config(), MASTER).await;
        let id = node
            .create(json!({"provider": "openai", "key": secret}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (key, _) = node.create_key("user-1").await;
        (key, id)
    };
    let disk = db.on_disk();
    assert!(
        !contains_bytes(&disk, secret),
        "plaintext secret in the database file"
    );
    assert!(contains_bytes(&disk, &id));

    // The rows carry the key id, a 12-byte nonce and a ciphertext.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let (key_id, nonce_len, secret_len): (String, usize, usize) = conn
        .query_row(
            "SELECT key_id, length(nonce), length(secret) FROM byok_credentials",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((key_id.len(), nonce_len), (16, 12));
    assert_eq!(secret_len, secret.len() + 16, "ciphertext + GCM tag");
    drop(conn);

    let node = Node::start(&db.config(), MASTER).await;
    let r = node.chat(&key, "gpt-4o").await;
    assert_eq!(
        (r.status, r.header("x-byok-credential-id")),
        (200, Some(&*id))
    );

    // Rotation: the new key, with the old one as previous, opens and re-seals.
    drop(node);
    let proxy = Proxy::start_with_env(
        &db.config(),
        &[
            ("BYOK_MASTER_KEY", MASTER2),
            ("BYOK_MASTER_KEY_PREVIOUS", MASTER),
        ],
    )
    .await;
    assert_eq!(chat(&proxy, &key, "gpt-4o").await.status, 200);
    drop(proxy);
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let new_id: String = conn
        .query_row("SELECT key_id FROM byok_credentials", [], |r| r.get(0))
        .unwrap();
    assert_ne!(new_id, key_id, "not re-sealed under the new master key");
    drop(conn);
    // And now the new key alone suffices.
    let node = Node::start(&db.config(), MASTER2).await;
    assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);
}

#[tokio::test]
async fn a_database_store_needs_the_master_key() {
    let db = Sqlite::new().await;
    for env in [vec![], vec![("BYOK_MASTER_KEY", "too-short")]] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, db.config()).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_byok-proxy"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("BYOK_MASTER_KEY");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("BYOK_MASTER_KEY"), "{err}");
    }
    // A wrong master key cannot open what another sealed.
    {
        let node = Node::start(&db.config(), MASTER).await;
        node.create(json!({"provider": "openai", "key": "sk-store-0006-wrong"}))
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, db.config()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_byok-proxy"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("BYOK_MASTER_KEY", MASTER2)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither BYOK_MASTER_KEY nor BYOK_MASTER_KEY_PREVIOUS"),
        "{err}"
    );
    assert!(!err.contains("sk-store-0006"), "{err}");
}

#[tokio::test]
async fn a_database_store_refuses_credentials_in_the_file() {
    let db = Sqlite::new().await;
    let text = format!(
        "{}{}",
        db.config(),
        cred("c1", "openai", "sk-store-0007-file", "")
    );
    let err = byok_proxy::Config::parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("credentials: must be empty when store.url is a database"),
        "{err}"
    );
    assert!(!err.contains("sk-store-0007"));
}

/// Issue 10: PATCHes racing DELETEs end with the registry exactly as the
/// database has it — a deleted credential is never put back by a PATCH that
/// committed before the DELETE but reached the registry after it — and so
/// do racing PATCHes (the registry holds what was committed last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_patches_and_deletes_leave_the_registry_as_the_database() {
    let db = Sqlite::new().await;
    let node = std::sync::Arc::new(Node::start(&db.config(), MASTER).await);
    const CREDS: usize = 64;
    const PATCHES: usize = 12;
    let mut ids = Vec::new();
    for i in 0..CREDS {
        let c = node
            .create(json!({"provider": "openai", "key": format!("sk-race-{i:04}-0000000")}))
            .await;
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    // For every credential at once: PATCHes, and (for every other one) a
    // DELETE among them.
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for p in 0..PATCHES {
            let (n, i2) = (node.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let (node, id) = (n, i2);
                let body = json!({"name": format!("n{p}"), "sort_order": p, "key": format!("sk-race-rotated-{p:04}")});
                let r = node.admin("PATCH", &format!("/api/v1/byok/{id}"), Some(body)).await;
                assert!(matches!(r.status, 200 | 404), "{}", r.text());
            }));
            if i % 2 == 0 && p == PATCHES / 2 {
                let (node, id) = (node.clone(), id.clone());
                tasks.push(tokio::spawn(async move {
                    let r = node
                        .admin("DELETE", &format!("/api/v1/byok/{id}"), None)
                        .await;
                    assert_eq!(r.status, 200, "{}", r.text());
                }));
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }

    // The database: live rows and their names.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, name, sort_order FROM byok_credentials WHERE deleted_at IS NULL ORDER BY id")
        .unwrap();
    let in_db: Vec<(String, Option<String>, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(in_db.len(), CREDS / 2, "every other credential was deleted");
    // The registry, through the API.
    let in_registry = node.listed().await;
    assert_eq!(in_registry, in_db, "the registry and the database disagree");
    for (i, id) in ids.iter().enumerate() {
        let status = node
            .admin("GET", &format!("/api/v1/byok/{id}"), None)
            .await
            .status;
        assert_eq!(status, if i % 2 == 0 { 404 } else { 200 }, "{id}");
    }
}

#[tokio::test]
async fn a_patch_lifts_a_quarantine() {
    // The provider rejects the first secret; the rotated one works.
    let mock = Mock::start(|r: &Recorded| {
        if r.header("authorization") == Some("Bearer sk-revoked-000000001") {
            Reply::json(401, "{}")
        } else {
            Reply::json(200, "{}")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = store_config(&mock, &format!("sqlite://{}/byok.db", dir.path().display()));
    let node = Node::start(&config, MASTER).await;
    let (key, _) = node.create_key("user-1").await;
    let first = node
        .create(json!({"provider": "openai", "key": "sk-revoked-000000001", "sort_order": 0}))
        .await;
    node.create(json!({"provider": "openai", "key": "sk-second-0000000001", "sort_order": 1}))
        .await;
    let id = first["id"].as_str().unwrap();
    assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);
    let health = node
        .admin("GET", &format!("/api/v1/byok/{id}/health"), None)
        .await
        .json();
    assert_eq!(health["data"]["state"], "quarantined");
    // Rotated: in force, and first again, at once.
    node.admin(
        "PATCH",
        &format!("/api/v1/byok/{id}"),
        Some(json!({"key": "sk-rotated-00000001"})),
    )
    .await;
    let health = node
        .admin("GET", &format!("/api/v1/byok/{id}/health"), None)
        .await
        .json();
    assert_eq!(health["data"]["state"], "healthy");
    let before = mock.count();
    assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);
    assert_eq!(mock.count(), before + 1);
    assert_eq!(
        mock.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-rotated-00000001")
    );
}

/// SPEC §8 on SQLite: a key made through the API in OpenRouter's shape,
/// refused with 402 once its spend reaches its limit, raised by a PATCH;
/// the spend is saved at shutdown and read back on start.
#[tokio::test]
async fn usage_and_limits_are_kept_across_a_restart() {
    // Two output tokens at one USD each: 2 USD a request.
    let mock = Mock::start(|_| {
        Reply::json(
            200,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":0,"completion_tokens":2}}"#,
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("byok.db").display());
    let config = store_config(&mock, &url) + "\n[prices.\"openai/gpt-4o\"]\noutput = 1000000.0\n";
    let mut node = Node::start(&config, MASTER).await;
    node.create(json!({"provider": "openai", "key": "sk-store-usage-0001"}))
        .await;
    let r = node
        .admin(
            "POST",
            "/api/v1/keys",
            Some(
                json!({"name": "limited", "limit": 5, "limit_reset": "monthly",
                        "include_byok_in_limit": true, "creator_user_id": "user-9",
                        "external": {"user": "ext-1"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let (key, hash) = (
        v["key"].as_str().unwrap(),
        v["data"]["hash"].as_str().unwrap(),
    );
    let d = &v["data"];
    assert_eq!(
        (&d["creator_user_id"], &d["user_id"], &d["external_user"]),
        (&json!("user-9"), &json!("user-9"), &json!("ext-1"))
    );
    assert_eq!(
        (&d["limit"], &d["limit_remaining"]),
        (&json!(5.0), &json!(5.0))
    );
    let statuses = [
        node.chat(key, "gpt-4o").await.status,
        node.chat(key, "gpt-4o").await.status,
        node.chat(key, "gpt-4o").await.status,
        node.chat(key, "gpt-4o").await.status,
    ];
    assert_eq!(
        statuses,
        [200, 200, 200, 402],
        "2, 4, 6 USD: the fourth is refused"
    );
    assert_eq!(mock.count(), 3);
    let path = format!("/api/v1/keys/{hash}");
    let r = node.admin("PATCH", &path, Some(json!({"limit": 10}))).await;
    assert_eq!(
        r.json()["data"]["limit_remaining"],
        json!(4.0),
        "{}",
        r.text()
    );
    assert_eq!(node.chat(key, "gpt-4o").await.status, 200);

    // A graceful stop saves what the last requests used.
    node.proxy.signal("TERM");
    assert!(node.proxy.wait_exit().await.success());
    let node = Node::start(&config, MASTER).await;
    let d = node.admin("GET", &path, None).await.json()["data"].clone();
    assert_eq!(
        (&d["byok_usage"], &d["byok_usage_monthly"], &d["usage"]),
        (&json!(8.0), &json!(8.0), &json!(0.0)),
        "{d}"
    );
    assert_eq!(d["limit_remaining"], json!(2.0));
    assert!(d["last_used_at"].is_string(), "{d}");
    assert_eq!(node.chat(key, "gpt-4o").await.status, 200, "8 < 10");
    assert_eq!(node.chat(key, "gpt-4o").await.status, 402, "10 reached");
    assert_eq!(mock.count(), 5);
    // A patch that breaks a rule is refused whole.
    for bad in [json!({"limit": -1}), json!({"limit_reset": "yearly"})] {
        let r = node.admin("PATCH", &path, Some(bad)).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
}

/// SPEC §9 through the API: a structured key is checked field by field
/// (never quoted), stored sealed, listed by its public label, and served.
#[tokio::test]
async fn cloud_keys_are_checked_stored_and_served_through_the_api() {
    let db = Sqlite::new().await;
    let node = Node::start(&db.config(), MASTER).await;
    let broken = json!({
        "provider": "google-vertex",
        "key": json!({"type": "service_account", "project_id": "proj-cred",
            "private_key": "-----BEGIN PRIVATE KEY-----\nCANARYCANARY\n-----END PRIVATE KEY-----\n",
            "client_email": "a@proj-cred.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token"}).to_string(),
    });
    let r = node.admin("POST", "/api/v1/byok", Some(broken)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("key.private_key: not a PEM PKCS#8 RSA private key"),
        "{msg}"
    );
    assert!(!msg.contains("CANARY"), "{msg}");

    let azure = json!([
        {"api_key": "az-CANARY-res-key-0001", "resource_name": "res", "resource_type": "openai"},
        {"model_slug": "gpt-4o", "api_key": "az-CANARY-dep-key-0002", "model_id": "prod-4o",
         "endpoint_url": format!("{}/openai/deployments/prod-4o/chat/completions?api-version=1", db.mock.url())},
    ]);
    // No base_url: the array names its hosts.
    let created = node
        .create(json!({"provider": "azure", "key": azure.to_string()}))
        .await;
    // Labelled by its first host, never by a character of a key.
    assert_eq!(created["label"], "res.openai.azure.com +1", "{created}");
    let (key, _) = node.create_key("user-1").await;
    let r = post(
        &node.proxy,
        "/azure/openai/deployments/gpt-4o/chat/completions?api-version=1",
        &key,
        r#"{"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = db.mock.requests().pop().unwrap();
    assert_eq!(
        up.uri,
        "/openai/deployments/prod-4o/chat/completions?api-version=1"
    );
    assert_eq!(up.header("api-key"), Some("az-CANARY-dep-key-0002"));
    let listed = node.admin("GET", "/api/v1/byok", None).await.text();
    assert!(!listed.contains("CANARY"), "{listed}");
    assert!(
        !contains_bytes(&db.on_disk(), "az-CANARY"),
        "an Azure key stored in plaintext"
    );
}
