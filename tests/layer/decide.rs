//! [`byok_proxy::decide`]: the decision alone gives the same answers as the
//! layer, and headers fit to send (client credentials gone, the secret in).

use byok_proxy::decide;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::fixtures::{registry, ALICE, BOB, FO, SECRETS};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// (key header, provider, model, credential id or refusal reason)
type Case<'a> = (
    Option<(&'a str, String)>,
    &'a str,
    Option<&'a str>,
    Result<&'a str, &'a str>,
);

#[test]
fn decide_picks_the_layers_credential_or_refuses_for_the_same_reason() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let bearer = |key: &str| format!("Bearer {key}");
    let cases: &[Case<'_>] = &[
        (
            Some(("authorization", bearer(ALICE))),
            "openai",
            Some("gpt-4o"),
            Ok("cred-openai"),
        ),
        (
            Some(("x-api-key", ALICE.into())),
            "anthropic",
            None,
            Ok("cred-anthropic"),
        ),
        (
            Some(("authorization", bearer(FO))),
            "openai",
            Some("gpt-4o"),
            Ok("fo-first"),
        ),
        (
            Some(("authorization", bearer(FO))),
            "openai",
            Some("o1"),
            Ok("fo-first"),
        ),
        (
            Some(("authorization", bearer(ALICE))),
            "openai",
            Some("gpt-4o-mini"),
            Err("no_eligible_credential"),
        ),
        (
            Some(("authorization", bearer(BOB))),
            "anthropic",
            None,
            Err("no_eligible_credential"),
        ),
        (
            Some(("authorization", bearer("gw-unknown"))),
            "openai",
            None,
            Err("invalid_api_key"),
        ),
        (None, "openai", Some("gpt-4o"), Err("missing_api_key")),
        (
            Some(("authorization", bearer(ALICE))),
            "nope",
            None,
            Err("unknown_provider"),
        ),
    ];
    for (key, provider, model, want) in cases {
        let pairs: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = decide(&snapshot, headers(&pairs), provider, *model);
        let got = got
            .as_ref()
            .map(|(cred, _)| cred.id.as_str())
            .map_err(|r| r.reason());
        assert_eq!(got, *want, "{key:?} {provider} {model:?}");
    }
}

#[test]
fn decided_headers_carry_the_secret_and_nothing_of_the_clients_credentials() {
    let registry = registry();
    let snapshot = registry.snapshot();
    let sent = headers(&[
        ("authorization", &format!("Bearer {ALICE}")),
        ("x-api-key", ALICE),
        ("cookie", "session=1"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("content-type", "application/json"),
        ("x-custom", "kept"),
    ]);
    let (cred, out) = decide(&snapshot, sent, "anthropic", Some("claude-3")).unwrap();
    assert_eq!(cred.id, "cred-anthropic");
    assert_eq!(out["x-api-key"], SECRETS[1]);
    assert_eq!(out["anthropic-version"], "2023-06-01");
    assert_eq!(out["content-type"], "application/json");
    assert_eq!(out["x-custom"], "kept");
    for gone in ["authorization", "cookie", "connection", "x-hop"] {
        assert!(!out.contains_key(gone), "{gone} went upstream");
    }
    for (name, value) in &out {
        assert!(
            !value
                .as_bytes()
                .windows(ALICE.len())
                .any(|w| w == ALICE.as_bytes()),
            "the gateway key went upstream in {name}"
        );
    }
}
