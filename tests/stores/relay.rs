//! A TCP relay a test can cut and restore: one replica's link to the
//! database, so the test decides when that replica loses it; or cut right
//! after it relays a `COMMIT`, so the database commits and the replica never
//! hears so (a lost acknowledgement).

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
                let link = tokio::spawn(relay(client, target, commit2.clone()));
                links2.lock().unwrap().push(link.abort_handle());
            }
        })
        .abort_handle();
        Relay {
            addr,
            up,
            cut_after_commit,
            links,
            accept,
        }
    }

    /// Cuts the link that next carries a `COMMIT` right after relaying it:
    /// the database commits, and its answer never reaches the client.
    pub(crate) fn cut_after_next_commit(&self) {
        self.cut_after_commit.store(true, Ordering::SeqCst);
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
/// `cut_after_commit` is set, right after the client's next `COMMIT`).
async fn relay(client: TcpStream, target: SocketAddr, cut_after_commit: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let down = tokio::io::copy(&mut server_rx, &mut client_tx);
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
            // A simple-protocol query: 'Q', its length, "COMMIT\0".
            let commit = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
            if commit && cut_after_commit.swap(false, Ordering::SeqCst) {
                return;
            }
        }
    };
    // Either way ends the link: both sockets close.
    tokio::select! {
        _ = down => {}
        () = up => {}
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
