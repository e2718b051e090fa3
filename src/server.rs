//! The deployable proxy: [`ByokLayer`] over a [`Forwarder`], served by hyper,
//! with `/healthz`, config reload (SIGHUP and file changes) and a graceful drain
//! on SIGTERM/SIGINT.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tower::{Layer, Service};

use arc_swap::ArcSwap;
use secrecy::ExposeSecret;

use crate::config::{self, Config, ConfigError};
use crate::store::{Change, Store, StoreError};
use crate::Keyring;
use crate::{
    Admin, ByokBody, ByokLayer, ByokService, Forwarder, ForwarderOptions, Metrics, Registry,
};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config is unreadable or invalid.
    #[error("invalid config {path}:\n{source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ConfigError,
    },
    /// The registry could not be built from a valid config.
    #[error("invalid config {path}: {source}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: crate::SnapshotError,
    },
    /// The credential store could not be opened or read.
    #[error("{0}")]
    Store(String),
    /// A listener or signal handler could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

type ProxyService = ByokService<Forwarder>;

/// The proxy's outermost service: `/healthz`, else the BYOK stack.
#[derive(Clone)]
struct Front {
    proxy: ProxyService,
}

impl hyper::service::Service<Request<Incoming>> for Front {
    type Response = Response<ByokBody<Incoming>>;
    type Error = Infallible;
    type Future = FrontFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.uri().path() == "/healthz" && matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut res = Response::new(ByokBody::full(Bytes::from_static(b"{\"status\":\"ok\"}")));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return FrontFuture::Ready { res: Some(res) };
        }
        // No poll_ready first: the layer and the forwarder are always ready
        // (the forwarder's pool waits inside the call). The layer's future is
        // already boxed; it is not boxed again.
        FrontFuture::Proxy {
            fut: self.proxy.clone().call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Front`]'s future: `/healthz`'s answer, or the BYOK stack's.
    #[project = FrontProj]
    enum FrontFuture {
        Ready { res: Option<Response<ByokBody<Incoming>>> },
        Proxy { #[pin] fut: <ProxyService as tower::Service<Request<Incoming>>>::Future },
    }
}

impl Future for FrontFuture {
    type Output = Result<Response<ByokBody<Incoming>>, Infallible>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            FrontProj::Ready { res } => std::task::Poll::Ready(Ok(res
                .take()
                .unwrap_or_else(|| crate::Rejection::NotFound.into_response()))),
            FrontProj::Proxy { fut } => fut.poll(cx).map(|result| match result {
                Ok(res) => Ok(res),
                // The layer turns every failure into a response; keep a 502
                // should the forwarder's call ever fail regardless.
                Err(_) => Ok(crate::Rejection::UpstreamUnreachable.into_response()),
            }),
        }
    }
}

/// Loads the config at `path` and serves until SIGTERM or SIGINT, then drains.
pub async fn run(path: &Path) -> Result<(), ServeError> {
    let text = config::read(path).map_err(|source| ServeError::Config {
        path: path.to_owned(),
        source,
    })?;
    let config = Config::parse(&text).map_err(|source| ServeError::Config {
        path: path.to_owned(),
        source,
    })?;
    let keyring = if config.store.is_database() {
        Some(Keyring::from_env().map_err(|e| ServeError::Store(e.to_string()))?)
    } else {
        None
    };
    let store = Arc::new(
        Store::open(&config.store.url, keyring)
            .await
            .map_err(|e| ServeError::Store(format!("store.url ({}): {e}", config.store.kind())))?,
    );
    let store_kind = config.store.kind();
    let (config, snapshot) = load_snapshot(config, &store, false)
        .await
        .map_err(|source| match source {
            LoadError::Snapshot(source) => ServeError::Snapshot {
                path: path.to_owned(),
                source,
            },
            LoadError::Store(e) => ServeError::Store(format!("store.url ({store_kind}): {e}")),
            LoadError::ShuttingDown => ServeError::Store("shutting down".into()),
        })?;
    // From here on the registry holds the keys and credentials; the config
    // keeps its settings only.
    let registry = Registry::new(snapshot);
    let current = Arc::new(ArcSwap::from_pointee(config.clone()));
    tracing::info!(store = config.store.kind(), "credential store opened");
    let io_err = |what: String| move |source| ServeError::Io { what, source };

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(io_err(format!("cannot listen on {}", config.server.listen)))?;
    let local = listener
        .local_addr()
        .map_err(io_err("cannot read the listening address".into()))?;

    let forwarder = Forwarder::new(ForwarderOptions {
        connect_timeout: config.server.connect_timeout,
        extra_roots: config.server.upstream_roots.clone(),
        ..ForwarderOptions::default()
    })
    .map_err(|e| ServeError::Io {
        what: "cannot set up upstream TLS".into(),
        source: std::io::Error::other(e),
    })?;
    let metrics = Arc::new(Metrics::new());
    metrics.observe_snapshot(&registry.snapshot());
    let front = Front {
        proxy: ByokLayer::new(registry.clone())
            .with_metrics(metrics.clone())
            .layer(forwarder),
    };

    // The admin API listens apart from the proxy: the proxy port never serves it.
    let admin = match &config.admin {
        Some(a) => {
            let listener = TcpListener::bind(a.listen).await.map_err(io_err(format!(
                "cannot listen on {} (admin.listen)",
                a.listen
            )))?;
            let local = listener
                .local_addr()
                .map_err(io_err("cannot read the admin listening address".into()))?;
            let service = Admin::new(
                registry.clone(),
                metrics.clone(),
                a.management_key_hashes.iter().copied(),
                store.clone(),
                config.store.default_workspace_id.clone(),
            );
            tracing::info!("admin API listening on http://{local}");
            Some((listener, service))
        }
        None => None,
    };

    let mut term =
        signal(SignalKind::terminate()).map_err(io_err("cannot handle SIGTERM".into()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("cannot handle SIGINT".into()))?;
    let hup = signal(SignalKind::hangup()).map_err(io_err("cannot handle SIGHUP".into()))?;
    let targets = Reload {
        registry: registry.clone(),
        metrics: metrics.clone(),
        admin: admin.as_ref().map(|(_, svc)| svc.clone()),
        started_with: config.clone(),
        current: current.clone(),
        store: store.clone(),
    };
    if matches!(*store, Store::Postgres(_)) {
        tokio::spawn(follow_store(targets.clone()));
    }
    // The watch starts before the proxy says it is listening, so a change
    // written right after start-up is never missed.
    let (tx, changes) = mpsc::channel::<()>(1);
    let watcher = watch(path, tx);
    tokio::spawn(reload_loop(
        path.to_owned(),
        targets,
        digest(&text),
        hup,
        changes,
        watcher,
    ));
    drop(text);

    let (api_keys, credentials) = {
        let s = registry.snapshot();
        (s.api_key_count(), s.credential_count())
    };
    tracing::info!(
        api_keys,
        credentials,
        "byok-proxy listening on http://{local}"
    );

    // tokio's timer driver parks without a timeout while no timer is due, so
    // a request that arms one (hyper's header-read timeout, the first-byte
    // timeout) has to wake it with an eventfd write. A coarse tick keeps a
    // near timer registered: arming a later one then wakes nothing.
    let ticker = tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
        }
    });
    let graceful = GracefulShutdown::new();
    let accept_admin = || async {
        match &admin {
            Some((listener, _)) => listener.accept().await,
            None => std::future::pending().await,
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_connection(stream, peer, front.clone(), &graceful),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            accepted = accept_admin() => match (accepted, &admin) {
                (Ok((stream, peer)), Some((_, svc))) => serve_connection(stream, peer, svc.clone(), &graceful),
                (Err(e), _) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (Ok(_), None) => {}
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    drop(listener);
    drop(admin);
    ticker.abort();
    let drain = config.server.drain;
    tracing::info!(
        drain_secs = drain.as_secs_f64(),
        "shutting down: no new connections, draining in-flight requests"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("drained; bye"),
        _ = tokio::time::sleep(drain) => tracing::warn!("drain time is up; closing the remaining connections"),
    }
    Ok(())
}

fn serve_connection<S, B>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    service: S,
    graceful: &GracefulShutdown,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<crate::BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<crate::BoxError>,
{
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}

/// Device, inode, size and modification time of the file behind `path`
/// (symlinks followed): changes with every rewrite, rename-into-place or
/// ConfigMap swap, without reading the file.
fn file_identity(path: &Path) -> Option<(u64, u64, u64, Option<std::time::SystemTime>)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()))
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// What a reload updates.
#[derive(Clone)]
struct Reload {
    registry: Registry,
    metrics: Arc<Metrics>,
    admin: Option<Admin>,
    started_with: Config,
    /// The config in force (replaced on every successful reload).
    current: Arc<ArcSwap<Config>>,
    store: Arc<Store>,
}

/// Why a snapshot could not be made.
enum LoadError {
    Snapshot(crate::SnapshotError),
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
/// the config, which keeps its settings only. `serving`: requests are being
/// served, so the build runs off the worker threads; before that it runs
/// here, where the parse's garbage is (freed memory it can reuse).
async fn load_snapshot(
    config: Config,
    store: &Store,
    serving: bool,
) -> Result<(Config, crate::Snapshot), LoadError> {
    let contents = if store.is_writable() {
        Some(store.load().await.map_err(LoadError::Store)?)
    } else {
        None
    };
    let build = move || match contents {
        None => config.into_snapshot().map_err(LoadError::Snapshot),
        Some(contents) => {
            let keys = contents.api_keys.iter().map(|k| k.to_api_key()).collect();
            let creds = contents
                .credentials
                .iter()
                .map(|c| c.to_credential())
                .collect::<Result<Vec<_>, _>>()
                .map_err(LoadError::Store)?;
            let config = config.into_settings();
            let snapshot = config
                .snapshot_with(keys, creds)
                .map_err(LoadError::Snapshot)?;
            Ok((config, snapshot))
        }
    };
    if serving {
        off_workers(build).await.ok_or(LoadError::ShuttingDown)?
    } else {
        build()
    }
}

/// Runs CPU-heavy work on the blocking pool: reading, parsing, building or
/// freeing 100 000 credentials takes a second or more, which on a worker
/// thread would stall every request scheduled behind it. `None` when the
/// runtime shuts down first.
async fn off_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
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
fn swap_in(registry: &Registry, snapshot: crate::Snapshot) -> u64 {
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

/// Postgres: applies other replicas' writes as they are notified, and
/// resynchronises fully after every reconnection.
async fn follow_store(t: Reload) {
    let Store::Postgres(pg) = &*t.store else {
        return;
    };
    let on_change = |change: Change| {
        let t = t.clone();
        async move {
            let Store::Postgres(pg) = &*t.store else {
                return Ok(());
            };
            let outcome = match &change {
                Change::Credential(id) => match pg.credential(id).await? {
                    Some(rec) => match rec.to_credential() {
                        Ok(cred) => t
                            .registry
                            .apply(|s| s.upsert_credential(cred))
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    None => t
                        .registry
                        .apply(|s| s.remove_credential(id))
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                },
                Change::ApiKey(hash) => {
                    match pg.api_key(*hash).await? {
                        Some(rec) => t.registry.apply(|s| s.upsert_api_key(rec.to_api_key())),
                        None => {
                            t.registry.apply(|s| s.remove_api_key(hash));
                        }
                    }
                    Ok(())
                }
            };
            match outcome {
                Ok(()) => {
                    t.metrics.observe_snapshot(&t.registry.snapshot());
                    tracing::debug!(?change, "applied a change from the store");
                }
                // A row this replica cannot use is skipped, not retried forever.
                Err(e) => {
                    tracing::error!(?change, error = %e, "cannot apply a change from the store")
                }
            }
            Ok(())
        }
    };
    let on_resync = || {
        let t = t.clone();
        async move {
            let config = Config::clone(&t.current.load_full());
            match load_snapshot(config, &t.store, true).await {
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
    pg.follow(on_change, on_resync).await;
}

/// Reloads on SIGHUP (always) and when the file's content changes (watched
/// through its directory, so editors' rename-into-place and Kubernetes
/// ConfigMap symlink swaps are seen). A bad file is logged and the old
/// snapshot stays in force.
async fn reload_loop(
    path: PathBuf,
    targets: Reload,
    mut last_seen: [u8; 32],
    mut hup: tokio::signal::unix::Signal,
    mut changes: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
) {
    // The directory is watched, so events come for every file in it (a log,
    // a SQLite database): the file is only read when its identity changed.
    let mut last_identity = None;
    loop {
        let forced = tokio::select! {
            Some(()) = hup.recv() => true,
            Some(()) = changes.recv() => false,
            else => return,
        };
        let identity = file_identity(&path);
        if !forced && identity.is_some() && identity == last_identity {
            continue;
        }
        last_identity = identity;
        let started = std::time::Instant::now();
        // Reading, hashing and parsing a large file are done off the workers.
        let file = path.clone();
        let read = off_workers(move || {
            let text = config::read(&file)?;
            let seen = digest(&text);
            let parsed = (forced || seen != last_seen).then(|| Config::parse(&text));
            Ok::<_, ConfigError>((seen, parsed))
        })
        .await;
        let (seen, parsed) = match read {
            None => return,
            Some(Ok(read)) => read,
            Some(Err(e)) => {
                targets.metrics.reload(false);
                tracing::error!(error = %e, generation = targets.registry.snapshot().generation(), "config reload failed; keeping the config in force");
                continue;
            }
        };
        last_seen = seen;
        let Some(parsed) = parsed else {
            continue; // the same bytes as the config in force
        };
        let outcome = match parsed {
            Ok(config) => load_snapshot(config, &targets.store, true)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((config, snapshot)) => {
                let generation = swap_in(&targets.registry, snapshot);
                targets.metrics.reload(true);
                targets
                    .metrics
                    .observe_snapshot(&targets.registry.snapshot());
                if let Some(admin) = &targets.admin {
                    // Removing [admin] revokes every management key at once;
                    // the listener itself goes with the next restart.
                    let keys = config
                        .admin
                        .as_ref()
                        .map(|a| a.management_key_hashes.clone());
                    admin.set_management_keys(keys.unwrap_or_default());
                }
                let snapshot = targets.registry.snapshot();
                tracing::info!(
                    generation,
                    api_keys = snapshot.api_key_count(),
                    credentials = snapshot.credential_count(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "config reloaded"
                );
                let before = &targets.started_with;
                if config.store.url.expose_secret() != before.store.url.expose_secret() {
                    tracing::warn!("store.url takes effect on restart only");
                }
                if config.server.listen != before.server.listen
                    || config.server.connect_timeout != before.server.connect_timeout
                    || config.server.drain != before.server.drain
                    || config.server.upstream_roots != before.server.upstream_roots
                    || config.admin.as_ref().map(|a| a.listen)
                        != before.admin.as_ref().map(|a| a.listen)
                {
                    tracing::warn!("server.listen, server.connect_timeout_secs, server.drain_secs, server.upstream_ca_file and admin.listen take effect on restart only");
                }
                // A resync from the store uses the config now in force.
                targets.current.store(Arc::new(config));
            }
            Err(e) => {
                targets.metrics.reload(false);
                tracing::error!(
                    generation = targets.registry.snapshot().generation(),
                    "config reload failed; keeping the config in force:\n{e}"
                );
            }
        }
    }
}

/// Watches the config's directory; `None` (with a warning) where that fails, in
/// which case SIGHUP still reloads.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let tx = Arc::new(tx);
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}
