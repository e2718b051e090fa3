//! [`ByokService`]: the per-request decision, then the inner service, once per
//! candidate until one answers; then one access-log line and the metrics.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::Full;
use tower::{Service, ServiceExt};

use crate::body::{self, ByokBody};
use crate::cache::{Candidate, Credential, Principal, Snapshot};
use crate::error::Rejection;
use crate::key::client_key_hash;
use crate::metrics::{status_class, Metrics};
use crate::policy::{self, Ask};
use crate::{headers, model, route, BoxError, Registry};

/// The request body type the inner service receives: the client's body bytes,
/// read once and shared by every attempt.
pub type ForwardBody = Full<Bytes>;

/// Put in the extensions of every request the inner service receives: which
/// credential this attempt uses, and which attempt it is (from 1).
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The credential whose secret the request carries.
    pub credential: Arc<Credential>,
    /// 1 for the first candidate, 2 for the first failover, and so on.
    pub number: u32,
}

/// The request id header: taken from the client when well-formed, else made
/// up; sent upstream, and echoed in the response unless the upstream answered
/// with its own.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The proxy's request id, on every response.
pub(crate) const X_BYOK_REQUEST_ID: HeaderName = HeaderName::from_static("x-byok-request-id");

/// The middleware built by [`ByokLayer`](crate::ByokLayer). See the crate docs.
#[derive(Debug, Clone)]
pub struct ByokService<S> {
    pub(crate) inner: S,
    pub(crate) registry: Registry,
    pub(crate) trust_principal_extension: bool,
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl<S, B, RB> Service<Request<B>> for ByokService<S>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ByokBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service goes into the future; the clone stays behind
        // (tower's "be careful when cloning inner services").
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let snapshot = self.registry.snapshot();
        let trust = self.trust_principal_extension;
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut trace = Trace::start(req.headers());
            let outcome =
                handle(inner, &snapshot, trust, req, &mut trace, metrics.as_deref()).await;
            let mut res = match outcome {
                Outcome::Forwarded(res) => res,
                Outcome::Refused(rejection) => {
                    trace.outcome = rejection.reason();
                    rejection.into_response()
                }
                Outcome::Failed { rejection, last } => {
                    trace.outcome = rejection.reason();
                    let mut res: Response<ByokBody<RB>> = rejection.into_response();
                    headers::annotate(res.headers_mut(), &last, trace.attempts.len());
                    res
                }
            };
            // Ours always in x-byok-request-id; in x-request-id too unless the
            // upstream set its own there (SDKs surface the provider's id).
            let h = res.headers_mut();
            h.insert(X_BYOK_REQUEST_ID, trace.request_id.clone());
            if !h.contains_key(X_REQUEST_ID) {
                h.insert(X_REQUEST_ID, trace.request_id.clone());
            }
            trace.finish(res.status(), metrics.as_deref());
            Ok(res)
        })
    }
}

/// How a request ended, before the response is finished.
enum Outcome<RB> {
    /// An upstream answered; its response, annotated.
    Forwarded(Response<ByokBody<RB>>),
    /// Refused before any attempt.
    Refused(Rejection),
    /// Every attempt failed; `last` is the id of the last credential tried.
    Failed {
        rejection: Rejection,
        last: HeaderValue,
    },
}

impl<RB> From<Rejection> for Outcome<RB> {
    fn from(r: Rejection) -> Self {
        Outcome::Refused(r)
    }
}

async fn handle<S, B, RB>(
    inner: S,
    snapshot: &Snapshot,
    trust: bool,
    req: Request<B>,
    trace: &mut Trace,
    metrics: Option<&Metrics>,
) -> Outcome<RB>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    match decide_and_forward(inner, snapshot, trust, req, trace, metrics).await {
        Ok(outcome) => outcome,
        Err(rejection) => Outcome::Refused(rejection),
    }
}

async fn decide_and_forward<S, B, RB>(
    mut inner: S,
    snapshot: &Snapshot,
    trust: bool,
    req: Request<B>,
    trace: &mut Trace,
    metrics: Option<&Metrics>,
) -> Result<Outcome<RB>, Rejection>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    if parts.method == Method::CONNECT {
        return Err(Rejection::MethodNotAllowed);
    }
    if parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        && parts.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Err(Rejection::AmbiguousFraming);
    }
    if headers::wants_upgrade(&parts.headers) {
        return Err(Rejection::InvalidRequest(
            "protocol upgrades are not proxied",
        ));
    }
    let (slug, rest) = route::split(parts.uri.path())?;
    let Some((label, provider)) = snapshot.provider_entry(slug) else {
        trace.provider = Some(Arc::from("unknown"));
        return Err(Rejection::UnknownProvider);
    };
    trace.provider = Some(Arc::clone(label));
    let principal = principal(snapshot, trust, &parts)?;
    trace.principal = Some(principal.clone());
    route::check_rest(rest)?;
    let query = route::filter_query(parts.uri.query())?;

    let settings = snapshot.settings();
    let encoding = body::encoding(&parts.headers)?;
    let reading = Instant::now();
    let raw = body::read(&parts.headers, body, settings.max_body_bytes).await;
    trace.body_wait = reading.elapsed();
    let bytes = body::decode(encoding, raw?, settings.max_body_bytes)?;

    let path_model = model::path_model(rest).map_err(model_rejection)?;
    // Every non-empty body is read for a model, whatever its media type, since
    // upstreams often parse JSON regardless of Content-Type. Only a body that
    // declares a non-JSON type (a form, multipart, binary) and is not JSON at
    // all has no model; it can then use only credentials without a model list.
    let body_model = if bytes.is_empty() {
        None
    } else {
        match model::body_model(&bytes) {
            Ok(m) => m,
            Err(model::ModelError::InvalidBody(_)) if !body::is_json_like(&parts.headers) => None,
            Err(e) => return Err(model_rejection(e)),
        }
    };
    let model: Option<Cow<'_, str>> = match (path_model, body_model) {
        (Some(p), Some(b)) if p != b => {
            return Err(Rejection::AmbiguousModel(
                "the model in the path and the model in the body differ",
            ))
        }
        (Some(p), _) => Some(Cow::Owned(p)),
        (None, b) => b,
    };

    let mut base = parts.headers;
    headers::strip_request(&mut base);
    base.insert(X_REQUEST_ID, trace.request_id.clone());
    let group: Arc<[Candidate]> = snapshot
        .candidates(&principal.workspace_id, &provider.slug)
        .unwrap_or_else(|| Arc::from(Vec::new()));
    let ask = Ask {
        key_hash: principal.key_hash.as_ref(),
        user_id: &principal.user_id,
        model: model.as_deref(),
    };

    let mut candidates = policy::admitted(&group, &ask).peekable();
    let mut last_failure: Option<(&Candidate, Rejection)> = None;
    while let Some(cand) = candidates.next() {
        if trace.attempts.is_empty() {
            // Admitted: the model may now appear in the access log.
            trace.model = model.as_deref().map(str::to_owned);
        }
        let number = u32::try_from(trace.attempts.len() + 1).unwrap_or(u32::MAX);
        let is_last = candidates.peek().is_none();
        // The last candidate takes the headers; earlier ones work on a copy.
        let mut headers = if is_last {
            std::mem::take(&mut base)
        } else {
            base.clone()
        };
        headers::inject(&mut headers, provider, cand);
        let uri = cand
            .upstream
            .uri(rest, query.as_deref())
            .map_err(|_| Rejection::InvalidRequest("the request path cannot be forwarded"))?;
        let mut upstream_req = Request::new(Full::new(bytes.clone()));
        *upstream_req.method_mut() = parts.method.clone();
        *upstream_req.uri_mut() = uri;
        *upstream_req.version_mut() = Version::HTTP_11;
        *upstream_req.headers_mut() = headers;
        upstream_req.extensions_mut().insert(Attempt {
            credential: Arc::clone(&cand.record),
            number,
        });

        let call = async {
            let svc = inner.ready().await?;
            svc.call(upstream_req).await
        };
        let waiting = Instant::now();
        let outcome = tokio::time::timeout(settings.first_byte_timeout, call).await;
        trace.upstream_wait += waiting.elapsed();
        let id = cand.record.id.as_str();
        let result = match outcome {
            Err(_elapsed) => {
                tracing::debug!(provider = %provider.slug, credential_id = id, attempt = number, "upstream timed out before the response head");
                last_failure = Some((cand, Rejection::UpstreamTimeout));
                AttemptResult::Timeout
            }
            Ok(Err(e)) => {
                let e: BoxError = e.into();
                tracing::debug!(provider = %provider.slug, credential_id = id, attempt = number, error = %ErrorChain(&*e), "upstream connection failed");
                last_failure = Some((cand, Rejection::UpstreamUnreachable));
                AttemptResult::Error
            }
            Ok(Ok(res)) => {
                let status = res.status();
                tracing::debug!(provider = %provider.slug, credential_id = id, attempt = number, status = status.as_u16(), "upstream answered");
                trace.attempt(metrics, cand, AttemptResult::Status(status));
                if retryable(status) && !is_last {
                    continue;
                }
                if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    // The provider's words about the secret never reach the client.
                    last_failure = Some((cand, Rejection::UpstreamRejectedCredential));
                    break;
                }
                let (mut head, body) = res.into_parts();
                headers::strip_hop_by_hop(&mut head.headers);
                headers::annotate(&mut head.headers, &cand.id_value, trace.attempts.len());
                return Ok(Outcome::Forwarded(Response::from_parts(
                    head,
                    ByokBody::upstream(body, settings.idle_timeout),
                )));
            }
        };
        trace.attempt(metrics, cand, result);
    }
    match last_failure {
        Some((cand, rejection)) => Ok(Outcome::Failed {
            rejection,
            last: cand.id_value.clone(),
        }),
        None => Err(policy::deny(&provider.slug, &group, &ask)),
    }
}

/// The decision alone, as the layer makes it, without a body or any I/O: the
/// gateway key in `headers` hashed and looked up, the first candidate of its
/// workspace for `provider` that admits `model`, and the headers the first
/// attempt would carry (client credentials and hop-by-hop headers stripped,
/// the credential's secret injected). For benches and dry runs.
pub fn decide(
    snapshot: &Snapshot,
    mut headers: HeaderMap,
    provider: &str,
    model: Option<&str>,
) -> Result<(Arc<Credential>, HeaderMap), Rejection> {
    let provider = snapshot
        .provider(provider)
        .ok_or(Rejection::UnknownProvider)?;
    let hash = client_key_hash(&headers)?.ok_or(Rejection::MissingApiKey)?;
    let principal = snapshot.principal(&hash).ok_or(Rejection::InvalidApiKey)?;
    let group = snapshot
        .candidates(&principal.workspace_id, &provider.slug)
        .unwrap_or_else(|| Arc::from(Vec::new()));
    let ask = Ask {
        key_hash: principal.key_hash.as_ref(),
        user_id: &principal.user_id,
        model,
    };
    let Some(cand) = policy::admitted(&group, &ask).next() else {
        return Err(policy::deny(&provider.slug, &group, &ask));
    };
    headers::strip_request(&mut headers);
    headers::inject(&mut headers, provider, cand);
    Ok((Arc::clone(&cand.record), headers))
}

/// The principal: from an earlier auth layer when trusted and present, else
/// from the gateway key in the headers.
fn principal(
    snapshot: &Snapshot,
    trust: bool,
    parts: &http::request::Parts,
) -> Result<Principal, Rejection> {
    if trust {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
    }
    let hash = client_key_hash(&parts.headers)?.ok_or(Rejection::MissingApiKey)?;
    snapshot.principal(&hash).ok_or(Rejection::InvalidApiKey)
}

/// Statuses after which the next candidate is tried.
pub(crate) fn retryable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        401 | 403 | 408 | 429 | 500 | 502 | 503 | 504 | 529
    )
}

fn model_rejection(e: model::ModelError) -> Rejection {
    match e {
        model::ModelError::InvalidBody(m) => Rejection::InvalidBody(m),
        model::ModelError::Ambiguous(m) => Rejection::AmbiguousModel(m),
        model::ModelError::InvalidPath(m) => Rejection::InvalidRequest(m),
    }
}

// ---- the access log -------------------------------------------------------------

/// What one attempt came to.
#[derive(Debug, Clone, Copy)]
enum AttemptResult {
    Status(StatusCode),
    Error,
    Timeout,
}

impl AttemptResult {
    fn class(self) -> &'static str {
        match self {
            AttemptResult::Status(s) => status_class(s.as_u16()),
            AttemptResult::Error => "error",
            AttemptResult::Timeout => "timeout",
        }
    }
}

/// Everything the access-log line and the metrics need about one request.
struct Trace {
    request_id: HeaderValue,
    started: Instant,
    body_wait: Duration,
    upstream_wait: Duration,
    provider: Option<Arc<str>>,
    principal: Option<Principal>,
    model: Option<String>,
    attempts: Vec<(Arc<Credential>, AttemptResult)>,
    outcome: &'static str,
}

impl Trace {
    fn start(headers: &HeaderMap) -> Trace {
        Trace {
            request_id: request_id(headers),
            started: Instant::now(),
            body_wait: Duration::ZERO,
            upstream_wait: Duration::ZERO,
            provider: None,
            principal: None,
            model: None,
            attempts: Vec::new(),
            outcome: "forwarded",
        }
    }

    fn attempt(&mut self, metrics: Option<&Metrics>, cand: &Candidate, result: AttemptResult) {
        if let Some(m) = metrics {
            let provider = self.provider.get_or_insert_with(|| Arc::from("none"));
            m.attempt(provider, &cand.id_label, result.class());
            if !self.attempts.is_empty() {
                m.failover(provider);
            }
        }
        self.attempts.push((Arc::clone(&cand.record), result));
    }

    fn finish(self, status: StatusCode, metrics: Option<&Metrics>) {
        let total = self.started.elapsed();
        let own = total.saturating_sub(self.body_wait + self.upstream_wait);
        if let Some(m) = metrics {
            let provider = self.provider.clone().unwrap_or_else(|| Arc::from("none"));
            m.request(&provider, self.outcome);
            let upstream = (!self.attempts.is_empty()).then_some(self.upstream_wait.as_secs_f64());
            m.timings(&provider, own.as_secs_f64(), upstream);
        }
        let provider = self.provider.as_deref().unwrap_or("none");
        let principal = self.principal.as_ref();
        tracing::info!(
            target: "byok_proxy::access",
            request_id = %String::from_utf8_lossy(self.request_id.as_bytes()),
            status = status.as_u16(),
            outcome = self.outcome,
            provider,
            workspace = principal.map_or("-", |p| &p.workspace_id),
            user = principal.map_or("-", |p| &p.user_id),
            key = %principal.and_then(|p| p.key_hash).map_or_else(|| "-".to_owned(), |h| h.short()),
            model = self.model.as_deref().unwrap_or("-"),
            attempts = %Attempts(&self.attempts),
            latency_ms = total.as_secs_f64() * 1e3,
            own_us = own.as_secs_f64() * 1e6,
            "request"
        );
    }
}

/// `id:status,id:status`, e.g. `c1:429,c2:200` (`error` / `timeout` for failures).
struct Attempts<'a>(&'a [(Arc<Credential>, AttemptResult)]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, (cred, result)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match result {
                AttemptResult::Status(s) => write!(f, "{}:{}", cred.id, s.as_u16())?,
                AttemptResult::Error => write!(f, "{}:error", cred.id)?,
                AttemptResult::Timeout => write!(f, "{}:timeout", cred.id)?,
            }
        }
        Ok(())
    }
}

/// The client's `x-request-id` when it is 1–128 characters of
/// `[A-Za-z0-9._:-]` (safe to log and forward); otherwise a fresh one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
        {
            return v.clone();
        }
    }
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 32 lowercase hex digits: the seed, then the counter.
    let mut id = [0u8; 32];
    let (seed_hex, n_hex) = id.split_at_mut(16);
    crate::key::lower_hex(&seed.to_be_bytes(), seed_hex);
    crate::key::lower_hex(&n.to_be_bytes(), n_hex);
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// An error with its sources, for logs. Upstream errors carry addresses and
/// OS errors, never request headers.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses_are_exactly_the_contract_list() {
        let listed = [401, 403, 408, 429, 500, 502, 503, 504, 529];
        for code in 100..600u16 {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(retryable(status), listed.contains(&code), "{code}");
        }
    }

    #[test]
    fn request_ids_are_taken_when_safe_and_made_otherwise() {
        let mut h = HeaderMap::new();
        let made = request_id(&h);
        assert_eq!(made.len(), 32);
        assert_ne!(request_id(&h), made, "ids repeat");
        for good in ["abc-123", "req_1.2:3", &"a".repeat(128)] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(good).unwrap());
            assert_eq!(request_id(&h), good);
        }
        for bad in [
            "",
            "has space",
            "new\tline",
            &"a".repeat(129),
            "quote\"",
            "sk-{x}",
        ] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            assert_ne!(request_id(&h), bad, "{bad:?}");
        }
    }
}
