//! The wall clock, in one place: milliseconds since the Unix epoch, and a
//! [`Clock`] that a request reads at most once. Everything that decides with
//! time (health, spend periods) takes it as an argument.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time, read at most once per request and only when something asks
/// for it. (An atomic, not a `Cell`: the request's future is `Send`.)
#[derive(Debug, Default)]
pub(crate) struct Clock(AtomicU64);

impl Clock {
    /// A clock stopped at `ms` (tests, and callers that already read it).
    #[cfg(test)]
    pub(crate) fn at(ms: u64) -> Clock {
        Clock(AtomicU64::new(ms))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_reads_the_time_once() {
        let clock = Clock::default();
        let first = clock.now();
        assert!(first > 1_600_000_000_000, "{first}");
        assert_eq!(clock.now(), first, "read once");
        assert_eq!(Clock::at(7).now(), 7);
    }
}
