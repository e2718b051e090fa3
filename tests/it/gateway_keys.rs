//! Gateway keys of the config file: `expires_at` is enforced (an expired key
//! answers exactly like an unknown one), and `require_zdr` is read.

use crate::support::*;

fn key(raw: &str, extra: &str) -> String {
    format!(
        "\n[[api_keys]]\nhash = \"{}\"\nworkspace_id = \"ws-1\"\nuser_id = \"user-1\"\n{extra}\n",
        hash(raw)
    )
}

#[tokio::test]
async fn an_expired_key_answers_like_an_unknown_one() {
    let mock = Mock::ok().await;
    let rest = [
        key(
            "gw-test-key-expired",
            "expires_at = \"2020-01-01T00:00:00Z\"",
        ),
        key(
            "gw-test-key-current",
            "expires_at = \"2999-01-01T00:00:00+02:00\"",
        ),
        cred("c-1", "openai", "sk-expiry-0000000001", ""),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let unknown = chat(&proxy, "gw-test-key-never-issued", "gpt-4o").await;
    let expired = chat(&proxy, "gw-test-key-expired", "gpt-4o").await;
    assert_eq!(
        (expired.status, expired.reason()),
        (401, "invalid_api_key".into())
    );
    assert_eq!(expired.text(), unknown.text());
    assert_eq!(
        chat(&proxy, "gw-test-key-current", "gpt-4o").await.status,
        200
    );
    assert_eq!(mock.count(), 1);
}

#[test]
fn a_bad_expiry_names_the_entry() {
    let (ok, err) = check_config(&key("k", "expires_at = \"next week\""));
    assert!(!ok);
    assert!(
        err.contains("api_keys[0].expires_at: not an RFC 3339"),
        "{err}"
    );
}
