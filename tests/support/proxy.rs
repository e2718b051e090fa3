//! The real `byok-proxy` binary on ephemeral ports, its output captured line
//! by line, and waits on that output bounded by [`PATIENCE`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::PATIENCE;

/// A running `byok-proxy serve`, killed on drop.
pub(crate) struct Proxy {
    child: Child,
    pub(crate) addr: SocketAddr,
    logs: Arc<(Mutex<Vec<String>>, Notify)>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config_path: PathBuf,
}

impl Proxy {
    pub(crate) async fn start(config: &str) -> Proxy {
        Proxy::start_with_env(config, &[]).await
    }

    pub(crate) async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("byok.toml");
        std::fs::write(&config_path, config).unwrap();
        // Set when the binary is built (the `server` feature); the layer's
        // tests, which also build without it, never start it.
        let binary = option_env!("CARGO_BIN_EXE_byok-proxy")
            .unwrap_or("byok-proxy-needs-the-server-feature");
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("BYOK_PROXY_CONFIG")
            .env("BYOK_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let logs: Arc<(Mutex<Vec<String>>, Notify)> =
            Arc::new((Mutex::new(Vec::new()), Notify::new()));
        for pipe in [
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    logs.0.lock().unwrap().push(line);
                    logs.1.notify_waiters();
                }
                // EOF: wake waiters so they can see the process is gone.
                logs.0.lock().unwrap().push("<eof>".into());
                logs.1.notify_waiters();
            });
        }
        let mut proxy = Proxy {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            logs,
            dir,
            config_path,
        };
        // Not just "listening on": with `[admin]` configured, the admin
        // listener's line ("admin API listening on http://…") comes first.
        // The scheme is https with `[server.tls]`.
        let line = proxy.wait_log("byok-proxy listening on ").await;
        proxy.addr = addr_after(&line, "://");
        proxy
    }

    /// The admin listener's address, from its log line (`[admin]` must be
    /// configured; the line precedes the proxy's, so it is already there).
    pub(crate) async fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_log("admin API listening on ").await;
        addr_after(&line, "://")
    }

    /// Waits for a log line (from now or earlier) containing `needle`, and returns it.
    pub(crate) async fn wait_log(&self, needle: &str) -> String {
        self.wait_log_after(0, needle).await
    }

    /// Like `wait_log`, counting only lines after the first `skip`.
    pub(crate) async fn wait_log_after(&self, skip: usize, needle: &str) -> String {
        let found = self
            .wait_until(|lines| {
                let hit = lines.iter().skip(skip).find(|l| l.contains(needle));
                match hit {
                    Some(l) => Some(Ok(l.clone())),
                    None if both_pipes_closed(lines) => Some(Err(())),
                    None => None,
                }
            })
            .await;
        match found {
            Some(Ok(line)) => line,
            Some(Err(())) => panic!("proxy exited before logging {needle:?}:\n{}", self.logs()),
            None => panic!(
                "no log line with {needle:?} within {PATIENCE:?}:\n{}",
                self.logs()
            ),
        }
    }

    /// Waits until `n` lines after the first `mark` contain `needle`: the
    /// n-th occurrence of a log line.
    pub(crate) async fn wait_log_count_after(&self, mark: usize, needle: &str, n: usize) {
        let mut from = mark;
        for _ in 0..n {
            self.wait_log_after(from, needle).await;
            // The output only grows: the first match at or after `from` is
            // the one just waited for.
            let logs = self.logs();
            let at = logs
                .lines()
                .enumerate()
                .skip(from)
                .find(|(_, l)| l.contains(needle))
                .map(|(i, _)| i)
                .unwrap();
            from = at + 1;
        }
    }

    /// Waits until `check` over the output so far says `Some`, woken by every
    /// new line; `None` after `PATIENCE`.
    async fn wait_until<T>(&self, check: impl Fn(&[String]) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.logs.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = check(&self.logs.0.lock().unwrap()) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    pub(crate) fn log_len(&self) -> usize {
        self.logs.0.lock().unwrap().len()
    }

    pub(crate) fn logs(&self) -> String {
        self.logs.0.lock().unwrap().join("\n")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {sig} failed");
    }

    /// Waits for the process to exit, then for its output to be read to the end.
    pub(crate) async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Both pipes reach EOF once the process is gone.
                self.wait_until(|lines| both_pipes_closed(lines).then_some(()))
                    .await;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "proxy did not exit:\n{}",
                self.logs()
            );
            // Polling a child's exit has no async notification in std; a short
            // yield between polls is not used to order events.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Replaces the config file atomically (write + rename), as editors and
    /// config management do.
    pub(crate) fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join(".byok.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }
}

/// The address that follows `marker` in a log line.
fn addr_after(line: &str, marker: &str) -> SocketAddr {
    let rest = line.split(marker).nth(1).unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

fn both_pipes_closed(lines: &[String]) -> bool {
    lines.iter().filter(|l| *l == "<eof>").count() >= 2
}

/// An address nothing listens on: bound, read, and closed again.
pub(crate) fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `byok-proxy check` on a config holding `text`: whether it passed, and
/// what it printed on stderr.
pub(crate) fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.toml");
    std::fs::write(&path, text).unwrap();
    let binary =
        option_env!("CARGO_BIN_EXE_byok-proxy").unwrap_or("byok-proxy-needs-the-server-feature");
    let out = Command::new(binary)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_remove("BYOK_PROXY_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
