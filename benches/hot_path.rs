//! The proxy's own work per request, beside a baseline.
//!
//! `layer/*` drives one request through `ByokLayer` over an inner service that
//! answers at once, with 10 000 gateway keys and 10 000 credentials loaded:
//! key hash, registry lookup, routing, body read, strict model scan, candidate
//! choice, header strip and inject, response annotation. `baseline/*` calls the
//! same inner service directly: the difference is what the layer costs.
//! `key_hash` and `registry_lookup` isolate the first two steps.
//!
//! ```sh
//! cargo bench --bench hot_path
//! ```

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]
#![allow(clippy::expect_used, reason = "a bench stops on a broken setup")]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};

use byok_proxy::{ByokLayer, Config, ForwardBody, KeyHash, Registry};

const KEYS: usize = 10_000;
const CREDENTIALS: usize = 10_000;

fn registry() -> Registry {
    let mut cfg = String::from("[providers.openai]\nbase_url = \"http://127.0.0.1:9\"\n");
    for i in 0..KEYS {
        cfg.push_str(&format!(
            "[[api_keys]]\nhash = \"{}\"\nworkspace_id = \"ws-{}\"\nuser_id = \"user-{i}\"\n",
            KeyHash::of(format!("gw-key-{i}").as_bytes()).to_hex(),
            i % 1000,
        ));
    }
    for i in 0..CREDENTIALS {
        cfg.push_str(&format!(
            "[[credentials]]\nid = \"cred-{i}\"\nworkspace_id = \"ws-{}\"\nprovider = \"openai\"\nkey = \"sk-bench-secret-{i:06}\"\nsort_order = {}\nallowed_models = [\"openai/gpt-4o\", \"openai/gpt-4o-mini\", \"openai/o1\"]\nallowed_user_ids = [\"user-{i}\", \"user-{}\"]\n",
            i % 1000,
            i % 7,
            (i + 1000) % KEYS,
        ));
    }
    let config = Config::parse(&cfg).expect("bench config");
    Registry::new(config.snapshot().expect("bench snapshot"))
}

fn chat_body(len: usize) -> Bytes {
    let mut body = String::from(r#"{"model":"gpt-4o","messages":[{"role":"user","content":""#);
    while body.len() + 4 < len {
        body.push_str("lorem ipsum ");
    }
    body.push_str(r#""}]}"#);
    Bytes::from(body)
}

fn request(body: &Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri("/openai/v1/chat/completions")
        .header("authorization", "Bearer gw-key-4242")
        .header("content-type", "application/json")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .body(Full::new(body.clone()))
        .expect("request")
}

async fn answer(
    _req: Request<ForwardBody>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let registry = registry();
    let body = chat_body(1024);

    let mut group = c.benchmark_group("per_request_1KB");
    group.throughput(Throughput::Elements(1));
    let layered = ByokLayer::new(registry.clone()).layer(tower::service_fn(answer));
    group.bench_function("layer", |b| {
        b.to_async(&rt).iter(|| {
            let svc = layered.clone();
            let req = request(&body);
            async move {
                let res = svc.oneshot(req).await.expect("infallible");
                assert_eq!(res.status(), 200);
                black_box(res)
            }
        })
    });
    group.bench_function("baseline_inner_only", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = tower::service_fn(answer);
            let req = request(&body);
            async move { black_box(svc.call(req).await.expect("infallible")) }
        })
    });
    group.finish();

    c.bench_function("key_hash", |b| {
        b.iter(|| KeyHash::of(black_box(b"gw-key-4242")))
    });
    let hash = KeyHash::of(b"gw-key-4242");
    c.bench_function("registry_lookup", |b| {
        b.iter(|| black_box(registry.snapshot().principal(black_box(&hash))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
