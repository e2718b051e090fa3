//! A Vertex service account's access token (SPEC §9): minted when a request
//! first needs it, kept until shortly before it expires, and minted once for
//! all the requests that wait on it (single flight).
//!
//! The cache knows nothing of HTTP: the caller hands it the mint as a
//! future ([`TokenCache::get`]). A token is read without a lock; only a
//! request that finds none fresh takes the mint lock. Whoever waited on
//! that lock takes the token minted meanwhile, even one already stale, so N
//! waiters cost one mint. A mint cancelled (its request gone) releases the
//! lock, and the next waiter mints.

use std::future::Future;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::domain::ServiceAccount;

/// The longest a token is given up early: refreshed a minute before it
/// expires, or at half its life when that is shorter.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// One service account's token, shared by every snapshot that holds the
/// credential (a reload keeps it when the account did not change).
pub(crate) struct TokenCache {
    /// Which account (email, token URI, private key) this cache is for.
    account: [u8; 32],
    current: ArcSwapOption<Token>,
    /// The count of mints done, the newest token's serial.
    mints: AtomicU64,
    /// The serial of the last mint that failed.
    failed: AtomicU64,
    /// The status with which the token endpoint refused the account at
    /// that failure (0: it did not refuse, it failed).
    failed_refused: AtomicU16,
    minting: tokio::sync::Mutex<()>,
}

/// A mint that failed: why, and the status with which the token endpoint
/// refused the account, when it did (rather than failing to answer).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MintFailure<E> {
    pub(crate) error: E,
    pub(crate) refused: Option<u16>,
}

/// Why [`TokenCache::get`] has no token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MintError<E> {
    /// This call's mint failed so.
    Mint(MintFailure<E>),
    /// The mint this call waited on failed; `refused` as that one's.
    Waited {
        /// The status of the endpoint's refusal of the account, if it was one.
        refused: Option<u16>,
    },
}

struct Token {
    /// `Bearer …`, marked sensitive.
    value: HeaderValue,
    fresh_until: Instant,
    serial: u64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("mints", &self.mints.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache for `account`.
    pub(crate) fn new(account: &ServiceAccount) -> Self {
        TokenCache {
            account: fingerprint(account),
            current: ArcSwapOption::empty(),
            mints: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failed_refused: AtomicU16::new(0),
            minting: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether this cache holds `account`'s tokens.
    pub(crate) fn is_for(&self, account: &ServiceAccount) -> bool {
        self.account == fingerprint(account)
    }

    /// The token: the cached one while fresh, else the one minted while
    /// this call waited for the mint lock, else the one `mint` makes
    /// (`Bearer …` and how long it lives); and whether this call minted it.
    /// A mint that failed while this call waited fails it too
    /// ([`MintError::Waited`]): a failing token endpoint is asked once, not
    /// once per waiting request.
    pub(crate) async fn get<E, F>(
        &self,
        mint: impl FnOnce() -> F,
    ) -> Result<(HeaderValue, bool), MintError<E>>
    where
        F: Future<Output = Result<(HeaderValue, Duration), MintFailure<E>>>,
    {
        if let Some(t) = self.current.load().as_deref() {
            if Instant::now() < t.fresh_until {
                return Ok((t.value.clone(), false));
            }
        }
        let begun = self.mints.load(Ordering::Acquire);
        let _turn = self.minting.lock().await;
        if let Some(t) = self.current.load().as_deref() {
            if t.serial > begun || Instant::now() < t.fresh_until {
                return Ok((t.value.clone(), false));
            }
        }
        if self.failed.load(Ordering::Acquire) > begun {
            let refused = self.failed_refused.load(Ordering::Acquire);
            return Err(MintError::Waited {
                refused: (refused != 0).then_some(refused),
            });
        }
        let minted = mint().await;
        // Counted when done (under the lock): a call that began before
        // this point takes this mint's outcome.
        let serial = self.mints.fetch_add(1, Ordering::AcqRel) + 1;
        let (value, lifetime) = match minted {
            Ok(minted) => minted,
            Err(e) => {
                // Both under the lock, which every reader of them holds.
                self.failed_refused
                    .store(e.refused.unwrap_or(0), Ordering::Release);
                self.failed.store(serial, Ordering::Release);
                return Err(MintError::Mint(e));
            }
        };
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        self.current.store(Some(Arc::new(Token {
            value: value.clone(),
            fresh_until: Instant::now() + (lifetime - margin),
            serial,
        })));
        Ok((value, true))
    }

    /// Drops the cached token if it is `value` (the upstream refused it), so
    /// the next request mints anew.
    pub(crate) fn forget(&self, value: &HeaderValue) {
        let current = self.current.load_full();
        if current.as_deref().is_some_and(|t| t.value == value) {
            self.current.compare_and_swap(&current, None);
        }
    }
}

fn fingerprint(account: &ServiceAccount) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        account.client_email.as_bytes(),
        account.token_uri.as_bytes(),
        account.private_key_der.expose_secret(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn account() -> ServiceAccount {
        ServiceAccount {
            client_email: "a@p.iam.gserviceaccount.com".into(),
            private_key_der: crate::domain::SecretBytes(zeroize::Zeroizing::new(vec![1, 2, 3])),
            private_key_id: None,
            token_uri: "https://oauth2.googleapis.com/token".into(),
            project_id: "proj-1".into(),
            region: "global".into(),
        }
    }

    fn failure(refused: Option<u16>) -> MintFailure<&'static str> {
        MintFailure {
            error: "the token endpoint failed",
            refused,
        }
    }

    fn bearer(n: usize) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer t{n}")).unwrap()
    }

    /// A mint that counts itself and lives `life`.
    async fn mint(
        count: &AtomicUsize,
        life: Duration,
    ) -> Result<(HeaderValue, Duration), MintFailure<&'static str>> {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        Ok((bearer(n), life))
    }

    #[tokio::test(start_paused = true)]
    async fn kept_until_shortly_before_expiry_then_minted_anew() {
        let cache = TokenCache::new(&account());
        let count = AtomicUsize::new(0);
        let hour = Duration::from_secs(3600);
        // (advance before the call, the token wanted, mints so far)
        let steps = [
            (0, 1, 1),
            (1000, 1, 1),
            (3600 - 60 - 1 - 1000, 1, 1),
            (1, 2, 2), // 60 s before expiry: refreshed
            (10, 2, 2),
        ];
        for (advance, want, mints) in steps {
            tokio::time::advance(Duration::from_secs(advance)).await;
            let (got, _) = cache.get(|| mint(&count, hour)).await.unwrap();
            assert_eq!(got, bearer(want), "after +{advance}s");
            assert_eq!(count.load(Ordering::SeqCst), mints, "after +{advance}s");
        }
        // A short-lived token is refreshed at half its life.
        let cache = TokenCache::new(&account());
        let count = AtomicUsize::new(0);
        let life = Duration::from_secs(10);
        cache.get(|| mint(&count, life)).await.unwrap();
        tokio::time::advance(Duration::from_millis(4999)).await;
        cache.get(|| mint(&count, life)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        cache.get(|| mint(&count, life)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    /// Many requests waiting on one mint take its token, even one that is
    /// stale at once (`expires_in` 0); the next request mints again.
    #[tokio::test(start_paused = true)]
    async fn waiters_share_one_mint() {
        for life in [Duration::from_secs(3600), Duration::ZERO] {
            let cache = Arc::new(TokenCache::new(&account()));
            let count = Arc::new(AtomicUsize::new(0));
            let (release, held) = tokio::sync::watch::channel(false);
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (cache, count, mut held) = (cache.clone(), count.clone(), held.clone());
                tasks.push(tokio::spawn(async move {
                    cache
                        .get(|| async move {
                            let _ = held.wait_for(|go| *go).await;
                            mint(&count, life).await
                        })
                        .await
                }));
            }
            // Every task is parked: on the held mint, or on the mint lock.
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            release.send(true).unwrap();
            let mut minted_here = 0;
            for t in tasks {
                let (got, minted) = t.await.unwrap().unwrap();
                assert_eq!(got, bearer(1), "{life:?}");
                minted_here += usize::from(minted);
            }
            assert_eq!(minted_here, 1, "one of them minted: {life:?}");
            assert_eq!(count.load(Ordering::SeqCst), 1, "{life:?}");
            let (next, _) = cache.get(|| mint(&count, life)).await.unwrap();
            let want = if life.is_zero() { 2 } else { 1 };
            assert_eq!(next, bearer(want), "{life:?}");
        }
    }

    /// A failed mint is no token: the next request mints. A mint whose
    /// request went away releases the lock.
    #[tokio::test(start_paused = true)]
    async fn failures_and_cancelled_mints_leave_no_token() {
        let cache = TokenCache::new(&account());
        let failed = cache.get(|| async { Err(failure(None)) }).await;
        assert_eq!(failed, Err(MintError::Mint(failure(None))));
        let never =
            cache.get(std::future::pending::<Result<(HeaderValue, Duration), MintFailure<&str>>>);
        assert!(tokio::time::timeout(Duration::from_secs(1), never)
            .await
            .is_err());
        let count = AtomicUsize::new(0);
        let got = cache
            .get(|| mint(&count, Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(got, (bearer(1), true));
        // Forgetting another value changes nothing; forgetting this one
        // mints anew.
        cache.forget(&bearer(9));
        let again = cache
            .get(|| mint(&count, Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(again, (bearer(1), false));
        cache.forget(&bearer(1));
        let again = cache
            .get(|| mint(&count, Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(again, (bearer(2), true));
    }

    /// Requests waiting on a mint that fails fail with it, at once; the
    /// next request after them tries again.
    #[tokio::test(start_paused = true)]
    async fn waiters_on_a_failed_mint_fail_with_it() {
        let cache = Arc::new(TokenCache::new(&account()));
        let tries = Arc::new(AtomicUsize::new(0));
        let (release, held) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (cache, tries, mut held) = (cache.clone(), tries.clone(), held.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async move {
                        tries.fetch_add(1, Ordering::SeqCst);
                        let _ = held.wait_for(|go| *go).await;
                        Err::<(HeaderValue, Duration), _>(failure(Some(400)))
                    })
                    .await
            }));
        }
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        let mint_failed = Err(MintError::Mint(failure(Some(400))));
        let waited = Err(MintError::Waited { refused: Some(400) });
        assert_eq!(results.iter().filter(|r| **r == mint_failed).count(), 1);
        assert_eq!(results.iter().filter(|r| **r == waited).count(), 3);
        let count = AtomicUsize::new(0);
        let got = cache.get(|| mint(&count, Duration::from_secs(60))).await;
        assert_eq!(got, Ok((bearer(1), true)));
    }

    #[test]
    fn a_cache_is_for_one_account() {
        let a = account();
        let cache = TokenCache::new(&a);
        assert!(cache.is_for(&a));
        let mut other = account();
        other.private_key_der = crate::domain::SecretBytes(zeroize::Zeroizing::new(vec![9]));
        assert!(!cache.is_for(&other));
        let mut other = account();
        other.project_id = "proj-2".into(); // the project is not the token's
        assert!(cache.is_for(&other));
    }
}
