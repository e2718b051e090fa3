//! TLS to https upstreams: certificates are verified (webpki roots plus
//! `server.upstream_ca_file`), and an unverified upstream never gets a request.

use crate::support::*;

const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ca.pem");

fn tls_config(mock: &Mock, host: &str, server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[providers.openai]
base_url = "https://{host}:{port}"

[[api_keys]]
hash = "{h}"
workspace_id = "ws-1"
user_id = "user-1"
{cred}
"#,
        port = mock.addr.port(),
        h = hash(GW),
        cred = cred("c-tls", "openai", "sk-tls-secret-000001", ""),
    )
}

#[tokio::test]
async fn https_upstreams_get_the_secret_over_verified_tls() {
    let mock = Mock::start_tls(|_| Reply::json(200, r#"{"tls":true}"#)).await;
    for host in ["localhost", "127.0.0.1"] {
        let cfg = tls_config(&mock, host, &format!("upstream_ca_file = \"{CA}\""));
        let proxy = Proxy::start(&cfg).await;
        let r = chat(&proxy, GW, "gpt-4o").await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(r.text(), r#"{"tls":true}"#);
    }
    let got = mock.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer sk-tls-secret-000001")
    );
}

#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_never_sees_the_request() {
    let mock = Mock::start_tls(|_| Reply::json(200, "{}")).await;
    let proxy = Proxy::start(&tls_config(&mock, "localhost", "")).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!((r.status, r.reason()), (502, "upstream_unreachable".into()));
    assert_eq!(mock.count(), 0);
    // The log says why (waiting for the line: stderr is read by another thread).
    proxy.wait_log("certificate").await;
}

#[tokio::test]
async fn a_bad_ca_file_is_a_named_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for (file, want) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (not_pem, "no PEM certificate"),
    ] {
        let text = format!("[server]\nupstream_ca_file = \"{}\"\n", file.display());
        let err = byok_proxy::Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("server.upstream_ca_file: ") && err.contains(want),
            "{err}"
        );
    }
}
