//! The access log: one line per request (`byok_proxy::access`, level info)
//! and the request's metrics, from a [`Trace`] the service fills in as the
//! request goes through its phases; and the request id.
//!
//! The line names the principal by workspace, user and the first 8 hex
//! characters of the key's hash; the model only once a credential admitted
//! it; never a secret or a raw key.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::domain::{Credential, Dialect};
use crate::metrics::{status_class, Metrics};
use crate::policy::{Candidate, Tier};
use crate::registry::Principal;

/// The request id header: taken from the client when well-formed, else made
/// up; sent upstream, and echoed in the response unless the upstream answered
/// with its own.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The proxy's request id, on every response.
pub(crate) const X_BYOK_REQUEST_ID: HeaderName = HeaderName::from_static("x-byok-request-id");

/// What one attempt came to.
#[derive(Debug, Clone, Copy)]
pub(super) enum AttemptResult {
    Status(StatusCode),
    /// An answer with this status that says the secret is invalid, in the
    /// provider's own way (Google's 400 `API_KEY_INVALID`).
    KeyRejected(StatusCode),
    Error,
    Timeout,
}

impl AttemptResult {
    fn class(self) -> &'static str {
        match self {
            AttemptResult::Status(s) | AttemptResult::KeyRejected(s) => status_class(s.as_u16()),
            AttemptResult::Error => "error",
            AttemptResult::Timeout => "timeout",
        }
    }
}

/// Everything the access-log line and the metrics need about one request.
pub(super) struct Trace {
    pub(super) request_id: HeaderValue,
    started: Instant,
    pub(super) body_wait: Duration,
    pub(super) upstream_wait: Duration,
    pub(super) provider: Option<Arc<str>>,
    /// The error shape of the provider's SDKs, once the route named one.
    pub(super) dialect: Option<Dialect>,
    pub(super) principal: Option<Principal>,
    pub(super) model: Option<String>,
    pub(super) attempts: Vec<(Arc<Credential>, Tier, AttemptResult)>,
    pub(super) outcome: &'static str,
    /// The admitted candidates that were resting (cooling down or
    /// quarantined) when the request began: tried after the others, if at all.
    pub(super) resting: Vec<Arc<str>>,
}

impl Trace {
    pub(super) fn start(headers: &HeaderMap) -> Trace {
        Trace {
            request_id: request_id(headers),
            started: Instant::now(),
            body_wait: Duration::ZERO,
            upstream_wait: Duration::ZERO,
            provider: None,
            dialect: None,
            principal: None,
            model: None,
            attempts: Vec::new(),
            outcome: "forwarded",
            resting: Vec::new(),
        }
    }

    pub(super) fn attempt(
        &mut self,
        metrics: Option<&Metrics>,
        cand: &Candidate,
        tier: Tier,
        result: AttemptResult,
    ) {
        if let Some(m) = metrics {
            let provider = self.provider.get_or_insert_with(|| Arc::from("none"));
            m.attempt(provider, &cand.id_label, tier.as_str(), result.class());
            if !self.attempts.is_empty() {
                m.failover(provider);
            }
        }
        self.attempts.push((Arc::clone(&cand.record), tier, result));
    }

    pub(super) fn finish(self, status: StatusCode, metrics: Option<&Metrics>) {
        let total = self.started.elapsed();
        let own = total.saturating_sub(self.body_wait + self.upstream_wait);
        if let Some(m) = metrics {
            let provider = self.provider.clone().unwrap_or_else(|| Arc::from("none"));
            m.request(&provider, self.outcome);
            let upstream = (!self.attempts.is_empty()).then_some(self.upstream_wait.as_secs_f64());
            m.timings(&provider, own.as_secs_f64(), upstream);
        }
        let provider = self.provider.as_deref().unwrap_or("none");
        let principal = self.principal.as_ref();
        tracing::info!(
            target: "byok_proxy::access",
            request_id = %String::from_utf8_lossy(self.request_id.as_bytes()),
            status = status.as_u16(),
            outcome = self.outcome,
            provider,
            workspace = principal.map_or("-", |p| &p.workspace_id),
            user = principal.map_or("-", |p| &p.user_id),
            key = %principal.and_then(|p| p.key_hash).map_or_else(|| "-".to_owned(), |h| h.short()),
            model = self.model.as_deref().unwrap_or("-"),
            tier = self.attempts.last().map_or("-", |(_, tier, _)| tier.as_str()),
            attempts = %Attempts(&self.attempts),
            resting = %Resting(&self.resting),
            latency_ms = total.as_secs_f64() * 1e3,
            own_us = own.as_secs_f64() * 1e6,
            "request"
        );
    }
}

/// `id:status,id:status`, e.g. `c1:429,c2:200` (`error` / `timeout` for
/// failures); a shared-tier credential's id is followed by `@shared`.
struct Attempts<'a>(&'a [(Arc<Credential>, Tier, AttemptResult)]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, (cred, tier, result)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let shared = if *tier == Tier::Shared { "@shared" } else { "" };
            write!(f, "{}{shared}:", cred.id)?;
            match result {
                AttemptResult::Status(s) => write!(f, "{}", s.as_u16())?,
                AttemptResult::KeyRejected(s) => write!(f, "{}-key", s.as_u16())?,
                AttemptResult::Error => f.write_str("error")?,
                AttemptResult::Timeout => f.write_str("timeout")?,
            }
        }
        Ok(())
    }
}

/// `id,id`: the credentials passed over for their health; `-` for none.
struct Resting<'a>(&'a [Arc<str>]);

impl fmt::Display for Resting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(id)?;
        }
        Ok(())
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
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// An error with its sources, for logs. Upstream errors carry addresses and
/// OS errors, never request headers.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
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
}
