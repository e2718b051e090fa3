//! Serving HTTPS (`[server.tls]`, `[admin.tls]`): HTTP/2 and HTTP/1.1 by
//! ALPN, HTTP/2 with prior knowledge in cleartext, the certificate reloaded
//! from its files without dropping open connections, and clear errors for
//! bad files.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::support::admin::{admin_section, MGMT};
use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn tls_table(table: &str, dir: &str) -> String {
    format!("[{table}]\ncert_file = \"{dir}/upstream.pem\"\nkey_file = \"{dir}/upstream.key\"\n")
}

fn https_config(mock: &Mock, dir: &str) -> String {
    config_with_server(
        mock,
        &tls_table("server.tls", dir),
        &cred("c-1", "openai", "sk-https-secret-000001", ""),
    )
}

fn certs(file: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(Path::new(FIXTURES).join(file))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A TLS connection to `addr` trusting the test CA and the second test
/// certificate, offering `alpn`; with the certificate the server showed.
async fn connect(
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs("ca.pem").into_iter().chain(certs("second.pem")) {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, shown)
}

fn chat_request(uri: &str) -> Request<Full<Bytes>> {
    req("POST", uri, Some(GW))
        .header("content-type", "application/json")
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[]}"#,
        )))
        .unwrap()
}

/// The response, read, and the HTTP version it came in.
async fn read(res: http::Response<hyper::body::Incoming>) -> (Resp, http::Version) {
    let (parts, body) = res.into_parts();
    let version = parts.version;
    (
        Resp::new(parts, body.collect().await.unwrap().to_bytes()),
        version,
    )
}

/// An HTTP/1.1 client on `io`.
async fn h1<I>(io: I) -> hyper::client::conn::http1::SendRequest<Full<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// An HTTP/2 client on `io`.
async fn h2<I>(io: I) -> hyper::client::conn::http2::SendRequest<Full<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn https_serves_http2_and_http1_as_alpn_chose() {
    let mock = Mock::ok().await;
    let proxy = Proxy::start(&https_config(&mock, FIXTURES)).await;
    proxy
        .wait_log(&format!("listening on https://{}", proxy.addr))
        .await;

    let (tls, shown) = connect(proxy.addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(shown, certs("upstream.pem")[0]);
    let mut send = h2(tls).await;
    let uri = "https://localhost/openai/v1/chat/completions";
    for _ in 0..2 {
        let (r, version) = read(send.send_request(chat_request(uri)).await.unwrap()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(version, http::Version::HTTP_2);
    }

    let (tls, _) = connect(proxy.addr, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut send = h1(tls).await;
    let (r, version) = read(
        send.send_request(chat_request("/openai/v1/chat/completions"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(version, http::Version::HTTP_11);

    // Every request went upstream with the secret, as HTTP/1.1, and
    // without the gateway key.
    let got = mock.requests();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer sk-https-secret-000001")
        );
        assert!(!r.everything().contains(GW), "{}", r.everything());
    }
}

#[tokio::test]
async fn a_cleartext_client_gets_no_answer_from_the_https_listener() {
    let mock = Mock::ok().await;
    let proxy = Proxy::start(&https_config(&mock, FIXTURES)).await;
    let out = raw(
        proxy.addr,
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer gw-test-key-alpha\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert!(!out.contains("HTTP/1.1"), "{out}");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn cleartext_http2_with_prior_knowledge_beside_http1() {
    let mock = Mock::ok().await;
    let proxy = Proxy::start(&config(
        &mock,
        &cred("c-1", "openai", "sk-h2c-secret-000001", ""),
    ))
    .await;
    let mut send = h2(TcpStream::connect(proxy.addr).await.unwrap()).await;
    let uri = format!("http://{}/openai/v1/chat/completions", proxy.addr);
    let (r, version) = read(send.send_request(chat_request(&uri)).await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(version, http::Version::HTTP_2);
    // A refusal over HTTP/2 is the same JSON, and nothing goes upstream.
    let mut refused = chat_request(&uri);
    refused.headers_mut().remove("authorization");
    let (r, _) = read(send.send_request(refused).await.unwrap()).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.reason(), "missing_api_key");
    // HTTP/1.1 on the same listener, as before.
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = mock.requests();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer sk-h2c-secret-000001")));
}

#[tokio::test]
async fn a_new_certificate_is_served_without_dropping_open_connections() {
    let mock = Mock::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let copy = |from: &str, to: &Path| std::fs::copy(Path::new(FIXTURES).join(from), to).unwrap();
    copy("upstream.pem", &cert);
    copy("upstream.key", &key);
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let proxy = Proxy::start(&config_with_server(
        &mock,
        &tls,
        &cred("c-1", "openai", "sk-reload-secret-0001", ""),
    ))
    .await;
    let (old, shown) = connect(proxy.addr, &[b"http/1.1"]).await;
    assert_eq!(shown, certs("upstream.pem")[0]);
    let mut old = h1(old).await;
    let path = "/openai/v1/chat/completions";
    let (r, _) = read(old.send_request(chat_request(path)).await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A key that does not go with the certificate is not taken: the
    // certificate in force stays.
    let mark = proxy.log_len();
    copy("second.key", &key);
    proxy
        .wait_log_after(mark, "TLS certificate not reloaded")
        .await;
    assert_eq!(
        connect(proxy.addr, &[b"http/1.1"]).await.1,
        certs("upstream.pem")[0]
    );

    // The matching certificate arrives: new handshakes get it.
    let mark = proxy.log_len();
    copy("second.pem", &cert);
    proxy.wait_log_after(mark, "TLS certificate reloaded").await;
    assert_eq!(
        connect(proxy.addr, &[b"http/1.1"]).await.1,
        certs("second.pem")[0]
    );
    assert!(!proxy.logs().contains("BEGIN"), "{}", proxy.logs());

    // The connection opened before the change still serves.
    let (r, _) = read(old.send_request(chat_request(path)).await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.count(), 2);
}

#[tokio::test]
async fn the_admin_listener_serves_https_too() {
    let mock = Mock::ok().await;
    let admin = format!(
        "{}\n{}",
        admin_section("127.0.0.1:0", &[MGMT]),
        tls_table("admin.tls", FIXTURES)
    );
    let proxy = Proxy::start(&config(&mock, &admin)).await;
    let line = proxy.wait_log("admin API listening on https://").await;
    let addr = proxy.admin_addr().await;
    assert!(line.contains(&addr.to_string()), "{line}");
    let (tls, _) = connect(addr, &[b"h2", b"http/1.1"]).await;
    let mut send = h2(tls).await;
    let list = Request::get("https://localhost/api/v1/byok")
        .header("authorization", format!("Bearer {MGMT}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (r, _) = read(send.send_request(list).await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["data"].is_array(), "{}", r.text());
    // The proxy's own listener stays cleartext.
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 403);
}

#[test]
fn check_names_the_tls_file_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.key");
    for (server, says) in [
        (
            format!(
                "[server.tls]\ncert_file = \"{FIXTURES}/upstream.pem\"\nkey_file = \"{}\"\n",
                missing.display()
            ),
            "server.tls.key_file: cannot read",
        ),
        (
            format!(
                "[server.tls]\ncert_file = \"{FIXTURES}/upstream.key\"\nkey_file = \"{FIXTURES}/upstream.key\"\n"
            ),
            "server.tls.cert_file:",
        ),
        (
            format!(
                "[server.tls]\ncert_file = \"{FIXTURES}/upstream.pem\"\nkey_file = \"{FIXTURES}/second.key\"\n"
            ),
            "server.tls.key_file:",
        ),
        (
            format!("[server.tls]\ncert_file = \"{FIXTURES}/upstream.pem\"\n"),
            "key_file",
        ),
    ] {
        let (ok, err) = check_config(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{server}"));
        assert!(!ok, "{server}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(!err.contains("BEGIN"), "{err}");
    }
}
