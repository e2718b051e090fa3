//! Issue 10 / SPEC §4 "Limits and hostile peers": what a hostile or broken
//! upstream answers never reaches the client as it was sent — a stale
//! `Content-Length` beside `Transfer-Encoding`, an unsolicited `101`, the
//! injected secret echoed in a response header — and a request without a
//! key learns nothing about which providers exist.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

const SECRET: &str = "sk-CANARY-hostile-upstream-7f3a";

/// An upstream that answers every request with the same raw bytes and
/// closes, counting the requests it read.
struct RawUpstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(answer: &'static [u8]) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let counted = counted.clone();
                tokio::spawn(async move {
                    // Read the head (and whatever body came with it).
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(answer).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        RawUpstream { addr, hits }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn proxy_to(up: &RawUpstream, extra_creds: &str) -> Proxy {
    let creds = format!("{}{extra_creds}", cred("c1", "openai", SECRET, ""));
    Proxy::start(&config_at(&up.url(), "", &creds)).await
}

#[tokio::test]
async fn a_response_with_both_length_and_chunked_framing_loses_the_stale_length() {
    let up = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 100\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let proxy = proxy_to(&up, "").await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello world", "the whole chunked body");
    assert_ne!(
        r.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"100"[..]),
        "the stale length is not relayed"
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unsolicited_101_becomes_502_and_fails_over() {
    let up = RawUpstream::start(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: evil\r\n\r\n",
    )
    .await;
    let proxy = proxy_to(&up, "").await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.reason(), "upstream_unreachable");
    assert!(r.headers.get("upgrade").is_none());
    // With a second credential, the 101 is a failed attempt like any other.
    let proxy = proxy_to(&up, &cred("c2", "openai", "sk-second-credential-0002", "")).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.headers.get("x-byok-attempts").unwrap(),
        "2",
        "both credentials were tried"
    );
}

#[tokio::test]
async fn credential_headers_in_a_response_are_never_relayed() {
    // The upstream echoes the secret it was sent, in every credential header.
    static ANSWER: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
        authorization: Bearer sk-CANARY-hostile-upstream-7f3a\r\n\
        x-api-key: sk-CANARY-hostile-upstream-7f3a\r\n\
        api-key: sk-CANARY-hostile-upstream-7f3a\r\n\
        x-goog-api-key: sk-CANARY-hostile-upstream-7f3a\r\n\
        x-kept: yes\r\ncontent-length: 2\r\n\r\n{}";
    let up = RawUpstream::start(ANSWER.as_bytes()).await;
    let proxy = proxy_to(&up, "").await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("x-kept").unwrap(), "yes");
    for name in ["authorization", "x-api-key", "api-key", "x-goog-api-key"] {
        assert!(r.headers.get(name).is_none(), "{name} relayed");
    }
    for (name, value) in &r.headers {
        assert!(
            !value
                .as_bytes()
                .windows(SECRET.len())
                .any(|w| w == SECRET.as_bytes()),
            "{name} carries the secret"
        );
    }
}

#[tokio::test]
async fn without_a_key_a_known_and_an_unknown_provider_answer_alike() {
    let up = RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
    let proxy = proxy_to(&up, "").await;
    let body = r#"{"model":"gpt-4o"}"#;
    let mut answers = Vec::new();
    for path in [
        "/openai/v1/chat/completions",
        "/no-such-provider/v1/chat/completions",
    ] {
        for key in [None, Some("not-a-registered-key")] {
            let r = send(
                req("POST", &proxy.url(path), key)
                    .header("content-type", "application/json")
                    .body(body.to_owned().into())
                    .unwrap(),
            )
            .await;
            answers.push((path, key.is_some(), r.status, r.reason().to_owned()));
        }
    }
    assert_eq!(
        answers,
        [
            (
                "/openai/v1/chat/completions",
                false,
                401,
                "missing_api_key".to_owned()
            ),
            (
                "/openai/v1/chat/completions",
                true,
                401,
                "invalid_api_key".to_owned()
            ),
            (
                "/no-such-provider/v1/chat/completions",
                false,
                401,
                "missing_api_key".to_owned()
            ),
            (
                "/no-such-provider/v1/chat/completions",
                true,
                401,
                "invalid_api_key".to_owned()
            ),
        ]
    );
    // With a valid key, an unknown provider is 404.
    let r = post(&proxy, "/no-such-provider/v1/chat/completions", GW, body).await;
    assert_eq!((r.status, r.reason().as_str()), (404, "unknown_provider"));
    assert_eq!(up.hits.load(Ordering::SeqCst), 0, "nothing was forwarded");
}

/// The answer's shape tells no more than its status: without a key, a
/// configured provider of the operator's own and an unknown one answer in
/// the same (OpenRouter's) shape, with the same headers.
#[tokio::test]
async fn without_a_key_a_configured_provider_looks_like_an_unknown_one() {
    let up = RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
    let cfg = config_at(&up.url(), "", "").replace(
        "[providers.openai]",
        &format!(
            "[providers.in-house]\nbase_url = \"{}\"\nauth = \"x-api-key\"\n[providers.openai]",
            up.url()
        ),
    );
    let proxy = Proxy::start(&cfg).await;
    let shape = |r: &Resp| {
        let mut names: Vec<String> = r
            .headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| !matches!(k.as_str(), "date" | "content-length"))
            .collect();
        names.sort();
        let v = r.json();
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.extend(v["error"].as_object().unwrap().keys().cloned());
        keys.sort();
        (r.status, names, keys)
    };
    let mut shapes = Vec::new();
    for path in ["/in-house/v1/messages", "/no-such-provider/v1/messages"] {
        let r = send(
            req("POST", &proxy.url(path), None)
                .header("content-type", "application/json")
                .body(r#"{"model":"m"}"#.to_owned().into())
                .unwrap(),
        )
        .await;
        shapes.push(shape(&r));
    }
    assert_eq!(shapes[0], shapes[1]);
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
}
