//! Usage read from responses as they stream past (SPEC §8, in part): tokens
//! and spend in the metrics, labelled by the price table, never by a
//! client's model string.

use crate::support::admin::{admin_json, admin_section, MGMT};
use crate::support::metrics::{expect, family, scrape};
use crate::support::*;
use serde_json::json;
use std::sync::Arc;

const JSON: &str = r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":200,"prompt_tokens_details":{"cached_tokens":400}}}"#;
const SSE: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20}}\n\ndata: [DONE]\n\n";
const NO_USAGE_REQUEST: &str = r#"{"model":"gpt-4o","stream":true,"user":"no-usage"}"#;
const SSE_NO_USAGE: &str =
    "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";

#[tokio::test]
async fn tokens_and_spend_are_counted_by_the_price_tables_model() {
    let mock = Mock::start(|r: &Recorded| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let (ct, answer) = if body.contains("no-usage") {
            ("text/event-stream", SSE_NO_USAGE)
        } else if body.contains("\"stream\":true") {
            ("text/event-stream", SSE)
        } else {
            ("application/json", JSON)
        };
        Reply::Full(
            200,
            vec![("content-type", ct.to_owned())],
            answer.to_owned(),
        )
    })
    .await;
    let rest = [
        admin_section("127.0.0.1:0", &[MGMT]),
        cred("c-1", "openai", "sk-usage-0000000001", ""),
        "\n[prices.\"openai/gpt-4o\"]\ninput = 2.5\noutput = 10.0\ncache_read = 1.25\n".to_owned(),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let path = "/openai/v1/chat/completions";
    let r = post(&proxy, path, GW, r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(r.text(), JSON, "the body the client gets is the upstream's");
    let r = post(&proxy, path, GW, r#"{"model":"gpt-4o","stream":true}"#).await;
    assert_eq!(r.text(), SSE);
    // A model without a price, and a stream without a usage report.
    post(&proxy, path, GW, r#"{"model":"my-fine-tune-SECRET-name"}"#).await;
    post(&proxy, path, GW, NO_USAGE_REQUEST).await;
    // Without a report, four bytes a token: the request's for input, the
    // response's for output.
    let (est_in, est_out) = (
        NO_USAGE_REQUEST.len().div_ceil(4) as f64,
        SSE_NO_USAGE.len().div_ceil(4) as f64,
    );

    let (text, s) = scrape(proxy.admin_addr().await).await;
    let labels = "credential_id=c-1,kind={k},model={m},provider=openai,tier=byok";
    let series = |k: &str, m: &str| labels.replace("{k}", k).replace("{m}", m);
    assert_eq!(
        family(&s, "byok_tokens_total"),
        expect(&[
            (&series("cache_read", "openai/gpt-4o"), 400.0),
            // OpenAI's prompt_tokens count the cached ones: 1000 - 400 + 10.
            (&series("input", "openai/gpt-4o"), 610.0 + est_in),
            (&series("output", "openai/gpt-4o"), 220.0 + est_out),
            (&series("cache_read", "other"), 400.0),
            (&series("input", "other"), 600.0),
            (&series("output", "other"), 200.0),
        ]),
        "{text}"
    );
    let want = ((610.0 + est_in) * 2.5 + (220.0 + est_out) * 10.0 + 400.0 * 1.25) / 1e6;
    let spend = family(&s, "byok_spend_usd_total");
    let usd = spend["credential_id=c-1,model=openai/gpt-4o,provider=openai,tier=byok"];
    assert!((usd - want).abs() < 1e-12, "{usd} != {want}: {text}");
    assert_eq!(spend.len(), 1, "no USD without a price: {text}");
    assert_eq!(
        family(&s, "byok_unpriced_responses_total"),
        expect(&[("provider=openai", 1.0)])
    );
    assert_eq!(
        family(&s, "byok_usage_unread_responses_total"),
        expect(&[("provider=openai", 1.0)])
    );
    assert!(
        !text.contains("my-fine-tune"),
        "a client's model string became a label: {text}"
    );
}

/// Two keys with the same 5 USD daily limit; BYOK spend counts toward it
/// only for the one that says `include_byok_in_limit`.
const LIMITED: &str = "gw-limited-key-includes-byok";
const BYOK_FREE: &str = "gw-limited-key-shared-only";

fn limited_keys() -> String {
    format!(
        r#"
[[api_keys]]
hash = "{}"
workspace_id = "ws-1"
user_id = "user-1"
limit = 5.0
limit_reset = "daily"
include_byok_in_limit = true

[[api_keys]]
hash = "{}"
workspace_id = "ws-1"
user_id = "user-1"
limit = 5.0
limit_reset = "daily"
"#,
        hash(LIMITED),
        hash(BYOK_FREE)
    )
}

/// A stream whose own usage report crosses the limit is relayed whole; the
/// next request of its key is refused with 402 before it goes upstream.
#[tokio::test]
async fn a_limit_crossed_mid_stream_lets_it_finish_and_refuses_the_next_request() {
    const FIRST: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const REST: [&str; 2] = [
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":6}}\n\n",
        "data: [DONE]\n\n",
    ];
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = Arc::clone(&gate);
    let mock = Mock::start(move |_| Reply::Stream {
        first: FIRST.into(),
        rest: REST.iter().map(|s| s.to_string()).collect(),
        gate: Arc::clone(&g),
        cancelled: Arc::new(tokio::sync::Notify::new()),
    })
    .await;
    let rest = [
        admin_section("127.0.0.1:0", &[MGMT]),
        limited_keys(),
        cred("c-1", "openai", "sk-limit-0000000001", ""),
        // One USD an output token: the stream's 6 tokens cost 6 USD.
        "\n[prices.\"openai/gpt-4o\"]\noutput = 1000000.0\n".to_owned(),
    ]
    .concat();
    let proxy = Arc::new(Proxy::start(&config(&mock, &rest)).await);
    let path = "/openai/v1/chat/completions";
    let body = r#"{"model":"gpt-4o","stream":true}"#;

    for key in [LIMITED, BYOK_FREE] {
        let before = mock.count();
        let p = Arc::clone(&proxy);
        let streaming = tokio::spawn(async move { post(&p, path, key, body).await });
        // The stream is open upstream (its first chunk sent) before its
        // usage arrives: the limit is crossed mid-stream.
        poll_until(|| async { mock.count() > before }).await;
        gate.notify_one();
        let r = streaming.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            [FIRST, REST[0], REST[1]].concat(),
            "relayed whole"
        );
    }

    let count = mock.count();
    let refused = post(&proxy, path, LIMITED, body).await;
    assert_eq!(refused.status, 402, "{}", refused.text());
    let v = refused.json();
    assert_eq!(v["error"]["metadata"]["reason"], "key_limit_exceeded");
    assert_eq!(
        v["error"]["type"], "billing_error",
        "OpenAI's SDK reads a type"
    );
    assert_eq!(refused.header("x-should-retry"), Some("false"));
    // The other key's BYOK spend does not count toward its limit.
    gate.notify_one(); // a permit: its stream is let through at once
    let other = post(&proxy, path, BYOK_FREE, r#"{"model":"gpt-4o"}"#).await;
    assert_ne!(other.status, 402, "{}", other.text());
    assert_eq!(
        mock.count(),
        count + 1,
        "the refused request never went upstream"
    );

    // The keys API shows each key's spend and what is left.
    let admin = proxy.admin_addr().await;
    let k = admin_json(admin, &format!("/api/v1/keys/{}", hash(LIMITED))).await;
    let d = &k["data"];
    assert_eq!(
        (&d["byok_usage"], &d["byok_usage_daily"], &d["usage"]),
        (&json!(6.0), &json!(6.0), &json!(0.0)),
        "{k}"
    );
    assert_eq!(
        (&d["limit"], &d["limit_remaining"]),
        (&json!(5.0), &json!(0.0))
    );
    assert_eq!(d["limit_reset"], "daily");
    assert!(d["last_used_at"].is_string(), "{k}");
    let k = admin_json(admin, &format!("/api/v1/keys/{}", hash(BYOK_FREE))).await;
    assert_eq!(k["data"]["limit_remaining"], json!(5.0), "{k}");
    // A credential's last use is known from the next flush (a second) on.
    poll_until(|| async {
        admin_json(admin, "/api/v1/byok/c-1").await["data"]["last_used_at"].is_string()
    })
    .await;
}

/// The usage report must pass uncompressed to be read: a POST goes upstream
/// asking for `identity`, whatever the client asked for (a GET keeps its
/// choice).
#[tokio::test]
async fn a_post_asks_the_upstream_for_an_uncompressed_answer() {
    let mock = Mock::start(|_| Reply::json(200, JSON)).await;
    let rest = cred("c-1", "openai", "sk-usage-0000000002", "");
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    for (method, body) in [("POST", r#"{"model":"gpt-4o"}"#), ("GET", "")] {
        let r = send(
            req(method, &proxy.url("/openai/v1/chat/completions"), Some(GW))
                .header("content-type", "application/json")
                .header("accept-encoding", "br, gzip")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen: Vec<(String, Option<String>)> = mock
        .requests()
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.header("accept-encoding").map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("POST".to_owned(), Some("identity".to_owned())),
            ("GET".to_owned(), Some("br, gzip".to_owned())),
        ]
    );
}
