//! SPEC §4: routes, strip-then-inject header hygiene, the upstream chosen by
//! configuration only, keys in any of the four headers.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

const SECRET: &str = "sk-openai-secret-0001";

async fn setup() -> (Mock, Proxy) {
    let mock = Mock::ok().await;
    let cfg = config(
        &mock,
        &[
            cred("c-openai", "openai", SECRET, ""),
            cred("c-anthropic", "anthropic", "sk-ant-secret-0002", ""),
            cred(
                "c-google",
                "google-ai-studio",
                "AIza-google-secret-0003",
                "",
            ),
            cred("c-bedrock", "amazon-bedrock", "bedrock-secret-0004", ""),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    (mock, proxy)
}

#[tokio::test]
async fn healthz_answers_200() {
    let (mock, proxy) = setup().await;
    let r = send(
        req("GET", &proxy.url("/healthz"), None)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn forwards_path_query_and_body_bytes_with_the_secret_injected() {
    let (mock, proxy) = setup().await;
    // Odd spacing, key order and a number a JSON round trip would change:
    // the upstream must get exactly these bytes.
    let body = "{ \"messages\" : [] ,\n \"model\":\"gpt-4o\", \"seed\": 12345678901234567890123, \"t\":1.0e0 }";
    let r = send(
        req(
            "POST",
            &proxy.url("/openai/v1/chat/completions?stream=false&a=%20b"),
            Some(GW),
        )
        .header("content-type", "application/json")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from(body)))
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"id":"chatcmpl-1","ok":true}"#);
    assert_eq!(r.header("x-byok-credential-id"), Some("c-openai"));
    assert_eq!(r.header("x-byok-attempts"), Some("1"));

    let got = &mock.requests()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.uri, "/v1/chat/completions?stream=false&a=%20b");
    assert_eq!(got.body, body.as_bytes());
    assert_eq!(
        got.header("authorization"),
        Some(&*format!("Bearer {SECRET}"))
    );
    assert_eq!(got.header("x-custom"), Some("kept"));
    assert_eq!(got.header("content-length"), Some(&*body.len().to_string()));
    assert_eq!(got.header("host"), Some(&*mock.addr.to_string()));
}

#[tokio::test]
async fn strips_every_client_credential_and_hop_by_hop_header() {
    let (mock, proxy) = setup().await;
    let r = send(
        req(
            "POST",
            // `key%09…`: a name padded past 15 bytes still trims to `key`
            // (found by fuzz/path_model).
            &proxy.url(&format!(
                "/openai/v1/chat/completions?key=gw-test-key-alpha&alt=sse&KEY=x&k%65y=y\
                 &key%09%09%09%09%09%09%09={GW}"
            )),
            Some(GW),
        )
        .header("x-api-key", GW)
        .header("api-key", GW)
        .header("x-goog-api-key", GW)
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("cookie", "session=abc")
        .header("openai-organization", "org-client")
        .header("openai-project", "proj-client")
        .header("connection", "x-hop-secret, keep-alive")
        .header("x-hop-secret", "must-not-pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("host", "evil.example")
        .header("expect", "100-continue")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o"}"#)))
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = &mock.requests()[0];
    for name in [
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "proxy-authorization",
        "cookie",
        "openai-organization",
        "openai-project",
        "x-hop-secret",
        "keep-alive",
        "te",
        "expect",
        "transfer-encoding",
    ] {
        assert_eq!(got.header(name), None, "{name} was forwarded");
    }
    assert_eq!(got.header("host"), Some(&*mock.addr.to_string()));
    assert_eq!(got.uri, "/v1/chat/completions?alt=sse");
    assert_eq!(got.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(
        got.header("authorization"),
        Some(&*format!("Bearer {SECRET}"))
    );
    assert!(
        !got.everything().contains(GW),
        "gateway key reached the upstream:\n{}",
        got.everything()
    );
}

#[tokio::test]
async fn each_of_the_four_key_headers_is_accepted_and_each_provider_gets_its_own_auth() {
    let (mock, proxy) = setup().await;
    let cases = [
        (
            "authorization",
            format!("Bearer {GW}"),
            "/openai/v1/chat/completions",
            r#"{"model":"gpt-4o"}"#,
        ),
        (
            "x-api-key",
            GW.to_owned(),
            "/anthropic/v1/messages",
            r#"{"model":"claude-3-5-sonnet"}"#,
        ),
        (
            "api-key",
            GW.to_owned(),
            "/openai/v1/chat/completions",
            r#"{"model":"gpt-4o"}"#,
        ),
        (
            "x-goog-api-key",
            GW.to_owned(),
            "/google-ai-studio/v1beta/models/gemini-1.5-pro:generateContent",
            "{}",
        ),
    ];
    for (header, value, path, body) in &cases {
        let r = send(
            req("POST", &proxy.url(path), None)
                .header(*header, value)
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{header}: {}", r.text());
    }
    let got = mock.requests();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0].header("authorization"),
        Some(&*format!("Bearer {SECRET}"))
    );
    // Anthropic: x-api-key with the secret, never the client's; the default
    // anthropic-version is added because the client sent none.
    assert_eq!(got[1].header("x-api-key"), Some("sk-ant-secret-0002"));
    assert_eq!(got[1].header("authorization"), None);
    assert_eq!(got[1].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(got[2].header("api-key"), None);
    assert_eq!(
        got[3].header("x-goog-api-key"),
        Some("AIza-google-secret-0003")
    );
    assert_eq!(got[3].uri, "/v1beta/models/gemini-1.5-pro:generateContent");
    for g in &got {
        assert!(!g.everything().contains(GW));
    }
}

#[tokio::test]
async fn client_provider_headers_are_kept_where_the_provider_only_has_a_default() {
    let (mock, proxy) = setup().await;
    let r = send(
        req("POST", &proxy.url("/anthropic/v1/messages"), None)
            .header("x-api-key", GW)
            .header("anthropic-version", "2024-01-01")
            .body(Full::new(Bytes::from_static(br#"{"model":"claude"}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        mock.requests()[0].header("anthropic-version"),
        Some("2024-01-01")
    );
}

#[tokio::test]
async fn key_refusals_never_reach_the_upstream() {
    let (mock, proxy) = setup().await;
    let body = r#"{"model":"gpt-4o"}"#;
    let path = "/openai/v1/chat/completions";
    let missing = send(
        req("POST", &proxy.url(path), None)
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (missing.status, missing.reason()),
        (401, "missing_api_key".into())
    );

    let unknown = post(&proxy, path, "gw-nobody-has-this", body).await;
    let disabled = post(&proxy, path, GW_DISABLED, body).await;
    assert_eq!(
        (unknown.status, unknown.reason()),
        (401, "invalid_api_key".into())
    );
    // Unknown and disabled keys answer identically, byte for byte.
    assert_eq!(unknown.body, disabled.body);
    assert_eq!(unknown.status, disabled.status);
    assert!(!unknown.text().contains("gw-nobody-has-this"));

    let two = send(
        req("POST", &proxy.url(path), Some(GW))
            .header("x-api-key", GW2)
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (two.status, two.reason()),
        (401, "ambiguous_api_key".into())
    );
    assert!(!two.text().contains(GW) && !two.text().contains(GW2));

    let basic = send(
        req("POST", &proxy.url(path), None)
            .header("authorization", "Basic Z3c=")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(basic.status, 401);
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn error_bodies_have_the_openrouter_shape() {
    let (_mock, proxy) = setup().await;
    let r = post(&proxy, "/openai/v1/chat/completions", "nope", "{}").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["code"], 401);
    assert_eq!(v["error"]["metadata"]["reason"], "invalid_api_key");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn routing_takes_the_path_as_sent() {
    let (mock, proxy) = setup().await;
    let cases: &[(&str, u16, &str)] = &[
        ("/nope/v1/chat/completions", 404, "unknown_provider"),
        ("/", 404, "not_found"),
        ("/openai", 404, "not_found"),
        ("//anthropic/v1/messages", 404, "not_found"),
        ("/OpenAI/v1/chat/completions", 404, "unknown_provider"),
        ("/%6fpenai/v1/chat/completions", 404, "unknown_provider"),
        (
            "/openai%2F..%2Fanthropic/v1/messages",
            404,
            "unknown_provider",
        ),
        ("/openai/../anthropic/v1/messages", 400, "invalid_request"),
        (
            "/openai/v1/../../anthropic/v1/messages",
            400,
            "invalid_request",
        ),
        (
            "/openai/%2e%2e/anthropic/v1/messages",
            400,
            "invalid_request",
        ),
        ("/openai/v1/%2E%2E%2Fanthropic", 400, "invalid_request"),
        ("/openai/v1/..%5canthropic", 400, "invalid_request"),
        ("/openai//v1/chat/completions", 400, "invalid_request"),
        ("/openai/v1/./chat/completions", 400, "invalid_request"),
    ];
    for (path, status, reason) in cases {
        // Raw request: the client library would normalise some of these paths.
        let raw_req = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\ncontent-type: application/json\r\ncontent-length: 18\r\nconnection: close\r\n\r\n{{\"model\":\"gpt-4o\"}}"
        );
        let out = raw(proxy.addr, raw_req.as_bytes()).await;
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {out}"
        );
        assert!(
            out.contains(&format!("\"reason\":\"{reason}\"")),
            "{path}: {out}"
        );
    }
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn the_upstream_comes_from_configuration_only() {
    let (mock, proxy) = setup().await;
    // Absolute-form request target naming another host, and a Host header
    // naming yet another: both ignored; the configured upstream gets it.
    let body = r#"{"model":"gpt-4o"}"#;
    let raw_req = format!(
        "POST http://evil.example:1/openai/v1/chat/completions HTTP/1.1\r\nhost: other.example\r\nauthorization: Bearer {GW}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let out = raw(proxy.addr, raw_req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let got = &mock.requests()[0];
    assert_eq!(got.uri, "/v1/chat/completions");
    assert_eq!(got.header("host"), Some(&*mock.addr.to_string()));
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let mock = Mock::start(|r| {
        if r.uri.starts_with("/v1/chat") {
            Reply::Full(302, vec![("location", "/elsewhere".into())], String::new())
        } else {
            Reply::json(200, "{}")
        }
    })
    .await;
    let proxy = Proxy::start(&config(&mock, &cred("c1", "openai", SECRET, ""))).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/elsewhere"));
    assert_eq!(mock.count(), 1, "the redirect was followed");
}

#[tokio::test]
async fn connect_and_upgrade_are_refused() {
    let (mock, proxy) = setup().await;
    let connect = raw(
        proxy.addr,
        format!("CONNECT api.openai.com:443 HTTP/1.1\r\nhost: api.openai.com:443\r\nauthorization: Bearer {GW}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 4"), "{connect}");
    let upgrade = send(
        req("GET", &proxy.url("/openai/v1/realtime"), Some(GW))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (upgrade.status, upgrade.reason()),
        (400, "invalid_request".into())
    );
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn request_smuggling_shapes_are_rejected_or_normalised() {
    let (mock, proxy) = setup().await;
    // CL.TE: Content-Length and Transfer-Encoding together, with a second
    // request smuggled behind the chunked body. hyper reads the body as
    // chunked (RFC 9112 §6.3), drops Content-Length and closes the connection
    // after answering, so the smuggled request is never read, let alone
    // forwarded.
    let body = r#"{"model":"gpt-4o"}"#;
    let smuggled =
        format!("GET /openai/v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\n\r\n");
    let both = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}",
        body.len()
    );
    let out = raw(proxy.addr, both.as_bytes()).await;
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert_eq!(mock.count(), 1);
    assert_eq!(mock.requests()[0].body, body.as_bytes());
    // A chunked body is forwarded with a recomputed Content-Length instead.
    let chunked = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let out = raw(proxy.addr, chunked.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let got = mock.requests();
    let last = got.last().unwrap();
    assert_eq!(last.header("transfer-encoding"), None);
    assert_eq!(
        last.header("content-length"),
        Some(&*body.len().to_string())
    );
    assert_eq!(last.body, body.as_bytes());
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|r| r.method == "POST"),
        "the smuggled GET was forwarded"
    );
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_relayed() {
    let mock = Mock::start(|_| {
        Reply::Full(
            200,
            vec![
                ("connection", "x-upstream-hop".into()),
                ("x-upstream-hop", "1".into()),
                ("keep-alive", "timeout=1".into()),
                ("x-request-id", "up-1".into()),
            ],
            "{}".into(),
        )
    })
    .await;
    let proxy = Proxy::start(&config(&mock, &cred("c1", "openai", SECRET, ""))).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-request-id"), Some("up-1"));
}
