//! Issue 11 / SPEC §6: on a provider's route, the proxy's own answers carry
//! the fields that provider's SDK reads (beside OpenRouter's), and
//! `x-should-retry: false` where a retry cannot help.

use http_body_util::Full;

use crate::support::*;

async fn post_to(proxy: &Proxy, path: &str, key: Option<&str>, body: &str) -> Resp {
    send(
        req("POST", &proxy.url(path), key)
            .header("content-type", "application/json")
            .body(Full::new(body.to_owned().into()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn each_providers_sdk_finds_its_own_error_fields() {
    let mock = Mock::ok().await;
    let proxy = Proxy::start(&config(
        &mock,
        &cred(
            "c1",
            "openai",
            "sk-native-000000000001",
            r#"allowed_models = ["openai/gpt-4o"]"#,
        ),
    ))
    .await;
    let body = r#"{"model":"m"}"#;

    // Anthropic: a top-level "type", error.type, and request-id.
    let r = post_to(&proxy, "/anthropic/v1/messages", None, body).await;
    assert_eq!(r.status, 401);
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    assert_eq!(v["error"]["metadata"]["reason"], "missing_api_key");
    assert_eq!(r.header("request-id"), r.header("x-byok-request-id"));
    assert_eq!(r.header("x-should-retry"), Some("false"));

    // Google: error.status.
    let path = "/google-ai-studio/v1beta/models/gemini-pro:generateContent";
    let r = post_to(&proxy, path, Some("not-a-registered-key"), "{}").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");

    // Bedrock: a top-level message and x-amzn-ErrorType.
    let r = post_to(&proxy, "/amazon-bedrock/model/m/converse", Some(GW), "{}").await;
    assert_eq!(r.status, 403);
    let v = r.json();
    assert_eq!(v["message"], v["error"]["message"], "{v}");
    assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));

    // OpenAI: error.type and error.param.
    let r = post_to(
        &proxy,
        "/openai/v1/chat/completions",
        Some(GW),
        r#"{"model":"o1"}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    let v = r.json();
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    assert!(v["error"].get("param").is_some_and(|p| p.is_null()), "{v}");
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn only_what_a_retry_cannot_fix_says_so() {
    // The provider rejects the secret: final, and its words stay upstream.
    let mock = Mock::start(|_| Reply::json(401, r#"{"error":{"message":"bad key sk-..."}}"#)).await;
    let proxy = Proxy::start(&config(
        &mock,
        &cred("c1", "openai", "sk-native-000000000002", ""),
    ))
    .await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(
        (r.status, r.reason()),
        (502, "upstream_rejected_credential".into())
    );
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(r.json()["error"]["type"], "api_error");
    assert_eq!(mock.count(), 1, "one attempt, no retry of the secret");

    // boto3 retries every 5xx whatever the headers say: on Bedrock's route
    // the same refusal is Bedrock's own answer to a bad key, a 403.
    let proxy = Proxy::start(&config(
        &mock,
        &cred("c1", "amazon-bedrock", "bedrock-native-000000000002", ""),
    ))
    .await;
    let r = post_to(&proxy, "/amazon-bedrock/model/m/converse", Some(GW), "{}").await;
    assert_eq!(
        (r.status, r.reason()),
        (403, "upstream_rejected_credential".into())
    );
    assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(mock.count(), 2);

    // The upstream cannot be reached: a retry may succeed, nothing is said.
    let creds = cred("c1", "groq", "sk-native-000000000003", "");
    let cfg = config(&mock, &creds).replace(
        "[providers.openai]",
        &format!(
            "[providers.groq]\nbase_url = \"http://{}\"\n[providers.openai]",
            dead_addr()
        ),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = post_to(
        &proxy,
        "/groq/openai/v1/chat/completions",
        Some(GW),
        r#"{"model":"m"}"#,
    )
    .await;
    assert_eq!((r.status, r.reason()), (502, "upstream_unreachable".into()));
    assert_eq!(r.header("x-should-retry"), None);
}

const GOOGLE_INVALID_KEY: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
const GOOGLE_BAD_REQUEST: &str = r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"foo\".","status":"INVALID_ARGUMENT"}}"#;

/// A Google mock: the secret says how it answers.
async fn google_mock() -> Mock {
    Mock::start(|r: &Recorded| match r.header("x-goog-api-key") {
        Some(k) if k.starts_with("g-revoked") => Reply::json(400, GOOGLE_INVALID_KEY),
        Some(k) if k.starts_with("g-picky") => Reply::json(400, GOOGLE_BAD_REQUEST),
        _ => Reply::json(200, r#"{"candidates":[]}"#),
    })
    .await
}

const GEMINI: &str = "/google-ai-studio/v1beta/models/gemini-pro:generateContent";

/// A proxy with two Google credentials: `first` (its secret picks the mock's
/// answer), then a good one.
async fn google_proxy(mock: &Mock, first: &str) -> Proxy {
    let creds = format!(
        "{}{}",
        cred("g1", "google-ai-studio", first, "sort_order = 1"),
        cred(
            "g2",
            "google-ai-studio",
            "g-good-key-000000000002",
            "sort_order = 2"
        ),
    );
    Proxy::start(&config(mock, &creds)).await
}

#[tokio::test]
async fn googles_invalid_key_answer_fails_over_like_a_401() {
    let mock = google_mock().await;
    let proxy = google_proxy(&mock, "g-revoked-key-000000001").await;
    let r = post_to(&proxy, GEMINI, Some(GW), "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-byok-credential-id"), Some("g2"));
    assert_eq!(r.header("x-byok-attempts"), Some("2"));

    // Alone, the revoked key is a 502 that keeps Google's words upstream.
    let proxy = Proxy::start(&config(
        &mock,
        &cred("g1", "google-ai-studio", "g-revoked-key-000000001", ""),
    ))
    .await;
    let r = post_to(&proxy, GEMINI, Some(GW), "{}").await;
    assert_eq!(
        (r.status, r.reason()),
        (502, "upstream_rejected_credential".into())
    );
    assert!(!r.text().contains("API key not valid"), "{}", r.text());
    assert_eq!(r.header("x-should-retry"), Some("false"));
}

#[tokio::test]
async fn any_other_google_400_is_relayed_as_it_came() {
    let mock = google_mock().await;
    let proxy = google_proxy(&mock, "g-picky-key-0000000001").await;
    let r = post_to(&proxy, GEMINI, Some(GW), "{}").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), GOOGLE_BAD_REQUEST, "byte for byte");
    assert_eq!(r.header("x-byok-attempts"), Some("1"), "no failover");
    assert_eq!(mock.count(), 1);
}
