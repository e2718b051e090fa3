//! SPEC §7, `/metrics`: exact counts for a mix of allowed, refused and failing
//! requests, per credential and reason, and no key or secret in the series.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::admin::*;
use crate::support::metrics::*;
use crate::support::*;

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn metrics_count_a_mix_of_allowed_refused_and_failing_requests_exactly() {
    let mock = Mock::start(rate_limit_sk_429).await;
    let dead = dead_addr();
    let creds = [
        cred(
            "oa-1",
            "openai",
            "sk-200-metrics-oa1",
            "allowed_models = [\"openai/gpt-4o\"]",
        ),
        cred("oa-off", "openai", "sk-200-metrics-off", "disabled = true"),
        cred(
            "an-429",
            "anthropic",
            "sk-429-metrics-an1",
            "sort_order = 0",
        ),
        cred(
            "an-200",
            "anthropic",
            "sk-200-metrics-an2",
            "sort_order = 1",
        ),
        cred(
            "gq-dead",
            "groq",
            "sk-200-metrics-gq1",
            &format!("base_url = \"http://{dead}\""),
        ),
    ]
    .concat();
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &creds)).await;
    let admin = proxy.admin_addr().await;

    // Before any request: the registry gauges, generation 1, no reloads.
    let (_, s) = scrape(admin).await;
    assert_eq!(gauge(&s, "byok_registry_api_keys"), 4.0);
    assert_eq!(
        gauge(&s, "byok_registry_credentials"),
        5.0,
        "disabled included"
    );
    assert_eq!(gauge(&s, "byok_config_generation"), 1.0);
    assert!(family(&s, "byok_config_reloads_total").is_empty());
    assert!(family(&s, "byok_requests_total").is_empty());

    let leaky_model = "model-MUSTNOTLEAK-3f9";
    let forwarded_model = "claude-LEAKCHECK-77";
    let mut statuses = Vec::new();
    // Forwarded, twice.
    statuses.push(chat(&proxy, GW, "gpt-4o").await.status);
    statuses.push(chat(&proxy, GW2, "gpt-4o").await.status);
    // Forwarded after a failover 429 -> 200.
    let r = post(
        &proxy,
        "/anthropic/v1/messages",
        GW,
        &format!(r#"{{"model":"{forwarded_model}"}}"#),
    )
    .await;
    assert_eq!(r.header("x-byok-attempts"), Some("2"));
    statuses.push(r.status);
    // Refused: no credential admits the model; an unknown key; no key.
    statuses.push(chat(&proxy, GW, leaky_model).await.status);
    statuses.push(chat(&proxy, "gw-unknown-key", "gpt-4o").await.status);
    statuses.push(
        send(
            req("POST", &proxy.url("/openai/v1/chat/completions"), None)
                .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o"}"#)))
                .unwrap(),
        )
        .await
        .status,
    );
    // Unknown providers, with client-chosen segments that must not become labels.
    statuses.push(
        post(&proxy, "/weird-SEG-q7x/v1/chat", GW, "{}")
            .await
            .status,
    );
    statuses.push(
        post(&proxy, "/Prov-In-Path-zz1/v1/x", GW, "{}")
            .await
            .status,
    );
    // No route at all.
    for path in ["/", "/just-one-segment-RL9"] {
        let r = send(
            req("GET", &proxy.url(path), Some(GW))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        statuses.push(r.status);
    }
    // Failing: the upstream is unreachable.
    statuses.push(
        post(
            &proxy,
            "/groq/openai/v1/chat/completions",
            GW,
            r#"{"model":"m"}"#,
        )
        .await
        .status,
    );
    assert_eq!(
        statuses,
        [200, 200, 200, 403, 401, 401, 404, 404, 404, 404, 502]
    );
    assert_eq!(mock.count(), 4, "2 openai + 2 anthropic attempts upstream");

    let (text, s) = scrape(admin).await;
    assert_eq!(
        family(&s, "byok_requests_total"),
        expect(&[
            ("outcome=forwarded,provider=anthropic", 1.0),
            ("outcome=forwarded,provider=openai", 2.0),
            ("outcome=invalid_api_key,provider=openai", 1.0),
            ("outcome=missing_api_key,provider=openai", 1.0),
            ("outcome=no_eligible_credential,provider=openai", 1.0),
            ("outcome=not_found,provider=none", 2.0),
            ("outcome=unknown_provider,provider=unknown", 2.0),
            ("outcome=upstream_unreachable,provider=groq", 1.0),
        ]),
        "{text}"
    );
    assert_eq!(
        family(&s, "byok_upstream_attempts_total"),
        expect(&[
            (
                "credential_id=an-200,provider=anthropic,status_class=2xx,tier=byok",
                1.0
            ),
            (
                "credential_id=an-429,provider=anthropic,status_class=4xx,tier=byok",
                1.0
            ),
            (
                "credential_id=gq-dead,provider=groq,status_class=error,tier=byok",
                1.0
            ),
            (
                "credential_id=oa-1,provider=openai,status_class=2xx,tier=byok",
                2.0
            ),
        ]),
        "{text}"
    );
    // an-429 rests after its 429; the dead groq credential failed once
    // (five in a row cool it).
    assert_eq!(
        family(&s, "byok_credentials"),
        expect(&[
            ("state=cooling", 1.0),
            ("state=healthy", 3.0),
            ("state=quarantined", 0.0)
        ]),
        "{text}"
    );
    assert_eq!(
        family(&s, "byok_failovers_total"),
        expect(&[("provider=anthropic", 1.0)]),
        "{text}"
    );
    // The proxy's own time: every request; upstream wait: those that went upstream.
    assert_eq!(
        family(&s, "byok_proxy_own_seconds_count"),
        expect(&[
            ("provider=anthropic", 1.0),
            ("provider=groq", 1.0),
            ("provider=none", 2.0),
            ("provider=openai", 5.0),
            ("provider=unknown", 2.0),
        ]),
        "{text}"
    );
    assert_eq!(
        family(&s, "byok_upstream_wait_seconds_count"),
        expect(&[
            ("provider=anthropic", 1.0),
            ("provider=groq", 1.0),
            ("provider=openai", 2.0),
        ]),
        "{text}"
    );
    for hist in ["byok_proxy_own_seconds", "byok_upstream_wait_seconds"] {
        let counts = family(&s, &format!("{hist}_count"));
        let sums = family(&s, &format!("{hist}_sum"));
        assert_eq!(
            counts.keys().collect::<Vec<_>>(),
            sums.keys().collect::<Vec<_>>()
        );
        for (series, count) in &counts {
            assert!(sums[series] > 0.0, "{hist}_sum{{{series}}} is 0");
            // Buckets are cumulative and end in +Inf = count.
            let mut buckets: Vec<(f64, f64)> = s
                .iter()
                .filter(|b| b.name == format!("{hist}_bucket"))
                .filter(|b| format!("provider={}", b.labels["provider"]) == *series)
                .map(|b| (b.labels["le"].parse().unwrap(), b.value))
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(buckets.len() > 2, "{hist} {series}: {buckets:?}");
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
            assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, *count));
        }
    }
    assert_eq!(gauge(&s, "byok_registry_credentials"), 5.0);
    assert_eq!(gauge(&s, "byok_config_generation"), 1.0);

    // Bounded labels: every value comes from the config or a fixed set.
    let providers = ["openai", "anthropic", "groq", "unknown", "none"];
    let credential_ids = ["oa-1", "oa-off", "an-429", "an-200", "gq-dead"];
    let outcomes = [
        "forwarded",
        "missing_api_key",
        "invalid_api_key",
        "ambiguous_api_key",
        "unknown_provider",
        "not_found",
        "method_not_allowed",
        "invalid_request",
        "invalid_body",
        "ambiguous_model",
        "no_eligible_credential",
        "no_credential",
        "body_too_large",
        "unsupported_encoding",
        "upstream_unreachable",
        "upstream_rejected_credential",
        "upstream_timeout",
    ];
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "error", "timeout"];
    for sample in &s {
        for (k, v) in &sample.labels {
            let ok = match k.as_str() {
                "provider" => providers.contains(&v.as_str()),
                "credential_id" => credential_ids.contains(&v.as_str()),
                "outcome" => outcomes.contains(&v.as_str()),
                "status_class" => classes.contains(&v.as_str()),
                "tier" => ["byok", "shared"].contains(&v.as_str()),
                "state" => ["healthy", "cooling", "quarantined"].contains(&v.as_str()),
                "result" => ["ok", "failed"].contains(&v.as_str()),
                "kind" => ["input", "output", "cache_read", "cache_write"].contains(&v.as_str()),
                // No price table here: every model is `other`.
                "model" => v == "other",
                "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
                _ => false,
            };
            assert!(ok, "label {k}={v:?} on {}", sample.name);
        }
    }
    for needle in [
        leaky_model,
        forwarded_model,
        "gpt-4o",
        "weird-SEG",
        "q7x",
        "Prov-In-Path",
        "RL9",
        "chat/completions",
        "v1/messages",
        "sk-200-",
        "sk-429-",
        GW,
        GW2,
        "gw-unknown-key",
        &hash(GW)[..8],
        "user-1",
    ] {
        assert!(!text.contains(needle), "{needle} in /metrics:\n{text}");
    }
}
