//! A Vertex service account's token (SPEC §9): the signed JWT it presents
//! at its `token_uri` (RFC 7523, RS256, signed with ring), and the token
//! exchange's request and answer. The exchange itself goes through the
//! proxy's inner service, so the token endpoint is reached as upstreams
//! are; its tokens are kept in a [`TokenCache`](super::token::TokenCache).

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use crate::domain::ServiceAccount;
use crate::BoxError;

/// The scope a Vertex token is minted for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The longest a token is kept, whatever its endpoint said.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// The signed JWT a service account presents at its `token_uri` (RFC 7523,
/// RS256), issued at `now` for an hour.
pub(crate) fn assertion(account: &ServiceAccount, now: SystemTime) -> Result<String, BoxError> {
    let iat = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs();
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &account.private_key_id {
        header["kid"] = kid.as_str().into();
    }
    let claims = serde_json::json!({
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri,
        "iat": iat,
        "exp": iat + 3600,
    });
    let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = RsaKeyPair::from_pkcs8(account.private_key_der.expose_secret())
        .map_err(|_| "the service account's private key does not load")?;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        jwt.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "the JWT could not be signed")?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jwt)
}

/// A token endpoint's answer (RFC 6749 §5.1).
#[derive(serde::Deserialize)]
struct Minted {
    access_token: String,
    expires_in: Option<u64>,
}

/// The token exchange's request for `account` at `now` (RFC 7523's JWT
/// bearer grant, form-encoded).
pub(crate) fn token_request(
    account: &ServiceAccount,
    now: SystemTime,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let jwt = assertion(account, now)?;
    let form =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}");
    let mut req = Request::new(Full::new(Bytes::from(form)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = account
        .token_uri
        .parse()
        .map_err(|_| "the token_uri is not a URL")?;
    let headers = req.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    Ok(req)
}

/// The token in a token endpoint's answer: `Bearer …`, marked sensitive,
/// and how long it lives. Errors never hold the token nor the endpoint's
/// words.
pub(crate) fn read_token(answer: &[u8]) -> Result<(HeaderValue, Duration), BoxError> {
    let minted: Minted = serde_json::from_slice(answer)
        .map_err(|_| "the token endpoint's answer is not {access_token, expires_in}")?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", minted.access_token))
        .ok()
        .filter(|_| {
            !minted.access_token.is_empty()
                && minted.access_token.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or("the token endpoint's access_token cannot be sent in a header")?;
    value.set_sensitive(true);
    let life = Duration::from_secs(minted.expires_in.unwrap_or(3600)).min(MAX_TOKEN_LIFE);
    Ok((value, life))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The assertion verifies with the account's public key and holds the
    /// claims Google reads. (The interop suite verifies it again with the
    /// `cryptography` package.)
    #[test]
    fn the_assertion_is_an_rs256_jwt_of_the_account() {
        use rustls::pki_types::pem::PemObject;
        let pem = include_str!("../../tests/fixtures/vertex-test-key.pem");
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let account = ServiceAccount {
            client_email: "sa@proj-1.iam.gserviceaccount.com".into(),
            private_key_der: crate::domain::SecretBytes(zeroize::Zeroizing::new(
                der.secret_pkcs8_der().to_vec(),
            )),
            private_key_id: Some("kid-1".into()),
            token_uri: "https://oauth2.googleapis.com/token".into(),
            project_id: "proj-1".into(),
            region: "global".into(),
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let jwt = assertion(&account, at).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let json = |s: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()
        };
        assert_eq!(
            json(parts[0]),
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
        );
        assert_eq!(
            json(parts[1]),
            serde_json::json!({
                "iss": "sa@proj-1.iam.gserviceaccount.com",
                "scope": SCOPE,
                "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public().as_ref(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public.verify(signed.as_bytes(), &signature).unwrap();
        let mut forged = signature.clone();
        forged[0] ^= 1;
        assert!(public.verify(signed.as_bytes(), &forged).is_err());
    }
}
