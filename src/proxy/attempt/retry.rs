//! Phase 5 of an attempt: the retry table (SPEC §5), one pure function.

use http::StatusCode;

use super::AttemptResult;
use crate::proxy::error::Rejection;

/// What to do after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Send this answer to the client as it came.
    Relay,
    /// Try the next candidate.
    Failover,
    /// Stop and answer with this.
    Fail(Rejection),
}

/// The retry table: connection failures (and an unsolicited `101`),
/// timeouts before the response head and the statuses of [`retryable`] go to
/// the next candidate. With no candidate left, a connection failure is a
/// 502, a timeout a 504, a credential rejection (401/403) a 502 that keeps
/// the provider's words from the client, and any other answer goes out as
/// it came.
pub(super) fn classify(result: AttemptResult, is_last: bool) -> Next {
    let failure = match result {
        AttemptResult::Timeout => Rejection::UpstreamTimeout,
        // A protocol switch nobody asked for (the proxy refuses upgrades) is
        // a broken upstream, like a connection that failed.
        AttemptResult::Error | AttemptResult::Status(StatusCode::SWITCHING_PROTOCOLS) => {
            Rejection::UpstreamUnreachable
        }
        AttemptResult::Status(s) if !retryable(s) => return Next::Relay,
        AttemptResult::Status(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        | AttemptResult::KeyRejected(_) => Rejection::UpstreamRejectedCredential,
        AttemptResult::Status(_) if is_last => return Next::Relay,
        AttemptResult::Status(_) => return Next::Failover,
    };
    if is_last {
        Next::Fail(failure)
    } else {
        Next::Failover
    }
}

/// Statuses after which the next candidate is tried.
fn retryable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        401 | 403 | 408 | 429 | 500 | 502 | 503 | 504 | 529
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_is_the_retry_table() {
        use AttemptResult::*;
        let s = |c: u16| Status(StatusCode::from_u16(c).unwrap());
        // (result, is_last, next)
        let cases = [
            (s(200), false, Next::Relay),
            (s(200), true, Next::Relay),
            (s(400), false, Next::Relay),
            (s(404), true, Next::Relay),
            (s(401), false, Next::Failover),
            (s(403), false, Next::Failover),
            (
                s(401),
                true,
                Next::Fail(Rejection::UpstreamRejectedCredential),
            ),
            (
                s(403),
                true,
                Next::Fail(Rejection::UpstreamRejectedCredential),
            ),
            (s(429), false, Next::Failover),
            (s(429), true, Next::Relay),
            (s(503), false, Next::Failover),
            (s(529), true, Next::Relay),
            (Error, false, Next::Failover),
            (Error, true, Next::Fail(Rejection::UpstreamUnreachable)),
            (Timeout, false, Next::Failover),
            (Timeout, true, Next::Fail(Rejection::UpstreamTimeout)),
            (KeyRejected(StatusCode::BAD_REQUEST), false, Next::Failover),
            (
                KeyRejected(StatusCode::BAD_REQUEST),
                true,
                Next::Fail(Rejection::UpstreamRejectedCredential),
            ),
            (s(101), false, Next::Failover),
            (s(101), true, Next::Fail(Rejection::UpstreamUnreachable)),
        ];
        for (result, is_last, want) in cases {
            assert_eq!(classify(result, is_last), want, "{result:?} last={is_last}");
        }
    }

    #[test]
    fn retryable_statuses_are_exactly_the_contract_list() {
        let listed = [401, 403, 408, 429, 500, 502, 503, 504, 529];
        for code in 100..600u16 {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(retryable(status), listed.contains(&code), "{code}");
        }
    }
}
