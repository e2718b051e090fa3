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
//! as a [`Forward`], one per [`Leg`]: a provider route has one leg, the one
//! endpoint (SPEC §11) one per endpoint of each of its models, walked in
//! order with failover across all of them.

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

use super::body::{ByokBody, ForwardBody, Reservation};
use super::cloud;
use super::context::{Ctx, Tried};
use super::error::Rejection;
use super::one::edit::Member;
use super::one::wire::Wire;
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

/// What the request phases decided, read by every attempt of a leg.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forward<'a> {
    pub(crate) snapshot: &'a Snapshot,
    pub(crate) settings: Settings,
    pub(crate) method: &'a Method,
    pub(crate) provider: &'a Provider,
    /// The path after the provider segment.
    pub(crate) rest: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) model: Option<&'a str>,
    /// The client's body, read once, sent by every attempt (on the one
    /// endpoint, edited for each leg first: see [`Forward::one`]).
    pub(crate) body: &'a Bytes,
    pub(crate) principal: &'a Principal,
    /// The key's spend, where its usage counts.
    pub(crate) book: Option<&'a Arc<KeyBook>>,
    /// Read at most once, and only when some candidate rests.
    pub(crate) clock: &'a Clock,
    pub(crate) metrics: Option<&'a Metrics>,
    /// The provider's metrics label.
    pub(crate) label: &'a Arc<str>,
    /// On the one endpoint (SPEC §11): the slug, the body's edits and the
    /// answer's shape for this leg's provider.
    pub(crate) one: Option<OneLeg<'a>>,
}

/// What the one endpoint adds to a leg (SPEC §11).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneLeg<'a> {
    /// The model's slug, as the client's answer names it.
    pub(crate) slug: &'a str,
    /// How requests reach this leg's provider.
    pub(crate) wire: &'a Wire,
    /// The client body's top-level members, which the leg's edits address.
    pub(crate) members: &'a [Member<'a>],
}

/// One leg of a request's attempts: one provider's candidates (its plan,
/// and what the request asks of their allowlists) for one model. A request
/// on a provider's own route has one leg; one on the one endpoint (SPEC
/// §11), a leg per endpoint of each of its models, in order.
#[derive(Debug)]
pub(crate) struct Leg<'a> {
    pub(crate) req: Forward<'a>,
    pub(crate) plan: Plan<Candidate>,
    pub(crate) ask: Ask<'a>,
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

/// Tries each leg's candidates that admit its ask, leg after leg, each
/// attempt with a copy of `headers` (already stripped of the client's
/// credentials), until one answers in a way the retry table relays, or none
/// is left. A leg of the one endpoint sends its own edit of the body, held
/// in `held` beside the client's.
pub(crate) async fn forward<S, RB>(
    mut inner: S,
    legs: &[Leg<'_>],
    mut headers: HeaderMap,
    mut held: Option<&mut Reservation<'_>>,
    ctx: &mut Ctx,
) -> Result<Outcome<RB>, Rejection>
where
    S: Service<http::Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let mut last_id = None;
    for (i, leg) in legs.iter().enumerate() {
        let candidates = policy::admitted(&leg.plan, &leg.ask, leg.req.clock);
        ctx.resting
            .extend(candidates.resting().map(|c| Arc::clone(&c.id_label)));
        // Admitted candidates that no entry of their key serves (an Azure
        // key of deployments, for a path naming none; an express-mode
        // Vertex key, for a path that takes a project): not attempts.
        let mut candidates = Served {
            admitted: candidates,
            req: &leg.req,
        }
        .peekable();
        if candidates.peek().is_none() {
            continue;
        }
        // The last candidate of all is the last of the last leg that has any.
        let later = legs[i + 1..].iter().any(|l| {
            policy::admitted(&l.plan, &l.ask, l.req.clock).any(|(_, c)| serves(&l.req, c))
        });
        let edited;
        let req = match leg.req.one {
            None => leg.req,
            Some(one) => {
                edited = crate::proxy::one::leg_body(&leg.req, &one, &headers)?;
                if let Some(held) = held.as_deref_mut() {
                    held.grow_to(leg.req.body.len().saturating_add(edited.len()))?;
                }
                Forward {
                    body: &edited,
                    ..leg.req
                }
            }
        };
        ctx.provider = Some(Arc::clone(req.label));
        while let Some((tier, cand)) = candidates.next() {
            if ctx.attempts.is_empty() {
                // Admitted: the model may now appear in the access log.
                match (req.one, req.model) {
                    (Some(one), _) => ctx.admit_model(leg.req.body, one.slug),
                    (None, Some(model)) => ctx.admit_model(req.body, model),
                    (None, None) => {}
                }
            }
            let Some(target) = cloud::target(cand, req.model, req.rest)? else {
                continue; // not served: filtered out above
            };
            let is_last = !later && candidates.peek().is_none();
            // The last candidate takes the headers; earlier ones work on a copy.
            let headers = if is_last {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            let sent = attempt(&mut inner, &req, cand, tier, &target, headers, ctx).await?;
            last_id = Some(cand.id_value.clone());
            match retry::classify(sent.result, is_last) {
                Next::Failover => continue,
                Next::Fail(rejection) => {
                    let last = cand.id_value.clone();
                    return Ok(Outcome::Failed { rejection, last });
                }
                Next::Relay => {}
            }
            return Ok(relay::relay(&req, ctx, cand, tier, sent));
        }
    }
    none_served(legs, last_id, ctx)
}

/// One attempt of `cand` at `target`, with `headers`: the request built,
/// sent, its head read, counted and judged.
async fn attempt<S, RB>(
    inner: &mut S,
    req: &Forward<'_>,
    cand: &Candidate,
    tier: policy::Tier,
    target: &cloud::Target<'_>,
    headers: HeaderMap,
    ctx: &mut Ctx,
) -> Result<send::Sent<RB>, Rejection>
where
    S: Service<http::Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let attempt = Attempt {
        credential: Arc::clone(&cand.record),
        number: ctx.next_attempt(),
    };
    let upstream_req = build::upstream_request(req, cand, target, headers, attempt)?;
    let sent = send::send(inner, req, cand, upstream_req).await;
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
    Ok(sent)
}

/// The answer when the legs ran out without one: the last failure as the
/// proxy words it (only when every candidate's serving was misjudged), a
/// path no admitted credential serves, or the policy's denial.
fn none_served<RB>(
    legs: &[Leg<'_>],
    last_id: Option<HeaderValue>,
    ctx: &Ctx,
) -> Result<Outcome<RB>, Rejection> {
    if let (Some(last), Some(tried)) = (last_id, ctx.attempts.last()) {
        let rejection = match retry::classify(tried.result, true) {
            Next::Fail(rejection) => rejection,
            Next::Failover | Next::Relay => Rejection::UpstreamUnreachable,
        };
        return Ok(Outcome::Failed { rejection, last });
    }
    let unserved = legs
        .iter()
        .any(|l| policy::admitted(&l.plan, &l.ask, l.req.clock).any(|(_, c)| !serves(&l.req, c)));
    if unserved {
        // Admitted, but no entry of their keys serves this path.
        return Err(Rejection::InvalidRequest(
            "no admitted credential serves this path: Azure deployment entries serve paths that name a deployment, and Vertex's Claude and OpenAI-compatible endpoints take a service account",
        ));
    }
    Err(denied(legs))
}

/// The admitted candidates that can serve a leg's request (see [`serves`]).
struct Served<'c, 'r> {
    admitted: policy::Admitted<'c, Candidate>,
    req: &'r Forward<'r>,
}

impl<'c> Iterator for Served<'c, '_> {
    type Item = (policy::Tier, &'c Candidate);

    fn next(&mut self) -> Option<Self::Item> {
        let req = self.req;
        self.admitted.find(|(_, c)| serves(req, c))
    }
}

/// Whether `cand` can serve `req`: a Vertex path that takes a project only
/// a service account; an Azure path only an entry of its key that serves
/// it. A path the rewrite refuses counts as served: its attempt says why.
fn serves(req: &Forward<'_>, cand: &Candidate) -> bool {
    let account = req
        .one
        .is_none_or(|one| !one.wire.service_account || cloud::is_service_account(cand));
    account && !matches!(cloud::target(cand, req.model, req.rest), Ok(None))
}

/// Why no candidate of any leg served: the policy's denial of a leg, or of
/// all of them (the one endpoint's).
fn denied(legs: &[Leg<'_>]) -> Rejection {
    match legs {
        [leg] => Rejection::denied(
            policy::deny(&leg.plan, &leg.ask),
            &leg.req.provider.slug,
            leg.ask.model,
            leg.ask.also.len(),
        ),
        _ => {
            let mut providers: Vec<&str> = Vec::new();
            let mut models: Vec<&str> = Vec::new();
            let mut refused = policy::RefusedBy::default();
            let mut any = false;
            for leg in legs {
                let provider = leg.req.provider.slug.as_str();
                if !providers.contains(&provider) {
                    providers.push(provider);
                }
                let model = leg.req.one.map_or("", |o| o.slug);
                if !models.contains(&model) {
                    models.push(model);
                }
                if let policy::Denial::NoEligibleCredential(r) = policy::deny(&leg.plan, &leg.ask) {
                    any = true;
                    refused.add(&r);
                }
            }
            Rejection::NoEndpointCredential {
                providers: providers.join(", "),
                models: models.join(", "),
                refused: any.then_some(refused),
            }
        }
    }
}

#[cfg(test)]
mod tests;
