//! SPEC §5: candidate order, failover on the retryable statuses, connection
//! errors and first-byte timeouts; nothing retried after the response began;
//! streaming and cancellation.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;

use crate::support::*;

/// The mock's answer is chosen by the secret the request carries:
/// `sk-<status>-<anything>` answers that status.
fn by_secret(r: &Recorded) -> Reply {
    let auth = r.header("authorization").unwrap_or("");
    let status: u16 = auth
        .strip_prefix("Bearer sk-")
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    Reply::json(
        status,
        &format!(r#"{{"from":"{auth}","error":"Incorrect API key provided: {auth}"}}"#),
    )
}

fn secrets_seen(mock: &Mock) -> Vec<String> {
    mock.requests()
        .iter()
        .map(|r| {
            r.header("authorization")
                .unwrap_or("")
                .trim_start_matches("Bearer ")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn order_is_non_fallback_by_sort_order_then_fallback_and_never_disabled() {
    let mock = Mock::start(by_secret).await;
    let cfg = config(
        &mock,
        &[
            cred(
                "fb",
                "openai",
                "sk-503-fallback",
                "is_fallback = true\nsort_order = -10",
            ),
            cred("late", "openai", "sk-503-late", "sort_order = 5"),
            cred(
                "off",
                "openai",
                "sk-200-disabled",
                "disabled = true\nsort_order = -20",
            ),
            cred(
                "b-early",
                "openai",
                "sk-429-early-b",
                "sort_order = 1\ncreated_at = \"2025-01-01T00:00:00Z\"",
            ),
            cred(
                "a-early",
                "openai",
                "sk-500-early-a",
                "sort_order = 1\ncreated_at = \"2025-01-01T00:00:00Z\"",
            ),
            cred(
                "first",
                "openai",
                "sk-529-first",
                "sort_order = 1\ncreated_at = \"2024-01-01T00:00:00+02:00\"",
            ),
            cred(
                "fb2",
                "openai",
                "sk-200-fallback2",
                "is_fallback = true\nsort_order = 0",
            ),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-byok-credential-id"), Some("fb2"));
    assert_eq!(r.header("x-byok-attempts"), Some("6"));
    assert_eq!(
        secrets_seen(&mock),
        [
            "sk-529-first",
            "sk-500-early-a",
            "sk-429-early-b",
            "sk-503-late",
            "sk-503-fallback",
            "sk-200-fallback2"
        ]
    );
    // Every attempt carried the same request.
    let got = mock.requests();
    assert!(got
        .iter()
        .all(|g| g.body == got[0].body && g.uri == got[0].uri));
}

#[tokio::test]
async fn each_retryable_status_fails_over_and_others_return_at_once() {
    let retryable = [401u16, 403, 408, 429, 500, 502, 503, 504, 529];
    for status in retryable.into_iter().chain([400, 404, 409, 422]) {
        let mock = Mock::start(by_secret).await;
        let cfg = config(
            &mock,
            &[
                cred("a", "openai", &format!("sk-{status}-a"), "sort_order = 0"),
                cred("b", "openai", "sk-200-b", "sort_order = 1"),
            ]
            .concat(),
        );
        let proxy = Proxy::start(&cfg).await;
        let r = chat(&proxy, GW, "gpt-4o").await;
        let want = if retryable.contains(&status) {
            (200, Some("b"), Some("2"), 2)
        } else {
            (status, Some("a"), Some("1"), 1)
        };
        let got = (
            r.status,
            r.header("x-byok-credential-id"),
            r.header("x-byok-attempts"),
            mock.count(),
        );
        assert_eq!(got, want, "upstream status {status}");
    }
}

#[tokio::test]
async fn a_last_401_or_403_becomes_502_without_the_providers_words() {
    for status in [401u16, 403] {
        let mock = Mock::start(by_secret).await;
        let cfg = config(
            &mock,
            &[
                cred("a", "openai", &format!("sk-{status}-a"), ""),
                cred("b", "openai", &format!("sk-{status}-b"), "sort_order = 1"),
            ]
            .concat(),
        );
        let proxy = Proxy::start(&cfg).await;
        let r = chat(&proxy, GW, "gpt-4o").await;
        assert_eq!(
            (r.status, r.reason()),
            (502, "upstream_rejected_credential".into())
        );
        assert_eq!(r.header("x-byok-credential-id"), Some("b"));
        assert_eq!(r.header("x-byok-attempts"), Some("2"));
        assert!(
            !r.text().contains("Incorrect API key") && !r.text().contains("sk-"),
            "{}",
            r.text()
        );
    }
}

#[tokio::test]
async fn a_last_retryable_status_is_returned_as_it_came() {
    let mock = Mock::start(by_secret).await;
    let cfg = config(
        &mock,
        &[
            cred("a", "openai", "sk-429-a", ""),
            cred("b", "openai", "sk-503-b", "sort_order = 1"),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("sk-503-b"),
        "the upstream body is relayed as is: {}",
        r.text()
    );
    assert_eq!(r.header("x-byok-attempts"), Some("2"));
}

#[tokio::test]
async fn connection_errors_fail_over_and_finally_answer_502() {
    let mock = Mock::start(by_secret).await;
    let dead = dead_addr();
    let cfg = config(
        &mock,
        &[
            cred(
                "dead",
                "openai",
                "sk-200-dead",
                &format!("base_url = \"http://{dead}\""),
            ),
            cred("live", "openai", "sk-200-live", "sort_order = 1"),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(
        (r.status, r.header("x-byok-credential-id")),
        (200, Some("live"))
    );
    assert_eq!(r.header("x-byok-attempts"), Some("2"));

    let cfg = config(
        &mock,
        &cred(
            "dead",
            "openai",
            "sk-200-dead",
            &format!("base_url = \"http://{dead}\""),
        ),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!((r.status, r.reason()), (502, "upstream_unreachable".into()));
    assert_eq!(r.header("x-byok-credential-id"), Some("dead"));
}

#[tokio::test]
async fn first_byte_timeouts_fail_over_and_finally_answer_504() {
    let mock = Mock::start(|r| {
        if r.header("authorization") == Some("Bearer sk-hang") {
            Reply::Hang
        } else {
            Reply::json(200, "{}")
        }
    })
    .await;
    let server = "first_byte_timeout_secs = 0.3";
    let cfg = config_with_server(
        &mock,
        server,
        &[
            cred("slow", "openai", "sk-hang", ""),
            cred("fast", "openai", "sk-fast", "sort_order = 1"),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(
        (r.status, r.header("x-byok-credential-id")),
        (200, Some("fast"))
    );

    let cfg = config_with_server(&mock, server, &cred("slow", "openai", "sk-hang", ""));
    let proxy = Proxy::start(&cfg).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!((r.status, r.reason()), (504, "upstream_timeout".into()));
}

struct Streaming {
    mock: Mock,
    gate: Arc<Notify>,
    cancelled: Arc<Notify>,
}

async fn streaming_mock() -> Streaming {
    let gate = Arc::new(Notify::new());
    let cancelled = Arc::new(Notify::new());
    let (g, c) = (gate.clone(), cancelled.clone());
    let mock = Mock::start(move |_| Reply::Stream {
        first: "data: {\"n\":1}\n\n".into(),
        rest: vec!["data: {\"n\":2}\n\n".into(), "data: [DONE]\n\n".into()],
        gate: g.clone(),
        cancelled: c.clone(),
    })
    .await;
    Streaming {
        mock,
        gate,
        cancelled,
    }
}

async fn open_stream(proxy: &Proxy) -> http::Response<hyper::body::Incoming> {
    let r = req("POST", &proxy.url("/openai/v1/chat/completions"), Some(GW))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","stream":true}"#,
        )))
        .unwrap();
    tokio::time::timeout(PATIENCE, client().request(r))
        .await
        .unwrap()
        .unwrap()
}

async fn next_chunk(body: &mut hyper::body::Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("a frame in time")?;
        if let Ok(data) = frame.ok()?.into_data() {
            return Some(data);
        }
    }
}

#[tokio::test]
async fn sse_streams_through_as_it_arrives_and_failover_never_follows_the_first_byte() {
    let s = streaming_mock().await;
    let proxy = Proxy::start(&config(
        &s.mock,
        &cred("c1", "openai", "sk-stream-0001", ""),
    ))
    .await;
    let res = open_stream(&proxy).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    // The first event arrives while the upstream is still holding the rest:
    // nothing is buffered.
    assert_eq!(next_chunk(&mut body).await.unwrap(), "data: {\"n\":1}\n\n");
    s.gate.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = next_chunk(&mut body).await {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"data: {\"n\":2}\n\ndata: [DONE]\n\n");
    assert_eq!(s.mock.count(), 1);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    let s = streaming_mock().await;
    let proxy = Proxy::start(&config(
        &s.mock,
        &cred("c1", "openai", "sk-stream-0001", ""),
    ))
    .await;
    let res = open_stream(&proxy).await;
    let mut body = res.into_body();
    assert!(next_chunk(&mut body).await.is_some());
    drop(body);
    // The upstream sees its reader gone before the gate ever opens.
    tokio::time::timeout(PATIENCE, s.cancelled.notified())
        .await
        .expect("the upstream request was not cancelled");
}

#[tokio::test]
async fn a_silent_stream_is_cut_after_the_idle_timeout() {
    let s = streaming_mock().await;
    let cfg = config_with_server(
        &s.mock,
        "idle_timeout_secs = 0.3",
        &cred("c1", "openai", "sk-stream-0001", ""),
    );
    let proxy = Proxy::start(&cfg).await;
    let res = open_stream(&proxy).await;
    let mut body = res.into_body();
    assert!(next_chunk(&mut body).await.is_some());
    // The gate never opens: the proxy ends the stream with an error.
    let end = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .expect("the stream was not cut");
    assert!(matches!(end, Some(Err(_)) | None), "{end:?}");
    tokio::time::timeout(PATIENCE, s.cancelled.notified())
        .await
        .expect("upstream not released");
}

#[tokio::test]
async fn a_connect_timeout_fails_over_as_a_connection_error() {
    // A listener whose accept queue is full and never drained: the kernel
    // drops further SYNs, so a connect hangs until the connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let stuck = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(stuck),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let mock = Mock::start(by_secret).await;
    let server = "connect_timeout_secs = 0.3\nfirst_byte_timeout_secs = 30";
    let cfg = config_with_server(
        &mock,
        server,
        &[
            cred(
                "stuck",
                "openai",
                "sk-200-stuck",
                &format!("base_url = \"http://{stuck}\""),
            ),
            cred("live", "openai", "sk-200-live", "sort_order = 1"),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(
        (r.status, r.header("x-byok-credential-id")),
        (200, Some("live"))
    );
    assert_eq!(r.header("x-byok-attempts"), Some("2"));
    // Alone, the stuck upstream is a connection error (502), not a first-byte
    // timeout (504): the connect timeout fired, long before 30 s.
    let cfg = config_with_server(
        &mock,
        server,
        &cred(
            "stuck",
            "openai",
            "sk-200-stuck",
            &format!("base_url = \"http://{stuck}\""),
        ),
    );
    let proxy = Proxy::start(&cfg).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!((r.status, r.reason()), (502, "upstream_unreachable".into()));
    drop((listener, fillers));
}
