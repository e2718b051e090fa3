//! SigV4 for Bedrock's AWS access keys (SPEC §9): each attempt is signed
//! for service `bedrock` in the key's region, its body's SHA-256 included,
//! after the client's credentials were stripped. The signing itself is
//! `aws-sigv4`'s, AWS's own crate.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use secrecy::ExposeSecret;

use crate::domain::AwsKey;

/// Signs `req` (whose body is `body`) with `key` as of `at`: adds
/// `Authorization`, `X-Amz-Date`, and `X-Amz-Security-Token` for temporary
/// keys. Every header the request carries with a visible value is signed.
pub(crate) fn sign_request<B>(
    req: &mut http::Request<B>,
    key: &AwsKey,
    body: &[u8],
    at: SystemTime,
) -> Result<(), SignError> {
    let identity: Identity = Credentials::new(
        key.access_key_id.clone(),
        key.secret_access_key.expose_secret().to_owned(),
        key.session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        None,
        "byok-proxy",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&key.region)
        .name("bedrock")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| SignError)?
        .into();
    let uri = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)));
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        headers,
        SignableBody::Bytes(body),
    )
    .map_err(|_| SignError)?;
    let (instructions, _signature) = sign(signable, &params).map_err(|_| SignError)?.into_parts();
    instructions.apply_to_request_http1x(req);
    for name in [http::header::AUTHORIZATION.as_str(), "x-amz-security-token"] {
        if let Some(v) = req.headers_mut().get_mut(name) {
            v.set_sensitive(true);
        }
    }
    Ok(())
}

/// A request that could not be signed (a header or URI the signer refused);
/// says nothing more, as anything more could quote the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request could not be signed for AWS")]
pub(crate) struct SignError;

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    /// Each expected `Authorization` was made by botocore's `SigV4Auth`
    /// (botocore 1.x, the interop venv's) for the same request at the same
    /// instant: an independent implementation, byte for byte.
    #[test]
    fn signatures_match_botocores() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_735_787_045); // 2025-01-02T03:04:05Z
                                                                                         // (method, URL, body, session token, botocore's Authorization)
        type Case<'a> = (&'a str, &'a str, &'a [u8], Option<&'a str>, &'a str);
        let cases: [Case<'_>; 3] = [
            (
                "POST",
                "https://bedrock-runtime.eu-central-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
                None,
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/eu-central-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-request-id, Signature=76b15026f2b5716ab152e099a6753b78ce912c017ca6ac0e25fd68d666fa0a8d",
            ),
            (
                "POST",
                "https://bedrock-runtime.us-west-2.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke",
                br#"{"inputText":"hello"}"#,
                Some("FQoGZXIvYXdzEXAMPLETOKEN+/="),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-request-id, Signature=78a7384a3f5dccbcd4de3563aeb60f9b12b5cc8793ce0fa7dbbef98305ace598",
            ),
            (
                "GET",
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke?b=2&a=1%2F2",
                b"",
                None,
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-request-id, Signature=d98bb5d8ad48935a90764f39fbd3b98be71411d7e28a4f038103e44d48dbf7d8",
            ),
        ];
        for (method, url, body, token, want) in cases {
            let region = url.split('.').nth(1).unwrap().to_owned();
            let key = AwsKey {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                region,
                session_token: token.map(SecretString::from),
            };
            let mut req = http::Request::builder()
                .method(method)
                .uri(url)
                .header("content-type", "application/json")
                .header("x-request-id", "req-1")
                .body(())
                .unwrap();
            sign_request(&mut req, &key, body, at).unwrap();
            let h = req.headers();
            assert_eq!(h["authorization"], want, "{method} {url}");
            assert_eq!(h["x-amz-date"], "20250102T030405Z");
            assert!(h["authorization"].is_sensitive());
            assert_eq!(
                h.get("x-amz-security-token").map(|v| v.to_str().unwrap()),
                token
            );
        }
    }
}
