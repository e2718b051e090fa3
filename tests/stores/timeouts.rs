//! A stuck database never stalls changes for ever: a write that waits on a
//! lock fails within `store.statement_timeout_ms` with `503
//! store_unavailable` (no secret in it), and once the lock is gone the next
//! write succeeds.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::NoTls;

use crate::node::*;
use crate::pg::PgCluster;
use crate::relay::Relay;
use crate::replicas::{query, via};
use crate::support::*;

/// The statement timeout of these tests, and the most a refused write may
/// take (the timeout, with room for a loaded machine; the default is 5 s).
const TIMEOUT_MS: u64 = 300;
const WITHIN: Duration = Duration::from_millis(3_000);

fn with_timeout(config: String) -> String {
    config.replacen(
        "[store]\n",
        &format!("[store]\nstatement_timeout_ms = {TIMEOUT_MS}\n"),
        1,
    )
}

/// A write that must fail fast, with no trace of the secret it carried.
async fn refused_fast(node: &Node, method: &str, path: &str, secret: &str) {
    let body = match method {
        "POST" => json!({"provider": "openai", "key": secret, "name": "stuck"}),
        _ => json!({"key": secret, "name": "stuck"}),
    };
    let started = Instant::now();
    let r = node.admin(method, path, Some(body)).await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.reason()),
        (503, "store_unavailable".to_owned()),
        "{method} {path}: {}",
        r.text()
    );
    assert!(took < WITHIN, "{method} {path} took {took:?}");
    assert!(!r.text().contains(secret), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_postgres_table_fails_writes_within_the_timeout_then_they_succeed() {
    let db = PgCluster::start();
    let mock = Mock::ok().await;
    let node = Node::start_following(&with_timeout(store_config(&mock, &db.url())), MASTER).await;
    let id = node
        .create(json!({"provider": "openai", "key": "sk-before-the-lock-0001"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (locker, connection) = tokio_postgres::connect(&db.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE byok_credentials IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let secret = "sk-during-the-lock-SECRET-0002";
    refused_fast(&node, "POST", "/api/v1/byok", secret).await;
    refused_fast(&node, "PATCH", &format!("/api/v1/byok/{id}"), secret).await;
    // The turn was let go: a write that needs no locked table goes through.
    node.create_key("not-stuck").await;

    locker.batch_execute("ROLLBACK").await.unwrap();
    let r = node
        .admin(
            "PATCH",
            &format!("/api/v1/byok/{id}"),
            Some(json!({"name": "after"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    node.create(json!({"provider": "openai", "key": "sk-after-the-lock-0003"}))
        .await;
    // Nothing the refused writes held is left half-done or shown.
    let names: Vec<_> = node.listed().await.into_iter().map(|c| c.1).collect();
    assert_eq!(names.iter().filter(|n| n.is_none()).count(), 1, "{names:?}");
    assert!(names.contains(&Some("after".to_owned())), "{names:?}");
    assert!(
        !node.proxy.logs().contains(secret),
        "the secret reached the logs"
    );
}

/// The network stops answering in the middle of a write (nothing comes
/// back, nothing closes): the proxy gives the write up after twice the
/// statement timeout with `503`, and replaces the connection. What the
/// write had sent, delivered late, is never committed; the next write
/// after the network is back succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_stops_answering_fails_a_write_within_its_deadline() {
    let db = PgCluster::start();
    let mock = Mock::ok().await;
    let relay = Relay::start(format!("127.0.0.1:{}", db.port()).parse().unwrap()).await;
    let config = with_timeout(store_config(&mock, &via(&db.url(), &relay)));
    let node = Node::start_following(&config, MASTER).await;
    node.create(json!({"provider": "openai", "key": "sk-before-the-stall-0001"}))
        .await;

    relay.freeze();
    let secret = "sk-during-the-stall-SECRET-0002";
    refused_fast(&node, "POST", "/api/v1/byok", secret).await;
    relay.thaw();

    node.create(json!({"provider": "openai", "key": "sk-after-the-stall-0003"}))
        .await;
    assert_eq!(node.listed().await.len(), 2);
    let rows = query(
        &db.url(),
        "SELECT COUNT(*) FROM byok_credentials WHERE name = 'stuck'",
    )
    .await;
    assert_eq!(
        rows[0].get::<_, i64>(0),
        0,
        "the stalled write was committed"
    );
    assert!(
        !node.proxy.logs().contains(secret),
        "the secret reached the logs"
    );
}

#[tokio::test]
async fn a_locked_sqlite_file_fails_writes_within_the_timeout_then_they_succeed() {
    let mock = Mock::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.db");
    let config = with_timeout(store_config(&mock, &format!("sqlite://{}", path.display())));
    let node = Node::start(&config, MASTER).await;
    node.create(json!({"provider": "openai", "key": "sk-before-the-lock-0001"}))
        .await;

    // Another process's write transaction holds the file's write lock.
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let secret = "sk-during-the-lock-SECRET-0002";
    refused_fast(&node, "POST", "/api/v1/byok", secret).await;

    locker.execute_batch("ROLLBACK").unwrap();
    node.create(json!({"provider": "openai", "key": "sk-after-the-lock-0003"}))
        .await;
    assert_eq!(node.listed().await.len(), 2);
    assert!(
        !node.proxy.logs().contains(secret),
        "the secret reached the logs"
    );
}
