//! SPEC §3: reload on file change and SIGHUP (a bad file keeps the old config),
//! graceful drain on SIGTERM, and the shipped configs.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::support::*;

#[tokio::test]
async fn a_changed_file_is_reloaded_and_a_bad_one_keeps_the_old_config() {
    let mock = Mock::ok().await;
    let one = config(&mock, &cred("c1", "openai", "sk-one-000000000001", ""));
    let proxy = Proxy::start(&one).await;
    assert_eq!(
        chat(&proxy, GW, "gpt-4o")
            .await
            .header("x-byok-credential-id"),
        Some("c1")
    );

    // A valid change: another credential, first in order.
    let mark = proxy.log_len();
    let two = format!(
        "{one}{}",
        cred("c0", "openai", "sk-two-000000000002", "sort_order = -1")
    );
    proxy.write_config(&two);
    proxy.wait_log_after(mark, "config reloaded").await;
    assert_eq!(
        chat(&proxy, GW, "gpt-4o")
            .await
            .header("x-byok-credential-id"),
        Some("c0")
    );

    // An invalid change: logged, naming the entry; the old snapshot serves on.
    let mark = proxy.log_len();
    proxy.write_config(&format!(
        "{two}{}",
        cred("c9", "nope", "sk-bad-0000000000003", "")
    ));
    let line = proxy.wait_log_after(mark, "config reload failed").await;
    proxy.wait_log_after(mark, "credentials[2].provider").await;
    assert!(!line.contains("sk-bad"), "{line}");
    assert_eq!(
        chat(&proxy, GW, "gpt-4o")
            .await
            .header("x-byok-credential-id"),
        Some("c0")
    );
    assert!(!proxy.logs().contains("sk-bad-0000000000003"));
}

#[tokio::test]
async fn sighup_reloads_and_in_flight_requests_keep_their_snapshot() {
    let mock = Mock::ok().await;
    let cfg = config(&mock, &cred("c1", "openai", "sk-one-000000000001", ""));
    let proxy = Proxy::start(&cfg).await;
    // Remove GW's key by rewriting the file in place (no rename), then SIGHUP.
    let without_gw = cfg.replace(&hash(GW), &"0".repeat(64));
    let mark = proxy.log_len();
    std::fs::write(&proxy.config_path, &without_gw).unwrap();
    proxy.signal("HUP");
    proxy.wait_log_after(mark, "config reloaded").await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!((r.status, r.reason()), (401, "invalid_api_key".into()));
    assert_eq!(chat(&proxy, GW2, "gpt-4o").await.status, 200);
}

#[tokio::test]
async fn sigterm_stops_accepting_and_drains_a_stream_then_exits_0() {
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let cancelled = std::sync::Arc::new(tokio::sync::Notify::new());
    let (g, c) = (gate.clone(), cancelled.clone());
    let mock = Mock::start(move |_| Reply::Stream {
        first: "data: 1\n\n".into(),
        rest: vec!["data: 2\n\n".into()],
        gate: g.clone(),
        cancelled: c.clone(),
    })
    .await;
    let mut proxy = Proxy::start(&config(
        &mock,
        &cred("c1", "openai", "sk-one-000000000001", ""),
    ))
    .await;
    let r = req("POST", &proxy.url("/openai/v1/chat/completions"), Some(GW))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","stream":true}"#,
        )))
        .unwrap();
    let res = client().request(r).await.unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "data: 1\n\n");

    let mark = proxy.log_len();
    proxy.signal("TERM");
    proxy.wait_log_after(mark, "shutting down").await;
    // No new connections.
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    // The in-flight stream finishes.
    gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "data: 2\n\n");
    let status = proxy.wait_exit().await;
    assert!(status.success(), "{status:?}\n{}", proxy.logs());
    assert!(proxy.logs().contains("drained"));
}

#[tokio::test]
async fn a_port_in_use_is_refused_though_the_proxy_listens_once_a_core() {
    // The serving threads share their port (SO_REUSEPORT): a second proxy
    // on that port must still fail to start, not share it.
    let mock = Mock::start(|_| Reply::json(200, "{}")).await;
    let first = Proxy::start(&config(&mock, "")).await;
    let second = config(&mock, "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", first.addr),
    );
    let path = first.dir.path().join("second.toml");
    std::fs::write(&path, second).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_byok-proxy"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PATIENCE, out).await.unwrap().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {} (server.listen)", first.addr)),
        "{err}"
    );
    // The first one still serves.
    let res = client()
        .request(
            req("GET", &first.url("/healthz"), None)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn every_shipped_config_loads() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = byok_proxy::Config::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            byok_proxy::Snapshot::from_config(&config)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "expected config/example.toml and config/quickstart.toml"
    );
}

#[tokio::test]
async fn the_readme_example_config_serves() {
    // `byok-proxy serve --config config/example.toml`, on an ephemeral port.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
        .unwrap();
    let text = text.replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let proxy = Proxy::start(&text).await;
    let r = send(
        req("GET", &proxy.url("/healthz"), None)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        req("GET", &proxy.url("/openai/v1/models"), Some("wrong"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.reason()), (401, "invalid_api_key".into()));
}
