//! Issue 3 / SPEC §7: the admin listener (management keys, its own port), the
//! `/api/v1/byok` read API in OpenRouter's `BYOKKey` shape, `/metrics`, the
//! access log with request ids, `/healthz` and `/readyz`, through real sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use crate::support::admin::*;
use crate::support::metrics::*;
use crate::support::*;

/// The management key that [`MGMT`] is rotated to.
const MGMT2: &str = "mk-test-management-key-two";

/// Canary provider secrets: none may ever appear in a response or a log line.
const CANARIES: [&str; 4] = [
    "sk-CANARY-admin-alpha-4e1f",
    "sk-CANARY-admin-bravo-8c2d",
    "sk-CANARY-admin-env-6b0a",
    "sk-CANARY-admin-header-1d9e",
];

/// Like `cred`, in workspace `ws`.
fn cred_in(ws: &str, id: &str, provider: &str, secret: &str, extra: &str) -> String {
    cred(id, provider, secret, extra).replace(
        "workspace_id = \"ws-1\"",
        &format!("workspace_id = \"{ws}\""),
    )
}

/// Panics if `needle` is anywhere in the response: body, header names or values.
fn assert_absent(r: &Resp, needle: &str, what: &str) {
    assert!(
        !contains_bytes(&r.body, needle),
        "{needle} in the body of {what}: {}",
        r.text()
    );
    for (k, v) in &r.headers {
        assert!(
            !contains_bytes(v.as_bytes(), needle) && !k.as_str().contains(needle),
            "{needle} in header {k} of {what}"
        );
    }
}

// ---- 1. the admin listener and its keys --------------------------------------

#[tokio::test]
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

// ---- 2. the BYOK read API ----------------------------------------------------

/// The JSON type of a value, arrays by element type.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(a) if a.iter().all(Value::is_string) => "array<string>",
        Value::Array(_) => "array<other>",
        Value::Object(_) => "object",
    }
}

/// OpenRouter's examples (a verbatim copy of shared/openrouter-byok-examples.json).
fn examples() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openrouter-byok-examples.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// From the examples: each field's allowed JSON types, and the required fields.
fn byok_key_schema(ex: &Value) -> (BTreeMap<String, BTreeSet<&'static str>>, BTreeSet<String>) {
    let samples = [
        &ex["byok_key_with_hash_allowlist"],
        &ex["list_response"]["data"][0],
    ];
    let mut types: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let mut required: Option<BTreeSet<String>> = None;
    for s in samples {
        let fields: BTreeSet<String> = s.as_object().unwrap().keys().cloned().collect();
        required = Some(match required {
            None => fields,
            Some(r) => r.intersection(&fields).cloned().collect(),
        });
        for (k, v) in s.as_object().unwrap() {
            types.entry(k.clone()).or_default().insert(kind(v));
        }
    }
    // The three allowlists have one type, "string arrays or null" (the file's
    // comment); each example shows only some of it, so pool them.
    let pooled: BTreeSet<&'static str> = types
        .iter()
        .filter(|(k, _)| k.starts_with("allowed_"))
        .flat_map(|(_, t)| t.iter().copied())
        .collect();
    assert_eq!(pooled, BTreeSet::from(["array<string>", "null"]));
    for (k, t) in &mut types {
        if k.starts_with("allowed_") {
            t.clone_from(&pooled);
        }
    }
    let required = required.unwrap();
    let optional: Vec<&String> = types.keys().filter(|k| !required.contains(*k)).collect();
    assert_eq!(optional, ["name"], "the examples changed");
    assert_eq!(types.len(), 12, "SPEC §2 has 12 fields");
    (types, required)
}

/// Panics unless `item` has exactly OpenRouter's fields with OpenRouter's types.
fn assert_byok_key_shape(item: &Value, ex: &Value) {
    let (types, required) = byok_key_schema(ex);
    let obj = item
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {item}"));
    for field in &required {
        assert!(obj.contains_key(field), "{field} missing from {item}");
    }
    for (field, v) in obj {
        let allowed = types
            .get(field)
            .unwrap_or_else(|| panic!("{field} is not a BYOKKey field: {item}"));
        // "name omitted or null when unset".
        let ok = allowed.contains(kind(v)) || (field == "name" && v.is_null());
        assert!(ok, "{field} is {} ({v}), not {allowed:?}", kind(v));
    }
}

#[tokio::test]
async fn byok_keys_have_exactly_openrouters_fields_and_types() {
    let ex = examples();
    let mock = Mock::ok().await;
    let full = "11111111-2222-3333-4444-555555555555";
    let creds = [
        cred(
            full,
            "openai",
            "sk-CANARY-shape-full-AbCd",
            &format!(
                "name = \"Production OpenAI Key\"\nis_fallback = true\nsort_order = 3\n\
                 allowed_api_key_hashes = [\"{}\"]\nallowed_models = [\"openai/gpt-4o\", \"openai/*\"]\n\
                 allowed_user_ids = [\"user-1\"]",
                hash(GW)
            ),
        ),
        cred(
            "c-bare",
            "anthropic",
            "sk-ant-CANARY-bare-WxYz",
            "disabled = true\nsort_order = -2\ncreated_at = \"2024-02-29T23:59:59+02:00\"",
        ),
        // Too short to show any of it; an empty allowlist stays [] (admits nothing), not null.
        cred("c-short", "openai", "sk-short", "allowed_models = []"),
    ]
    .concat();
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &creds)).await;
    let admin = proxy.admin_addr().await;

    let list = admin_json(admin, "/api/v1/byok").await;
    let example_list = &ex["list_response"];
    assert_eq!(keys(&list), keys(example_list));
    assert_eq!(
        kind(&list["total_count"]),
        kind(&example_list["total_count"])
    );
    assert_eq!(list["total_count"], 3);
    let items = list["data"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for item in items {
        assert_byok_key_shape(item, &ex);
        let id = item["id"].as_str().unwrap();
        // GET by id: {"data": the same object}.
        let one = admin_json(admin, &format!("/api/v1/byok/{id}")).await;
        assert_eq!(keys(&one), ["data"]);
        assert_eq!(&one["data"], item);
    }
    let by_id = |id: &str| items.iter().find(|i| i["id"] == id).unwrap().clone();

    assert_eq!(
        by_id(full),
        json!({
            "id": full,
            "workspace_id": "ws-1",
            "provider": "openai",
            "name": "Production OpenAI Key",
            "label": "sk-...AbCd",
            "created_at": "2025-08-24T10:30:00Z",
            "disabled": false,
            "is_fallback": true,
            "sort_order": 3,
            "allowed_api_key_hashes": [hash(GW)],
            "allowed_models": ["openai/gpt-4o", "openai/*"],
            "allowed_user_ids": ["user-1"],
        })
    );
    let mut bare = by_id("c-bare");
    assert!(
        bare.get("name").is_none_or(Value::is_null),
        "unset name: {bare}"
    );
    bare.as_object_mut().unwrap().remove("name");
    assert_eq!(
        bare,
        json!({
            "id": "c-bare",
            "workspace_id": "ws-1",
            "provider": "anthropic",
            "label": "sk-...WxYz",
            "created_at": "2024-02-29T23:59:59+02:00",
            "disabled": true,
            "is_fallback": false,
            "sort_order": -2,
            "allowed_api_key_hashes": null,
            "allowed_models": null,
            "allowed_user_ids": null,
        })
    );
    let short = by_id("c-short");
    assert_eq!(short["label"], "...");
    assert_eq!(short["allowed_models"], json!([]));
    assert!(short["allowed_user_ids"].is_null());

    // The examples themselves pass the same check (the check is not vacuous).
    assert_byok_key_shape(&ex["byok_key_with_hash_allowlist"], &ex);
    assert_byok_key_shape(&ex["list_response"]["data"][0], &ex);

    let text = list.to_string();
    for secret in ["CANARY", "shape-full", "bare-", "sk-short"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(mock.count(), 0);
}

/// Ten credentials, listed in the file out of order.
fn paging_creds() -> String {
    [
        cred_in(
            "ws-2",
            "w-b",
            "openai",
            "sk-paging-000000000wb",
            "sort_order = 1",
        ),
        cred_in(
            "ws-1",
            "o-3",
            "openai",
            "sk-paging-000000000o3",
            "sort_order = 3",
        ),
        cred_in(
            "ws-1",
            "a-2",
            "anthropic",
            "sk-paging-000000000a2",
            "sort_order = 2",
        ),
        cred_in(
            "ws-1",
            "o-fb",
            "openai",
            "sk-paging-00000000ofb",
            "is_fallback = true\nsort_order = -5",
        ),
        cred_in(
            "ws-2",
            "w-a",
            "openai",
            "sk-paging-000000000wa",
            "sort_order = 1",
        ),
        cred_in(
            "ws-1",
            "o-late",
            "openai",
            "sk-paging-0000000olat",
            "sort_order = 1\ncreated_at = \"2025-09-01T00:00:00Z\"",
        ),
        cred_in(
            "ws-1",
            "o-1",
            "openai",
            "sk-paging-000000000o1",
            "sort_order = 1",
        ),
        cred_in(
            "ws-2",
            "w-c",
            "openai",
            "sk-paging-000000000wc",
            "sort_order = 0",
        ),
        cred_in(
            "ws-1",
            "a-1",
            "anthropic",
            "sk-paging-000000000a1",
            "sort_order = 1",
        ),
        cred_in(
            "ws-1",
            "o-off",
            "openai",
            "sk-paging-00000000off",
            "disabled = true\nsort_order = 0",
        ),
    ]
    .concat()
}

#[tokio::test]
async fn paging_is_bounded_stable_and_total_count_ignores_it() {
    let mock = Mock::ok().await;
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &paging_creds())).await;
    let admin = proxy.admin_addr().await;

    // Workspace, provider, then candidate order (non-fallback first, sort_order,
    // created_at, id); disabled credentials are listed too.
    let expected = [
        "a-1", "a-2", "o-off", "o-1", "o-late", "o-3", "o-fb", "w-c", "w-a", "w-b",
    ];
    let (all, total) = list_ids(admin, "limit=100").await;
    assert_eq!(
        (all.as_slice(), total),
        (&expected.map(String::from)[..], 10)
    );
    assert_eq!(list_ids(admin, "").await, (all.clone(), 10), "default page");
    assert_eq!(
        list_ids(admin, "offset=0&limit=100").await,
        (all.clone(), 10)
    );
    assert_eq!(
        list_ids(admin, "limit=100").await,
        (all.clone(), 10),
        "stable"
    );

    // limit=1, page by page: the same order; total_count unaffected.
    let mut walked = Vec::new();
    for offset in 0..=10 {
        let (page, total) = list_ids(admin, &format!("offset={offset}&limit=1")).await;
        assert_eq!(total, 10, "offset {offset}");
        assert_eq!(page.len(), usize::from(offset < 10), "offset {offset}");
        walked.extend(page);
    }
    assert_eq!(walked, all);
    let mut pages = Vec::new();
    for offset in [0, 3, 6, 9] {
        let (page, total) = list_ids(admin, &format!("limit=3&offset={offset}")).await;
        assert_eq!(total, 10);
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
    assert_eq!(pages.concat(), all);

    // Beyond the end: an empty page, the same total.
    for offset in ["10", "11", "99999", &usize::MAX.to_string()] {
        assert_eq!(
            list_ids(admin, &format!("offset={offset}")).await,
            (vec![], 10),
            "offset={offset}"
        );
    }

    // Out of bounds or not a whole number: 400.
    for bad in [
        "limit=0",
        "limit=101",
        "limit=1000",
        "limit=-1",
        "limit=1.5",
        "limit=ten",
        "limit=",
        "limit=99999999999999999999999",
        "offset=-1",
        "offset=1.5",
        "offset=x",
        "offset=",
        "offset=99999999999999999999999",
    ] {
        let r = admin_get(admin, &format!("/api/v1/byok?{bad}")).await;
        assert_refusal(&r, 400, "invalid_request", bad);
    }

    // Filters, alone, together, with paging, and matching nothing; each equals
    // the full list filtered, in the same order.
    let full = admin_json(admin, "/api/v1/byok").await["data"].clone();
    let items = full.as_array().unwrap();
    let filtered = |ws: Option<&str>, provider: Option<&str>| -> Vec<String> {
        items
            .iter()
            .filter(|c| ws.is_none_or(|w| c["workspace_id"] == w))
            .filter(|c| provider.is_none_or(|p| c["provider"] == p))
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, ws, provider, n) in [
        ("workspace_id=ws-2", Some("ws-2"), None, 3),
        ("workspace_id=ws%2D2", Some("ws-2"), None, 3),
        ("provider=anthropic", None, Some("anthropic"), 2),
        ("provider=openai", None, Some("openai"), 8),
        (
            "workspace_id=ws-1&provider=openai",
            Some("ws-1"),
            Some("openai"),
            5,
        ),
        (
            "provider=openai&workspace_id=ws-2&other=ignored",
            Some("ws-2"),
            Some("openai"),
            3,
        ),
        (
            "workspace_id=ws-2&provider=anthropic",
            Some("ws-2"),
            Some("anthropic"),
            0,
        ),
        ("workspace_id=ws-9", Some("ws-9"), None, 0),
        ("provider=nope", None, Some("nope"), 0),
    ] {
        let want = filtered(ws, provider);
        assert_eq!(want.len(), n, "{query}");
        assert_eq!(list_ids(admin, query).await, (want, n as u64), "{query}");
    }
    assert_eq!(
        list_ids(admin, "workspace_id=ws-1&provider=openai&offset=4&limit=2").await,
        (vec!["o-fb".to_owned()], 5)
    );
    assert_eq!(
        list_ids(admin, "workspace_id=ws-1&provider=openai&offset=1&limit=2").await,
        (vec!["o-1".to_owned(), "o-late".to_owned()], 5)
    );

    // One by id; unknown ids and malformed paths are 404.
    for item in items {
        let id = item["id"].as_str().unwrap();
        assert_eq!(
            admin_json(admin, &format!("/api/v1/byok/{id}")).await,
            json!({ "data": item })
        );
    }
    for path in [
        "/api/v1/byok/nope",
        "/api/v1/byok/o-1/extra",
        "/api/v1/byok/",
        "/api/v1/byokx",
        "/api/v1/byok/o-1%2Fx",
        "/api/v2/byok",
    ] {
        let r = admin_get(admin, path).await;
        assert_refusal(&r, 404, "not_found", path);
        assert!(!r.text().contains("\"data\""), "{path}");
    }
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn writes_answer_405_on_the_read_only_file_store_and_change_nothing() {
    let mock = Mock::ok().await;
    let creds = cred("c1", "openai", "sk-admin-write-0000001", "");
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &creds)).await;
    let admin = proxy.admin_addr().await;
    let before = admin_json(admin, "/api/v1/byok").await;
    let auth = [
        ("authorization", bearer(MGMT)),
        ("content-type", "application/json".to_owned()),
    ];
    let new_secret = "sk-CANARY-posted-secret-77aa";
    let writes = [
        (
            "POST",
            "/api/v1/byok",
            format!(r#"{{"provider":"openai","key":"{new_secret}","workspace_id":"ws-1"}}"#),
        ),
        (
            "PATCH",
            "/api/v1/byok/c1",
            format!(r#"{{"disabled":true,"key":"{new_secret}"}}"#),
        ),
        ("DELETE", "/api/v1/byok/c1", String::new()),
        // The store is read-only whatever the id.
        (
            "PATCH",
            "/api/v1/byok/nope",
            r#"{"disabled":true}"#.to_owned(),
        ),
        ("DELETE", "/api/v1/byok/nope", String::new()),
    ];
    for (method, path, body) in &writes {
        let r = admin_req(admin, method, path, &auth, body).await;
        let what = format!("{method} {path}");
        assert_refusal(&r, 405, "read_only_store", &what);
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("read-only"), "{what}: {message}");
        assert_absent(&r, new_secret, &what);
        // Without a key, a write is a 401 like everything else.
        let r = admin_req(admin, method, path, &auth[1..], body).await;
        assert_refusal(&r, 401, "invalid_management_key", &what);
    }
    for (method, path) in [
        ("PUT", "/api/v1/byok"),
        ("DELETE", "/api/v1/byok"),
        ("PATCH", "/api/v1/byok"),
        ("PUT", "/api/v1/byok/c1"),
        ("POST", "/api/v1/byok/c1"),
    ] {
        let r = admin_req(admin, method, path, &auth, "{}").await;
        assert_refusal(&r, 405, "method_not_allowed", &format!("{method} {path}"));
    }
    // Nothing was created, changed or deleted.
    assert_eq!(admin_json(admin, "/api/v1/byok").await, before);
    assert_eq!(
        admin_json(admin, "/api/v1/byok/c1").await["data"]["disabled"],
        false
    );
    // And the credential still serves.
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
    assert_eq!(mock.count(), 1);
    assert!(!proxy.logs().contains(new_secret));
}

#[tokio::test]
async fn no_secret_in_any_admin_response_nor_in_the_process_output() {
    let mock = Mock::start(|r| {
        // Echo the secret back, as some providers do in their errors.
        let auth = r.header("authorization").unwrap_or("").to_owned();
        Reply::json(200, &format!(r#"{{"seen":"{auth}"}}"#))
    })
    .await;
    let dead = dead_addr();
    let creds = [
        cred(
            "c-alpha",
            "openai",
            CANARIES[0],
            "name = \"alpha\"\nallowed_models = [\"openai/gpt-4o\"]",
        ),
        cred("c-bravo", "anthropic", CANARIES[1], "disabled = true"),
        format!(
            "[[credentials]]\nid = \"c-env\"\nworkspace_id = \"ws-1\"\nprovider = \"groq\"\n\
             key_env = \"BYOK_TEST_ADMIN_CANARY\"\nbase_url = \"http://{dead}\"\n\
             created_at = \"2025-08-24T10:30:00Z\"\nheaders = {{ \"x-extra-secret\" = \"{}\" }}\n",
            CANARIES[3]
        ),
    ]
    .concat();
    let cfg = admin_config(&mock, &[MGMT], &creds);
    let mut proxy = Proxy::start_with_env(&cfg, &[("BYOK_TEST_ADMIN_CANARY", CANARIES[2])]).await;
    let admin = proxy.admin_addr().await;

    // Traffic, so that /metrics has series for every credential.
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
    assert_eq!(chat(&proxy, GW, "o1").await.status, 403);
    let r = post(
        &proxy,
        "/groq/openai/v1/chat/completions",
        GW,
        r#"{"model":"m"}"#,
    )
    .await;
    assert_eq!(r.reason(), "upstream_unreachable");

    let auth = vec![("authorization", bearer(MGMT))];
    let mut responses = Vec::new();
    for (method, path, headers) in [
        ("GET", "/healthz", vec![]),
        ("GET", "/readyz", vec![]),
        ("GET", "/metrics", auth.clone()),
        ("GET", "/api/v1/byok", auth.clone()),
        ("GET", "/api/v1/byok?provider=groq", auth.clone()),
        (
            "GET",
            "/api/v1/byok?workspace_id=ws-1&offset=1&limit=1",
            auth.clone(),
        ),
        ("GET", "/api/v1/byok?limit=0", auth.clone()),
        ("GET", "/api/v1/byok/c-alpha", auth.clone()),
        ("GET", "/api/v1/byok/c-bravo", auth.clone()),
        ("GET", "/api/v1/byok/c-env", auth.clone()),
        ("GET", "/api/v1/byok/nope", auth.clone()),
        ("GET", "/nope", auth.clone()),
        ("GET", "/api/v1/byok", vec![]),
        (
            "GET",
            "/api/v1/byok/c-alpha",
            vec![("authorization", bearer(GW))],
        ),
        ("POST", "/api/v1/byok", auth.clone()),
        ("PATCH", "/api/v1/byok/c-alpha", auth.clone()),
        ("DELETE", "/api/v1/byok/c-env", auth.clone()),
        ("PUT", "/api/v1/byok/c-env", auth.clone()),
    ] {
        let r = admin_req(admin, method, path, &headers, "").await;
        responses.push((format!("{method} {path}"), r));
    }
    assert_eq!(responses[3].1.json()["total_count"], 3);
    assert!(responses[2].1.text().contains("c-env"));

    // A reload that fails and one that succeeds log too.
    let mark = proxy.log_len();
    proxy.write_config(&format!("{cfg}\n[[credentials]]\nid = 1\n"));
    proxy.wait_log_after(mark, "config reload failed").await;
    let mark = proxy.log_len();
    proxy.write_config(&cfg.replace("name = \"alpha\"", "name = \"alpha2\""));
    proxy.wait_log_after(mark, "config reloaded").await;
    responses.push((
        "GET /api/v1/byok after reload".into(),
        admin_get(admin, "/api/v1/byok").await,
    ));
    proxy.signal("TERM");
    assert!(proxy.wait_exit().await.success());

    let logs = proxy.logs();
    for canary in CANARIES {
        for needle in [canary, &canary[3..16]] {
            for (what, r) in &responses {
                assert_absent(r, needle, what);
            }
            assert!(!logs.contains(needle), "{needle} in the output:\n{logs}");
        }
    }
    for key in [MGMT, GW] {
        assert!(!logs.contains(key), "raw key {key} in the output");
    }
}

// ---- 3. /metrics -------------------------------------------------------------

#[tokio::test]
async fn metrics_count_a_mix_of_allowed_refused_and_failing_requests_exactly() {
    let mock = Mock::start(rate_limit_sk_429).await;
    let dead = dead_addr();
    let creds = [
        cred(
            "oa-1",
            "openai",
            "sk-200-metrics-oa1",
            "allowed_models = [\"openai/gpt-4o\"]",
        ),
        cred("oa-off", "openai", "sk-200-metrics-off", "disabled = true"),
        cred(
            "an-429",
            "anthropic",
            "sk-429-metrics-an1",
            "sort_order = 0",
        ),
        cred(
            "an-200",
            "anthropic",
            "sk-200-metrics-an2",
            "sort_order = 1",
        ),
        cred(
            "gq-dead",
            "groq",
            "sk-200-metrics-gq1",
            &format!("base_url = \"http://{dead}\""),
        ),
    ]
    .concat();
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &creds)).await;
    let admin = proxy.admin_addr().await;

    // Before any request: the registry gauges, generation 1, no reloads.
    let (_, s) = scrape(admin).await;
    assert_eq!(gauge(&s, "byok_registry_api_keys"), 4.0);
    assert_eq!(
        gauge(&s, "byok_registry_credentials"),
        5.0,
        "disabled included"
    );
    assert_eq!(gauge(&s, "byok_config_generation"), 1.0);
    assert!(family(&s, "byok_config_reloads_total").is_empty());
    assert!(family(&s, "byok_requests_total").is_empty());

    let leaky_model = "model-MUSTNOTLEAK-3f9";
    let forwarded_model = "claude-LEAKCHECK-77";
    let mut statuses = Vec::new();
    // Forwarded, twice.
    statuses.push(chat(&proxy, GW, "gpt-4o").await.status);
    statuses.push(chat(&proxy, GW2, "gpt-4o").await.status);
    // Forwarded after a failover 429 -> 200.
    let r = post(
        &proxy,
        "/anthropic/v1/messages",
        GW,
        &format!(r#"{{"model":"{forwarded_model}"}}"#),
    )
    .await;
    assert_eq!(r.header("x-byok-attempts"), Some("2"));
    statuses.push(r.status);
    // Refused: no credential admits the model; an unknown key; no key.
    statuses.push(chat(&proxy, GW, leaky_model).await.status);
    statuses.push(chat(&proxy, "gw-unknown-key", "gpt-4o").await.status);
    statuses.push(
        send(
            req("POST", &proxy.url("/openai/v1/chat/completions"), None)
                .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o"}"#)))
                .unwrap(),
        )
        .await
        .status,
    );
    // Unknown providers, with client-chosen segments that must not become labels.
    statuses.push(
        post(&proxy, "/weird-SEG-q7x/v1/chat", GW, "{}")
            .await
            .status,
    );
    statuses.push(
        post(&proxy, "/Prov-In-Path-zz1/v1/x", GW, "{}")
            .await
            .status,
    );
    // No route at all.
    for path in ["/", "/just-one-segment-RL9"] {
        let r = send(
            req("GET", &proxy.url(path), Some(GW))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        statuses.push(r.status);
    }
    // Failing: the upstream is unreachable.
    statuses.push(
        post(
            &proxy,
            "/groq/openai/v1/chat/completions",
            GW,
            r#"{"model":"m"}"#,
        )
        .await
        .status,
    );
    assert_eq!(
        statuses,
        [200, 200, 200, 403, 401, 401, 404, 404, 404, 404, 502]
    );
    assert_eq!(mock.count(), 4, "2 openai + 2 anthropic attempts upstream");

    let (text, s) = scrape(admin).await;
    assert_eq!(
        family(&s, "byok_requests_total"),
        expect(&[
            ("outcome=forwarded,provider=anthropic", 1.0),
            ("outcome=forwarded,provider=openai", 2.0),
            ("outcome=invalid_api_key,provider=openai", 1.0),
            ("outcome=missing_api_key,provider=openai", 1.0),
            ("outcome=no_eligible_credential,provider=openai", 1.0),
            ("outcome=not_found,provider=none", 2.0),
            ("outcome=unknown_provider,provider=unknown", 2.0),
            ("outcome=upstream_unreachable,provider=groq", 1.0),
        ]),
        "{text}"
    );
    assert_eq!(
        family(&s, "byok_upstream_attempts_total"),
        expect(&[
            (
                "credential_id=an-200,provider=anthropic,status_class=2xx",
                1.0
            ),
            (
                "credential_id=an-429,provider=anthropic,status_class=4xx",
                1.0
            ),
            (
                "credential_id=gq-dead,provider=groq,status_class=error",
                1.0
            ),
            ("credential_id=oa-1,provider=openai,status_class=2xx", 2.0),
        ]),
        "{text}"
    );
    assert_eq!(
        family(&s, "byok_failovers_total"),
        expect(&[("provider=anthropic", 1.0)]),
        "{text}"
    );
    // The proxy's own time: every request; upstream wait: those that went upstream.
    assert_eq!(
        family(&s, "byok_proxy_own_seconds_count"),
        expect(&[
            ("provider=anthropic", 1.0),
            ("provider=groq", 1.0),
            ("provider=none", 2.0),
            ("provider=openai", 5.0),
            ("provider=unknown", 2.0),
        ]),
        "{text}"
    );
    assert_eq!(
        family(&s, "byok_upstream_wait_seconds_count"),
        expect(&[
            ("provider=anthropic", 1.0),
            ("provider=groq", 1.0),
            ("provider=openai", 2.0),
        ]),
        "{text}"
    );
    for hist in ["byok_proxy_own_seconds", "byok_upstream_wait_seconds"] {
        let counts = family(&s, &format!("{hist}_count"));
        let sums = family(&s, &format!("{hist}_sum"));
        assert_eq!(
            counts.keys().collect::<Vec<_>>(),
            sums.keys().collect::<Vec<_>>()
        );
        for (series, count) in &counts {
            assert!(sums[series] > 0.0, "{hist}_sum{{{series}}} is 0");
            // Buckets are cumulative and end in +Inf = count.
            let mut buckets: Vec<(f64, f64)> = s
                .iter()
                .filter(|b| b.name == format!("{hist}_bucket"))
                .filter(|b| format!("provider={}", b.labels["provider"]) == *series)
                .map(|b| (b.labels["le"].parse().unwrap(), b.value))
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(buckets.len() > 2, "{hist} {series}: {buckets:?}");
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
            assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, *count));
        }
    }
    assert_eq!(gauge(&s, "byok_registry_credentials"), 5.0);
    assert_eq!(gauge(&s, "byok_config_generation"), 1.0);

    // Bounded labels: every value comes from the config or a fixed set.
    let providers = ["openai", "anthropic", "groq", "unknown", "none"];
    let credential_ids = ["oa-1", "oa-off", "an-429", "an-200", "gq-dead"];
    let outcomes = [
        "forwarded",
        "missing_api_key",
        "invalid_api_key",
        "ambiguous_api_key",
        "unknown_provider",
        "not_found",
        "method_not_allowed",
        "invalid_request",
        "invalid_body",
        "ambiguous_model",
        "no_eligible_credential",
        "no_credential",
        "body_too_large",
        "unsupported_encoding",
        "upstream_unreachable",
        "upstream_rejected_credential",
        "upstream_timeout",
    ];
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "error", "timeout"];
    for sample in &s {
        for (k, v) in &sample.labels {
            let ok = match k.as_str() {
                "provider" => providers.contains(&v.as_str()),
                "credential_id" => credential_ids.contains(&v.as_str()),
                "outcome" => outcomes.contains(&v.as_str()),
                "status_class" => classes.contains(&v.as_str()),
                "result" => ["ok", "failed"].contains(&v.as_str()),
                "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
                _ => false,
            };
            assert!(ok, "label {k}={v:?} on {}", sample.name);
        }
    }
    for needle in [
        leaky_model,
        forwarded_model,
        "gpt-4o",
        "weird-SEG",
        "q7x",
        "Prov-In-Path",
        "RL9",
        "chat/completions",
        "v1/messages",
        "sk-200-",
        "sk-429-",
        GW,
        GW2,
        "gw-unknown-key",
        &hash(GW)[..8],
        "user-1",
    ] {
        assert!(!text.contains(needle), "{needle} in /metrics:\n{text}");
    }
}

#[tokio::test]
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

    // A SIGHUP reloads even an unchanged file: a new generation, counted.
    let mark = proxy.log_len();
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
    assert_eq!(
        family(&s, "byok_config_reloads_total"),
        expect(&[("result=failed", 1.0), ("result=ok", 3.0)])
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

// ---- 4. the access log and request ids ----------------------------------------

/// The fields of the access-log line with `request_id={id}`, waiting for it.
async fn access_line(proxy: &Proxy, id: &str) -> BTreeMap<String, String> {
    let line = proxy.wait_log(&format!("request_id={id} ")).await;
    parse_access(&line)
}

/// `k=v` and `k="v"` fields after `byok_proxy::access: request`.
fn parse_access(line: &str) -> BTreeMap<String, String> {
    let (_, rest) = line
        .split_once("byok_proxy::access: request ")
        .unwrap_or_else(|| panic!("not an access-log line: {line}"));
    let mut fields = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ' ').collect();
        }
        assert!(
            fields.insert(key.clone(), value).is_none(),
            "{key} twice: {line}"
        );
    }
    fields
}

/// POST with a gateway key and an optional `x-request-id`.
async fn post_id(proxy: &Proxy, path: &str, key: &str, body: &str, id: Option<&str>) -> Resp {
    let mut b = req("POST", &proxy.url(path), Some(key)).header("content-type", "application/json");
    if let Some(id) = id {
        b = b.header("x-request-id", id);
    }
    send(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

fn assert_generated_id(id: &str) {
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a generated id: {id:?}"
    );
}

#[tokio::test]
async fn one_access_line_per_request_with_its_fields_and_no_secret() {
    let mock = Mock::start(rate_limit_sk_429).await;
    let creds = [
        cred(
            "oa-1",
            "openai",
            "sk-200-access-oa1",
            "allowed_models = [\"openai/gpt-4o\"]",
        ),
        cred("an-429", "anthropic", "sk-429-access-an1", "sort_order = 0"),
        cred("an-200", "anthropic", "sk-200-access-an2", "sort_order = 1"),
    ]
    .concat();
    let proxy = Proxy::start(&admin_config(&mock, &[MGMT], &creds)).await;
    let chat_body = |model: &str| format!(r#"{{"model":"{model}","messages":[]}}"#);
    let chat_path = "/openai/v1/chat/completions";

    // Forwarded: the model is shown.
    let r = post_id(
        &proxy,
        chat_path,
        GW,
        &chat_body("gpt-4o"),
        Some("req-fwd-1"),
    )
    .await;
    assert_eq!(r.status, 200);
    let f = access_line(&proxy, "req-fwd-1").await;
    let latency: f64 = f["latency_ms"].parse().unwrap();
    let own_us: f64 = f["own_us"].parse().unwrap();
    assert!(
        latency > 0.0 && own_us >= 0.0 && own_us / 1e3 <= latency,
        "{f:?}"
    );
    let mut expected = BTreeMap::from([
        ("request_id", "req-fwd-1"),
        ("status", "200"),
        ("outcome", "forwarded"),
        ("provider", "openai"),
        ("workspace", "ws-1"),
        ("user", "user-1"),
        ("model", "gpt-4o"),
        ("attempts", "oa-1:200"),
    ])
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect::<BTreeMap<_, _>>();
    expected.insert("key".into(), hash(GW)[..8].to_owned());
    expected.insert("latency_ms".into(), f["latency_ms"].clone());
    expected.insert("own_us".into(), f["own_us"].clone());
    assert_eq!(f, expected);

    // Refused by the model allowlist: the client's model is not logged.
    let refused_model = "o1-REFUSED-model-x9";
    let r = post_id(
        &proxy,
        chat_path,
        GW2,
        &chat_body(refused_model),
        Some("req-ref-2"),
    )
    .await;
    assert_eq!(r.reason(), "no_eligible_credential");
    let f = access_line(&proxy, "req-ref-2").await;
    for (k, v) in [
        ("status", "403"),
        ("outcome", "no_eligible_credential"),
        ("provider", "openai"),
        ("workspace", "ws-1"),
        ("user", "user-2"),
        ("model", "-"),
        ("attempts", "-"),
    ] {
        assert_eq!(f[k], v, "{k}: {f:?}");
    }
    assert_eq!(f["key"], hash(GW2)[..8]);

    // A failover: both attempts with their statuses; the admitted model shown.
    let r = post_id(
        &proxy,
        "/anthropic/v1/messages",
        GW,
        &chat_body("claude-x"),
        Some("req-fo-3"),
    )
    .await;
    assert_eq!(
        (r.status, r.header("x-byok-credential-id")),
        (200, Some("an-200"))
    );
    let f = access_line(&proxy, "req-fo-3").await;
    for (k, v) in [
        ("status", "200"),
        ("outcome", "forwarded"),
        ("provider", "anthropic"),
        ("model", "claude-x"),
        ("attempts", "an-429:429,an-200:200"),
    ] {
        assert_eq!(f[k], v, "{k}: {f:?}");
    }

    // An unknown gateway key: no principal, no key prefix.
    let unknown_key = "gw-CANARY-unknown-raw-key";
    let r = post_id(
        &proxy,
        chat_path,
        unknown_key,
        &chat_body("gpt-4o"),
        Some("req-bad-4"),
    )
    .await;
    assert_eq!(r.reason(), "invalid_api_key");
    let f = access_line(&proxy, "req-bad-4").await;
    for (k, v) in [
        ("status", "401"),
        ("outcome", "invalid_api_key"),
        ("provider", "openai"),
        ("workspace", "-"),
        ("user", "-"),
        ("key", "-"),
        ("model", "-"),
    ] {
        assert_eq!(f[k], v, "{k}: {f:?}");
    }

    // An unknown provider: the client's segment is not the provider field.
    let r = post_id(&proxy, "/Weird-PROV-k2/v1/x", GW, "{}", Some("req-unk-5")).await;
    assert_eq!(r.status, 404);
    let f = access_line(&proxy, "req-unk-5").await;
    assert_eq!(
        (f["provider"].as_str(), f["model"].as_str()),
        ("unknown", "-")
    );

    // A final request: once its line is read, every earlier line has been too.
    let r = post_id(
        &proxy,
        chat_path,
        GW,
        &chat_body("gpt-4o"),
        Some("req-last-6"),
    )
    .await;
    assert_eq!(r.status, 200);
    access_line(&proxy, "req-last-6").await;
    let logs = proxy.logs();
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("byok_proxy::access"))
        .collect();
    assert_eq!(
        access.len(),
        6,
        "one line per request:\n{}",
        access.join("\n")
    );
    for id in [
        "req-fwd-1",
        "req-ref-2",
        "req-fo-3",
        "req-bad-4",
        "req-unk-5",
        "req-last-6",
    ] {
        let n = access
            .iter()
            .filter(|l| l.contains(&format!("request_id={id} ")))
            .count();
        assert_eq!(n, 1, "{id}");
    }
    for needle in [
        GW,
        GW2,
        unknown_key,
        &hash(GW),
        &hash(GW2),
        &hash(unknown_key),
        refused_model,
        "Weird-PROV-k2",
        "sk-200-access",
        "sk-429-access",
    ] {
        assert!(!logs.contains(needle), "{needle} in the output:\n{logs}");
    }
}

#[tokio::test]
async fn request_ids_are_taken_or_made_sent_upstream_and_echoed() {
    let mock = Mock::start(|r| {
        if r.uri.contains("upstream-id") {
            Reply::Full(
                200,
                vec![("x-request-id", "upstream-own-id-77".into())],
                "{}".into(),
            )
        } else {
            Reply::json(200, "{}")
        }
    })
    .await;
    let proxy = Proxy::start(&config(
        &mock,
        &cred("c1", "openai", "sk-admin-reqid-000001", ""),
    ))
    .await;
    let path = "/openai/v1/chat/completions";
    let body = r#"{"model":"gpt-4o"}"#;
    let ids = |r: &Resp| {
        (
            r.header("x-request-id").unwrap_or("<none>").to_owned(),
            r.header("x-byok-request-id").unwrap_or("<none>").to_owned(),
        )
    };
    let last_upstream_id = || {
        mock.requests()
            .last()
            .unwrap()
            .header("x-request-id")
            .unwrap()
            .to_owned()
    };

    // A well-formed id is taken, sent upstream, echoed and logged.
    let long = "a".repeat(128);
    for id in ["req-abc-123", "Req_1.2:3-x", long.as_str()] {
        let r = post_id(&proxy, path, GW, body, Some(id)).await;
        assert_eq!(r.status, 200);
        assert_eq!(ids(&r), (id.to_owned(), id.to_owned()));
        assert_eq!(last_upstream_id(), id);
        assert_eq!(access_line(&proxy, id).await["status"], "200");
    }

    // None: one is made, the same everywhere, different each time.
    let mut made = Vec::new();
    for _ in 0..2 {
        let r = post_id(&proxy, path, GW, body, None).await;
        let (xr, ours) = ids(&r);
        assert_generated_id(&ours);
        assert_eq!(xr, ours);
        assert_eq!(last_upstream_id(), ours);
        access_line(&proxy, &ours).await;
        made.push(ours);
    }
    assert_ne!(made[0], made[1]);

    // Malformed: replaced by a made one, never forwarded or logged.
    let too_long = "b".repeat(129);
    for bad in [
        "has space-MALFORMED",
        "quote\"MALFORMED",
        "brace{MALFORMED}",
        "semi;MALFORMED",
        too_long.as_str(),
        "",
    ] {
        let r = post_id(&proxy, path, GW, body, Some(bad)).await;
        assert_eq!(r.status, 200, "{bad:?}");
        let (xr, ours) = ids(&r);
        assert_generated_id(&ours);
        assert_eq!(xr, ours, "{bad:?}");
        assert_eq!(last_upstream_id(), ours, "{bad:?}");
        access_line(&proxy, &ours).await;
    }
    let logs = proxy.logs();
    assert!(!logs.contains("MALFORMED"), "{logs}");
    assert!(!logs.contains(&too_long));

    // The upstream's own x-request-id is kept; ours stays in x-byok-request-id.
    let r = post_id(
        &proxy,
        "/openai/v1/upstream-id",
        GW,
        body,
        Some("req-mine-5"),
    )
    .await;
    assert_eq!(
        ids(&r),
        ("upstream-own-id-77".to_owned(), "req-mine-5".to_owned())
    );
    assert_eq!(last_upstream_id(), "req-mine-5");
    access_line(&proxy, "req-mine-5").await;

    // Refusals carry the id too, and are logged under it.
    let n = mock.count();
    let r = post_id(&proxy, path, "gw-nope", body, Some("req-refused-6")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        ids(&r),
        ("req-refused-6".to_owned(), "req-refused-6".to_owned())
    );
    assert_eq!(access_line(&proxy, "req-refused-6").await["status"], "401");
    let r = send(
        req("GET", &proxy.url("/"), None)
            .header("x-request-id", "req-noroute-7")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(ids(&r).1, "req-noroute-7");
    assert_eq!(
        access_line(&proxy, "req-noroute-7").await["provider"],
        "none"
    );
    assert_eq!(mock.count(), n, "a refusal reached the upstream");
}

// ---- regressions of fixed bugs -------------------------------------------------

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
