//! Phase 1 of an attempt: the request to the candidate's upstream.

use http::{HeaderMap, Request, Version};
use http_body_util::Full;

use super::{Attempt, Forward};
use crate::proxy::body::ForwardBody;
use crate::proxy::cloud::Target;
use crate::proxy::error::Rejection;
use crate::proxy::headers;
use crate::registry::Candidate;

/// One attempt's request to `cand`'s `target`: `headers` (already stripped
/// of every client credential) with the secret injected, the body bytes the
/// client sent, signed when the credential is an AWS key, and `attempt` in
/// its extensions. A service account's token is not here: [`send`](super::send)
/// mints it.
pub(super) fn upstream_request(
    req: &Forward<'_>,
    cand: &Candidate,
    target: &Target<'_>,
    mut headers: HeaderMap,
    attempt: Attempt,
) -> Result<Request<ForwardBody>, Rejection> {
    if req.one.is_some_and(|one| one.wire.beta_in_body) {
        // In the body instead (see `one::leg_body`).
        headers.remove(crate::proxy::one::ANTHROPIC_BETA);
    }
    headers::inject(&mut headers, req.provider, cand, target.auth);
    let uri = target
        .upstream
        .uri(&target.path, req.query)
        .map_err(|_| Rejection::InvalidRequest("the request path cannot be forwarded"))?;
    let mut upstream = Request::new(Full::new(req.body.clone()));
    *upstream.method_mut() = req.method.clone();
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = headers;
    // Only an AWS key's attempt reads the body again (to sign it).
    #[cfg(feature = "aws")]
    if let Some(key) = cand.record.aws_key() {
        crate::auth::sigv4::sign_request(
            &mut upstream,
            key,
            req.body,
            std::time::SystemTime::now(),
        )
        .map_err(|_| Rejection::InvalidRequest("the request could not be signed for AWS"))?;
    }
    upstream.extensions_mut().insert(attempt);
    Ok(upstream)
}
