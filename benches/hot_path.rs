//! The proxy's own work, each figure beside a baseline.
//!
//! * `per_request/*`: one request through `ByokLayer` over an inner service
//!   that answers at once, with 100 000 gateway keys and 100 000 credentials
//!   loaded (10 000 workspaces of 10 credentials, allowlisted per user): key
//!   hash, registry lookup, routing, body read, strict model scan, candidate
//!   choice, header strip and inject, response annotation, access log (no
//!   subscriber installed, so its formatting is skipped), Prometheus metrics. `baseline_inner_only`
//!   calls the inner service directly: the difference is the layer's cost.
//!   `layer_post_1KB_json_usage` and `..._sse16_usage` read the answer to its
//!   end, a chat completion or 16 events with a usage report, which the layer
//!   reads and counts (SPEC §8); their `..._unread_baseline` twins answer the
//!   same bytes under a content type that carries no report: the difference
//!   is usage accounting's cost.
//! * `decision/*`: the decision path alone ([`byok_proxy::decide`]): key hash,
//!   registry lookup, candidate choice (the whole group of 10 scanned), header
//!   strip and inject.
//! * `registry/*`: a principal lookup in the snapshot's `DashMap` beside a
//!   `RwLock<HashMap>`.
//! * `model/*`: strict model extraction (`strict_scan`, the proxy's scanner)
//!   beside the `serde_json` visitor of issue 9 (`serde_visitor`: `IgnoredAny`
//!   values, which let lone surrogate escapes and any nesting through;
//!   `serde_visitor_strict`: the same plus the second pass that closes those
//!   gaps) and `serde_json::from_slice::<Value>`, at 1 KB, 100 KB and 1 MB.
//! * `one_edit/*`: the one endpoint's body edit (issue 25: `model` set,
//!   `models` and `provider` removed, every other byte kept) beside a plain
//!   copy of the body and beside the same edit through `serde_json::Value`
//!   (which loses key order, number spellings and duplicate keys), at 1 KB
//!   and 100 KB.
//!
//! ```sh
//! cargo bench --bench hot_path
//! ```

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]
#![allow(clippy::expect_used, reason = "a bench stops on a broken setup")]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use secrecy::SecretString;
use tower::{Layer, Service, ServiceExt};

use byok_proxy::domain::{ApiKeyFields, CredentialFields, CredentialSpec};
// The serde_json visitor of issue 9 lives beside the scanner, outside the
// library's API: compiled here for the comparison only.
#[allow(
    dead_code,
    unused_imports,
    reason = "only the body readers are measured"
)]
#[path = "../src/proxy/model.rs"]
mod model;
// The one endpoint's body edit, compiled here on its own like the visitor.
#[allow(dead_code, unused_imports, reason = "only the edit is measured")]
#[path = "../src/proxy/one/edit.rs"]
mod edit;
mod support;
use support::chat_body;

use byok_proxy::{
    ApiKey, ByokLayer, Credential, ForwardBody, KeyHash, Metrics, Providers, Registry, Settings,
    Snapshot,
};

const WORKSPACES: usize = 10_000;
const PER_WORKSPACE: usize = 10;

fn gateway_key(i: usize) -> String {
    format!("gw-key-{i}")
}

fn api_keys() -> Vec<ApiKey> {
    (0..WORKSPACES * PER_WORKSPACE)
        .map(|i| {
            ApiKey::validate(ApiKeyFields {
                hash: KeyHash::of(gateway_key(i).as_bytes()).to_hex(),
                workspace_id: format!("ws-{}", i / PER_WORKSPACE),
                user_id: format!("user-{i}"),
                name: None,
                disabled: false,
                ..ApiKeyFields::default()
            })
            .expect("valid key")
        })
        .collect()
}

fn registry() -> Registry {
    let providers = Providers::builtins();
    let credentials = (0..WORKSPACES * PER_WORKSPACE)
        .map(|i| {
            let mut spec = CredentialSpec::default();
            spec.base_url = Some("http://127.0.0.1:9".into());
            spec.sort_order = (i % PER_WORKSPACE) as i64;
            spec.allowed_models = Some(vec![
                "openai/gpt-4o".into(),
                "openai/gpt-4o-mini".into(),
                "openai/o1".into(),
            ]);
            // Each credential admits one user: a request scans its group.
            spec.allowed_user_ids = Some(vec![format!("user-{i}")]);
            let fields = CredentialFields {
                id: format!("cred-{i}"),
                workspace_id: Some(format!("ws-{}", i / PER_WORKSPACE)),
                provider: "openai".into(),
                key: SecretString::from(format!("sk-bench-secret-{i:06}")),
                created_at: "2025-01-01T00:00:00Z".into(),
                headers: Default::default(),
                spec,
            };
            Credential::validate(fields, &providers).expect("valid credential")
        })
        .collect();
    let snapshot =
        Snapshot::build(Settings::default(), providers, api_keys(), credentials).expect("snapshot");
    Registry::new(snapshot)
}

/// Key 42 009 (user-42009): only the last credential (sort_order 9) of its
/// workspace group admits it, so the whole group is scanned.
fn request(method: &str, body: &Bytes) -> Request<Full<Bytes>> {
    request_to("/openai/v1/chat/completions", method, body)
}

/// [`request`] to `path`: the one endpoint's (SPEC §11), say.
fn request_to(path: &str, method: &str, body: &Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", gateway_key(42_009)))
        .header("content-type", "application/json")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .body(Full::new(body.clone()))
        .expect("request")
}

// The end-to-end bench's answers (`examples/mock_upstream.rs`): COMPLETION,
// a chat completion with its usage; EVENT, a stream's event; USAGE_EVENT, the
// last, with usage.
include!("../bench/answers.rs");

async fn answer(
    _req: Request<ForwardBody>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
}

#[expect(clippy::too_many_lines, reason = "one table of benches")]
fn per_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let registry = registry();
    // With metrics, as the binary runs it.
    let layered = ByokLayer::new(registry.clone())
        .with_metrics(Arc::new(Metrics::new()))
        .layer(tower::service_fn(answer));
    let mut group = c.benchmark_group("per_request");
    group.throughput(Throughput::Elements(1));
    for (name, method, body) in [
        ("layer_post_1KB", "POST", chat_body(1024)),
        ("layer_get_no_body", "GET", Bytes::new()),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let svc = layered.clone();
                let req = request(method, &body);
                async move {
                    let res = svc.oneshot(req).await.expect("infallible");
                    assert!(res.status() == 200 || method == "GET", "{}", res.status());
                    black_box(res)
                }
            })
        });
    }
    // Usage accounting (SPEC §8): the same answer read to its end, once as
    // JSON or an event stream (read for its usage and counted in the
    // ledger), once with a content type that carries no usage report.
    let sse: String = std::iter::repeat_n(EVENT, 15)
        .chain([USAGE_EVENT])
        .collect();
    for (name, content_type, answer_body) in [
        (
            "layer_post_1KB_json_usage",
            "application/json",
            Bytes::from_static(COMPLETION.as_bytes()),
        ),
        (
            "layer_post_1KB_json_usage_one_endpoint",
            "application/json",
            Bytes::from_static(COMPLETION.as_bytes()),
        ),
        (
            "layer_post_1KB_json_unread_baseline",
            "application/octet-stream",
            Bytes::from_static(COMPLETION.as_bytes()),
        ),
        (
            "layer_post_1KB_sse16_usage",
            "text/event-stream",
            Bytes::from(sse.clone()),
        ),
        (
            "layer_post_1KB_sse16_unread_baseline",
            "application/octet-stream",
            Bytes::from(sse.clone()),
        ),
    ] {
        let layered = ByokLayer::new(registry.clone())
            .with_metrics(Arc::new(Metrics::new()))
            .layer(tower::service_fn(move |_req: Request<ForwardBody>| {
                let answer_body = answer_body.clone();
                async move {
                    let mut res = Response::new(Full::new(answer_body));
                    res.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(content_type),
                    );
                    Ok::<_, std::convert::Infallible>(res)
                }
            }));
        let body = chat_body(1024);
        group.bench_function(name, |b| {
            // The same request on the one endpoint: `gpt-4o` is `openai/gpt-4o`.
            let path = if name.ends_with("one_endpoint") {
                "/api/v1/chat/completions"
            } else {
                "/openai/v1/chat/completions"
            };
            b.to_async(&rt).iter(|| {
                let svc = layered.clone();
                let req = request_to(path, "POST", &body);
                async move {
                    let res = svc.oneshot(req).await.expect("infallible");
                    assert_eq!(res.status(), 200);
                    let body = res.into_body().collect().await.expect("body");
                    black_box(body.to_bytes())
                }
            })
        });
    }
    let body = chat_body(1024);
    group.bench_function("baseline_inner_only", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = tower::service_fn(answer);
            let req = request("POST", &body);
            async move { black_box(svc.call(req).await.expect("infallible")) }
        })
    });
    group.finish();
}

/// The decision path alone (SPEC's hash + registry lookup + candidate
/// selection + header rewrite), without body, routing or I/O: key 42 009 scans
/// its whole group of 10 to the last credential.
fn decision(c: &mut Criterion) {
    let registry = registry();
    let snapshot = registry.snapshot();
    let headers = request("POST", &Bytes::new()).into_parts().0.headers;
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decide_100k_keys_100k_credentials", |b| {
        b.iter_batched(
            || headers.clone(),
            |h| {
                let (cred, out) =
                    byok_proxy::decide(&snapshot, h, "openai", Some("gpt-4o")).expect("admitted");
                assert_eq!(cred.id, "cred-42009");
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn registry_lookup(c: &mut Criterion) {
    let registry = registry();
    let keys = api_keys();
    let baseline: RwLock<HashMap<KeyHash, Arc<ApiKey>>> =
        RwLock::new(keys.into_iter().map(|k| (k.hash, Arc::new(k))).collect());
    let hash = KeyHash::of(gateway_key(42_009).as_bytes());
    let mut group = c.benchmark_group("registry");
    group.bench_function("key_hash_sha256", |b| {
        b.iter(|| KeyHash::of(black_box(gateway_key(42_009).as_bytes())))
    });
    group.bench_function("dashmap_snapshot_principal", |b| {
        b.iter(|| black_box(registry.snapshot().principal(black_box(&hash))))
    });
    group.bench_function("baseline_rwlock_hashmap", |b| {
        b.iter(|| {
            let map = baseline.read().expect("lock");
            black_box(map.get(black_box(&hash)).map(Arc::clone))
        })
    });
    group.finish();
}

fn model_extraction(c: &mut Criterion) {
    let mut group = c.benchmark_group("model");
    for size in [1024usize, 100 * 1024, 1024 * 1024] {
        let body = chat_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("strict_scan", size), &body, |b, body| {
            b.iter(|| {
                let m = byok_proxy::body_model(black_box(body)).expect("valid");
                assert_eq!(m.as_deref(), Some("gpt-4o"));
            })
        });
        for (name, strict) in [("serde_visitor", false), ("serde_visitor_strict", true)] {
            group.bench_with_input(BenchmarkId::new(name, size), &body, |b, body| {
                b.iter(|| {
                    let m = model::visitor::body_model(black_box(body), strict).expect("valid");
                    assert_eq!(m.as_deref(), Some("gpt-4o"));
                })
            });
        }
        group.bench_with_input(
            BenchmarkId::new("baseline_serde_json_value", size),
            &body,
            |b, body| {
                b.iter(|| {
                    black_box(
                        serde_json::from_slice::<serde_json::Value>(black_box(body))
                            .expect("valid"),
                    )
                })
            },
        );
    }
    group.finish();
}

/// A chat body of about `len` bytes that also names OpenRouter's `models`
/// and `provider`.
fn one_body(len: usize) -> Bytes {
    let extra = r#"{"models":["openai/gpt-4o","anthropic/claude-3.5-sonnet"],"provider":{"order":["OpenAI","Azure"],"allow_fallbacks":true},"#;
    let chat = chat_body(len.saturating_sub(extra.len()));
    let mut body = extra.as_bytes().to_vec();
    body.extend_from_slice(chat.get(1..).expect("an object"));
    Bytes::from(body)
}

fn one_edit(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_edit");
    let set: &[(&str, &[u8])] = &[("model", br#""gpt-4o""#)];
    let remove = &["models", "provider"];
    for size in [1024usize, 100 * 1024] {
        let body = one_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("members_and_edit", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let found = edit::members(black_box(body)).expect("an object");
                    edit::edit(body, &found, set, remove).expect("an object")
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("baseline_copy", size), &body, |b, body| {
            b.iter(|| Bytes::copy_from_slice(black_box(body)))
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_serde_json_value", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut value: serde_json::Value =
                        serde_json::from_slice(black_box(body)).expect("valid");
                    let map = value.as_object_mut().expect("an object");
                    map.remove("models");
                    map.remove("provider");
                    map.insert("model".to_owned(), "gpt-4o".into());
                    Bytes::from(serde_json::to_vec(&value).expect("serialises"))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    per_request,
    decision,
    registry_lookup,
    model_extraction,
    one_edit
);
criterion_main!(benches);
