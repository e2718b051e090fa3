//! What an upstream received: the mock on a socket and the layer's inner
//! service both record every request, in order, for the test to inspect.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::Notify;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Everything received, as text, for scanning for things that must not be there.
    pub(crate) fn everything(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.uri);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        s.push_str(&String::from_utf8_lossy(&self.body));
        s
    }
}

/// Everything an upstream received, in order, shared between the upstream
/// and the test; clones share the same log.
#[derive(Debug)]
pub(crate) struct Recording<T> {
    log: Arc<Mutex<Vec<T>>>,
    /// Notified on every recorded request.
    arrived: Arc<Notify>,
}

impl<T> Clone for Recording<T> {
    fn clone(&self) -> Self {
        Recording {
            log: Arc::clone(&self.log),
            arrived: Arc::clone(&self.arrived),
        }
    }
}

impl<T> Default for Recording<T> {
    fn default() -> Self {
        Recording {
            log: Arc::new(Mutex::new(Vec::new())),
            arrived: Arc::new(Notify::new()),
        }
    }
}

impl<T: Clone + std::fmt::Debug> Recording<T> {
    /// Appends one request and wakes whoever waits on [`Recording::arrived`].
    pub(crate) fn record(&self, item: T) {
        self.log.lock().unwrap().push(item);
        self.arrived.notify_waiters();
    }

    /// Notified on every recorded request.
    pub(crate) fn arrived(&self) -> Arc<Notify> {
        Arc::clone(&self.arrived)
    }

    pub(crate) fn all(&self) -> Vec<T> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The one request received; panics unless there was exactly one.
    pub(crate) fn only(&self) -> T {
        let all = self.all();
        assert_eq!(all.len(), 1, "expected exactly one call, got {all:#?}");
        all.into_iter().next().unwrap()
    }
}
