//! The three tiers (SPEC §5) through the binary: a workspace's own and the
//! global credentials, the operator's shared tier (`[shared]`), the fallback
//! ones; `is_required` and `is_byok_only` closing the shared tier;
//! `x-byok-tier`; and zero data retention.

use crate::support::*;

/// A credential of `workspace`.
fn cred_in(workspace: &str, id: &str, secret: &str, extra: &str) -> String {
    cred(id, "openai", secret, extra).replace(
        "workspace_id = \"ws-1\"",
        &format!("workspace_id = \"{workspace}\""),
    )
}

const SHARED: &str = "\n[shared]\nworkspace_id = \"platform\"\nworkspaces = [\"ws-1\"]\n";

/// A mock that serves only `serving` and answers 429 to every other secret,
/// so that a request walks its candidates until that one.
async fn serving(secret: &'static str) -> Mock {
    Mock::start(move |r: &Recorded| {
        if r.header("authorization") == Some(&format!("Bearer {secret}")) {
            Reply::json(200, "{}")
        } else {
            Reply::json(429, "{}")
        }
    })
    .await
}

#[tokio::test]
async fn openrouters_example_required_key_keeps_its_model_off_the_shared_tier() {
    // Key A allows openai/gpt-4o with is_required; key B has no filter.
    let mock = serving("sk-shared-S-000000001").await;
    let creds = [
        cred(
            "A",
            "openai",
            "sk-byok-A-0000000001",
            "is_required = true\nallowed_models = [\"openai/gpt-4o\"]",
        ),
        cred("B", "openai", "sk-byok-B-0000000001", "sort_order = 1"),
        cred_in("platform", "S", "sk-shared-S-000000001", ""),
        SHARED.to_owned(),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &creds)).await;

    // gpt-4o: A then B, never the shared tier.
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        mock.secrets_from(0),
        ["sk-byok-A-0000000001", "sk-byok-B-0000000001"]
    );
    assert_eq!(r.header("x-byok-tier"), Some("byok"));

    // Another model: B, then the shared tier, which serves it.
    let r = chat(&proxy, GW, "gpt-4o-mini").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.secrets_from(2),
        ["sk-byok-B-0000000001", "sk-shared-S-000000001"]
    );
    assert_eq!(r.header("x-byok-tier"), Some("shared"));
    assert_eq!(r.header("x-byok-credential-id"), Some("S"));
    let line = proxy.wait_log("tier=\"shared\"").await;
    assert!(line.contains("B:429,S@shared:200"), "{line}");

    // ws-2 is not in shared.workspaces, and has nothing of its own.
    let r = chat(&proxy, GW_OTHER_WS, "gpt-4o-mini").await;
    assert_eq!((r.status, r.reason()), (403, "no_credential".into()));
    assert_eq!(mock.count(), 4);
}

#[tokio::test]
async fn byok_only_closes_the_shared_tier_and_fallbacks_come_after_it() {
    let mock = serving("sk-byok-F-0000000001").await;
    let shared = [
        cred_in("platform", "S", "sk-shared-S-000000001", ""),
        SHARED.to_owned(),
    ]
    .concat();
    let open = [
        cred("A", "openai", "sk-byok-A-0000000001", ""),
        cred("F", "openai", "sk-byok-F-0000000001", "is_fallback = true"),
        shared.clone(),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &open)).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.secrets_from(0),
        [
            "sk-byok-A-0000000001",
            "sk-shared-S-000000001",
            "sk-byok-F-0000000001"
        ]
    );
    assert_eq!(r.header("x-byok-tier"), Some("byok"));

    // is_byok_only on A (for another model, even): no shared tier at all.
    let closed = open.replace(
        "key = \"sk-byok-A-0000000001\"",
        "key = \"sk-byok-A-0000000001\"\nis_byok_only = true\nallowed_models = [\"openai/o1\"]",
    );
    let proxy = Proxy::start(&config(&mock, &closed)).await;
    let r = chat(&proxy, GW, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.secrets_from(3), ["sk-byok-F-0000000001"]);
}

#[tokio::test]
async fn a_key_that_requires_zdr_is_served_by_zdr_credentials_only() {
    let mock = Mock::ok().await;
    let zdr_key = "gw-test-key-zdr";
    let key = format!(
        "\n[[api_keys]]\nhash = \"{}\"\nworkspace_id = \"ws-1\"\nuser_id = \"user-1\"\nrequire_zdr = true\n",
        hash(zdr_key)
    );
    let plain = [
        key.clone(),
        cred("plain", "openai", "sk-plain-0000000001", ""),
        cred(
            "no",
            "openai",
            "sk-no-zdr-000000001",
            "declared_zdr = false",
        ),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &plain)).await;
    let r = chat(&proxy, zdr_key, "gpt-4o").await;
    assert_eq!(
        (r.status, r.reason()),
        (403, "no_eligible_credential".into())
    );
    assert!(
        r.message().contains(
            "zero data retention: the key requires it and 2 credentials are not declared ZDR"
        ),
        "{}",
        r.message()
    );
    // Another key of the same workspace is served as before.
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 200);
    assert_eq!(mock.count(), 1);

    // A ZDR credential; and one that inherits its provider's ZDR setting.
    let zdr = [
        plain.clone(),
        cred(
            "z",
            "openai",
            "sk-zdr-00000000001",
            "declared_zdr = true\nsort_order = 5",
        ),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &zdr)).await;
    let r = chat(&proxy, zdr_key, "gpt-4o").await;
    assert_eq!(r.header("x-byok-credential-id"), Some("z"));
    let inherits =
        config(&mock, &plain).replace("[providers.openai]", "[providers.openai]\nzdr = true");
    let proxy = Proxy::start(&inherits).await;
    let r = chat(&proxy, zdr_key, "gpt-4o").await;
    assert_eq!(
        r.header("x-byok-credential-id"),
        Some("plain"),
        "declared_zdr = null inherits"
    );
}

#[test]
fn check_names_a_bad_shared_table() {
    for (table, says) in [
        (
            "[shared]\nworkspace_id = \"\"\nworkspaces = [\"*\"]\n",
            "shared.workspace_id: must not be empty",
        ),
        (
            "[shared]\nworkspace_id = \"p\"\nworkspaces = []\n",
            "shared.workspaces: lists no workspace",
        ),
        (
            "[shared]\nworkspace_id = \"p\"\nworkspaces = [\"*\", \"ws-1\"]\n",
            "shared.workspaces: \"*\" means every workspace",
        ),
        (
            "[shared]\nworkspace_id = \"p\"\n",
            "missing field `workspaces`",
        ),
    ] {
        let (ok, err) = check_config(table);
        assert!(!ok, "{table}");
        assert!(err.contains(says), "{says}: {err}");
    }
}
