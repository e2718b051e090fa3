//! Reloads: SIGHUP and changes of the config file build a whole new snapshot
//! off the worker threads and swap it in; a bad file is logged and the old
//! snapshot stays in force. Also the store's full resync (Postgres).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::admin::Admin;
use crate::config::{self, Config, ConfigError};
use crate::domain::{Credential, CredentialFields};
use crate::metrics::Metrics;
use crate::registry::{Registry, Snapshot, SnapshotError};
use crate::store::{self, Store, StoreError};

/// Device, inode, size and modification time of the file behind `path`
/// (symlinks followed): changes with every rewrite, rename-into-place or
/// ConfigMap swap, without reading the file.
fn file_identity(path: &Path) -> Option<(u64, u64, u64, Option<std::time::SystemTime>)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()))
}

pub(super) fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// What a reload updates.
#[derive(Clone)]
pub(super) struct Reload {
    pub(super) registry: Registry,
    pub(super) metrics: Arc<Metrics>,
    pub(super) admin: Option<Admin>,
    pub(super) started_with: Config,
    /// The config in force (replaced on every successful reload).
    pub(super) current: Arc<ArcSwap<Config>>,
    pub(super) store: Arc<Store>,
}

/// Why a snapshot could not be made.
pub(super) enum LoadError {
    Snapshot(SnapshotError),
    Store(StoreError),
    /// The runtime is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Snapshot(e) => e.fmt(f),
            LoadError::Store(e) => e.fmt(f),
            LoadError::ShuttingDown => f.write_str("shutting down"),
        }
    }
}

/// The registry snapshot for `config`: its own keys and credentials on the
/// file store (taken, not copied), the database's otherwise. Comes back with
/// the config, which keeps its settings only. `before`: the snapshot in
/// force, on a reload: the new one keeps its credentials' health, and the
/// build runs off the worker threads (requests are being served); at
/// start-up it runs here, where the parse's garbage is (freed memory it can
/// reuse).
pub(super) async fn load_snapshot(
    config: Config,
    store: &Store,
    before: Option<Arc<Snapshot>>,
) -> Result<(Config, Snapshot), LoadError> {
    let serving = before.is_some();
    let contents = if store.is_writable() {
        Some(store.load().await.map_err(LoadError::Store)?)
    } else {
        None
    };
    let build = move || {
        let mut config = config;
        let (keys, creds) = match contents {
            None => (
                std::mem::take(&mut config.api_keys),
                std::mem::take(&mut config.credentials),
            ),
            Some(contents) => {
                // A row this replica cannot use (an unknown provider after a
                // rolling deploy, a secret that does not open) is left out
                // and logged: it serves nothing here, and the rest still
                // loads.
                let keys = contents.api_keys.into_iter().map(store::api_key);
                let keys = keys.filter_map(usable).collect();
                let creds = stored_credentials(contents.credentials, &config, before.as_deref())?;
                (keys, creds)
            }
        };
        let config = config.into_settings();
        // A reload keeps the health of the credentials that stay.
        let snapshot = match &before {
            Some(before) => Snapshot::following(before, &config, keys, creds),
            None => Snapshot::with_entries(&config, keys, creds),
        }
        .map_err(LoadError::Snapshot)?;
        Ok((config, snapshot))
    };
    if serving {
        off_workers(build).await.ok_or(LoadError::ShuttingDown)?
    } else {
        build()
    }
}

/// The stored credentials this replica can use. A secret sealed under a
/// master key it does not have stops a start (the key is missing from its
/// environment: `LoadError::Store` names the credential and the key id);
/// while serving, the version in force keeps its secret if the row still
/// binds it to the same place and principals ([`store::seal::kept_in_memory`]),
/// and is left out otherwise.
fn stored_credentials(
    rows: Vec<Result<CredentialFields, StoreError>>,
    config: &Config,
    before: Option<&Snapshot>,
) -> Result<Vec<Credential>, LoadError> {
    let providers = &config.providers;
    let mut creds = Vec::with_capacity(rows.len());
    for row in rows {
        let cred = match (row, before) {
            (Err(e), None) if e.is_unknown_key() => return Err(LoadError::Store(e)),
            (Err(e), Some(before)) if e.is_unknown_key() => {
                let id = match &e {
                    StoreError::Sealed { id, .. } => id.clone(),
                    _ => String::new(),
                };
                let in_force = before.credential(&id);
                store::seal::kept_in_memory(e, in_force.as_deref(), providers)
            }
            (row, _) => row.and_then(|c| store::credential(c, providers)),
        };
        creds.extend(usable(cred));
    }
    Ok(creds)
}

/// A stored row's record, or `None` (logged) when this replica cannot use it.
fn usable<T>(row: Result<T, StoreError>) -> Option<T> {
    row.map_err(|e| tracing::error!(error = %e, "a stored row is left out"))
        .ok()
}

/// Runs CPU-heavy work on the blocking pool: reading, parsing, building or
/// freeing 100 000 credentials takes a second or more, which on a worker
/// thread would stall every request scheduled behind it. `None` when the
/// runtime shuts down first.
pub(super) async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(out) => Some(out),
        Err(e) => match e.try_into_panic() {
            // A panic in the work is a bug: let it be one here too.
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_cancelled) => None,
        },
    }
}

/// Swaps in a new snapshot, then drops the old one on the blocking pool once
/// the last request that started on it is done with it: freeing 100 000
/// credentials takes hundreds of milliseconds.
pub(super) fn swap_in(registry: &Registry, snapshot: Snapshot) -> u64 {
    let mut old = registry.snapshot();
    let generation = registry.replace(snapshot);
    tokio::spawn(async move {
        loop {
            match Arc::try_unwrap(old) {
                Ok(last) => {
                    off_workers(move || drop(last)).await;
                    return;
                }
                // Requests in flight still hold it (until their response head).
                Err(shared) => old = shared,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    generation
}

/// Reloads on SIGHUP and when the file's content changes (watched through
/// its directory, so editors' rename-into-place and Kubernetes ConfigMap
/// symlink swaps are seen). A bad file is logged and the old snapshot stays
/// in force. Never silently drops everything:
///
/// - a file event waits for the file to settle (its size and mtime stop
///   changing), so a writer still at work is not read half-way;
/// - an empty file is refused, however the reload came;
/// - a file event whose config would remove every gateway key and credential
///   is refused: a SIGHUP applies it (the operator means it);
/// - a SIGHUP with the bytes in force does not parse them again.
pub(super) async fn reload_loop(
    path: PathBuf,
    targets: Reload,
    mut in_force: [u8; 32],
    mut hup: tokio::signal::unix::Signal,
    mut changes: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
) {
    // The directory is watched, so events come for every file in it (a log,
    // a SQLite database): the file is only read when its identity changed.
    let mut last_identity = None;
    // The bytes last read on a file event, applied or not: the same bytes are
    // not parsed again for another event.
    let mut last_seen = in_force;
    loop {
        let forced = tokio::select! {
            Some(()) = hup.recv() => true,
            Some(()) = changes.recv() => false,
            else => return,
        };
        if !forced {
            settle(&path).await;
        }
        let identity = file_identity(&path);
        if !forced && identity.is_some() && identity == last_identity {
            continue;
        }
        last_identity = identity;
        let started = std::time::Instant::now();
        // Reading, hashing and parsing a large file are done off the workers.
        let file = path.clone();
        let known = if forced { in_force } else { last_seen };
        let read = off_workers(move || {
            let text = config::read(&file)?;
            let seen = digest(&text);
            let parsed = match (seen == known, text.trim().is_empty()) {
                (true, _) => Parsed::Unchanged,
                (false, true) => Parsed::Empty,
                (false, false) => Parsed::Config(Box::new(Config::parse(&text))),
            };
            Ok::<_, ConfigError>((seen, parsed))
        })
        .await;
        let (seen, parsed) = match read {
            None => return,
            Some(Ok(read)) => read,
            Some(Err(e)) => {
                targets.failed(e);
                continue;
            }
        };
        last_seen = seen;
        let parsed = match parsed {
            Parsed::Unchanged => {
                if forced {
                    tracing::info!("config unchanged; nothing to reload");
                }
                continue;
            }
            Parsed::Empty => {
                targets.failed("the config file is empty (truncated?): it would remove every gateway key, credential and management key");
                continue;
            }
            Parsed::Config(parsed) => *parsed,
        };
        if let Ok(config) = &parsed {
            if !forced && targets.removes_everything(config) {
                targets.failed("the new config removes every gateway key and credential; send SIGHUP to apply it anyway");
                continue;
            }
        }
        // A database's rows are read and swapped in one turn with the admin
        // API's writes (see Registry::ordered).
        let _order = targets.registry.ordered().await;
        let outcome = match parsed {
            Ok(config) => load_snapshot(config, &targets.store, Some(targets.registry.snapshot()))
                .await
                .map_err(|e| Failed::Load(e.to_string())),
            Err(e) => Err(Failed::File(e.to_string())),
        };
        match outcome {
            Ok((config, snapshot)) => {
                in_force = seen;
                targets.apply(config, snapshot, started);
            }
            Err(Failed::File(e)) => targets.failed(e),
            Err(Failed::Load(e)) => {
                // A valid file the store could not be read for: the next
                // event (or a SIGHUP) tries the same bytes again.
                last_seen = in_force;
                last_identity = None;
                targets.failed(e);
            }
        }
    }
}

/// Why a reload did not apply.
enum Failed {
    /// The file is not a valid config.
    File(String),
    /// The config is valid, but its snapshot could not be built.
    Load(String),
}

/// What a reload read.
enum Parsed {
    /// The bytes already known.
    Unchanged,
    /// Nothing but white space.
    Empty,
    /// A config, or why it is not one.
    Config(Box<Result<Config, ConfigError>>),
}

/// Waits until the file's size and mtime stop changing (100 ms apart), for at
/// most 2 s: a writer that is still at work is not read half-way.
pub(super) async fn settle(path: &Path) {
    let mut last = file_identity(path);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = file_identity(path);
        if now == last {
            return;
        }
        last = now;
    }
}

impl Reload {
    /// Whether `config` (from the file store) would leave the proxy with no
    /// gateway key and no credential where it has some now.
    fn removes_everything(&self, config: &Config) -> bool {
        let snapshot = self.registry.snapshot();
        !self.store.is_writable()
            && config.counts() == (0, 0)
            && snapshot.api_key_count() + snapshot.credential_count() > 0
    }

    /// Puts a reloaded config in force: its snapshot, its management keys,
    /// and the config a store resync will use.
    fn apply(&self, config: Config, snapshot: Snapshot, started: std::time::Instant) {
        let generation = swap_in(&self.registry, snapshot);
        self.metrics.reload(true);
        self.metrics.observe_snapshot(&self.registry.snapshot());
        if let Some(admin) = &self.admin {
            // Removing [admin] revokes every management key at once;
            // the listener itself goes with the next restart.
            admin.set_access(crate::admin::Access::new(
                config.admin.as_ref(),
                config.shared.as_ref().map(|s| &*s.workspace_id),
            ));
        }
        let snapshot = self.registry.snapshot();
        tracing::info!(
            generation,
            api_keys = snapshot.api_key_count(),
            credentials = snapshot.credential_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "config reloaded"
        );
        warn_restart_only(&self.started_with, &config);
        // A resync from the store uses the config now in force.
        self.current.store(Arc::new(config));
    }

    /// Logs a reload that failed; the config in force stays.
    fn failed(&self, e: impl std::fmt::Display) {
        self.metrics.reload(false);
        tracing::error!(
            generation = self.registry.snapshot().generation(),
            "config reload failed; keeping the config in force:\n{e}"
        );
    }
}

/// Warns about the settings a reload changed that only a restart applies.
fn warn_restart_only(before: &Config, config: &Config) {
    if config.store.url.expose_secret() != before.store.url.expose_secret() {
        tracing::warn!("store.url takes effect on restart only");
    }
    if config.store.statement_timeout != before.store.statement_timeout
        || config.store.usage_retention_days != before.store.usage_retention_days
    {
        tracing::warn!(
            "store.statement_timeout_ms and store.usage_retention_days take effect on restart only"
        );
    }
    if config.server.listen != before.server.listen
        || config.server.connect_timeout != before.server.connect_timeout
        || config.server.drain != before.server.drain
        || config.server.upstream_roots != before.server.upstream_roots
        || config.server.max_buffered_body_bytes != before.server.max_buffered_body_bytes
        || config.admin.as_ref().map(|a| a.listen) != before.admin.as_ref().map(|a| a.listen)
    {
        tracing::warn!("server.listen, server.connect_timeout_secs, server.drain_secs, server.upstream_ca_file, server.max_buffered_body_bytes and admin.listen take effect on restart only");
    }
    if config.server.tls != before.server.tls
        || config.admin.as_ref().map(|a| &a.tls) != before.admin.as_ref().map(|a| &a.tls)
    {
        tracing::warn!("a change of server.tls or admin.tls takes effect on restart only (the files named now are still followed)");
    }
}

/// Watches the config's directory; `None` (with a warning) where that fails, in
/// which case SIGHUP still reloads.
pub(super) fn watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    watch_dirs(&[path], |_| true, tx, "the config file")
}

/// Watches the directories of `files` (so that a file renamed into place, or
/// a Kubernetes ConfigMap's symlink swap, is seen), sending on `tx` for each
/// event `ours` keeps; `None` (with a warning naming `what`) where watching
/// fails: SIGHUP still reloads.
pub(super) fn watch_dirs(
    files: &[&Path],
    ours: impl Fn(&notify::Event) -> bool + Send + 'static,
    tx: mpsc::Sender<()>,
    what: &str,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access() && ours(&e)) {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch {what}; reload with SIGHUP");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = files.iter().map(|f| parent(f)).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the directory of {what}; reload with SIGHUP");
            return None;
        }
    }
    Some(watcher)
}

/// A file's directory (`.` for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Postgres: follows other replicas' writes ([`store::sync`]); after every
/// reconnection, reloads everything with the config in force.
pub(super) async fn follow_store(t: Reload) {
    let Store::Postgres(pg) = &*t.store else {
        return;
    };
    let resync = || {
        let t = t.clone();
        async move {
            // The config in force is read in the turn, so a reload that
            // finished while this waited is not undone.
            let _order = t.registry.ordered().await;
            let config = Config::clone(&t.current.load_full());
            match load_snapshot(config, &t.store, Some(t.registry.snapshot())).await {
                Ok((_, snapshot)) => {
                    let generation = swap_in(&t.registry, snapshot);
                    t.metrics.observe_snapshot(&t.registry.snapshot());
                    tracing::debug!(generation, "resynchronised from the store");
                    Ok(())
                }
                Err(LoadError::Store(e)) => Err(e),
                Err(LoadError::Snapshot(e)) => Err(StoreError::Invalid(e.to_string())),
                Err(LoadError::ShuttingDown) => {
                    Err(StoreError::Unavailable("shutting down".into()))
                }
            }
        }
    };
    store::sync::follow(pg, &t.registry, &t.metrics, resync).await;
}
