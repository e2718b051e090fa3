//! The attempt phases with a recording inner service: what each attempt
//! sends, what the retry table makes of each answer, and that a refused
//! request never reaches the inner service.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::*;
use crate::config::Config;
use crate::domain::KeyHash;

/// What the recording service answers, one per call, in order.
enum Answer {
    Status(u16, &'static str),
    /// Never answers (the attempt times out).
    Hang,
    /// Fails to connect.
    Refuse,
}

/// The requests the inner service received: method, URI, headers, body,
/// the attempt's number.
type Seen = Arc<Mutex<Vec<(Method, String, HeaderMap, Bytes, u32)>>>;

/// A recording inner service answering `answers` in order.
fn recording(
    answers: Vec<Answer>,
) -> (
    impl Service<
            Request<ForwardBody>,
            Response = Response<Full<Bytes>>,
            Error = BoxError,
            Future = impl Send,
        > + Clone,
    Seen,
) {
    let seen: Seen = Arc::default();
    let queue = Arc::new(Mutex::new(VecDeque::from(answers)));
    let log = Arc::clone(&seen);
    let svc = tower::service_fn(move |req: Request<ForwardBody>| {
        let (log, queue) = (Arc::clone(&log), Arc::clone(&queue));
        async move {
            let number = req.extensions().get::<Attempt>().map_or(0, |a| a.number);
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map_or_else(|_| Bytes::new(), |b| b.to_bytes());
            let uri = parts.uri.to_string();
            log.lock()
                .unwrap()
                .push((parts.method, uri, parts.headers, body, number));
            let answer = queue.lock().unwrap().pop_front();
            match answer {
                Some(Answer::Status(status, body)) => {
                    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *res.status_mut() = StatusCode::from_u16(status).unwrap();
                    res.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/json"));
                    Ok(res)
                }
                Some(Answer::Hang) => std::future::pending().await,
                Some(Answer::Refuse) | None => Err::<_, BoxError>("connection refused".into()),
            }
        }
    });
    (svc, seen)
}

const KEY: &str = "gw-attempt-test-1";

/// A snapshot whose workspace has `first` and `second` for `provider`, in
/// that order; `first` admits only `model-a`.
fn snapshot(provider: &str) -> Arc<Snapshot> {
    let hash = KeyHash::of(KEY.as_bytes()).to_hex();
    let text = format!(
        r#"
[server]
first_byte_timeout_secs = 5

[providers.{provider}]
base_url = "http://up.test/base"

[[api_keys]]
hash = "{hash}"
workspace_id = "ws"
user_id = "u"

[[credentials]]
id = "first"
workspace_id = "ws"
provider = "{provider}"
key = "sk-first-SECRET"
created_at = "2025-01-01T00:00:00Z"
sort_order = 1
allowed_models = ["{provider}/model-a"]

[[credentials]]
id = "second"
workspace_id = "ws"
provider = "{provider}"
key = "sk-second-SECRET"
created_at = "2025-01-01T00:00:00Z"
sort_order = 2
"#
    );
    let config = Config::parse(&text).unwrap();
    Arc::new(Snapshot::from_config(&config).unwrap())
}

/// Runs the attempts of a POST to `provider` for `model`, through `inner`.
async fn run<S>(
    snapshot: &Snapshot,
    provider: &str,
    model: &str,
    inner: S,
) -> (Result<Outcome<Full<Bytes>>, Rejection>, Ctx)
where
    S: Service<Request<ForwardBody>, Response = Response<Full<Bytes>>, Error = BoxError>,
{
    let (principal, _) = snapshot.resolve(&KeyHash::of(KEY.as_bytes())).unwrap();
    let provider = snapshot.provider(provider).unwrap();
    let plan = snapshot.plan(&principal.workspace_id, &provider.slug);
    let ask = Ask {
        key_hash: principal.key_hash.as_ref(),
        user_id: &principal.user_id,
        model: Some(model),
        slug: None,
        also: &[],
        lists_unreadable: false,
        require_zdr: false,
    };
    let body = Bytes::from_static(br#"{"model":"m"}"#);
    let clock = Clock::default();
    let label: Arc<str> = Arc::from("test-provider");
    let req = Forward {
        snapshot,
        settings: snapshot.settings(),
        method: &Method::POST,
        provider,
        rest: "/v1/chat/completions",
        query: Some("a=1"),
        model: Some(model),
        body: &body,
        principal: &principal,
        book: None,
        clock: &clock,
        metrics: None,
        label: &label,
        one: None,
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-client", HeaderValue::from_static("kept"));
    let mut ctx = Ctx::start(&HeaderMap::new());
    let leg = Leg { req, plan, ask };
    let outcome = forward(inner, std::slice::from_ref(&leg), headers, None, &mut ctx).await;
    (outcome, ctx)
}

fn results(ctx: &Ctx) -> Vec<(String, AttemptResult)> {
    ctx.attempts
        .iter()
        .map(|t| (t.credential.id.clone(), t.result))
        .collect()
}

fn status(code: u16) -> AttemptResult {
    AttemptResult::Status(StatusCode::from_u16(code).unwrap())
}

#[tokio::test]
async fn an_attempt_carries_the_secret_the_body_and_its_number() {
    let snap = snapshot("openai");
    let (inner, seen) = recording(vec![Answer::Status(200, "{}")]);
    let (outcome, ctx) = run(&snap, "openai", "openai/model-a", inner).await;
    let Ok(Outcome::Forwarded(res)) = outcome else {
        panic!("not forwarded")
    };
    assert_eq!(res.headers()["x-byok-credential-id"], "first");
    assert_eq!(res.headers()["x-byok-attempts"], "1");
    assert_eq!(res.headers()["x-byok-tier"], "byok");
    let seen = seen.lock().unwrap();
    let (method, uri, headers, body, number) = &seen[0];
    assert_eq!(method, Method::POST);
    assert_eq!(uri, "http://up.test/base/v1/chat/completions?a=1");
    assert_eq!(headers["authorization"], "Bearer sk-first-SECRET");
    assert!(headers["authorization"].is_sensitive());
    assert_eq!(headers["x-client"], "kept");
    assert_eq!(&body[..], br#"{"model":"m"}"#);
    assert_eq!(*number, 1);
    assert_eq!(results(&ctx), [("first".to_owned(), status(200))]);
    assert_eq!(ctx.model(), Some("openai/model-a"));
}

#[tokio::test]
async fn a_429_fails_over_and_rests_the_credential() {
    let snap = snapshot("openai");
    let (inner, seen) = recording(vec![
        Answer::Status(429, r#"{"error":"slow down"}"#),
        Answer::Status(200, "{}"),
    ]);
    let (outcome, ctx) = run(&snap, "openai", "openai/model-a", inner).await;
    let Ok(Outcome::Forwarded(res)) = outcome else {
        panic!("not forwarded")
    };
    assert_eq!(res.headers()["x-byok-credential-id"], "second");
    assert_eq!(res.headers()["x-byok-attempts"], "2");
    let seen = seen.lock().unwrap();
    let auths: Vec<_> = seen
        .iter()
        .map(|s| (s.2["authorization"].to_str().unwrap(), s.4))
        .collect();
    assert_eq!(
        auths,
        [
            ("Bearer sk-first-SECRET", 1),
            ("Bearer sk-second-SECRET", 2)
        ]
    );
    assert_eq!(
        results(&ctx),
        [
            ("first".to_owned(), status(429)),
            ("second".to_owned(), status(200))
        ]
    );
    let counts = snap.health_counts(crate::clock::now_ms());
    assert_eq!(counts, [("healthy", 1), ("cooling", 1), ("quarantined", 0)]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_and_a_refused_connection_are_attempts_too() {
    let snap = snapshot("openai");
    let (inner, _) = recording(vec![Answer::Hang, Answer::Refuse]);
    let (outcome, ctx) = run(&snap, "openai", "openai/model-a", inner).await;
    let Ok(Outcome::Failed { rejection, last }) = outcome else {
        panic!("not failed")
    };
    assert_eq!(rejection, Rejection::UpstreamUnreachable);
    assert_eq!(last, "second");
    assert_eq!(
        results(&ctx),
        [
            ("first".to_owned(), AttemptResult::Timeout),
            ("second".to_owned(), AttemptResult::Error)
        ]
    );
}

#[tokio::test]
async fn the_last_candidates_retryable_answer_is_relayed() {
    let snap = snapshot("openai");
    let (inner, _) = recording(vec![
        Answer::Status(503, "{}"),
        Answer::Status(503, r#"{"error":"busy"}"#),
    ]);
    let (outcome, _) = run(&snap, "openai", "openai/model-a", inner).await;
    let Ok(Outcome::Forwarded(res)) = outcome else {
        panic!("not forwarded")
    };
    assert_eq!(res.status(), 503);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"error":"busy"}"#);
}

#[tokio::test]
async fn a_refused_request_never_reaches_the_inner_service() {
    let snap = snapshot("openai");
    // A key that requires zero data retention, and no credential declared
    // ZDR: the policy refuses, before any attempt.
    let (inner, seen) = recording(vec![Answer::Status(200, "{}")]);
    let hash = KeyHash::of(KEY.as_bytes());
    let (principal, _) = snap.resolve(&hash).unwrap();
    let plan = snap.plan(&principal.workspace_id, "openai");
    let ask = Ask {
        key_hash: Some(&hash),
        user_id: "someone-else",
        model: Some("openai/model-a"),
        slug: None,
        also: &[],
        lists_unreadable: false,
        require_zdr: true,
    };
    let body = Bytes::new();
    let clock = Clock::default();
    let label: Arc<str> = Arc::from("test-provider");
    let forward_req = Forward {
        snapshot: &snap,
        settings: snap.settings(),
        method: &Method::POST,
        provider: snap.provider("openai").unwrap(),
        rest: "/v1/chat/completions",
        query: None,
        model: Some("openai/model-a"),
        body: &body,
        principal: &principal,
        book: None,
        clock: &clock,
        metrics: None,
        label: &label,
        one: None,
    };
    let mut ctx = Ctx::start(&HeaderMap::new());
    let outcome: Result<Outcome<Full<Bytes>>, _> = forward(
        inner,
        &[Leg {
            req: forward_req,
            plan,
            ask,
        }],
        HeaderMap::new(),
        None,
        &mut ctx,
    )
    .await;
    assert!(matches!(
        outcome,
        Err(Rejection::NoEligibleCredential { .. })
    ));
    assert!(seen.lock().unwrap().is_empty(), "reached the upstream");
    assert!(ctx.attempts.is_empty());
    assert_eq!(ctx.model, None, "a refused model is not logged");
}

#[tokio::test]
async fn googles_invalid_key_400_fails_over_and_any_other_400_is_relayed_whole() {
    let invalid = r#"{"error":{"code":400,"details":[{"reason":"API_KEY_INVALID"}]}}"#;
    let snap = snapshot("google-ai-studio");
    let (inner, _) = recording(vec![
        Answer::Status(400, invalid),
        Answer::Status(200, "{}"),
    ]);
    let (outcome, ctx) = run(&snap, "google-ai-studio", "google-ai-studio/model-a", inner).await;
    assert!(matches!(outcome, Ok(Outcome::Forwarded(_))));
    assert_eq!(
        results(&ctx),
        [
            (
                "first".to_owned(),
                AttemptResult::KeyRejected(StatusCode::BAD_REQUEST)
            ),
            ("second".to_owned(), status(200))
        ]
    );
    let other = r#"{"error":{"code":400,"message":"bad request"}}"#;
    let (inner, seen) = recording(vec![Answer::Status(400, other)]);
    let (outcome, _) = run(&snap, "google-ai-studio", "google-ai-studio/model-a", inner).await;
    let Ok(Outcome::Forwarded(res)) = outcome else {
        panic!("not forwarded")
    };
    assert_eq!(seen.lock().unwrap().len(), 1, "a 400 of the request's own");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        other.as_bytes(),
        "what the peek read comes first"
    );
    // Elsewhere a 400 is never read: it is the request's own.
    let snap = snapshot("openai");
    let (inner, _) = recording(vec![Answer::Status(400, invalid)]);
    let (_, ctx) = run(&snap, "openai", "openai/model-a", inner).await;
    assert_eq!(results(&ctx), [("first".to_owned(), status(400))]);
}
