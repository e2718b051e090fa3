//! Credential health (SPEC §10): how long a credential rests after an
//! answer, and its state, kept in atomics so that the hot path reads one
//! atomic per candidate and never takes a lock.
//!
//! - 429: a cooldown for what the provider asked (`retry-after-ms`,
//!   `retry-after` in seconds or as an HTTP date, OpenAI's
//!   `x-ratelimit-reset-*` durations, Anthropic's `anthropic-ratelimit-*-reset`
//!   timestamps), [`DEFAULT_COOLDOWN`] when it said nothing usable, at most
//!   the configured cap;
//! - a credential rejection: quarantine, [`QUARANTINE_FIRST`] doubling per
//!   repeat up to [`QUARANTINE_MAX`]; lifted by a PATCH of the credential;
//! - [`STRIKES`] connection failures or 5xx in a row: [`STRIKE_COOLDOWN`].
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use http::HeaderMap;

use super::token::TokenCache;
use crate::domain::ServiceAccount;

/// A 429 that says nothing usable about when to come back.
pub(crate) const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);
/// Connection failures or 5xx in a row that cool a credential down.
pub(crate) const STRIKES: u32 = 5;
/// How long those strikes cool it down.
pub(crate) const STRIKE_COOLDOWN: Duration = Duration::from_secs(10);
/// The first quarantine of a rejected credential.
pub(crate) const QUARANTINE_FIRST: Duration = Duration::from_secs(60);
/// The longest quarantine.
pub(crate) const QUARANTINE_MAX: Duration = Duration::from_secs(3600);

/// Every credential's [`Health`] by id, shared by the snapshots that follow
/// one another (a reload keeps the health of the credentials that stay).
#[derive(Debug, Default)]
pub(crate) struct HealthBook {
    by_id: DashMap<Box<str>, Arc<Health>, RandomState>,
    /// The Vertex credentials' access tokens, kept across reloads as
    /// health is (SPEC §9).
    tokens: DashMap<Box<str>, Arc<TokenCache>, RandomState>,
    /// Where this replica's changes go, to be told to the others (a
    /// Postgres store); unset otherwise.
    changes: std::sync::OnceLock<tokio::sync::mpsc::Sender<(Arc<str>, Rest)>>,
}

impl HealthBook {
    /// Sends this replica's changes of rest to `tx` from now on.
    #[cfg(feature = "server")]
    pub(crate) fn publish_to(&self, tx: tokio::sync::mpsc::Sender<(Arc<str>, Rest)>) {
        let _ = self.changes.set(tx);
    }

    /// Tells the other replicas (when there are any) that `id` rests so.
    /// Never waits: when the queue is full the change stays local.
    pub(crate) fn changed(&self, id: &Arc<str>, rest: Rest) {
        if let Some(tx) = self.changes.get() {
            if tx.try_send((Arc::clone(id), rest)).is_err() {
                tracing::debug!(credential_id = %id, "health change not published: queue full");
            }
        }
    }

    /// The health of credential `id`, made healthy on first sight.
    pub(crate) fn get(&self, id: &str) -> Arc<Health> {
        if let Some(h) = self.by_id.get(id) {
            return Arc::clone(&h);
        }
        Arc::clone(&self.by_id.entry(id.into()).or_default())
    }

    /// The health of `id`, when it has one.
    pub(crate) fn peek(&self, id: &str) -> Option<Arc<Health>> {
        self.by_id.get(id).map(|h| Arc::clone(&h))
    }

    /// The token cache of credential `id` for `account`: the one it had
    /// while the account stays the same, a new one otherwise.
    pub(crate) fn token_cache(&self, id: &str, account: &ServiceAccount) -> Arc<TokenCache> {
        if let Some(c) = self.tokens.get(id).filter(|c| c.is_for(account)) {
            return Arc::clone(&c);
        }
        let mut entry = self
            .tokens
            .entry(id.into())
            .or_insert_with(|| Arc::new(TokenCache::new(account)));
        if !entry.is_for(account) {
            *entry = Arc::new(TokenCache::new(account));
        }
        Arc::clone(&entry)
    }

    /// Forgets the credentials `keep` says are gone.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.by_id.retain(|id, _| keep(id));
        self.tokens.retain(|id, _| keep(id));
    }

    /// Forgets one credential.
    pub(crate) fn remove(&self, id: &str) {
        self.by_id.remove(id);
        self.tokens.remove(id);
    }
}

/// The time, read at most once per request and only when some candidate
/// is resting. (An atomic, not a `Cell`: the request's future is `Send`.)
#[derive(Debug, Default)]
pub(crate) struct Clock(AtomicU64);

impl Clock {
    /// Milliseconds since the Unix epoch, read on first use.
    pub(crate) fn now(&self) -> u64 {
        match self.0.load(Relaxed) {
            0 => {
                let now = now_ms();
                self.0.store(now, Relaxed);
                now
            }
            now => now,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long a 429 with `headers` asks to wait, at `now_ms`, within `cap`.
pub(crate) fn cooldown(headers: &HeaderMap, now_ms: u64, cap: Duration) -> Duration {
    asked(headers, now_ms).unwrap_or(DEFAULT_COOLDOWN).min(cap)
}

/// What the provider asked for, if it said anything usable: the first of
/// `retry-after-ms`, `retry-after`, the OpenAI and the Anthropic reset
/// headers that reads as a time to wait.
fn asked(headers: &HeaderMap, now_ms: u64) -> Option<Duration> {
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

/// A credential's rest, as replicas tell one another: until when (ms
/// since the epoch; 0: none), whether a quarantine, and the quarantines in
/// a row (for the doubling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rest {
    pub(crate) until_ms: u64,
    pub(crate) quarantined: bool,
    pub(crate) quarantines: u32,
}

impl Rest {
    /// No rest: healthy.
    pub(crate) const NONE: Rest = Rest {
        until_ms: 0,
        quarantined: false,
        quarantines: 0,
    };
}

/// What one attempt says about its credential's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An answer that is not a failure (2xx, or a 4xx of the request's own).
    Fine(u16),
    /// 429: rest this long (already capped).
    RateLimited(Duration),
    /// The provider rejected the secret (401/403, or its own invalid-key
    /// answer).
    Rejected(u16),
    /// A 5xx, or no answer (`None`: connection error or timeout).
    Failed(Option<u16>),
}

/// The state of a credential, as the health API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Healthy,
    Cooling,
    Quarantined,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Cooling => "cooling",
            State::Quarantined => "quarantined",
        }
    }
}

/// One credential's health, shared by every snapshot that holds it.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Resting until then (ms since the epoch); 0: healthy.
    until_ms: AtomicU64,
    /// Whether the rest is a quarantine (else a cooldown).
    quarantined: AtomicBool,
    /// Quarantines in a row, for the doubling.
    quarantines: AtomicU32,
    /// Connection failures and 5xx in a row.
    failures: AtomicU32,
    /// The last status an attempt got; 0: none (or no answer).
    last_status: AtomicU16,
    /// The last attempt (ms since the epoch); 0: never.
    last_used_ms: AtomicU64,
}

impl Health {
    /// Whether it is resting (the clock is read only when a rest was set:
    /// a healthy credential costs one atomic load).
    pub(crate) fn resting(&self, clock: &Clock) -> bool {
        let until = self.until_ms.load(Relaxed);
        until != 0 && until > clock.now()
    }

    /// Takes in one attempt's verdict at `now_ms`. A healthy credential's
    /// fine answer writes nothing but, once a second, its last use: every
    /// worker serves the same credentials, and a store to a shared line on
    /// every request would make them take turns.
    /// Returns the new rest when the attempt changed it (for the other
    /// replicas), `None` when it stays as it was.
    pub(crate) fn record(&self, verdict: Verdict, now_ms: u64) -> Option<Rest> {
        if now_ms.saturating_sub(self.last_used_ms.load(Relaxed)) >= 1000 {
            self.last_used_ms.store(now_ms, Relaxed);
        }
        let rest = |d: Duration, quarantine: bool| {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let until_ms = now_ms.saturating_add(ms).max(1);
            self.quarantined.store(quarantine, Relaxed);
            self.until_ms.store(until_ms, Relaxed);
            Some(Rest {
                until_ms,
                quarantined: quarantine,
                quarantines: self.quarantines.load(Relaxed),
            })
        };
        match verdict {
            Verdict::Fine(status) => {
                let clear = |a: &AtomicU32| {
                    if a.load(Relaxed) != 0 {
                        a.store(0, Relaxed);
                    }
                };
                if self.last_status.load(Relaxed) != status {
                    self.last_status.store(status, Relaxed);
                }
                clear(&self.failures);
                clear(&self.quarantines);
                if self.until_ms.load(Relaxed) != 0 {
                    self.until_ms.store(0, Relaxed);
                    return Some(Rest::NONE);
                }
                None
            }
            Verdict::RateLimited(d) => {
                self.last_status.store(429, Relaxed);
                self.failures.store(0, Relaxed);
                rest(d, false)
            }
            Verdict::Rejected(status) => {
                self.last_status.store(status, Relaxed);
                let n = self.quarantines.fetch_add(1, Relaxed).min(16);
                let d = QUARANTINE_FIRST.saturating_mul(1 << n).min(QUARANTINE_MAX);
                rest(d, true)
            }
            Verdict::Failed(status) => {
                self.last_status.store(status.unwrap_or(0), Relaxed);
                if self.failures.fetch_add(1, Relaxed) + 1 >= STRIKES {
                    self.failures.store(0, Relaxed);
                    return rest(STRIKE_COOLDOWN, false);
                }
                None
            }
        }
    }

    /// Takes in a rest another replica decided (it publishes nothing).
    #[cfg(feature = "server")]
    pub(crate) fn adopt(&self, rest: Rest) {
        self.quarantines.store(rest.quarantines, Relaxed);
        self.quarantined.store(rest.quarantined, Relaxed);
        self.until_ms.store(rest.until_ms, Relaxed);
    }

    /// Lifts any rest (a PATCH of the credential: a rotated key may work).
    pub(crate) fn lift(&self) {
        self.until_ms.store(0, Relaxed);
        self.quarantines.store(0, Relaxed);
        self.failures.store(0, Relaxed);
    }

    /// The state at `now_ms`, and until when (ms since the epoch).
    pub(crate) fn state(&self, now_ms: u64) -> (State, Option<u64>) {
        let until = self.until_ms.load(Relaxed);
        if until == 0 || until <= now_ms {
            return (State::Healthy, None);
        }
        let state = if self.quarantined.load(Relaxed) {
            State::Quarantined
        } else {
            State::Cooling
        };
        (state, Some(until))
    }

    /// The last status, failures in a row, and the last use (ms).
    #[cfg(any(test, feature = "server"))]
    pub(crate) fn counters(&self) -> (Option<u16>, u32, Option<u64>) {
        let status = self.last_status.load(Relaxed);
        let used = self.last_used_ms.load(Relaxed);
        (
            (status != 0).then_some(status),
            self.failures.load(Relaxed),
            (used != 0).then_some(used),
        )
    }
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
            assert_eq!(cooldown(&headers(pairs), NOW, CAP), *want, "{pairs:?}");
        }
        assert_eq!(
            cooldown(&headers(&[("retry-after", "600")]), NOW, s(60)),
            s(60)
        );
    }

    #[test]
    fn states_follow_the_verdicts() {
        let h = Health::default();
        let clock = Clock(AtomicU64::new(NOW));
        assert!(!h.resting(&clock));
        assert_eq!(h.state(NOW), (State::Healthy, None));

        h.record(Verdict::RateLimited(Duration::from_secs(7)), NOW);
        assert!(h.resting(&clock));
        assert_eq!(h.state(NOW), (State::Cooling, Some(NOW + 7000)));
        assert_eq!(h.state(NOW + 7000).0, State::Healthy, "over by itself");
        h.record(Verdict::Fine(200), NOW + 7001);
        assert_eq!(h.state(NOW).0, State::Healthy);

        // Quarantine doubles, to an hour at most; a PATCH lifts it.
        for (i, secs) in [60, 120, 240, 480, 960, 1920, 3600, 3600]
            .iter()
            .enumerate()
        {
            h.record(Verdict::Rejected(401), NOW);
            assert_eq!(
                h.state(NOW),
                (State::Quarantined, Some(NOW + secs * 1000)),
                "rejection {i}"
            );
        }
        h.lift();
        assert_eq!(h.state(NOW).0, State::Healthy);
        h.record(Verdict::Rejected(403), NOW);
        assert_eq!(
            h.state(NOW),
            (State::Quarantined, Some(NOW + 60_000)),
            "lifted: from 60 s again"
        );
        h.record(Verdict::Fine(200), NOW);

        // Five failures in a row cool it for 10 s; a success in between resets.
        for _ in 0..4 {
            h.record(Verdict::Failed(Some(502)), NOW);
        }
        assert_eq!(h.state(NOW).0, State::Healthy);
        // The last use moves forward only, and at most once a second.
        assert_eq!(h.counters(), (Some(502), 4, Some(NOW + 7001)));
        h.record(Verdict::Fine(200), NOW);
        for _ in 0..4 {
            h.record(Verdict::Failed(None), NOW);
        }
        assert_eq!(h.state(NOW).0, State::Healthy);
        h.record(Verdict::Failed(Some(503)), NOW);
        assert_eq!(h.state(NOW), (State::Cooling, Some(NOW + 10_000)));
    }
}
