//! A [`Principal`] handed to the layer by an earlier layer (the embedding
//! application's own authentication), composed with `ServiceBuilder`.

use byok_proxy::{ByokLayer, KeyHash, Principal};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower::util::MapRequestLayer;
use tower::{ServiceBuilder, ServiceExt};

use crate::fixtures::*;

fn principal(workspace: &str, user: &str, key: Option<&str>) -> Principal {
    Principal {
        workspace_id: workspace.into(),
        user_id: user.into(),
        key_hash: key.map(|k| KeyHash::of(k.as_bytes())),
        require_zdr: false,
    }
}

/// `earlier auth layer -> ByokLayer -> inner`, where the earlier layer is a
/// real `tower::Layer` that inserts `who` (if any) into every request.
async fn through_stack(
    trust: bool,
    who: Option<Principal>,
    inner: Inner,
    req: Request<Full<Bytes>>,
) -> Resp {
    let svc = ServiceBuilder::new()
        // The application's own auth: decides who is asking.
        .layer(MapRequestLayer::new(
            move |mut req: Request<Full<Bytes>>| {
                if let Some(p) = &who {
                    req.extensions_mut().insert(p.clone());
                }
                req
            },
        ))
        // BYOK: trusts (or not) what the auth layer decided.
        .layer(ByokLayer::new(registry()).trust_principal_extension(trust))
        .service(inner);
    let res = svc
        .oneshot(req)
        .await
        .expect("the layer answers every request");
    collect(res).await
}

fn keyless_chat(model: &str) -> Request<Full<Bytes>> {
    request(
        "POST",
        "/openai/v1/chat/completions",
        &[("content-type", "application/json")],
        format!(r#"{{"model":"{model}"}}"#),
    )
}

fn keyless_messages() -> Request<Full<Bytes>> {
    request(
        "POST",
        "/anthropic/v1/messages",
        &[],
        r#"{"model":"claude-3-haiku"}"#,
    )
}

#[tokio::test]
async fn a_trusted_principal_is_admitted_without_a_key() {
    let (inner, rec) = ok_upstream();
    let got = through_stack(
        true,
        Some(principal("ws-p", "dave", None)),
        inner,
        keyless_chat("gpt-4o"),
    )
    .await;
    let seen = rec.only();
    assert_eq!(seen.credential, "p-openai");
    assert_eq!(seen.headers["authorization"], "Bearer sk-p-openai-SECRET-f");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-byok-credential-id"), Some("p-openai"));
}

#[tokio::test]
async fn a_trusted_principal_wins_over_key_headers_which_are_still_stripped() {
    let (inner, rec) = ok_upstream();
    let mut req = keyless_chat("gpt-4o");
    for (name, value) in [
        ("authorization", format!("Bearer {ALICE}")),
        ("x-api-key", "some-other-key".to_owned()),
        ("api-key", "third".to_owned()),
        ("x-goog-api-key", "fourth".to_owned()),
    ] {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    let got = through_stack(true, Some(principal("ws-p", "dave", None)), inner, req).await;
    let seen = rec.only();
    assert_eq!(seen.credential, "p-openai");
    assert_eq!(seen.headers["authorization"], "Bearer sk-p-openai-SECRET-f");
    for gone in ["x-api-key", "api-key", "x-goog-api-key"] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone} reached the upstream"
        );
    }
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn a_trusted_principal_is_held_to_the_user_allowlist() {
    let (inner, rec) = ok_upstream();
    let got = through_stack(
        true,
        Some(principal("ws-p", "eve", None)),
        inner,
        keyless_chat("gpt-4o"),
    )
    .await;
    got.assert_refused(403, "no_eligible_credential");
    assert!(
        got.message().contains("allowed_user_ids"),
        "{}",
        got.message()
    );
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn a_trusted_principal_only_sees_its_own_workspace() {
    // ws-1's openai credential would admit gpt-4o; ws-2 has none.
    let (inner, rec) = ok_upstream();
    let got = through_stack(
        true,
        Some(principal("ws-2", "alice", None)),
        inner,
        keyless_chat("gpt-4o"),
    )
    .await;
    got.assert_refused(403, "no_credential");
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn a_principal_without_key_hash_is_refused_by_a_hash_allowlist() {
    let (inner, rec) = ok_upstream();
    let got = through_stack(
        true,
        Some(principal("ws-p", "dave", None)),
        inner,
        keyless_messages(),
    )
    .await;
    got.assert_refused(403, "no_eligible_credential");
    assert!(
        got.message().contains("allowed_api_key_hashes"),
        "{}",
        got.message()
    );
    assert_eq!(rec.count(), 0);

    // A listed hash is admitted; an unlisted one is not.
    let (inner, rec) = ok_upstream();
    let got = through_stack(
        true,
        Some(principal("ws-p", "dave", Some(DAVE))),
        inner,
        keyless_messages(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = rec.only();
    assert_eq!(seen.credential, "p-anthropic");
    assert_eq!(seen.headers["x-api-key"], "sk-p-anthropic-SECRET-g");

    let (inner, rec) = ok_upstream();
    let got = through_stack(
        true,
        Some(principal("ws-p", "dave", Some(ALICE))),
        inner,
        keyless_messages(),
    )
    .await;
    got.assert_refused(403, "no_eligible_credential");
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn without_trust_the_extension_is_ignored() {
    let dave = Some(principal("ws-p", "dave", Some(DAVE)));

    let (inner, rec) = ok_upstream();
    let got = through_stack(false, dave.clone(), inner, keyless_chat("gpt-4o")).await;
    got.assert_refused(401, "missing_api_key");
    assert_eq!(rec.count(), 0);

    // With a key, the key decides: alice's workspace, not the extension's.
    let (inner, rec) = ok_upstream();
    let got = through_stack(false, dave, inner, chat(ALICE, "gpt-4o")).await;
    assert_eq!(got.status, 200);
    assert_eq!(rec.only().credential, "cred-openai");
}

#[tokio::test]
async fn the_default_layer_does_not_trust_the_extension() {
    let (inner, rec) = ok_upstream();
    let mut req = keyless_chat("gpt-4o");
    req.extensions_mut().insert(principal("ws-p", "dave", None));
    let got = send(&ByokLayer::new(registry()), inner, req).await;
    got.assert_refused(401, "missing_api_key");
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn a_trusting_layer_without_the_extension_uses_the_key() {
    let (inner, rec) = ok_upstream();
    let got = through_stack(true, None, inner, chat(ALICE, "gpt-4o")).await;
    assert_eq!(got.status, 200);
    assert_eq!(rec.only().credential, "cred-openai");

    let (inner, rec) = ok_upstream();
    let got = through_stack(true, None, inner, keyless_chat("gpt-4o")).await;
    got.assert_refused(401, "missing_api_key");
    assert_eq!(rec.count(), 0);
}
