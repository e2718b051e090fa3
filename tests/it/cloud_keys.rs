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
