//! [`BodyBudget`]: a bound on the request bodies held in memory at once,
//! over every request that shares it (`server.max_buffered_body_bytes`).
//!
//! ```
//! use byok_proxy::BodyBudget;
//!
//! // 256 MiB of request bodies at once; one more gets 503 and Retry-After.
//! let budget = BodyBudget::new(256 << 20);
//! assert_eq!((budget.limit(), budget.held()), (256 << 20, 0));
//! ```
//!
//! A request takes a [`Reservation`] before its body is read: its declared
//! `Content-Length` at once (so that a body that cannot fit is refused from
//! the head, before anything is read), then more as a body without one grows.
//! The reservation is held while the proxy holds the bytes — until the
//! attempts end (the upstream's response head, or the last failure), since
//! the body is kept for a failover's replay — and given back when it is
//! dropped, however the request ends. The cost is one compare-and-swap on a
//! shared counter per read that grows it (none for a body whose length was
//! declared) and one subtraction when it ends.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The most request-body bytes the requests sharing it hold at once. Cheap
/// to clone: the clones share one count. See the module docs.
#[derive(Clone)]
pub struct BodyBudget {
    shared: Arc<Shared>,
}

struct Shared {
    limit: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit` bytes. Below the largest body a request may send
    /// (`max_body_bytes`), such a body is never read: it gets 503.
    pub fn new(limit: usize) -> Self {
        BodyBudget {
            shared: Arc::new(Shared {
                limit,
                held: AtomicUsize::new(0),
            }),
        }
    }

    /// The bytes it allows at once.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    /// The bytes reserved now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyBudget")
            .field("limit", &self.limit())
            .field("held", &self.held())
            .finish()
    }
}

/// The budget had no room for a reservation to grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted;

/// The bytes one request holds of a budget (none when there is no budget);
/// given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    budget: Option<&'a BodyBudget>,
    bytes: usize,
}

impl<'a> Reservation<'a> {
    /// Nothing reserved yet, of `budget` (or of no budget: then every
    /// request fits).
    pub(crate) fn of(budget: Option<&'a BodyBudget>) -> Self {
        Reservation { budget, bytes: 0 }
    }

    /// Holds `total` bytes in all, when it holds fewer: taken from the
    /// budget if it has room for them, else [`Exhausted`] (and the
    /// reservation stays as it was).
    pub(crate) fn grow_to(&mut self, total: usize) -> Result<(), Exhausted> {
        let Some(budget) = self.budget else {
            return Ok(());
        };
        let more = match total.checked_sub(self.bytes) {
            Some(more) if more > 0 => more,
            _ => return Ok(()),
        };
        let shared = &budget.shared;
        shared
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(more).filter(|&n| n <= shared.limit)
            })
            .map_err(|_| Exhausted)?;
        self.bytes = total;
        Ok(())
    }

    /// Holds `total` bytes in all, when it holds more: the rest goes back.
    pub(crate) fn shrink_to(&mut self, total: usize) {
        if let (Some(budget), Some(less)) = (self.budget, self.bytes.checked_sub(total)) {
            budget.shared.held.fetch_sub(less, Ordering::Relaxed);
            self.bytes = total;
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = BodyBudget::new(100);
        let mut a = Reservation::of(Some(&budget));
        let mut b = Reservation::of(Some(&budget));
        assert_eq!(a.grow_to(60), Ok(()));
        assert_eq!(budget.held(), 60);
        // Growing is by the difference; a smaller total changes nothing.
        assert_eq!(a.grow_to(70), Ok(()));
        assert_eq!(a.grow_to(10), Ok(()));
        assert_eq!(budget.held(), 70);
        // No room: refused, and nothing taken.
        assert_eq!(b.grow_to(31), Err(Exhausted));
        assert_eq!(budget.held(), 70);
        assert_eq!(b.grow_to(30), Ok(()));
        assert_eq!(budget.held(), 100);
        assert_eq!(b.grow_to(31), Err(Exhausted));
        // Shrinking gives the rest back; dropping gives everything back.
        a.shrink_to(20);
        assert_eq!(budget.held(), 50);
        a.shrink_to(40); // more than it holds: nothing
        assert_eq!(budget.held(), 50);
        drop(a);
        assert_eq!(budget.held(), 30);
        let mut c = Reservation::of(Some(&budget));
        assert_eq!(c.grow_to(70), Ok(()));
        drop((b, c));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_request_larger_than_the_budget_never_fits() {
        let budget = BodyBudget::new(10);
        let mut r = Reservation::of(Some(&budget));
        assert_eq!(r.grow_to(11), Err(Exhausted));
        assert_eq!(r.grow_to(usize::MAX), Err(Exhausted));
        assert_eq!(r.grow_to(10), Ok(()));
        assert_eq!(budget.held(), 10);
    }

    #[test]
    fn without_a_budget_everything_fits() {
        let mut r = Reservation::of(None);
        assert_eq!(r.grow_to(usize::MAX), Ok(()));
        r.shrink_to(0);
    }

    #[test]
    fn clones_share_one_count_across_threads() {
        let budget = BodyBudget::new(1000);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut taken = 0;
                    for _ in 0..1000 {
                        let mut r = Reservation::of(Some(&budget));
                        if r.grow_to(300).is_ok() {
                            taken += 1;
                            assert!(budget.held() <= 1000);
                        }
                    }
                    taken
                })
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(taken > 0);
        assert_eq!(budget.held(), 0);
        assert_eq!(format!("{budget:?}"), "BodyBudget { limit: 1000, held: 0 }");
    }
}
