//! Phase 6 of an attempt: the answer the retry table relays, made safe to
//! relay (hop-by-hop and credential headers stripped), annotated with the
//! credential, the attempts and the tier, its usage tapped as it streams.

use std::sync::Arc;

use http::{Method, Response};

use super::send::Sent;
use super::{Forward, Outcome};
use crate::ledger::Entry;
use crate::policy::Tier;
use crate::proxy::body::ByokBody;
use crate::proxy::context::Ctx;
use crate::proxy::error::Rejection;
use crate::proxy::headers;
use crate::proxy::usage::{Accounting, UsageTap};
use crate::registry::Candidate;

/// The client's answer from `sent`, which the retry table relays.
pub(super) fn relay<RB>(
    req: &Forward<'_>,
    ctx: &Ctx,
    cand: &Candidate,
    tier: Tier,
    sent: Sent<RB>,
) -> Outcome<RB> {
    // The retry table relays answers only, so there is a response here.
    let Some(res) = sent.response else {
        return Outcome::Failed {
            rejection: Rejection::UpstreamUnreachable,
            last: cand.id_value.clone(),
        };
    };
    let (mut head, body) = res.into_parts();
    headers::strip_response(&mut head.headers);
    headers::annotate(&mut head.headers, &cand.id_value, ctx.attempts.len(), tier);
    let mut out = ByokBody::upstream_after(sent.peeked, body, req.settings.idle_timeout);
    // Every provider generates (and reports usage) on POST alone.
    let tap = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .filter(|_| head.status.is_success() && *req.method == Method::POST)
        .and_then(|ct| UsageTap::for_content_type(ct.as_bytes()));
    if let Some(tap) = tap {
        out = out.with_usage(accounting(req, ctx, cand, tier, tap));
    }
    Outcome::Forwarded(Response::from_parts(head, out))
}

/// Where the answer's usage counts, and at what price.
fn accounting(
    req: &Forward<'_>,
    ctx: &Ctx,
    cand: &Candidate,
    tier: Tier,
    tap: UsageTap,
) -> Accounting {
    let price = req
        .model
        .and_then(|m| req.snapshot.price(&req.provider.slug, m));
    Accounting {
        tap,
        ledger: Arc::clone(req.snapshot.ledger()),
        book: req.book.cloned(),
        entry: Some(Entry {
            day: 0,
            workspace: Arc::clone(&req.principal.workspace_id),
            key: req.principal.key_hash,
            credential: Arc::clone(&cand.id_label),
            provider: ctx.provider_label(),
            tier,
            model: price.map_or_else(other_model, |(key, _)| Arc::clone(key)),
        }),
        price: price.map(|(_, p)| *p),
        // Only a JSON request's size says anything about its tokens.
        request_bytes: if req.body.trim_ascii_start().starts_with(b"{") {
            req.body.len() as u64
        } else {
            0
        },
    }
}

/// The metrics label of a model without a price: client model strings
/// never become labels.
fn other_model() -> Arc<str> {
    static OTHER: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(OTHER.get_or_init(|| Arc::from("other")))
}
