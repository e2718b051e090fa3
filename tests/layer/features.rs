//! The `aws` and `vertex` cargo features: with them a cloud's structured
//! key is read and used; without them (an embedder who needs neither, as
//! `scripts/test` builds this suite a second time) it is refused where it is
//! loaded, naming the field and the feature, never taken for a plain key.

use byok_proxy::Config;

/// A config whose only credential has `key`, for `provider`.
fn config(provider: &str, key: &str) -> String {
    format!(
        r#"
[[credentials]]
id = "c1"
workspace_id = "ws"
provider = "{provider}"
created_at = "2025-01-01T00:00:00Z"
key = '''{key}'''
"#
    )
}

const AWS_KEY: &str =
    r#"{"accessKeyId":"AKIAEXAMPLE","secretAccessKey":"secret-EXAMPLE","region":"us-east-1"}"#;

#[test]
fn aws_access_keys_need_the_aws_feature() {
    let loaded = Config::parse(&config("amazon-bedrock", AWS_KEY));
    if cfg!(feature = "aws") {
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    } else {
        let err = loaded
            .expect_err("an AWS key without the aws feature")
            .to_string();
        assert!(err.contains("credentials[0].key"), "{err}");
        assert!(err.contains("`aws` feature"), "{err}");
        assert!(!err.contains("secret-EXAMPLE"), "{err}");
    }
    // A Bedrock API key is a bearer: no feature needed.
    assert!(Config::parse(&config("amazon-bedrock", "ABSKbedrockapikey")).is_ok());
}

#[test]
fn service_accounts_need_the_vertex_feature() {
    let pem = include_str!("../fixtures/vertex-test-key.pem").replace('\n', "\\n");
    let account = format!(
        r#"{{"type":"service_account","project_id":"proj-1","private_key_id":"kid-1","private_key":"{pem}","client_email":"sa@proj-1.iam.gserviceaccount.com","token_uri":"https://oauth2.googleapis.com/token"}}"#
    );
    let loaded = Config::parse(&config("google-vertex", &account));
    if cfg!(feature = "vertex") {
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    } else {
        let err = loaded
            .expect_err("a service account without the vertex feature")
            .to_string();
        assert!(err.contains("credentials[0].key"), "{err}");
        assert!(err.contains("`vertex` feature"), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }
    // An express-mode API key is a plain key: no feature needed.
    assert!(Config::parse(&config("google-vertex", "AIzaExpressModeKey")).is_ok());
}
