//! A Vertex service account's token, minted through the inner service (so
//! the token endpoint is reached as upstreams are, with their TLS roots).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower::{Service, ServiceExt};

use super::Attempt;
use crate::auth::jwt;
use crate::auth::token::MintFailure;
use crate::domain::ServiceAccount;
use crate::proxy::body::ForwardBody;
use crate::BoxError;

/// How long a mint may take, within the attempt's first-byte timeout.
pub(crate) const MINT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest token endpoint answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

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
) -> Result<(HeaderValue, Duration), MintFailure<BoxError>>
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
    let mut req = jwt::token_request(account, std::time::SystemTime::now()).map_err(failed)?;
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
    jwt::read_token(&body).map_err(failed)
}
