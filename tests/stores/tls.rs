//! Issue 10 / SPEC §4: the Postgres store speaks TLS, as its URL's `sslmode`
//! says, and verifies the server (webpki roots plus `store.ca_file`): the
//! database password and the sealed secrets never cross the network in clear
//! where TLS was asked for, and an unverified server gets nothing.

use serde_json::json;
use tokio_postgres::NoTls;

use crate::node::*;
use crate::pg::PgCluster;
use crate::support::*;

const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ca.pem");

/// How many connections to the cluster use TLS, seen from a plain one.
async fn tls_connections(url: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[])
        .await
        .unwrap()
        .get(0)
}

fn with_ca(cfg: &str, ca: &str) -> String {
    cfg.replace("[store]\n", &format!("[store]\nca_file = \"{ca}\"\n"))
}

/// `serve` that must fail: its stderr.
fn start_fails(cfg: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_byok-proxy"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("BYOK_MASTER_KEY", MASTER)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_connects_over_verified_tls() {
    let db = PgCluster::start_with_tls();
    let mock = Mock::ok().await;
    assert_eq!(tls_connections(&db.url()).await, 0);

    // The test CA verifies the server: the store works, over TLS.
    for mode in ["require", "verify-full"] {
        let url = format!("{}?sslmode={mode}", db.url());
        let node = Node::start_following(&with_ca(&store_config(&mock, &url), CA), MASTER).await;
        let id = node
            .create(json!({"provider": "openai", "key": format!("sk-pg-tls-{mode}-0001")}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (key, _) = node.create_key("user-1").await;
        assert_eq!(node.chat(&key, "gpt-4o").await.status, 200);
        assert!(
            tls_connections(&db.url()).await >= 2,
            "query and LISTEN over TLS"
        );
        let r = node
            .admin("DELETE", &format!("/api/v1/byok/{id}"), None)
            .await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_server_gets_nothing_and_the_error_says_so() {
    let db = PgCluster::start_with_tls();
    let mock = Mock::ok().await;
    // Without the CA, the certificate is not trusted: no start, a clear
    // error naming the store, and no password in it.
    let url = format!("{}?sslmode=require", db.url()).replace("postgres@", "postgres:pw-CANARY@");
    let err = start_fails(&store_config(&mock, &url));
    assert!(err.contains("store.url (postgres)"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("pw-CANARY"), "{err}");
    // A CA file that does not parse is a config error naming the field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let err = start_fails(&with_ca(&store_config(&mock, &url), bad.to_str().unwrap()));
    assert!(err.contains("store.ca_file"), "{err}");
    // sslmode=disable stays in clear, as asked.
    let url = format!("{}?sslmode=disable", db.url());
    let _node = Node::start_following(&store_config(&mock, &url), MASTER).await;
    assert_eq!(tls_connections(&db.url()).await, 0);
}
