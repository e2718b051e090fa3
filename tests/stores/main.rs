//! Credential stores against real databases.
//!
//! * `pg`: a throwaway PostgreSQL server per test ([`pg::PgCluster`]);
//!   `scripts/ensure-postgres` installs PostgreSQL when missing.
//! * `sqlite`: the embedded store through the real binary.
//! * `replicas`: several proxies on one PostgreSQL (`relay` cuts one off).
//! * `sealed`, `rotation`: secrets sealed to their upstream, the migration
//!   of the first version's seals, master-key rotation.
//! * `node`: store configs and admin API calls; `support` is the harness
//!   shared with the other test crates (tests/support).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod migrate;
mod node;
mod pg;
mod relay;
mod replicas;
mod rotation;
mod scoped;
mod sealed;
mod sqlite;
#[path = "../support/mod.rs"]
mod support;
mod timeouts;
mod tls;
mod usage;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// Connects, driving the connection on a task that forwards notifications.
async fn connect(
    url: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    let _ = sender.send(notification);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok((client, receiver))
}

/// The harness gives what a store needs: SQL, an outage and a recovery on the
/// same URL, and `LISTEN`/`NOTIFY` between connections.
#[tokio::test]
async fn the_harness_starts_stops_and_restarts_a_real_postgres() {
    let cluster = pg::PgCluster::start();
    let url = cluster.url();
    assert!(
        url.contains(&format!("127.0.0.1:{}/byok", cluster.port())),
        "{url}"
    );

    let (client, _) = connect(&url).await.expect("connect");
    let row = client
        .query_one("SELECT 1::INT4, current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, String>(1), "byok");

    cluster.stop();
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "a connection survived the outage"
    );
    assert!(
        connect(&url).await.is_err(),
        "connected to a stopped server"
    );

    cluster.restart();
    let (listener, mut notifications) = connect(&url).await.expect("connect after restart");
    let (notifier, _) = connect(&url).await.expect("second connection");
    listener
        .batch_execute("LISTEN credentials_changed")
        .await
        .unwrap();
    notifier
        .batch_execute("NOTIFY credentials_changed, 'tenant-a'")
        .await
        .unwrap();
    let notification = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("no notification within 10 s")
        .expect("the listening connection closed");
    assert_eq!(notification.channel(), "credentials_changed");
    assert_eq!(notification.payload(), "tenant-a");
}
