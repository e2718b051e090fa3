//! HTTPS for a listener: rustls with the certificate of `[server.tls]` or
//! `[admin.tls]`, HTTP/2 and HTTP/1.1 offered by ALPN, and the certificate
//! read again whenever its files change (or on SIGHUP). New handshakes get
//! the new certificate; connections already open keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::config::{load_certificate, TlsConfig};

/// The certificate in force, swapped whole on a reload.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A listener's TLS: the acceptor for its connections, and the task that
/// keeps its certificate current.
pub(super) struct Tls {
    pub(super) acceptor: TlsAcceptor,
    current: Arc<Current>,
    files: TlsConfig,
}

impl Tls {
    /// The acceptor for `files`' certificate (already read and checked).
    pub(super) fn new(files: &TlsConfig) -> Result<Self, rustls::Error> {
        let current = Arc::new(Current(ArcSwap::new(files.certified.clone())));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files: files.clone(),
        })
    }

    /// Follows the certificate files (and SIGHUP) for as long as the
    /// process runs; `table` names the config table in log lines.
    pub(super) fn follow(&self, table: &'static str) {
        let current = self.current.clone();
        let (cert, key) = (self.files.cert_file.clone(), self.files.key_file.clone());
        let (tx, changes) = mpsc::channel(1);
        let watcher = watch_files(&[&cert, &key], tx, table);
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        tokio::spawn(async move {
            let _watcher = watcher;
            let mut changes = changes;
            let mut hup = hup.ok();
            loop {
                let forced = tokio::select! {
                    Some(()) = changes.recv() => false,
                    Some(()) = async { match &mut hup { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                    else => return,
                };
                if !forced {
                    // A certificate and its key are written one after the
                    // other: read them once both have stopped changing.
                    super::reload::settle(&cert).await;
                    super::reload::settle(&key).await;
                }
                reload(&current, &cert, &key, table, forced);
            }
        });
    }
}

/// Reads the files again and swaps the certificate in when it loads and
/// differs; otherwise the one in force stays.
fn reload(current: &Current, cert: &Path, key: &Path, table: &str, forced: bool) {
    match load_certificate(cert, key) {
        Ok(new) => {
            let old = current.0.load();
            if old.cert == new.cert && !forced {
                return;
            }
            current.0.store(Arc::new(new));
            tracing::info!(
                table,
                cert_file = %cert.display(),
                "TLS certificate reloaded; new connections use it"
            );
        }
        Err((field, message)) => tracing::warn!(
            table,
            field,
            "TLS certificate not reloaded, the one in force stays: {message}"
        ),
    }
}

/// Watches the certificate files (their directories), sending on `tx` when
/// either changes. Events for other files of the directories are ignored; a
/// Kubernetes secret swaps a symlinked `..data` directory, seen as an event
/// without one of the names, so that (and a path-less event) counts too.
fn watch_files(
    files: &[&Path],
    tx: mpsc::Sender<()>,
    table: &'static str,
) -> Option<notify::RecommendedWatcher> {
    let names: Vec<PathBuf> = files.iter().map(|f| f.to_path_buf()).collect();
    let ours = move |event: &notify::Event| {
        event.paths.is_empty()
            || event.paths.iter().any(|p| {
                names.iter().any(|n| p == n)
                    || p.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(".."))
            })
    };
    super::reload::watch_dirs(files, ours, tx, &format!("the {table} files"))
}
