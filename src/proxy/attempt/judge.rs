//! Phase 4 of an attempt: what it says about its credential's health (SPEC
//! §10), taken in by the credential's health state machine and told to the
//! other replicas when it changed the credential's rest.

use std::time::Duration;

use http::{Response, StatusCode};

use super::send::Sent;
use super::{cooldown, AttemptResult, Forward};
use crate::policy::health::Verdict;
use crate::registry::Candidate;

/// Records `sent`'s verdict on `cand`'s health.
pub(super) fn judge<RB>(req: &Forward<'_>, cand: &Candidate, sent: &Sent<RB>) {
    let now = req.clock.now();
    let verdict = verdict(
        sent.result,
        sent.response.as_ref(),
        now,
        req.settings.max_cooldown,
    );
    let verdict = token_verdict(cand, sent, verdict);
    if !sent.counts {
        return;
    }
    if let Some(rest) = cand.health.record(verdict, now) {
        req.snapshot.health_changed(&cand.id_label, rest);
    }
}

/// A service account's refused token is minted anew next time. Only a fresh
/// one's refusal says the account is refused; a cached one may have been
/// revoked: a strike, no more.
#[cfg(feature = "vertex")]
fn token_verdict<RB>(cand: &Candidate, sent: &Sent<RB>, verdict: Verdict) -> Verdict {
    use crate::registry::Cloud;
    let (Cloud::Vertex(cache), Some((token, fresh))) = (&cand.cloud, &sent.token) else {
        return verdict;
    };
    let Verdict::Rejected(status) = verdict else {
        return verdict;
    };
    cache.forget(token);
    if *fresh {
        verdict
    } else {
        Verdict::Failed(Some(status))
    }
}

/// Without the `vertex` feature no attempt bears a token.
#[cfg(not(feature = "vertex"))]
fn token_verdict<RB>(_cand: &Candidate, _sent: &Sent<RB>, verdict: Verdict) -> Verdict {
    verdict
}

/// What one attempt says about its credential's health: a 429 rests it as
/// long as the answer asks (within `max_cooldown`), a refused secret
/// quarantines it, a 5xx or no answer is a strike.
pub(super) fn verdict<B>(
    result: AttemptResult,
    response: Option<&Response<B>>,
    now_ms: u64,
    max_cooldown: Duration,
) -> Verdict {
    match result {
        AttemptResult::Status(StatusCode::TOO_MANY_REQUESTS) => {
            let rest = response.map_or(cooldown::DEFAULT, |res| {
                cooldown::asked(res.headers(), now_ms, max_cooldown)
            });
            Verdict::RateLimited(rest.min(max_cooldown))
        }
        AttemptResult::Status(s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN))
        | AttemptResult::KeyRejected(s) => Verdict::Rejected(s.as_u16()),
        AttemptResult::Status(s) if s.is_server_error() => Verdict::Failed(Some(s.as_u16())),
        AttemptResult::Status(s) => Verdict::Fine(s.as_u16()),
        AttemptResult::Error | AttemptResult::Timeout => Verdict::Failed(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_of_each_result() {
        let cap = Duration::from_secs(300);
        let res = |status: u16, retry_after: Option<&str>| {
            let mut b = Response::builder().status(status);
            if let Some(v) = retry_after {
                b = b.header("retry-after", v);
            }
            b.body(()).unwrap()
        };
        let s = |c: u16| AttemptResult::Status(StatusCode::from_u16(c).unwrap());
        let cases: [(AttemptResult, Option<Response<()>>, Verdict); 10] = [
            (s(200), Some(res(200, None)), Verdict::Fine(200)),
            (s(404), Some(res(404, None)), Verdict::Fine(404)),
            (
                s(429),
                Some(res(429, Some("7"))),
                Verdict::RateLimited(Duration::from_secs(7)),
            ),
            (
                s(429),
                Some(res(429, Some("99999"))),
                Verdict::RateLimited(cap),
            ),
            (
                s(429),
                Some(res(429, None)),
                Verdict::RateLimited(cooldown::DEFAULT),
            ),
            (s(401), Some(res(401, None)), Verdict::Rejected(401)),
            (s(403), Some(res(403, None)), Verdict::Rejected(403)),
            (
                AttemptResult::KeyRejected(StatusCode::BAD_REQUEST),
                None,
                Verdict::Rejected(400),
            ),
            (s(503), Some(res(503, None)), Verdict::Failed(Some(503))),
            (AttemptResult::Timeout, None, Verdict::Failed(None)),
        ];
        for (result, response, want) in cases {
            assert_eq!(
                verdict(result, response.as_ref(), 1_000, cap),
                want,
                "{result:?}"
            );
        }
        assert_eq!(
            verdict::<()>(AttemptResult::Error, None, 1_000, cap),
            Verdict::Failed(None)
        );
    }
}
