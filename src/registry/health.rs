//! [`HealthBook`]: every credential's health and token cache by id, kept
//! across the snapshots that follow one another, and the channel that tells
//! this replica's changes of rest to the others. The state machine itself
//! is the policy's ([`Health`]); this is where it lives at run time.

use std::sync::Arc;

use dashmap::DashMap;
use foldhash::fast::RandomState;

#[cfg(feature = "vertex")]
use crate::auth::token::TokenCache;
#[cfg(feature = "vertex")]
use crate::domain::ServiceAccount;
use crate::policy::health::{Health, Rest};

/// Every credential's [`Health`] by id, shared by the snapshots that follow
/// one another (a reload keeps the health of the credentials that stay).
#[derive(Debug, Default)]
pub(crate) struct HealthBook {
    by_id: DashMap<Box<str>, Arc<Health>, RandomState>,
    /// The Vertex credentials' access tokens, kept across reloads as
    /// health is (SPEC §9).
    #[cfg(feature = "vertex")]
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

    #[cfg(feature = "vertex")]
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
        #[cfg(feature = "vertex")]
        self.tokens.retain(|id, _| keep(id));
    }

    /// Forgets one credential.
    pub(crate) fn remove(&self, id: &str) {
        self.by_id.remove(id);
        #[cfg(feature = "vertex")]
        self.tokens.remove(id);
    }
}
