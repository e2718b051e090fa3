//! Phase 6 of an attempt: the answer the retry table relays, made safe to
//! relay (hop-by-hop and credential headers stripped), annotated with the
//! credential, the attempts and the tier, its usage tapped as it streams.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Response};

use super::send::Sent;
use super::{Forward, OneLeg, Outcome};
use crate::ledger::Entry;
use crate::policy::Tier;
use crate::proxy::body::ByokBody;
use crate::proxy::body::{JsonEdit, Shaping};
use crate::proxy::context::Ctx;
use crate::proxy::error::Rejection;
use crate::proxy::headers;
use crate::proxy::one::edit;
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
    let shaping = match req.one {
        Some(one) if sent.peeked.is_none() => one_endpoint(req, &one, &mut head),
        _ => Shaping::Plain,
    };
    let mut out = ByokBody::shaped(sent.peeked, body, req.settings.idle_timeout, shaping);
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

/// The one endpoint's answer (SPEC §11): which endpoint served it in
/// `x-byok-provider` and `x-byok-model`, and a successful JSON answer's
/// `model` made the slug (with `provider` on chat completions).
fn one_endpoint(req: &Forward<'_>, one: &OneLeg<'_>, head: &mut http::response::Parts) -> Shaping {
    let h = &mut head.headers;
    if let Ok(v) = HeaderValue::from_str(req.label) {
        h.insert(X_BYOK_PROVIDER, v);
    }
    if let Some(v) = req.model.and_then(|m| HeaderValue::from_str(m).ok()) {
        h.insert(X_BYOK_MODEL, v);
    }
    let media = |media: &[u8]| {
        h.get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| media_type_is(ct.as_bytes(), media))
    };
    if !head.status.is_success() {
        return Shaping::Plain;
    }
    if one.wire.reply.event_stream && media(b"application/vnd.amazon.eventstream") {
        // Anthropic's server-sent events from here on (the usage tap reads
        // them as such); its length changes.
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.remove(http::header::CONTENT_LENGTH);
        return Shaping::EventStream;
    }
    if !media(b"application/json") {
        return Shaping::Plain;
    }
    // Its length changes.
    h.remove(http::header::CONTENT_LENGTH);
    Shaping::Json(JsonEdit {
        model: edit::json_string(one.slug),
        provider: one
            .wire
            .reply
            .provider_field
            .then(|| edit::json_string(req.provider.display_name())),
    })
}

/// Whether a `Content-Type` value is `media` (parameters aside, any case).
fn media_type_is(value: &[u8], media: &[u8]) -> bool {
    let end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
    value[..end].trim_ascii().eq_ignore_ascii_case(media)
}

/// The endpoint that served a one-endpoint answer: its provider's slug.
const X_BYOK_PROVIDER: HeaderName = HeaderName::from_static("x-byok-provider");
/// … and that provider's id of the model.
const X_BYOK_MODEL: HeaderName = HeaderName::from_static("x-byok-model");

/// Where the answer's usage counts, and at what price.
fn accounting(
    req: &Forward<'_>,
    ctx: &Ctx,
    cand: &Candidate,
    tier: Tier,
    tap: UsageTap,
) -> Accounting {
    // On the one endpoint, the slug's price first (SPEC §11).
    let price = req
        .one
        .and_then(|one| req.snapshot.price_of_slug(one.slug))
        .or_else(|| {
            req.model
                .and_then(|m| req.snapshot.price(&req.provider.slug, m))
        });
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
