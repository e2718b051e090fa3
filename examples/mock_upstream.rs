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

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".to_owned())
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!(
        "mock upstream listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(answer);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
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
    let echo = serde_json::json!({
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock"}}],
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
