//! The ledger's flush (SPEC §8): about once a second this replica's
//! usage goes into the metrics and, with a database, into the store, in
//! one batch off the request path; then each key's spend is read back, so
//! the limits see every replica's. With Postgres, a save tells the other
//! replicas, which read it at once.

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::{self, Ledger};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;

/// How often usage is saved: at most one write a second per replica.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often the totals before this week and month (and the credentials'
/// last uses) are read anew.
const FULL_EVERY: Duration = Duration::from_secs(60);

/// Reads the usage the store holds, then flushes the ledger and prunes the
/// store's old usage rows, on tasks of their own.
pub(super) async fn start(
    registry: &Registry,
    metrics: &Arc<Metrics>,
    store: &Arc<Store>,
    retention_days: u32,
) {
    load(registry, store).await;
    tokio::spawn(keep(registry.clone(), metrics.clone(), store.clone()));
    tokio::spawn(prune(store.clone(), retention_days));
}

/// Flushes `registry`'s ledger forever.
async fn keep(registry: Registry, metrics: Arc<Metrics>, store: Arc<Store>) {
    let ledger = Arc::clone(registry.snapshot().ledger());
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut full_at = tokio::time::Instant::now();
    let mut since = recent_since();
    loop {
        let saving = tokio::select! {
            _ = tick.tick() => true,
            () = ledger.refresh_asked() => false,
        };
        let mut old_days = false;
        if saving {
            old_days = flush(&ledger, &metrics, &store).await;
        }
        // A new week or month moves days out of the recent read, and a
        // batch saved late may hold a day before it: the totals before it
        // are read again at once, so a lifetime limit never misses them.
        let now_since = recent_since();
        let full = tokio::time::Instant::now() >= full_at || now_since != since || old_days;
        if full {
            full_at = tokio::time::Instant::now() + FULL_EVERY;
            since = now_since;
        }
        read_back(&registry, &store, full).await;
    }
}

/// The first day the recent read covers today.
fn recent_since() -> ledger::Day {
    ledger::recent_since(ledger::day_of_ms(ledger::now_ms()))
}

/// Held by a flush while it saves: the last flush at shutdown waits for one
/// under way, so no batch taken for saving is lost when the process ends.
static SAVING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Drains the ledger into the metrics and the store; what the store does
/// not take is kept for the next flush. True when it saved a day before
/// the recent read's first.
pub(super) async fn flush(ledger: &Ledger, metrics: &Metrics, store: &Store) -> bool {
    let _saving = SAVING.lock().await;
    ledger.drain(|entry, sums| metrics.usage(entry, sums));
    if !store.keeps_usage() {
        return false;
    }
    let since = recent_since();
    let mut old_days = false;
    // A batch tried again (under its number) goes first, then what was
    // drained since.
    for _ in 0..2 {
        let Some(batch) = ledger.take_unsaved() else {
            break;
        };
        match store.save_usage(&batch).await {
            Ok(()) => {
                ledger.saved(&batch.entries);
                old_days |= batch.entries.iter().any(|(entry, _)| entry.day < since);
            }
            Err(e) => {
                tracing::warn!(entries = batch.entries.len(), batch = batch.seq, error = %e, "usage not saved; kept for the next flush");
                ledger.unsaved_again(batch);
                break;
            }
        }
    }
    old_days
}

/// How often usage rows past `store.usage_retention_days` are pruned (and
/// at start); with Postgres, by one replica a period.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prunes the store's old usage rows at start and every [`PRUNE_EVERY`],
/// forever.
async fn prune(store: Arc<Store>, retention_days: u32) {
    if !store.keeps_usage() {
        return;
    }
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.prune_usage(retention_days, PRUNE_EVERY).await {
            Ok(Some((usage_rows, keys_rolled_up))) => tracing::info!(
                retention_days,
                usage_rows,
                keys_rolled_up,
                "pruned the usage older than store.usage_retention_days"
            ),
            Ok(None) => tracing::debug!("usage not pruned: another replica pruned within the hour"),
            Err(e) => tracing::warn!(error = %e, "usage not pruned; trying again in an hour"),
        }
    }
}

/// Reads the spend of every key in force back from the store (the other
/// replicas' included).
async fn read_back(registry: &Registry, store: &Store, full: bool) {
    if !store.keeps_usage() {
        return;
    }
    match store.read_usage(recent_since(), full).await {
        Ok(stored) => {
            // Read after the rows: a key created meanwhile gets its book at
            // the next read.
            let snapshot = registry.snapshot();
            let ledger = snapshot.ledger();
            ledger.refresh(stored.days, stored.before, |key| {
                snapshot.api_key(key).is_some()
            });
            if let Some(creds) = stored.credentials {
                ledger.adopt_credentials_last_used(creds, |id| snapshot.credential(id).is_some());
            }
        }
        Err(e) => tracing::debug!(error = %e, "usage not read back; the local view stays"),
    }
}

/// Reads what the store holds before the proxy serves: usage survives a
/// restart.
async fn load(registry: &Registry, store: &Store) {
    if store.keeps_usage() {
        registry.snapshot().ledger().persist();
    }
    read_back(registry, store, true).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::KeyHash;
    use crate::ledger::tests::entry;
    use crate::ledger::Tokens;
    use crate::policy::Tier;
    use crate::store::crypto::Keyring;
    use crate::store::SqliteStore;

    /// The store commits a batch but its caller sees an error (the
    /// acknowledgement was lost) and tries the batch again: it counts once.
    #[tokio::test]
    async fn a_batch_whose_acknowledgement_was_lost_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let keyring = Keyring::from_hex(&"ab".repeat(32), None).unwrap();
        let store = Store::Sqlite(
            SqliteStore::open(path.to_str().unwrap(), keyring, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let key = KeyHash::of(b"k");
        let k = crate::ApiKey::validate(crate::domain::ApiKeyFields {
            hash: key.to_hex(),
            workspace_id: "ws".into(),
            user_id: "u".into(),
            ..Default::default()
        })
        .unwrap();
        let snapshot = crate::Snapshot::build(
            crate::Settings::default(),
            crate::Providers::builtins(),
            vec![k.clone()],
            vec![],
        )
        .unwrap();
        let registry = Registry::new(snapshot);
        let ledger = Arc::clone(registry.snapshot().ledger());
        let metrics = Metrics::new();
        ledger.persist();
        let today = ledger::day_of_ms(ledger::now_ms());
        let book = ledger.book(key);
        let t = Tokens::default();
        ledger.record(
            entry(today, Tier::Byok),
            Some(&book),
            t,
            1.0,
            (false, false),
            1,
        );
        ledger.drain(|_, _| {});
        let batch = ledger.take_unsaved().unwrap();
        store.save_usage(&batch).await.unwrap();
        ledger.unsaved_again(batch);
        // Spent meanwhile: saved after the batch tried again.
        ledger.record(
            entry(today, Tier::Byok),
            Some(&book),
            t,
            2.0,
            (false, false),
            2,
        );
        assert!(!flush(&ledger, &metrics, &store).await);
        let stored = store.read_usage(today, true).await.unwrap();
        let spent: f64 = stored.days.iter().map(|(_, _, s, _)| s.byok).sum();
        assert_eq!(spent, 3.0, "1 + 2, the first once");
        read_back(&registry, &store, true).await;
        assert_eq!(ledger.key_usage(&k, today).0.total.byok, 3.0);
    }
}
