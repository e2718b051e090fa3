//! [`ByokService`]: a request goes through named phases, each a function
//! of the request and its context ([`Ctx`]), as pingora names its
//! `request_filter`, `upstream_peer`, …:
//!
//! 1. [`request_filter`]: refuse what is never proxied (CONNECT, CL+TE framing,
//!    protocol upgrades);
//! 2. [`route`]: the provider from the first path segment, the rest of the path
//!    and the query checked — an unknown provider is answered only after the
//!    next phase, so that a request without a key learns nothing about which
//!    providers exist;
//! 3. [`principal`]: who asks, from the gateway key (or a trusted extension),
//!    and [`spend_check`]: the key's spend limit;
//! 4. [`read_body`]: the body, bounded and decoded, and held within the
//!    [`BodyBudget`] of all bodies when the layer has one;
//! 5. [`model`]: the model, from the path and the body under the strict rules,
//!    and the other models the body names (OpenRouter's `models`,
//!    `fallbacks`), which every candidate whose upstream is OpenRouter must
//!    admit too;
//! 6. [`select`]: the workspace's candidates for the provider and what the
//!    request asks of their allowlists (the policy decides);
//! 7. the attempts, each in phases of its own ([`attempt`](super::attempt)):
//!    build, send, read the head, judge, classify, relay;
//!
//! and on the one endpoint (`/api/…`, SPEC §11, [`one`](super::one)), after
//! phase 1: its route (an unknown path answered before the key), phases 3
//! and 4, then the body's models and preferences read, their endpoints
//! planned as legs (a provider's plan and ask each), and the attempts across
//! all the legs;
//!
//! then [`respond`]: the answer, and one access-log line and the metrics
//! ([`access_log`](super::access_log)), which read the context and decide
//! nothing. [`decide`] runs phases 2, 3 and 6 alone, without a body, any I/O
//! or any side effect.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use tower::Service;

use super::attempt::{self, Forward, Leg, OneLeg, Outcome};
use super::body::{self, BodyBudget, ByokBody, ForwardBody, Reservation};
use super::client_key::client_key_hash;
use super::context::{Ctx, X_BYOK_REQUEST_ID, X_REQUEST_ID};
use super::error::Rejection;
use super::{access_log, cloud, headers, model, one, route};
use crate::clock::Clock;
use crate::common::json::json_response;
use crate::domain::{ApiKey, Credential, Dialect, LimitReset, Provider};
use crate::ledger::{self, KeyBook, Ledger};
use crate::metrics::Metrics;
use crate::policy::{self, Ask, Plan, Tier};
use crate::registry::Registry;
use crate::registry::{Candidate, Principal, Settings, Snapshot};
use crate::BoxError;

/// The middleware built by [`ByokLayer`](crate::ByokLayer). See the crate docs.
#[derive(Debug, Clone)]
pub struct ByokService<S> {
    pub(crate) inner: S,
    pub(crate) registry: Registry,
    pub(crate) trust_principal_extension: bool,
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) budget: Option<BodyBudget>,
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
        let service = Serve {
            snapshot: self.registry.snapshot(),
            trust: self.trust_principal_extension,
            metrics: self.metrics.clone(),
            budget: self.budget.clone(),
        };
        Box::pin(async move { Ok(service.serve(inner, req).await) })
    }
}

/// What one request is served with.
struct Serve {
    snapshot: Arc<Snapshot>,
    trust: bool,
    metrics: Option<Arc<Metrics>>,
    budget: Option<BodyBudget>,
}

impl Serve {
    /// The phases, the refused body drained, the answer and its log line.
    async fn serve<S, B, RB>(self, inner: S, req: Request<B>) -> Response<ByokBody<RB>>
    where
        S: Service<Request<ForwardBody>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        RB: Body<Data = Bytes> + Unpin,
        RB::Error: Into<BoxError>,
    {
        let mut ctx = Ctx::start(req.headers());
        let expects_continue = req.version() < http::Version::HTTP_2
            && req
                .headers()
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        let outcome = self.phases(inner, parts, &mut body, &mut ctx).await;
        let mut close = false;
        if let (Err(_), Some(unread)) = (&outcome, body) {
            // Refused before the body was polled: the answer goes at once
            // (SPEC §4). A client that asked `Expect: 100-continue` (HTTP/1)
            // has sent nothing and, having its answer, sends nothing: its
            // body is dropped, and the answer says the connection closes,
            // so that neither side takes later bytes for a body or a
            // request. Any other client may be sending still: what it sends
            // is drained on the side, within bounds, so that the answer
            // reaches it rather than a reset.
            if expects_continue {
                close = true;
            } else {
                let settings = self.snapshot.settings();
                body::drain_later(unread, settings.max_body_bytes, settings.body_timeout);
            }
        }
        let mut res = respond(outcome, &mut ctx);
        if close {
            res.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        access_log::finish(&ctx, res.status(), self.metrics.as_deref());
        res
    }

    /// The request phases in order, then the attempts.
    async fn phases<S, B, RB>(
        &self,
        inner: S,
        parts: Parts,
        body: &mut Option<B>,
        ctx: &mut Ctx,
    ) -> Result<Outcome<RB>, Rejection>
    where
        S: Service<Request<ForwardBody>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        B: Body,
        B::Error: Into<BoxError>,
        RB: Body<Data = Bytes> + Unpin,
        RB::Error: Into<BoxError>,
    {
        let snapshot = &*self.snapshot;
        request_filter(&parts)?;
        if let Some(route) = one::route(&parts.method, parts.uri.path()) {
            return self.one_endpoint(inner, parts, body, ctx, route).await;
        }
        // The provider is looked up first (the access log and the metrics
        // name it), but an unknown one is answered only after the key:
        // without a key, a request learns nothing about which providers are
        // configured.
        let routed = route(snapshot, parts.uri.path(), ctx);
        if let Err(Rejection::NotFound) = routed {
            return Err(Rejection::NotFound); // not a /{provider}/… path at all
        }
        let (principal, key) = principal(snapshot, self.trust, &parts.headers, &parts.extensions)?;
        ctx.principal = Some(principal.clone());
        let route = routed?;
        let book = spend_check(snapshot, key.as_deref())?;
        // With a key, the provider's SDK dialect, configured ones included.
        ctx.dialect = Some(route.provider.dialect());
        route::check_rest(route.rest)?;
        let query = route::filter_query(parts.uri.query())?;
        let settings = snapshot.settings();
        let (bytes, mut held) = self.take_body(&parts.headers, body, settings, ctx).await?;
        let (model, lists) = model(route.rest, &parts.headers, &bytes)?;
        // Vertex names its model in the path (or, on its OpenAI-compatible
        // endpoint, in the body): elsewhere a body's `model` names nothing,
        // so only credentials without a model list (and no service account)
        // serve.
        let model = model.filter(|_| {
            route.provider.slug != "google-vertex" || crate::auth::vertex::names_model(route.rest)
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
        let headers = upstream_headers(parts.headers, &parts.method, ctx);
        let clock = Clock::default();
        let forward = Forward {
            snapshot,
            settings,
            method: &parts.method,
            provider: route.provider,
            rest: route.rest,
            query: query.as_deref(),
            model: model.as_deref(),
            body: &bytes,
            principal: &principal,
            book: book.as_ref(),
            clock: &clock,
            metrics: self.metrics.as_deref(),
            label: route.label,
            one: None,
        };
        let leg = Leg {
            req: forward,
            plan,
            ask,
        };
        attempt::forward(
            inner,
            std::slice::from_ref(&leg),
            headers,
            Some(&mut held),
            ctx,
        )
        .await
    }

    /// The one endpoint (SPEC §11): the key, then the listings, or the
    /// body's models and preferences, their endpoints as legs, and the
    /// attempts across all of them.
    async fn one_endpoint<S, B, RB>(
        &self,
        inner: S,
        parts: Parts,
        body: &mut Option<B>,
        ctx: &mut Ctx,
        route: Result<one::Route, Rejection>,
    ) -> Result<Outcome<RB>, Rejection>
    where
        S: Service<Request<ForwardBody>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        B: Body,
        B::Error: Into<BoxError>,
        RB: Body<Data = Bytes> + Unpin,
        RB::Error: Into<BoxError>,
    {
        let snapshot = &*self.snapshot;
        ctx.provider = Some(api_label());
        // A path under /api/ that is none of the one endpoint's routes
        // tells nothing about the configuration: answered before the key.
        let route = route?;
        ctx.dialect = Some(route.dialect());
        let (principal, key) = principal(snapshot, self.trust, &parts.headers, &parts.extensions)?;
        ctx.principal = Some(principal.clone());
        let book = spend_check(snapshot, key.as_deref())?;
        let format = match route {
            one::Route::Infer(format) => format,
            one::Route::Models => {
                ctx.outcome = "answered";
                let json = one::listing::models(snapshot, &principal);
                return Ok(Outcome::Forwarded(json_response(StatusCode::OK, json)));
            }
            one::Route::Key => {
                let key = key.ok_or(Rejection::InvalidRequest(
                    "GET /api/v1/key describes the calling gateway key, and this request came without one",
                ))?;
                ctx.outcome = "answered";
                let json = one::listing::key(snapshot, &key);
                return Ok(Outcome::Forwarded(json_response(StatusCode::OK, json)));
            }
        };
        let book = book.as_ref();
        self.one_infer(inner, parts, body, ctx, format, &principal, book)
            .await
    }

    /// An inference request of the one endpoint in `format`: the body read
    /// under §4's rules, its models and preferences, their endpoints as
    /// legs, the attempts across all of them.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request phases' results, passed on"
    )]
    async fn one_infer<S, B, RB>(
        &self,
        inner: S,
        parts: Parts,
        body: &mut Option<B>,
        ctx: &mut Ctx,
        format: one::Format,
        principal: &Principal,
        book: Option<&Arc<KeyBook>>,
    ) -> Result<Outcome<RB>, Rejection>
    where
        S: Service<Request<ForwardBody>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        B: Body,
        B::Error: Into<BoxError>,
        RB: Body<Data = Bytes> + Unpin,
        RB::Error: Into<BoxError>,
    {
        let snapshot = &*self.snapshot;
        let query = route::filter_query(parts.uri.query())?;
        let settings = snapshot.settings();
        let (bytes, mut held) = self.take_body(&parts.headers, body, settings, ctx).await?;
        // §4's rules first: one JSON document, one `model` string.
        let read = model::read_body_model(&bytes).map_err(model_rejection)?;
        let members = one::edit::members(&bytes)
            .ok_or(Rejection::InvalidBody("the body must be a JSON object"))?;
        let asked = one::fields::read(&bytes, &members, read.model, format)?;
        let planned = one::legs::plan(snapshot.catalog(), snapshot.providers(), &asked, format)?;
        let require_zdr = principal.require_zdr || asked.prefs.zdr;
        let clock = Clock::default();
        let legs: Vec<Leg<'_>> = planned
            .iter()
            .map(|p| {
                let slug: &str = &asked.models[p.model_index];
                Leg {
                    req: Forward {
                        snapshot,
                        settings,
                        method: &parts.method,
                        provider: p.provider,
                        rest: &p.wire.path,
                        query: p
                            .wire
                            .query
                            .or(query.as_deref().filter(|_| p.wire.client_query)),
                        model: Some(p.model),
                        body: &bytes,
                        principal,
                        book,
                        clock: &clock,
                        metrics: self.metrics.as_deref(),
                        label: p.label,
                        one: Some(OneLeg {
                            slug,
                            wire: &p.wire,
                            members: &members,
                        }),
                    },
                    plan: snapshot.plan(&principal.workspace_id, p.label),
                    ask: Ask {
                        key_hash: principal.key_hash.as_ref(),
                        user_id: &principal.user_id,
                        model: Some(p.model),
                        slug: Some(slug),
                        also: &[],
                        lists_unreadable: false,
                        require_zdr,
                    },
                }
            })
            .collect();
        let headers = upstream_headers(parts.headers, &parts.method, ctx);
        attempt::forward(inner, &legs, headers, Some(&mut held), ctx).await
    }
}

impl Serve {
    /// Phase 4: the body judged from the head (an encoding the proxy cannot
    /// decode, a declared length over the limit or beyond the memory budget
    /// refused before it is polled, so the refusal drains it like any other
    /// and no `100 Continue` goes first), then read and held — until the
    /// attempts end, for a failover's replay, and given back with the
    /// reservation.
    async fn take_body<B>(
        &self,
        headers: &HeaderMap,
        body: &mut Option<B>,
        settings: Settings,
        ctx: &mut Ctx,
    ) -> Result<(Bytes, Reservation<'_>), Rejection>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let encoding = body::encoding(headers)?;
        let declared = body::check_declared(headers, settings.max_body_bytes)?;
        let mut held = Reservation::of(self.budget.as_ref());
        held.grow_to(declared)?;
        let Some(body) = body.take() else {
            return Err(Rejection::InvalidBody("the request body could not be read"));
        };
        let bytes = read_body(body, encoding, settings, &mut held, ctx).await?;
        Ok((bytes, held))
    }
}

/// The metrics label of the one endpoint's requests before a leg names a
/// provider.
fn api_label() -> Arc<str> {
    static API: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(API.get_or_init(|| Arc::from("api")))
}

/// The client's answer: the upstream's, or the proxy's own, with the request
/// id; the context's outcome set for the log.
fn respond<RB>(outcome: Result<Outcome<RB>, Rejection>, ctx: &mut Ctx) -> Response<ByokBody<RB>> {
    let mut res = match outcome {
        Ok(Outcome::Forwarded(res)) => res,
        Err(rejection) => {
            ctx.outcome = rejection.reason();
            rejection.into_response_for(ctx.dialect, Some(&ctx.request_id))
        }
        Ok(Outcome::Failed { rejection, last }) => {
            ctx.outcome = rejection.reason();
            let mut res: Response<ByokBody<RB>> =
                rejection.into_response_for(ctx.dialect, Some(&ctx.request_id));
            // The tier of the last attempt, the one that failed.
            let tier = ctx.last_tier().unwrap_or(Tier::Byok);
            headers::annotate(res.headers_mut(), &last, ctx.attempts.len(), tier);
            res
        }
    };
    // Ours always in x-byok-request-id; in x-request-id too unless the
    // upstream set its own there (SDKs surface the provider's id).
    let h = res.headers_mut();
    h.insert(X_BYOK_REQUEST_ID, ctx.request_id.clone());
    if !h.contains_key(X_REQUEST_ID) {
        h.insert(X_REQUEST_ID, ctx.request_id.clone());
    }
    res
}

/// The headers every attempt starts from: the client's, stripped of every
/// credential and hop-by-hop header, with the request id; and on a POST, an
/// uncompressed answer asked for, since its usage report is read as it
/// passes (the SDKs ask for gzip; a client could ask for an encoding to hide
/// its usage).
fn upstream_headers(mut headers: HeaderMap, method: &Method, ctx: &Ctx) -> HeaderMap {
    headers::strip_request(&mut headers);
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    if method == Method::POST {
        headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
    }
    headers
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

/// Where a request goes: its provider (and its label) and the path after
/// the provider segment.
struct Route<'a> {
    provider: &'a Provider,
    label: &'a Arc<str>,
    rest: &'a str,
}

/// Phase 2: the provider named by the first path segment, byte for byte.
fn route<'a>(snapshot: &'a Snapshot, path: &'a str, ctx: &mut Ctx) -> Result<Route<'a>, Rejection> {
    let (slug, rest) = route::split(path)?;
    let Some((label, provider)) = snapshot.provider_entry(slug) else {
        ctx.provider = Some(Arc::from("unknown"));
        return Err(Rejection::UnknownProvider);
    };
    ctx.provider = Some(Arc::clone(label));
    // Before the key: only a built-in provider's dialect (every client
    // knows those exist), so answers tell nothing about the configuration.
    ctx.dialect = Dialect::of_builtin(slug);
    Ok(Route {
        provider,
        label,
        rest,
    })
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
/// limit (SPEC §8), before anything goes upstream. The key's last use moves
/// only for a request that goes on.
fn spend_check(
    snapshot: &Snapshot,
    key: Option<&ApiKey>,
) -> Result<Option<Arc<KeyBook>>, Rejection> {
    let Some(key) = key else { return Ok(None) };
    let book = snapshot.ledger().book(key.hash);
    let now = ledger::now_ms();
    limit_check(&book, key, now)?;
    Ledger::touch(&book, now);
    Ok(Some(book))
}

/// The refusal of a key whose spend in `book` has reached its limit at `now_ms`.
fn limit_check(book: &KeyBook, key: &ApiKey, now_ms: u64) -> Result<(), Rejection> {
    if Ledger::over_limit(book, key, ledger::day_of_ms(now_ms)).is_none() {
        return Ok(());
    }
    let period = match key.limit_reset {
        Some(LimitReset::Daily) => "for today (UTC)",
        Some(LimitReset::Weekly) => "for this week (UTC)",
        Some(LimitReset::Monthly) => "for this month (UTC)",
        None => "for its lifetime",
    };
    Err(Rejection::KeyLimitExceeded { period })
}

/// Phase 4: the whole body, at most `max_body_bytes` once decoded, refused
/// when it stalls for `body_timeout`, and held in `held` (503 when the
/// budget of all bodies has no room for it).
async fn read_body<B>(
    body: B,
    encoding: body::Encoding,
    settings: Settings,
    held: &mut Reservation<'_>,
    ctx: &mut Ctx,
) -> Result<Bytes, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let limit = settings.max_body_bytes;
    let reading = Instant::now();
    let raw = body::read(body, limit, settings.body_timeout, held).await;
    ctx.body_wait = reading.elapsed();
    let raw = raw?;
    if encoding == body::Encoding::Identity {
        return Ok(raw);
    }
    // The decoded body is held in place of the raw one.
    let decoded = body::decode(encoding, raw, limit)?;
    held.grow_to(decoded.len())?;
    held.shrink_to(decoded.len());
    Ok(decoded)
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
) -> (Plan<Candidate>, Ask<'a>) {
    let plan = snapshot.plan(&principal.workspace_id, provider);
    let ask = Ask {
        key_hash: principal.key_hash.as_ref(),
        user_id: &principal.user_id,
        model,
        slug: None,
        also: &[],
        lists_unreadable: false,
        require_zdr: principal.require_zdr,
    };
    (plan, ask)
}

fn model_rejection(e: model::ModelError) -> Rejection {
    match e {
        model::ModelError::InvalidBody(m) => Rejection::InvalidBody(m),
        model::ModelError::Ambiguous(m) => Rejection::AmbiguousModel(m),
        model::ModelError::InvalidPath(m) => Rejection::InvalidRequest(m),
    }
}

/// The decision alone, as the layer makes it, without a body, any I/O or
/// any side effect (the key's last use and the credentials' health stay as
/// they are): the gateway key in `headers` hashed and looked up, its spend
/// limit, the first candidate of its workspace for `provider` that admits
/// `model`, and the headers the first attempt would carry (client
/// credentials and hop-by-hop headers stripped, the credential's secret
/// injected; none for a key that signs or mints per attempt). For benches
/// and dry runs.
///
/// It runs the layer's own phases: `principal`, the key's limit, `route`'s
/// provider lookup, `select` and the header half of an attempt's build.
#[doc(hidden)]
pub fn decide(
    snapshot: &Snapshot,
    mut headers: HeaderMap,
    provider: &str,
    model: Option<&str>,
) -> Result<(Arc<Credential>, HeaderMap), Rejection> {
    let (principal, key) = principal(snapshot, false, &headers, &Extensions::new())?;
    if let Some(key) = key.as_deref() {
        let book = snapshot.ledger().peek_book(&key.hash).unwrap_or_default();
        limit_check(&book, key, ledger::now_ms())?;
    }
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
