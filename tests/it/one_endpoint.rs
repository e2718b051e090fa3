//! SPEC §11: OpenRouter's one endpoint on the proxy listener — the model's
//! slug dispatched to its endpoints (the catalog's, or the one the slug
//! names), failover across all of them, the body rewritten in `model` alone
//! (and OpenRouter's members removed), the answer's `model` and `provider`,
//! the listings, and every refusal in the route's SDK shape with nothing
//! upstream.

use crate::support::metrics::{family, scrape};
use crate::support::*;

/// The mock answers by path, with the status the credential's secret names
/// (`…-<status>-…`): Anthropic's Messages JSON (also for Bedrock's invoke),
/// OpenAI's chat JSON or stream, OpenAI's embeddings.
fn upstream(r: &Recorded) -> Reply {
    let secret = r
        .header("x-api-key")
        .or_else(|| {
            r.header("authorization")
                .map(|a| a.trim_start_matches("Bearer "))
        })
        .unwrap_or("");
    let status: u16 = secret
        .split('-')
        .find_map(|p| p.parse().ok())
        .unwrap_or(200);
    if status != 200 {
        return Reply::json(status, r#"{"error":{"message":"upstream says no"}}"#);
    }
    let path = r.uri.split('?').next().unwrap_or("");
    let body = String::from_utf8_lossy(&r.body);
    if path.ends_with("/v1/messages") || path.contains("/invoke") {
        return Reply::json(
            200,
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"upstream-model-id","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":3}}"#,
        );
    }
    if path.ends_with("/embeddings") {
        return Reply::json(
            200,
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],"model":"upstream-model-id","usage":{"prompt_tokens":2,"total_tokens":2}}"#,
        );
    }
    if body.contains(r#""stream":true"#) {
        return Reply::Full(
            200,
            vec![("content-type", "text/event-stream".into())],
            STREAM.to_owned(),
        );
    }
    Reply::json(
        200,
        r#"{"id":"c1","object":"chat.completion","model":"upstream-model-id","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
    )
}

const STREAM: &str = "data: {\"model\":\"upstream-model-id\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";

const CATALOG: &str = r#"
[models."anthropic/claude-sonnet-4"]
name = "Claude Sonnet 4"
context_length = 200000
endpoints = [
  { provider = "anthropic", model = "claude-sonnet-4-20250514" },
  { provider = "amazon-bedrock", model = "anthropic.claude-sonnet-4-20250514-v1:0" },
]

[prices."anthropic/claude-sonnet-4"]
input = 3.0
output = 15.0
"#;

/// A proxy with the catalog, an admin listener, and `creds`.
async fn proxy(mock: &Mock, creds: &[String]) -> Proxy {
    let rest = [
        admin::admin_section("127.0.0.1:0", &[admin::MGMT]),
        CATALOG.to_owned(),
        creds.concat(),
    ]
    .concat();
    Proxy::start(&config(mock, &rest)).await
}

use crate::support::admin;

/// POSTs `body` to the Messages route with the key in `x-api-key`, as the
/// Anthropic SDK sends it.
async fn messages(proxy: &Proxy, key: &str, body: &str) -> Resp {
    send(
        http::Request::builder()
            .method("POST")
            .uri(proxy.url("/api/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "context-1m-2025-08-07, tools-x")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap(),
    )
    .await
}

const CLAUDE: &str = r#"{"model":"anthropic/claude-sonnet-4","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"provider":{"sort":"price"},"models":["anthropic/claude-sonnet-4"]}"#;

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn one_claude_model_fails_over_from_anthropic_to_bedrock_with_only_model_changed() {
    let mock = Mock::start(upstream).await;
    let p = proxy(
        &mock,
        &[
            cred("anth", "anthropic", "sk-ant-529-x", ""),
            cred("bed", "amazon-bedrock", "ABSK-bedrock-200-x", ""),
        ],
    )
    .await;
    let r = messages(&p, GW, CLAUDE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-byok-provider"), Some("amazon-bedrock"));
    assert_eq!(
        r.header("x-byok-model"),
        Some("anthropic.claude-sonnet-4-20250514-v1:0")
    );
    assert_eq!(r.header("x-byok-credential-id"), Some("bed"));
    assert_eq!(r.header("x-byok-attempts"), Some("2"));
    assert_eq!(
        r.json()["model"],
        "anthropic/claude-sonnet-4",
        "the slug asked for"
    );
    assert!(r.json().get("provider").is_none(), "chat completions only");

    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri, "/v1/messages");
    assert_eq!(seen[0].header("x-api-key"), Some("sk-ant-529-x"));
    assert_eq!(
        String::from_utf8_lossy(&seen[0].body),
        r#"{"model":"claude-sonnet-4-20250514","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#
    );
    assert_eq!(
        seen[0].header("anthropic-beta"),
        Some("context-1m-2025-08-07, tools-x"),
        "Anthropic's own API reads the header"
    );
    assert_eq!(
        seen[1].uri,
        "/bedrock/model/anthropic.claude-sonnet-4-20250514-v1%3A0/invoke"
    );
    assert_eq!(
        seen[1].header("authorization"),
        Some("Bearer ABSK-bedrock-200-x")
    );
    let bedrock: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(
        bedrock,
        serde_json::json!({
            "anthropic_version": "bedrock-2023-05-31",
            "anthropic_beta": ["context-1m-2025-08-07", "tools-x"],
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        })
    );
    assert_eq!(
        seen[1].header("anthropic-beta"),
        None,
        "in the body instead"
    );
    for r in &seen {
        assert!(
            !r.everything().contains(GW),
            "the gateway key went upstream"
        );
    }
    // The access log: the endpoint that served, the slug, both attempts.
    let line = p.wait_log("byok_proxy::access").await;
    for part in [
        "provider=\"amazon-bedrock\"",
        "model=\"anthropic/claude-sonnet-4\"",
        "attempts=anth:529,bed:200",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }

    // Usage counts under the slug, at its price, with the provider that served.
    let (_, samples) = scrape(p.admin_addr().await).await;
    let tokens = family(&samples, "byok_tokens_total");
    assert!(
        tokens
            .keys()
            .any(|l| l.contains("model=anthropic/claude-sonnet-4")
                && l.contains("provider=amazon-bedrock")),
        "{tokens:?}"
    );
}

#[tokio::test]
async fn openai_format_routes_answer_with_the_slug_and_the_provider() {
    let mock = Mock::start(upstream).await;
    let p = proxy(&mock, &[cred("oai", "openai", "sk-openai-200-x", "")]).await;
    let body = r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}],"transforms":[],"route":"fallback"}"#;
    let r = post(&p, "/api/v1/chat/completions", GW, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "openai/gpt-4o");
    assert_eq!(r.json()["provider"], "OpenAI");
    assert_eq!(
        r.json()["usage"]["prompt_tokens"],
        5,
        "every other member as sent"
    );
    assert_eq!(r.header("x-byok-provider"), Some("openai"));
    let seen = mock.requests();
    assert_eq!(seen[0].uri, "/v1/chat/completions");
    assert_eq!(
        String::from_utf8_lossy(&seen[0].body),
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#
    );

    // A bare model is OpenAI's here; a stream is relayed as it came.
    let r = post(
        &p,
        "/api/v1/chat/completions",
        GW,
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), STREAM);
    assert_eq!(r.header("x-byok-model"), Some("gpt-4o-mini"));

    let r = post(
        &p,
        "/api/v1/embeddings",
        GW,
        r#"{"model":"openai/text-embedding-3-small","input":"hi"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "openai/text-embedding-3-small");
    assert!(r.json().get("provider").is_none());
    assert_eq!(mock.requests()[2].uri, "/v1/embeddings");
}

#[tokio::test]
async fn allowlists_see_the_slug_and_the_providers_id() {
    let mock = Mock::start(upstream).await;
    let p = proxy(
        &mock,
        &[
            cred(
                "anth-opus",
                "anthropic",
                "sk-ant-200-opus",
                r#"allowed_models = ["anthropic/claude-opus-4"]"#,
            ),
            cred(
                "bed-slug",
                "amazon-bedrock",
                "ABSK-bedrock-200-slug",
                r#"allowed_models = ["anthropic/claude-sonnet-4"]"#,
            ),
        ],
    )
    .await;
    let r = messages(&p, GW, CLAUDE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-byok-credential-id"), Some("bed-slug"));
    assert_eq!(r.header("x-byok-attempts"), Some("1"));
    assert_eq!(mock.count(), 1);

    // A model none admits: 403 in Anthropic's shape, nothing upstream.
    let r = messages(
        &p,
        GW,
        r#"{"model":"anthropic/claude-opus-5","max_tokens":1,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.reason(), "no_eligible_credential");
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(mock.count(), 1);

    // The models list: each model admitted or skipped on its own.
    let r = messages(
        &p,
        GW,
        r#"{"model":"anthropic/claude-opus-5","models":["anthropic/claude-opus-4"],"max_tokens":1,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-byok-credential-id"), Some("anth-opus"));
    assert_eq!(r.json()["model"], "anthropic/claude-opus-4");
    assert_eq!(mock.requests()[1].uri, "/v1/messages");
    assert_eq!(
        String::from_utf8_lossy(&mock.requests()[1].body),
        r#"{"model":"claude-opus-4","max_tokens":1,"messages":[]}"#
    );
}

#[tokio::test]
async fn provider_preferences_order_and_restrict_the_endpoints() {
    let mock = Mock::start(upstream).await;
    let p = proxy(
        &mock,
        &[
            cred("anth", "anthropic", "sk-ant-200-x", ""),
            cred("bed", "amazon-bedrock", "ABSK-bedrock-503-x", ""),
        ],
    )
    .await;
    let with = |prefs: &str| {
        format!(
            r#"{{"model":"anthropic/claude-sonnet-4","max_tokens":1,"messages":[],"provider":{prefs}}}"#
        )
    };
    // order: Bedrock first (503), then the rest: Anthropic.
    let r = messages(&p, GW, &with(r#"{"order":["Amazon Bedrock"]}"#)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-byok-attempts"), Some("2"));
    assert_eq!(r.header("x-byok-provider"), Some("anthropic"));
    // allow_fallbacks false: Bedrock alone, whose 503 the client gets.
    let r = messages(
        &p,
        GW,
        &with(r#"{"order":["amazon-bedrock"],"allow_fallbacks":false}"#),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-byok-attempts"), Some("1"));
    // ignore: Anthropic alone.
    let r = messages(&p, GW, &with(r#"{"ignore":["anthropic"]}"#)).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-byok-provider"), Some("amazon-bedrock"));
    // zdr: no credential is declared ZDR.
    let before = mock.count();
    let r = messages(&p, GW, &with(r#"{"zdr":true}"#)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.message().contains("zero data retention"),
        "{}",
        r.message()
    );
    assert_eq!(mock.count(), before);
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn bad_input_gets_400_in_the_routes_shape_naming_the_field_and_nothing_goes_upstream() {
    let mock = Mock::start(upstream).await;
    let p = proxy(&mock, &[cred("oai", "openai", "sk-openai-200-x", "")]).await;
    let eleven: Vec<String> = (0..11).map(|i| format!("\"openai/m{i}\"")).collect();
    let eleven = format!(
        r#"{{"model":"openai/gpt-4o","models":[{}]}}"#,
        eleven.join(",")
    );
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"model":"meta-llama/llama-3"}"#,
            "unknown_model",
            "model",
        ),
        (&eleven, "invalid_body", "models"),
        (
            r#"{"model":"openai/gpt-4o","provider":"openai"}"#,
            "invalid_body",
            "provider",
        ),
        (
            r#"{"model":"openai/gpt-4o","provider":{"order":"openai"}}"#,
            "invalid_body",
            "provider.order",
        ),
        (r#"{"messages":[]}"#, "invalid_body", "model"),
        (
            r#"{"model":"anthropic/claude-sonnet-4","messages":[]}"#,
            "no_compatible_endpoint",
            "model",
        ),
    ];
    for (body, reason, param) in cases {
        let r = post(&p, "/api/v1/embeddings", GW, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.reason(), *reason, "{body}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert_eq!(r.json()["error"]["param"], *param, "{body}");
        assert_eq!(r.header("x-should-retry"), Some("false"));
    }
    // §4's rules hold here too.
    for body in [
        r#"{"model":"openai/gpt-4o","model":"openai/o1"}"#,
        r#"{"model":"openai/gpt-4o","Model":"x"}"#,
        r#"{"model":7}"#,
        r#"[1]"#,
    ] {
        let r = post(&p, "/api/v1/chat/completions", GW, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    // On the Messages route, Anthropic's shape.
    let r = messages(
        &p,
        GW,
        r#"{"model":"openai/gpt-4o","max_tokens":1,"messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.reason(), "no_compatible_endpoint");
    assert_eq!(r.json()["type"], "error");
    // Keys and paths.
    let r = post(
        &p,
        "/api/v1/chat/completions",
        "gw-unknown",
        r#"{"model":"openai/gpt-4o"}"#,
    )
    .await;
    assert_eq!((r.status, r.reason().as_str()), (401, "invalid_api_key"));
    let r = post(
        &p,
        "/api/v1/completions",
        GW,
        r#"{"model":"openai/gpt-4o"}"#,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = send(
        req("GET", &p.url("/api/v1/chat/completions"), Some(GW))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    // A model whose provider has no credential here.
    let r = post(
        &p,
        "/api/v1/chat/completions",
        GW,
        r#"{"model":"mistral/mistral-large"}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.reason().as_str()),
        (403, "no_credential"),
        "{}",
        r.text()
    );
    assert_eq!(mock.count(), 0, "nothing went upstream");
}

#[tokio::test]
async fn the_listings_show_what_the_key_may_use_and_its_record() {
    let mock = Mock::start(upstream).await;
    let p = proxy(
        &mock,
        &[cred(
            "bed",
            "amazon-bedrock",
            "ABSK-bedrock-200-x",
            r#"allowed_models = ["anthropic/claude-sonnet-4"]"#,
        )],
    )
    .await;
    let get = |path: &'static str, key: &'static str| {
        let p = &p;
        async move {
            send(
                req("GET", &p.url(path), Some(key))
                    .body(Default::default())
                    .unwrap(),
            )
            .await
        }
    };
    let r = get("/api/v1/models", GW).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["anthropic/claude-sonnet-4"]);
    let m = &r.json()["data"][0];
    assert_eq!(m["name"], "Claude Sonnet 4");
    assert_eq!(m["context_length"], 200000);
    assert_eq!(m["pricing"]["prompt"], "0.000003");
    // Another workspace's key sees nothing it may not use.
    let r = get("/api/v1/models", GW_OTHER_WS).await;
    assert_eq!(r.json()["data"], serde_json::json!([]));

    let r = get("/api/v1/key", GW).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["hash"], hash(GW));
    assert_eq!(r.json()["data"]["workspace_id"], "ws-1");
    assert!(!r.text().contains(GW), "never the raw key");
    let r = get("/api/v1/key", "gw-unknown").await;
    assert_eq!(r.status, 401);
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn the_catalog_is_reloaded_with_the_rest_of_the_file() {
    let mock = Mock::start(upstream).await;
    let creds = [
        cred("anth", "anthropic", "sk-ant-200-x", ""),
        cred("bed", "amazon-bedrock", "ABSK-bedrock-200-x", ""),
    ];
    let p = proxy(&mock, &creds).await;
    let body = r#"{"model":"anthropic/claude-sonnet-4","max_tokens":1,"messages":[]}"#;
    assert_eq!(
        messages(&p, GW, body).await.header("x-byok-provider"),
        Some("anthropic")
    );
    // Bedrock first now, under another id.
    let reordered = CATALOG.replace(
        r#"  { provider = "anthropic", model = "claude-sonnet-4-20250514" },
  { provider = "amazon-bedrock", model = "anthropic.claude-sonnet-4-20250514-v1:0" },"#,
        r#"  { provider = "amazon-bedrock", model = "anthropic.claude-sonnet-4-v2:0" },
  { provider = "anthropic", model = "claude-sonnet-4-20250514" },"#,
    );
    assert_ne!(reordered, CATALOG);
    let mark = p.log_len();
    p.write_config(&config(
        &mock,
        &[
            admin::admin_section("127.0.0.1:0", &[admin::MGMT]),
            reordered,
            creds.concat(),
        ]
        .concat(),
    ));
    p.wait_log_after(mark, "config reloaded").await;
    let r = messages(&p, GW, body).await;
    assert_eq!(r.header("x-byok-provider"), Some("amazon-bedrock"));
    assert_eq!(
        r.header("x-byok-model"),
        Some("anthropic.claude-sonnet-4-v2:0")
    );
    assert_eq!(
        mock.requests()[1].uri,
        "/bedrock/model/anthropic.claude-sonnet-4-v2%3A0/invoke"
    );
}

#[tokio::test]
async fn count_tokens_goes_to_anthropic_alone_with_the_clients_query() {
    let mock = Mock::start(|_: &Recorded| Reply::json(200, r#"{"input_tokens":42}"#)).await;
    let p = proxy(
        &mock,
        &[
            cred("bed", "amazon-bedrock", "ABSK-bedrock-200-x", ""),
            cred("anth", "anthropic", "sk-ant-200-x", ""),
        ],
    )
    .await;
    let r = send(
        http::Request::builder()
            .method("POST")
            .uri(p.url("/api/v1/messages/count_tokens?beta=true"))
            .header("x-api-key", GW)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"model":"claude-sonnet-4","messages":[{"role":"user","content":"hi"}]}"#,
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"input_tokens":42}"#,
        "no model where there was none"
    );
    assert_eq!(r.header("x-byok-provider"), Some("anthropic"));
    let seen = mock.requests();
    assert_eq!(seen.len(), 1, "Bedrock has no such API here");
    assert_eq!(seen[0].uri, "/v1/messages/count_tokens?beta=true");
    assert_eq!(
        String::from_utf8_lossy(&seen[0].body),
        r#"{"model":"claude-sonnet-4-20250514","messages":[{"role":"user","content":"hi"}]}"#
    );
}

/// One AWS event-stream message: the prelude, its CRC, the string headers,
/// the payload, the message CRC.
fn eventstream_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut hs = Vec::new();
    for (name, value) in headers {
        hs.push(name.len() as u8);
        hs.extend_from_slice(name.as_bytes());
        hs.push(7);
        hs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        hs.extend_from_slice(value.as_bytes());
    }
    let total = 12 + hs.len() + payload.len() + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_be_bytes());
    m.extend_from_slice(&(hs.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&m);
    m.extend_from_slice(&prelude_crc.to_be_bytes());
    m.extend_from_slice(&hs);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

/// Bedrock's `chunk` event carrying one Anthropic event.
fn bedrock_chunk(event: &str) -> Vec<u8> {
    use base64::Engine as _;
    let payload = serde_json::json!({
        "bytes": base64::engine::general_purpose::STANDARD.encode(event),
        "p": "abcdefgh",
    });
    eventstream_message(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

const EVENTS: [&str; 4] = [
    r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"usage":{"input_tokens":12,"output_tokens":1}}}"#,
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
    r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#,
    r#"{"type":"message_stop"}"#,
];

#[tokio::test]
async fn bedrocks_event_stream_reaches_the_client_as_anthropics_events_and_its_usage_counts() {
    let frames = bytes::Bytes::from(
        EVENTS
            .iter()
            .flat_map(|e| bedrock_chunk(e))
            .collect::<Vec<u8>>(),
    );
    let mock = Mock::start(move |r: &Recorded| {
        if r.uri.contains("invoke-with-response-stream") {
            let ct = (
                "content-type",
                "application/vnd.amazon.eventstream".to_owned(),
            );
            Reply::Bytes(200, vec![ct], frames.clone())
        } else {
            Reply::json(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
            )
        }
    })
    .await;
    let p = proxy(
        &mock,
        &[
            cred("anth", "anthropic", "sk-ant-529-x", ""),
            cred("bed", "amazon-bedrock", "ABSK-bedrock-200-x", ""),
        ],
    )
    .await;
    let body =
        r#"{"model":"anthropic/claude-sonnet-4","max_tokens":10,"stream":true,"messages":[]}"#;
    let r = messages(&p, GW, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("content-length"), None);
    let want: String = EVENTS
        .iter()
        .map(|e| {
            let kind = serde_json::from_str::<serde_json::Value>(e).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned();
            format!("event: {kind}\ndata: {e}\n\n")
        })
        .collect();
    assert_eq!(r.text(), want);
    let seen = mock.requests();
    assert_eq!(
        seen[1].uri,
        "/bedrock/model/anthropic.claude-sonnet-4-20250514-v1%3A0/invoke-with-response-stream"
    );
    let sent: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert!(
        sent.get("stream").is_none() && sent.get("model").is_none(),
        "{sent}"
    );

    // The usage read from the converted events, under the slug.
    let (_, samples) = scrape(p.admin_addr().await).await;
    let tokens = family(&samples, "byok_tokens_total");
    let count = |kind: &str| {
        tokens
            .iter()
            .find(|(l, _)| {
                l.contains(&format!("kind={kind}"))
                    && l.contains("model=anthropic/claude-sonnet-4")
                    && l.contains("provider=amazon-bedrock")
            })
            .map(|(_, v)| *v)
    };
    assert_eq!(
        (count("input"), count("output")),
        (Some(12.0), Some(3.0)),
        "{tokens:?}"
    );
}
