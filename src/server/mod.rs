//! The deployable proxy: [`ByokLayer`] over a [`Forwarder`], served by hyper,
//! with `/healthz`, config reload (SIGHUP and file changes, `reload`) and a
//! graceful drain on SIGTERM/SIGINT.

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
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tower::{Layer, Service};

use arc_swap::ArcSwap;

mod conn;
mod ledger;
pub mod logs;
mod reload;
mod tls;

use conn::{serve_connection, Serving, Slot};
use tls::Tls;

use reload::{digest, follow_store, load_snapshot, reload_loop, watch, LoadError, Reload};

use crate::admin::{Access, Admin};
use crate::config::{self, Config, ConfigError, ServerConfig};
pub use crate::store::crypto::CryptoError;
use crate::store::crypto::Keyring;
use crate::store::Store;
pub use crate::store::StoreError;
use crate::{
    ByokBody, ByokLayer, ByokService, Forwarder, ForwarderOptions, Metrics, Registry, SnapshotError,
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
        source: SnapshotError,
    },
    /// The master key for a database store is missing or malformed.
    #[error(transparent)]
    MasterKey(#[from] CryptoError),
    /// The credential store could not be opened or read.
    #[error("store.url ({kind}): {source}")]
    Store {
        /// `sqlite` or `postgres` (the URL itself may hold a password).
        kind: &'static str,
        /// What failed.
        source: StoreError,
    },
    /// Stopped before the proxy was serving.
    #[error("shutting down")]
    ShuttingDown,
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
    let config_error = |source| ServeError::Config {
        path: path.to_owned(),
        source,
    };
    let text = config::read(path).map_err(config_error)?;
    let config = Config::parse(&text).map_err(config_error)?;
    let store = open_store(&config).await?;
    let (config, snapshot) = first_snapshot(path, config, &store).await?;
    // From here on the registry holds the keys and credentials; the config
    // keeps its settings only.
    let registry = Registry::new(snapshot);
    tracing::info!(store = config.store.kind(), "credential store opened");
    let metrics = Arc::new(Metrics::new());
    metrics.observe_snapshot(&registry.snapshot());
    ledger::load(registry.snapshot().ledger(), &store).await;
    tokio::spawn(ledger::keep(
        registry.clone(),
        metrics.clone(),
        store.clone(),
    ));

    let listener = bind(config.server.listen, "server.listen").await?;
    let local = local_addr(&listener)?;
    let front = front(&config, &registry, &metrics)?;
    let serving = listener_serving(&config.server, config.server.tls.as_ref(), "server.tls")?;
    let admin = match &config.admin {
        Some(a) => {
            let listener = bind(a.listen, "admin.listen").await?;
            let service = Admin::new(
                registry.clone(),
                metrics.clone(),
                Access::new(Some(a), config.shared.as_ref().map(|s| &*s.workspace_id)),
                store.clone(),
                config.store.default_workspace_id.clone(),
            );
            let serving = listener_serving(&config.server, a.tls.as_ref(), "admin.tls")?;
            tracing::info!(
                "admin API listening on {}://{}",
                serving.scheme(),
                local_addr(&listener)?
            );
            Some((listener, service, serving))
        }
        None => None,
    };
    let signals = Signals::new()?;
    let targets = Reload {
        registry: registry.clone(),
        metrics: metrics.clone(),
        admin: admin.as_ref().map(|(_, svc, _)| svc.clone()),
        started_with: config.clone(),
        current: Arc::new(ArcSwap::from_pointee(config.clone())),
        store: store.clone(),
    };
    if matches!(*store, Store::Postgres(_)) {
        tokio::spawn(follow_store(targets.clone()));
        // Health changes go to the other replicas as they happen.
        let (tx, rx) = mpsc::channel(1024);
        registry.snapshot().publish_health_to(tx);
        tokio::spawn(publish_health(store.clone(), rx));
    }
    // The watch starts before the proxy says it is listening, so a change
    // written right after start-up is never missed.
    let (tx, changes) = mpsc::channel::<()>(1);
    let watcher = watch(path, tx);
    tokio::spawn(reload_loop(
        path.to_owned(),
        targets,
        digest(&text),
        signals.hup,
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
        "byok-proxy listening on {}://{local}",
        serving.scheme()
    );
    let graceful = GracefulShutdown::new();
    serve_until_signalled(
        (listener, front, serving),
        admin,
        signals.stop,
        &graceful,
        &config.server,
        &metrics,
    )
    .await;
    drain(graceful, config.server.drain).await;
    // What the last responses used is saved before the process ends.
    let _ = ledger::flush(registry.snapshot().ledger(), &metrics, &store).await;
    Ok(())
}

/// Tells the other replicas of this one's health changes, as they come
/// (SPEC §10: in force on every replica within 100 ms). A change that cannot
/// be told (the database is away) stays this replica's.
async fn publish_health(
    store: Arc<Store>,
    mut changes: mpsc::Receiver<(Arc<str>, crate::policy::health::Rest)>,
) {
    let Store::Postgres(pg) = &*store else {
        return;
    };
    while let Some((id, rest)) = changes.recv().await {
        let change = crate::store::Change::Health(id.to_string(), rest);
        if let Err(e) = pg.publish(&change).await {
            tracing::debug!(credential_id = %id, error = %e, "health change not told to the other replicas");
        }
    }
}

/// The configured store, opened (and its tables made).
async fn open_store(config: &Config) -> Result<Arc<Store>, ServeError> {
    let keyring = if config.store.is_database() {
        Some(Keyring::from_env()?)
    } else {
        None
    };
    Store::open(&config.store, keyring)
        .await
        .map(Arc::new)
        .map_err(|source| ServeError::Store {
            kind: config.store.kind(),
            source,
        })
}

/// The snapshot the proxy starts with, and the config without its entries.
async fn first_snapshot(
    path: &Path,
    config: Config,
    store: &Store,
) -> Result<(Config, crate::Snapshot), ServeError> {
    let store_kind = config.store.kind();
    load_snapshot(config, store, None)
        .await
        .map_err(|source| match source {
            LoadError::Snapshot(source) => ServeError::Snapshot {
                path: path.to_owned(),
                source,
            },
            LoadError::Store(source) => ServeError::Store {
                kind: store_kind,
                source,
            },
            LoadError::ShuttingDown => ServeError::ShuttingDown,
        })
}

async fn bind(addr: SocketAddr, field: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("cannot listen on {addr} ({field})"),
            source,
        })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Io {
        what: "cannot read the listening address".into(),
        source,
    })
}

/// The proxy's stack: `/healthz`, then the layer over the forwarder.
fn front(
    config: &Config,
    registry: &Registry,
    metrics: &Arc<Metrics>,
) -> Result<Front, ServeError> {
    let forwarder = Forwarder::new(ForwarderOptions {
        connect_timeout: config.server.connect_timeout,
        extra_roots: config.server.upstream_roots.clone(),
        ..ForwarderOptions::default()
    })
    .map_err(|e| ServeError::Io {
        what: "cannot set up upstream TLS".into(),
        source: std::io::Error::other(e),
    })?;
    Ok(Front {
        proxy: ByokLayer::new(registry.clone())
            .with_metrics(metrics.clone())
            .layer(forwarder),
    })
}

/// How a listener serves: with TLS when `tls` is set, its certificate
/// followed from then on.
fn listener_serving(
    server: &ServerConfig,
    tls: Option<&config::TlsConfig>,
    table: &'static str,
) -> Result<Arc<Serving>, ServeError> {
    let acceptor = match tls {
        Some(files) => {
            let tls = Tls::new(files).map_err(|e| ServeError::Io {
                what: format!("cannot set up TLS ({table})"),
                source: std::io::Error::other(e),
            })?;
            tls.follow(table);
            Some(tls.acceptor)
        }
        None => None,
    };
    Ok(Arc::new(Serving::new(server.max_header_bytes, acceptor)))
}

/// SIGTERM and SIGINT stop the proxy; SIGHUP reloads it.
struct Signals {
    stop: [Signal; 2],
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Self, ServeError> {
        let handle = |kind, name: &str| {
            signal(kind).map_err(|source| ServeError::Io {
                what: format!("cannot handle {name}"),
                source,
            })
        };
        Ok(Signals {
            stop: [
                handle(SignalKind::terminate(), "SIGTERM")?,
                handle(SignalKind::interrupt(), "SIGINT")?,
            ],
            hup: handle(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// Accepts on both listeners until SIGTERM or SIGINT; each connection is
/// watched by `graceful`.
async fn serve_until_signalled(
    proxy: (TcpListener, Front, Arc<Serving>),
    admin: Option<(TcpListener, Admin, Arc<Serving>)>,
    stop: [Signal; 2],
    graceful: &GracefulShutdown,
    server: &ServerConfig,
    metrics: &Arc<Metrics>,
) {
    let (listener, front, serving) = proxy;
    // At most server.max_connections client connections; one more is closed
    // at once (counted, and logged at most once a second) rather than let
    // memory grow without bound.
    let slots = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    let mut last_shed_log: Option<std::time::Instant> = None;
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
    let accept_admin = || async {
        match &admin {
            Some((listener, _, _)) => listener.accept().await,
            None => std::future::pending().await,
        }
    };
    let [mut term, mut int] = stop;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => {
                        let slot = Slot::new(permit, Arc::clone(metrics));
                        serve_connection(stream, peer, front.clone(), serving.clone(), graceful.watcher(), Some(slot));
                    }
                    Err(_) => {
                        metrics.connection_shed();
                        if last_shed_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            last_shed_log = Some(std::time::Instant::now());
                            tracing::warn!(max_connections = server.max_connections, "shedding connections: server.max_connections are open");
                        }
                        drop(stream);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            accepted = accept_admin() => match (accepted, &admin) {
                (Ok((stream, peer)), Some((_, svc, serving))) => {
                    serve_connection(stream, peer, svc.clone(), serving.clone(), graceful.watcher(), None);
                }
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
    ticker.abort();
}

/// Lets in-flight requests (streams included) finish, for at most `drain`.
async fn drain(graceful: GracefulShutdown, drain: Duration) {
    tracing::info!(
        drain_secs = drain.as_secs_f64(),
        "shutting down: no new connections, draining in-flight requests"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("drained; bye"),
        _ = tokio::time::sleep(drain) => tracing::warn!("drain time is up; closing the remaining connections"),
    }
}
