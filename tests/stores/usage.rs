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
    // The start-up prune's COMMIT is not the one to lose.
    node.proxy.wait_log(PRUNED).await;

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

/// The config of the pruning tests: a short retention.
fn retaining_40_days(config: String) -> String {
    config.replacen("[store]\n", "[store]\nusage_retention_days = 40\n", 1)
}

/// Today, as the usage tables count days (since 1970-01-01, UTC).
fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs / 86_400).unwrap()
}

/// The statements (for either database) that write usage of `hash` on
/// three days, 41, 500 and 10 days ago (3, 4 and 5 USD), and the batch
/// number of a replica gone for 41 days.
fn old_rows(hash: &str) -> Vec<String> {
    let t = today();
    let mut sql = Vec::new();
    for (ago, usd) in [(41, 3.0), (500, 4.0), (10, 5.0)] {
        let day = t - ago;
        let ms = day * 86_400_000;
        sql.push(format!(
            "INSERT INTO byok_usage VALUES ({day}, 'ws-1', '{hash}', 'c', 'byok', 'openai', \
             'other', 1, 0, 0, 0, 0, 0, {usd}, {ms})"
        ));
        sql.push(format!(
            "INSERT INTO byok_usage_keys VALUES ('{hash}', {day}, 0, {usd}, {ms})"
        ));
    }
    let ms = (t - 41) * 86_400_000;
    sql.push(format!(
        "INSERT INTO byok_usage_batches VALUES ('a-replica-gone', 7, {ms})"
    ));
    sql
}

/// What the pruning leaves: the recent day's rows; the key's older days
/// rolled into one row (day 0) with their sum, so its lifetime spend
/// stays whole; no batch number of a replica gone for so long.
fn pruned_as_expected(usage_days: Vec<i64>, key_days: Vec<(i64, f64)>, batches: i64) {
    let recent = today() - 10;
    assert_eq!(usage_days, [recent]);
    assert_eq!(key_days, [(0, 7.0), (recent, 5.0)]);
    assert_eq!(batches, 0);
}

/// The key's lifetime BYOK spend, as the admin API shows it.
async fn lifetime(node: &Node, hash: &str) -> serde_json::Value {
    let path = format!("/api/v1/keys/{hash}");
    node.admin("GET", &path, None).await.json()["data"]["byok_usage"].clone()
}

#[tokio::test]
async fn sqlite_prunes_usage_past_the_retention_at_start_and_keeps_lifetime_spend() {
    let mock = Mock::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.db");
    let config = retaining_40_days(store_config(&mock, &format!("sqlite://{}", path.display())));
    let node = Node::start(&config, MASTER).await;
    let (_, hash) = node.create_key("old-spender").await;
    drop(node);
    let conn = rusqlite::Connection::open(&path).unwrap();
    for sql in old_rows(&hash) {
        conn.execute_batch(&sql).unwrap();
    }

    let node = Node::start(&config, MASTER).await;
    node.proxy.wait_log(PRUNED).await;
    let all = |sql: &str| -> Vec<(i64, f64)> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let usage_days = all("SELECT day, usd FROM byok_usage ORDER BY day");
    let key_days = all("SELECT day, byok_usd FROM byok_usage_keys ORDER BY day");
    let batches: i64 = conn
        .query_row("SELECT COUNT(*) FROM byok_usage_batches", [], |r| r.get(0))
        .unwrap();
    pruned_as_expected(
        usage_days.into_iter().map(|r| r.0).collect(),
        key_days,
        batches,
    );
    assert_eq!(lifetime(&node, &hash).await, json!(12.0));
}

const PRUNED: &str = "pruned the usage older than store.usage_retention_days";
const SKIPPED: &str = "another replica pruned within the hour";

/// Several replicas start on one Postgres: one of them prunes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_postgres_replica_prunes_usage_past_the_retention_and_keeps_lifetime_spend() {
    let db = PgCluster::start();
    let mock = Mock::ok().await;
    let config = retaining_40_days(store_config(&mock, &db.url()));
    let a = Node::start_following(&config, MASTER).await;
    let (_, hash) = a.create_key("old-spender").await;
    a.proxy.wait_log(PRUNED).await;
    let (client, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for sql in old_rows(&hash) {
        client.batch_execute(&sql).await.unwrap();
    }
    // As if the hour since A's start-up prune were over.
    client
        .batch_execute("DELETE FROM byok_maintenance")
        .await
        .unwrap();

    let (b, c) = tokio::join!(
        Node::start_following(&config, MASTER),
        Node::start_following(&config, MASTER)
    );
    poll_until(|| async {
        [&b, &c].iter().all(|n| {
            let logs = n.proxy.logs();
            logs.contains(PRUNED) || logs.contains(SKIPPED)
        })
    })
    .await;
    let pruned = [&b, &c]
        .iter()
        .filter(|n| n.proxy.logs().contains(PRUNED))
        .count();
    assert_eq!(pruned, 1, "one replica prunes a period");

    let rows = client
        .query("SELECT day::BIGINT FROM byok_usage ORDER BY day", &[])
        .await
        .unwrap();
    let usage_days = rows.iter().map(|r| r.get(0)).collect();
    let rows = client
        .query(
            "SELECT day::BIGINT, byok_usd FROM byok_usage_keys ORDER BY day",
            &[],
        )
        .await
        .unwrap();
    let key_days = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let batches: i64 = client
        .query_one("SELECT COUNT(*) FROM byok_usage_batches", &[])
        .await
        .unwrap()
        .get(0);
    pruned_as_expected(usage_days, key_days, batches);
    // B and C read the rows after the test wrote them (A read them
    // before: it would see them at its next full read, within a minute).
    for node in [&b, &c] {
        poll_until(|| async { lifetime(node, &hash).await == json!(12.0) }).await;
    }
}
