//! [`Ctx`]: what one request has come to so far, carried through its phases
//! (pingora's `CTX`). The phases write it and read it to decide (which
//! attempt this is, which dialect an error speaks); the access log reads it
//! once, at the end, and decides nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

use super::attempt::AttemptResult;
use crate::domain::{Credential, Dialect};
use crate::policy::Tier;
use crate::registry::Principal;

/// The request id header: taken from the client when well-formed, else made
/// up; sent upstream, and echoed in the response unless the upstream answered
/// with its own.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The proxy's request id, on every response.
pub(crate) const X_BYOK_REQUEST_ID: HeaderName = HeaderName::from_static("x-byok-request-id");

/// One attempt as it ended: the credential, its tier, what it came to.
#[derive(Debug)]
pub(crate) struct Tried {
    pub(crate) credential: Arc<Credential>,
    pub(crate) tier: Tier,
    pub(crate) result: AttemptResult,
}

/// One request's context.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) request_id: HeaderValue,
    pub(crate) started: Instant,
    /// Time spent waiting for the client's body.
    pub(crate) body_wait: Duration,
    /// Time spent waiting for upstream heads (and token mints).
    pub(crate) upstream_wait: Duration,
    /// The provider's metrics label, once the route named one.
    pub(crate) provider: Option<Arc<str>>,
    /// The error shape of the provider's SDKs: before the key, a built-in
    /// provider's only; after it, the routed provider's.
    pub(crate) dialect: Option<Dialect>,
    pub(crate) principal: Option<Principal>,
    /// The model, once a credential admitted it: UTF-8, and a slice of the
    /// request's body when it is written there as it is (no copy).
    pub(crate) model: Option<Bytes>,
    /// The attempts so far: the first inline, as most requests make one
    /// (no allocation for it).
    pub(crate) attempts: SmallVec<[Tried; 1]>,
    /// The outcome's reason (`forwarded`, or a rejection's).
    pub(crate) outcome: &'static str,
    /// The admitted candidates that were resting (cooling down or
    /// quarantined) when the request began: tried after the others, if at all.
    pub(crate) resting: Vec<Arc<str>>,
}

impl Ctx {
    /// The context of a request with these headers, begun now.
    pub(crate) fn start(headers: &HeaderMap) -> Ctx {
        Ctx {
            request_id: request_id(headers),
            started: Instant::now(),
            body_wait: Duration::ZERO,
            upstream_wait: Duration::ZERO,
            provider: None,
            dialect: None,
            principal: None,
            model: None,
            attempts: SmallVec::new(),
            outcome: "forwarded",
            resting: Vec::new(),
        }
    }

    /// The number the next attempt carries (from 1).
    pub(crate) fn next_attempt(&self) -> u32 {
        u32::try_from(self.attempts.len() + 1).unwrap_or(u32::MAX)
    }

    /// The tier of the last attempt.
    pub(crate) fn last_tier(&self) -> Option<Tier> {
        self.attempts.last().map(|t| t.tier)
    }

    /// The model once a credential admitted it (see [`Ctx::admit_model`]).
    pub(crate) fn model(&self) -> Option<&str> {
        self.model
            .as_deref()
            .and_then(|m| std::str::from_utf8(m).ok())
    }

    /// Records `model` as admitted: a slice of `body` when it lies in it
    /// (read there without escapes), else a copy.
    pub(crate) fn admit_model(&mut self, body: &Bytes, model: &str) {
        let start = (model.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let within = start <= body.len() && model.len() <= body.len() - start;
        self.model = Some(if within && !model.is_empty() {
            body.slice_ref(model.as_bytes())
        } else {
            Bytes::copy_from_slice(model.as_bytes())
        });
    }

    /// The provider's label, `none` before the route named one.
    pub(crate) fn provider_label(&self) -> Arc<str> {
        self.provider.clone().unwrap_or_else(|| Arc::from("none"))
    }
}

/// The client's `x-request-id` when it is 1–128 characters of
/// `[A-Za-z0-9._:-]` (safe to log and forward); otherwise a fresh one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
        {
            return v.clone();
        }
    }
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 32 lowercase hex digits: the seed, then the counter.
    let mut id = [0u8; 32];
    let (seed_hex, n_hex) = id.split_at_mut(16);
    let hexed = hex::encode_to_slice(seed.to_be_bytes(), seed_hex)
        .and_then(|()| hex::encode_to_slice(n.to_be_bytes(), n_hex));
    if hexed.is_err() {
        return HeaderValue::from_static("0");
    }
    // Owned by its `Bytes` from the start: one allocation, and the copies
    // (upstream, x-byok-request-id, x-request-id) only count references,
    // where a value copied from a slice allocates again when first cloned.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_safe_and_made_otherwise() {
        let mut h = HeaderMap::new();
        let made = request_id(&h);
        assert_eq!(made.len(), 32);
        assert_ne!(request_id(&h), made, "ids repeat");
        for good in ["abc-123", "req_1.2:3", &"a".repeat(128)] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(good).unwrap());
            assert_eq!(request_id(&h), good);
        }
        for bad in [
            "",
            "has space",
            "new\tline",
            &"a".repeat(129),
            "quote\"",
            "sk-{x}",
        ] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            assert_ne!(request_id(&h), bad, "{bad:?}");
        }
    }

    #[test]
    fn an_admitted_model_is_a_slice_of_the_body_or_a_copy() {
        let body = Bytes::from_static(br#"{"model":"gpt-4o"}"#);
        let mut ctx = Ctx::start(&HeaderMap::new());
        assert_eq!(ctx.model(), None);
        let within = std::str::from_utf8(&body[10..16]).unwrap();
        ctx.admit_model(&body, within);
        assert_eq!(ctx.model(), Some("gpt-4o"));
        assert_eq!(ctx.model.as_ref().unwrap().as_ptr(), body[10..].as_ptr());
        let elsewhere = String::from("openai/o1");
        ctx.admit_model(&body, &elsewhere);
        assert_eq!(ctx.model(), Some("openai/o1"));
        ctx.admit_model(&body, "");
        assert_eq!(ctx.model(), Some(""));
    }

    #[test]
    fn attempts_are_numbered_from_the_context() {
        let mut ctx = Ctx::start(&HeaderMap::new());
        assert_eq!(ctx.next_attempt(), 1);
        assert_eq!(ctx.last_tier(), None);
        let cred = Credential::for_tests("c1", "ws", "openai");
        ctx.attempts.push(Tried {
            credential: Arc::new(cred),
            tier: Tier::Shared,
            result: AttemptResult::Timeout,
        });
        assert_eq!(ctx.next_attempt(), 2);
        assert_eq!(ctx.last_tier(), Some(Tier::Shared));
    }
}
