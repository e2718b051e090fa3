//! The ledger's flush (SPEC §8): about once a second this replica's
//! usage goes into the metrics and, with a database, into the store, in
//! one batch off the request path; then each key's spend is read back, so
//! the limits see every replica's. With Postgres, a save tells the other
//! replicas, which read it at once.

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::{self, Ledger};
use crate::store::Store;
use crate::{Metrics, Registry};

/// How often usage is saved: at most one write a second per replica.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often the totals before this week and month (and the credentials'
/// last uses) are read anew.
const FULL_EVERY: Duration = Duration::from_secs(60);

/// Flushes `registry`'s ledger forever.
pub(super) async fn keep(registry: Registry, metrics: Arc<Metrics>, store: Arc<Store>) {
    let ledger = Arc::clone(registry.snapshot().ledger());
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut full_at = tokio::time::Instant::now();
    loop {
        let saving = tokio::select! {
            _ = tick.tick() => true,
            () = ledger.refresh_asked() => false,
        };
        let full = tokio::time::Instant::now() >= full_at;
        if saving {
            flush(&ledger, &metrics, &store).await;
        }
        if full {
            full_at = tokio::time::Instant::now() + FULL_EVERY;
        }
        read_back(&ledger, &store, full).await;
    }
}

/// Drains the ledger into the metrics and the store; what the store does
/// not take is kept for the next flush.
pub(super) async fn flush(ledger: &Ledger, metrics: &Metrics, store: &Store) {
    ledger.drain(|entry, sums| metrics.usage(entry, sums));
    if !store.keeps_usage() {
        return;
    }
    let batch = ledger.take_unsaved();
    if batch.is_empty() {
        return;
    }
    match store.save_usage(&batch).await {
        Ok(()) => ledger.saved(&batch),
        Err(e) => {
            tracing::warn!(entries = batch.len(), error = %e, "usage not saved; kept for the next flush");
            ledger.unsaved_again(batch);
        }
    }
}

/// Reads every key's spend back from the store (the other replicas'
/// included).
async fn read_back(ledger: &Ledger, store: &Store, full: bool) {
    if !store.keeps_usage() {
        return;
    }
    let since = ledger::recent_since(ledger::day_of_ms(ledger::now_ms()));
    match store.read_usage(since, full).await {
        Ok(stored) => {
            ledger.refresh(stored.days, stored.before);
            if let Some(creds) = stored.credentials {
                ledger.adopt_credentials_last_used(creds);
            }
        }
        Err(e) => tracing::debug!(error = %e, "usage not read back; the local view stays"),
    }
}

/// Reads what the store holds before the proxy serves: usage survives a
/// restart.
pub(super) async fn load(ledger: &Ledger, store: &Store) {
    if store.keeps_usage() {
        ledger.persist();
    }
    read_back(ledger, store, true).await;
}
