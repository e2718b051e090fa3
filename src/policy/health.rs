//! Credential health (SPEC §10), as a state machine kept in atomics so that
//! the hot path reads one atomic per candidate and never takes a lock. It
//! takes each attempt's [`Verdict`] and the time, and says how long the
//! credential rests:
//!
//! - 429: the cooldown the verdict carries (what the provider asked, read
//!   from its answer by the proxy);
//! - a credential rejection: quarantine, [`QUARANTINE_FIRST`] doubling per
//!   repeat up to [`QUARANTINE_MAX`]; lifted by a PATCH of the credential;
//! - [`STRIKES`] connection failures or 5xx in a row: [`STRIKE_COOLDOWN`].
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::clock::Clock;

/// Connection failures or 5xx in a row that cool a credential down.
pub(crate) const STRIKES: u32 = 5;
/// How long those strikes cool it down.
pub(crate) const STRIKE_COOLDOWN: Duration = Duration::from_secs(10);
/// The first quarantine of a rejected credential.
pub(crate) const QUARANTINE_FIRST: Duration = Duration::from_secs(60);
/// The longest quarantine.
pub(crate) const QUARANTINE_MAX: Duration = Duration::from_secs(3600);

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
    use crate::clock::Clock;

    const NOW: u64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z
    #[test]
    fn states_follow_the_verdicts() {
        let h = Health::default();
        let clock = Clock::at(NOW);
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
