//! Where the log lines go: stderr, with the access log batched.
//!
//! An access-log line is appended to its thread's buffer (a shard, behind
//! an uncontended lock) and leaves with the others in one `write(2)`: when
//! the buffer passes [`BATCH_BYTES`], or at the next flush, every
//! [`FLUSH_EVERY`]. No line crosses to another thread, so a request wakes
//! nobody. Any other line (warnings, reloads, startup) first writes out
//! every buffered line and then itself, at once: those stay in order, and
//! after what came before them.
//!
//! The [`Flusher`] guard stops the flushing thread and writes out what is
//! left when it is dropped (when `serve` returns).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// A thread's buffer is written out when it holds this much.
pub const BATCH_BYTES: usize = 32 * 1024;
/// How long an access-log line may wait in its buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Buffers (threads share one when there are more threads).
const SHARDS: usize = 32;

/// The log writer: see the module docs.
#[derive(Clone)]
pub struct Logs<W: Write + Send + 'static = io::Stderr> {
    shared: Arc<Shared<W>>,
}

impl<W: Write + Send> std::fmt::Debug for Logs<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Logs")
    }
}

impl<W: Write + Send> std::fmt::Debug for Flusher<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flusher")
    }
}

impl<W: Write + Send> std::fmt::Debug for LineWriter<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWriter")
            .field("batched", &self.batched)
            .finish()
    }
}

struct Shared<W> {
    shards: Box<[Mutex<Vec<u8>>]>,
    /// Serialises the writes, so that lines never interleave.
    out: Mutex<W>,
    stop: AtomicBool,
}

/// Stops the flushing and writes out every buffered line when dropped.
pub struct Flusher<W: Write + Send + 'static = io::Stderr> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

impl Logs<io::Stderr> {
    /// Logs to stderr, and the guard that flushes them.
    pub fn stderr() -> (Self, Flusher) {
        Logs::to(io::stderr())
    }
}

impl<W: Write + Send + 'static> Logs<W> {
    /// Logs to `out`, and the guard that flushes them.
    pub fn to(out: W) -> (Self, Flusher<W>) {
        let shared = Arc::new(Shared {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            out: Mutex::new(out),
            stop: AtomicBool::new(false),
        });
        let flushing = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("byok-logs".into())
            .spawn(move || loop {
                std::thread::park_timeout(FLUSH_EVERY);
                if flushing.stop.load(Ordering::Acquire) {
                    break;
                }
                flushing.write_out(&[]);
            })
            .ok();
        let flusher = Flusher {
            shared: Arc::clone(&shared),
            thread,
        };
        (Logs { shared }, flusher)
    }
}

impl<W: Write + Send> Shared<W> {
    /// Writes every buffered line, then `line`, in one write.
    fn write_out(&self, line: &[u8]) {
        let mut out = lock(&self.out);
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let mut buf = lock(shard);
            if all.is_empty() {
                std::mem::swap(&mut all, &mut buf);
            } else {
                all.extend_from_slice(&buf);
                buf.clear();
            }
        }
        all.extend_from_slice(line);
        if !all.is_empty() {
            // Nowhere to tell of a failed write to stderr.
            let _ = out.write_all(&all).and_then(|()| out.flush());
        }
    }

    /// Buffers one access-log line (a whole event: the formatter writes
    /// each in one call); writes its buffer out when it is full.
    fn buffer(&self, line: &[u8]) {
        let shard = &self.shards[shard_of_this_thread()];
        let mut buf = lock(shard);
        buf.extend_from_slice(line);
        if buf.len() >= BATCH_BYTES {
            let full = std::mem::take(&mut *buf);
            drop(buf);
            let mut out = lock(&self.out);
            let _ = out.write_all(&full).and_then(|()| out.flush());
        }
    }
}

/// A lock whatever a panicking holder left: a log buffer is only bytes.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn shard_of_this_thread() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.with(|s| usize::try_from(*s).unwrap_or(0) % SHARDS)
}

impl<W: Write + Send> Drop for Flusher<W> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.shared.write_out(&[]);
    }
}

/// One event's writer: buffered for the access log, else at once.
pub struct LineWriter<'a, W: Write + Send> {
    shared: &'a Shared<W>,
    batched: bool,
}

impl<W: Write + Send> Write for LineWriter<'_, W> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.batched {
            self.shared.buffer(line);
        } else {
            self.shared.write_out(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for Logs<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
            batched: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
            batched: meta.target() == "byok_proxy::access" && *meta.level() == tracing::Level::INFO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn writer<'a>(logs: &'a Logs<Sink>, access: bool) -> LineWriter<'a, Sink> {
        LineWriter {
            shared: &logs.shared,
            batched: access,
        }
    }

    /// Access lines wait for a flush (or a full buffer) and leave
    /// together; another line takes them with it, first.
    #[test]
    fn access_lines_leave_in_batches_and_before_any_other_line() {
        let sink = Sink::default();
        let (logs, flusher) = Logs::to(sink.clone());
        // The flushing thread could write the first lines out on its own:
        // stop it, so the test sees only what the writers do.
        flusher.shared.stop.store(true, Ordering::Release);
        let writes = || lock(&sink.0).len();
        let before = writes();
        writer(&logs, true).write_all(b"a1\n").unwrap();
        writer(&logs, true).write_all(b"a2\n").unwrap();
        let other = std::thread::spawn({
            let logs = logs.clone();
            move || writer(&logs, true).write_all(b"b1\n").unwrap()
        });
        other.join().unwrap();
        assert_eq!(writes(), before, "access lines are buffered");
        writer(&logs, false).write_all(b"WARN reload\n").unwrap();
        let all = lock(&sink.0).concat();
        let text = String::from_utf8(all).unwrap();
        assert!(text.ends_with("WARN reload\n"), "{text}");
        for line in ["a1\n", "a2\n", "b1\n"] {
            assert!(text.contains(line), "{text}");
        }
        assert!(text.find("a1").unwrap() < text.find("a2").unwrap());
        assert_eq!(writes(), before + 1, "one write for all");
        // A full buffer leaves at once.
        let long = vec![b'x'; BATCH_BYTES];
        writer(&logs, true).write_all(&long).unwrap();
        assert_eq!(writes(), before + 2);
        // What is left leaves when the guard goes.
        writer(&logs, true).write_all(b"last\n").unwrap();
        drop(flusher);
        assert!(lock(&sink.0).concat().ends_with(b"last\n"));
    }
}
