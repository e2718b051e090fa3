//! One attempt per admitted candidate, until the retry table says stop.
//! Each attempt goes through named phases, each a short function:
//!
//! 1. [`build`](build::upstream_request): the upstream request — the
//!    candidate's target (upstream, path, auth), client credentials already
//!    stripped, the provider secret injected or the request signed;
//! 2. [`send`](send::send): the inner service called, a service account's
//!    token minted first, all within the first-byte timeout;
//! 3. [`read_head`](head::read_head): the upstream head, and the provider's
//!    own way of saying a key is invalid (Google's 400) read from its body;
//! 4. [`judge`](judge::judge): what the attempt says about the
//!    credential's health;
//! 5. [`classify`](retry::classify): the retry table, one pure function —
//!    relay, fail over, or fail;
//! 6. [`relay`](relay::relay): the answer stripped and annotated, its usage
//!    tapped as it streams.
//!
//! The request phases before these (route, key, body, model, selection) are
//! in [`service`](super::service); what they decided reaches every attempt
//! as a [`Forward`].

mod build;
mod cooldown;
mod head;
mod judge;
#[cfg(feature = "vertex")]
mod mint;
mod relay;
mod retry;
mod send;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::Body;
use tower::Service;

use super::body::{ByokBody, ForwardBody};
use super::cloud;
use super::context::{Ctx, Tried};
use super::error::Rejection;
use crate::clock::Clock;
use crate::domain::{Credential, Provider};
use crate::ledger::KeyBook;
use crate::metrics::Metrics;
use crate::policy::{self, Ask, Plan};
use crate::registry::{Candidate, Principal, Settings, Snapshot};
use crate::BoxError;

use retry::Next;

/// Put in the extensions of every request the inner service receives: which
/// credential this attempt uses, and which attempt it is (from 1).
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The credential whose secret the request carries.
    pub credential: Arc<Credential>,
    /// 1 for the first candidate, 2 for the first failover, and so on.
    pub number: u32,
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptResult {
    Status(StatusCode),
    /// An answer with this status that says the secret is invalid, in the
    /// provider's own way (Google's 400 `API_KEY_INVALID`), or a token
    /// endpoint's refusal of a service account.
    KeyRejected(StatusCode),
    Error,
    Timeout,
}

/// What the request phases decided, read by every attempt.
#[derive(Debug)]
pub(crate) struct Forward<'a> {
    pub(crate) snapshot: &'a Snapshot,
    pub(crate) settings: Settings,
    pub(crate) method: &'a Method,
    pub(crate) provider: &'a Provider,
    /// The path after the provider segment.
    pub(crate) rest: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) model: Option<&'a str>,
    /// The client's body, read once, sent by every attempt.
    pub(crate) body: &'a Bytes,
    pub(crate) principal: &'a Principal,
    /// The key's spend, where its usage counts.
    pub(crate) book: Option<&'a Arc<KeyBook>>,
    /// Read at most once, and only when some candidate rests.
    pub(crate) clock: &'a Clock,
    pub(crate) metrics: Option<&'a Metrics>,
}

/// How the attempts ended.
// Made once a request and moved twice: boxing the response would cost an
// allocation a request to save copying a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome<RB> {
    /// An upstream answered; its response, annotated.
    Forwarded(Response<ByokBody<RB>>),
    /// Every attempt failed; `last` is the id of the last credential tried.
    Failed {
        rejection: Rejection,
        last: HeaderValue,
    },
}

/// Tries `plan`'s candidates that admit `ask`, in order, each with a copy of
/// `headers` (already stripped of the client's credentials), until one
/// answers in a way the retry table relays, or none is left.
pub(crate) async fn forward<S, RB>(
    mut inner: S,
    req: &Forward<'_>,
    plan: &Plan<Candidate>,
    ask: &Ask<'_>,
    mut headers: HeaderMap,
    ctx: &mut Ctx,
) -> Result<Outcome<RB>, Rejection>
where
    S: Service<http::Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let candidates = policy::admitted(plan, ask, req.clock);
    ctx.resting = candidates
        .resting()
        .map(|c| Arc::clone(&c.id_label))
        .collect();
    let mut candidates = candidates.peekable();
    let mut unserved = 0;
    while let Some((tier, cand)) = candidates.next() {
        if ctx.attempts.is_empty() {
            // Admitted: the model may now appear in the access log.
            if let Some(model) = req.model {
                ctx.admit_model(req.body, model);
            }
        }
        let Some(target) = cloud::target(cand, req.model, req.rest)? else {
            // No entry of its key serves this path: not an attempt.
            unserved += 1;
            continue;
        };
        let is_last = candidates.peek().is_none();
        // The last candidate takes the headers; earlier ones work on a copy.
        let headers = if is_last {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        let attempt = Attempt {
            credential: Arc::clone(&cand.record),
            number: ctx.next_attempt(),
        };
        let upstream_req = build::upstream_request(req, cand, &target, headers, attempt)?;
        let sent = send::send(&mut inner, req, cand, upstream_req).await;
        ctx.upstream_wait += sent.waited;
        let sent = head::read_head(sent, req.provider.dialect(), req.settings).await;
        tracing::debug!(provider = %req.provider.slug, credential_id = %cand.record.id, attempt = ctx.next_attempt(), result = ?sent.result, "attempt");
        ctx.attempts.push(Tried {
            credential: Arc::clone(&cand.record),
            tier,
            result: sent.result,
        });
        super::access_log::attempt(req.metrics, ctx, &cand.id_label);
        judge::judge(req, cand, &sent);
        match retry::classify(sent.result, is_last) {
            Next::Failover => continue,
            Next::Fail(rejection) => {
                let last = cand.id_value.clone();
                return Ok(Outcome::Failed { rejection, last });
            }
            Next::Relay => {}
        }
        return Ok(relay::relay(req, ctx, cand, tier, sent));
    }
    if unserved > 0 {
        // Admitted, but no entry of their keys serves this path.
        return Err(Rejection::InvalidRequest(
            "no admitted credential serves this path: Azure deployment entries serve paths that name a deployment",
        ));
    }
    Err(Rejection::denied(
        policy::deny(plan, ask),
        &req.provider.slug,
        ask.model,
        ask.also.len(),
    ))
}

#[cfg(test)]
mod tests;
