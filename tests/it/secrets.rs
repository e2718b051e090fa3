//! The secrets never leave: a run with canary secrets and debug logging
//! through allowed, refused and failing requests, then a scan of everything
//! the process printed and every response it gave.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

const CANARIES: [&str; 4] = [
    "sk-CANARY-alpha-7f3a9d",
    "sk-CANARY-bravo-2b8c1e",
    "sk-CANARY-env-5d4e3f",
    "sk-CANARY-header-9a8b7c",
];

#[tokio::test]
async fn no_canary_in_logs_responses_or_errors() {
    let mock = Mock::start(|r| {
        let auth = r.header("authorization").unwrap_or("").to_owned();
        if auth.contains("alpha") {
            // The provider echoes the secret in its complaint, as some do.
            Reply::json(
                401,
                &format!(r#"{{"error":"Incorrect API key provided: {auth}"}}"#),
            )
        } else {
            Reply::json(200, r#"{"ok":true}"#)
        }
    })
    .await;
    let dead = dead_addr();
    let cfg = config(
        &mock,
        &[
            cred("c-alpha", "openai", CANARIES[0], "sort_order = 0"),
            cred("c-bravo", "openai", CANARIES[1], "sort_order = 1\nallowed_models = [\"openai/gpt-4o\"]"),
            format!(
                "[[credentials]]\nid = \"c-env\"\nworkspace_id = \"ws-1\"\nprovider = \"anthropic\"\nkey_env = \"BYOK_TEST_CANARY\"\nbase_url = \"http://{dead}\"\nheaders = {{ \"x-extra-secret\" = \"{}\" }}\n",
                CANARIES[3]
            ),
        ]
        .concat(),
    );
    let mut proxy = Proxy::start_with_env(&cfg, &[("BYOK_TEST_CANARY", CANARIES[2])]).await;
    let mut bodies = Vec::new();
    // Allowed after a failover (alpha 401 -> bravo 200).
    bodies.push(chat(&proxy, GW, "gpt-4o").await);
    // Refused: no eligible credential after alpha fails -> final 401 -> 502.
    bodies.push(chat(&proxy, GW, "o1").await);
    // Refused before forwarding.
    bodies.push(chat(&proxy, "gw-unknown", "gpt-4o").await);
    bodies.push(
        post(
            &proxy,
            "/openai/v1/chat/completions",
            GW,
            r#"{"model":"a","model":"b"}"#,
        )
        .await,
    );
    bodies.push(post(&proxy, "/nope/v1/x", GW, "{}").await);
    // Failing: connection refused upstream.
    bodies.push(
        send(
            req("POST", &proxy.url("/anthropic/v1/messages"), None)
                .header("x-api-key", GW)
                .body(Full::new(Bytes::from_static(br#"{"model":"claude"}"#)))
                .unwrap(),
        )
        .await,
    );
    assert_eq!(bodies[0].status, 200);
    assert_eq!(bodies[1].reason(), "upstream_rejected_credential");
    assert_eq!(bodies[5].reason(), "upstream_unreachable");
    // A reload that fails, and one that succeeds, log too.
    let mark = proxy.log_len();
    proxy.write_config(&cfg.replace("sort_order = 1", "sort_order = \"x\""));
    proxy.wait_log_after(mark, "config reload failed").await;
    let mark = proxy.log_len();
    proxy.write_config(&cfg);
    proxy.wait_log_after(mark, "config reloaded").await;
    proxy.signal("TERM");
    assert!(proxy.wait_exit().await.success());

    let logs = proxy.logs();
    assert!(logs.contains("DEBUG"), "debug logging was not on:\n{logs}");
    for canary in CANARIES {
        assert!(!logs.contains(canary), "{canary} in the logs:\n{logs}");
        // Not even a recognisable part of it.
        assert!(
            !logs.contains(&canary[3..16]),
            "part of {canary} in the logs"
        );
        for b in &bodies {
            assert!(
                !b.text().contains(canary),
                "{canary} in a response: {}",
                b.text()
            );
            for (k, v) in &b.headers {
                assert!(
                    !v.as_bytes()
                        .windows(canary.len())
                        .any(|w| w == canary.as_bytes()),
                    "{canary} in header {k}"
                );
            }
        }
    }
    for key in [GW, "gw-unknown"] {
        assert!(!logs.contains(key), "raw gateway key {key} in the logs");
    }
}
