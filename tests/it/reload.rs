//! SPEC §7, reloads seen from the admin listener: `/readyz` generations and
//! `loaded_at`, reload counters and registry gauges, management keys rotated
//! in and out, and a change made right after start-up.

use std::time::SystemTime;

use crate::support::admin::*;
use crate::support::metrics::*;
use crate::support::*;

/// The management key that [`MGMT`] is rotated to.
const MGMT2: &str = "mk-test-management-key-two";

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
async fn reloads_update_counters_gauges_readyz_and_rotate_management_keys() {
    let mock = Mock::ok().await;
    let creds = cred("c1", "openai", "sk-admin-reload-000001", "");
    let before_start = SystemTime::now();
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &creds)).await;
    let admin = proxy.admin_addr().await;

    let readyz = |addr| async move {
        let r = admin_req(addr, "GET", "/readyz", &[], "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["ready"], true, "{v}");
        let loaded_at = v["loaded_at"].as_str().unwrap_or_else(|| panic!("{v}"));
        let loaded_at =
            time::OffsetDateTime::parse(loaded_at, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("loaded_at {loaded_at:?} is not RFC 3339: {e}"));
        (
            v["generation"].as_u64().unwrap(),
            SystemTime::from(loaded_at),
        )
    };
    let status_with = |key: &'static str| async move {
        admin_req(
            admin,
            "GET",
            "/api/v1/byok",
            &[("authorization", bearer(key))],
            "",
        )
        .await
        .status
    };

    let (generation, loaded_1) = readyz(admin).await;
    assert_eq!(generation, 1);
    assert!(
        before_start <= loaded_1 && loaded_1 <= SystemTime::now(),
        "{loaded_1:?}"
    );
    assert_eq!(
        (status_with(MGMT).await, status_with(MGMT2).await),
        (200, 401)
    );
    let (_, s) = scrape(admin).await;
    assert!(family(&s, "byok_config_reloads_total").is_empty());

    // A SIGHUP with the bytes in force parses nothing (issue 10): the same
    // generation, no reload counted.
    let mark = proxy.log_len();
    proxy.signal("HUP");
    proxy.wait_log_after(mark, "config unchanged").await;
    assert_eq!(readyz(admin).await, (1, loaded_1));
    assert!(!proxy.logs()[..].contains("config reloaded"));
    // A SIGHUP after an in-place change reloads: a new generation, counted.
    let mark = proxy.log_len();
    std::fs::write(
        &proxy.config_path,
        format!("{}\n# touched\n", admin_config(&mock, &[MGMT], &creds)),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.wait_log_after(mark, "config reloaded").await;
    let (generation, loaded_hup) = readyz(admin).await;
    assert_eq!(generation, 2);
    assert!(loaded_hup > loaded_1, "{loaded_hup:?}");

    // Reload 1: a second credential, one gateway key fewer, both management keys.
    let two_creds = format!(
        "{creds}{}",
        cred("c2", "openai", "sk-admin-reload-000002", "")
    );
    let without_gw2 = |cfg: String| cfg.replace(&hash(GW2), &"0".repeat(64));
    let mark = proxy.log_len();
    let mark_time = SystemTime::now();
    proxy.write_config(&without_gw2(admin_config(
        &mock,
        &[MGMT, MGMT2],
        &two_creds,
    )));
    proxy.wait_log_after(mark, "config reloaded").await;
    let (generation, loaded_2) = readyz(admin).await;
    assert_eq!(generation, 3);
    assert!(
        loaded_2 > loaded_hup && loaded_2 >= mark_time,
        "{loaded_2:?}"
    );
    assert_eq!(
        (status_with(MGMT).await, status_with(MGMT2).await),
        (200, 200)
    );
    let (text, s) = scrape(admin).await;
    assert_eq!(
        family(&s, "byok_config_reloads_total"),
        expect(&[("result=ok", 2.0)]),
        "{text}"
    );
    assert_eq!(gauge(&s, "byok_config_generation"), 3.0);
    assert_eq!(gauge(&s, "byok_registry_credentials"), 2.0);
    assert_eq!(
        gauge(&s, "byok_registry_api_keys"),
        4.0,
        "the zero hash replaced GW2's"
    );
    assert_eq!(list_ids(admin, "").await.1, 2);

    // Reload 2: the old management key is rotated out, now without the filler key.
    let rotated = admin_config(&mock, &[MGMT2], &two_creds).replace(
        &format!(
            "[[api_keys]]\nhash = \"{}\"\nworkspace_id = \"ws-1\"\nuser_id = \"user-2\"\n",
            hash(GW2)
        ),
        "",
    );
    assert!(!rotated.contains(&hash(GW2)));
    let mark = proxy.log_len();
    proxy.write_config(&rotated);
    proxy.wait_log_after(mark, "config reloaded").await;
    assert_eq!(readyz(admin).await.0, 4);
    assert_eq!(
        (status_with(MGMT).await, status_with(MGMT2).await),
        (401, 200)
    );
    let r = admin_get(admin, "/metrics").await;
    assert_refusal(&r, 401, "invalid_management_key", "rotated-out key");
    let s = parse_metrics(
        &admin_req(
            admin,
            "GET",
            "/metrics",
            &[("authorization", bearer(MGMT2))],
            "",
        )
        .await
        .text(),
    );
    assert_eq!(gauge(&s, "byok_registry_api_keys"), 3.0);
    assert_eq!(gauge(&s, "byok_config_generation"), 4.0);

    // A failed reload: counted; generation, loaded_at and keys stay.
    let (_, loaded_4) = readyz(admin).await;
    let mark = proxy.log_len();
    proxy.write_config(&format!("{rotated}\n[admin.nope]\n"));
    proxy.wait_log_after(mark, "config reload failed").await;
    assert_eq!(readyz(admin).await, (4, loaded_4));
    assert_eq!(
        (status_with(MGMT).await, status_with(MGMT2).await),
        (401, 200)
    );
    let s = parse_metrics(
        &admin_req(
            admin,
            "GET",
            "/metrics",
            &[("authorization", bearer(MGMT2))],
            "",
        )
        .await
        .text(),
    );
    // Every failed reload is counted once. The file watcher can take one
    // change for two on a loaded machine (CI saw it once): then the log has
    // a second failure, and so must the metric.
    let failures = proxy.logs().matches("config reload failed").count() as f64;
    assert!(failures >= 1.0);
    assert_eq!(
        family(&s, "byok_config_reloads_total"),
        expect(&[("result=failed", failures), ("result=ok", 3.0)])
    );
    assert_eq!(gauge(&s, "byok_config_generation"), 4.0);
    assert_eq!(gauge(&s, "byok_registry_credentials"), 2.0);

    // admin.listen changes need a restart: the listener stays where it is,
    // and the new keys apply there.
    let mark = proxy.log_len();
    let moved = admin_config(&mock, &[MGMT], &two_creds).replace(ADMIN_LISTEN, "127.0.0.3:0");
    proxy.write_config(&moved);
    proxy.wait_log_after(mark, "config reloaded").await;
    proxy
        .wait_log_after(mark, "admin.listen take effect on restart")
        .await;
    let listening = proxy.logs().matches("admin API listening on").count();
    assert_eq!(listening, 1, "{}", proxy.logs());
    assert_eq!(readyz(admin).await.0, 5);
    assert_eq!(
        (status_with(MGMT).await, status_with(MGMT2).await),
        (200, 401)
    );
    // The proxy port was never involved.
    assert_eq!(mock.count(), 0);
    for key in [MGMT, MGMT2] {
        assert!(!proxy.logs().contains(key));
    }
}

// A regression: a change in the first moments after start-up was missed.
#[tokio::test]
async fn a_change_right_after_start_up_is_reloaded() {
    let mock = Mock::ok().await;
    let cfg = config(&mock, &cred("c1", "openai", "sk-admin-race-0000001", ""));
    for round in 0..30 {
        let proxy = Proxy::start(&cfg).await;
        let mark = proxy.log_len();
        proxy.write_config(&format!(
            "{cfg}{}",
            cred("c2", "openai", "sk-admin-race-0000002", "")
        ));
        // Panics after PATIENCE when the change was missed.
        proxy.wait_log_after(mark, "config reloaded").await;
        assert!(proxy.logs().contains("credentials=2"), "round {round}");
    }
}

/// Issue 10: a config file emptied or cut short in place (`: > byok.toml`, a
/// `cp` over it, a writer that died) is never loaded as "no keys at all".
#[tokio::test]
async fn an_emptied_or_truncated_config_never_drops_every_key() {
    let mock = Mock::ok().await;
    let cfg = config(&mock, &cred("c1", "openai", "sk-truncated-00000001", ""));
    let proxy = Proxy::start(&cfg).await;
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);

    // Emptied in place: refused, on the file event and on SIGHUP alike.
    let mark = proxy.log_len();
    std::fs::write(&proxy.config_path, "").unwrap();
    proxy.wait_log_after(mark, "the config file is empty").await;
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
    let mark = proxy.log_len();
    proxy.signal("HUP");
    proxy.wait_log_after(mark, "the config file is empty").await;
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);

    // Cut short after the providers: valid TOML, but every gateway key and
    // credential gone. A file event refuses it...
    let cut = &cfg[..cfg.find("[[api_keys]]").unwrap()];
    let mark = proxy.log_len();
    proxy.write_config(cut);
    proxy
        .wait_log_after(mark, "removes every gateway key and credential")
        .await;
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
    assert_eq!(mock.count(), 4, "every request so far was served");

    // ...and a SIGHUP applies it: the operator says so.
    let mark = proxy.log_len();
    proxy.signal("HUP");
    proxy.wait_log_after(mark, "config reloaded").await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!((r.status, r.reason()), (401, "invalid_api_key".into()));
    assert_eq!(mock.count(), 4, "the refused request reached no upstream");
}
