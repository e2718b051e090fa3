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
        assert_in_no_response(canary, &bodies);
    }
    for key in [GW, "gw-unknown"] {
        assert!(!logs.contains(key), "raw gateway key {key} in the logs");
    }
}

/// The same scan for the clouds' structured keys (SPEC §9): an AWS secret
/// half and session token, a service account's private key and the tokens
/// minted with it, Azure entries' keys. The upstream echoes whatever
/// credential it got in its complaints; the admin API, `/metrics` and debug
/// logs are read too.
#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn no_cloud_secret_in_logs_responses_metrics_or_the_admin_api() {
    use crate::support::admin::{admin_get, admin_section, MGMT};
    const AWS_SECRET: &str = "wJalrCANARYawsSECRETkey0123456789";
    const AWS_TOKEN: &str = "FQoGCANARYsessionTOKEN";
    const MINTED: &str = "ya29.CANARY-minted-token";
    const AZURE_KEYS: [&str; 2] = ["az-CANARY-resource-key", "az-CANARY-deploy-key"];
    let pem = include_str!("../fixtures/vertex-test-key.pem");
    // The PEM's body lines, any of which would be a leak.
    let pem_lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();

    let mock = Mock::start(|r| {
        if r.uri == "/token" {
            return Reply::json(
                200,
                &format!(r#"{{"access_token":"{MINTED}","expires_in":3600}}"#),
            );
        }
        // Echo every credential header in a complaint, for the models
        // marked "echo"; answer the others.
        if r.uri.contains("echo") {
            let got = format!(
                "{:?} {:?} {:?}",
                r.header("authorization"),
                r.header("api-key"),
                r.header("x-amz-security-token")
            );
            return Reply::json(401, &format!(r#"{{"error":"bad credential {got}"}}"#));
        }
        Reply::json(200, r#"{"ok":true}"#)
    })
    .await;
    let account = serde_json::json!({
        "type": "service_account", "project_id": "proj-cred", "private_key": pem,
        "client_email": "canary@proj-cred.iam.gserviceaccount.com",
        "token_uri": format!("{}/token", mock.url()), "region": "us-central1",
    });
    let aws = format!(
        r#"{{"accessKeyId":"AKIAIOSFODNN7EXAMPLE","secretAccessKey":"{AWS_SECRET}","region":"eu-west-3","sessionToken":"{AWS_TOKEN}"}}"#
    );
    let azure = serde_json::json!([
        {"api_key": AZURE_KEYS[0], "resource_name": "res", "resource_type": "openai"},
        {"model_slug": "gpt-4o", "endpoint_url": format!("{}/dep", mock.url()), "api_key": AZURE_KEYS[1], "model_id": "prod"},
    ]);
    let cred = |id: &str, provider: &str, key: &str| {
        format!(
            "\n[[credentials]]\nid = \"{id}\"\nworkspace_id = \"ws-1\"\nprovider = \"{provider}\"\nkey = '{key}'\nbase_url = \"{}\"\n",
            mock.url()
        )
    };
    let rest = [
        admin_section("127.0.0.1:0", &[MGMT]),
        cred("c-aws", "amazon-bedrock", &aws),
        cred("c-vx", "google-vertex", &account.to_string()),
        cred("c-az", "azure", &azure.to_string()),
    ]
    .concat();
    let mut proxy = Proxy::start(&config(&mock, &rest)).await;
    let vertex = |model: &str| {
        format!("/google-vertex/v1/projects/p/locations/l/publishers/google/models/{model}:generateContent")
    };
    let azure_chat =
        |d: &str| format!("/azure/openai/deployments/{d}/chat/completions?api-version=1");
    let mut bodies = Vec::new();
    for (path, status) in [
        ("/amazon-bedrock/model/m/converse".to_owned(), 200),
        // Bedrock's dialect says a rejected credential with 403.
        ("/amazon-bedrock/model/echo/converse".to_owned(), 403),
        (vertex("gemini"), 200),
        (vertex("echo"), 502),
        (azure_chat("gpt-4o"), 200),
        (azure_chat("echo"), 502),
    ] {
        let r = post(&proxy, &path, GW, r#"{"messages":[]}"#).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        bodies.push(r);
    }
    let admin = proxy.admin_addr().await;
    for path in [
        "/api/v1/byok",
        "/api/v1/byok/c-vx",
        "/api/v1/byok/c-aws/health",
        "/metrics",
    ] {
        let r = admin_get(admin, path).await;
        assert_eq!(r.status, 200, "{path}");
        bodies.push(r);
    }
    // The echoes reached the mock: the canaries were really in play.
    let echoed: String = mock.requests().iter().map(|r| r.everything()).collect();
    for used in [MINTED, AZURE_KEYS[0], AWS_TOKEN] {
        assert!(echoed.contains(used), "{used} never went upstream");
    }
    proxy.signal("TERM");
    assert!(proxy.wait_exit().await.success());

    let logs = proxy.logs();
    assert!(logs.contains("DEBUG"), "debug logging was not on");
    let mut canaries = vec![
        AWS_SECRET,
        AWS_TOKEN,
        MINTED,
        AZURE_KEYS[0],
        AZURE_KEYS[1],
        "CANARY",
    ];
    canaries.extend(pem_lines.iter().copied());
    for canary in canaries {
        assert!(!logs.contains(canary), "{canary} in the logs");
        assert_in_no_response(canary, &bodies);
    }
    // The signature and the assertion are not printed either.
    assert!(
        !logs.contains("AWS4-HMAC-SHA256 Credential"),
        "a signature in the logs"
    );
    assert!(
        !logs.contains("assertion="),
        "the JWT assertion in the logs"
    );
}

/// `canary` is in no body and no header of `responses`.
fn assert_in_no_response(canary: &str, responses: &[Resp]) {
    for b in responses {
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
