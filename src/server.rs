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
use tower::{Layer, ServiceExt};

use crate::config::{self, Config, ConfigError};
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
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.uri().path() == "/healthz" && matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut res = Response::new(ByokBody::full(Bytes::from_static(b"{\"status\":\"ok\"}")));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Box::pin(std::future::ready(Ok(res)));
        }
        let proxy = self.proxy.clone();
        Box::pin(async move {
            match proxy.oneshot(req).await {
                Ok(res) => Ok(res),
                // The forwarder's poll_ready never fails and the layer turns
                // every call failure into a response; keep a 502 regardless.
                Err(_) => Ok(crate::Rejection::UpstreamUnreachable.into_response()),
            }
        })
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
    let snapshot = config.snapshot().map_err(|source| ServeError::Snapshot {
        path: path.to_owned(),
        source,
    })?;
    let registry = Registry::new(snapshot);
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
    tokio::spawn(reload_loop(
        path.to_owned(),
        Reload {
            registry: registry.clone(),
            metrics: metrics.clone(),
            admin: admin.as_ref().map(|(_, svc)| svc.clone()),
            started_with: config.clone(),
        },
        digest(&text),
        hup,
    ));
    drop(text);

    let (api_keys, credentials) = config.counts();
    tracing::info!(
        api_keys,
        credentials,
        "byok-proxy listening on http://{local}"
    );

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

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// What a reload updates.
struct Reload {
    registry: Registry,
    metrics: Arc<Metrics>,
    admin: Option<Admin>,
    started_with: Config,
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
) {
    let (tx, mut changes) = mpsc::channel::<()>(1);
    let _watcher = watch(&path, tx);
    loop {
        let forced = tokio::select! {
            Some(()) = hup.recv() => true,
            Some(()) = changes.recv() => false,
            else => return,
        };
        let text = match config::read(&path) {
            Ok(t) => t,
            Err(e) => {
                targets.metrics.reload(false);
                tracing::error!(error = %e, generation = targets.registry.snapshot().generation(), "config reload failed; keeping the config in force");
                continue;
            }
        };
        let seen = digest(&text);
        if !forced && seen == last_seen {
            continue;
        }
        last_seen = seen;
        let outcome = Config::parse(&text)
            .map_err(|e| e.to_string())
            .and_then(|c| c.snapshot().map(|s| (c, s)).map_err(|e| e.to_string()));
        match outcome {
            Ok((config, snapshot)) => {
                let generation = targets.registry.replace(snapshot);
                targets.metrics.reload(true);
                targets
                    .metrics
                    .observe_snapshot(&targets.registry.snapshot());
                if let (Some(admin), Some(a)) = (&targets.admin, &config.admin) {
                    admin.set_management_keys(a.management_key_hashes.iter().copied());
                }
                let (api_keys, credentials) = config.counts();
                tracing::info!(generation, api_keys, credentials, "config reloaded");
                let before = &targets.started_with;
                if config.server.listen != before.server.listen
                    || config.server.connect_timeout != before.server.connect_timeout
                    || config.server.drain != before.server.drain
                    || config.server.upstream_roots != before.server.upstream_roots
                    || config.admin.as_ref().map(|a| a.listen)
                        != before.admin.as_ref().map(|a| a.listen)
                {
                    tracing::warn!("server.listen, server.connect_timeout_secs, server.drain_secs, server.upstream_ca_file and admin.listen take effect on restart only");
                }
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
