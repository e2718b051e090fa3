//! How long a 429 asks a credential to rest: the first of `retry-after-ms`,
//! `retry-after` in seconds or as an HTTP date, OpenAI's
//! `x-ratelimit-reset-*` durations and Anthropic's
//! `anthropic-ratelimit-*-reset` timestamps that reads as a time to wait;
//! [`DEFAULT`] when none does; never more than the configured cap. The
//! health state machine ([`policy::health`](crate::policy::health)) takes the
//! result; this is the HTTP side of it.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// A 429 that says nothing usable about when to come back.
pub(crate) const DEFAULT: Duration = Duration::from_secs(5);

/// How long a 429 with `headers` asks to wait, at `now_ms`, within `cap`.
pub(crate) fn asked(headers: &HeaderMap, now_ms: u64, cap: Duration) -> Duration {
    requested(headers, now_ms).unwrap_or(DEFAULT).min(cap)
}

/// What the provider asked for, if it said anything usable: the first of
/// `retry-after-ms`, `retry-after`, the OpenAI and the Anthropic reset
/// headers that reads as a time to wait.
fn requested(headers: &HeaderMap, now_ms: u64) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| seconds(v, 1e-3)) {
        return Some(ms);
    }
    if let Some(v) = text("retry-after") {
        if let Some(d) = seconds(v, 1.0) {
            return Some(d);
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(until(at, now_ms));
        }
    }
    // The reset of each limit; those reported exhausted (remaining 0) say
    // which one the 429 is about, otherwise the latest reset is safe.
    let resets = |pairs: &[(&str, &str)], parse: &dyn Fn(&str) -> Option<Duration>| {
        let all: Vec<(Duration, bool)> = pairs
            .iter()
            .filter_map(|(reset, remaining)| {
                let d = parse(text(reset)?)?;
                Some((d, text(remaining) == Some("0")))
            })
            .collect();
        let exhausted = all.iter().filter(|(_, out)| *out).map(|(d, _)| *d).max();
        exhausted.or_else(|| all.iter().map(|(d, _)| *d).max())
    };
    let openai = resets(
        &[
            (
                "x-ratelimit-reset-requests",
                "x-ratelimit-remaining-requests",
            ),
            ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
        ],
        &go_duration,
    );
    if openai.is_some() {
        return openai;
    }
    resets(
        &[
            (
                "anthropic-ratelimit-requests-reset",
                "anthropic-ratelimit-requests-remaining",
            ),
            (
                "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-tokens-remaining",
            ),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "anthropic-ratelimit-input-tokens-remaining",
            ),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "anthropic-ratelimit-output-tokens-remaining",
            ),
        ],
        &|v| {
            let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .ok()?;
            let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
            Some(Duration::from_millis(ms.saturating_sub(now_ms)))
        },
    )
}

/// A non-negative decimal number of `unit` seconds.
fn seconds(v: &str, unit: f64) -> Option<Duration> {
    if !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None; // signs, exponents, "inf", "NaN"
    }
    let n: f64 = v.parse().ok()?;
    saturating_secs(n * unit)
}

/// `secs` as a duration; a finite number too large for one is the longest
/// (the cap brings it down).
fn saturating_secs(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .or_else(|| (secs.is_finite() && secs > 0.0).then_some(Duration::MAX))
}

/// The time from `now_ms` until `at` (zero when it has passed).
fn until(at: SystemTime, now_ms: u64) -> Duration {
    let at_ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Duration::from_millis(at_ms.saturating_sub(now_ms))
}

/// A Go duration as OpenAI writes it: `6m0s`, `1.5s`, `20ms`, `1h2m3s`.
fn go_duration(v: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = v;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = [
            ("ms", 2, 1e-3),
            ("h", 1, 3600.0),
            ("m", 1, 60.0),
            ("s", 1, 1.0),
        ]
        .iter()
        .find(|(u, _, _)| rest.starts_with(u))
        .map(|(_, len, unit)| (*unit, *len))?;
        total += n * unit;
        rest = &rest[len..];
    }
    saturating_secs(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z
    const CAP: Duration = Duration::from_secs(300);

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn cooldown_table() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases: &[(&[(&str, &str)], Duration)] = &[
            (&[], s(5)),
            (&[("retry-after", "7")], s(7)),
            (&[("retry-after", "1.5")], ms(1500)),
            (&[("retry-after", "0")], s(0)),
            (&[("retry-after-ms", "250")], ms(250)),
            (&[("retry-after-ms", "250"), ("retry-after", "9")], ms(250)),
            // An HTTP date 30 s from NOW, and one in the past.
            (&[("retry-after", "Tue, 14 Nov 2023 22:13:50 GMT")], s(30)),
            (&[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")], s(0)),
            // Absurd: capped. Garbage or negative: the default.
            (&[("retry-after", "315360000")], CAP),
            (&[("retry-after", "-3")], s(5)),
            (&[("retry-after", "soon")], s(5)),
            (&[("retry-after", "1e9")], s(5)),
            (&[("retry-after", "NaN")], s(5)),
            (&[("retry-after-ms", "-1"), ("retry-after", "2")], s(2)),
            (&[("retry-after", "99999999999999999999999")], CAP),
            // OpenAI: Go durations; the exhausted limit's reset.
            (&[("x-ratelimit-reset-requests", "6m0s")], CAP.min(s(360))),
            (&[("x-ratelimit-reset-requests", "1.5s")], ms(1500)),
            (&[("x-ratelimit-reset-tokens", "20ms")], ms(20)),
            (&[("x-ratelimit-reset-requests", "1m2s")], s(62)),
            (
                &[
                    ("x-ratelimit-reset-requests", "2s"),
                    ("x-ratelimit-reset-tokens", "40s"),
                ],
                s(40),
            ),
            (
                &[
                    ("x-ratelimit-reset-requests", "2s"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-tokens", "40s"),
                    ("x-ratelimit-remaining-tokens", "5000"),
                ],
                s(2),
            ),
            (&[("x-ratelimit-reset-requests", "6x")], s(5)),
            (&[("x-ratelimit-reset-requests", "s")], s(5)),
            // Anthropic: RFC 3339 timestamps.
            (
                &[("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:32Z")],
                s(12),
            ),
            (
                &[
                    ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:21Z"),
                    ("anthropic-ratelimit-tokens-reset", "2023-11-14T22:14:20Z"),
                    ("anthropic-ratelimit-tokens-remaining", "0"),
                ],
                s(60),
            ),
            (
                &[("anthropic-ratelimit-requests-reset", "2023-11-14T22:00:00Z")],
                s(0),
            ),
            (&[("anthropic-ratelimit-requests-reset", "tomorrow")], s(5)),
        ];
        for (pairs, want) in cases {
            assert_eq!(asked(&headers(pairs), NOW, CAP), *want, "{pairs:?}");
        }
        assert_eq!(
            asked(&headers(&[("retry-after", "600")]), NOW, s(60)),
            s(60)
        );
    }
}
