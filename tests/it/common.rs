//! The harness: a recording mock upstream, the real binary on an ephemeral
//! port, and an HTTP client. Synchronisation is on events (log lines, channel
//! messages, socket reads), never on sleeps.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

pub(crate) const GW: &str = "gw-test-key-alpha";
pub(crate) const GW2: &str = "gw-test-key-bravo";
pub(crate) const GW_OTHER_WS: &str = "gw-test-key-charlie";
pub(crate) const GW_DISABLED: &str = "gw-test-key-disabled";

/// How long any single awaited event may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) fn hash(key: &str) -> String {
    byok_proxy::KeyHash::of(key.as_bytes()).to_hex()
}

// ---- the mock upstream ------------------------------------------------------

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

/// What the mock answers.
pub(crate) enum Reply {
    /// A complete response.
    Full(u16, Vec<(&'static str, String)>, String),
    /// A streamed body: `first` at once, then the rest once `gate` is notified.
    /// `cancelled` is notified if the reader goes away while waiting.
    Stream {
        first: String,
        rest: Vec<String>,
        gate: Arc<Notify>,
        cancelled: Arc<Notify>,
    },
    /// Never answer.
    Hang,
}

impl Reply {
    pub(crate) fn json(status: u16, body: &str) -> Reply {
        Reply::Full(
            status,
            vec![("content-type", "application/json".into())],
            body.to_owned(),
        )
    }
}

type Behavior = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub(crate) struct Mock {
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    /// Notified on every recorded request.
    pub(crate) arrived: Arc<Notify>,
}

impl Mock {
    pub(crate) async fn start(
        behavior: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Mock {
        Mock::start_with(Arc::new(behavior), None).await
    }

    /// The same mock behind TLS, with the certificate in tests/fixtures
    /// (for `localhost` and `127.0.0.1`, signed by tests/fixtures/ca.pem).
    pub(crate) async fn start_tls(
        behavior: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Mock {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let certs = CertificateDer::pem_file_iter(format!("{dir}/upstream.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/upstream.key")).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Mock::start_with(Arc::new(behavior), Some(acceptor)).await
    }

    async fn start_with(behavior: Behavior, tls: Option<tokio_rustls::TlsAcceptor>) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (log2, arrived2) = (log.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (behavior, log, arrived) = (behavior.clone(), log2.clone(), arrived2.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (behavior, log, arrived) =
                            (behavior.clone(), log.clone(), arrived.clone());
                        async move { Ok::<_, Infallible>(answer(req, &behavior, &log, &arrived).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            // A handshake the client aborts (untrusted
                            // certificate) never becomes a request.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Mock { addr, log, arrived }
    }

    /// A mock that answers 200 with a small JSON body to everything.
    pub(crate) async fn ok() -> Mock {
        Mock::start(|_| Reply::json(200, r#"{"id":"chatcmpl-1","ok":true}"#)).await
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

type MockBody = http_body_util::Either<Full<Bytes>, ChannelBody>;

async fn answer(
    req: Request<Incoming>,
    behavior: &Behavior,
    log: &Mutex<Vec<Recorded>>,
    arrived: &Notify,
) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    let reply = behavior(&rec);
    log.lock().unwrap().push(rec);
    arrived.notify_waiters();
    match reply {
        Reply::Full(status, headers, body) => {
            let mut res = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(body))));
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            for (k, v) in headers {
                res.headers_mut().insert(k, v.parse().unwrap());
            }
            res
        }
        Reply::Stream {
            first,
            rest,
            gate,
            cancelled,
        } => {
            let (tx, rx) = mpsc::channel::<Bytes>(64);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from(first)).await;
                tokio::select! {
                    _ = gate.notified() => {
                        for chunk in rest {
                            if tx.send(Bytes::from(chunk)).await.is_err() {
                                cancelled.notify_one();
                                return;
                            }
                        }
                    }
                    _ = tx.closed() => cancelled.notify_one(),
                }
            });
            let mut res = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
            res.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            res
        }
        Reply::Hang => std::future::pending().await,
    }
}

/// A response body fed by a channel, so the mock controls when each chunk goes.
pub(crate) struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

// ---- the proxy process ------------------------------------------------------

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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_byok-proxy"));
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
        // Not just "listening on http://": with `[admin]` configured, the admin
        // listener's line ("admin API listening on http://…") comes first.
        let line = proxy.wait_log("byok-proxy listening on http://").await;
        proxy.addr = addr_after(&line, "listening on http://");
        proxy
    }

    /// The admin listener's address, from its log line (`[admin]` must be
    /// configured; the line precedes the proxy's, so it is already there).
    pub(crate) async fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_log("admin API listening on http://").await;
        addr_after(&line, "admin API listening on http://")
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

// ---- configs ----------------------------------------------------------------

/// A config whose providers all point at `mock`, with three gateway keys
/// (GW and GW2 in ws-1 as user-1 and user-2, GW_OTHER_WS in ws-2, GW_DISABLED
/// disabled in ws-1), followed by `rest`.
pub(crate) fn config(mock: &Mock, rest: &str) -> String {
    config_with_server(mock, "", rest)
}

pub(crate) fn config_with_server(mock: &Mock, server: &str, rest: &str) -> String {
    let up = mock.url();
    let timeout = if server.contains("first_byte_timeout_secs") {
        ""
    } else {
        "first_byte_timeout_secs = 10"
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{timeout}
{server}

[providers.openai]
base_url = "{up}"
[providers.anthropic]
base_url = "{up}"
[providers.google-ai-studio]
base_url = "{up}"
[providers.amazon-bedrock]
base_url = "{up}/bedrock"
[providers.openrouter]
base_url = "{up}/api"

[[api_keys]]
hash = "{h1}"
workspace_id = "ws-1"
user_id = "user-1"
name = "alpha"

[[api_keys]]
hash = "{h2}"
workspace_id = "ws-1"
user_id = "user-2"

[[api_keys]]
hash = "{h3}"
workspace_id = "ws-2"
user_id = "user-3"

[[api_keys]]
hash = "{h4}"
workspace_id = "ws-1"
user_id = "user-1"
disabled = true

{rest}
"#,
        h1 = hash(GW),
        h2 = hash(GW2),
        h3 = hash(GW_OTHER_WS),
        h4 = hash(GW_DISABLED),
    )
}

/// A `[[credentials]]` entry in ws-1 with the given id, provider and secret,
/// plus `extra` lines.
pub(crate) fn cred(id: &str, provider: &str, secret: &str, extra: &str) -> String {
    let created = if extra.contains("created_at") {
        ""
    } else {
        "created_at = \"2025-08-24T10:30:00Z\""
    };
    format!(
        r#"
[[credentials]]
id = "{id}"
workspace_id = "ws-1"
provider = "{provider}"
key = "{secret}"
{created}
{extra}
"#
    )
}

// ---- the client -------------------------------------------------------------

pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Resp {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn reason(&self) -> String {
        self.json()["error"]["metadata"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub(crate) fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A request builder with the gateway key in `Authorization: Bearer`.
pub(crate) fn req(method: &str, url: &str, key: Option<&str>) -> http::request::Builder {
    let b = Request::builder().method(method).uri(url);
    match key {
        Some(k) => b.header("authorization", format!("Bearer {k}")),
        None => b,
    }
}

pub(crate) async fn send(r: Request<Full<Bytes>>) -> Resp {
    let res = tokio::time::timeout(PATIENCE, client().request(r))
        .await
        .expect("response within patience")
        .expect("response");
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// POSTs a JSON body with the gateway key.
pub(crate) async fn post(proxy: &Proxy, path: &str, key: &str, body: &str) -> Resp {
    send(
        req("POST", &proxy.url(path), Some(key))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

pub(crate) async fn chat(proxy: &Proxy, key: &str, model: &str) -> Resp {
    post(
        proxy,
        "/openai/v1/chat/completions",
        key,
        &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
    )
    .await
}

/// Writes raw bytes on a fresh connection and reads until the server closes it.
pub(crate) async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A map of header names to values, for comparing.
pub(crate) fn header_map(h: &HeaderMap) -> HashMap<String, String> {
    h.iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
