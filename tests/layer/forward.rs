//! What an admitted request looks like to the inner service, per provider, and
//! what the client gets back.

use http::header::AUTHORIZATION;

use crate::fixtures::*;

/// Header names the inner service saw, sorted.
fn names(seen: &Seen) -> Vec<String> {
    let mut names: Vec<String> = seen.headers.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

/// A body that a `serde_json::Value` round trip would change three ways: key
/// order, whitespace, and a number beyond f64 precision.
const ODD_BODY: &str = "{ \"stream\" :true,\"model\":\"gpt-4o\" ,\n\t\"n\": 12345678901234567890123 ,  \"a\":1.50, \"messages\":[ ]}\r\n";

#[test]
fn the_odd_body_is_one_a_serde_round_trip_would_change() {
    let v: serde_json::Value = serde_json::from_str(ODD_BODY).unwrap();
    assert_ne!(serde_json::to_string(&v).unwrap(), ODD_BODY);
    assert_ne!(v["n"].to_string(), "12345678901234567890123");
}

#[tokio::test]
async fn openai_request_is_forwarded_with_the_secret_and_the_bytes_as_sent() {
    let req = request(
        "POST",
        "/openai/v1/chat/completions?stream=true&key=gw-alice-0001&x=1",
        &[
            ("authorization", &format!("Bearer {ALICE}")),
            ("x-api-key", ALICE),
            ("api-key", ALICE),
            ("x-goog-api-key", ALICE),
            ("content-type", "application/json"),
            ("content-length", &ODD_BODY.len().to_string()),
            ("x-custom", "kept"),
            ("cookie", "session=1"),
            ("openai-organization", "org-evil"),
            ("openai-project", "proj-evil"),
            ("proxy-authorization", "Basic eDp5"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("expect", "100-continue"),
            ("host", "evil.test"),
        ],
        ODD_BODY,
    );
    let (got, rec) = send_ok(req).await;

    let seen = rec.only();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.uri,
        "http://openai.upstream.test/base/v1/chat/completions?stream=true&x=1"
    );
    assert_eq!(
        names(&seen),
        [
            "accept-encoding",
            "authorization",
            "content-type",
            "x-custom",
            "x-request-id"
        ]
    );
    // SPEC §8: the usage report must pass uncompressed to be read.
    assert_eq!(seen.headers["accept-encoding"], "identity");
    let auth = seen.headers.get(AUTHORIZATION).unwrap();
    assert_eq!(auth, "Bearer sk-openai-SECRET-1111");
    assert!(
        auth.is_sensitive(),
        "the injected secret is marked sensitive"
    );
    assert_eq!(seen.headers.get_all(AUTHORIZATION).iter().count(), 1);
    assert_eq!(seen.body, ODD_BODY.as_bytes());
    assert_eq!((seen.credential.as_str(), seen.attempt), ("cred-openai", 1));

    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-byok-credential-id"), Some("cred-openai"));
    assert_eq!(got.header("x-byok-attempts"), Some("1"));
    assert_eq!(got.text(), upstream_body(200, "cred-openai"));
    got.assert_no_secret();
}

#[tokio::test]
async fn response_head_is_annotated_and_cleaned_of_hop_by_hop_headers() {
    let (got, _) = send_ok(chat(ALICE, "gpt-4o")).await;
    assert_eq!(got.status, 200);
    // The upstream's own x-byok-* values are replaced, not appended to.
    assert_eq!(
        got.headers.get_all("x-byok-credential-id").iter().count(),
        1
    );
    assert_eq!(got.headers.get_all("x-byok-attempts").iter().count(), 1);
    assert_eq!(got.header("x-byok-credential-id"), Some("cred-openai"));
    assert_eq!(got.header("x-byok-attempts"), Some("1"));
    assert_eq!(got.header("x-upstream-header"), Some("kept"));
    for hop in ["connection", "keep-alive", "x-hop-named"] {
        assert_eq!(got.header(hop), None, "{hop} passed through");
    }
}

#[tokio::test]
async fn anthropic_gets_x_api_key_and_the_default_version() {
    let body = r#"{"model":"claude-3-5-sonnet-latest","max_tokens":1,"messages":[]}"#;
    let req = request(
        "POST",
        "/anthropic/v1/messages",
        &[
            ("x-api-key", ALICE),
            ("authorization", &format!("bearer {ALICE}")),
            ("content-type", "application/json"),
            // Naming the provider's auth header cannot remove the injected one.
            ("connection", "x-api-key"),
            // Framing is the forwarder's business (no Content-Length here).
            ("transfer-encoding", "chunked"),
        ],
        body,
    );
    let (got, rec) = send_ok(req).await;
    let seen = rec.only();
    assert_eq!(seen.uri, "http://anthropic.upstream.test/v1/messages");
    assert_eq!(
        names(&seen),
        [
            "accept-encoding",
            "anthropic-version",
            "content-type",
            "x-api-key",
            "x-request-id"
        ]
    );
    assert_eq!(seen.headers["x-api-key"], "sk-ant-SECRET-2222");
    assert!(seen.headers["x-api-key"].is_sensitive());
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(got.header("x-byok-credential-id"), Some("cred-anthropic"));
}

#[tokio::test]
async fn anthropic_version_sent_by_the_client_is_kept() {
    let req = request(
        "POST",
        "/anthropic/v1/messages",
        &[
            ("x-api-key", ALICE),
            ("anthropic-version", "2024-10-22"),
            ("anthropic-beta", "tools-2024-05-16"),
        ],
        r#"{"model":"claude-3-5-sonnet-latest"}"#,
    );
    let (_, rec) = send_ok(req).await;
    let seen = rec.only();
    let versions: Vec<_> = seen.headers.get_all("anthropic-version").iter().collect();
    assert_eq!(versions, ["2024-10-22"]);
    assert_eq!(seen.headers["anthropic-beta"], "tools-2024-05-16");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-SECRET-2222");
}

#[tokio::test]
async fn google_gets_x_goog_api_key_and_loses_the_key_query_parameter() {
    let req = request(
        "POST",
        "/google-ai-studio/v1beta/models/gemini-1.5-pro:streamGenerateContent?key=gw-alice-0001&alt=sse&KEY=x",
        &[("x-goog-api-key", ALICE), ("content-type", "application/json")],
        r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
    );
    let (got, rec) = send_ok(req).await;
    let seen = rec.only();
    assert_eq!(
        seen.uri,
        "http://google.upstream.test/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        names(&seen),
        [
            "accept-encoding",
            "content-type",
            "x-goog-api-key",
            "x-request-id"
        ]
    );
    assert_eq!(seen.headers["x-goog-api-key"], "AIza-goog-SECRET-3333");
    assert_eq!(got.header("x-byok-credential-id"), Some("cred-google"));
}

#[tokio::test]
async fn a_request_without_a_body_is_forwarded_without_one() {
    let req = request(
        "GET",
        "/anthropic/v1/models?limit=2",
        &[("x-api-key", ALICE)],
        "",
    );
    let (got, rec) = send_ok(req).await;
    let seen = rec.only();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "http://anthropic.upstream.test/v1/models?limit=2");
    assert!(seen.body.is_empty());
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn the_upstream_comes_from_configuration_not_from_the_client_uri_or_host() {
    let req = request(
        "POST",
        "http://evil.test:8443/openai/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {ALICE}")),
            ("host", "evil.test"),
            ("x-forwarded-host", "evil.test"),
        ],
        r#"{"model":"gpt-4o"}"#,
    );
    let (_, rec) = send_ok(req).await;
    let seen = rec.only();
    assert_eq!(
        seen.uri,
        "http://openai.upstream.test/base/v1/chat/completions"
    );
    assert!(seen.headers.get("host").is_none());
}

#[tokio::test]
async fn other_methods_and_body_kinds_pass_through_unchanged() {
    // A multipart body is not read for a model: anthropic's credential has no
    // model allowlist, so it is forwarded byte for byte.
    let multipart =
        "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n";
    for (method, ct, body) in [
        ("PUT", "application/json", r#"{"model":"claude"}"#),
        ("DELETE", "application/json", ""),
        ("POST", "multipart/form-data; boundary=b", multipart),
    ] {
        let req = request(
            method,
            "/anthropic/v1/files/abc",
            &[("x-api-key", ALICE), ("content-type", ct)],
            body,
        );
        let (got, rec) = send_ok(req).await;
        let seen = rec.only();
        assert_eq!(
            (seen.method.as_str(), &seen.body[..]),
            (method, body.as_bytes())
        );
        assert_eq!(got.status, 200);
    }
}

/// A config whose one credential sets upstream headers of its own, among them
/// `OpenAI-Organization`, exactly as SPEC §3's config example shows.
fn credential_headers_config(headers: &str) -> String {
    format!(
        r#"
[providers.openai]
base_url = "http://upstream.test"

[[api_keys]]
hash = "{alice}"
workspace_id = "ws-h"
user_id = "alice"

[[credentials]]
id = "cred-h"
workspace_id = "ws-h"
provider = "openai"
key = "sk-h-SECRET-7777"
created_at = "2025-01-01T00:00:00Z"
headers = {headers}
"#,
        alice = hash(ALICE)
    )
}

#[tokio::test]
async fn credential_headers_win_over_the_clients() {
    let registry = registry_from(&credential_headers_config(
        r#"{ "x-tenant" = "from-config" }"#,
    ));
    let (inner, rec) = ok_upstream();
    let mut req = chat(ALICE, "gpt-4o");
    req.headers_mut()
        .insert("x-tenant", "from-client".parse().unwrap());
    let got = send(&byok_proxy::ByokLayer::new(registry), inner, req).await;
    assert_eq!(got.status, 200);
    let seen = rec.only();
    let values: Vec<_> = seen.headers.get_all("x-tenant").iter().collect();
    assert_eq!(values, ["from-config"]);
    assert!(seen.headers["x-tenant"].is_sensitive());
}

#[tokio::test]
async fn a_credentials_openai_organization_replaces_the_clients() {
    let text = credential_headers_config(
        r#"{ "OpenAI-Organization" = "org-good", "OpenAI-Project" = "proj-good" }"#,
    );
    let config = byok_proxy::Config::parse(&text);
    assert!(
        config.is_ok(),
        "{}",
        config.err().map(|e| e.to_string()).unwrap_or_default()
    );
    let registry = registry_from(&text);
    let (inner, rec) = ok_upstream();
    let mut req = chat(ALICE, "gpt-4o");
    req.headers_mut()
        .insert("openai-organization", "org-evil".parse().unwrap());
    req.headers_mut()
        .insert("openai-project", "proj-evil".parse().unwrap());
    let got = send(&byok_proxy::ByokLayer::new(registry), inner, req).await;
    assert_eq!(got.status, 200);
    let seen = rec.only();
    let orgs: Vec<_> = seen.headers.get_all("openai-organization").iter().collect();
    assert_eq!(orgs, ["org-good"]);
    let projects: Vec<_> = seen.headers.get_all("openai-project").iter().collect();
    assert_eq!(projects, ["proj-good"]);
}

#[tokio::test]
async fn the_one_endpoint_sends_the_body_with_only_its_model_changed() {
    // The slug `openai/gpt-4o` goes to openai as `gpt-4o`: the body that
    // arrives is the odd body, byte for byte, with OpenRouter's members gone.
    let asked = ODD_BODY.replace("\"gpt-4o\"", "\"openai/gpt-4o\"").replace(
        "\"a\":1.50,",
        "\"a\":1.50, \"provider\" : {\"order\":[\"openai\"]},",
    );
    let req = request(
        "POST",
        "/api/v1/chat/completions?key=gw-alice-0001",
        &[
            ("authorization", &format!("Bearer {ALICE}")),
            ("content-type", "application/json"),
        ],
        asked,
    );
    let (got, rec) = send_ok(req).await;
    let seen = rec.only();
    assert_eq!(
        seen.uri, "http://openai.upstream.test/base/v1/chat/completions",
        "no query but the provider's"
    );
    assert_eq!(String::from_utf8_lossy(&seen.body), ODD_BODY);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-byok-provider"), Some("openai"));
    assert_eq!(got.header("x-byok-model"), Some("gpt-4o"));
    got.assert_no_secret();
}
