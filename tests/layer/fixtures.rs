//! Fixtures of the layer tests: the registry, a recording inner service,
//! request helpers; the rest is tests/support, shared with the other crates.

use std::ops::Deref;
use std::sync::Arc;

use byok_proxy::{Attempt, BoxError, ByokLayer, Config, ForwardBody, Registry};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

pub(crate) use crate::support::{collect, gzip, hash, Recorded, Recording, Resp};

/// Gateway key of alice (workspace `ws-1`).
pub(crate) const ALICE: &str = "gw-alice-0001";
/// Gateway key of bob (workspace `ws-1`).
pub(crate) const BOB: &str = "gw-bob-0002";
/// A disabled gateway key (workspace `ws-1`).
pub(crate) const DISABLED: &str = "gw-disabled-0003";
/// Gateway key of carol, whose workspace has no credentials.
pub(crate) const CAROL: &str = "gw-carol-0004";
/// Gateway key of the failover workspace `ws-fo`.
pub(crate) const FO: &str = "gw-failover-0005";
/// A key that the principal tests list in an allowlist (it is not registered).
pub(crate) const DAVE: &str = "gw-dave-0006";

/// The provider secrets of the shared config; none may ever reach a client.
pub(crate) const SECRETS: [&str; 10] = [
    "sk-openai-SECRET-1111",
    "sk-ant-SECRET-2222",
    "AIza-goog-SECRET-3333",
    "sk-fo-first-SECRET-a",
    "sk-fo-second-SECRET-b",
    "sk-fo-fallback-SECRET-c",
    "sk-fo-disabled-SECRET-d",
    "sk-fo-o1-SECRET-e",
    "sk-p-openai-SECRET-f",
    "sk-p-anthropic-SECRET-g",
];

/// The config shared by most tests.
///
/// * `ws-1`: alice, bob, a disabled key. `cred-openai` admits only
///   `openai/gpt-4o`; `cred-anthropic` only user alice; `cred-google` only
///   alice's key hash.
/// * `ws-2`: carol, no credentials.
/// * `ws-fo`: openai credentials for failover, in contract order
///   `fo-first` (sort 1), `fo-second` (sort 5), `fo-fallback` (fallback, sort
///   -10); `fo-disabled` (sort 0) is disabled and `fo-o1` (sort 2) admits only
///   `o1`.
/// * `ws-p`: credentials for a principal from an earlier layer: `p-openai`
///   admits only user dave, `p-anthropic` only dave's key hash.
#[expect(clippy::too_many_lines, reason = "one TOML text")]
pub(crate) fn config_text() -> String {
    format!(
        r#"
[server]
max_body_bytes = 4096
first_byte_timeout_secs = 5

[providers.openai]
base_url = "http://openai.upstream.test/base"

[providers.anthropic]
base_url = "http://anthropic.upstream.test"

[providers.google-ai-studio]
base_url = "http://google.upstream.test"

[[api_keys]]
hash = "{alice}"
workspace_id = "ws-1"
user_id = "alice"

[[api_keys]]
hash = "{bob}"
workspace_id = "ws-1"
user_id = "bob"

[[api_keys]]
hash = "{disabled}"
workspace_id = "ws-1"
user_id = "alice"
disabled = true

[[api_keys]]
hash = "{carol}"
workspace_id = "ws-2"
user_id = "carol"

[[api_keys]]
hash = "{fo}"
workspace_id = "ws-fo"
user_id = "fo"

[[credentials]]
id = "cred-openai"
workspace_id = "ws-1"
provider = "openai"
key = "sk-openai-SECRET-1111"
created_at = "2025-01-01T00:00:00Z"
allowed_models = ["openai/gpt-4o"]

[[credentials]]
id = "cred-anthropic"
workspace_id = "ws-1"
provider = "anthropic"
key = "sk-ant-SECRET-2222"
created_at = "2025-01-01T00:00:00Z"
allowed_user_ids = ["alice"]

[[credentials]]
id = "cred-google"
workspace_id = "ws-1"
provider = "google-ai-studio"
key = "AIza-goog-SECRET-3333"
created_at = "2025-01-01T00:00:00Z"
allowed_api_key_hashes = ["{alice}"]

[[credentials]]
id = "fo-fallback"
workspace_id = "ws-fo"
provider = "openai"
key = "sk-fo-fallback-SECRET-c"
created_at = "2025-01-01T00:00:00Z"
is_fallback = true
sort_order = -10

[[credentials]]
id = "fo-second"
workspace_id = "ws-fo"
provider = "openai"
key = "sk-fo-second-SECRET-b"
created_at = "2025-01-01T00:00:00Z"
sort_order = 5

[[credentials]]
id = "fo-disabled"
workspace_id = "ws-fo"
provider = "openai"
key = "sk-fo-disabled-SECRET-d"
created_at = "2025-01-01T00:00:00Z"
disabled = true
sort_order = 0

[[credentials]]
id = "fo-first"
workspace_id = "ws-fo"
provider = "openai"
key = "sk-fo-first-SECRET-a"
created_at = "2025-01-01T00:00:00Z"
sort_order = 1

[[credentials]]
id = "fo-o1"
workspace_id = "ws-fo"
provider = "openai"
key = "sk-fo-o1-SECRET-e"
created_at = "2025-01-01T00:00:00Z"
sort_order = 2
allowed_models = ["openai/o1"]

[[credentials]]
id = "p-openai"
workspace_id = "ws-p"
provider = "openai"
key = "sk-p-openai-SECRET-f"
created_at = "2025-01-01T00:00:00Z"
allowed_user_ids = ["dave"]

[[credentials]]
id = "p-anthropic"
workspace_id = "ws-p"
provider = "anthropic"
key = "sk-p-anthropic-SECRET-g"
created_at = "2025-01-01T00:00:00Z"
allowed_api_key_hashes = ["{dave}"]
"#,
        alice = hash(ALICE),
        bob = hash(BOB),
        disabled = hash(DISABLED),
        carol = hash(CAROL),
        fo = hash(FO),
        dave = hash(DAVE),
    )
}

/// A registry built the way an embedding application would.
pub(crate) fn registry_from(text: &str) -> Registry {
    let config = Config::parse(text).expect("the test config is valid");
    Registry::from_config(&config).expect("the test config builds a snapshot")
}

/// The registry of [`config_text`].
pub(crate) fn registry() -> Registry {
    registry_from(&config_text())
}

/// One request as the inner service received it: the request, and which
/// attempt with which credential it was.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) request: Recorded,
    /// `Attempt::credential.id`.
    pub(crate) credential: String,
    /// `Attempt::number`.
    pub(crate) attempt: u32,
}

impl Deref for Seen {
    type Target = Recorded;

    fn deref(&self) -> &Recorded {
        &self.request
    }
}

/// Everything the inner service received, shared with the test.
pub(crate) type Recorder = Recording<Seen>;

impl Recording<Seen> {
    /// The credential ids of the attempts, in order.
    pub(crate) fn credentials(&self) -> Vec<String> {
        self.all().into_iter().map(|s| s.credential).collect()
    }
}

/// What the inner service does for one attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reply {
    /// Answer with this status and [`upstream_body`].
    Status(u16),
    /// Fail the call (a connection error, as the forwarder would report it).
    Fail,
    /// Never answer (a hung upstream; the first-byte timeout must fire).
    Hang,
}

/// The body the inner service answers with: it names the credential and holds
/// words the client must never see when they are about a rejected secret.
pub(crate) fn upstream_body(status: u16, credential: &str) -> String {
    format!(
        r#"{{"upstream_status":{status},"credential":"{credential}","words":"PROVIDER-WORDS about your key"}}"#
    )
}

/// The inner service: `Request<ForwardBody>` in, `Response<Full<Bytes>>` out.
pub(crate) type Inner = BoxCloneService<Request<ForwardBody>, Response<Full<Bytes>>, BoxError>;

/// A recording inner service whose answer to each attempt is chosen by
/// `script(credential_id, attempt_number)`. Its responses also carry headers
/// the layer must not pass on or must overwrite.
pub(crate) fn upstream(
    script: impl Fn(&str, u32) -> Reply + Send + Sync + 'static,
) -> (Inner, Recorder) {
    let recorder = Recorder::default();
    let script = Arc::new(script);
    let rec = recorder.clone();
    let svc = tower::service_fn(move |req: Request<ForwardBody>| {
        let script = Arc::clone(&script);
        let rec = rec.clone();
        async move {
            let (parts, body) = req.into_parts();
            let attempt = parts
                .extensions
                .get::<Attempt>()
                .cloned()
                .expect("every forwarded request carries an Attempt");
            let body = body.collect().await?.to_bytes();
            rec.record(Seen {
                request: Recorded {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts.headers,
                    body,
                },
                credential: attempt.credential.id.clone(),
                attempt: attempt.number,
            });
            match script(&attempt.credential.id, attempt.number) {
                Reply::Status(code) => Ok(Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .header("x-upstream-header", "kept")
                    .header("www-authenticate", "Bearer error=\"PROVIDER-WORDS\"")
                    .header("connection", "close, x-hop-named")
                    .header("x-hop-named", "hop")
                    .header("keep-alive", "timeout=5")
                    .header("x-byok-credential-id", "spoofed-by-upstream")
                    .header("x-byok-attempts", "99")
                    .body(Full::new(Bytes::from(upstream_body(
                        code,
                        &attempt.credential.id,
                    ))))?),
                Reply::Fail => Err(BoxError::from("connection refused (test)")),
                Reply::Hang => std::future::pending().await,
            }
        }
    });
    (BoxCloneService::new(svc), recorder)
}

/// An inner service that answers 200 to everything.
pub(crate) fn ok_upstream() -> (Inner, Recorder) {
    upstream(|_, _| Reply::Status(200))
}

/// Builds a client request. Header values may be any bytes `HeaderValue` takes.
pub(crate) fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body.into()))
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    req
}

/// A JSON chat request for `model` to openai with alice's key.
pub(crate) fn chat(key: &str, model: &str) -> Request<Full<Bytes>> {
    request(
        "POST",
        "/openai/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"model":"{model}","messages":[]}}"#),
    )
}

/// The layer's own answers.
impl Resp {
    /// Asserts a refusal by the proxy itself: status, reason, the OpenRouter
    /// error shape with `code` equal to the status, and no `x-byok-*` headers.
    pub(crate) fn assert_refused(&self, status: u16, reason: &str) {
        assert_eq!(
            (self.status, self.reason().as_str()),
            (status, reason),
            "body: {}",
            self.text()
        );
        assert_eq!(self.json()["error"]["code"], status);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("x-byok-credential-id"), None);
        self.assert_no_secret();
    }

    /// No provider secret and no raw gateway key anywhere in the response.
    pub(crate) fn assert_no_secret(&self) {
        let text = String::from_utf8_lossy(&self.body);
        let heads: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        for needle in SECRETS
            .iter()
            .chain(&[ALICE, BOB, DISABLED, CAROL, FO, DAVE])
        {
            assert!(!text.contains(needle), "{needle} in body {text}");
            assert!(
                !heads.iter().any(|h| h.contains(needle)),
                "{needle} in {heads:?}"
            );
        }
    }
}

/// Runs one request through `layer` over `inner`.
pub(crate) async fn send(layer: &ByokLayer, inner: Inner, req: Request<Full<Bytes>>) -> Resp {
    let res = layer
        .layer(inner)
        .oneshot(req)
        .await
        .expect("the layer answers every request with a response");
    collect(res).await
}

/// Sends `req` with the shared registry over a 200-answering inner service and
/// returns the response and the recorder.
pub(crate) async fn send_ok(req: Request<Full<Bytes>>) -> (Resp, Recorder) {
    let (inner, rec) = ok_upstream();
    let got = send(&ByokLayer::new(registry()), inner, req).await;
    (got, rec)
}
