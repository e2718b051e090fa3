//! Issue 10 / SPEC §4 "Limits and hostile peers": what one client can make
//! the proxy hold is bounded — a request head (431 beyond
//! `server.max_header_bytes`), a stalled body (408 after
//! `server.body_timeout_secs`, connection closed), and the number of
//! connections (`server.max_connections`; one more is closed at once).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn proxy_with(mock: &Mock, server: &str) -> Proxy {
    let creds = cred("c1", "openai", "sk-limits-000000000001", "");
    Proxy::start(&config_with_server(mock, server, &creds)).await
}

/// Reads what the server sends until it closes, within PATIENCE.
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let mock = Mock::ok().await;
    let proxy = proxy_with(&mock, "body_timeout_secs = 0.3").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // ...and nothing more: the proxy answers and closes by itself.
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(mock.count(), 0, "nothing was forwarded");
    // The proxy still serves.
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
}

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let mock = Mock::ok().await;
    let proxy = proxy_with(&mock, "max_header_bytes = 16384").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let big = "a".repeat(32 * 1024);
    let request = format!(
        "GET /openai/v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\nx-big: {big}\r\n\r\n"
    );
    // The proxy may answer and close before taking all of it.
    let _ = s.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert_eq!(mock.count(), 0);
    // A head within the limit is served.
    let r = send(
        req("GET", &proxy.url("/openai/v1/models"), Some(GW))
            .header("x-big", "a".repeat(8 * 1024))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let mock = Mock::ok().await;
    let proxy = proxy_with(&mock, "max_connections = 2").await;
    // Two idle connections take both slots (each has proved it is served).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(PATIENCE, s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    // A third is closed without an answer.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    assert_eq!(read_until_closed(&mut third).await, "");
    proxy.wait_log("shedding connections").await;
    // Once one is closed, its slot serves again (the proxy notices the close
    // on its own schedule: poll with a deadline).
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        if read_until_closed(&mut s).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a chunked request of `chunks` × `size` bytes to the proxy the way
/// most HTTP clients do — the whole body first, then the answer — and
/// returns the head of the answer. A write that fails (the proxy closed on
/// the client mid-upload, a reset) fails the test: such a client never sees
/// the answer.
async fn chunked_post(proxy: &Proxy, key: Option<&str>, chunks: usize, size: usize) -> String {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n{auth}\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let mut chunk = format!("{size:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', size));
    chunk.extend_from_slice(b"\r\n");
    let sent: std::io::Result<()> = tokio::time::timeout(PATIENCE, async {
        s.write_all(head.as_bytes()).await?;
        for _ in 0..chunks {
            s.write_all(&chunk).await?;
        }
        s.write_all(b"0\r\n\r\n").await
    })
    .await
    .expect("the upload ends within patience");
    assert!(sent.is_ok(), "the upload failed: {sent:?}");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            other => panic!("reading the answer: {other:?}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_early_answer_reaches_a_client_still_sending_its_body() {
    let mock = Mock::ok().await;
    // 8 MiB allowed; 12 MiB sent, more than the sockets' buffers hold.
    let proxy = proxy_with(&mock, "max_body_bytes = 8388608").await;
    let answer = chunked_post(&proxy, Some(GW), 192, 64 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Refused before the body is read at all (no key): the 401 arrives.
    let answer = chunked_post(&proxy, None, 192, 64 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(mock.count(), 0);
}

/// SPEC §4: an early answer is written at once. It takes a few
/// milliseconds (the spec's bound is 100 ms); the test allows a second, so
/// that a loaded 2-core CI machine does not fail it, and still fails the
/// proxy that waited on a drain (5 s) or on the body's timeout (60 s).
const AT_ONCE: Duration = Duration::from_secs(1);

/// Writes a request head (no body) on a fresh connection and reads until
/// the head of a final answer (not `1xx`) has arrived, failing the test if
/// it has not within [`AT_ONCE`]. Returns the connection and every byte read,
/// interim answers included.
async fn head_only(proxy: &Proxy, head: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let sent = tokio::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(AT_ONCE, async {
        loop {
            let text = String::from_utf8_lossy(&out).into_owned();
            let finals = text
                .split("HTTP/1.1 ")
                .skip(1)
                .any(|answer| !answer.starts_with('1') && answer.contains("\r\n\r\n"));
            if finals {
                return;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        read.is_ok(),
        "no final answer within {AT_ONCE:?} ({:?} after the head); got {text:?}",
        sent.elapsed()
    );
    (s, text)
}

#[tokio::test]
async fn an_early_answer_to_a_client_waiting_to_send_its_body_is_written_at_once() {
    let mock = Mock::ok().await;
    let proxy = proxy_with(&mock, "").await;
    // A valid length (10 MB, the default max_body_bytes), an unknown key,
    // and the body held back until an answer comes.
    let head = "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n\
                authorization: Bearer gw-nobody-knows-this-key\r\n\
                content-type: application/json\r\ncontent-length: 10485760\r\n\r\n";
    let (mut s, answer) = head_only(&proxy, head).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("invalid_api_key"), "{answer}");
    // The client sends its body after all: it is drained, and the
    // connection serves the next request.
    let body = vec![b' '; 10 * 1024 * 1024];
    tokio::time::timeout(PATIENCE, s.write_all(&body))
        .await
        .expect("the body is taken within patience")
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let rest = read_until_closed(&mut s).await;
    assert!(rest.contains("HTTP/1.1 200"), "{rest:.300}");
    assert_eq!(mock.count(), 0, "nothing was forwarded");
}

#[tokio::test]
async fn expect_100_continue_gets_the_early_answer_without_100_continue() {
    let mock = Mock::ok().await;
    let proxy = proxy_with(&mock, "").await;
    // A valid key and a declared length over max_body_bytes: 413 at once.
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\n\
         content-type: application/json\r\ncontent-length: 20971520\r\nexpect: 100-continue\r\n\r\n"
    );
    let (mut s, answer) = head_only(&proxy, &head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    // It says the connection closes (its body will not be read), and it
    // does; no late 100 Continue comes first.
    assert!(answer.contains("connection: close"), "{answer}");
    let rest = read_until_closed(&mut s).await;
    assert!(!rest.contains("HTTP/1.1 1"), "{rest}");
    // An unknown key with a valid length: 401 at once, no 100 either.
    let head = "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n\
                authorization: Bearer gw-nobody-knows-this-key\r\ncontent-type: application/json\r\n\
                content-length: 10485760\r\nexpect: 100-continue\r\n\r\n";
    let (_s, answer) = head_only(&proxy, head).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(mock.count(), 0, "nothing was forwarded");
}

/// Opens a request on `/openai/v1/chat/completions` with `framing` (a
/// `content-length` or `transfer-encoding` line), sends `sent` body bytes
/// and stalls there, holding them in the proxy.
async fn holder(proxy: &Proxy, framing: &str, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GW}\r\n\
         content-type: application/json\r\n{framing}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut body = vec![b' '; sent];
    if framing.contains("chunked") {
        let mut chunk = format!("{sent:x}\r\n").into_bytes();
        chunk.append(&mut body);
        chunk.extend_from_slice(b"\r\n");
        body = chunk;
    }
    s.write_all(&body).await.unwrap();
    s
}

/// A chat request whose body is `size` bytes, on `provider`'s route.
async fn chat_of_size(proxy: &Proxy, provider: &str, size: usize) -> Resp {
    let head = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"pad":""#;
    let pad = size - head.len() - 2;
    let body = format!("{head}{}\"}}", " ".repeat(pad));
    assert_eq!(body.len(), size);
    let path = match provider {
        "anthropic" => "/anthropic/v1/messages",
        _ => "/openai/v1/chat/completions",
    };
    post(proxy, path, GW, &body).await
}

#[tokio::test]
async fn request_bodies_held_at_once_are_bounded_by_max_buffered_body_bytes() {
    use crate::support::admin::{admin_section, ADMIN_LISTEN, MGMT};
    use crate::support::metrics::{family, gauge, scrape};
    const MIB: usize = 1024 * 1024;
    let mock = Mock::ok().await;
    let creds = format!(
        "{}{}{}",
        admin_section(ADMIN_LISTEN, &[MGMT]),
        cred("c1", "openai", "sk-limits-000000000001", ""),
        cred("c2", "anthropic", "sk-limits-000000000002", ""),
    );
    let proxy = Proxy::start(&config_with_server(
        &mock,
        "max_body_bytes = 1048576\nmax_buffered_body_bytes = 3145728",
        &creds,
    ))
    .await;
    let admin = proxy.admin_addr().await;
    let held = || async {
        let (_, samples) = scrape(admin).await;
        gauge(&samples, "byok_request_body_bytes_held")
    };
    // Two clients declare 1 MiB and stall after 900 KiB; a third sends
    // 900 KiB chunked, and stalls: the proxy holds what each declared, and
    // what the chunked one sent.
    let mut holders = vec![
        holder(&proxy, "content-length: 1048576", 900 * 1024).await,
        holder(&proxy, "content-length: 1048576", 900 * 1024).await,
        holder(&proxy, "transfer-encoding: chunked", 900 * 1024).await,
    ];
    let full = (2 * MIB + 900 * 1024) as f64;
    poll_until(|| async { held().await == full }).await;
    // 124 KiB are left: a body of 200 KB does not fit. 503, with when to
    // retry, in the route's own shape, before its body is read.
    let r = chat_of_size(&proxy, "openai", 200_000).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.reason(), "body_budget_exhausted");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-should-retry"), Some("true"));
    assert_eq!(r.json()["error"]["type"], "api_error", "{}", r.text());
    let r = chat_of_size(&proxy, "anthropic", 200_000).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["type"], "error", "{}", r.text());
    assert_eq!(r.header("x-should-retry"), Some("true"));
    // A chunked body that outgrows what is left: 503 as well.
    let mut s = holder(&proxy, "transfer-encoding: chunked", 200_000).await;
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 503");
    drop(s);
    // A small body still fits beside the holders.
    assert_eq!(chat_of_size(&proxy, "openai", 1000).await.status, 200);
    assert_eq!(
        mock.count(),
        1,
        "only the request that fitted went upstream"
    );
    let (_, samples) = scrape(admin).await;
    assert_eq!(gauge(&samples, "byok_body_budget_refusals_total"), 3.0);
    assert_eq!(
        family(&samples, "byok_requests_total")["outcome=body_budget_exhausted,provider=openai"],
        2.0
    );
    // The holders go: what they held comes back, and large bodies are
    // served again.
    holders.clear();
    poll_until(|| async { held().await == 0.0 }).await;
    for _ in 0..3 {
        assert_eq!(chat_of_size(&proxy, "openai", 1_000_000).await.status, 200);
    }
    assert_eq!(held().await, 0.0);
    assert_eq!(mock.count(), 4);
}
