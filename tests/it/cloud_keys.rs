//! SPEC §9, Bedrock with AWS access keys: the credential's key is
//! OpenRouter's JSON, and each attempt goes upstream signed with SigV4
//! (the signature itself is checked against botocore's in
//! `src/proxy/sigv4.rs`); no secret half ever leaves the proxy.

use crate::support::admin::{admin_json, admin_section, MGMT};
use crate::support::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY";
const TOKEN: &str = "FQoGZXIvYXdzSESSIONTOKENSECRET";

fn aws_key(extra: &str) -> String {
    format!(
        r#"{{"accessKeyId":"AKIAIOSFODNN7EXAMPLE","secretAccessKey":"{SECRET}","region":"eu-west-3"{extra}}}"#
    )
}

#[tokio::test]
async fn a_bedrock_request_goes_upstream_signed_and_never_with_the_secret() {
    let mock = Mock::ok().await;
    let rest = [
        admin_section("127.0.0.1:0", &[MGMT]),
        format!(
            "\n[[credentials]]\nid = \"c-aws\"\nworkspace_id = \"ws-1\"\nprovider = \"amazon-bedrock\"\nkey = '{}'\n",
            aws_key(&format!(r#","sessionToken":"{TOKEN}""#))
        ),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let path = "/amazon-bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
    let r = post(&proxy, path, GW, r#"{"messages":[]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-byok-credential-id"), Some("c-aws"));

    let up = &mock.requests()[0];
    let auth = up.header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/")
            && auth.contains("/eu-west-3/bedrock/aws4_request, SignedHeaders=")
            && auth.contains(";host;")
            && auth.contains("x-amz-security-token"),
        "{auth}"
    );
    assert!(up.header("x-amz-date").is_some());
    assert_eq!(up.header("x-amz-security-token"), Some(TOKEN));
    let everything = up.everything();
    for leak in [SECRET, GW, "accessKeyId"] {
        assert!(
            !everything.contains(leak),
            "{leak} went upstream: {everything}"
        );
    }

    let c = admin_json(proxy.admin_addr().await, "/api/v1/byok/c-aws").await;
    assert_eq!(c["data"]["label"], "AKI...MPLE", "{c}");
    let shown = c.to_string() + &proxy.logs();
    for leak in [SECRET, TOKEN] {
        assert!(!shown.contains(leak), "{leak} shown");
    }
}

/// A broken key is named by its field, never quoted; the file is refused.
#[tokio::test]
async fn a_broken_aws_key_is_refused_by_its_field() {
    let mock = Mock::ok().await;
    for (key, want) in [
        (
            aws_key("").replace("eu-west-3", "moon-1"),
            "credentials[0].key.region: not an AWS region",
        ),
        (
            aws_key("").replace(r#""region":"eu-west-3""#, r#""regoin":"eu-west-3""#),
            "credentials[0].key: unknown field",
        ),
        (format!("{{{SECRET}"), "credentials[0].key: not valid JSON"),
    ] {
        let rest = format!(
            "\n[[credentials]]\nid = \"c-aws\"\nworkspace_id = \"ws-1\"\nprovider = \"amazon-bedrock\"\nkey = '{key}'\n"
        );
        let (ok, out) = check_config(&config(&mock, &rest));
        assert!(!ok, "{key} accepted");
        assert!(out.contains(want), "want {want:?} in {out}");
        assert!(!out.contains(SECRET), "{out}");
    }
}

// ---- Vertex: service accounts ----------------------------------------------

const PEM: &str = include_str!("../fixtures/vertex-test-key.pem");
const MODEL_PATH: &str = "publishers/google/models/gemini-2.0-flash:generateContent";

/// The tokens a [`vertex_mock`] upstream refuses (revoked), changeable
/// while it runs.
type Revoked = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A mock that mints `ya29.minted-{n}` at `/token` (living `expires_in`),
/// fails to mint at `/token-down`, refuses the grant at `/token-refused`,
/// and answers everything else as Google does, but 401 to a token in
/// `revoked`.
async fn vertex_mock(expires_in: u64, revoked: Revoked) -> Mock {
    let minted = std::sync::atomic::AtomicUsize::new(0);
    Mock::start(move |r| {
        if r.uri == "/token" {
            let form = String::from_utf8_lossy(&r.body).into_owned();
            assert!(
                form.starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
                    && form.matches('.').count() == 2,
                "{form}"
            );
            let n = minted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            return Reply::json(
                200,
                &format!(r#"{{"access_token":"ya29.minted-{n}","expires_in":{expires_in},"token_type":"Bearer"}}"#),
            );
        }
        if r.uri == "/token-down" {
            return Reply::json(500, r#"{"error":"internal"}"#);
        }
        if r.uri == "/token-refused" {
            return Reply::json(400, r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#);
        }
        let bearer = r.header("authorization").unwrap_or_default();
        if revoked.lock().unwrap().iter().any(|t| bearer == format!("Bearer {t}")) {
            return Reply::json(401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#);
        }
        Reply::json(200, r#"{"candidates":[],"usageMetadata":{"promptTokenCount":1}}"#)
    })
    .await
}

fn service_account(mock: &Mock, token_path: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "proj-cred",
        "private_key_id": "kid-1",
        "private_key": PEM,
        "client_email": "tester@proj-cred.iam.gserviceaccount.com",
        "token_uri": format!("{}{token_path}", mock.url()),
        "region": "us-central1",
    })
    .to_string()
}

fn vertex_credential(id: &str, key: &str, mock: &Mock, extra: &str) -> String {
    format!(
        "\n[[credentials]]\nid = \"{id}\"\nworkspace_id = \"ws-1\"\nprovider = \"google-vertex\"\nkey = '{key}'\nbase_url = \"{}\"\n{extra}",
        mock.url()
    )
}

fn upstream_calls(mock: &Mock) -> Vec<crate::support::Recorded> {
    mock.requests()
        .into_iter()
        .filter(|r| !r.uri.starts_with("/token"))
        .collect()
}

fn token_calls(mock: &Mock) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.uri.starts_with("/token"))
        .count()
}

#[tokio::test]
async fn a_vertex_request_bears_a_token_minted_once_for_the_accounts_project() {
    let mock = vertex_mock(3600, Revoked::default()).await;
    let rest = [
        admin_section("127.0.0.1:0", &[MGMT]),
        vertex_credential("c-vx", &service_account(&mock, "/token"), &mock, ""),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    for (project, location) in [("client-proj", "europe-west4"), ("other", "global")] {
        let path =
            format!("/google-vertex/v1/projects/{project}/locations/{location}/{MODEL_PATH}");
        let r = post(&proxy, &path, GW, r#"{"contents":[]}"#).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-byok-credential-id"), Some("c-vx"));
    }
    // Express mode's path names no project: the account's goes in.
    let r = post(&proxy, &format!("/google-vertex/v1/{MODEL_PATH}"), GW, "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());

    assert_eq!(token_calls(&mock), 1, "one mint for three requests");
    let calls = upstream_calls(&mock);
    assert_eq!(calls.len(), 3);
    for up in &calls {
        assert_eq!(
            up.uri,
            format!("/v1/projects/proj-cred/locations/us-central1/{MODEL_PATH}")
        );
        assert_eq!(up.header("authorization"), Some("Bearer ya29.minted-1"));
        let everything = up.everything();
        for leak in [GW, "PRIVATE KEY", "assertion", "client-proj"] {
            assert!(
                !everything.contains(leak),
                "{leak} went upstream: {everything}"
            );
        }
    }
    let c = admin_json(proxy.admin_addr().await, "/api/v1/byok/c-vx").await;
    assert_eq!(
        c["data"]["label"], "tes...@proj-cred.iam.gserviceaccount.com",
        "{c}"
    );
    let shown = c.to_string() + &proxy.logs();
    for leak in ["ya29.minted", "PRIVATE KEY", "MII"] {
        assert!(!shown.contains(leak), "{leak} shown");
    }
}

/// A token is kept until shortly before it expires: one that expires at
/// once is minted anew by the next request; one the upstream refuses too.
#[tokio::test]
async fn vertex_tokens_are_minted_anew_when_stale_or_refused() {
    let path = format!("/google-vertex/v1/projects/p/locations/l/{MODEL_PATH}");
    let mock = vertex_mock(0, Revoked::default()).await;
    let rest = vertex_credential("c-vx", &service_account(&mock, "/token"), &mock, "");
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    for n in 1..=2 {
        let r = post(&proxy, &path, GW, "{}").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(token_calls(&mock), n);
        let bearer = format!("Bearer ya29.minted-{n}");
        assert_eq!(
            upstream_calls(&mock)[n - 1].header("authorization"),
            Some(bearer.as_str())
        );
    }

    // A cached token the upstream refuses (revoked since) is forgotten and
    // the credential takes a strike, not a quarantine: the next request
    // mints anew.
    let revoked = Revoked::default();
    let mock = vertex_mock(3600, revoked.clone()).await;
    let rest = [
        admin_section("127.0.0.1:0", &[MGMT]),
        vertex_credential("c-vx", &service_account(&mock, "/token"), &mock, ""),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    assert_eq!(post(&proxy, &path, GW, "{}").await.status, 200);
    revoked.lock().unwrap().push("ya29.minted-1".into());
    let r = post(&proxy, &path, GW, "{}").await;
    assert_eq!(r.status, 502, "the only credential's token was refused");
    let health = "/api/v1/byok/c-vx/health";
    let h = admin_json(proxy.admin_addr().await, health).await;
    assert_eq!(h["data"]["state"], "healthy", "{h}");
    let r = post(&proxy, &path, GW, "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(token_calls(&mock), 2);
    assert_eq!(
        upstream_calls(&mock)[2].header("authorization"),
        Some("Bearer ya29.minted-2")
    );
    // A token refused as soon as it is minted says the account is refused.
    revoked.lock().unwrap().push("ya29.minted-2".into());
    revoked.lock().unwrap().push("ya29.minted-3".into());
    let r = post(&proxy, &path, GW, "{}").await;
    assert_eq!(r.status, 502);
    let r = post(&proxy, &path, GW, "{}").await;
    assert_eq!(r.status, 502);
    let h = admin_json(proxy.admin_addr().await, health).await;
    assert_eq!(h["data"]["state"], "quarantined", "{h}");
}

/// A service account serves only requests that name a model where Vertex
/// reads it (a publisher's model in the path, or the OpenAI-compatible
/// endpoint's body): its token never goes to jobs, datasets or other
/// resources. A keyword spelt another way is refused before anything
/// goes out.
#[tokio::test]
async fn a_service_account_serves_model_calls_only() {
    let mock = vertex_mock(3600, Revoked::default()).await;
    let rest = vertex_credential("c-vx", &service_account(&mock, "/token"), &mock, "");
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    for (path, body, status) in [
        ("/google-vertex/v1/projects/p/locations/l/customJobs", r#"{"model":"gemini-2.0-flash"}"#, 403),
        ("/google-vertex/v1/projects/p/locations/l/datasets", "{}", 403),
        ("/google-vertex/v1/Projects/other/locations/l/publishers/google/models/m:generateContent", "{}", 400),
        ("/google-vertex/v1/projects;x/other/locations/l/publishers/google/models/m:generateContent", "{}", 400),
        ("/google-vertex/v1/projects/p/locations/l/endpoints/openapi/chat/completions", r#"{"model":"google/gemini-2.0-flash"}"#, 200),
    ] {
        let r = post(&proxy, path, GW, body).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    let calls = upstream_calls(&mock);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].uri,
        "/v1/projects/proj-cred/locations/us-central1/endpoints/openapi/chat/completions"
    );
}

/// A token endpoint that fails fails its attempt over, like a connection
/// failure; the upstream never sees a request without a token.
#[tokio::test]
async fn a_failing_token_endpoint_fails_over() {
    let mock = vertex_mock(3600, Revoked::default()).await;
    let rest = [
        vertex_credential(
            "c-down",
            &service_account(&mock, "/token-down"),
            &mock,
            "sort_order = 0\n",
        ),
        vertex_credential(
            "c-up",
            &service_account(&mock, "/token"),
            &mock,
            "sort_order = 1\n",
        ),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let path = format!("/google-vertex/v1/projects/p/locations/l/{MODEL_PATH}");
    let r = post(&proxy, &path, GW, "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-byok-credential-id"), Some("c-up"));
    assert_eq!(r.header("x-byok-attempts"), Some("2"));
    let calls = upstream_calls(&mock);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].header("authorization"),
        Some("Bearer ya29.minted-1")
    );

    let mock = vertex_mock(3600, Revoked::default()).await;
    let rest = vertex_credential("c-down", &service_account(&mock, "/token-down"), &mock, "");
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let r = post(&proxy, &path, GW, "{}").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("upstream_unreachable"), "{}", r.text());
    assert!(upstream_calls(&mock).is_empty());

    // A grant the endpoint refuses rejects the credential: quarantined.
    let mock = vertex_mock(3600, Revoked::default()).await;
    let rest = [
        admin_section("127.0.0.1:0", &[MGMT]),
        vertex_credential(
            "c-bad",
            &service_account(&mock, "/token-refused"),
            &mock,
            "",
        ),
    ]
    .concat();
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let r = post(&proxy, &path, GW, "{}").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text().contains("upstream_rejected_credential"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("Invalid JWT"), "{}", r.text());
    assert!(upstream_calls(&mock).is_empty());
    let h = admin_json(proxy.admin_addr().await, "/api/v1/byok/c-bad/health").await;
    assert_eq!(h["data"]["state"], "quarantined", "{h}");
}

/// The model comes from the path, for Anthropic's publisher as for Google's.
#[tokio::test]
async fn vertex_models_come_from_the_path_for_every_publisher() {
    let mock = vertex_mock(3600, Revoked::default()).await;
    let claude = "claude-3-5-sonnet-v2@20241022";
    let rest = vertex_credential(
        "c-vx",
        &service_account(&mock, "/token"),
        &mock,
        &format!("allowed_models = [\"google-vertex/{claude}\"]\n"),
    );
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let anthropic = format!(
        "/google-vertex/v1/projects/p/locations/l/publishers/anthropic/models/{claude}:rawPredict"
    );
    let r = post(
        &proxy,
        &anthropic,
        GW,
        r#"{"anthropic_version":"vertex-2023-10-16","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let google = format!("/google-vertex/v1/projects/p/locations/l/{MODEL_PATH}");
    let r = post(&proxy, &google, GW, "{}").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let hidden = format!("/google-vertex/v1/projects/p%2Fother/locations/l/publishers/anthropic/models/{claude}:rawPredict");
    let r = post(&proxy, &hidden, GW, "{}").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let calls = upstream_calls(&mock);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].uri,
        format!("/v1/projects/proj-cred/locations/us-central1/publishers/anthropic/models/{claude}:rawPredict")
    );
}

#[tokio::test]
async fn a_broken_service_account_is_refused_by_its_field() {
    let mock = Mock::ok().await;
    let key = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&service_account(&mock, "/token")).unwrap();
        edit(&mut v);
        v.to_string()
    };
    for (key, want) in [
        (
            key(&|v| v["token_uri"] = "http://token.example/SECRETPATH".into()),
            "credentials[0].key.token_uri: must be an https:// URL",
        ),
        (
            key(&|v| v["project_id"] = "Proj With Spaces".into()),
            "credentials[0].key.project_id: not a Google Cloud project id",
        ),
        (
            key(&|v| {
                v["private_key"] =
                    "-----BEGIN PRIVATE KEY-----\nMIIsecret\n-----END PRIVATE KEY-----\n".into()
            }),
            "credentials[0].key.private_key: not a PEM PKCS#8 RSA private key",
        ),
    ] {
        let rest = format!(
            "\n[[credentials]]\nid = \"c-vx\"\nworkspace_id = \"ws-1\"\nprovider = \"google-vertex\"\nkey = '{key}'\n"
        );
        let (ok, out) = check_config(&config(&mock, &rest));
        assert!(!ok, "accepted: {want}");
        assert!(out.contains(want), "want {want:?} in {out}");
        for leak in ["SECRETPATH", "MIIsecret", "Proj With Spaces"] {
            assert!(!out.contains(leak), "{out}");
        }
    }
}

// ---- Azure: resource and deployment entries ---------------------------------

fn azure_credential(id: &str, entries: &[serde_json::Value], extra: &str) -> String {
    let key = serde_json::Value::Array(entries.to_vec()).to_string();
    format!(
        "\n[[credentials]]\nid = \"{id}\"\nworkspace_id = \"ws-1\"\nprovider = \"azure\"\nkey = '{key}'\n{extra}"
    )
}

fn deployment(mock: &Mock, slug: &str) -> serde_json::Value {
    serde_json::json!({
        "model_slug": slug,
        "endpoint_url": format!("{}/dep-prefix/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21", mock.url()),
        "api_key": "az-dep-key-2",
        "model_id": "prod-4o",
    })
}

#[tokio::test]
async fn azure_deployment_entries_win_for_their_model_and_resources_serve_the_rest() {
    let mock = Mock::ok().await;
    let resource = serde_json::json!({"api_key": "az-res-key-1", "resource_name": "myres", "resource_type": "openai"});
    let rest = [azure_credential(
        "c-az",
        &[resource, deployment(&mock, "azure/gpt-4o")],
        &format!("base_url = \"{}/res\"\n", mock.url()),
    )]
    .concat();
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let chat = |deployment: &str| {
        format!("/azure/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21")
    };
    let body = r#"{"messages":[]}"#;
    assert_eq!(post(&proxy, &chat("gpt-4o"), GW, body).await.status, 200);
    assert_eq!(
        post(&proxy, &chat("gpt-4o-mini"), GW, body).await.status,
        200
    );
    let calls = mock.requests();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].uri,
        "/dep-prefix/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(calls[0].header("api-key"), Some("az-dep-key-2"));
    assert_eq!(
        calls[1].uri,
        "/res/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(calls[1].header("api-key"), Some("az-res-key-1"));
    for up in &calls {
        assert!(!up.everything().contains(GW));
    }
}

/// A key of deployment entries alone serves their models only: another is
/// refused before anything goes upstream, as an allowlist refuses.
#[tokio::test]
async fn azure_deployments_alone_serve_only_their_models() {
    let mock = Mock::ok().await;
    let rest = azure_credential("c-az", &[deployment(&mock, "gpt-4o")], "");
    let proxy = Proxy::start(&config(&mock, &rest)).await;
    let path = "/azure/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21";
    let r = post(&proxy, path, GW, r#"{"messages":[]}"#).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("allowed_models"), "{}", r.text());
    assert_eq!(mock.count(), 0);
    let path = "/azure/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
    let r = post(&proxy, path, GW, r#"{"messages":[]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.requests()[0].header("api-key"), Some("az-dep-key-2"));
    // A path that names no deployment leaves the choice to the body's
    // model, which a deployment entry does not serve.
    let v1 = "/azure/openai/v1/chat/completions";
    let r = post(&proxy, v1, GW, r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("deployment"), "{}", r.text());
    let disguised = "/azure/openai/Deployments/gpt-4o/chat/completions";
    let r = post(&proxy, disguised, GW, r#"{"messages":[]}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(mock.count(), 1);
}
