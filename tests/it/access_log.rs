//! SPEC §7, the access log: one line per request with its fields and no
//! secret, and request ids taken from the client or made, sent upstream and
//! echoed.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;

use crate::support::admin::*;
use crate::support::*;

/// The fields of the access-log line with `request_id={id}`, waiting for it.
async fn access_line(proxy: &Proxy, id: &str) -> BTreeMap<String, String> {
    let line = proxy.wait_log(&format!("request_id={id} ")).await;
    parse_access(&line)
}

/// `k=v` and `k="v"` fields after `byok_proxy::access: request`.
fn parse_access(line: &str) -> BTreeMap<String, String> {
    let (_, rest) = line
        .split_once("byok_proxy::access: request ")
        .unwrap_or_else(|| panic!("not an access-log line: {line}"));
    let mut fields = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ' ').collect();
        }
        assert!(
            fields.insert(key.clone(), value).is_none(),
            "{key} twice: {line}"
        );
    }
    fields
}

/// POST with a gateway key and an optional `x-request-id`.
async fn post_id(proxy: &Proxy, path: &str, key: &str, body: &str, id: Option<&str>) -> Resp {
    let mut b = req("POST", &proxy.url(path), Some(key)).header("content-type", "application/json");
    if let Some(id) = id {
        b = b.header("x-request-id", id);
    }
    send(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

fn assert_generated_id(id: &str) {
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a generated id: {id:?}"
    );
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn one_access_line_per_request_with_its_fields_and_no_secret() {
    let mock = Mock::start(rate_limit_sk_429).await;
    let creds = [
        cred(
            "oa-1",
            "openai",
            "sk-200-access-oa1",
            "allowed_models = [\"openai/gpt-4o\"]",
        ),
        cred("an-429", "anthropic", "sk-429-access-an1", "sort_order = 0"),
        cred("an-200", "anthropic", "sk-200-access-an2", "sort_order = 1"),
    ]
    .concat();
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &creds)).await;
    let chat_body = |model: &str| format!(r#"{{"model":"{model}","messages":[]}}"#);
    let chat_path = "/openai/v1/chat/completions";

    // Forwarded: the model is shown.
    let r = post_id(
        &proxy,
        chat_path,
        GW,
        &chat_body("gpt-4o"),
        Some("req-fwd-1"),
    )
    .await;
    assert_eq!(r.status, 200);
    let f = access_line(&proxy, "req-fwd-1").await;
    let latency: f64 = f["latency_ms"].parse().unwrap();
    let own_us: f64 = f["own_us"].parse().unwrap();
    assert!(
        latency > 0.0 && own_us >= 0.0 && own_us / 1e3 <= latency,
        "{f:?}"
    );
    let mut expected = BTreeMap::from([
        ("request_id", "req-fwd-1"),
        ("status", "200"),
        ("outcome", "forwarded"),
        ("provider", "openai"),
        ("workspace", "ws-1"),
        ("user", "user-1"),
        ("model", "gpt-4o"),
        ("tier", "byok"),
        ("attempts", "oa-1:200"),
        ("resting", "-"),
    ])
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect::<BTreeMap<_, _>>();
    expected.insert("key".into(), hash(GW)[..8].to_owned());
    expected.insert("latency_ms".into(), f["latency_ms"].clone());
    expected.insert("own_us".into(), f["own_us"].clone());
    assert_eq!(f, expected);

    // Refused by the model allowlist: the client's model is not logged.
    let refused_model = "o1-REFUSED-model-x9";
    let r = post_id(
        &proxy,
        chat_path,
        GW2,
        &chat_body(refused_model),
        Some("req-ref-2"),
    )
    .await;
    assert_eq!(r.reason(), "no_eligible_credential");
    let f = access_line(&proxy, "req-ref-2").await;
    for (k, v) in [
        ("status", "403"),
        ("outcome", "no_eligible_credential"),
        ("provider", "openai"),
        ("workspace", "ws-1"),
        ("user", "user-2"),
        ("model", "-"),
        ("tier", "-"),
        ("attempts", "-"),
    ] {
        assert_eq!(f[k], v, "{k}: {f:?}");
    }
    assert_eq!(f["key"], hash(GW2)[..8]);

    // A failover: both attempts with their statuses; the admitted model shown.
    let r = post_id(
        &proxy,
        "/anthropic/v1/messages",
        GW,
        &chat_body("claude-x"),
        Some("req-fo-3"),
    )
    .await;
    assert_eq!(
        (r.status, r.header("x-byok-credential-id")),
        (200, Some("an-200"))
    );
    let f = access_line(&proxy, "req-fo-3").await;
    for (k, v) in [
        ("status", "200"),
        ("outcome", "forwarded"),
        ("provider", "anthropic"),
        ("model", "claude-x"),
        ("attempts", "an-429:429,an-200:200"),
    ] {
        assert_eq!(f[k], v, "{k}: {f:?}");
    }

    // An unknown gateway key: no principal, no key prefix.
    let unknown_key = "gw-CANARY-unknown-raw-key";
    let r = post_id(
        &proxy,
        chat_path,
        unknown_key,
        &chat_body("gpt-4o"),
        Some("req-bad-4"),
    )
    .await;
    assert_eq!(r.reason(), "invalid_api_key");
    let f = access_line(&proxy, "req-bad-4").await;
    for (k, v) in [
        ("status", "401"),
        ("outcome", "invalid_api_key"),
        ("provider", "openai"),
        ("workspace", "-"),
        ("user", "-"),
        ("key", "-"),
        ("model", "-"),
    ] {
        assert_eq!(f[k], v, "{k}: {f:?}");
    }

    // An unknown provider: the client's segment is not the provider field.
    let r = post_id(&proxy, "/Weird-PROV-k2/v1/x", GW, "{}", Some("req-unk-5")).await;
    assert_eq!(r.status, 404);
    let f = access_line(&proxy, "req-unk-5").await;
    assert_eq!(
        (f["provider"].as_str(), f["model"].as_str()),
        ("unknown", "-")
    );

    // A final request: once its line is read, every earlier line has been too.
    let r = post_id(
        &proxy,
        chat_path,
        GW,
        &chat_body("gpt-4o"),
        Some("req-last-6"),
    )
    .await;
    assert_eq!(r.status, 200);
    access_line(&proxy, "req-last-6").await;
    let logs = proxy.logs();
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("byok_proxy::access"))
        .collect();
    assert_eq!(
        access.len(),
        6,
        "one line per request:\n{}",
        access.join("\n")
    );
    for id in [
        "req-fwd-1",
        "req-ref-2",
        "req-fo-3",
        "req-bad-4",
        "req-unk-5",
        "req-last-6",
    ] {
        let n = access
            .iter()
            .filter(|l| l.contains(&format!("request_id={id} ")))
            .count();
        assert_eq!(n, 1, "{id}");
    }
    for needle in [
        GW,
        GW2,
        unknown_key,
        &hash(GW),
        &hash(GW2),
        &hash(unknown_key),
        refused_model,
        "Weird-PROV-k2",
        "sk-200-access",
        "sk-429-access",
    ] {
        assert!(!logs.contains(needle), "{needle} in the output:\n{logs}");
    }
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn request_ids_are_taken_or_made_sent_upstream_and_echoed() {
    let mock = Mock::start(|r| {
        if r.uri.contains("upstream-id") {
            Reply::Full(
                200,
                vec![("x-request-id", "upstream-own-id-77".into())],
                "{}".into(),
            )
        } else {
            Reply::json(200, "{}")
        }
    })
    .await;
    let proxy = Proxy::start(&config(
        &mock,
        &cred("c1", "openai", "sk-admin-reqid-000001", ""),
    ))
    .await;
    let path = "/openai/v1/chat/completions";
    let body = r#"{"model":"gpt-4o"}"#;
    let ids = |r: &Resp| {
        (
            r.header("x-request-id").unwrap_or("<none>").to_owned(),
            r.header("x-byok-request-id").unwrap_or("<none>").to_owned(),
        )
    };
    let last_upstream_id = || {
        mock.requests()
            .last()
            .unwrap()
            .header("x-request-id")
            .unwrap()
            .to_owned()
    };

    // A well-formed id is taken, sent upstream, echoed and logged.
    let long = "a".repeat(128);
    for id in ["req-abc-123", "Req_1.2:3-x", long.as_str()] {
        let r = post_id(&proxy, path, GW, body, Some(id)).await;
        assert_eq!(r.status, 200);
        assert_eq!(ids(&r), (id.to_owned(), id.to_owned()));
        assert_eq!(last_upstream_id(), id);
        assert_eq!(access_line(&proxy, id).await["status"], "200");
    }

    // None: one is made, the same everywhere, different each time.
    let mut made = Vec::new();
    for _ in 0..2 {
        let r = post_id(&proxy, path, GW, body, None).await;
        let (xr, ours) = ids(&r);
        assert_generated_id(&ours);
        assert_eq!(xr, ours);
        assert_eq!(last_upstream_id(), ours);
        access_line(&proxy, &ours).await;
        made.push(ours);
    }
    assert_ne!(made[0], made[1]);

    // Malformed: replaced by a made one, never forwarded or logged.
    let too_long = "b".repeat(129);
    for bad in [
        "has space-MALFORMED",
        "quote\"MALFORMED",
        "brace{MALFORMED}",
        "semi;MALFORMED",
        too_long.as_str(),
        "",
    ] {
        let r = post_id(&proxy, path, GW, body, Some(bad)).await;
        assert_eq!(r.status, 200, "{bad:?}");
        let (xr, ours) = ids(&r);
        assert_generated_id(&ours);
        assert_eq!(xr, ours, "{bad:?}");
        assert_eq!(last_upstream_id(), ours, "{bad:?}");
        access_line(&proxy, &ours).await;
    }
    let logs = proxy.logs();
    assert!(!logs.contains("MALFORMED"), "{logs}");
    assert!(!logs.contains(&too_long));

    // The upstream's own x-request-id is kept; ours stays in x-byok-request-id.
    let r = post_id(
        &proxy,
        "/openai/v1/upstream-id",
        GW,
        body,
        Some("req-mine-5"),
    )
    .await;
    assert_eq!(
        ids(&r),
        ("upstream-own-id-77".to_owned(), "req-mine-5".to_owned())
    );
    assert_eq!(last_upstream_id(), "req-mine-5");
    access_line(&proxy, "req-mine-5").await;

    // Refusals carry the id too, and are logged under it.
    let n = mock.count();
    let r = post_id(&proxy, path, "gw-nope", body, Some("req-refused-6")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        ids(&r),
        ("req-refused-6".to_owned(), "req-refused-6".to_owned())
    );
    assert_eq!(access_line(&proxy, "req-refused-6").await["status"], "401");
    let r = send(
        req("GET", &proxy.url("/"), None)
            .header("x-request-id", "req-noroute-7")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(ids(&r).1, "req-noroute-7");
    assert_eq!(
        access_line(&proxy, "req-noroute-7").await["provider"],
        "none"
    );
    assert_eq!(mock.count(), n, "a refusal reached the upstream");
}
