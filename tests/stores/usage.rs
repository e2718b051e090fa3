//! Usage in the databases: a batch saved once whatever its acknowledgement
//! did, and rows older than `store.usage_retention_days` pruned.

use serde_json::json;

use crate::node::*;
use crate::pg::PgCluster;
use crate::relay::Relay;
use crate::replicas::{query, via};
use crate::support::*;

/// A mock that reports two output tokens a response, and a config on
/// `store_url` that prices them at one USD each: 2 USD a request.
async fn two_usd_a_request(store_url: &str) -> (Mock, String) {
    let mock = Mock::start(|_| {
        Reply::json(
            200,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":0,"completion_tokens":2}}"#,
        )
    })
    .await;
    let cfg = store_config(&mock, store_url) + "\n[prices.\"openai/gpt-4o\"]\noutput = 1000000.0\n";
    (mock, cfg)
}

/// Requests and USD the database holds for one key.
async fn held(url: &str, hash: &str) -> (i64, f64) {
    let rows = query(
        url,
        &format!(
            "SELECT COALESCE(SUM(requests), 0)::BIGINT, COALESCE(SUM(usd), 0) \
             FROM byok_usage WHERE key_hash = '{hash}'"
        ),
    )
    .await;
    (rows[0].get(0), rows[0].get(1))
}

/// The database commits a flush, and the link to the replica is cut before
/// the replica hears so: the replica sees an error and tries the batch
/// again. The retry is a no-op: the request counts once, in the database
/// and in the key's usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_batch_whose_commit_was_not_acknowledged_counts_once() {
    let db = PgCluster::start();
    let relay = Relay::start(format!("127.0.0.1:{}", db.port()).parse().unwrap()).await;
    let (_mock, cfg) = two_usd_a_request(&via(&db.url(), &relay)).await;
    let node = Node::start_following(&cfg, MASTER).await;
    node.create(json!({"provider": "openai", "key": "sk-pg-usage-ack-0001"}))
        .await;
    let (first, first_hash) = node.create_key("first").await;
    let (second, second_hash) = node.create_key("second").await;

    let mark = node.proxy.log_len();
    relay.cut_after_next_commit();
    assert_eq!(node.chat(&first, "gpt-4o").await.status, 200);
    node.proxy
        .wait_log_after(mark, "usage not saved; kept for the next flush")
        .await;
    // It was committed all the same.
    poll_until(|| async { held(&db.url(), &first_hash).await == (1, 2.0) }).await;

    // The second key's batch is saved after the first is tried again.
    assert_eq!(node.chat(&second, "gpt-4o").await.status, 200);
    poll_until(|| async { held(&db.url(), &second_hash).await == (1, 2.0) }).await;
    assert_eq!(
        held(&db.url(), &first_hash).await,
        (1, 2.0),
        "the batch tried again was counted twice"
    );
    let path = format!("/api/v1/keys/{first_hash}");
    poll_until(|| async {
        node.admin("GET", &path, None).await.json()["data"]["byok_usage"] == json!(2.0)
    })
    .await;
    node.proxy
        .wait_log_after(mark, "usage batch already saved")
        .await;
}
