//! Structured cloud keys at request time (SPEC §9): where each attempt goes
//! and how it authenticates — the candidate's target (upstream, path, auth
//! header), and a Vertex service account's token minted through the inner
//! service. The signing, the JWT and the path rewrites are in
//! [`auth`](crate::auth).

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower::{Service, ServiceExt};

use super::attempt::Attempt;
use super::body::ForwardBody;
use super::error::Rejection;
use crate::auth::token::MintFailure;
use crate::auth::{azure, vertex};
use crate::domain::{ServiceAccount, Upstream};
use crate::registry::{Candidate, Cloud};
use crate::BoxError;

/// How long a mint may take, within the attempt's first-byte timeout.
pub(crate) const MINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest token endpoint answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// Where one attempt goes and what authenticates it.
#[derive(Debug)]
pub(crate) struct Target<'c> {
    pub(crate) upstream: &'c Upstream,
    /// The value of the provider's auth header; `None` when the attempt is
    /// signed (SigV4) or bears a minted token (Vertex) instead.
    pub(crate) auth: Option<&'c HeaderValue>,
    /// The client's path, with what the key replaces in it.
    pub(crate) path: Cow<'c, str>,
}

/// Where `cand` sends a request for `model` whose path (after the provider)
/// is `rest` (checked by [`check_path`]); `None` when this candidate has no
/// entry for it (an Azure key of deployments alone, for a path that names
/// no deployment).
pub(crate) fn target<'c>(
    cand: &'c Candidate,
    model: Option<&str>,
    rest: &'c str,
) -> Result<Option<Target<'c>>, Rejection> {
    let plain = |auth| Target {
        upstream: &cand.upstream,
        auth,
        path: Cow::Borrowed(rest),
    };
    match &cand.cloud {
        Cloud::None => Ok(Some(plain(Some(&cand.auth_value)))),
        Cloud::SigV4 => Ok(Some(plain(None))),
        Cloud::Vertex(_) => {
            let Some(account) = cand.record.service_account() else {
                return Ok(None);
            };
            Ok(Some(Target {
                path: vertex::path(rest, &account.project_id, &account.region)?,
                ..plain(None)
            }))
        }
        Cloud::Azure(routes) => {
            // A deployment entry serves a path naming a deployment, which it
            // replaces; a path without one leaves the body's `model` to
            // pick the deployment, which only a resource entry may let it do.
            let names_deployment = azure::path(rest, "")? != rest;
            let deployment = routes.iter().find(|r| {
                names_deployment
                    && r.model
                        .as_ref()
                        .is_some_and(|m| model.is_some_and(|model| m.admits(model)))
            });
            let Some(route) = deployment.or_else(|| routes.iter().find(|r| r.model.is_none()))
            else {
                return Ok(None);
            };
            Ok(Some(Target {
                upstream: &route.upstream,
                auth: Some(&route.auth_value),
                path: match &route.deployment {
                    Some(d) => azure::path(rest, d)?,
                    None => Cow::Borrowed(rest),
                },
            }))
        }
    }
}

/// Refuses, before any attempt, a path that a cloud key's rewrite could
/// not read as the upstream would (see [`vertex::path`], [`azure::path`]).
pub(crate) fn check_path(provider: &str, rest: &str) -> Result<(), Rejection> {
    match provider {
        "google-vertex" => vertex::path(rest, "-", "-").map(drop),
        "azure" => azure::path(rest, "-").map(drop),
        _ => Ok(()),
    }
    .map_err(Rejection::from)
}

/// Mints an access token for `account` through `inner` (so the token
/// endpoint is reached as upstreams are, with their TLS roots):
/// `Bearer …`, marked sensitive, and how long it lives. The whole exchange
/// is bounded by [`MINT_TIMEOUT`]. Errors never hold the token, the
/// assertion or the endpoint's words; `refused` is the endpoint's status
/// when it refused the account (400 `invalid_grant`, 401, 403).
pub(crate) async fn mint<S, RB>(
    inner: &mut S,
    account: &ServiceAccount,
    attempt: Option<Attempt>,
) -> Result<(HeaderValue, std::time::Duration), MintFailure<BoxError>>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let failed = |error: BoxError| MintFailure {
        error,
        refused: None,
    };
    let mut req = vertex::token_request(account, std::time::SystemTime::now()).map_err(failed)?;
    if let Some(attempt) = attempt {
        req.extensions_mut().insert(attempt);
    }
    let exchange = async {
        let svc = inner.ready().await.map_err(|e| failed(e.into()))?;
        let res: Response<RB> = svc.call(req).await.map_err(|e| failed(e.into()))?;
        let status = res.status();
        if !status.is_success() {
            return Err(MintFailure {
                error: format!("the token endpoint answered {status}").into(),
                refused: matches!(status.as_u16(), 400 | 401 | 403).then_some(status.as_u16()),
            });
        }
        let body = Limited::new(res.into_body(), MAX_TOKEN_ANSWER)
            .collect()
            .await
            .map_err(|_| failed("the token endpoint's answer could not be read".into()))?
            .to_bytes();
        Ok(body)
    };
    let body = tokio::time::timeout(MINT_TIMEOUT, exchange)
        .await
        .map_err(|_| failed("the token endpoint did not answer in time".into()))??;
    vertex::read_token(&body).map_err(failed)
}
