//! Vertex service accounts (SPEC §9): the project and location put in the
//! path, the signed JWT presented at the account's `token_uri`, and the
//! token exchange's request and answer. The exchange itself goes through
//! the proxy's inner service (`proxy::cloud::mint`), so the
//! token endpoint is reached as upstreams are; its tokens are kept in a
//! [`TokenCache`](super::token::TokenCache).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use super::{replaced, segment, BadPath, Segment, DISGUISED};
use crate::domain::ServiceAccount;
use crate::BoxError;

/// The scope a Vertex token is minted for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The longest a token is kept, whatever its endpoint said.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// Whether a Vertex path names its model where Vertex reads it: a
/// publisher's model (`…/publishers/{p}/models/{m}:{method}`), or the
/// OpenAI-compatible endpoint (`…/endpoints/openapi/…`, the body's
/// `model`). Any other path (jobs, datasets, endpoints of one's own) names
/// none, whatever its body says.
pub(crate) fn names_model(rest: &str) -> bool {
    let segments: Vec<&str> = rest.split('/').collect();
    segments.contains(&"publishers") || segments.windows(2).any(|w| w == ["endpoints", "openapi"])
}

/// `rest` with every project and location it names replaced by the
/// credential's (`…/projects/{p}/locations/{l}/…`, a `:method` suffix
/// kept), the keywords read percent-decoded; a path naming neither, but a
/// publisher, gets them before `publishers` (Vertex's express-mode paths).
/// Refused: a segment hiding a separator (`%2F`, `\`), or a keyword spelt
/// another way (`Projects`, `projects;x`), where the upstream could read a
/// project the rewrite did not see.
pub(crate) fn path<'a>(
    rest: &'a str,
    project: &str,
    location: &str,
) -> Result<Cow<'a, str>, BadPath> {
    let hidden = |seg: &str| {
        seg.contains('\\') || {
            let lower = seg.to_ascii_lowercase();
            lower.contains("%2f") || lower.contains("%5c")
        }
    };
    let keywords = ["projects", "locations", "publishers"];
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    let mut named = false;
    let mut replace_next: Option<&str> = None;
    for seg in rest.split('/') {
        if hidden(seg) {
            return Err(BadPath(
                "encoded separators are not allowed in a Vertex path",
            ));
        }
        if let Some(with) = replace_next.take() {
            out.push(Cow::Owned(replaced(seg, with)));
            continue;
        }
        match segment(seg, &keywords) {
            Segment::Disguised => return Err(DISGUISED),
            Segment::Keyword("projects") => {
                named = true;
                replace_next = Some(project);
            }
            Segment::Keyword("locations") => {
                named = true;
                replace_next = Some(location);
            }
            Segment::Keyword(_publishers) if !named => {
                out.extend(["projects", project, "locations", location].map(Cow::Borrowed));
                named = true;
            }
            _ => {}
        }
        out.push(Cow::Borrowed(seg));
    }
    let joined = out.join("/");
    Ok(if joined == rest {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned(joined)
    })
}

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

    #[test]
    fn vertex_paths_take_the_credentials_project_and_location() {
        let p = |rest| path(rest, "proj-cred", "us-central1").map(Cow::into_owned);
        let want = "/v1/projects/proj-cred/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent";
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("/v1/projects/client/locations/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent", Ok(want)),
            ("/v1/projects/proj-cred/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent", Ok(want)),
            // spelt encoded, still a keyword
            ("/v1/project%73/client/location%73/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent", Ok("/v1/project%73/proj-cred/location%73/us-central1/publishers/google/models/gemini-2.0-flash:generateContent")),
            // express mode: no project, a publisher
            ("/v1/publishers/google/models/gemini-2.0-flash:generateContent", Ok(want)),
            // anthropic's publisher alike
            ("/v1/projects/x/locations/y/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict", Ok("/v1/projects/proj-cred/locations/us-central1/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict")),
            // every project named, not only the first
            ("/v1/projects/a/locations/b/operations/projects/c", Ok("/v1/projects/proj-cred/locations/us-central1/operations/projects/proj-cred")),
            ("/v1/projects/other/operations/1", Ok("/v1/projects/proj-cred/operations/1")),
            ("/v1/models", Ok("/v1/models")),
            // a hidden separator
            ("/v1/projects/a%2Fb/locations/y/publishers/google/models/m:gen", Err(())),
            ("/v1/projects%2fother/locations/y/publishers/google/models/m:gen", Err(())),
            ("/v1/projects/a\\b/locations/y", Err(())),
            ("/v1/projects/a%5cb/locations/y", Err(())),
            // a keyword spelt another way
            ("/v1/Projects/other/locations/y/publishers/google/models/m:gen", Err(())),
            ("/v1/projects;v=1/other/locations/y/publishers/google/models/m:gen", Err(())),
            ("/v1/projects/p/LOCATIONS/other/publishers/google/models/m:gen", Err(())),
            ("/v1/projects/p/locations/l/Publishers/google/models/m:gen", Err(())),
            // a method on the location is kept
            ("/v1/projects/p/locations/l:retrieveContexts", Ok("/v1/projects/proj-cred/locations/us-central1:retrieveContexts")),
        ];
        for (rest, want) in cases {
            let got = p(rest).map_err(|_| ());
            assert_eq!(got.as_deref(), want.as_deref(), "{rest}");
        }
    }

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
