//! Heap allocations per forwarded request (issue 23), counted by a global
//! allocator that wraps the system's (`stats_alloc`: the crate forbids
//! `unsafe`, benches included, so the counting wrapper comes from a crate).
//!
//! Two cases, each a full request through `ByokLayer` (with metrics, as the
//! binary runs it) over an in-process inner service, the answer read to its
//! end, each on the provider's own route and on the one endpoint
//! (`/api/v1/chat/completions`, SPEC §11):
//!
//! * `json`: a POST of a 1 KB JSON chat body with a gateway key, answered by a
//!   200 chat completion with its usage (one frame);
//! * `sse16`: the same request answered by a stream of 16 events, one frame
//!   each, the last with the usage.
//!
//! Each case is warmed up first (the first requests fill caches: the
//! ledger's book, the metrics' label sets), then 2 000 requests are counted
//! (`ALLOCATIONS_N` sets another count).
//! Allocations count `alloc` calls (reallocations apart); bytes are those
//! asked for by both. Uses the public API only, so it runs on older commits
//! as it is.
//!
//! ```sh
//! cargo bench --bench allocations
//! ```

#![allow(clippy::expect_used, reason = "a bench stops on a broken setup")]

use std::alloc::System;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{Layer, ServiceExt};

mod support;
use support::chat_body;

use byok_proxy::{
    BodyBudget, ByokLayer, Config, ForwardBody, Metrics, Registry, Settings, Snapshot,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests counted per case, unless `ALLOCATIONS_N` says otherwise (two
/// runs with different counts under a heap profiler tell the per-request
/// sites from the set-up's).
fn n() -> u64 {
    std::env::var("ALLOCATIONS_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}
/// Requests before counting.
const WARM_UP: u64 = 200;

// COMPLETION, EVENT and USAGE_EVENT: the end-to-end bench's answers.
include!("../bench/answers.rs");

/// One gateway key ("bench-gateway-key") and one OpenAI credential of its
/// workspace; the upstream is never reached (the inner service answers).
const CONFIG: &str = r#"
[[api_keys]]
hash = "HASH"
workspace_id = "ws-bench"
user_id = "user-bench"

[[credentials]]
id = "cred-bench"
workspace_id = "ws-bench"
provider = "openai"
key = "sk-bench-secret-000001"
"#;

const GATEWAY_KEY: &str = "bench-gateway-key";

fn registry() -> Registry {
    let hash = byok_proxy::KeyHash::of(GATEWAY_KEY.as_bytes()).to_hex();
    let config = Config::parse(&CONFIG.replace("HASH", &hash)).expect("config");
    let snapshot = Snapshot::build(
        Settings::default(),
        config.providers,
        config.api_keys,
        config.credentials,
    )
    .expect("snapshot");
    Registry::new(snapshot)
}

/// The provider's own route, and the one endpoint's (SPEC §11).
const OWN_ROUTE: &str = "/openai/v1/chat/completions";
const ONE_ENDPOINT: &str = "/api/v1/chat/completions";

fn request(path: &str, body: &Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .header("content-type", "application/json")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .body(Full::new(body.clone()))
        .expect("request")
}

/// An answer's body: its frames, handed over one a poll.
struct Frames(VecDeque<Bytes>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Allocations, reallocations and bytes asked for, over [`n`] requests.
struct Counted {
    allocs: u64,
    reallocs: u64,
    bytes: u64,
}

/// The inner service: `frames` under `content_type`, whatever it is asked.
fn inner(
    content_type: &'static str,
    frames: &[&'static str],
) -> impl tower::Service<
    Request<ForwardBody>,
    Response = Response<Frames>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    // Shared, so that cloning the service allocates nothing (as cloning
    // hyper's client allocates nothing): the layer clones it per request.
    let frames: Arc<[Bytes]> = frames
        .iter()
        .map(|f| Bytes::from_static(f.as_bytes()))
        .collect();
    tower::service_fn(move |_req: Request<ForwardBody>| {
        let mut res = Response::new(Frames(frames.iter().cloned().collect()));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        async move { Ok::<_, Infallible>(res) }
    })
}

/// Runs `WARM_UP` then [`n`] requests through `svc`, each answer read to its
/// end; counts them.
fn count<S, RB>(rt: &tokio::runtime::Runtime, svc: S, path: &str) -> Counted
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone,
    S::Error: std::fmt::Debug,
    RB: http_body::Body,
    RB::Error: std::fmt::Debug,
{
    let body = chat_body(1024);
    let one = || async {
        let res = svc
            .clone()
            .oneshot(request(path, &body))
            .await
            .expect("answer");
        assert_eq!(res.status(), 200);
        let read = res.into_body().collect().await.expect("body").to_bytes();
        assert!(!read.is_empty());
    };
    rt.block_on(async {
        for _ in 0..WARM_UP {
            one().await;
        }
    });
    let region = Region::new(GLOBAL);
    rt.block_on(async {
        for _ in 0..n() {
            one().await;
        }
    });
    let stats = region.change();
    Counted {
        allocs: stats.allocations as u64,
        reallocs: stats.reallocations as u64,
        bytes: (stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize) as u64,
    }
}

fn row(name: &str, c: &Counted) {
    let n = n() as f64;
    println!(
        "| {name} | {:.1} | {:.1} | {:.0} |",
        c.allocs as f64 / n,
        c.reallocs as f64 / n,
        c.bytes as f64 / n,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let registry = registry();
    let sse: Vec<&str> = std::iter::repeat_n(EVENT, 15)
        .chain([USAGE_EVENT])
        .collect();
    println!(
        "allocations per request, {} requests after {WARM_UP} of warm-up",
        n()
    );
    println!();
    println!("| case | allocs/req | reallocs/req | bytes/req |");
    println!("|---|--:|--:|--:|");
    for (name, content_type, frames, path) in [
        (
            "1 KB JSON, JSON answer",
            "application/json",
            vec![COMPLETION],
            OWN_ROUTE,
        ),
        (
            "1 KB JSON, JSON answer, one endpoint",
            "application/json",
            vec![COMPLETION],
            ONE_ENDPOINT,
        ),
        (
            "1 KB JSON, 16-event SSE answer",
            "text/event-stream",
            sse.clone(),
            OWN_ROUTE,
        ),
        (
            "1 KB JSON, 16-event SSE answer, one endpoint",
            "text/event-stream",
            sse.clone(),
            ONE_ENDPOINT,
        ),
    ] {
        // With metrics and a body budget, as the binary runs it.
        let layered = ByokLayer::new(registry.clone())
            .with_metrics(Arc::new(Metrics::new()))
            .with_body_budget(BodyBudget::new(256 << 20))
            .layer(inner(content_type, &frames));
        row(&format!("layer: {name}"), &count(&rt, layered, path));
        // The bench's own: the request built, the inner service's answer
        // made and read, without the layer.
        row(
            &format!("baseline, inner service alone: {name}"),
            &count(&rt, inner(content_type, &frames), path),
        );
    }
}
