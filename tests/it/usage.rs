//! Usage read from responses as they stream past (SPEC §8, in part): tokens
//! and spend in the metrics, labelled by the price table, never by a
//! client's model string.

use crate::support::admin::{admin_section, MGMT};
use crate::support::metrics::{expect, family, scrape};
use crate::support::*;

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
