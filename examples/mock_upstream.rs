//! A stand-in LLM provider for the quickstart: it answers every request with
//! what it received (method, path, headers, body), so you can see what the
//! proxy forwarded — the provider secret it injected, and the client
//! credentials it stripped. A JSON body with `"stream": true` gets a short
//! server-sent-events stream instead.
//!
//! ```sh
//! cargo run --example mock_upstream            # listens on 127.0.0.1:9999
//! cargo run --example mock_upstream -- 127.0.0.1:7000
//! ```
//!
//! With `--fast` after the address it is the fast upstream of
//! `scripts/bench-e2e`: it reads each request body to its end, then answers
//! with a fixed ~300-byte chat completion, whatever was asked. A query
//! `?sse=N` gets `text/event-stream` with N `data: {…}` events instead, each
//! its own body frame: back to back, one socket write each (burst), or
//! `&pace_ms=M` apart (paced); the last carries a usage report, as OpenAI's
//! streams do with `stream_options.include_usage`.
//!
//! ```sh
//! cargo run --release --example mock_upstream -- 127.0.0.1:7000 --fast
//! curl -s 'http://127.0.0.1:7000/v1/chat/completions?sse=16&pace_ms=6' -d '{}'
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Sleep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".to_owned())
        .parse()?;
    let fast = match std::env::args().nth(2).as_deref() {
        None => false,
        Some("--fast") => true,
        Some(other) => return Err(format!("unknown argument {other:?} (only --fast)").into()),
    };
    let listener = TcpListener::bind(addr).await?;
    println!(
        "mock upstream{} listening on http://{}",
        if fast { " (fast)" } else { "" },
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| async move {
                if fast {
                    answer_fast(req).await
                } else {
                    answer(req).await.map(|res| res.map(Either::Left))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// The fast mode's answers, shared with `benches/hot_path.rs`: COMPLETION,
// EVENT, USAGE_EVENT.
include!("../bench/answers.rs");

async fn answer_fast(
    req: Request<Incoming>,
) -> Result<Response<Either<Full<Bytes>, Sse>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    // Read the whole request, as a provider would, without keeping it.
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    let (mut events, mut pace_ms) = (None, 0);
    for pair in parts.uri.query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("sse", n)) => events = n.parse::<usize>().ok(),
            Some(("pace_ms", m)) => pace_ms = m.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    let (body, content_type) = match events {
        Some(left) => {
            let pace = (pace_ms > 0).then(|| Duration::from_millis(pace_ms));
            let sse = Sse {
                left,
                pace,
                gap: false,
                sleep: None,
            };
            (Either::Right(sse), "text/event-stream")
        }
        None => (
            Either::Left(Full::new(Bytes::from_static(COMPLETION.as_bytes()))),
            "application/json",
        ),
    };
    let mut res = Response::new(body);
    res.headers_mut()
        .insert("content-type", http::HeaderValue::from_static(content_type));
    Ok(res)
}

/// A stream of `left` events, one body frame each. Between two frames there
/// is a gap: `pace` of sleep, or (burst) one `Pending` with an immediate
/// wake-up, so that hyper writes each frame to the socket by itself instead
/// of gathering all of them into one write.
#[derive(Debug)]
struct Sse {
    left: usize,
    pace: Option<Duration>,
    gap: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for Sse {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(None);
        }
        if this.gap {
            match this.pace {
                Some(pace) => {
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(pace)));
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.sleep = None;
                }
                None => {
                    this.gap = false;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        this.left -= 1;
        this.gap = true;
        let event = if this.left == 0 { USAGE_EVENT } else { EVENT };
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(event.as_bytes())))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let model = parsed
        .as_ref()
        .and_then(|v| v.get("model"))
        .and_then(|m| m.as_str())
        .unwrap_or("unknown")
        .to_owned();
    let streaming = parsed
        .as_ref()
        .and_then(|v| v.get("stream"))
        .and_then(|s| s.as_bool())
        .unwrap_or(false);

    if streaming {
        let mut sse = String::new();
        for word in ["Hello", " from", " the", " mock"] {
            let chunk = serde_json::json!({
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {"content": word}}],
            });
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        let mut res = Response::new(Full::new(Bytes::from(sse)));
        res.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("text/event-stream"),
        );
        return Ok(res);
    }

    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    // OpenAI's chat completion and Anthropic's message in one: each SDK
    // reads its own members.
    let echo = serde_json::json!({
        "id": "mock-1",
        "object": "chat.completion",
        "type": "message",
        "role": "assistant",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock"}}],
        "content": [{"type": "text", "text": "Hello from the mock"}],
        "stop_reason": "end_turn",
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "input_tokens": 3, "output_tokens": 4},
        "received": {
            "method": parts.method.as_str(),
            "path": parts.uri.to_string(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        },
    });
    let mut res = Response::new(Full::new(Bytes::from(echo.to_string())));
    res.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}
