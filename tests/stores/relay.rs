//! A TCP relay a test can cut and restore: one replica's link to the
//! database, so the test decides when that replica loses it; or cut right
//! after it relays a `COMMIT`, so the database commits and the replica never
//! hears so (a lost acknowledgement); or freeze, so that nothing goes either
//! way and nothing closes (a network that stops answering).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut_after_commit: Arc<AtomicBool>,
    frozen: tokio::sync::watch::Sender<bool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Relay {
    /// Relays 127.0.0.1:<ephemeral> to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let cut_after_commit = Arc::new(AtomicBool::new(false));
        let (frozen, thawed) = tokio::sync::watch::channel(false);
        let (up2, links2, commit2) = (up.clone(), links.clone(), cut_after_commit.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    // Cut: a connection is accepted and closed at once.
                    drop(client);
                    continue;
                }
                let link = tokio::spawn(relay(client, target, commit2.clone(), thawed.clone()));
                links2.lock().unwrap().push(link.abort_handle());
            }
        })
        .abort_handle();
        Relay {
            addr,
            up,
            cut_after_commit,
            frozen,
            links,
            accept,
        }
    }

    /// Cuts the link that next carries a `COMMIT` right after relaying it:
    /// the database commits, and its answer never reaches the client.
    pub(crate) fn cut_after_next_commit(&self) {
        self.cut_after_commit.store(true, Ordering::SeqCst);
    }

    /// Holds every byte either way, on every link, new ones included, and
    /// closes nothing, until [`Relay::thaw`]: then what was held goes on.
    pub(crate) fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Relays again what [`Relay::freeze`] held, and what comes after.
    pub(crate) fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Drops every relayed connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Relays again.
    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Relays one connection both ways until either side closes (or, when
/// `cut_after_commit` is set, right after the client's next `COMMIT`),
/// holding the bytes while `frozen` says so.
async fn relay(
    client: TcpStream,
    target: SocketAddr,
    cut_after_commit: Arc<AtomicBool>,
    frozen: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    let down = pump(server_rx, client_tx, frozen.clone(), None);
    let up = pump(client_rx, server_tx, frozen, Some(&cut_after_commit));
    // Either way ends the link: both sockets close.
    tokio::select! {
        () = down => {}
        () = up => {}
    }
}

/// Copies `rx` to `tx` until either ends, each chunk once `frozen` is
/// false; with `cut_after_commit`, ends right after a `COMMIT` when set.
async fn pump(
    mut rx: tokio::net::tcp::OwnedReadHalf,
    mut tx: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
    cut_after_commit: Option<&AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !f).await.is_err() || tx.write_all(&buf[..n]).await.is_err() {
            return;
        }
        // A simple-protocol query: 'Q', its length, "COMMIT\0".
        let commit = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
        if commit && cut_after_commit.is_some_and(|cut| cut.swap(false, Ordering::SeqCst)) {
            return;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}
