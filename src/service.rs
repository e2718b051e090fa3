//! [`ByokService`]: the per-request decision, then the inner service, once per
//! candidate until one answers.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::Full;
use tower::{Service, ServiceExt};

use crate::body::{self, ByokBody};
use crate::cache::{Candidate, Credential, Principal, Provider, Snapshot};
use crate::error::Rejection;
use crate::key::client_key_hash;
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

/// The middleware built by [`ByokLayer`](crate::ByokLayer). See the crate docs.
#[derive(Debug, Clone)]
pub struct ByokService<S> {
    pub(crate) inner: S,
    pub(crate) registry: Registry,
    pub(crate) trust_principal_extension: bool,
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
        Box::pin(async move {
            Ok(match handle(inner, &snapshot, trust, req).await {
                Ok(res) => res,
                Err(rejection) => {
                    tracing::debug!(reason = rejection.reason(), "request refused");
                    rejection.into_response()
                }
            })
        })
    }
}

/// Everything decided before the first attempt.
struct Plan<'a> {
    provider: &'a Provider,
    rest: &'a str,
    query: Option<Cow<'a, str>>,
    principal: Principal,
    model: Option<Cow<'a, str>>,
}

async fn handle<S, B, RB>(
    mut inner: S,
    snapshot: &Snapshot,
    trust: bool,
    req: Request<B>,
) -> Result<Response<ByokBody<RB>>, Rejection>
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
    let provider = snapshot.provider(slug).ok_or(Rejection::UnknownProvider)?;
    let principal = principal(snapshot, trust, &parts)?;
    route::check_rest(rest)?;
    let query = route::filter_query(parts.uri.query())?;

    let settings = snapshot.settings();
    let encoding = body::encoding(&parts.headers)?;
    let raw = body::read(&parts.headers, body, settings.max_body_bytes).await?;
    let bytes = body::decode(encoding, raw, settings.max_body_bytes)?;

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

    let plan = Plan {
        provider,
        rest,
        query,
        principal,
        model,
    };
    let mut base = parts.headers;
    headers::strip_request(&mut base);
    let group: Arc<[Candidate]> = snapshot
        .candidates(&plan.principal.workspace_id, &plan.provider.slug)
        .unwrap_or_else(|| Arc::from(Vec::new()));
    let ask = Ask {
        key_hash: plan.principal.key_hash.as_ref(),
        user_id: &plan.principal.user_id,
        model: plan.model.as_deref(),
    };

    let mut candidates = policy::admitted(&group, &ask).peekable();
    let mut attempts: u32 = 0;
    let mut last_failure: Option<(&Candidate, Rejection)> = None;
    while let Some(cand) = candidates.next() {
        attempts += 1;
        let is_last = candidates.peek().is_none();
        let mut headers = base.clone();
        headers::inject(&mut headers, plan.provider, cand);
        let uri = cand
            .upstream
            .uri(plan.rest, plan.query.as_deref())
            .map_err(|_| Rejection::InvalidRequest("the request path cannot be forwarded"))?;
        let mut upstream_req = Request::new(Full::new(bytes.clone()));
        *upstream_req.method_mut() = parts.method.clone();
        *upstream_req.uri_mut() = uri;
        *upstream_req.version_mut() = Version::HTTP_11;
        *upstream_req.headers_mut() = headers;
        upstream_req.extensions_mut().insert(Attempt {
            credential: Arc::clone(&cand.record),
            number: attempts,
        });

        let call = async {
            let svc = inner.ready().await?;
            svc.call(upstream_req).await
        };
        let outcome = tokio::time::timeout(settings.first_byte_timeout, call).await;
        let id = cand.record.id.as_str();
        match outcome {
            Err(_elapsed) => {
                tracing::debug!(provider = %plan.provider.slug, credential_id = id, attempt = attempts, "upstream timed out before the response head");
                last_failure = Some((cand, Rejection::UpstreamTimeout));
            }
            Ok(Err(e)) => {
                let e: BoxError = e.into();
                tracing::debug!(provider = %plan.provider.slug, credential_id = id, attempt = attempts, error = %ErrorChain(&*e), "upstream connection failed");
                last_failure = Some((cand, Rejection::UpstreamUnreachable));
            }
            Ok(Ok(res)) => {
                let status = res.status();
                tracing::debug!(provider = %plan.provider.slug, credential_id = id, attempt = attempts, status = status.as_u16(), "upstream answered");
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
                headers::annotate(&mut head.headers, cand, attempts);
                return Ok(Response::from_parts(
                    head,
                    ByokBody::upstream(body, settings.idle_timeout),
                ));
            }
        }
    }
    match last_failure {
        Some((cand, rejection)) => {
            tracing::debug!(provider = %plan.provider.slug, attempts, reason = rejection.reason(), "every candidate failed");
            let mut res: Response<ByokBody<RB>> = rejection.into_response();
            headers::annotate(res.headers_mut(), cand, attempts);
            Ok(res)
        }
        None => Err(policy::deny(&plan.provider.slug, &group, &ask)),
    }
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

/// An error with its sources, for logs. Upstream errors carry addresses and
/// OS errors, never request headers.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
}
