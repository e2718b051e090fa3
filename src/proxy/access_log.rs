//! The access log: one line per request (`byok_proxy::access`, level info)
//! and the request's metrics, read from its [`Ctx`] at the end. It observes;
//! nothing here feeds a decision.
//!
//! The line names the principal by workspace, user and the first 8 hex
//! characters of the key's hash; the model only once a credential admitted
//! it; never a secret or a raw key.

use std::fmt;
use std::sync::Arc;

use http::StatusCode;

use super::attempt::AttemptResult;
use super::context::{Ctx, Tried};
use super::error::Rejection;
use crate::metrics::{status_class, Metrics};
use crate::policy::Tier;

/// Counts one attempt that just ended (the last of `ctx.attempts`).
pub(super) fn attempt(metrics: Option<&Metrics>, ctx: &Ctx, credential: &Arc<str>) {
    let (Some(m), Some(tried)) = (metrics, ctx.attempts.last()) else {
        return;
    };
    let (tier, result, failover) = (tried.tier, tried.result, ctx.attempts.len() > 1);
    // The route named the provider before any attempt; "none" only in name.
    let none;
    let provider = match &ctx.provider {
        Some(p) => p,
        None => {
            none = ctx.provider_label();
            &none
        }
    };
    m.attempt(provider, credential, tier.as_str(), class(result));
    if failover {
        m.failover(provider);
    }
}

/// The request's line and metrics, once its response head is decided.
pub(super) fn finish(ctx: &Ctx, status: StatusCode, metrics: Option<&Metrics>) {
    let total = ctx.started.elapsed();
    let own = total.saturating_sub(ctx.body_wait + ctx.upstream_wait);
    if let Some(m) = metrics {
        let provider = ctx.provider_label();
        m.request(&provider, ctx.outcome);
        if ctx.outcome == Rejection::BodyBudgetExhausted.reason() {
            m.body_budget_refused();
        }
        let upstream = (!ctx.attempts.is_empty()).then_some(ctx.upstream_wait.as_secs_f64());
        m.timings(&provider, own.as_secs_f64(), upstream);
    }
    let provider = ctx.provider.as_deref().unwrap_or("none");
    let principal = ctx.principal.as_ref();
    tracing::info!(
        target: "byok_proxy::access",
        request_id = %String::from_utf8_lossy(ctx.request_id.as_bytes()),
        status = status.as_u16(),
        outcome = ctx.outcome,
        provider,
        workspace = principal.map_or("-", |p| &p.workspace_id),
        user = principal.map_or("-", |p| &p.user_id),
        key = %principal.and_then(|p| p.key_hash).map_or_else(|| "-".to_owned(), |h| h.short()),
        model = ctx.model().unwrap_or("-"),
        tier = ctx.last_tier().map_or("-", Tier::as_str),
        attempts = %Attempts(&ctx.attempts),
        resting = %Resting(&ctx.resting),
        latency_ms = total.as_secs_f64() * 1e3,
        own_us = own.as_secs_f64() * 1e6,
        "request"
    );
}

/// The metrics label of an attempt's result.
fn class(result: AttemptResult) -> &'static str {
    match result {
        AttemptResult::Status(s) | AttemptResult::KeyRejected(s) => status_class(s.as_u16()),
        AttemptResult::Error => "error",
        AttemptResult::Timeout => "timeout",
    }
}

/// `id:status,id:status`, e.g. `c1:429,c2:200` (`error` / `timeout` for
/// failures); a shared-tier credential's id is followed by `@shared`.
struct Attempts<'a>(&'a [Tried]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, tried) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let shared = if tried.tier == Tier::Shared {
                "@shared"
            } else {
                ""
            };
            write!(f, "{}{shared}:", tried.credential.id)?;
            match tried.result {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Credential;

    #[test]
    fn attempts_and_resting_read_as_the_log_writes_them() {
        let tried = |id: &str, tier, result| Tried {
            credential: Arc::new(Credential::for_tests(id, "ws", "openai")),
            tier,
            result,
        };
        let list = [
            tried(
                "c1",
                Tier::Byok,
                AttemptResult::Status(StatusCode::TOO_MANY_REQUESTS),
            ),
            tried(
                "c2",
                Tier::Shared,
                AttemptResult::KeyRejected(StatusCode::BAD_REQUEST),
            ),
            tried("c3", Tier::Byok, AttemptResult::Error),
            tried("c4", Tier::Byok, AttemptResult::Timeout),
        ];
        assert_eq!(
            Attempts(&list).to_string(),
            "c1:429,c2@shared:400-key,c3:error,c4:timeout"
        );
        assert_eq!(Attempts(&[]).to_string(), "-");
        assert_eq!(Resting(&[]).to_string(), "-");
        assert_eq!(
            Resting(&[Arc::from("a"), Arc::from("b")]).to_string(),
            "a,b"
        );
    }
}
