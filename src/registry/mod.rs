//! The in-memory registry: gateway keys and credentials, ready for the hot path.
//!
//! A [`Snapshot`] holds everything one request needs: the gateway keys in a
//! `DashMap` keyed by their SHA-256 ([`KeyHash`]), the providers, and the
//! credentials grouped by workspace and provider, **pre-sorted** in candidate
//! order with their allowlists compiled to hash sets and their auth header
//! pre-built. Nothing about a credential is computed per request.
//!
//! The [`Registry`] hands out the current snapshot as an `Arc`; a reload builds a
//! whole new snapshot and swaps it in atomically, so a request in flight finishes
//! on the snapshot it started with.

mod candidate;
mod health;

pub use candidate::CompileError;
pub(crate) use candidate::{compile, group, Candidate, Cloud};
use health::HealthBook;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use foldhash::fast::RandomState;
use foldhash::HashMap;

use crate::config::{Config, Price, Prices, ServerConfig};
use crate::domain::{ApiKey, Catalog, Credential, KeyHash, Provider, Providers, SharedTier};
use crate::ledger::Ledger;
use crate::policy::health::Rest;
use crate::policy::{self, Plan};

/// Who is asking: the workspace and user behind a gateway key.
///
/// The layer resolves it from the key registry, or, when configured with
/// [`ByokLayer::trust_principal_extension`](crate::ByokLayer::trust_principal_extension),
/// takes it from the request's extensions, put there by an earlier auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The workspace whose credentials may be used.
    pub workspace_id: Arc<str>,
    /// The user, checked against `allowed_user_ids`.
    pub user_id: Arc<str>,
    /// The gateway key's hash, checked against `allowed_api_key_hashes`; `None`
    /// admits only credentials without a hash allowlist.
    pub key_hash: Option<KeyHash>,
    /// Only zero-data-retention credentials may serve it.
    pub require_zdr: bool,
}

/// Per-request limits that a reload may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Request bodies above this (after decoding) get 413.
    pub max_body_bytes: usize,
    /// Per attempt, until the upstream's response head; then fail over.
    pub first_byte_timeout: Duration,
    /// Longest silence inside a streamed response body.
    pub idle_timeout: Duration,
    /// Longest silence inside a request body; then 408 and the connection closes.
    pub body_timeout: Duration,
    /// The longest a rate-limited credential rests (SPEC §10).
    pub max_cooldown: Duration,
}

impl From<&ServerConfig> for Settings {
    fn from(server: &ServerConfig) -> Self {
        Settings {
            max_body_bytes: server.max_body_bytes,
            first_byte_timeout: server.first_byte_timeout,
            idle_timeout: server.idle_timeout,
            body_timeout: server.body_timeout,
            max_cooldown: server.max_cooldown,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_body_bytes: 10 * 1024 * 1024,
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(60),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// One workspace's credentials, by provider slug, each list in candidate order.
type WorkspaceGroups = HashMap<Box<str>, Arc<[Candidate]>>;

/// Everything a request needs. A reload builds a whole new one; a single
/// change from a store (one credential or key) is applied in place, to the
/// one (workspace, provider) group it touches.
pub struct Snapshot {
    generation: AtomicU64,
    loaded_at: SystemTime,
    settings: Settings,
    keys: DashMap<KeyHash, Arc<ApiKey>, RandomState>,
    providers: Providers,
    workspaces: DashMap<Box<str>, Arc<WorkspaceGroups>, RandomState>,
    /// Per provider, the group of the global credentials alone: for the
    /// workspaces with none of their own for that provider.
    globals: DashMap<Box<str>, Arc<[Candidate]>, RandomState>,
    /// `[shared]`, and per provider the group of its workspace's own
    /// credentials (the global ones are everyone's BYOK tier already).
    shared: Option<SharedTier>,
    shared_groups: DashMap<Box<str>, Arc<[Candidate]>, RandomState>,
    /// Every credential's health, carried from snapshot to snapshot.
    health: Arc<HealthBook>,
    /// `[prices]`: what tokens cost, by model slug.
    prices: PriceTable,
    /// `[models]`: the one endpoint's model catalog (SPEC §11).
    catalog: Arc<Catalog>,
    /// Usage and spend, carried from snapshot to snapshot.
    ledger: Arc<Ledger>,
    by_id: DashMap<Box<str>, Arc<Credential>, RandomState>,
    /// Serialises in-place changes: each rebuilds a group from `by_id`.
    writer: Mutex<()>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation())
            .field("api_keys", &self.keys.len())
            .field("credentials", &self.by_id.len())
            .field("providers", &self.providers.len())
            .finish_non_exhaustive()
    }
}

/// Why a snapshot could not be built (validation normally catches these
/// first, naming the entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A credential cannot serve with the providers in force.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Two credentials share an id.
    #[error("credential id {id} is used twice")]
    DuplicateId {
        /// Credential id.
        id: String,
    },
}

impl Snapshot {
    /// A snapshot of everything in `config`: its settings, providers, gateway
    /// keys and credentials.
    pub fn from_config(config: &Config) -> Result<Snapshot, SnapshotError> {
        Snapshot::with_entries(config, config.api_keys.clone(), config.credentials.clone())
    }

    /// A snapshot with `config`'s settings and providers, and the keys and
    /// credentials given (from a database store, or taken out of the config).
    pub fn with_entries(
        config: &Config,
        api_keys: Vec<ApiKey>,
        credentials: Vec<Credential>,
    ) -> Result<Snapshot, SnapshotError> {
        let mut snapshot = Snapshot::build_tiers(
            Settings::from(&config.server),
            config.providers.clone(),
            config.shared.clone(),
            api_keys,
            credentials,
        )?;
        snapshot.prices = PriceTable::new(&config.prices);
        snapshot.catalog = Arc::new(config.models.clone());
        Ok(snapshot)
    }

    /// Builds a snapshot: compiles every enabled credential and sorts each group.
    pub fn build(
        settings: Settings,
        providers: Providers,
        api_keys: Vec<ApiKey>,
        credentials: Vec<Credential>,
    ) -> Result<Snapshot, SnapshotError> {
        Snapshot::build_tiers(settings, providers, None, api_keys, credentials)
    }

    /// [`build`](Self::build), with the operator's shared tier.
    pub fn build_tiers(
        settings: Settings,
        providers: Providers,
        shared: Option<SharedTier>,
        api_keys: Vec<ApiKey>,
        credentials: Vec<Credential>,
    ) -> Result<Snapshot, SnapshotError> {
        Snapshot::build_all(
            settings,
            providers,
            shared,
            api_keys,
            credentials,
            Arc::default(),
        )
    }

    /// The snapshot that follows `before`: built from the entries given, the
    /// health of the credentials that stay carried over.
    pub fn following(
        before: &Snapshot,
        config: &Config,
        api_keys: Vec<ApiKey>,
        credentials: Vec<Credential>,
    ) -> Result<Snapshot, SnapshotError> {
        let mut next = Snapshot::build_all(
            Settings::from(&config.server),
            config.providers.clone(),
            config.shared.clone(),
            api_keys,
            credentials,
            Arc::clone(&before.health),
        )?;
        next.prices = PriceTable::new(&config.prices);
        next.catalog = Arc::new(config.models.clone());
        next.ledger = Arc::clone(&before.ledger);
        next.health.retain(|id| next.by_id.contains_key(id));
        // Keys and credentials the reload removed keep nothing in memory.
        next.ledger.retain(
            |key| next.keys.contains_key(key),
            |id| next.by_id.contains_key(id),
        );
        Ok(next)
    }

    fn build_all(
        settings: Settings,
        providers: Providers,
        shared: Option<SharedTier>,
        api_keys: Vec<ApiKey>,
        credentials: Vec<Credential>,
        health: Arc<HealthBook>,
    ) -> Result<Snapshot, SnapshotError> {
        let keys = DashMap::with_capacity_and_hasher(api_keys.len(), RandomState::default());
        for k in api_keys {
            keys.insert(k.hash, Arc::new(k));
        }
        let by_id = DashMap::with_capacity_and_hasher(credentials.len(), RandomState::default());
        // Each workspace's group of a provider holds its own credentials and
        // the global ones; a workspace with none of its own uses the global
        // group alone.
        let mut own: HashMap<(String, String), Vec<Arc<Credential>>> = HashMap::default();
        let mut global: HashMap<String, Vec<Arc<Credential>>> = HashMap::default();
        for cred in credentials {
            let cred = Arc::new(cred);
            if by_id
                .insert(Box::from(cred.id.as_str()), Arc::clone(&cred))
                .is_some()
            {
                return Err(SnapshotError::DuplicateId {
                    id: cred.id.clone(),
                });
            }
            match &cred.workspace_id {
                Some(ws) => own
                    .entry((ws.clone(), cred.provider.clone()))
                    .or_default()
                    .push(cred),
                None => global.entry(cred.provider.clone()).or_default().push(cred),
            }
        }
        let shared_groups = DashMap::with_hasher(RandomState::default());
        if let Some(tier) = &shared {
            for ((ws, provider), creds) in &own {
                if **ws == *tier.workspace_id {
                    let list = group(creds, &providers, &health)?;
                    if !list.is_empty() {
                        shared_groups.insert(provider.as_str().into(), list);
                    }
                }
            }
        }
        let mut by_workspace: HashMap<Box<str>, WorkspaceGroups> = HashMap::default();
        for ((ws, provider), mut creds) in own {
            if let Some(g) = global.get(&provider) {
                creds.extend(g.iter().cloned());
            }
            let list = group(&creds, &providers, &health)?;
            if !list.is_empty() {
                by_workspace
                    .entry(ws.into())
                    .or_default()
                    .insert(provider.into(), list);
            }
        }
        let workspaces =
            DashMap::with_capacity_and_hasher(by_workspace.len(), RandomState::default());
        for (ws, groups) in by_workspace {
            workspaces.insert(ws, Arc::new(groups));
        }
        let globals = DashMap::with_hasher(RandomState::default());
        for (provider, creds) in global {
            let list = group(&creds, &providers, &health)?;
            if !list.is_empty() {
                globals.insert(provider.into_boxed_str(), list);
            }
        }
        Ok(Snapshot {
            generation: AtomicU64::new(0),
            loaded_at: SystemTime::now(),
            settings,
            keys,
            providers,
            workspaces,
            globals,
            shared,
            shared_groups,
            by_id,
            health,
            prices: PriceTable::default(),
            catalog: Arc::default(),
            ledger: Arc::default(),
            writer: Mutex::new(()),
        })
    }

    /// The principal behind a key hash; `None` for unknown and disabled keys alike.
    pub fn principal(&self, hash: &KeyHash) -> Option<Principal> {
        self.resolve(hash).map(|(p, _)| p)
    }

    /// The principal behind a live key hash, and its key (its limit).
    pub(crate) fn resolve(&self, hash: &KeyHash) -> Option<(Principal, Arc<ApiKey>)> {
        let key = Arc::clone(self.keys.get(hash)?.value());
        // An expired key answers exactly like an unknown one; the clock is
        // read only for a key that can expire.
        if key.disabled || key.expires_at_unix.is_some_and(key_expired) {
            return None;
        }
        let principal = Principal {
            workspace_id: Arc::clone(&key.workspace_id),
            user_id: Arc::clone(&key.user_id),
            key_hash: Some(*hash),
            require_zdr: key.require_zdr,
        };
        Some((principal, key))
    }

    /// A provider by slug.
    pub fn provider(&self, slug: &str) -> Option<&Arc<Provider>> {
        self.providers.get(slug)
    }

    /// A provider by slug, with its slug as a shared string (a metrics label).
    pub(crate) fn provider_entry(&self, slug: &str) -> Option<(&Arc<str>, &Arc<Provider>)> {
        self.providers.entry(slug)
    }

    /// Every provider, to validate a credential against.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// The enabled credentials of a workspace for a provider, in candidate order.
    pub(crate) fn candidates(
        &self,
        workspace_id: &str,
        provider: &str,
    ) -> Option<Arc<[Candidate]>> {
        if let Some(list) = self
            .workspaces
            .get(workspace_id)
            .and_then(|groups| groups.get(provider).cloned())
        {
            return Some(list);
        }
        self.globals.get(provider).map(|g| Arc::clone(&g))
    }

    /// What may serve `workspace_id`'s requests to `provider`: its BYOK
    /// group, and the shared tier's where the workspace may use it.
    pub(crate) fn plan(&self, workspace_id: &str, provider: &str) -> Plan<Candidate> {
        let shared = match &self.shared {
            Some(tier) if tier.serves(workspace_id) => {
                self.shared_groups.get(provider).map(|g| Arc::clone(&g))
            }
            _ => None,
        };
        Plan {
            byok: self.candidates(workspace_id, provider),
            shared,
        }
    }

    /// Tells the other replicas that `id`'s rest changed (a Postgres store).
    pub(crate) fn health_changed(&self, id: &Arc<str>, rest: Rest) {
        self.health.changed(id, rest);
    }

    /// Sends this replica's health changes to `tx` (for the other replicas).
    #[cfg(feature = "server")]
    pub(crate) fn publish_health_to(&self, tx: tokio::sync::mpsc::Sender<(Arc<str>, Rest)>) {
        self.health.publish_to(tx);
    }

    /// Takes in a rest another replica decided for credential `id`.
    #[cfg(feature = "server")]
    pub(crate) fn adopt_health(&self, id: &str, rest: Rest) {
        if self.by_id.contains_key(id) {
            self.health.get(id).adopt(rest);
        }
    }

    /// How many enabled credentials are in each health state at `now_ms`.
    pub(crate) fn health_counts(&self, now_ms: u64) -> [(&'static str, usize); 3] {
        use crate::policy::health::State;
        let mut counts = [0usize; 3];
        for e in self.by_id.iter().filter(|e| !e.disabled) {
            let state = self
                .health
                .peek(e.key())
                .map_or(State::Healthy, |h| h.state(now_ms).0);
            counts[state as usize] += 1;
        }
        [State::Healthy, State::Cooling, State::Quarantined]
            .map(|s| (s.as_str(), counts[s as usize]))
    }

    /// Credential `id`'s health, when it is known (for the admin API).
    #[cfg(feature = "server")]
    pub(crate) fn health(&self, id: &str) -> Option<Arc<crate::policy::health::Health>> {
        self.by_id
            .contains_key(id)
            .then(|| self.health.peek(id))
            .flatten()
    }

    /// The price of `model` on `provider`, with the price table's key for it
    /// (a bounded metrics label): `provider/model`, else the model as named
    /// (a slug already, as OpenRouter's are). No allocation.
    pub(crate) fn price(&self, provider: &str, model: &str) -> Option<&(Arc<str>, Price)> {
        self.prices
            .split
            .get(provider)
            .and_then(|models| models.get(model))
            .or_else(|| self.prices.whole.get(model))
    }

    /// The price of a model slug as the price table names it
    /// (`openai/gpt-4o`), with its key.
    pub(crate) fn price_of_slug(&self, slug: &str) -> Option<&(Arc<str>, Price)> {
        self.prices.whole.get(slug)
    }

    /// The model slugs the price table names (`author/model`).
    pub(crate) fn price_slugs(&self) -> impl Iterator<Item = &str> {
        self.prices
            .whole
            .keys()
            .map(|k| &**k)
            .filter(|k| crate::domain::valid_model_slug(k))
    }

    /// The model catalog of the one endpoint (SPEC §11).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// This snapshot with `catalog` as its model catalog (for an embedding
    /// application that builds its snapshot itself).
    pub fn with_catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Arc::new(catalog);
        self
    }

    /// Usage and spend (SPEC §8), shared by every snapshot of a registry.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The per-request limits.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Every credential, disabled ones included, ordered by workspace, provider
    /// and candidate order.
    pub fn credentials(&self) -> Vec<Arc<Credential>> {
        let mut all: Vec<Arc<Credential>> =
            self.by_id.iter().map(|e| Arc::clone(e.value())).collect();
        all.sort_by(|a, b| {
            (&a.workspace_id, &a.provider)
                .cmp(&(&b.workspace_id, &b.provider))
                .then_with(|| policy::order(a, b))
        });
        all
    }

    /// One credential by id, disabled or not.
    pub fn credential(&self, id: &str) -> Option<Arc<Credential>> {
        self.by_id.get(id).map(|e| Arc::clone(e.value()))
    }

    /// How many credentials there are, disabled ones included.
    pub fn credential_count(&self) -> usize {
        self.by_id.len()
    }

    /// One gateway key by hash, disabled or expired ones included.
    pub fn api_key(&self, hash: &KeyHash) -> Option<Arc<ApiKey>> {
        self.keys.get(hash).map(|k| Arc::clone(k.value()))
    }

    /// Every gateway key, ordered by workspace, user and hash.
    pub fn api_keys(&self) -> Vec<Arc<ApiKey>> {
        let mut all: Vec<Arc<ApiKey>> = self.keys.iter().map(|e| Arc::clone(e.value())).collect();
        all.sort_by(|a, b| {
            (&a.workspace_id, &a.user_id, a.hash).cmp(&(&b.workspace_id, &b.user_id, b.hash))
        });
        all
    }

    /// How many gateway keys are registered.
    pub fn api_key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many providers are known.
    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    /// Counts up with every snapshot a [`Registry`] takes in and every change
    /// applied in place.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// When the snapshot was built.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// Adds or replaces one credential, in place. Its old and new groups are
    /// rebuilt; requests already holding a group keep the one they had.
    pub fn upsert_credential(&self, cred: Credential) -> Result<(), SnapshotError> {
        let cred = Arc::new(cred);
        compile(&cred, &self.providers)?;
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self
            .by_id
            .insert(Box::from(cred.id.as_str()), Arc::clone(&cred));
        // A write of the credential (a rotated key, say) lifts its rest, on
        // the replica that made it and on those that follow the store.
        if let Some(health) = self.health.peek(&cred.id) {
            health.lift();
        }
        if let Some(old) =
            old.filter(|o| (&o.workspace_id, &o.provider) != (&cred.workspace_id, &cred.provider))
        {
            self.rebuild(old.workspace_id.as_deref(), &old.provider)?;
        }
        self.rebuild(cred.workspace_id.as_deref(), &cred.provider)
    }

    /// Removes one credential, in place; `false` if there was none.
    pub fn remove_credential(&self, id: &str) -> Result<bool, SnapshotError> {
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match self.by_id.remove(id) {
            Some((_, old)) => {
                self.health.remove(id);
                self.ledger.forget_credential(id);
                self.rebuild(old.workspace_id.as_deref(), &old.provider)
                    .map(|()| true)
            }
            None => Ok(false),
        }
    }

    /// Adds or replaces one gateway key, in place.
    pub fn upsert_api_key(&self, key: ApiKey) {
        self.keys.insert(key.hash, Arc::new(key));
    }

    /// Removes one gateway key, in place; `false` if there was none.
    pub fn remove_api_key(&self, hash: &KeyHash) -> bool {
        // Its usage book goes with it (the store keeps its usage rows).
        self.ledger.forget_key(hash);
        self.keys.remove(hash).is_some()
    }

    /// Rebuilds one (workspace, provider) group from `by_id`. Caller holds `writer`.
    /// Rebuilds the groups a change of a credential of `workspace_id` (or a
    /// global one: `None`) for `provider` touches: that workspace's, or for a
    /// global credential every workspace's of that provider and the global
    /// group. One pass over the credentials either way.
    fn rebuild(&self, workspace_id: Option<&str>, provider: &str) -> Result<(), SnapshotError> {
        let mut global: Vec<Arc<Credential>> = Vec::new();
        let mut own: HashMap<Box<str>, Vec<Arc<Credential>>> = HashMap::default();
        for e in self.by_id.iter().filter(|e| e.provider == provider) {
            match (&e.workspace_id, workspace_id) {
                (None, _) => global.push(Arc::clone(e.value())),
                (Some(ws), Some(changed)) if ws != changed => {}
                (Some(ws), _) => own
                    .entry(ws.as_str().into())
                    .or_default()
                    .push(Arc::clone(e.value())),
            }
        }
        let mut touched: Vec<Box<str>> = match workspace_id {
            Some(ws) => vec![ws.into()],
            // Every workspace with a group of this provider (its own
            // credentials are in `own`; its group also held the globals).
            None => self
                .workspaces
                .iter()
                .filter(|g| g.contains_key(provider))
                .map(|g| g.key().clone())
                .chain(own.keys().cloned())
                .collect(),
        };
        touched.sort_unstable();
        touched.dedup();
        // The shared tier is its workspace's own credentials, gathered in
        // the pass above.
        if let (Some(tier), Some(ws)) = (&self.shared, workspace_id) {
            if *tier.workspace_id == *ws {
                let members = own.get(ws).map_or(&[][..], Vec::as_slice);
                let list = group(members, &self.providers, &self.health)?;
                put_group(&self.shared_groups, provider, list);
            }
        }
        for ws in touched {
            let mut members = own.remove(&ws).unwrap_or_default();
            members.extend(global.iter().cloned());
            // A workspace with no credential of its own is served by the
            // global group: it keeps no copy.
            let has_own = members.iter().any(|c| c.workspace_id.is_some());
            let list = if has_own {
                group(&members, &self.providers, &self.health)?
            } else {
                Arc::from(Vec::new())
            };
            let mut groups: WorkspaceGroups = self
                .workspaces
                .get(&*ws)
                .map(|g| (**g).clone())
                .unwrap_or_default();
            if list.is_empty() {
                groups.remove(provider);
            } else {
                groups.insert(provider.into(), list);
            }
            if groups.is_empty() {
                self.workspaces.remove(&*ws);
            } else {
                self.workspaces.insert(ws, Arc::new(groups));
            }
        }
        if workspace_id.is_none() {
            let list = group(&global, &self.providers, &self.health)?;
            put_group(&self.globals, provider, list);
        }
        Ok(())
    }
}

/// Puts `list` in `groups` as `provider`'s, or removes the entry when it is
/// empty.
fn put_group(
    groups: &DashMap<Box<str>, Arc<[Candidate]>, RandomState>,
    provider: &str,
    list: Arc<[Candidate]>,
) {
    if list.is_empty() {
        groups.remove(provider);
    } else {
        groups.insert(provider.into(), list);
    }
}

/// The price table, for lookups without allocation: by provider then model
/// (`openai` / `gpt-4o` for the key `openai/gpt-4o`), and by the whole key.
#[derive(Debug, Default)]
struct PriceTable {
    split: HashMap<Box<str>, ModelPrices>,
    whole: ModelPrices,
}

/// Prices by model, each with its price-table key (a metrics label).
type ModelPrices = HashMap<Box<str>, (Arc<str>, Price)>;

impl PriceTable {
    fn new(prices: &Prices) -> Self {
        let mut table = PriceTable::default();
        for (key, price) in prices {
            let entry = (Arc::<str>::from(key.as_str()), *price);
            if let Some((provider, model)) = key.split_once('/') {
                table
                    .split
                    .entry(provider.into())
                    .or_default()
                    .insert(model.into(), entry.clone());
            }
            table.whole.insert(key.as_str().into(), entry);
        }
        table
    }
}

/// Whether `expires_at` (seconds since the Unix epoch) has come.
fn key_expired(expires_at: i64) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    now >= expires_at
}

/// The shared handle to the current [`Snapshot`]; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    current: Arc<ArcSwap<Snapshot>>,
    generations: Arc<AtomicU64>,
    /// Serialises the changes that must reach the registry in the order
    /// their source committed them (see [`Registry::ordered`]).
    order: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Registry")
            .field(&self.current.load())
            .finish()
    }
}

impl Registry {
    /// A registry of everything in `config` (see [`Snapshot::from_config`]).
    pub fn from_config(config: &Config) -> Result<Self, SnapshotError> {
        Snapshot::from_config(config).map(Registry::new)
    }

    /// A registry starting with `snapshot` (generation 1).
    pub fn new(snapshot: Snapshot) -> Self {
        snapshot.generation.store(1, Ordering::SeqCst);
        Registry {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            generations: Arc::new(AtomicU64::new(1)),
            order: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A turn to change the registry from a store, in commit order. Hold it
    /// from before the store write (or the re-read of a changed row, or a
    /// full reload) until the change is applied here: two writes then reach
    /// the registry in the order the store committed them, so a PATCH that
    /// races a DELETE can never put the deleted credential back. Requests
    /// never take it.
    pub async fn ordered(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.order).lock_owned().await
    }

    /// The snapshot in force now. Hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in a new snapshot atomically and returns its generation. Requests
    /// that already hold the old one finish on it.
    pub fn replace(&self, snapshot: Snapshot) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        snapshot.generation.store(generation, Ordering::SeqCst);
        self.current.store(Arc::new(snapshot));
        generation
    }

    /// Applies an in-place change to the snapshot in force and counts a new
    /// generation for it.
    pub fn apply<T>(&self, change: impl FnOnce(&Snapshot) -> T) -> T {
        let snapshot = self.snapshot();
        let out = change(&snapshot);
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        snapshot.generation.store(generation, Ordering::SeqCst);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_groups_sorts_and_skips_disabled() {
        let mut a = Credential::for_tests("a", "ws", "openai");
        a.sort_order = 2;
        let mut b = Credential::for_tests("b", "ws", "openai");
        b.sort_order = 1;
        let mut off = Credential::for_tests("off", "ws", "openai");
        off.disabled = true;
        let other = Credential::for_tests("o", "ws2", "openai");
        let snap = Snapshot::build(
            Settings::default(),
            Providers::builtins(),
            vec![],
            vec![a, b, off, other],
        )
        .unwrap();
        let ids: Vec<String> = snap
            .candidates("ws", "openai")
            .unwrap()
            .iter()
            .map(|c| c.record.id.clone())
            .collect();
        assert_eq!(ids, ["b", "a"]);
        assert!(snap.candidates("ws", "anthropic").is_none());
        assert_eq!(snap.credentials().len(), 4);
    }

    /// Writes in place keep every workspace's group equal to a snapshot
    /// built from scratch, global credentials included.
    #[test]
    fn in_place_writes_with_global_credentials_match_a_fresh_build() {
        fn global(id: &str, order: i64) -> Credential {
            let mut c = Credential::for_tests(id, "-", "openai");
            c.workspace_id = None;
            c.sort_order = order;
            c
        }
        fn own(id: &str, ws: &str, order: i64) -> Credential {
            let mut c = Credential::for_tests(id, ws, "openai");
            c.sort_order = order;
            c
        }
        type Step = fn(&Snapshot, &mut Vec<Credential>);
        let ids = |snap: &Snapshot, ws: &str| -> Vec<String> {
            snap.candidates(ws, "openai")
                .map(|g| g.iter().map(|c| c.record.id.clone()).collect())
                .unwrap_or_default()
        };
        let build = |creds: Vec<Credential>| {
            Snapshot::build(Settings::default(), Providers::builtins(), vec![], creds).unwrap()
        };
        let snap = build(vec![own("a1", "a", 1), own("b1", "b", 3)]);
        let mut now = vec![own("a1", "a", 1), own("b1", "b", 3)];
        let steps: [Step; 6] = [
            |s, v| {
                s.upsert_credential(global("g1", 2)).unwrap();
                v.push(global("g1", 2));
            },
            |s, v| {
                s.upsert_credential(global("g0", 0)).unwrap();
                v.push(global("g0", 0));
            },
            // A workspace credential becomes global, and back.
            |s, v| {
                s.upsert_credential(global("a1", 5)).unwrap();
                v.retain(|c| c.id != "a1");
                v.push(global("a1", 5));
            },
            |s, v| {
                s.upsert_credential(own("a1", "a", 1)).unwrap();
                v.retain(|c| c.id != "a1");
                v.push(own("a1", "a", 1));
            },
            |s, v| {
                assert!(s.remove_credential("g1").unwrap());
                v.retain(|c| c.id != "g1");
            },
            |s, v| {
                assert!(s.remove_credential("b1").unwrap());
                v.retain(|c| c.id != "b1");
            },
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&snap, &mut now);
            let fresh = build(now.clone());
            for ws in ["a", "b", "c"] {
                assert_eq!(ids(&snap, ws), ids(&fresh, ws), "step {i}, workspace {ws}");
            }
        }
        assert_eq!(ids(&snap, "a"), ["g0", "a1"]);
        assert_eq!(ids(&snap, "c"), ["g0"]);
    }

    #[test]
    fn the_shared_tier_is_its_workspaces_own_credentials_kept_current() {
        let shared = SharedTier {
            workspace_id: "platform".into(),
            workspaces: Some(["a".into()].into_iter().collect()),
        };
        let mut global = Credential::for_tests("g", "-", "openai");
        global.workspace_id = None;
        let snap = Snapshot::build_tiers(
            Settings::default(),
            Providers::builtins(),
            Some(shared),
            vec![],
            vec![Credential::for_tests("p1", "platform", "openai"), global],
        )
        .unwrap();
        let shared_ids = |ws: &str| -> Vec<String> {
            snap.plan(ws, "openai")
                .shared
                .map(|g| g.iter().map(|c| c.record.id.clone()).collect())
                .unwrap_or_default()
        };
        assert_eq!(shared_ids("a"), ["p1"], "its own, not the global one");
        assert!(shared_ids("b").is_empty(), "b is not in shared.workspaces");
        assert!(shared_ids("platform").is_empty(), "never its own workspace");
        snap.upsert_credential(Credential::for_tests("p2", "platform", "openai"))
            .unwrap();
        assert_eq!(shared_ids("a"), ["p1", "p2"]);
        assert!(snap.remove_credential("p1").unwrap());
        assert!(snap.remove_credential("p2").unwrap());
        assert!(shared_ids("a").is_empty());
    }

    #[test]
    fn snapshot_refuses_duplicates_and_unknown_providers() {
        let dup = vec![
            Credential::for_tests("a", "ws", "openai"),
            Credential::for_tests("a", "ws2", "openai"),
        ];
        assert!(matches!(
            Snapshot::build(Settings::default(), Providers::builtins(), vec![], dup),
            Err(SnapshotError::DuplicateId { .. })
        ));
        let unknown = vec![Credential::for_tests("a", "ws", "nope")];
        assert!(matches!(
            Snapshot::build(Settings::default(), Providers::builtins(), vec![], unknown),
            Err(SnapshotError::Compile(CompileError::UnknownProvider { .. }))
        ));
        let azure = vec![Credential::for_tests("a", "ws", "azure")];
        assert!(matches!(
            Snapshot::build(Settings::default(), Providers::builtins(), vec![], azure),
            Err(SnapshotError::Compile(CompileError::NoUpstream { .. }))
        ));
    }

    #[test]
    fn disabled_and_unknown_keys_look_the_same() {
        let on = KeyHash::of(b"on");
        let off = KeyHash::of(b"off");
        let key = |hash: KeyHash, disabled| {
            ApiKey::validate(crate::domain::ApiKeyFields {
                hash: hash.to_hex(),
                workspace_id: "ws".into(),
                user_id: "u".into(),
                name: None,
                disabled,
                ..Default::default()
            })
            .unwrap()
        };
        let snap = Snapshot::build(
            Settings::default(),
            Providers::default(),
            vec![key(on, false), key(off, true)],
            vec![],
        )
        .unwrap();
        assert_eq!(snap.principal(&on).unwrap().key_hash, Some(on));
        assert_eq!(snap.principal(&off), None);
        assert_eq!(snap.principal(&KeyHash::of(b"none")), None);
    }

    fn ids(snap: &Snapshot, ws: &str, provider: &str) -> Vec<String> {
        snap.candidates(ws, provider)
            .map(|g| g.iter().map(|c| c.record.id.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn in_place_changes_rebuild_only_their_groups() {
        let snap = Snapshot::build(
            Settings::default(),
            Providers::builtins(),
            vec![],
            vec![Credential::for_tests("a", "ws", "openai")],
        )
        .unwrap();
        let held = snap.candidates("ws", "openai").unwrap();
        let mut b = Credential::for_tests("b", "ws", "openai");
        b.sort_order = -1;
        snap.upsert_credential(b.clone()).unwrap();
        assert_eq!(ids(&snap, "ws", "openai"), ["b", "a"]);
        assert_eq!(held.len(), 1, "a request's group is not changed under it");
        // Moving a credential to another provider rebuilds both groups.
        b.provider = "anthropic".into();
        snap.upsert_credential(b.clone()).unwrap();
        assert_eq!(ids(&snap, "ws", "openai"), ["a"]);
        assert_eq!(ids(&snap, "ws", "anthropic"), ["b"]);
        // Disabling keeps the record, drops the candidate.
        b.disabled = true;
        snap.upsert_credential(b).unwrap();
        assert!(snap.candidates("ws", "anthropic").is_none());
        assert!(snap.credential("b").is_some());
        assert!(snap.remove_credential("a").unwrap());
        assert!(!snap.remove_credential("a").unwrap());
        assert!(snap.candidates("ws", "openai").is_none());
        assert_eq!(snap.credential_count(), 1);
        // A bad record is refused and changes nothing.
        let bad = Credential::for_tests("c", "ws", "nope");
        assert!(snap.upsert_credential(bad).is_err());
        assert_eq!(snap.credential_count(), 1);
    }

    #[test]
    fn concurrent_in_place_changes_lose_nothing() {
        let snap = Arc::new(
            Snapshot::build(Settings::default(), Providers::builtins(), vec![], vec![]).unwrap(),
        );
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let snap = Arc::clone(&snap);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let c = Credential::for_tests(&format!("c{t}-{i}"), "ws", "openai");
                        snap.upsert_credential(c).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ids(&snap, "ws", "openai").len(), 200);
    }

    #[test]
    fn registry_apply_counts_generations() {
        let reg = Registry::new(
            Snapshot::build(Settings::default(), Providers::builtins(), vec![], vec![]).unwrap(),
        );
        reg.apply(|s| s.upsert_credential(Credential::for_tests("a", "ws", "openai")))
            .unwrap();
        assert_eq!(reg.snapshot().generation(), 2);
        assert_eq!(ids(&reg.snapshot(), "ws", "openai"), ["a"]);
    }

    #[test]
    fn registry_swaps_and_old_snapshot_stays_valid() {
        let reg = Registry::new(
            Snapshot::build(Settings::default(), Providers::default(), vec![], vec![]).unwrap(),
        );
        let held = reg.snapshot();
        assert_eq!(held.generation(), 1);
        let g = reg.replace(
            Snapshot::build(Settings::default(), Providers::builtins(), vec![], vec![]).unwrap(),
        );
        assert_eq!(g, 2);
        assert_eq!(reg.snapshot().generation(), 2);
        assert_eq!(held.provider_count(), 0);
        assert!(reg.snapshot().provider_count() > 0);
    }

    fn test_key(name: &str) -> ApiKey {
        ApiKey::validate(crate::domain::ApiKeyFields {
            hash: KeyHash::of(name.as_bytes()).to_hex(),
            workspace_id: "ws".into(),
            user_id: "u".into(),
            ..Default::default()
        })
        .unwrap()
    }

    /// A gateway key deleted in place, or gone with a reload, leaves no
    /// usage book behind; nor a credential its last use.
    #[test]
    fn a_removed_key_or_credential_frees_what_the_ledger_kept_of_it() {
        let (a, b) = (test_key("a"), test_key("b"));
        let (ha, hb) = (a.hash, b.hash);
        let creds = vec![
            Credential::for_tests("c1", "ws", "openai"),
            Credential::for_tests("c2", "ws", "openai"),
        ];
        let snap = Snapshot::build(
            Settings::default(),
            Providers::builtins(),
            vec![a, b],
            creds,
        )
        .unwrap();
        let ledger = Arc::clone(snap.ledger());
        ledger.book(ha);
        ledger.book(hb);
        for (id, at_ms) in [("c1", 5), ("c2", 6)] {
            let entry = crate::ledger::Entry {
                day: 0,
                workspace: "ws".into(),
                key: None,
                credential: id.into(),
                provider: "openai".into(),
                tier: crate::policy::Tier::Byok,
                model: "other".into(),
            };
            let tokens = crate::ledger::Tokens::default();
            ledger.record(entry, None, tokens, 0.0, (false, false), at_ms);
        }
        ledger.drain(|_, _| {});
        assert_eq!(ledger.books(), 2);
        assert!(snap.remove_api_key(&ha));
        assert_eq!(ledger.books(), 1, "the deleted key's book is freed");
        assert!(ledger.peek_book(&ha).is_none());
        assert!(snap.remove_credential("c1").unwrap());
        assert_eq!(ledger.credential_last_used_ms("c1"), None);
        assert_eq!(ledger.credential_last_used_ms("c2"), Some(6));
        // A reload without the other key and credential.
        let config = Config::parse("").unwrap();
        let next = Snapshot::following(&snap, &config, vec![], vec![]).unwrap();
        assert!(Arc::ptr_eq(next.ledger(), &ledger));
        assert_eq!(
            ledger.books(),
            0,
            "the reload's removed key's book is freed"
        );
        assert_eq!(ledger.credential_last_used_ms("c2"), None);
    }
}
