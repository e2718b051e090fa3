//! [`ByokService`]: a request goes through named phases, each a function
//! below (as pingora names its `request_filter`, `upstream_peer`, …):
//!
//! 1. [`request_filter`]: refuse what is never proxied (CONNECT, CL+TE framing,
//!    protocol upgrades);
//! 2. [`route`]: the provider from the first path segment, the rest of the path
//!    and the query checked — an unknown provider is answered only after the
//!    next phase, so that a request without a key learns nothing about which
//!    providers exist;
//! 3. [`principal`]: who asks, from the gateway key (or a trusted extension);
//! 4. [`read_body`]: the body, bounded and decoded;
//! 5. [`model`]: the model, from the path and the body under the strict rules,
//!    and the other models the body names (OpenRouter's `models`,
//!    `fallbacks`), which every candidate whose upstream is OpenRouter must
//!    admit too;
//! 6. [`select`]: the workspace's candidates for the provider and what the
//!    request asks of their allowlists (the policy decides);
//! 7. [`upstream_request`]: one attempt — client credentials stripped, the
//!    candidate's secret injected;
//! 8. [`classify`]: what an attempt's outcome means — the whole retry table;
//!
//! then one access-log line and the metrics ([`access_log`](super::access_log)).
//! [`decide`] runs phases 2, 3, 6 and 7 alone, without a body or any I/O.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::Full;
use tower::{Service, ServiceExt};

use super::access_log::{AttemptResult, ErrorChain, Trace, X_BYOK_REQUEST_ID, X_REQUEST_ID};
use super::body::{self, ByokBody, ForwardBody};
use super::client_key::client_key_hash;
use super::error::Rejection;
use super::usage::{Accounting, UsageTap};
use super::{cloud, headers, model, route};
use crate::domain::{ApiKey, Credential, Dialect, LimitReset, Provider};
use crate::ledger::{self, Entry, KeyBook, Ledger};
use crate::metrics::Metrics;
use crate::policy::health::{self, Clock, Verdict};
use crate::policy::token::MintError;
use crate::policy::{self, Ask, Candidate, Cloud, Plan, Tier};
use crate::registry::{Principal, Settings, Snapshot};
use crate::{BoxError, Registry};

/// Put in the extensions of every request the inner service receives: which
/// credential this attempt uses, and which attempt it is (from 1).
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The credential whose secret the request carries.
    pub credential: Arc<Credential>,
    /// 1 for the first candidate, 2 for the first failover, and so on.
    pub number: u32,
}

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
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
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
            let expects_continue = req
                .headers()
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let (parts, body) = req.into_parts();
            let mut body = Some(body);
            let outcome = decide_and_forward(
                inner,
                &snapshot,
                trust,
                parts,
                &mut body,
                &mut trace,
                metrics.as_ref(),
            )
            .await
            .unwrap_or_else(Outcome::Refused);
            // A client that asked `Expect: 100-continue` has not sent its
            // body: reading it would invite the upload, so it is not drained.
            let refused = matches!(outcome, Outcome::Refused(_)) && !expects_continue;
            if let (true, Some(unread)) = (refused, body) {
                // Refused before the body was read: take what the client is
                // still sending, as a 413 does, so the answer reaches it
                // rather than a reset.
                let settings = snapshot.settings();
                let unread = std::pin::pin!(unread);
                body::drain(unread, 0, settings.max_body_bytes, settings.body_timeout).await;
            }
            let mut res = match outcome {
                Outcome::Forwarded(res) => res,
                Outcome::Refused(rejection) => {
                    trace.outcome = rejection.reason();
                    rejection.into_response_for(trace.dialect, Some(&trace.request_id))
                }
                Outcome::Failed { rejection, last } => {
                    trace.outcome = rejection.reason();
                    let mut res: Response<ByokBody<RB>> =
                        rejection.into_response_for(trace.dialect, Some(&trace.request_id));
                    // The tier of the last attempt, the one that failed.
                    let tier = trace
                        .attempts
                        .last()
                        .map_or(Tier::Byok, |(_, tier, _)| *tier);
                    headers::annotate(res.headers_mut(), &last, trace.attempts.len(), tier);
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
// Made once a request and moved twice: boxing the response would cost an
// allocation a request to save copying a few hundred bytes.
#[allow(clippy::large_enum_variant)]
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

/// The phases, in order, then one attempt per admitted candidate until
/// [`classify`] says to stop.
async fn decide_and_forward<S, B, RB>(
    mut inner: S,
    snapshot: &Snapshot,
    trust: bool,
    parts: Parts,
    body: &mut Option<B>,
    trace: &mut Trace,
    metrics: Option<&Arc<Metrics>>,
) -> Result<Outcome<RB>, Rejection>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    request_filter(&parts)?;
    // The provider is looked up first (the access log and the metrics name
    // it), but an unknown one is answered only after the key: without a key,
    // a request learns nothing about which providers are configured.
    let routed = route(snapshot, parts.uri.path(), trace);
    if let Err(Rejection::NotFound) = routed {
        return Err(Rejection::NotFound); // not a /{provider}/… path at all
    }
    let (principal, key) = principal(snapshot, trust, &parts.headers, &parts.extensions)?;
    trace.principal = Some(principal.clone());
    let route = routed?;
    let book = spend_check(snapshot, key.as_deref())?;
    // With a key, the provider's SDK dialect, configured ones included.
    trace.dialect = Some(route.provider.dialect());
    route::check_rest(route.rest)?;
    let query = route::filter_query(parts.uri.query())?;
    let settings = snapshot.settings();
    // An encoding the proxy cannot decode is refused before the body is
    // taken, so the refusal drains it like any other.
    let encoding = body::encoding(&parts.headers)?;
    let Some(body) = body.take() else {
        return Err(Rejection::InvalidBody("the request body could not be read"));
    };
    let bytes = read_body(&parts.headers, body, encoding, settings, trace).await?;
    let (model, lists) = model(route.rest, &parts.headers, &bytes)?;
    // Vertex names its model in the path (or, on its OpenAI-compatible
    // endpoint, in the body): elsewhere a body's `model` names nothing, so
    // only credentials without a model list (and no service account) serve.
    let model = model.filter(|_| {
        route.provider.slug != "google-vertex" || cloud::vertex_names_model(route.rest)
    });
    cloud::check_path(&route.provider.slug, route.rest)?;
    let (also, lists_unreadable) = match lists {
        Ok(also) => (also, false),
        Err(e) if route.provider.slug == "openrouter" => return Err(model_rejection(e)),
        Err(_) => (Vec::new(), true),
    };
    let (plan, mut ask) = select(snapshot, &principal, &route.provider.slug, model.as_deref());
    ask.also = &also;
    ask.lists_unreadable = lists_unreadable;

    let mut base = parts.headers;
    headers::strip_request(&mut base);
    base.insert(X_REQUEST_ID, trace.request_id.clone());
    if parts.method == Method::POST {
        // The usage report is read from the answer as it passes: it must
        // come uncompressed (the SDKs ask for gzip; a client could ask for
        // an encoding to hide its usage).
        base.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
    }
    let clock = Clock::default();
    let candidates = policy::admitted(&plan, &ask, &clock);
    trace.resting = candidates
        .resting()
        .map(|c| Arc::clone(&c.id_label))
        .collect();
    let mut candidates = candidates.peekable();
    let mut unserved = 0;
    while let Some((tier, cand)) = candidates.next() {
        if trace.attempts.is_empty() {
            // Admitted: the model may now appear in the access log.
            trace.model = model.as_deref().map(str::to_owned);
        }
        let number = u32::try_from(trace.attempts.len() + 1).unwrap_or(u32::MAX);
        let is_last = candidates.peek().is_none();
        // The last candidate takes the headers; earlier ones work on a copy.
        let Some(target) = cloud::target(cand, model.as_deref(), route.rest)? else {
            // No entry of its key serves this path: not an attempt.
            unserved += 1;
            continue;
        };
        let headers = if is_last {
            std::mem::take(&mut base)
        } else {
            base.clone()
        };
        let attempt = Attempt {
            credential: Arc::clone(&cand.record),
            number,
        };
        // A service account's attempt mints (or reads) its token.
        let mints = match (&cand.cloud, cand.record.service_account()) {
            (Cloud::Vertex(cache), Some(account)) => Some((cache, account, attempt.clone())),
            _ => None,
        };
        let mut upstream_req = upstream_request(
            &parts.method,
            headers,
            route.provider,
            cand,
            &target,
            query.as_deref(),
            bytes.clone(),
            attempt,
        )?;

        // A service account's token is minted (or read from its cache)
        // within the attempt: a failing token endpoint fails it over as a
        // connection failure would.
        let mut minted = None;
        let mut mint_failed = None;
        let call = async {
            if let Some((cache, account, attempt)) = mints {
                // Boxed: the mint's state does not grow every request's future.
                let token = cache.get(|| cloud::mint(&mut inner, account, attempt));
                match Box::pin(token).await {
                    Ok((token, fresh)) => {
                        upstream_req
                            .headers_mut()
                            .insert(http::header::AUTHORIZATION, token.clone());
                        minted = Some((token, fresh));
                    }
                    Err(MintError::Mint(failure)) => {
                        mint_failed = Some(MintFailed {
                            refused: failure.refused,
                            waited: false,
                        });
                        return Err(failure.error);
                    }
                    Err(MintError::Waited { refused }) => {
                        mint_failed = Some(MintFailed {
                            refused,
                            waited: true,
                        });
                        return Err("the token mint this request waited on failed".into());
                    }
                }
            }
            let svc = inner.ready().await.map_err(Into::into)?;
            svc.call(upstream_req).await.map_err(Into::into)
        };
        let waiting = Instant::now();
        let outcome: Result<Result<Response<RB>, BoxError>, _> =
            tokio::time::timeout(settings.first_byte_timeout, call).await;
        trace.upstream_wait += waiting.elapsed();
        let (result, response) = match outcome {
            Err(_elapsed) => (AttemptResult::Timeout, None),
            Ok(Err(e)) => {
                tracing::debug!(provider = %route.provider.slug, credential_id = %cand.record.id, attempt = number, error = %ErrorChain(&*e), "upstream connection failed");
                // A token endpoint that refuses the account's grant rejects
                // the credential; any other failure to mint is a failure
                // to connect.
                let refused = mint_failed
                    .as_ref()
                    .and_then(|f| f.refused)
                    .and_then(|s| StatusCode::from_u16(s).ok());
                match refused {
                    Some(status) => (AttemptResult::KeyRejected(status), None),
                    None => (AttemptResult::Error, None),
                }
            }
            Ok(Ok(res)) => (AttemptResult::Status(res.status()), Some(res)),
        };
        // Google says a key is invalid with a 400: read (a bounded part of)
        // such an answer to tell it from any other 400. Only then: a 2xx
        // is never read.
        let (result, response, peeked) = match response {
            Some(res)
                if res.status() == StatusCode::BAD_REQUEST
                    && trace.dialect == Some(Dialect::Google) =>
            {
                let (head, mut body) = res.into_parts();
                let encoded = head.headers.get(http::header::CONTENT_ENCODING).cloned();
                let (read, rejects) =
                    peek_rejection(&mut body, encoded.as_ref(), settings.first_byte_timeout).await;
                if rejects {
                    (AttemptResult::KeyRejected(head.status), None, None)
                } else {
                    (result, Some(Response::from_parts(head, body)), Some(read))
                }
            }
            response => (result, response, None),
        };
        tracing::debug!(provider = %route.provider.slug, credential_id = %cand.record.id, attempt = number, result = ?result, "attempt");
        trace.attempt(metrics.map(Arc::as_ref), cand, tier, result);
        let mut verdict = verdict(result, response.as_ref(), &clock, settings.max_cooldown);
        if let (Cloud::Vertex(cache), Some((token, fresh))) = (&cand.cloud, &minted) {
            if let Verdict::Rejected(status) = verdict {
                // A token the upstream refuses is minted anew next time.
                // Only a fresh one's refusal says the account is refused;
                // a cached one may have been revoked: a strike, no more.
                cache.forget(token);
                if !fresh {
                    verdict = Verdict::Failed(Some(status));
                }
            }
        }
        // A request that waited on another's failed mint says nothing more
        // about the credential than that one did.
        let waited = mint_failed.as_ref().is_some_and(|f| f.waited);
        if !waited {
            if let Some(rest) = cand.health.record(verdict, clock.now()) {
                snapshot.health_changed(&cand.id_label, rest);
            }
        }
        match classify(result, is_last) {
            Next::Failover => continue,
            Next::Fail(rejection) => {
                return Ok(Outcome::Failed {
                    rejection,
                    last: cand.id_value.clone(),
                })
            }
            Next::Relay => {}
        }
        // `classify` relays answers only, so there is a response here.
        let Some(res) = response else {
            return Ok(Outcome::Failed {
                rejection: Rejection::UpstreamUnreachable,
                last: cand.id_value.clone(),
            });
        };
        let (mut head, body) = res.into_parts();
        headers::strip_response(&mut head.headers);
        headers::annotate(
            &mut head.headers,
            &cand.id_value,
            trace.attempts.len(),
            tier,
        );
        let mut out = ByokBody::upstream_after(peeked, body, settings.idle_timeout);
        // Every provider generates (and reports usage) on POST alone.
        let tap = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .filter(|_| head.status.is_success() && parts.method == Method::POST)
            .and_then(|ct| UsageTap::for_content_type(ct.as_bytes()));
        if let Some(tap) = tap {
            let price = model
                .as_deref()
                .and_then(|m| snapshot.price(&route.provider.slug, m));
            out = out.with_usage(Accounting {
                tap,
                ledger: Arc::clone(snapshot.ledger()),
                book: book.clone(),
                entry: Some(Entry {
                    day: 0,
                    workspace: Arc::clone(&principal.workspace_id),
                    key: principal.key_hash,
                    credential: Arc::clone(&cand.id_label),
                    provider: trace.provider.clone().unwrap_or_else(|| Arc::from("none")),
                    tier,
                    model: price.map_or_else(other_model, |(key, _)| Arc::clone(key)),
                }),
                price: price.map(|(_, p)| *p),
                // Only a JSON request's size says anything about its tokens.
                request_bytes: if bytes.trim_ascii_start().starts_with(b"{") {
                    bytes.len() as u64
                } else {
                    0
                },
            });
        }
        return Ok(Outcome::Forwarded(Response::from_parts(head, out)));
    }
    if unserved > 0 {
        // Admitted, but no entry of their keys serves this path.
        return Err(Rejection::InvalidRequest(
            "no admitted credential serves this path: Azure deployment entries serve paths that name a deployment",
        ));
    }
    Err(Rejection::denied(
        policy::deny(&plan, &ask),
        &route.provider.slug,
        ask.model,
        ask.also.len(),
    ))
}

/// A token mint that failed an attempt.
struct MintFailed {
    /// The token endpoint's status, when it refused the account.
    refused: Option<u16>,
    /// The mint was another request's, which this one waited on.
    waited: bool,
}

// ---- the phases -----------------------------------------------------------------

/// Phase 1: what is never proxied, whoever asks.
fn request_filter(parts: &Parts) -> Result<(), Rejection> {
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
    Ok(())
}

/// Where a request goes: its provider and the path after the provider segment.
struct Route<'a> {
    provider: &'a Provider,
    rest: &'a str,
}

/// Phase 2: the provider named by the first path segment, byte for byte.
fn route<'a>(
    snapshot: &'a Snapshot,
    path: &'a str,
    trace: &mut Trace,
) -> Result<Route<'a>, Rejection> {
    let (slug, rest) = route::split(path)?;
    let Some((label, provider)) = snapshot.provider_entry(slug) else {
        trace.provider = Some(Arc::from("unknown"));
        return Err(Rejection::UnknownProvider);
    };
    trace.provider = Some(Arc::clone(label));
    // Before the key: only a built-in provider's dialect (every client
    // knows those exist), so answers tell nothing about the configuration.
    trace.dialect = Dialect::of_builtin(slug);
    Ok(Route { provider, rest })
}

/// Phase 3: the principal — from an earlier auth layer when trusted and
/// present, else from the gateway key in the headers.
fn principal(
    snapshot: &Snapshot,
    trust: bool,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<(Principal, Option<Arc<ApiKey>>), Rejection> {
    if trust {
        if let Some(p) = extensions.get::<Principal>() {
            let key = p.key_hash.and_then(|h| snapshot.api_key(&h));
            return Ok((p.clone(), key));
        }
    }
    let hash = client_key_hash(headers)?.ok_or(Rejection::MissingApiKey)?;
    let (principal, key) = snapshot.resolve(&hash).ok_or(Rejection::InvalidApiKey)?;
    Ok((principal, Some(key)))
}

/// Phase 3b: the key's book, and a refusal when its spend has reached its
/// limit (SPEC §8), before anything goes upstream.
fn spend_check(
    snapshot: &Snapshot,
    key: Option<&ApiKey>,
) -> Result<Option<Arc<KeyBook>>, Rejection> {
    let Some(key) = key else { return Ok(None) };
    let book = snapshot.ledger().book(key.hash);
    let now = ledger::now_ms();
    Ledger::touch(&book, now);
    if Ledger::over_limit(&book, key, ledger::day_of_ms(now)).is_some() {
        let period = match key.limit_reset {
            Some(LimitReset::Daily) => "for today (UTC)",
            Some(LimitReset::Weekly) => "for this week (UTC)",
            Some(LimitReset::Monthly) => "for this month (UTC)",
            None => "for its lifetime",
        };
        return Err(Rejection::KeyLimitExceeded { period });
    }
    Ok(Some(book))
}

/// Phase 4: the whole body, at most `max_body_bytes` once decoded, refused
/// when it stalls for `body_timeout`.
async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    encoding: body::Encoding,
    settings: Settings,
    trace: &mut Trace,
) -> Result<Bytes, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let limit = settings.max_body_bytes;
    let reading = Instant::now();
    let raw = body::read(headers, body, limit, settings.body_timeout).await;
    trace.body_wait = reading.elapsed();
    body::decode(encoding, raw?, limit)
}

/// Phase 5: the model, from the path where the provider's API puts it there,
/// else from the JSON body; the two must agree.
///
/// Every non-empty body is read for a model, whatever its media type, since
/// upstreams often parse JSON regardless of Content-Type. Only a body that
/// declares a non-JSON type (a form, multipart, binary) and is not JSON at
/// all has no model; it can then use only credentials without a model list.
///
/// The other models come back as read: an error when the lists are there but
/// malformed, which only OpenRouter's own route refuses outright (elsewhere
/// a `models` key is any other key, but a candidate whose upstream is
/// OpenRouter's admits nothing then).
fn model<'b>(
    rest: &str,
    headers: &HeaderMap,
    bytes: &'b Bytes,
) -> Result<(Option<Cow<'b, str>>, NamedModels), Rejection> {
    let path_model = model::path_model(rest).map_err(model_rejection)?;
    let (body_model, also) = if bytes.is_empty() {
        (None, Ok(Vec::new()))
    } else {
        match model::read_body_model(bytes) {
            // OpenRouter's `models` and `fallbacks`: read only when present.
            Ok(read) if read.lists => (read.model, model::named_models(bytes)),
            Ok(read) => (read.model, Ok(Vec::new())),
            Err(model::ModelError::InvalidBody(_)) if !body::is_json_like(headers) => {
                (None, Ok(Vec::new()))
            }
            Err(e) => return Err(model_rejection(e)),
        }
    };
    let model = match (path_model, body_model) {
        (Some(p), Some(b)) if p != b => {
            return Err(Rejection::AmbiguousModel(
                "the model in the path and the model in the body differ",
            ))
        }
        (Some(p), _) => Some(Cow::Owned(p)),
        (None, b) => b,
    };
    Ok((model, also))
}

/// The other models a body names, or why its lists do not read as such.
type NamedModels = Result<Vec<String>, model::ModelError>;

/// Phase 6: what may serve the principal's workspace for the provider (its
/// BYOK group and the shared tier's), and what the request asks of them.
fn select<'a>(
    snapshot: &Snapshot,
    principal: &'a Principal,
    provider: &str,
    model: Option<&'a str>,
) -> (Plan, Ask<'a>) {
    let plan = snapshot.plan(&principal.workspace_id, provider);
    let ask = Ask {
        key_hash: principal.key_hash.as_ref(),
        user_id: &principal.user_id,
        model,
        also: &[],
        lists_unreadable: false,
        require_zdr: principal.require_zdr,
    };
    (plan, ask)
}

/// Phase 7: one attempt's request to `cand`'s upstream: `headers` (already
/// stripped of every client credential) with the secret injected, the body
/// bytes the client sent.
#[expect(clippy::too_many_arguments, reason = "each is one part of the request")]
fn upstream_request(
    method: &Method,
    mut headers: HeaderMap,
    provider: &Provider,
    cand: &Candidate,
    target: &cloud::Target<'_>,
    query: Option<&str>,
    bytes: Bytes,
    attempt: Attempt,
) -> Result<Request<ForwardBody>, Rejection> {
    headers::inject(&mut headers, provider, cand, target.auth);
    let uri = target
        .upstream
        .uri(&target.path, query)
        .map_err(|_| Rejection::InvalidRequest("the request path cannot be forwarded"))?;
    // Only an AWS key's attempt reads the body again (to sign it).
    let signing = cand.record.aws_key().map(|key| (key, bytes.clone()));
    let mut req = Request::new(Full::new(bytes));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    if let Some((key, body)) = signing {
        super::sigv4::sign_request(&mut req, key, &body, std::time::SystemTime::now())
            .map_err(|_| Rejection::InvalidRequest("the request could not be signed for AWS"))?;
    }
    req.extensions_mut().insert(attempt);
    Ok(req)
}

/// The metrics label of a model without a price: client model strings
/// never become labels.
fn other_model() -> Arc<str> {
    static OTHER: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(OTHER.get_or_init(|| Arc::from("other")))
}

/// What one attempt says about its credential's health (SPEC §10).
fn verdict<B>(
    result: AttemptResult,
    response: Option<&Response<B>>,
    clock: &Clock,
    max_cooldown: std::time::Duration,
) -> Verdict {
    match result {
        AttemptResult::Status(StatusCode::TOO_MANY_REQUESTS) => {
            let rest = response.map_or(health::DEFAULT_COOLDOWN, |res| {
                health::cooldown(res.headers(), clock.now(), max_cooldown)
            });
            Verdict::RateLimited(rest.min(max_cooldown))
        }
        AttemptResult::Status(s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN))
        | AttemptResult::KeyRejected(s) => Verdict::Rejected(s.as_u16()),
        AttemptResult::Status(s) if s.is_server_error() => Verdict::Failed(Some(s.as_u16())),
        AttemptResult::Status(s) => Verdict::Fine(s.as_u16()),
        AttemptResult::Error | AttemptResult::Timeout => Verdict::Failed(None),
    }
}

/// How much of an error answer is read to tell a rejected key from any
/// other refusal.
const PEEK_LIMIT: usize = 16 * 1024;

/// Reads the start of an error answer (at most [`PEEK_LIMIT`], each frame
/// within `idle`) and says whether it is the provider's own way of saying
/// the secret is invalid: Google's `error.details[].reason` of
/// `API_KEY_INVALID`. Returns what was read, to be relayed first when not.
async fn peek_rejection<RB>(
    body: &mut RB,
    encoding: Option<&HeaderValue>,
    within: std::time::Duration,
) -> (Bytes, bool)
where
    RB: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut read = bytes::BytesMut::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut complete = false;
    while read.len() < PEEK_LIMIT {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Ok(None) => {
                complete = true;
                break;
            }
            // A broken or slow body: relayed as it is, for the client's own
            // idle timeout and error to apply.
            _ => break,
        }
    }
    let read = read.freeze();
    // The client may have asked for gzip: the answer is read as sent.
    let rejects = complete
        && match body::Encoding::of(encoding) {
            Some(body::Encoding::Identity) => google_key_invalid(&read),
            Some(enc) => body::decode(enc, read.clone(), PEEK_LIMIT)
                .is_ok_and(|plain| google_key_invalid(&plain)),
            None => false,
        };
    (read, rejects)
}

/// Whether a Google error body says the API key is invalid.
fn google_key_invalid(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: GoogleError,
    }
    #[derive(serde::Deserialize)]
    struct GoogleError {
        #[serde(default)]
        details: Vec<Detail>,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        reason: Option<String>,
    }
    let invalid = |e: &Envelope| {
        e.error
            .details
            .iter()
            .any(|d| d.reason.as_deref() == Some("API_KEY_INVALID"))
    };
    // One error, or (streamGenerateContent without SSE) a list of them.
    serde_json::from_slice::<Envelope>(body).is_ok_and(|e| invalid(&e))
        || serde_json::from_slice::<Vec<Envelope>>(body).is_ok_and(|l| l.iter().any(invalid))
}

/// What to do after an attempt.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Send this answer to the client as it came.
    Relay,
    /// Try the next candidate.
    Failover,
    /// Stop and answer with this.
    Fail(Rejection),
}

/// Phase 8, the retry table (SPEC §5): connection failures (and an
/// unsolicited `101`), timeouts before the response head and the statuses of
/// [`retryable`] go to the next candidate. With no candidate left, a connection failure is a 502, a
/// timeout a 504, a credential rejection (401/403) a 502 that keeps the
/// provider's words from the client, and any other answer goes out as it came.
fn classify(result: AttemptResult, is_last: bool) -> Next {
    let failure = match result {
        AttemptResult::Timeout => Rejection::UpstreamTimeout,
        // A protocol switch nobody asked for (the proxy refuses upgrades) is
        // a broken upstream, like a connection that failed.
        AttemptResult::Error | AttemptResult::Status(StatusCode::SWITCHING_PROTOCOLS) => {
            Rejection::UpstreamUnreachable
        }
        AttemptResult::Status(s) if !retryable(s) => return Next::Relay,
        AttemptResult::Status(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        | AttemptResult::KeyRejected(_) => Rejection::UpstreamRejectedCredential,
        AttemptResult::Status(_) if is_last => return Next::Relay,
        AttemptResult::Status(_) => return Next::Failover,
    };
    if is_last {
        Next::Fail(failure)
    } else {
        Next::Failover
    }
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

/// The decision alone, as the layer makes it, without a body or any I/O: the
/// gateway key in `headers` hashed and looked up, the first candidate of its
/// workspace for `provider` that admits `model`, and the headers the first
/// attempt would carry (client credentials and hop-by-hop headers stripped,
/// the credential's secret injected; none for a key that signs or mints
/// per attempt). For benches and dry runs.
///
/// It runs the layer's own phases: `principal`, the key's limit, `route`'s provider lookup,
/// `select` and the header half of `upstream_request`.
pub fn decide(
    snapshot: &Snapshot,
    mut headers: HeaderMap,
    provider: &str,
    model: Option<&str>,
) -> Result<(Arc<Credential>, HeaderMap), Rejection> {
    let (principal, key) = principal(snapshot, false, &headers, &Extensions::new())?;
    spend_check(snapshot, key.as_deref())?;
    let provider = snapshot
        .provider(provider)
        .ok_or(Rejection::UnknownProvider)?;
    let (plan, ask) = select(snapshot, &principal, &provider.slug, model);
    let clock = Clock::default();
    let Some((_, cand)) = policy::admitted(&plan, &ask, &clock).next() else {
        return Err(Rejection::denied(
            policy::deny(&plan, &ask),
            &provider.slug,
            model,
            0,
        ));
    };
    headers::strip_request(&mut headers);
    let auth = cloud::target(cand, model, "/")?.and_then(|t| t.auth);
    headers::inject(&mut headers, provider, cand, auth);
    Ok((Arc::clone(&cand.record), headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_is_the_retry_table() {
        use AttemptResult::*;
        let s = |c: u16| Status(StatusCode::from_u16(c).unwrap());
        // (result, is_last, next)
        let cases = [
            (s(200), false, Next::Relay),
            (s(200), true, Next::Relay),
            (s(400), false, Next::Relay),
            (s(404), true, Next::Relay),
            (s(401), false, Next::Failover),
            (s(403), false, Next::Failover),
            (
                s(401),
                true,
                Next::Fail(Rejection::UpstreamRejectedCredential),
            ),
            (
                s(403),
                true,
                Next::Fail(Rejection::UpstreamRejectedCredential),
            ),
            (s(429), false, Next::Failover),
            (s(429), true, Next::Relay),
            (s(503), false, Next::Failover),
            (s(529), true, Next::Relay),
            (Error, false, Next::Failover),
            (Error, true, Next::Fail(Rejection::UpstreamUnreachable)),
            (Timeout, false, Next::Failover),
            (Timeout, true, Next::Fail(Rejection::UpstreamTimeout)),
            (KeyRejected(StatusCode::BAD_REQUEST), false, Next::Failover),
            (
                KeyRejected(StatusCode::BAD_REQUEST),
                true,
                Next::Fail(Rejection::UpstreamRejectedCredential),
            ),
            (s(101), false, Next::Failover),
            (s(101), true, Next::Fail(Rejection::UpstreamUnreachable)),
        ];
        for (result, is_last, want) in cases {
            assert_eq!(classify(result, is_last), want, "{result:?} last={is_last}");
        }
    }

    #[test]
    fn googles_invalid_key_answer_and_only_it() {
        let invalid = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        assert!(google_key_invalid(invalid));
        let listed = [&b"["[..], invalid, b"]"].concat();
        assert!(google_key_invalid(&listed), "streamGenerateContent's list");
        for other in [
            &br#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}"#[..],
            br#"{"error":{"code":400,"message":"API_KEY_INVALID","status":"INVALID_ARGUMENT","details":[{"reason":"BAD_REQUEST"}]}}"#,
            br#"{"error":{"details":[{"reason":"API_KEY_INVALIDX"}]}}"#,
            br#"{"contents":[{"parts":[{"text":"reason API_KEY_INVALID"}]}]}"#,
            br#"[{"error":{"details":[{"reason":"BAD"}]}}]"#,
            b"not json",
            b"",
        ] {
            assert!(!google_key_invalid(other), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn retryable_statuses_are_exactly_the_contract_list() {
        let listed = [401, 403, 408, 429, 500, 502, 503, 504, 529];
        for code in 100..600u16 {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(retryable(status), listed.contains(&code), "{code}");
        }
    }
}
