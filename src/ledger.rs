//! The ledger (SPEC §8): what each response cost, kept per UTC day,
//! workspace, gateway key, credential, tier and model, and each key's spend
//! by period for its limit.
//!
//! A response adds to two places as its body ends: `pending` (one entry per
//! day × key × credential × tier × model, drained about once a second into
//! the metrics and the store) and its key's [`KeyBook`] (what a limit check
//! reads). Nothing on the request path waits on a store: a database learns
//! of the usage at the next drain, and each replica learns of the others'
//! at the refresh that follows it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use foldhash::fast::RandomState;
use time::Date;

use crate::config::Price;
use crate::domain::{ApiKey, KeyHash, LimitReset};
use crate::policy::Tier;

/// A UTC day: days since 1970-01-01.
pub type Day = i32;

pub(crate) use crate::clock::now_ms;

/// The UTC day of `ms` milliseconds since the Unix epoch.
pub(crate) fn day_of_ms(ms: u64) -> Day {
    Day::try_from(ms / 86_400_000).unwrap_or(Day::MAX)
}

/// The first day of the period `reset` that holds `day`: the day itself,
/// its week's Monday, its month's 1st.
pub(crate) fn period_start(reset: LimitReset, day: Day) -> Day {
    match reset {
        LimitReset::Daily => day,
        // 1970-01-01 was a Thursday: day 0 is 3 days after a Monday.
        LimitReset::Weekly => day - (day + 3).rem_euclid(7),
        LimitReset::Monthly => {
            const EPOCH_JULIAN: i32 = 2_440_588;
            match Date::from_julian_day(day + EPOCH_JULIAN) {
                Ok(date) => day - (i32::from(date.day()) - 1),
                Err(_) => day,
            }
        }
    }
}

#[cfg(feature = "server")]
/// The oldest day any period reads today: the earlier of this week's
/// Monday and this month's 1st.
pub(crate) fn recent_since(today: Day) -> Day {
    period_start(LimitReset::Weekly, today).min(period_start(LimitReset::Monthly, today))
}

/// USD spent, by tier (OpenRouter's split: `usage` is the shared tier's,
/// `byok_usage` the BYOK credentials').
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// Spend served by the operator's shared tier.
    pub shared: f64,
    /// Spend served by the key's own (BYOK) credentials.
    pub byok: f64,
}

impl Spend {
    fn add(&mut self, other: Spend) {
        self.shared += other.shared;
        self.byok += other.byok;
    }

    fn of(tier: Tier, usd: f64) -> Spend {
        match tier {
            Tier::Shared => Spend {
                shared: usd,
                byok: 0.0,
            },
            Tier::Byok => Spend {
                shared: 0.0,
                byok: usd,
            },
        }
    }

    /// What counts toward `key`'s limit: the shared tier's always, BYOK
    /// spend when `include_byok_in_limit`.
    fn counted(self, include_byok: bool) -> f64 {
        if include_byok {
            self.shared + self.byok
        } else {
            self.shared
        }
    }
}

/// A key's spend in each of OpenRouter's periods.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyUsage {
    /// Since the key was made.
    pub total: Spend,
    /// Today (UTC).
    pub daily: Spend,
    /// Since Monday (UTC).
    pub weekly: Spend,
    /// Since the 1st of the month (UTC).
    pub monthly: Spend,
}

/// One key's spend by day, as this replica knows it.
#[derive(Debug, Default)]
struct Book {
    /// The store's days from the refresh's `since` on (all days without a
    /// database).
    days: BTreeMap<Day, Spend>,
    /// The store's total before the refresh's `since`.
    before: Spend,
    /// This replica's spend the store does not hold yet, by day.
    local: BTreeMap<Day, Spend>,
}

impl Book {
    fn since(&self, from: Option<Day>) -> Spend {
        let mut s = Spend::default();
        let from = match from {
            Some(day) => day,
            None => {
                s.add(self.before);
                Day::MIN
            }
        };
        for (_, spend) in self.days.range(from..).chain(self.local.range(from..)) {
            s.add(*spend);
        }
        s
    }
}

/// One gateway key's spend and last use.
#[derive(Debug, Default)]
pub(crate) struct KeyBook {
    book: Mutex<Book>,
    last_used_ms: AtomicU64,
}

impl KeyBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spend in each period that holds `today`.
    fn usage(&self, today: Day) -> KeyUsage {
        let book = self.lock();
        KeyUsage {
            total: book.since(None),
            daily: book.since(Some(today)),
            weekly: book.since(Some(period_start(LimitReset::Weekly, today))),
            monthly: book.since(Some(period_start(LimitReset::Monthly, today))),
        }
    }
}

/// Where one response's usage is kept: the day is added when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Entry {
    pub(crate) day: Day,
    pub(crate) workspace: Arc<str>,
    /// `None`: a principal an earlier layer supplied without a key.
    pub(crate) key: Option<KeyHash>,
    pub(crate) credential: Arc<str>,
    pub(crate) provider: Arc<str>,
    pub(crate) tier: Tier,
    /// A price-table key, or `other`: never a client's model string.
    pub(crate) model: Arc<str>,
}

/// What the responses of one [`Entry`] added up to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sums {
    pub(crate) requests: u64,
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) cache_read: u64,
    pub(crate) cache_write: u64,
    pub(crate) usd: f64,
    /// Responses whose usage report could not be read (their tokens are
    /// estimated from their size).
    pub(crate) estimated: u64,
    /// Responses of a model without a price.
    pub(crate) unpriced: u64,
    pub(crate) last_used_ms: u64,
}

impl Sums {
    /// Adds `o`; counts saturate (an upstream may report any number).
    fn add(&mut self, o: &Sums) {
        self.requests = self.requests.saturating_add(o.requests);
        self.input = self.input.saturating_add(o.input);
        self.output = self.output.saturating_add(o.output);
        self.cache_read = self.cache_read.saturating_add(o.cache_read);
        self.cache_write = self.cache_write.saturating_add(o.cache_write);
        self.usd += o.usd;
        self.estimated = self.estimated.saturating_add(o.estimated);
        self.unpriced = self.unpriced.saturating_add(o.unpriced);
        self.last_used_ms = self.last_used_ms.max(o.last_used_ms);
    }
}

/// Tokens one response reported (or that were estimated for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tokens {
    /// Input tokens not read from or written to a cache.
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) cache_read: u64,
    pub(crate) cache_write: u64,
}

impl Tokens {
    /// USD at `price` (per million tokens).
    pub(crate) fn cost(&self, price: &Price) -> f64 {
        (self.input as f64 * price.input
            + self.output as f64 * price.output
            + self.cache_read as f64 * price.cache_read
            + self.cache_write as f64 * price.cache_write)
            / 1e6
    }
}

/// A drained set of entries, for the metrics and the store.
pub(crate) type Batch = Vec<(Entry, Sums)>;

/// A batch on its way to the store, with its number: the store keeps the
/// number in the same transaction, so a batch whose save committed but
/// whose acknowledgement was lost (the caller saw an error or a timeout)
/// is a no-op when it is tried again.
#[cfg(feature = "server")]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Numbered {
    /// From 1, rising by one a batch, on this process.
    pub(crate) seq: u64,
    pub(crate) entries: Batch,
}

/// Drained entries on their way to the store.
#[derive(Debug, Default)]
struct Unsaved {
    /// Not in a batch yet.
    entries: Batch,
    /// The batch whose save failed: tried again as it was, under its number,
    /// before anything newer (never merged with newer entries, or a save
    /// that did commit would be counted again).
    #[cfg(feature = "server")]
    retry: Option<Numbered>,
    /// The last batch's number.
    #[cfg(feature = "server")]
    last: u64,
}

/// Entries not drained yet, in shards chosen by thread: each worker adds
/// to its own, so a busy key's responses on several cores do not take turns
/// at one lock.
type Pending = Box<[Mutex<HashMap<Entry, Sums, RandomState>>]>;

/// Usage and spend, shared by every snapshot of a registry.
pub struct Ledger {
    pending: Pending,
    keys: DashMap<KeyHash, Arc<KeyBook>, RandomState>,
    credentials_last_used: DashMap<Box<str>, u64, RandomState>,
    /// Drained entries the store has not taken yet (only when one does).
    unsaved: Mutex<Unsaved>,
    persistent: std::sync::atomic::AtomicBool,
    /// Another replica added to the store: read the keys' spend anew.
    #[cfg(feature = "server")]
    refresh: tokio::sync::Notify,
}

impl Default for Ledger {
    fn default() -> Self {
        let shards = std::thread::available_parallelism()
            .map_or(4, std::num::NonZeroUsize::get)
            .next_power_of_two()
            * 2;
        Ledger {
            pending: (0..shards).map(|_| Mutex::default()).collect(),
            keys: DashMap::default(),
            credentials_last_used: DashMap::default(),
            unsaved: Mutex::default(),
            persistent: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "server")]
            refresh: tokio::sync::Notify::new(),
        }
    }
}

/// This thread's pending shard, of `n`.
fn shard_of_this_thread(n: usize) -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.with(|s| usize::try_from(*s).unwrap_or(0) % n)
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("shards", &self.pending.len())
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// The book of `key`, made on first use.
    pub(crate) fn book(&self, key: KeyHash) -> Arc<KeyBook> {
        if let Some(b) = self.keys.get(&key) {
            return Arc::clone(&b);
        }
        Arc::clone(&self.keys.entry(key).or_default())
    }

    /// The book of `key`, when it has one (nothing is made).
    pub(crate) fn peek_book(&self, key: &KeyHash) -> Option<Arc<KeyBook>> {
        self.keys.get(key).map(|b| Arc::clone(&b))
    }

    /// Frees the book of `key` (deleted, or gone with a reload).
    pub(crate) fn forget_key(&self, key: &KeyHash) {
        self.keys.remove(key);
    }

    /// Frees what is kept of credential `id` (deleted, or gone with a
    /// reload).
    pub(crate) fn forget_credential(&self, id: &str) {
        self.credentials_last_used.remove(id);
    }

    /// Keeps the books of the keys, and the last uses of the credentials,
    /// that are still in force; frees the rest.
    pub(crate) fn retain(&self, key: impl Fn(&KeyHash) -> bool, credential: impl Fn(&str) -> bool) {
        self.keys.retain(|k, _| key(k));
        self.credentials_last_used.retain(|id, _| credential(id));
    }

    #[cfg(test)]
    /// How many books are kept (one a key in force that has one).
    pub(crate) fn books(&self) -> usize {
        self.keys.len()
    }

    /// Counts one response as it ends.
    pub(crate) fn record(
        &self,
        entry: Entry,
        book: Option<&KeyBook>,
        tokens: Tokens,
        usd: f64,
        flags: (bool, bool),
        at_ms: u64,
    ) {
        let (estimated, unpriced) = flags;
        if let Some(book) = book {
            let mut b = book.lock();
            b.local
                .entry(entry.day)
                .or_default()
                .add(Spend::of(entry.tier, usd));
            drop(b);
            Ledger::touch(book, at_ms);
        }
        let sums = Sums {
            requests: 1,
            input: tokens.input,
            output: tokens.output,
            cache_read: tokens.cache_read,
            cache_write: tokens.cache_write,
            usd,
            estimated: u64::from(estimated),
            unpriced: u64::from(unpriced),
            last_used_ms: at_ms,
        };
        let shard = &self.pending[shard_of_this_thread(self.pending.len())];
        let mut pending = shard.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(&entry) {
            Some(sum) => sum.add(&sums),
            None => {
                pending.insert(entry, sums);
            }
        }
    }

    /// Notes that `key` was used at `at_ms` (each request that names it,
    /// answered or refused).
    pub(crate) fn touch(book: &KeyBook, at_ms: u64) {
        // Read first: the line is written once a millisecond at most, not
        // by every request of a busy key.
        if book.last_used_ms.load(Ordering::Relaxed) < at_ms {
            book.last_used_ms.fetch_max(at_ms, Ordering::Relaxed);
        }
    }

    /// Whether `key` has reached its limit for the period that holds
    /// `today`; `Some(spent)` when it has.
    pub(crate) fn over_limit(book: &KeyBook, key: &ApiKey, today: Day) -> Option<f64> {
        let limit = key.limit?;
        let spent = book
            .lock()
            .since(key.limit_reset.map(|r| period_start(r, today)))
            .counted(key.include_byok_in_limit);
        (spent >= limit).then_some(spent)
    }

    /// `key`'s spend in each period that holds `today`, and what is left of
    /// its limit (`None`: no limit).
    pub fn key_usage(&self, key: &ApiKey, today: Day) -> (KeyUsage, Option<f64>) {
        let usage = self
            .keys
            .get(&key.hash)
            .map(|b| b.usage(today))
            .unwrap_or_default();
        let remaining = key.limit.map(|limit| {
            let period = match key.limit_reset {
                None => usage.total,
                Some(LimitReset::Daily) => usage.daily,
                Some(LimitReset::Weekly) => usage.weekly,
                Some(LimitReset::Monthly) => usage.monthly,
            };
            (limit - period.counted(key.include_byok_in_limit)).max(0.0)
        });
        (usage, remaining)
    }

    /// When `key` was last used, in milliseconds since the Unix epoch.
    pub fn key_last_used_ms(&self, key: &KeyHash) -> Option<u64> {
        let ms = self.keys.get(key)?.last_used_ms.load(Ordering::Relaxed);
        (ms > 0).then_some(ms)
    }

    /// Notes that credential `id` served a response at `at_ms` (the latest
    /// use wins).
    fn credential_used(&self, id: &str, at_ms: u64) {
        self.credentials_last_used
            .entry(id.into())
            .and_modify(|v| *v = (*v).max(at_ms))
            .or_insert(at_ms);
    }

    /// When the credential `id` last served a response, as of the last drain.
    pub fn credential_last_used_ms(&self, id: &str) -> Option<u64> {
        self.credentials_last_used.get(id).map(|v| *v)
    }

    #[cfg(feature = "server")]
    /// Another replica saved usage: the flush task reads it now.
    pub(crate) fn refresh_wanted(&self) {
        self.refresh.notify_one();
    }

    #[cfg(feature = "server")]
    /// Resolves when another replica has saved usage.
    pub(crate) async fn refresh_asked(&self) {
        self.refresh.notified().await;
    }

    #[cfg(feature = "server")]
    /// From now on drained batches wait for [`take_unsaved`](Self::take_unsaved).
    pub(crate) fn persist(&self) {
        self.persistent.store(true, Ordering::Relaxed);
    }

    /// Moves everything pending out: into `count` (the metrics), the
    /// credentials' last use, and the unsaved batch when a store takes them.
    pub(crate) fn drain(&self, mut count: impl FnMut(&Entry, &Sums)) {
        let persistent = self.persistent.load(Ordering::Relaxed);
        let mut batch = Batch::new();
        for shard in self.pending.iter() {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            for (entry, sums) in taken {
                count(&entry, &sums);
                self.credential_used(&entry.credential, sums.last_used_ms);
                if persistent {
                    batch.push((entry, sums));
                }
            }
        }
        if !batch.is_empty() {
            self.lock_unsaved().entries.extend(batch);
        }
    }

    fn lock_unsaved(&self) -> std::sync::MutexGuard<'_, Unsaved> {
        self.unsaved.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(feature = "server")]
    /// The next batch for the store: the one whose save failed, as it was;
    /// else the drained entries, merged by entry, under a new number.
    /// `None`: nothing to save.
    pub(crate) fn take_unsaved(&self) -> Option<Numbered> {
        let mut unsaved = self.lock_unsaved();
        if let Some(retry) = unsaved.retry.take() {
            return Some(retry);
        }
        if unsaved.entries.is_empty() {
            return None;
        }
        let batch = std::mem::take(&mut unsaved.entries);
        let mut merged: HashMap<Entry, Sums> = HashMap::with_capacity(batch.len());
        for (entry, sums) in batch {
            merged.entry(entry).or_default().add(&sums);
        }
        unsaved.last += 1;
        Some(Numbered {
            seq: unsaved.last,
            entries: merged.into_iter().collect(),
        })
    }

    #[cfg(feature = "server")]
    /// A batch the store may not have taken (its save failed, or its
    /// acknowledgement was lost): the next [`take_unsaved`](Self::take_unsaved)
    /// gives it again, under the same number.
    pub(crate) fn unsaved_again(&self, batch: Numbered) {
        self.lock_unsaved().retry = Some(batch);
    }

    #[cfg(feature = "server")]
    /// The store now holds `batch`: its spend moves from each key's local
    /// part to its stored days, so no limit check sees it twice or not at
    /// all.
    pub(crate) fn saved(&self, batch: &Batch) {
        for (entry, sums) in batch {
            // A key deleted since keeps no book.
            let Some(book) = entry.key.and_then(|key| self.peek_book(&key)) else {
                continue;
            };
            let mut b = book.lock();
            let spend = Spend::of(entry.tier, sums.usd);
            if let Some(local) = b.local.get_mut(&entry.day) {
                local.add(Spend {
                    shared: -spend.shared,
                    byok: -spend.byok,
                });
                if local.shared.abs() < 1e-12 && local.byok.abs() < 1e-12 {
                    b.local.remove(&entry.day);
                }
            }
            b.days.entry(entry.day).or_default().add(spend);
        }
    }

    #[cfg(feature = "server")]
    /// What the store holds, read after a save: every key's days from a
    /// `since` on (replacing this replica's view of them) with their last
    /// uses, and, when given, each key's total before that day. Only the
    /// keys `live` says are in force keep a book: the store still holds
    /// the usage of deleted ones.
    pub(crate) fn refresh(
        &self,
        days: Vec<(KeyHash, Day, Spend, u64)>,
        before: Option<Vec<(KeyHash, Spend)>>,
        live: impl Fn(&KeyHash) -> bool,
    ) {
        self.keys.retain(|k, _| live(k));
        let mut by_key: HashMap<KeyHash, BTreeMap<Day, Spend>> = HashMap::new();
        // A book for every live key the store knows of; then every book is
        // set: one whose key has no recent day has spent nothing recently.
        for (key, day, spend, last) in days.into_iter().filter(|d| live(&d.0)) {
            by_key.entry(key).or_default().insert(day, spend);
            Ledger::touch(&self.book(key), last);
        }
        for (key, _) in before.iter().flatten().filter(|b| live(&b.0)) {
            self.book(*key);
        }
        let before: Option<HashMap<KeyHash, Spend>> = before.map(|b| b.into_iter().collect());
        let books: Vec<(KeyHash, Arc<KeyBook>)> = self
            .keys
            .iter()
            .map(|e| (*e.key(), Arc::clone(e.value())))
            .collect();
        for (key, book) in books {
            let mut b = book.lock();
            b.days = by_key.remove(&key).unwrap_or_default();
            if let Some(before) = &before {
                b.before = before.get(&key).copied().unwrap_or_default();
            }
        }
    }

    #[cfg(feature = "server")]
    /// Credentials' last uses as the store holds them, for the credentials
    /// `live` says are in force.
    pub(crate) fn adopt_credentials_last_used(
        &self,
        rows: Vec<(String, u64)>,
        live: impl Fn(&str) -> bool,
    ) {
        for (id, ms) in rows.into_iter().filter(|r| live(&r.0)) {
            self.credential_used(&id, ms);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::ApiKeyFields;

    fn day(y: i32, m: u8, d: u8) -> Day {
        let date = Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
        date.to_julian_day() - 2_440_588
    }

    #[test]
    fn periods_start_at_utc_midnight_monday_and_the_first() {
        // (day, weekly start, monthly start)
        let cases = [
            (day(1970, 1, 1), day(1969, 12, 29), day(1970, 1, 1)),
            (day(2026, 11, 30), day(2026, 11, 30), day(2026, 11, 1)), // a Monday
            (day(2026, 12, 1), day(2026, 11, 30), day(2026, 12, 1)),
            (day(2026, 12, 6), day(2026, 11, 30), day(2026, 12, 1)), // a Sunday
            (day(2026, 12, 7), day(2026, 12, 7), day(2026, 12, 1)),
            (day(2024, 2, 29), day(2024, 2, 26), day(2024, 2, 1)),
            (day(2027, 1, 1), day(2026, 12, 28), day(2027, 1, 1)),
        ];
        for (d, week, month) in cases {
            assert_eq!(period_start(LimitReset::Daily, d), d);
            assert_eq!(period_start(LimitReset::Weekly, d), week, "week of {d}");
            assert_eq!(period_start(LimitReset::Monthly, d), month, "month of {d}");
            #[cfg(feature = "server")]
            assert_eq!(recent_since(d), week.min(month));
        }
        assert_eq!(day_of_ms(0), 0);
        assert_eq!(day_of_ms(86_400_000 - 1), 0);
        assert_eq!(day_of_ms(86_400_000), 1);
    }

    fn key(limit: Option<f64>, reset: Option<&str>, include_byok: bool) -> ApiKey {
        ApiKey::validate(ApiKeyFields {
            hash: KeyHash::of(b"k").to_hex(),
            workspace_id: "ws".into(),
            user_id: "u".into(),
            limit,
            limit_reset: reset.map(str::to_owned),
            include_byok_in_limit: include_byok,
            ..ApiKeyFields::default()
        })
        .unwrap()
    }

    /// An entry of key `k`, credential `c`, model `other`.
    pub(crate) fn entry(day: Day, tier: Tier) -> Entry {
        Entry {
            day,
            workspace: "ws".into(),
            key: Some(KeyHash::of(b"k")),
            credential: "c".into(),
            provider: "openai".into(),
            tier,
            model: "other".into(),
        }
    }

    fn spend(ledger: &Ledger, day: Day, tier: Tier, usd: f64) {
        let book = ledger.book(KeyHash::of(b"k"));
        let t = Tokens::default();
        ledger.record(entry(day, tier), Some(&book), t, usd, (false, false), 1);
    }

    /// Limits roll over at each period's start, with a clock the test
    /// sets (the day is the ledger's only notion of time).
    #[test]
    fn limits_roll_over_at_each_periods_boundary() {
        let sun = day(2026, 12, 6);
        let mon = day(2026, 12, 7);
        let cases: &[(&str, Option<&str>, Day, Day, bool)] = &[
            // (what, reset, spent on, checked on, still over)
            ("daily, same day", Some("daily"), sun, sun, true),
            ("daily, next midnight", Some("daily"), sun, mon, false),
            ("weekly, Sunday to Monday", Some("weekly"), sun, mon, false),
            (
                "weekly, Monday to Sunday",
                Some("weekly"),
                day(2026, 11, 30),
                sun,
                true,
            ),
            (
                "monthly, the 30th to the 1st",
                Some("monthly"),
                day(2026, 11, 30),
                day(2026, 12, 1),
                false,
            ),
            (
                "monthly, the 1st to the 31st",
                Some("monthly"),
                day(2026, 12, 1),
                day(2026, 12, 31),
                true,
            ),
            (
                "lifetime, a year on",
                None,
                day(2025, 1, 1),
                day(2026, 1, 1),
                true,
            ),
        ];
        for (what, reset, on, checked, over) in cases {
            let ledger = Ledger::default();
            let k = key(Some(1.0), *reset, false);
            spend(&ledger, *on, Tier::Shared, 1.0);
            let book = ledger.book(k.hash);
            assert_eq!(
                Ledger::over_limit(&book, &k, *checked).is_some(),
                *over,
                "{what}"
            );
            let (_, remaining) = ledger.key_usage(&k, *checked);
            assert_eq!(remaining, Some(if *over { 0.0 } else { 1.0 }), "{what}");
        }
    }

    #[test]
    fn byok_spend_counts_only_when_the_key_says_so() {
        let today = day(2026, 12, 1);
        for (include, shared, byok, over) in [
            (false, 0.5, 5.0, false),
            (true, 0.5, 0.5, true),
            (false, 1.0, 0.0, true),
            (true, 0.25, 0.5, false),
        ] {
            let ledger = Ledger::default();
            let k = key(Some(1.0), Some("daily"), include);
            spend(&ledger, today, Tier::Shared, shared);
            spend(&ledger, today, Tier::Byok, byok);
            let book = ledger.book(k.hash);
            assert_eq!(
                Ledger::over_limit(&book, &k, today).is_some(),
                over,
                "include {include}, shared {shared}, byok {byok}"
            );
            let (u, _) = ledger.key_usage(&k, today);
            assert_eq!(u.daily, Spend { shared, byok });
            assert_eq!(u.total, u.monthly);
        }
        let k = key(None, None, true);
        let ledger = Ledger::default();
        spend(&ledger, today, Tier::Shared, 1e9);
        assert!(Ledger::over_limit(&ledger.book(k.hash), &k, today).is_none());
        assert_eq!(ledger.key_usage(&k, today).1, None);
    }

    #[cfg(feature = "server")]
    /// A drain, a save and a refresh never count a spend twice or drop it,
    /// whatever lands between them.
    #[test]
    fn save_and_refresh_keep_every_spend_once() {
        let today = day(2026, 12, 1);
        let ledger = Ledger::default();
        ledger.persist();
        let k = key(Some(10.0), Some("monthly"), true);
        spend(&ledger, today, Tier::Byok, 1.0);
        ledger.drain(|_, _| {});
        spend(&ledger, today, Tier::Byok, 2.0); // after the drain
        let batch = ledger.take_unsaved().unwrap().entries;
        assert_eq!(batch.len(), 1);
        ledger.saved(&batch);
        assert_eq!(ledger.key_usage(&k, today).0.monthly.byok, 3.0);
        // The store holds the saved 1.0 and another replica's 4.0.
        let rows = vec![(
            k.hash,
            today,
            Spend {
                shared: 0.0,
                byok: 5.0,
            },
            7,
        )];
        ledger.refresh(
            rows,
            Some(vec![(
                k.hash,
                Spend {
                    shared: 1.0,
                    byok: 0.0,
                },
            )]),
            |_| true,
        );
        let (u, remaining) = ledger.key_usage(&k, today);
        assert_eq!(u.monthly.byok, 7.0, "5 stored + 2 local");
        assert_eq!(
            u.total,
            Spend {
                shared: 1.0,
                byok: 7.0
            }
        );
        assert_eq!(remaining, Some(3.0), "10 - 7");
        assert_eq!(ledger.key_last_used_ms(&k.hash), Some(7));
    }

    #[cfg(feature = "server")]
    /// Neither a save nor a read of the store brings back the book of a
    /// key that is no longer in force (the store keeps its rows).
    #[test]
    fn a_deleted_keys_book_is_not_made_again() {
        let today = day(2026, 12, 1);
        let ledger = Ledger::default();
        ledger.persist();
        let k = KeyHash::of(b"k");
        spend(&ledger, today, Tier::Byok, 1.0);
        ledger.drain(|_, _| {});
        assert_eq!(ledger.books(), 1);
        ledger.forget_key(&k);
        ledger.saved(&ledger.take_unsaved().unwrap().entries);
        assert_eq!(ledger.books(), 0, "saved");
        let row = (k, today, Spend::default(), 1);
        let other = KeyHash::of(b"other");
        ledger.book(other);
        ledger.refresh(vec![row], Some(vec![(k, Spend::default())]), |key| {
            *key != k
        });
        assert_eq!(ledger.books(), 1, "refreshed");
        ledger.refresh(vec![], None, |_| false);
        assert_eq!(ledger.books(), 0, "a key gone meanwhile is dropped");
    }

    #[cfg(feature = "server")]
    /// A batch whose save failed (or whose acknowledgement was lost) comes
    /// back as it was, under its number, before anything newer: it is never
    /// merged with entries drained since, so a store that holds its number
    /// can refuse it whole.
    #[test]
    fn a_failed_batch_is_tried_again_whole_under_its_number() {
        let today = day(2026, 12, 1);
        let ledger = Ledger::default();
        ledger.persist();
        assert_eq!(ledger.take_unsaved(), None, "nothing drained");
        spend(&ledger, today, Tier::Byok, 1.0);
        ledger.drain(|_, _| {});
        let first = ledger.take_unsaved().unwrap();
        assert_eq!(first.seq, 1);
        spend(&ledger, today, Tier::Byok, 2.0);
        ledger.drain(|_, _| {});
        ledger.unsaved_again(first.clone());
        assert_eq!(
            ledger.take_unsaved().as_ref(),
            Some(&first),
            "the same batch"
        );
        let second = ledger.take_unsaved().unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(second.entries.len(), 1);
        assert_eq!(second.entries[0].1.usd, 2.0, "the newer entries alone");
        assert_eq!(ledger.take_unsaved(), None);
    }
}
