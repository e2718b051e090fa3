//! Every way the layer answers by itself, each shown never to reach the inner
//! service.

use std::io::Write;

use bytes::Bytes;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use http::Request;
use http_body_util::Full;

use crate::fixtures::*;

/// Sends `req`; asserts the refusal and that the inner service was never called.
async fn refused(req: Request<Full<Bytes>>, status: u16, reason: &str) -> Resp {
    let what = format!("{} {}", req.method(), req.uri());
    let (got, rec) = send_ok(req).await;
    assert_eq!(
        rec.count(),
        0,
        "{what}: the inner service was called: {:#?}",
        rec.all()
    );
    assert_eq!(
        (got.status, got.reason().as_str()),
        (status, reason),
        "{what}: {}",
        got.text()
    );
    got.assert_refused(status, reason);
    got
}

fn bearer(key: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {key}"))
}

/// A POST to openai with alice's key and these extra headers.
fn alice_post(uri: &str, extra: &[(&str, &str)], body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let auth = format!("Bearer {ALICE}");
    let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth)];
    headers.extend_from_slice(extra);
    request("POST", uri, &headers, body)
}

fn deflate(plain: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(plain).unwrap();
    z.finish().unwrap()
}

const CHAT: &str = "/openai/v1/chat/completions";
const GPT4O: &str = r#"{"model":"gpt-4o","messages":[]}"#;

// ---- keys -------------------------------------------------------------------

#[tokio::test]
async fn a_missing_key_is_401() {
    refused(request("POST", CHAT, &[], GPT4O), 401, "missing_api_key").await;
    // A key in the query string is not a gateway key (and is dropped anyway).
    let uri = format!("{CHAT}?key={ALICE}");
    refused(request("POST", &uri, &[], GPT4O), 401, "missing_api_key").await;
    // Nor in a header the contract does not name.
    let req = request(
        "POST",
        CHAT,
        &[
            ("x-goog-key", ALICE),
            ("proxy-authorization", &format!("Bearer {ALICE}")),
        ],
        GPT4O,
    );
    refused(req, 401, "missing_api_key").await;
}

#[tokio::test]
async fn unknown_and_disabled_keys_are_indistinguishable() {
    for header in ["authorization", "x-api-key", "api-key", "x-goog-api-key"] {
        let value = |key: &str| {
            if header == "authorization" {
                format!("Bearer {key}")
            } else {
                key.to_owned()
            }
        };
        let unknown = refused(
            request("POST", CHAT, &[(header, &value("gw-nobody-9999"))], GPT4O),
            401,
            "invalid_api_key",
        )
        .await;
        let disabled = refused(
            request("POST", CHAT, &[(header, &value(DISABLED))], GPT4O),
            401,
            "invalid_api_key",
        )
        .await;
        assert_eq!(unknown.body, disabled.body, "{header}");
        // Identical but for the per-request ids.
        let without_ids = |h: &http::HeaderMap| {
            let mut h = h.clone();
            h.remove("x-request-id");
            h.remove("x-byok-request-id");
            h
        };
        assert_eq!(
            without_ids(&unknown.headers),
            without_ids(&disabled.headers),
            "{header}"
        );
    }
}

#[tokio::test]
async fn unusable_or_ambiguous_keys_are_401() {
    let alice = bearer(ALICE);
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![alice.clone(), ("x-api-key", BOB.into())],
            "ambiguous_api_key",
        ),
        (
            vec![("x-api-key", ALICE.into()), ("x-goog-api-key", BOB.into())],
            "ambiguous_api_key",
        ),
        (
            vec![alice.clone(), ("authorization", format!("Bearer {BOB}"))],
            "ambiguous_api_key",
        ),
        // A disabled key next to a valid one is still two different keys.
        (
            vec![alice.clone(), ("api-key", DISABLED.into())],
            "ambiguous_api_key",
        ),
        (
            vec![("authorization", "Basic Z3ctYWxpY2UtMDAwMTo=".into())],
            "invalid_api_key",
        ),
        (
            vec![("authorization", format!("Bearer{ALICE}"))],
            "invalid_api_key",
        ),
        (vec![("authorization", "Bearer ".into())], "invalid_api_key"),
        (vec![("x-api-key", String::new())], "invalid_api_key"),
        // Case matters in keys.
        (vec![("x-api-key", ALICE.to_uppercase())], "invalid_api_key"),
    ];
    for (headers, reason) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        refused(request("POST", CHAT, &headers, GPT4O), 401, reason).await;
    }
}

// ---- credentials ------------------------------------------------------------

#[tokio::test]
async fn no_credential_for_the_workspace_and_provider_is_403() {
    refused(chat(CAROL, "gpt-4o"), 403, "no_credential").await;
    let req = alice_post(
        "/mistral/v1/chat/completions",
        &[],
        r#"{"model":"mistral-large"}"#,
    );
    let got = refused(req, 403, "no_credential").await;
    assert!(got.message().contains("mistral"), "{}", got.message());
}

#[tokio::test]
async fn no_eligible_credential_names_the_refusing_allowlist() {
    let all = [
        "allowed_models",
        "allowed_user_ids",
        "allowed_api_key_hashes",
    ];
    let cases: Vec<(Request<Full<Bytes>>, &str)> = vec![
        (chat(ALICE, "gpt-4o-mini"), "allowed_models"),
        (chat(ALICE, "GPT-4o"), "allowed_models"),
        (chat(ALICE, "openai/*"), "allowed_models"),
        (
            request("GET", "/openai/v1/models", &[("x-api-key", ALICE)], ""),
            "allowed_models",
        ),
        (
            request(
                "POST",
                "/anthropic/v1/messages",
                &[("x-api-key", BOB)],
                r#"{"model":"claude"}"#,
            ),
            "allowed_user_ids",
        ),
        (
            request(
                "POST",
                "/google-ai-studio/v1beta/models/gemini-1.5-pro:generateContent",
                &[("x-goog-api-key", BOB)],
                "{}",
            ),
            "allowed_api_key_hashes",
        ),
    ];
    for (req, list) in cases {
        let got = refused(req, 403, "no_eligible_credential").await;
        let message = got.message();
        for name in all {
            assert_eq!(message.contains(name), name == list, "{list}: {message}");
        }
    }
}

#[tokio::test]
async fn a_request_without_a_model_says_so() {
    let got = refused(
        request("GET", "/openai/v1/models", &[("x-api-key", ALICE)], ""),
        403,
        "no_eligible_credential",
    )
    .await;
    assert!(
        got.message().contains("without a model"),
        "{}",
        got.message()
    );
}

// ---- bodies -----------------------------------------------------------------

/// A valid chat body padded with spaces to exactly `len` bytes.
fn padded(len: usize) -> String {
    let mut body = String::from(r#"{"model":"gpt-4o","messages":[]"#);
    body.push_str(&" ".repeat(len - body.len() - 1));
    body.push('}');
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn bodies_over_max_body_bytes_are_413() {
    let big = padded(4097);
    refused(alice_post(CHAT, &[], big.clone()), 413, "body_too_large").await;
    let declared = big.len().to_string();
    refused(
        alice_post(CHAT, &[("content-length", &declared)], big),
        413,
        "body_too_large",
    )
    .await;
    // A declared length over the limit is refused even with a small body.
    refused(
        alice_post(CHAT, &[("content-length", "4097")], GPT4O),
        413,
        "body_too_large",
    )
    .await;
    // The limit applies after decoding: a small gzip that inflates past it.
    let bomb = gzip(padded(64 * 1024).as_bytes());
    assert!(bomb.len() < 4096);
    refused(
        alice_post(CHAT, &[("content-encoding", "gzip")], bomb),
        413,
        "body_too_large",
    )
    .await;

    // Exactly the limit is fine.
    let (got, rec) = send_ok(alice_post(CHAT, &[], padded(4096))).await;
    assert_eq!(got.status, 200);
    assert_eq!(rec.only().body.len(), 4096);
}

#[tokio::test]
async fn a_refusal_to_a_client_that_expects_100_continue_closes_the_connection() {
    // Its body was never read, nor asked for: the connection cannot go on.
    let expect = [
        ("expect", "100-continue"),
        ("content-length", "33"),
        ("authorization", "Bearer not-a-key"),
    ];
    let got = refused(
        request("POST", CHAT, &expect, GPT4O),
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(got.header("connection"), Some("close"));
    // Without the expectation the body is drained and the connection kept.
    let got = refused(
        request("POST", CHAT, &expect[1..], GPT4O),
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(got.header("connection"), None);
}

#[tokio::test]
async fn a_body_beyond_the_body_budget_is_503_and_its_bytes_come_back() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let budget = byok_proxy::BodyBudget::new(1000);
    let layer = byok_proxy::ByokLayer::new(registry()).with_body_budget(budget.clone());
    // What the budget held while the inner service had the request.
    let during = Arc::new(AtomicUsize::new(usize::MAX));
    let (inner, rec) = {
        let (budget, during) = (budget.clone(), Arc::clone(&during));
        upstream(move |_, _| {
            during.store(budget.held(), Ordering::SeqCst);
            Reply::Status(200)
        })
    };
    // One byte over, with its length declared or not: 503, nothing sent on.
    for extra in [&[][..], &[("content-length", "1001")][..]] {
        let got = send(&layer, inner.clone(), alice_post(CHAT, extra, padded(1001))).await;
        got.assert_refused(503, "body_budget_exhausted");
        assert_eq!(got.header("retry-after"), Some("1"));
        assert_eq!(got.header("x-should-retry"), Some("true"));
        assert_eq!(rec.count(), 0);
        assert_eq!(budget.held(), 0);
    }
    // One that fits is held until its attempt is answered, then given back.
    let got = send(&layer, inner, alice_post(CHAT, &[], padded(1000))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(rec.only().body.len(), 1000);
    assert_eq!(during.load(Ordering::SeqCst), 1000);
    assert_eq!(budget.held(), 0);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_closes() {
    let len = GPT4O.len().to_string();
    let req = alice_post(
        CHAT,
        &[("content-length", &len), ("transfer-encoding", "chunked")],
        GPT4O,
    );
    let got = refused(req, 400, "invalid_request").await;
    assert_eq!(got.header("connection"), Some("close"));
}

#[tokio::test]
async fn unreadable_encodings_are_415() {
    let body = gzip(GPT4O.as_bytes());
    for encoding in [
        "br",
        "zstd",
        "compress",
        "gzip, br",
        "br, gzip",
        "gzip, gzip",
        "identity, zstd",
        "x-unknown",
    ] {
        let req = alice_post(CHAT, &[("content-encoding", encoding)], body.clone());
        refused(req, 415, "unsupported_encoding").await;
    }
    // Two Content-Encoding headers stack just like a list.
    let req = alice_post(
        CHAT,
        &[
            ("content-encoding", "gzip"),
            ("content-encoding", "deflate"),
        ],
        body,
    );
    refused(req, 415, "unsupported_encoding").await;
}

#[tokio::test]
async fn gzip_and_deflate_bodies_are_decoded_and_forwarded_plain() {
    let plain = format!("{GPT4O}\n");
    for (encoding, encoded) in [
        ("gzip", gzip(plain.as_bytes())),
        ("x-gzip", gzip(plain.as_bytes())),
        ("GZIP", gzip(plain.as_bytes())),
        ("identity, gzip", gzip(plain.as_bytes())),
        ("deflate", deflate(plain.as_bytes())),
        ("identity", plain.clone().into_bytes()),
    ] {
        let len = encoded.len().to_string();
        let req = alice_post(
            CHAT,
            &[
                ("content-encoding", encoding),
                ("content-length", &len),
                ("content-type", "application/json"),
            ],
            encoded,
        );
        let (got, rec) = send_ok(req).await;
        assert_eq!(got.status, 200, "{encoding}: {}", got.text());
        let seen = rec.only();
        assert_eq!(seen.body, plain.as_bytes(), "{encoding}");
        assert!(seen.headers.get("content-encoding").is_none(), "{encoding}");
        // A stale Content-Length of the encoded body must not go upstream.
        assert!(seen.headers.get("content-length").is_none(), "{encoding}");
    }
}

#[tokio::test]
async fn an_encoded_body_cannot_hide_its_model() {
    let mini = gzip(br#"{"model":"gpt-4o-mini"}"#);
    refused(
        alice_post(CHAT, &[("content-encoding", "gzip")], mini),
        403,
        "no_eligible_credential",
    )
    .await;
    let dup = gzip(br#"{"model":"gpt-4o","model":"gpt-4o-mini"}"#);
    refused(
        alice_post(CHAT, &[("content-encoding", "gzip")], dup),
        400,
        "ambiguous_model",
    )
    .await;
    refused(
        alice_post(CHAT, &[("content-encoding", "gzip")], GPT4O),
        400,
        "invalid_body",
    )
    .await;
    let truncated = gzip(GPT4O.as_bytes());
    let truncated = truncated[..truncated.len() / 2].to_vec();
    refused(
        alice_post(CHAT, &[("content-encoding", "gzip")], truncated),
        400,
        "invalid_body",
    )
    .await;
}

#[tokio::test]
async fn a_model_query_parameter_is_400() {
    for query in [
        "model=gpt-4o",
        "Model=gpt-4o",
        "MODEL=x",
        "m%6fdel=gpt-4o",
        "a=1&model=gpt-4o",
        "+model=x",
        "model",
    ] {
        let uri = format!("{CHAT}?{query}");
        refused(alice_post(&uri, &[], GPT4O), 400, "ambiguous_model").await;
    }
    // Also where the credential has no model allowlist.
    let req = request(
        "GET",
        "/anthropic/v1/models?model=claude",
        &[("x-api-key", ALICE)],
        "",
    );
    refused(req, 400, "ambiguous_model").await;
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn bodies_breaking_the_strict_json_rules_are_400() {
    let deep = format!(
        r#"{{"model":"gpt-4o","x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // serde_json keeps the last duplicate, some upstreams the first.
        (
            br#"{"model":"gpt-4o","model":"gpt-4o-mini"}"#.to_vec(),
            "ambiguous_model",
        ),
        (
            br#"{"model":"gpt-4o-mini","model":"gpt-4o"}"#.to_vec(),
            "ambiguous_model",
        ),
        (
            br#"{"model":"gpt-4o","model":"gpt-4o"}"#.to_vec(),
            "ambiguous_model",
        ),
        (
            br#"{"model":"gpt-4o","\u006dodel":"gpt-4o-mini"}"#.to_vec(),
            "ambiguous_model",
        ),
        (
            br#"{"mod\u0065l":"gpt-4o-mini","model":"gpt-4o"}"#.to_vec(),
            "ambiguous_model",
        ),
        (
            br#"{"model":"gpt-4o","Model":"gpt-4o-mini"}"#.to_vec(),
            "ambiguous_model",
        ),
        (
            br#"{"MODEL":"gpt-4o-mini","model":"gpt-4o"}"#.to_vec(),
            "ambiguous_model",
        ),
        (
            br#"{"\u004dODEL":"x","model":"gpt-4o"}"#.to_vec(),
            "ambiguous_model",
        ),
        (br#"{"model":["gpt-4o"]}"#.to_vec(), "invalid_body"),
        (br#"{"model":null}"#.to_vec(), "invalid_body"),
        (br#"{"model":4}"#.to_vec(), "invalid_body"),
        (br#"{"model":{"id":"gpt-4o"}}"#.to_vec(), "invalid_body"),
        (
            br#"{"model":"gpt-4o"}{"model":"gpt-4o-mini"}"#.to_vec(),
            "invalid_body",
        ),
        (br#"{"model":"gpt-4o"} x"#.to_vec(), "invalid_body"),
        (br#"{"model":"gpt-4o",}"#.to_vec(), "invalid_body"),
        (br#"{"model":"gpt-4o""#.to_vec(), "invalid_body"),
        (br#"{'model':'gpt-4o'}"#.to_vec(), "invalid_body"),
        (br#"{model:"gpt-4o"}"#.to_vec(), "invalid_body"),
        (br#"{"model":"gpt-4o" /* c */}"#.to_vec(), "invalid_body"),
        (br#"{"model":"gpt-4o","x":NaN}"#.to_vec(), "invalid_body"),
        (br#"{"model":"gpt-4o","x":01}"#.to_vec(), "invalid_body"),
        (br#"{"model":"gpt\ud800-4o"}"#.to_vec(), "invalid_body"),
        (br#"{"model":"gpt\x2d4o"}"#.to_vec(), "invalid_body"),
        (b"{\"model\":\"gpt-4o\tx\"}".to_vec(), "invalid_body"),
        (
            b"\xef\xbb\xbf{\"model\":\"gpt-4o\"}".to_vec(),
            "invalid_body",
        ),
        (b"\x0c{\"model\":\"gpt-4o\"}".to_vec(), "invalid_body"),
        (
            b"{\"model\":\"gpt-4o\",\"x\":\"\xff\"}".to_vec(),
            "invalid_body",
        ),
        (b"{\"model\":\"gpt-4o\"}\x00".to_vec(), "invalid_body"),
        (deep.into_bytes(), "invalid_body"),
    ];
    for (body, reason) in cases {
        let what = String::from_utf8_lossy(&body).into_owned();
        let (got, rec) = send_ok(alice_post(
            CHAT,
            &[("content-type", "application/json")],
            body,
        ))
        .await;
        assert_eq!(rec.count(), 0, "{what} was forwarded");
        assert_eq!(
            (got.status, got.reason()),
            (400, reason.to_owned()),
            "{what}"
        );
        got.assert_refused(400, reason);
    }
}

#[tokio::test]
async fn valid_bodies_with_escapes_and_nested_models_are_forwarded_unchanged() {
    let bodies = [
        r#"{"\u006dodel":"gpt-4o"}"#,
        r#"{"mod\u0065l":"gpt\u002d4o"}"#,
        r#"{"model":"openai\/gpt-4o"}"#,
        r#"{"model":"\u0067pt-4o","metadata":{"model":"gpt-4o-mini","Model":1,"MODEL":[]}}"#,
        r#"{"models":["o1"],"model_name":"o1","model":"gpt-4o","modelo":"x"}"#,
        r#"{"messages":[{"model":"o1"}],"model":"gpt-4o"}"#,
        "\r\n\t {\r\n\"model\"\t:\n\"gpt-4o\" ,\"n\":-0.0e-0,\"big\":12345678901234567890123e99999}\n\n",
        r#"{"model":"gpt-4o","s":"\ud83d\ude00 \" \\ \/ \b\f\n\r\t"}"#,
    ];
    for body in bodies {
        let (got, rec) = send_ok(alice_post(
            CHAT,
            &[("content-type", "application/json")],
            body,
        ))
        .await;
        assert_eq!(got.status, 200, "{body}: {}", got.text());
        assert_eq!(rec.only().body, body.as_bytes(), "{body}");
    }
}

#[tokio::test]
async fn a_model_that_is_not_a_top_level_member_does_not_count() {
    // Valid JSON, but no top-level "model": the request has no model, and
    // cred-openai (models restricted) cannot serve it.
    for body in [
        r#"[{"model":"gpt-4o"}]"#,
        r#""gpt-4o""#,
        r#"{"messages":[{"model":"gpt-4o"}]}"#,
        r#"{"request":{"model":"gpt-4o"}}"#,
        "null",
        "{}",
        "",
    ] {
        let req = alice_post(CHAT, &[("content-type", "application/json")], body);
        let got = refused(req, 403, "no_eligible_credential").await;
        assert!(
            got.message().contains("without a model"),
            "{body}: {}",
            got.message()
        );
    }
}

#[tokio::test]
async fn a_non_json_content_type_cannot_smuggle_a_model() {
    // Whether the layer reads a body declared as binary or form data for its
    // model or treats the request as having none, a refused model, duplicate
    // models or a case variant must never reach a model-restricted credential
    // (upstreams often parse JSON whatever the Content-Type says).
    let bodies = [
        r#"{"model":"gpt-4o-mini"}"#,
        r#"{"model":"gpt-4o","model":"gpt-4o-mini"}"#,
        r#"{"model":"gpt-4o-mini","model":"gpt-4o"}"#,
        r#"{"Model":"gpt-4o-mini","model":"gpt-4o"}"#,
        r#"{"model":"gpt-4o"} {"model":"gpt-4o-mini"}"#,
    ];
    for ct in [
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "image/png",
        "text/plain",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
    ] {
        for body in bodies {
            let (got, rec) = send_ok(alice_post(CHAT, &[("content-type", ct)], body)).await;
            assert_eq!(rec.count(), 0, "{ct} {body} was forwarded");
            let status = got.status;
            assert!(status == 400 || status == 403, "{ct} {body}: {status}");
            got.assert_refused(status, &got.reason());
        }
    }
    // Claiming JSON in other spellings still gets the model read.
    for ct in [
        "text/plain",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
    ] {
        let (got, rec) = send_ok(alice_post(CHAT, &[("content-type", ct)], GPT4O)).await;
        assert_eq!((got.status, rec.count()), (200, 1), "{ct}");
    }
}

#[tokio::test]
async fn path_and_body_models_must_agree() {
    let uri = "/google-ai-studio/v1beta/models/gemini-1.5-pro:generateContent";
    let headers = [
        ("x-goog-api-key", ALICE),
        ("content-type", "application/json"),
    ];
    let req = request(
        "POST",
        uri,
        &headers,
        r#"{"model":"gemini-ultra","contents":[]}"#,
    );
    refused(req, 400, "ambiguous_model").await;
    let req = request(
        "POST",
        uri,
        &headers,
        r#"{"model":"gemini-1.5-pro","contents":[]}"#,
    );
    let (got, rec) = send_ok(req).await;
    assert_eq!((got.status, rec.count()), (200, 1));
}

// ---- routes and methods -----------------------------------------------------

#[tokio::test]
async fn path_tricks_do_not_reach_another_provider() {
    let cases = [
        ("/openai/../anthropic/v1/messages", 400, "invalid_request"),
        (
            "/openai/v1/../../anthropic/v1/messages",
            400,
            "invalid_request",
        ),
        (
            "/openai/v1/%2e%2e/%2e%2e/anthropic/v1/messages",
            400,
            "invalid_request",
        ),
        ("/openai/v1/.%2E/x", 400, "invalid_request"),
        (
            "/openai/v1%2F..%2F..%2Fanthropic/v1/messages",
            400,
            "invalid_request",
        ),
        ("/openai//v1/chat/completions", 400, "invalid_request"),
        ("/openai/./v1/chat/completions", 400, "invalid_request"),
        ("//anthropic/v1/messages", 404, "not_found"),
        ("/openai", 404, "not_found"),
        ("/", 404, "not_found"),
        ("/OpenAI/v1/chat/completions", 404, "unknown_provider"),
        ("/%6fpenai/v1/chat/completions", 404, "unknown_provider"),
        (
            "/openai%2F..%2Fanthropic/v1/messages",
            404,
            "unknown_provider",
        ),
        ("/openai%2Fv1/chat/completions", 404, "unknown_provider"),
        ("/openai;x/v1/chat/completions", 404, "unknown_provider"),
    ];
    for (uri, status, reason) in cases {
        let req = request(
            "POST",
            uri,
            &[("x-api-key", ALICE), ("content-type", "application/json")],
            GPT4O,
        );
        refused(req, status, reason).await;
    }
}

#[tokio::test]
async fn an_unknown_provider_is_404_and_echoes_no_key() {
    // `refused` also checks that neither the key nor a secret is in the answer.
    let got = refused(
        alice_post("/nope/v1/x", &[], GPT4O),
        404,
        "unknown_provider",
    )
    .await;
    assert!(!got.message().contains("nope"), "{}", got.message());
    // A key pasted into the path is not echoed either.
    let got = refused(
        alice_post(&format!("/{ALICE}/v1/x"), &[], GPT4O),
        404,
        "unknown_provider",
    )
    .await;
    assert!(!got.message().contains(ALICE), "{}", got.message());
}

#[tokio::test]
async fn connect_and_upgrades_are_refused() {
    let req = request("CONNECT", "upstream.test:443", &[("x-api-key", ALICE)], "");
    let (got, rec) = send_ok(req).await;
    assert_eq!(rec.count(), 0);
    assert!((400..500).contains(&got.status), "{}", got.status);

    let req = request(
        "CONNECT",
        "/openai/v1/chat/completions",
        &[("x-api-key", ALICE)],
        "",
    );
    refused(req, 405, "method_not_allowed").await;

    for headers in [
        vec![("connection", "Upgrade"), ("upgrade", "websocket")],
        vec![("upgrade", "h2c")],
        vec![("connection", "keep-alive, upgrade")],
    ] {
        let mut headers = headers;
        headers.push(("x-api-key", ALICE));
        let req = request("GET", "/openai/v1/realtime", &headers, "");
        refused(req, 400, "invalid_request").await;
    }
}
