//! Global credentials (`workspace_id` left out of the config, `null` on the
//! wire): every workspace's, ordered with each workspace's own.

use crate::support::*;

fn global(id: &str, secret: &str, extra: &str) -> String {
    format!(
        "\n[[credentials]]\nid = \"{id}\"\nprovider = \"openai\"\nkey = \"{secret}\"\n\
         created_at = \"2025-08-24T10:30:00Z\"\n{extra}\n"
    )
}

#[tokio::test]
async fn a_global_credential_serves_every_workspace_in_its_order() {
    // Every attempt is refused upstream, so each request walks its whole
    // group and the mock sees the order.
    let mock = Mock::start(|_| Reply::json(429, "{}")).await;
    let creds = [
        cred(
            "ws1-own",
            "openai",
            "sk-ws1-own-0000000001",
            "sort_order = 1",
        ),
        global("global-first", "sk-global-first-000001", "sort_order = 0"),
        global("global-last", "sk-global-last-0000001", "sort_order = 2"),
        global("global-off", "sk-global-off-00000001", "disabled = true"),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &creds)).await;

    let secrets = |from: usize| -> Vec<String> {
        mock.requests()[from..]
            .iter()
            .map(|r| r.header("authorization").unwrap().to_owned())
            .collect()
    };
    assert_eq!(chat(&proxy, GW, "gpt-4o").await.status, 429);
    assert_eq!(
        secrets(0),
        [
            "Bearer sk-global-first-000001",
            "Bearer sk-ws1-own-0000000001",
            "Bearer sk-global-last-0000001"
        ]
    );
    // ws-2 has none of its own: the global ones alone.
    assert_eq!(chat(&proxy, GW_OTHER_WS, "gpt-4o").await.status, 429);
    assert_eq!(
        secrets(3),
        [
            "Bearer sk-global-first-000001",
            "Bearer sk-global-last-0000001"
        ]
    );
}

#[test]
fn an_empty_workspace_id_is_refused_and_names_the_entry() {
    let (ok, err) = check_config(
        "[[credentials]]\nid = \"c\"\nworkspace_id = \"\"\nprovider = \"openai\"\nkey = \"sk-x-000000000001\"\n\
         [[credentials]]\nid = \"d\"\nprovider = \"openai\"\nkey = \"sk-x-000000000002\"\nis_fallback = true\nis_byok_only = true\n",
    );
    assert!(!ok);
    assert!(
        err.contains("credentials[0].workspace_id: must not be empty"),
        "{err}"
    );
    assert!(
        err.contains("credentials[1].is_byok_only: cannot be set on a fallback"),
        "{err}"
    );
}
