//! SPEC §4 model and body rules, and the three allowlists, through the binary.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

/// ws-1 has one openai credential restricted to gpt-4o, one google credential
/// restricted to gemini-1.5-pro, one bedrock credential restricted to a Claude
/// model id.
async fn restricted() -> (Mock, Proxy) {
    let mock = Mock::ok().await;
    let cfg = config(
        &mock,
        &[
            cred(
                "c-4o",
                "openai",
                "sk-a-000000000001",
                r#"allowed_models = ["openai/gpt-4o"]"#,
            ),
            cred(
                "c-gem",
                "google-ai-studio",
                "AIza-000000000002",
                r#"allowed_models = ["google-ai-studio/gemini-1.5-pro"]"#,
            ),
            cred(
                "c-br",
                "amazon-bedrock",
                "br-000000000003",
                r#"allowed_models = ["anthropic.claude-3-sonnet-20240229-v1:0"]"#,
            ),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    (mock, proxy)
}

async fn post_raw_body(proxy: &Proxy, path: &str, body: &[u8]) -> Resp {
    send(
        req("POST", &proxy.url(path), Some(GW))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn body_rules_table() {
    let (mock, proxy) = restricted().await;
    let path = "/openai/v1/chat/completions";
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"model":"gpt-4o"}"#, 200, ""),
        (r#"{"model":"gpt\u002d4o"}"#, 200, ""),
        (r#"{"\u006dodel":"gpt-4o"}"#, 200, ""),
        (r#"{"x":{"model":"o1"},"model":"gpt-4o"}"#, 200, ""),
        (r#"{"model":"gpt-4o-mini"}"#, 403, "no_eligible_credential"),
        (r#"{"model":"GPT-4o"}"#, 403, "no_eligible_credential"),
        (r#"{"model":" gpt-4o"}"#, 403, "no_eligible_credential"),
        (r#"{"model":"gpt-4o","model":"o1"}"#, 400, "ambiguous_model"),
        (r#"{"model":"o1","model":"gpt-4o"}"#, 400, "ambiguous_model"),
        (
            r#"{"model":"gpt-4o","\u006dodel":"o1"}"#,
            400,
            "ambiguous_model",
        ),
        (r#"{"model":"gpt-4o","Model":"o1"}"#, 400, "ambiguous_model"),
        (r#"{"MODEL":"o1"}"#, 400, "ambiguous_model"),
        (r#"{"model":["gpt-4o"]}"#, 400, "invalid_body"),
        (r#"{"model":null}"#, 400, "invalid_body"),
        (r#"{"model":4}"#, 400, "invalid_body"),
        (r#"{"model":"gpt-4o",}"#, 400, "invalid_body"),
        (r#"{"model":"gpt-4o"} {"model":"o1"}"#, 400, "invalid_body"),
        (r#"{"model":"gpt-4o"}x"#, 400, "invalid_body"),
        ("{'model':'gpt-4o'}", 400, "invalid_body"),
        (r#"{"model":"gpt-4o" /* c */}"#, 400, "invalid_body"),
        ("\u{feff}{\"model\":\"gpt-4o\"}", 400, "invalid_body"),
        (r#"{"model":"gpt-4o","n":NaN}"#, 400, "invalid_body"),
        (r#"{"model":"gpt-4o","s":"\ud800"}"#, 400, "invalid_body"),
        (r#"{"model":"gpt-4o""#, 400, "invalid_body"),
        // Valid JSON without a model: only unrestricted credentials; here none.
        (r#"{"messages":[]}"#, 403, "no_eligible_credential"),
        ("[1,2]", 403, "no_eligible_credential"),
    ];
    for (body, status, reason) in cases {
        let r = post_raw_body(&proxy, path, body.as_bytes()).await;
        assert_eq!(r.status, *status, "{body}: {}", r.text());
        if !reason.is_empty() {
            assert_eq!(r.reason(), *reason, "{body}");
        }
    }
    let forwarded = cases.iter().filter(|c| c.1 == 200).count();
    assert_eq!(
        mock.count(),
        forwarded,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn a_json_body_is_read_whatever_its_declared_type() {
    let (mock, proxy) = restricted().await;
    let with_type = |ct: &'static str, body: &'static str| {
        send(
            req("POST", &proxy.url("/openai/v1/chat/completions"), Some(GW))
                .header("content-type", ct)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
    };
    // curl -d sends application/x-www-form-urlencoded; upstreams often parse
    // JSON anyway, so the model is read and checked.
    let form = "application/x-www-form-urlencoded";
    assert_eq!(with_type(form, r#"{"model":"gpt-4o"}"#).await.status, 200);
    assert_eq!(with_type(form, r#"{"model":"o1"}"#).await.status, 403);
    let dup = with_type(form, r#"{"model":"gpt-4o","model":"o1"}"#).await;
    assert_eq!((dup.status, dup.reason()), (400, "ambiguous_model".into()));
    let dup = with_type(
        "multipart/form-data; boundary=x",
        r#"{"model":"gpt-4o","MODEL":"o1"}"#,
    )
    .await;
    assert_eq!((dup.status, dup.reason()), (400, "ambiguous_model".into()));
    // Not JSON under a non-JSON type: no model, so the restricted credential refuses.
    let r = with_type(form, "model=gpt-4o").await;
    assert_eq!(
        (r.status, r.reason()),
        (403, "no_eligible_credential".into())
    );
    // Not JSON under a JSON type (or none): invalid.
    let r = with_type("application/json", "model=gpt-4o").await;
    assert_eq!((r.status, r.reason()), (400, "invalid_body".into()));
    assert_eq!(mock.count(), 1);
}

#[tokio::test]
async fn invalid_utf8_body_is_refused() {
    let (mock, proxy) = restricted().await;
    let r = post_raw_body(
        &proxy,
        "/openai/v1/chat/completions",
        b"{\"model\":\"gpt-4o\",\"x\":\"\xff\"}",
    )
    .await;
    assert_eq!((r.status, r.reason()), (400, "invalid_body".into()));
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn model_query_parameter_is_refused() {
    let (mock, proxy) = restricted().await;
    for q in ["model=o1", "Model=o1", "m%6Fdel=o1"] {
        let r = post_raw_body(
            &proxy,
            &format!("/openai/v1/chat/completions?{q}"),
            br#"{"model":"gpt-4o"}"#,
        )
        .await;
        assert_eq!(
            (r.status, r.reason()),
            (400, "ambiguous_model".into()),
            "{q}"
        );
    }
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn path_models_are_decoded_checked_and_must_agree_with_the_body() {
    let (mock, proxy) = restricted().await;
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "/google-ai-studio/v1beta/models/gemini-1.5-pro:generateContent",
            "{}",
            200,
            "",
        ),
        (
            "/google-ai-studio/v1beta/models/gemini%2D1.5-pro:streamGenerateContent?alt=sse",
            "{}",
            200,
            "",
        ),
        (
            "/google-ai-studio/v1beta/models/gemini-1.5-flash:generateContent",
            "{}",
            403,
            "no_eligible_credential",
        ),
        (
            "/google-ai-studio/v1beta/models/gemini-1.5-pro:generateContent",
            r#"{"model":"gemini-1.5-pro"}"#,
            200,
            "",
        ),
        (
            "/google-ai-studio/v1beta/models/gemini-1.5-pro:generateContent",
            r#"{"model":"gemini-1.5-flash"}"#,
            400,
            "ambiguous_model",
        ),
        (
            "/amazon-bedrock/model/anthropic.claude-3-sonnet-20240229-v1%3A0/converse",
            "{}",
            200,
            "",
        ),
        (
            "/amazon-bedrock/model/anthropic.claude-3-sonnet-20240229-v1:0/invoke",
            "{}",
            200,
            "",
        ),
        (
            "/amazon-bedrock/model/anthropic.claude-3-opus-20240229-v1%3A0/converse",
            "{}",
            403,
            "no_eligible_credential",
        ),
    ];
    for (path, body, status, reason) in cases {
        let r = post_raw_body(&proxy, path, body.as_bytes()).await;
        assert_eq!(r.status, *status, "{path} {body}: {}", r.text());
        if !reason.is_empty() {
            assert_eq!(r.reason(), *reason, "{path}");
        }
    }
    let got = mock.requests();
    assert_eq!(got.len(), cases.iter().filter(|c| c.2 == 200).count());
    // Forwarded as sent: still encoded, under the provider's base path.
    assert_eq!(
        got[1].uri,
        "/v1beta/models/gemini%2D1.5-pro:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        got[3].uri,
        "/bedrock/model/anthropic.claude-3-sonnet-20240229-v1%3A0/converse"
    );
}

#[tokio::test]
async fn a_request_without_a_model_only_uses_unrestricted_credentials() {
    let mock = Mock::ok().await;
    let cfg = config(
        &mock,
        &[
            cred(
                "c-restricted",
                "openai",
                "sk-r-000000000001",
                r#"allowed_models = ["openai/gpt-4o"]
sort_order = 0"#,
            ),
            cred("c-open", "openai", "sk-o-000000000002", "sort_order = 1"),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = send(
        req("GET", &proxy.url("/openai/v1/models"), Some(GW))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-byok-credential-id"), Some("c-open"));
    assert_eq!(
        mock.requests()[0].header("authorization"),
        Some("Bearer sk-o-000000000002")
    );
    // With a model, the restricted one comes first.
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.header("x-byok-credential-id"), Some("c-restricted"));
    // A multipart body has no model the proxy reads: unrestricted only.
    let r = send(
        req(
            "POST",
            &proxy.url("/openai/v1/audio/transcriptions"),
            Some(GW),
        )
        .header("content-type", "multipart/form-data; boundary=x")
        .body(Full::new(Bytes::from_static(
            b"--x\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\ngpt-4o\r\n--x--\r\n",
        )))
        .unwrap(),
    )
    .await;
    assert_eq!(r.header("x-byok-credential-id"), Some("c-open"));
}

#[tokio::test]
async fn without_an_unrestricted_credential_a_modelless_request_is_refused() {
    let (mock, proxy) = restricted().await;
    let r = send(
        req("GET", &proxy.url("/openai/v1/models"), Some(GW))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, r.reason()),
        (403, "no_eligible_credential".into())
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("allowed_models"), "{msg}");
    assert!(msg.contains("without a model"), "{msg}");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn encoded_bodies_are_decoded_and_checked_or_refused() {
    let (mock, proxy) = restricted().await;
    let path = "/openai/v1/chat/completions";
    let send_enc = |enc: &'static str, body: Vec<u8>| {
        send(
            req("POST", &proxy.url(path), Some(GW))
                .header("content-type", "application/json")
                .header("content-encoding", enc)
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
    };
    let bad = send_enc("gzip", gzip(br#"{"model":"o1"}"#)).await;
    assert_eq!(
        (bad.status, bad.reason()),
        (403, "no_eligible_credential".into())
    );
    let dup = send_enc("gzip", gzip(br#"{"model":"gpt-4o","model":"o1"}"#)).await;
    assert_eq!((dup.status, dup.reason()), (400, "ambiguous_model".into()));
    let br = send_enc("br", b"\x0b\x02\x80{}\x03".to_vec()).await;
    assert_eq!(
        (br.status, br.reason()),
        (415, "unsupported_encoding".into())
    );
    let garbage = send_enc("gzip", b"not gzip at all".to_vec()).await;
    assert_eq!(
        (garbage.status, garbage.reason()),
        (400, "invalid_body".into())
    );
    assert_eq!(mock.count(), 0);

    let plain = br#"{"model":"gpt-4o"}"#;
    let ok = send_enc("gzip", gzip(plain)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let got = &mock.requests()[0];
    assert_eq!(got.body, &plain[..]);
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(
        got.header("content-length"),
        Some(&*plain.len().to_string())
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_chunked_or_decoded() {
    let mock = Mock::ok().await;
    let cfg = config_with_server(
        &mock,
        "max_body_bytes = 1000",
        &cred("c1", "openai", "sk-000000000001", ""),
    );
    let proxy = Proxy::start(&cfg).await;
    let big = format!(r#"{{"model":"gpt-4o","pad":"{}"}}"#, "x".repeat(2000));
    let r = post(&proxy, "/openai/v1/chat/completions", GW, &big).await;
    assert_eq!((r.status, r.reason()), (413, "body_too_large".into()));
    // Chunked, no Content-Length.
    let raw_req = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let out = raw(proxy.addr, raw_req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // Small compressed, large decoded.
    let r = send(
        req("POST", &proxy.url("/openai/v1/chat/completions"), Some(GW))
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from(gzip(big.as_bytes()))))
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.reason()), (413, "body_too_large".into()));
    assert_eq!(mock.count(), 0);
    // Still serving.
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
}

#[tokio::test]
async fn allowlists_admit_only_their_keys_users_and_models() {
    let mock = Mock::ok().await;
    let cfg = config(
        &mock,
        &[
            cred(
                "c-key",
                "openai",
                "sk-key-000000000001",
                &format!(r#"allowed_api_key_hashes = ["{}"]"#, hash(GW2)),
            ),
            cred(
                "c-user",
                "anthropic",
                "sk-user-00000000002",
                r#"allowed_user_ids = ["user-2"]"#,
            ),
            cred(
                "c-wild",
                "openrouter",
                "sk-wild-00000000003",
                r#"allowed_models = ["openrouter/anthropic/*"]"#,
            ),
            cred(
                "c-empty",
                "google-ai-studio",
                "AIza-empty-0000004",
                "allowed_user_ids = []",
            ),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    // Key-hash allowlist.
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allowed_api_key_hashes"));
    assert_eq!(chat(&proxy, GW2, "gpt-4o").await.status, 200);
    // User allowlist (GW is user-1, GW2 user-2).
    let body = r#"{"model":"claude-3-5-sonnet"}"#;
    let r = send(
        req("POST", &proxy.url("/anthropic/v1/messages"), None)
            .header("x-api-key", GW)
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allowed_user_ids"));
    let r = send(
        req("POST", &proxy.url("/anthropic/v1/messages"), None)
            .header("x-api-key", GW2)
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Wildcard: every anthropic/ model through openrouter, and nothing else.
    assert_eq!(
        post(
            &proxy,
            "/openrouter/v1/chat/completions",
            GW,
            r#"{"model":"anthropic/claude-3.5-sonnet"}"#
        )
        .await
        .status,
        200
    );
    assert_eq!(
        post(
            &proxy,
            "/openrouter/v1/chat/completions",
            GW,
            r#"{"model":"anthropicz/x"}"#
        )
        .await
        .status,
        403
    );
    assert_eq!(
        post(
            &proxy,
            "/openrouter/v1/chat/completions",
            GW,
            r#"{"model":"openai/gpt-4o"}"#
        )
        .await
        .status,
        403
    );
    // An empty list admits nothing.
    let r = post(
        &proxy,
        "/google-ai-studio/v1beta/models/gemini-pro:generateContent",
        GW,
        "{}",
    )
    .await;
    assert_eq!(r.status, 403);
    // Another workspace never sees ws-1's credentials.
    let r = chat(&proxy, GW_OTHER_WS, "gpt-4o").await;
    assert_eq!((r.status, r.reason()), (403, "no_credential".into()));
    assert_eq!(mock.count(), 3);
}

#[tokio::test]
async fn azure_deployments_are_path_models() {
    let mock = Mock::ok().await;
    let extra = format!(
        "base_url = \"{}/res\"\nallowed_models = [\"azure/gpt-4o\"]\nheaders = {{ \"OpenAI-Organization\" = \"org-configured\" }}",
        mock.url()
    );
    let proxy = Proxy::start(&config(
        &mock,
        &cred("c-az", "azure", "az-secret-000000001", &extra),
    ))
    .await;
    let path = "/azure/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01";
    let r = send(
        req("POST", &proxy.url(path), None)
            .header("api-key", GW)
            .header("openai-organization", "org-client")
            .body(Full::new(Bytes::from_static(br#"{"messages":[]}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = &mock.requests()[0];
    assert_eq!(
        got.uri,
        "/res/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"
    );
    assert_eq!(got.header("api-key"), Some("az-secret-000000001"));
    // The client's organization is stripped; the credential's is set.
    assert_eq!(got.header("openai-organization"), Some("org-configured"));
    // Another deployment is another model.
    let r = post_raw_body(
        &proxy,
        "/azure/openai/deployments/gpt-35/chat/completions",
        b"{}",
    )
    .await;
    assert_eq!(
        (r.status, r.reason()),
        (403, "no_eligible_credential".into())
    );
    // The SDK also sends the deployment as the body's model; they must agree.
    let r = post_raw_body(
        &proxy,
        "/azure/openai/deployments/gpt-4o/chat/completions",
        br#"{"model":"gpt-35"}"#,
    )
    .await;
    assert_eq!((r.status, r.reason()), (400, "ambiguous_model".into()));
    assert_eq!(mock.count(), 1);
}

/// Issue 10: a model-bearing path keyword in another case is refused, so an
/// upstream that routes without regard to case cannot serve a deployment the
/// proxy never checked.
#[tokio::test]
async fn path_keywords_in_another_case_are_refused() {
    let mock = Mock::ok().await;
    let extra = format!(
        "base_url = \"{}/res\"\nallowed_models = [\"azure/gpt-4o\"]",
        mock.url()
    );
    let proxy = Proxy::start(&config(
        &mock,
        &cred("c-az", "azure", "az-secret-000000002", &extra),
    ))
    .await;
    for path in [
        "/azure/openai/DEPLOYMENTS/gpt-4o-evil/chat/completions",
        "/azure/openai/Deployments/gpt-4o-evil/chat/completions",
        "/azure/openai/deployment%53/gpt-4o-evil/chat/completions",
    ] {
        let r = post_raw_body(&proxy, path, br#"{"model":"gpt-4o"}"#).await;
        assert_eq!(
            (r.status, r.reason()),
            (400, "invalid_request".into()),
            "{path}: {}",
            r.text()
        );
    }
    let r = post_raw_body(
        &proxy,
        "/azure/openai/deployments/gpt-4o/chat/completions",
        br#"{"model":"gpt-4o"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "the exact keyword still works");
    assert_eq!(mock.count(), 1, "no refused request reached the upstream");
}

/// Issue 10: OpenRouter serves whichever model it falls back to, so every
/// model a body names (`models`, `fallbacks`) must be admitted, and the
/// router's own choice (`openrouter/auto`, presets) only by an entry that
/// names it.
#[tokio::test]
async fn every_model_a_body_names_must_be_admitted() {
    let mock = Mock::ok().await;
    let extra = r#"allowed_models = ["openai/gpt-4o-mini", "openai/*"]"#;
    let proxy = Proxy::start(&config(
        &mock,
        &cred("c-or", "openrouter", "sk-or-secret-0000000001", extra),
    ))
    .await;
    let chat_path = "/openrouter/v1/chat/completions";
    // (path, body, status, reason)
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            chat_path,
            r#"{"model":"openai/gpt-4o-mini","models":["openai/gpt-4o-mini","anthropic/claude-opus-4"],"route":"fallback"}"#,
            403,
            "no_eligible_credential",
        ),
        (
            "/openrouter/v1/messages",
            r#"{"model":"openai/gpt-4o-mini","fallbacks":["anthropic/claude-opus-4"]}"#,
            403,
            "no_eligible_credential",
        ),
        (
            chat_path,
            r#"{"model":"openai/gpt-4o-mini","\u006dodels":["anthropic/claude-opus-4"]}"#,
            403,
            "no_eligible_credential",
        ),
        (
            chat_path,
            r#"{"model":"openai/gpt-4o-mini","models":"anthropic/claude-opus-4"}"#,
            400,
            "invalid_body",
        ),
        (
            chat_path,
            r#"{"model":"openai/gpt-4o-mini","Models":["anthropic/claude-opus-4"]}"#,
            400,
            "ambiguous_model",
        ),
        (
            chat_path,
            r#"{"model":"openai/gpt-4o-mini","models":["a"],"models":["b"]}"#,
            400,
            "ambiguous_model",
        ),
    ];
    for (path, body, status, reason) in cases {
        let r = post_raw_body(&proxy, path, body.as_bytes()).await;
        assert_eq!(
            (r.status, r.reason()),
            (*status, reason.to_string()),
            "{body}: {}",
            r.text()
        );
    }
    assert_eq!(mock.count(), 0, "no refused request reached the upstream");
    // Every named model admitted: forwarded, bytes unchanged.
    let body = r#"{"model":"openai/gpt-4o-mini","models":["openai/gpt-4o-mini"]}"#;
    let r = post_raw_body(&proxy, chat_path, body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.requests()[0].body, body.as_bytes());

    // A wildcard admits every model of the provider, but not the router's
    // own choice: only an entry that names it does.
    let mock = Mock::ok().await;
    let proxy = Proxy::start(&config(
        &mock,
        &cred(
            "c-or",
            "openrouter",
            "sk-or-secret-0000000002",
            r#"allowed_models = ["openrouter/*", "@preset/named"]"#,
        ),
    ))
    .await;
    for (body, status) in [
        (r#"{"model":"openrouter/auto"}"#, 403),
        (r#"{"model":"@preset/cheap"}"#, 403),
        (
            r#"{"model":"anthropic/claude-opus-4","models":["openrouter/auto"]}"#,
            403,
        ),
        (r#"{"model":"@preset/named"}"#, 200),
        (
            r#"{"model":"anthropic/claude-opus-4","models":["openai/gpt-4o"]}"#,
            200,
        ),
    ] {
        let r = post_raw_body(&proxy, chat_path, body.as_bytes()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
    }
    assert_eq!(mock.count(), 2);
}
