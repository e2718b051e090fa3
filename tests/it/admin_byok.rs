//! SPEC §7, the BYOK read API: `/api/v1/byok` in OpenRouter's `BYOKKey`
//! shape, paging and filters, 405 on the read-only file store, and no secret
//! in any admin response nor in the process output.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::support::admin::*;
use crate::support::*;

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
/// With `today`, the fields OpenRouter added since (SPEC §2) too.
fn byok_key_schema(
    ex: &Value,
    today: bool,
) -> (BTreeMap<String, BTreeSet<&'static str>>, BTreeSet<String>) {
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
    let mut required = required.unwrap();
    let optional: Vec<&String> = types.keys().filter(|k| !required.contains(*k)).collect();
    assert_eq!(optional, ["name"], "the examples changed");
    assert_eq!(types.len(), 12, "the seed's examples have 12 fields");
    if !today {
        return (types, required);
    }
    // SPEC §2: the fields OpenRouter added since the seed's examples, in
    // every response, and a global credential's `workspace_id: null`.
    for (field, kinds) in [
        ("is_required", &["bool"][..]),
        ("is_byok_only", &["bool"]),
        ("declared_zdr", &["bool", "null"]),
    ] {
        types.insert(field.into(), kinds.iter().copied().collect());
        required.insert(field.into());
    }
    types.get_mut("workspace_id").unwrap().insert("null");
    // SPEC §8's one extra field, which OpenRouter's SDK ignores.
    types.insert(
        "last_used_at".into(),
        ["string", "null"].into_iter().collect(),
    );
    (types, required)
}

/// Panics unless `item` has exactly OpenRouter's fields with OpenRouter's
/// types: today's, or with `today` false the seed examples' alone.
fn assert_byok_key_shape(item: &Value, ex: &Value, today: bool) {
    let (types, required) = byok_key_schema(ex, today);
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
                 is_required = true\ndeclared_zdr = true\n\
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
        assert_byok_key_shape(item, &ex, true);
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
            "is_required": true,
            "is_byok_only": false,
            "declared_zdr": true,
            "sort_order": 3,
            "allowed_api_key_hashes": [hash(GW)],
            "allowed_models": ["openai/gpt-4o", "openai/*"],
            "allowed_user_ids": ["user-1"],
            "last_used_at": null,
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
            "is_required": false,
            "is_byok_only": false,
            "declared_zdr": null,
            "sort_order": -2,
            "allowed_api_key_hashes": null,
            "allowed_models": null,
            "allowed_user_ids": null,
            "last_used_at": null,
        })
    );
    let short = by_id("c-short");
    assert_eq!(short["label"], "...");
    assert_eq!(short["allowed_models"], json!([]));
    assert!(short["allowed_user_ids"].is_null());

    // The examples themselves pass the same check (the check is not vacuous).
    assert_byok_key_shape(&ex["byok_key_with_hash_allowlist"], &ex, false);
    assert_byok_key_shape(&ex["list_response"]["data"][0], &ex, false);

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
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
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
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step, against one running proxy or store"
)]
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
