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
use crate::metrics::Metrics;
use crate::proxy::{BodyBudget, ByokBody, ByokLayer, ByokService, Forwarder, ForwarderOptions};
use crate::registry::{Registry, SnapshotError};
pub use crate::store::crypto::CryptoError;
use crate::store::crypto::Keyring;
use crate::store::Store;
pub use crate::store::{Resealed, StoreError};

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
                .unwrap_or_else(|| crate::proxy::error::Rejection::NotFound.into_response()))),
            FrontProj::Proxy { fut } => fut.poll(cx).map(|result| match result {
                Ok(res) => Ok(res),
                // The layer turns every failure into a response; keep a 502
                // should the forwarder's call ever fail regardless.
                Err(_) => Ok(crate::proxy::error::Rejection::UpstreamUnreachable.into_response()),
            }),
        }
    }
}

/// `byok-proxy reseal`: opens the database store the config at `path`
/// names (its migrations run, as at a start) and re-seals every credential
/// under `BYOK_MASTER_KEY`, reading those sealed under
/// `BYOK_MASTER_KEY_PREVIOUS`. Running replicas keep serving: no secret and
/// no field changes.
pub async fn reseal(path: &Path) -> Result<Resealed, ServeError> {
    let (config, _) = read_config(path)?;
    let store = open_store(&config).await?;
    store.reseal().await.map_err(|source| ServeError::Store {
        kind: config.store.kind(),
        source,
    })
}

/// Reads and parses the config at `path` (errors naming it): the config, and
/// its text.
fn read_config(path: &Path) -> Result<(Config, zeroize::Zeroizing<String>), ServeError> {
    let config_error = |source| ServeError::Config {
        path: path.to_owned(),
        source,
    };
    let text = config::read(path).map_err(config_error)?;
    let config = Config::parse(&text).map_err(config_error)?;
    Ok((config, text))
}

/// Loads the config at `path` and serves until SIGTERM or SIGINT, then drains.
pub async fn run(path: &Path) -> Result<(), ServeError> {
    let (config, text) = read_config(path)?;
    let store = open_store(&config).await?;
    let (config, snapshot) = first_snapshot(path, config, &store).await?;
    // From here on the registry holds the keys and credentials; the config
    // keeps its settings only.
    let registry = Registry::new(snapshot);
    tracing::info!(store = config.store.kind(), "credential store opened");
    let metrics = Arc::new(Metrics::new());
    metrics.observe_snapshot(&registry.snapshot());
    ledger::start(
        &registry,
        &metrics,
        &store,
        config.store.usage_retention_days,
    )
    .await;

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let listeners = bind_per_core(config.server.listen, cores)?;
    let local = local_addr(&listeners[0])?;
    // One budget for the bodies of every thread's requests.
    let budget = BodyBudget::new(config.server.max_buffered_body_bytes);
    let fronts = (0..cores)
        .map(|_| front(&config, &registry, &metrics, &budget))
        .collect::<Result<Vec<_>, _>>()?;
    let serving = listener_serving(&config.server, config.server.tls.as_ref(), "server.tls")?;
    let admin = admin_listener(&config, &registry, &metrics, &store).await?;
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
    let graceful = Arc::new(GracefulShutdown::new());
    let mut cores = Cores::start(
        listeners.into_iter().zip(fronts).collect(),
        &serving,
        &graceful,
        &config.server,
        &metrics,
    )?;
    serve_until_signalled(admin, signals.stop, &graceful).await;
    let graceful = cores.stop_accepting(graceful).await;
    drain(graceful, config.server.drain).await;
    cores.close().await;
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
        if let Err(e) = pg.timed(pg.publish(&change)).await {
            tracing::debug!(credential_id = %id, error = %e, "health change not told to the other replicas");
        }
    }
}

/// The configured store, opened (and its tables made).
/// The admin API's listener, service and TLS, when the config has one.
async fn admin_listener(
    config: &Config,
    registry: &Registry,
    metrics: &Arc<Metrics>,
    store: &Arc<Store>,
) -> Result<Option<(TcpListener, Admin, Arc<Serving>)>, ServeError> {
    let Some(a) = &config.admin else {
        return Ok(None);
    };
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
    Ok(Some((listener, service, serving)))
}

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
) -> Result<(Config, crate::registry::Snapshot), ServeError> {
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
        .map_err(|source| listen_error(addr, field, source))
}

fn listen_error(addr: SocketAddr, field: &str, source: std::io::Error) -> ServeError {
    ServeError::Io {
        what: format!("cannot listen on {addr} ({field})"),
        source,
    }
}

/// `cores` listeners on `server.listen`, one a serving thread: with
/// `SO_REUSEPORT`, so that the kernel spreads the connections over them (the
/// first one picks the port when it is 0, the others take the same).
fn bind_per_core(addr: SocketAddr, cores: usize) -> Result<Vec<TcpListener>, ServeError> {
    let socket = |addr: SocketAddr| -> std::io::Result<tokio::net::TcpSocket> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        Ok(socket)
    };
    let one = |addr: SocketAddr| -> std::io::Result<TcpListener> {
        let socket = socket(addr)?;
        if cores > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(addr)?;
        socket.listen(1024)
    };
    if cores > 1 && addr.port() != 0 {
        // SO_REUSEPORT would let this process share a port another one
        // (of the same user) listens on: a plain bind first fails as it
        // would without it.
        socket(addr)
            .and_then(|probe| probe.bind(addr))
            .map_err(|e| listen_error(addr, "server.listen", e))?;
    }
    let first = one(addr).map_err(|e| listen_error(addr, "server.listen", e))?;
    let bound = local_addr(&first)?;
    let mut all = vec![first];
    for _ in 1..cores {
        all.push(one(bound).map_err(|e| listen_error(bound, "server.listen", e))?);
    }
    Ok(all)
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
    budget: &BodyBudget,
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
            .with_body_budget(budget.clone())
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

/// The proxy's serving threads: one a core, each a current-thread runtime
/// with its own listener (`SO_REUSEPORT`) and its own upstream pool, so that
/// a request is read, decided, forwarded and answered on one thread, with no
/// wake-up crossing to another (issue 16). The control plane (signals,
/// reloads, the admin API, the store) runs on the main runtime.
struct Cores {
    threads: Vec<std::thread::JoinHandle<()>>,
    // true: stop accepting; the runtimes live on until `close`.
    stop: tokio::sync::watch::Sender<bool>,
    // Closed when every thread has stopped accepting.
    accepting: mpsc::Receiver<()>,
    close: tokio::sync::watch::Sender<bool>,
}

impl Cores {
    fn start(
        cores: Vec<(TcpListener, Front)>,
        serving: &Arc<Serving>,
        graceful: &Arc<GracefulShutdown>,
        server: &ServerConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, ServeError> {
        // At most server.max_connections client connections over all the
        // threads; one more is closed at once (counted, and logged at most
        // once a second) rather than let memory grow without bound.
        let slots = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
        let last_shed_log = Arc::default();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (close, close_rx) = tokio::sync::watch::channel(false);
        let (accepting_tx, accepting) = mpsc::channel(1);
        let mut threads = Vec::with_capacity(cores.len());
        for (i, (listener, front)) in cores.into_iter().enumerate() {
            let listener = listener.into_std().map_err(|source| ServeError::Io {
                what: "cannot hand a listener to its thread".into(),
                source,
            })?;
            let accept = Accept {
                front,
                serving: serving.clone(),
                slots: slots.clone(),
                graceful: graceful.clone(),
                metrics: metrics.clone(),
                max_connections: server.max_connections,
                last_shed_log: Arc::clone(&last_shed_log),
            };
            let (mut stop, mut close) = (stop_rx.clone(), close_rx.clone());
            let accepting = accepting_tx.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| ServeError::Io {
                    what: "cannot start a serving thread's runtime".into(),
                    source,
                })?;
            let thread = std::thread::Builder::new()
                .name(format!("byok-serve-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        // `accept` (its handle on the shutdown) is gone
                        // before `accepting` says so.
                        accept.until(listener, &mut stop).await;
                        drop(accepting);
                        // Connections drain on this runtime until it closes.
                        let _ = close.wait_for(|closed| *closed).await;
                    });
                })
                .map_err(|source| ServeError::Io {
                    what: "cannot start a serving thread".into(),
                    source,
                })?;
            threads.push(thread);
        }
        Ok(Cores {
            threads,
            stop,
            accepting,
            close,
        })
    }

    /// Stops every thread accepting; the shutdown then watches only the
    /// connections they have.
    async fn stop_accepting(&mut self, graceful: Arc<GracefulShutdown>) -> GracefulShutdown {
        let _ = self.stop.send(true);
        while self.accepting.recv().await.is_some() {}
        // Every thread has let go of its handle (`Accept::until` takes it):
        // the last one is this.
        let mut graceful = graceful;
        loop {
            match Arc::try_unwrap(graceful) {
                Ok(g) => return g,
                Err(shared) => {
                    graceful = shared;
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Ends the threads, closing what connections are left.
    async fn close(self) {
        let _ = self.close.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// What a serving thread needs to accept and serve its connections.
struct Accept {
    front: Front,
    serving: Arc<Serving>,
    slots: Arc<tokio::sync::Semaphore>,
    graceful: Arc<GracefulShutdown>,
    metrics: Arc<Metrics>,
    max_connections: usize,
    // When a shed connection was last logged, by any serving thread.
    last_shed_log: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Accept {
    /// Accepts on `listener` until `stop` turns true; `self` is dropped
    /// when it returns, however it returns.
    async fn until(
        self,
        listener: std::net::TcpListener,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "a serving thread cannot listen");
                return;
            }
        };
        // tokio's timer driver parks without a timeout while no timer is due,
        // so a request that arms one (hyper's header-read timeout, the
        // first-byte timeout) has to wake it with an eventfd write. A coarse
        // tick keeps a near timer registered: arming a later one then wakes
        // nothing.
        let ticker = tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
            }
        });
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match Arc::clone(&self.slots).try_acquire_owned() {
                        Ok(permit) => {
                            let slot = Slot::new(permit, Arc::clone(&self.metrics));
                            serve_connection(stream, peer, self.front.clone(), self.serving.clone(), self.graceful.watcher(), Some(slot));
                        }
                        Err(_) => {
                            self.metrics.connection_shed();
                            if self.shed_log_due() {
                                tracing::warn!(max_connections = self.max_connections, "shedding connections: server.max_connections are open");
                            }
                            drop(stream);
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        ticker.abort();
    }

    /// Whether a shed connection is logged: at most once a second over all
    /// the serving threads.
    fn shed_log_due(&self) -> bool {
        let mut last = self.last_shed_log.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }
}

/// Accepts on the admin listener until SIGTERM or SIGINT; each connection is
/// watched by `graceful`.
async fn serve_until_signalled(
    admin: Option<(TcpListener, Admin, Arc<Serving>)>,
    stop: [Signal; 2],
    graceful: &GracefulShutdown,
) {
    let accept_admin = || async {
        match &admin {
            Some((listener, _, _)) => listener.accept().await,
            None => std::future::pending().await,
        }
    };
    let [mut term, mut int] = stop;
    loop {
        tokio::select! {
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
