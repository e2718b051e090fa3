//! Databases made by the first version (credentials without `is_required`,
//! `is_byok_only`, `declared_zdr`, and with `workspace_id NOT NULL`; gateway
//! keys without `require_zdr`, `label`, `updated_at`, `expires_at`) are
//! brought up to date on start: every credential stays, served and listed
//! with the new fields at their defaults, and global credentials can be
//! written afterwards.

use serde_json::{json, Value};

use crate::connect;
use crate::node::*;
use crate::pg::PgCluster;
use crate::support::*;

/// The first version's credentials table, in SQLite's words.
const SQLITE_V1: &str = "
CREATE TABLE byok_credentials_v1 (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    name TEXT,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    is_fallback INTEGER NOT NULL,
    sort_order INTEGER NOT NULL,
    allowed_api_key_hashes TEXT,
    allowed_models TEXT,
    allowed_user_ids TEXT,
    base_url TEXT,
    key_id TEXT,
    nonce BLOB,
    secret BLOB,
    deleted_at TEXT
);
INSERT INTO byok_credentials_v1 SELECT id, workspace_id, provider, name, created_at, disabled,
    is_fallback, sort_order, allowed_api_key_hashes, allowed_models, allowed_user_ids, base_url,
    key_id, nonce, secret, deleted_at FROM byok_credentials;
DROP TABLE byok_credentials;
ALTER TABLE byok_credentials_v1 RENAME TO byok_credentials;
ALTER TABLE byok_api_keys DROP COLUMN require_zdr;
ALTER TABLE byok_api_keys DROP COLUMN label;
ALTER TABLE byok_api_keys DROP COLUMN updated_at;
ALTER TABLE byok_api_keys DROP COLUMN expires_at;
";

/// The same in PostgreSQL's.
const POSTGRES_V1: &str = "
ALTER TABLE byok_credentials DROP COLUMN is_required;
ALTER TABLE byok_credentials DROP COLUMN is_byok_only;
ALTER TABLE byok_credentials DROP COLUMN declared_zdr;
ALTER TABLE byok_credentials ALTER COLUMN workspace_id SET NOT NULL;
ALTER TABLE byok_api_keys DROP COLUMN require_zdr;
ALTER TABLE byok_api_keys DROP COLUMN label;
ALTER TABLE byok_api_keys DROP COLUMN updated_at;
ALTER TABLE byok_api_keys DROP COLUMN expires_at;
";

/// Writes a credential and a key on a fresh database; returns the key.
async fn first_version_rows(node: &Node) -> String {
    let (key, _) = node.create_key("user-1").await;
    node.create(json!({
        "provider": "openai",
        "key": "sk-migrate-SECRET-0001",
        "name": "from v1",
        "allowed_models": ["openai/gpt-4o"],
    }))
    .await;
    key
}

/// After the upgrade: the old credential is served and listed with the new
/// fields, and a global credential (workspace_id null) can be written and
/// serves the other workspace.
async fn upgraded(node: &Node, key: &str, mock: &Mock) {
    let r = node.chat(key, "gpt-4o").await;
    assert_eq!(
        r.status,
        200,
        "the first version's key and credential: {}",
        r.text()
    );
    let keys = node.admin("GET", "/api/v1/keys", None).await.json();
    let old_key = &keys["data"][0];
    assert_eq!(old_key["require_zdr"], false);
    assert_eq!(
        (&old_key["label"], &old_key["expires_at"]),
        (&json!("..."), &Value::Null),
        "a first-version key has no label: its raw key is gone"
    );
    assert_eq!(
        mock.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-migrate-SECRET-0001")
    );
    let list = node.admin("GET", "/api/v1/byok", None).await.json();
    let old = &list["data"][0];
    assert_eq!(old["name"], "from v1");
    assert_eq!(
        (
            &old["is_required"],
            &old["is_byok_only"],
            &old["declared_zdr"]
        ),
        (&json!(false), &json!(false), &Value::Null)
    );

    let global = node
        .create(json!({
            "provider": "anthropic",
            "key": "sk-ant-global-SECRET-0002",
            "workspace_id": null,
            "declared_zdr": true,
        }))
        .await;
    assert_eq!(global["workspace_id"], Value::Null);
    assert_eq!(global["declared_zdr"], true);
    let r = post(
        &node.proxy,
        "/anthropic/v1/messages",
        key,
        r#"{"model":"claude-sonnet-4","max_tokens":1,"messages":[]}"#,
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "a global credential serves ws-1: {}",
        r.text()
    );
    assert_eq!(r.header("x-byok-credential-id"), global["id"].as_str());
    // Listed with every workspace (`*`), not with ws-1's own.
    let mine = node.admin("GET", "/api/v1/byok", None).await.json();
    assert_eq!(mine["total_count"], 1);
    let all = node
        .admin("GET", "/api/v1/byok?workspace_id=*", None)
        .await
        .json();
    assert_eq!(all["total_count"], 2);
}

#[tokio::test]
async fn a_first_version_sqlite_database_is_upgraded_in_place() {
    let mock = Mock::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.db");
    let config = store_config(&mock, &format!("sqlite://{}", path.display()));
    let key = {
        let node = Node::start(&config, MASTER).await;
        first_version_rows(&node).await
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SQLITE_V1).unwrap();
        let nullable: i64 = conn
            .query_row(
                "SELECT \"notnull\" FROM pragma_table_info('byok_credentials') WHERE name = 'workspace_id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(nullable, 1, "the first version's layout");
    }
    let node = Node::start(&config, MASTER).await;
    upgraded(&node, &key, &mock).await;
}

#[tokio::test]
async fn a_first_version_postgres_database_is_upgraded_in_place() {
    let cluster = PgCluster::start();
    let mock = Mock::ok().await;
    let config = store_config(&mock, &cluster.url());
    let key = {
        let node = Node::start(&config, MASTER).await;
        first_version_rows(&node).await
    };
    let (client, _) = connect(&cluster.url()).await.unwrap();
    client.batch_execute(POSTGRES_V1).await.unwrap();
    // Two replicas start on it at once: the upgrade runs once, under the
    // schema lock, and both serve.
    let (a, b) = tokio::join!(Node::start(&config, MASTER), Node::start(&config, MASTER));
    upgraded(&a, &key, &mock).await;
    let r = b.chat(&key, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let nullable: String = client
        .query_one(
            "SELECT is_nullable FROM information_schema.columns \
             WHERE table_name = 'byok_credentials' AND column_name = 'workspace_id'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nullable, "YES");
}
