//! SPEC §7, the admin listener: its own port, `/healthz` and `/readyz` open
//! to all, every other route behind exactly one `Authorization: Bearer`
//! management key; the proxy's port serves none of it.

use std::net::SocketAddr;

use serde_json::json;

use crate::support::admin::*;
use crate::support::*;

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn admin_routes_need_one_bearer_management_key_else_401() {
    let mock = Mock::ok().await;
    let proxy = Proxy::start(&admin_config(
        &mock,
        &[MGMT],
        &cred("c1", "openai", "sk-admin-auth-0000001", ""),
    ))
    .await;
    let admin = proxy.admin_addr().await;
    assert_ne!(admin, proxy.addr, "the admin API shares the proxy's socket");
    assert_eq!(admin.ip(), ADMIN_LISTEN.parse::<SocketAddr>().unwrap().ip());

    // Liveness and readiness need no key.
    for path in ["/healthz", "/readyz"] {
        let r = admin_req(admin, "GET", path, &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let r = admin_req(admin, "GET", "/healthz", &[], "").await;
    assert_eq!(r.json(), json!({"status": "ok"}));
    let r = admin_req(admin, "HEAD", "/healthz", &[], "").await;
    assert_eq!((r.status, r.body.len()), (200, 0));

    // The right key opens every route; the scheme is case-insensitive (RFC 9110).
    for auth in [
        bearer(MGMT),
        format!("bearer {MGMT}"),
        format!("BEARER {MGMT}"),
    ] {
        for path in ["/api/v1/byok", "/api/v1/byok/c1", "/metrics"] {
            let r = admin_req(admin, "GET", path, &[("authorization", auth.clone())], "").await;
            assert_eq!(r.status, 200, "{auth} {path}: {}", r.text());
        }
    }

    let wrong: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no Authorization", vec![]),
        ("a wrong key", vec![("authorization", bearer("mk-wrong"))]),
        (
            "a prefix of the key",
            vec![("authorization", bearer(&MGMT[..MGMT.len() - 1]))],
        ),
        (
            "the key plus a byte",
            vec![("authorization", bearer(&format!("{MGMT}x")))],
        ),
        (
            "the key's hash",
            vec![("authorization", bearer(&hash(MGMT)))],
        ),
        (
            "Basic user:key",
            vec![(
                "authorization",
                format!("Basic {}", base64(format!("admin:{MGMT}").as_bytes())),
            )],
        ),
        (
            "Basic key:",
            vec![(
                "authorization",
                format!("Basic {}", base64(format!("{MGMT}:").as_bytes())),
            )],
        ),
        (
            "Basic with the raw key",
            vec![("authorization", format!("Basic {MGMT}"))],
        ),
        (
            "the key without a scheme",
            vec![("authorization", MGMT.to_owned())],
        ),
        (
            "an empty Bearer",
            vec![("authorization", "Bearer ".to_owned())],
        ),
        (
            "a bare Bearer",
            vec![("authorization", "Bearer".to_owned())],
        ),
        ("a gateway API key", vec![("authorization", bearer(GW))]),
        ("the key in x-api-key", vec![("x-api-key", MGMT.to_owned())]),
        ("the key in api-key", vec![("api-key", MGMT.to_owned())]),
        (
            "the key twice",
            vec![
                ("authorization", bearer(MGMT)),
                ("authorization", bearer(MGMT)),
            ],
        ),
        (
            "a wrong key, then the key",
            vec![
                ("authorization", bearer("mk-wrong")),
                ("authorization", bearer(MGMT)),
            ],
        ),
        (
            "the key, then a wrong key",
            vec![
                ("authorization", bearer(MGMT)),
                ("authorization", bearer("mk-wrong")),
            ],
        ),
    ];
    let routes = [
        ("GET", "/api/v1/byok"),
        ("GET", "/api/v1/byok?workspace_id=ws-1&limit=1"),
        ("GET", "/api/v1/byok/c1"),
        ("GET", "/metrics"),
        ("HEAD", "/metrics"),
        // Without a key, neither the route table nor the store's writability shows.
        ("GET", "/no-such-route"),
        ("POST", "/api/v1/byok"),
        ("PATCH", "/api/v1/byok/c1"),
        ("DELETE", "/api/v1/byok/c1"),
        ("PUT", "/api/v1/byok/c1"),
    ];
    for (what, headers) in &wrong {
        for (method, path) in routes {
            let r = admin_req(admin, method, path, headers, "").await;
            let label = format!("{what}: {method} {path}");
            if method == "HEAD" {
                assert_eq!(r.status, 401, "{label}");
            } else {
                assert_refusal(&r, 401, "invalid_management_key", &label);
                assert!(!r.text().contains("c1"), "{label}: {}", r.text());
            }
        }
    }
    assert_eq!(mock.count(), 0, "an admin request reached the upstream");
}

#[tokio::test]
async fn the_proxy_port_never_serves_admin_routes() {
    let mock = Mock::ok().await;
    let creds = cred("c1", "openai", "sk-admin-port-00000001", "");
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &creds)).await;
    let admin = proxy.admin_addr().await;
    let auth = [("authorization", bearer(MGMT))];
    for path in [
        "/api/v1/byok",
        "/api/v1/byok?limit=1",
        "/api/v1/byok/c1",
        "/metrics",
        "/readyz",
    ] {
        // 404: no provider's route, and none of the one endpoint's (SPEC
        // §11), which answers its unknown paths before the key. Never the
        // admin API.
        let r = admin_req(proxy.addr, "GET", path, &auth, "").await;
        assert_eq!(r.status, 404, "proxy port {path}: {}", r.text());
        for needle in ["c1", "byok_", "total_count", "generation"] {
            assert!(!r.text().contains(needle), "{path}: {}", r.text());
        }
        // The same request on the admin port works.
        assert_eq!(admin_req(admin, "GET", path, &auth, "").await.status, 200);
    }
    let r = admin_req(proxy.addr, "POST", "/api/v1/byok", &auth, "{}").await;
    assert_eq!(r.status, 404, "{}", r.text());
    // The proxy's own liveness stays where it was.
    assert_eq!(
        admin_req(proxy.addr, "GET", "/healthz", &[], "")
            .await
            .status,
        200
    );
    assert_eq!(mock.count(), 0);

    // Without [admin] there is no admin listener, and the proxy port still has no /metrics.
    let proxy = Proxy::start(&config(&mock, &creds)).await;
    assert!(!proxy.logs().contains("admin API"), "{}", proxy.logs());
    for path in ["/metrics", "/api/v1/byok", "/readyz"] {
        let r = admin_req(proxy.addr, "GET", path, &auth, "").await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert_eq!(mock.count(), 0);
}

// A regression: the config check refused this pair.
#[tokio::test]
async fn admin_and_proxy_may_both_take_an_ephemeral_port_on_one_address() {
    let mock = Mock::ok().await;
    let cfg = config(
        &mock,
        &format!(
            "{}{}",
            admin_section("127.0.0.1:0", &[MGMT]),
            cred("c1", "openai", "sk-admin-ephemeral-0001", "")
        ),
    );
    let proxy = Proxy::start(&cfg).await;
    let admin = proxy.admin_addr().await;
    assert_eq!(admin.ip(), proxy.addr.ip());
    assert_ne!(admin.port(), proxy.addr.port());
    assert_eq!(admin_json(admin, "/api/v1/byok").await["total_count"], 1);
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
}
