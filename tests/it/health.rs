//! Credential health (SPEC §10) through the binary: a rate-limited or
//! rejected credential is tried after the healthy ones, never dropped; its
//! state is in the health API and survives a reload.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::admin::{admin_get, admin_section, MGMT};
use crate::support::*;

/// A mock that answers `first`'s secret with `status` (and `headers`), and
/// 200 to every other.
async fn mock_with(status: u16, headers: Vec<(&'static str, String)>) -> Mock {
    Mock::start(move |r: &Recorded| {
        if r.header("authorization") == Some("Bearer sk-health-first-00001") {
            Reply::Full(status, headers.clone(), "{}".into())
        } else {
            Reply::json(200, "{}")
        }
    })
    .await
}

fn two_credentials() -> String {
    [
        admin_section("127.0.0.1:0", &[MGMT]),
        cred("first", "openai", "sk-health-first-00001", "sort_order = 0"),
        cred(
            "second",
            "openai",
            "sk-health-second-0001",
            "sort_order = 1",
        ),
    ]
    .concat()
}

async fn health(proxy: &Proxy, id: &str) -> Value {
    let r = admin_get(
        proxy.admin_addr().await,
        &format!("/api/v1/byok/{id}/health"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].clone()
}

#[tokio::test]
async fn a_rate_limited_credential_rests_behind_the_healthy_one() {
    let mock = mock_with(429, vec![("retry-after", "30".into())]).await;
    let proxy = Proxy::start(&config(&mock, &two_credentials())).await;
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
    assert_eq!(
        mock.secrets_from(0),
        ["sk-health-first-00001", "sk-health-second-0001"]
    );
    // The next request goes to the second at once: one upstream hit.
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.header("x-byok-credential-id"), Some("second"));
    assert_eq!(mock.secrets_from(2), ["sk-health-second-0001"]);
    // The access log says which credential was passed over for its health.
    let line = proxy.wait_log("resting=first").await;
    assert!(line.contains("attempts=second:200"), "{line}");

    let first = health(&proxy, "first").await;
    assert_eq!(first["state"], "cooling");
    assert_eq!(first["last_status"], 429);
    assert_eq!(first["consecutive_failures"], 0);
    let until = first["until"].as_str().unwrap();
    assert!(until > first["last_used_at"].as_str().unwrap(), "{first}");
    let second = health(&proxy, "second").await;
    assert_eq!(
        (&second["state"], &second["until"], &second["last_status"]),
        (&Value::from("healthy"), &Value::Null, &Value::from(200))
    );
    let missing = admin_get(proxy.admin_addr().await, "/api/v1/byok/nope/health").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn a_rejected_credential_is_quarantined_and_a_reload_keeps_it_so() {
    let mock = mock_with(401, vec![]).await;
    let proxy = Proxy::start(&config(&mock, &two_credentials())).await;
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
    assert_eq!(health(&proxy, "first").await["state"], "quarantined");
    // A reload that keeps the credential keeps its quarantine.
    let mark = proxy.log_len();
    proxy.write_config(&config(
        &mock,
        &format!("{}\n# reloaded\n", two_credentials()),
    ));
    proxy.wait_log_after(mark, "config reloaded").await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.header("x-byok-credential-id"), Some("second"));
    assert_eq!(mock.secrets_from(2), ["sk-health-second-0001"]);
    let first = health(&proxy, "first").await;
    assert_eq!(
        (&first["state"], &first["last_status"]),
        (&Value::from("quarantined"), &Value::from(401))
    );
}

#[tokio::test]
async fn resting_credentials_still_serve_when_all_rest() {
    let mock =
        Mock::start(|_| Reply::Full(429, vec![("retry-after", "60".into())], "{}".into())).await;
    let proxy = Proxy::start(&config(&mock, &two_credentials())).await;
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 429);
    // Both rest: both are tried again, in their order; nothing is refused.
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        mock.secrets_from(2),
        ["sk-health-first-00001", "sk-health-second-0001"]
    );
}

#[tokio::test]
async fn a_short_cooldown_ends_and_the_order_comes_back() {
    let mock = Mock::start(|r: &Recorded| {
        // The first credential is rate-limited for 200 ms, once.
        static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let first = r.header("authorization") == Some("Bearer sk-health-first-00001");
        if first && !ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Reply::Full(429, vec![("retry-after-ms", "200".into())], "{}".into())
        } else {
            Reply::json(200, "{}")
        }
    })
    .await;
    let proxy = Proxy::start(&config(&mock, &two_credentials())).await;
    assert_eq!(
        chat(&proxy, GW, "gpt-4o")
            .await
            .header("x-byok-credential-id"),
        Some("second")
    );
    // Poll (bounded) until the first serves again.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = chat(&proxy, GW, "gpt-4o").await;
        if r.header("x-byok-credential-id") == Some("first") {
            break;
        }
        assert!(Instant::now() < deadline, "the cooldown never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
