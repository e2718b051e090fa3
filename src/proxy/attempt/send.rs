//! Phase 2 of an attempt: the inner service called, within the first-byte
//! timeout; a service account's token is minted (or read from its cache)
//! first, within the same bound, so a failing token endpoint fails the
//! attempt over as a failed connection would.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use tower::{Service, ServiceExt};

#[cfg(feature = "vertex")]
use super::Attempt;
use super::{AttemptResult, Forward};
use crate::common::ErrorChain;
use crate::proxy::body::ForwardBody;
use crate::registry::Candidate;
use crate::BoxError;

/// An attempt sent: what it came to, and what later phases need of how.
pub(super) struct Sent<RB> {
    pub(super) result: AttemptResult,
    /// The upstream's answer, when it answered.
    pub(super) response: Option<Response<RB>>,
    /// What an earlier look at the answer's body read (relayed first).
    pub(super) peeked: Option<Bytes>,
    /// The service account's token the attempt bore, and whether this
    /// attempt minted it.
    // Read only to judge a service account's token (the `vertex` feature).
    #[cfg_attr(not(feature = "vertex"), allow(dead_code))]
    pub(super) token: Option<(HeaderValue, bool)>,
    /// False when the attempt waited on another request's mint, which
    /// failed: it says nothing more about the credential than that one did.
    pub(super) counts: bool,
    /// How long it waited for the head (and the token).
    pub(super) waited: Duration,
}

/// A token mint that failed an attempt.
pub(super) struct MintFailed {
    /// The token endpoint's status, when it refused the account.
    refused: Option<u16>,
    /// The mint was another request's, which this one waited on.
    waited: bool,
}

/// Sends `upstream` through `inner`, minting `cand`'s token first when it is
/// a service account; the whole within the first-byte timeout.
pub(super) async fn send<S, RB>(
    inner: &mut S,
    req: &Forward<'_>,
    cand: &Candidate,
    mut upstream: Request<ForwardBody>,
) -> Sent<RB>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let mut token = None;
    let mut mint_failed = None;
    let call = async {
        match bear_token(&mut *inner, cand, &mut upstream).await {
            Ok(minted) => token = minted,
            Err((error, failed)) => {
                mint_failed = Some(failed);
                return Err(error);
            }
        }
        let svc = inner.ready().await.map_err(Into::into)?;
        svc.call(upstream).await.map_err(Into::into)
    };
    let waiting = Instant::now();
    let outcome = tokio::time::timeout(req.settings.first_byte_timeout, call).await;
    let waited = waiting.elapsed();
    let (result, response) = match outcome {
        Err(_elapsed) => (AttemptResult::Timeout, None),
        Ok(Err(e)) => {
            tracing::debug!(provider = %req.provider.slug, credential_id = %cand.record.id, error = %ErrorChain(&*e), "upstream connection failed");
            // A token endpoint that refuses the account's grant rejects
            // the credential; any other failure to mint is a failure to
            // connect.
            let refused = mint_failed
                .as_ref()
                .and_then(|f| f.refused)
                .and_then(|s| StatusCode::from_u16(s).ok());
            (
                refused.map_or(AttemptResult::Error, AttemptResult::KeyRejected),
                None,
            )
        }
        Ok(Ok(res)) => (AttemptResult::Status(res.status()), Some(res)),
    };
    Sent {
        result,
        response,
        peeked: None,
        token,
        counts: !mint_failed.is_some_and(|f| f.waited),
        waited,
    }
}

/// A service account's token on `upstream`, minted (or read from its cache)
/// first: the token and whether this attempt minted it; `None` for any
/// other credential.
#[cfg(feature = "vertex")]
async fn bear_token<S, RB>(
    inner: &mut S,
    cand: &Candidate,
    upstream: &mut Request<ForwardBody>,
) -> Result<Option<(HeaderValue, bool)>, (BoxError, MintFailed)>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    use crate::auth::token::MintError;
    use crate::registry::Cloud;
    let (Cloud::Vertex(cache), Some(account)) = (&cand.cloud, cand.record.service_account()) else {
        return Ok(None);
    };
    let attempt = upstream.extensions().get::<Attempt>().cloned();
    let mint = || super::mint::mint(inner, account, attempt);
    // Boxed: the mint's state does not grow every request's future.
    match Box::pin(cache.get(mint)).await {
        Ok((value, fresh)) => {
            let auth = http::header::AUTHORIZATION;
            upstream.headers_mut().insert(auth, value.clone());
            Ok(Some((value, fresh)))
        }
        Err(MintError::Mint(failure)) => Err((
            failure.error,
            MintFailed {
                refused: failure.refused,
                waited: false,
            },
        )),
        Err(MintError::Waited { refused }) => Err((
            "the token mint this request waited on failed".into(),
            MintFailed {
                refused,
                waited: true,
            },
        )),
    }
}

/// Without the `vertex` feature no credential is a service account.
#[cfg(not(feature = "vertex"))]
async fn bear_token<S>(
    _inner: &mut S,
    _cand: &Candidate,
    _upstream: &mut Request<ForwardBody>,
) -> Result<Option<(HeaderValue, bool)>, (BoxError, MintFailed)> {
    Ok(None)
}
