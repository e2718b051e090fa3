//! Phase 2 of an attempt: the inner service called, within the first-byte
//! timeout; a service account's token is minted (or read from its cache)
//! first, within the same bound, so a failing token endpoint fails the
//! attempt over as a failed connection would.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use tower::{Service, ServiceExt};

use super::{Attempt, AttemptResult, Forward};
use crate::auth::token::MintError;
use crate::common::ErrorChain;
use crate::proxy::body::ForwardBody;
use crate::proxy::cloud;
use crate::registry::{Candidate, Cloud};
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
    pub(super) token: Option<(HeaderValue, bool)>,
    /// False when the attempt waited on another request's mint, which
    /// failed: it says nothing more about the credential than that one did.
    pub(super) counts: bool,
    /// How long it waited for the head (and the token).
    pub(super) waited: Duration,
}

/// A token mint that failed an attempt.
struct MintFailed {
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
        if let (Cloud::Vertex(cache), Some(account)) = (&cand.cloud, cand.record.service_account())
        {
            let attempt = upstream.extensions().get::<Attempt>().cloned();
            let mint = || cloud::mint(&mut *inner, account, attempt);
            // Boxed: the mint's state does not grow every request's future.
            match Box::pin(cache.get(mint)).await {
                Ok((value, fresh)) => {
                    let auth = http::header::AUTHORIZATION;
                    upstream.headers_mut().insert(auth, value.clone());
                    token = Some((value, fresh));
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
