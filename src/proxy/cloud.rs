//! Structured cloud keys at request time (SPEC §9): where each attempt goes
//! and how it authenticates. SigV4 has its own module ([`super::sigv4`]);
//! here are Azure's entries (the deployment the model picks, its host and
//! key) and Vertex's service accounts (the project and location put in the
//! path, and the access token minted at the account's `token_uri`).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use percent_encoding::percent_decode_str;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use tower::{Service, ServiceExt};

use super::body::ForwardBody;
use super::error::Rejection;
use super::service::Attempt;
use crate::domain::{CloudKey, ServiceAccount, Upstream};
use crate::policy::{Candidate, Cloud};
use crate::BoxError;

/// The scope a Vertex token is minted for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long a mint may take, within the attempt's first-byte timeout.
pub(crate) const MINT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest token endpoint answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// The longest a token is kept, whatever its endpoint said.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// Where one attempt goes and what authenticates it.
#[derive(Debug)]
pub(crate) struct Target<'c> {
    pub(crate) upstream: &'c Upstream,
    /// The value of the provider's auth header; `None` when the attempt is
    /// signed (SigV4) or bears a minted token (Vertex) instead.
    pub(crate) auth: Option<&'c HeaderValue>,
    /// The client's path, with what the key replaces in it.
    pub(crate) path: Cow<'c, str>,
}

/// Where `cand` sends a request for `model` whose path (after the provider)
/// is `rest`. Refused only for a Vertex path that hides a separator.
pub(crate) fn target<'c>(
    cand: &'c Candidate,
    model: Option<&str>,
    rest: &'c str,
) -> Result<Target<'c>, Rejection> {
    match &cand.cloud {
        Cloud::None => Ok(Target {
            upstream: &cand.upstream,
            auth: Some(&cand.auth_value),
            path: Cow::Borrowed(rest),
        }),
        Cloud::SigV4 => Ok(Target {
            upstream: &cand.upstream,
            auth: None,
            path: Cow::Borrowed(rest),
        }),
        Cloud::Vertex(_) => {
            let Some(CloudKey::Vertex(account)) = cand.record.cloud.as_deref() else {
                return Err(Rejection::InvalidRequest(
                    "the credential has no service account",
                ));
            };
            Ok(Target {
                upstream: &cand.upstream,
                auth: None,
                path: vertex_path(rest, &account.project_id, &account.region)?,
            })
        }
        Cloud::Azure(routes) => {
            let deployment = routes.iter().find(|r| {
                r.model
                    .as_ref()
                    .is_some_and(|m| model.is_some_and(|model| m.admits(model)))
            });
            let Some(route) = deployment.or_else(|| routes.iter().find(|r| r.model.is_none()))
            else {
                // The allowlists admit only the deployments' models.
                return Err(Rejection::InvalidRequest(
                    "no Azure entry serves this model",
                ));
            };
            Ok(Target {
                upstream: &route.upstream,
                auth: Some(&route.auth_value),
                path: match &route.deployment {
                    Some(d) => azure_path(rest, d),
                    None => Cow::Borrowed(rest),
                },
            })
        }
    }
}

/// `rest` with every project and location it names replaced by the
/// credential's (`…/projects/{p}/locations/{l}/…`), the keywords read
/// percent-decoded; a path naming neither, but a publisher, gets them before
/// `publishers` (Vertex's express-mode paths). A segment hiding a separator
/// (`%2F`, `\`) is refused: the upstream could read a project there.
pub(crate) fn vertex_path<'a>(
    rest: &'a str,
    project: &str,
    location: &str,
) -> Result<Cow<'a, str>, Rejection> {
    let hidden = |seg: &str| {
        seg.contains('\\') || {
            let lower = seg.to_ascii_lowercase();
            lower.contains("%2f") || lower.contains("%5c")
        }
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| hidden(s)) {
        return Err(Rejection::InvalidRequest(
            "encoded separators are not allowed in a Vertex path",
        ));
    }
    let keyword = |seg: &str| percent_decode_str(seg).decode_utf8_lossy().into_owned();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len() + 4);
    let mut named = false;
    let mut replace_next: Option<&str> = None;
    for seg in &segments {
        if let Some(with) = replace_next.take() {
            out.push(with);
            continue;
        }
        match keyword(seg).as_str() {
            "projects" => {
                named = true;
                replace_next = Some(project);
            }
            "locations" => {
                named = true;
                replace_next = Some(location);
            }
            "publishers" if !named => {
                out.extend(["projects", project, "locations", location]);
                named = true;
            }
            _ => {}
        }
        out.push(seg);
    }
    let joined = out.join("/");
    Ok(if joined == rest {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned(joined)
    })
}

/// `rest` with the deployment it names (`…/deployments/{d}/…`, the keyword
/// read percent-decoded as the model is) replaced by `deployment`;
/// unchanged when it names none.
pub(crate) fn azure_path<'a>(rest: &'a str, deployment: &str) -> Cow<'a, str> {
    let keyword = |seg: &str| percent_decode_str(seg).decode_utf8_lossy() == "deployments";
    let mut out = String::with_capacity(rest.len() + deployment.len());
    let mut after_keyword = false;
    let mut replaced = false;
    for (i, seg) in rest.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if after_keyword { deployment } else { seg });
        replaced |= after_keyword;
        after_keyword = keyword(seg);
    }
    if replaced {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(rest)
    }
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

/// Mints an access token for `account` through `inner` (so the token
/// endpoint is reached as upstreams are, with their TLS roots):
/// `Bearer …`, marked sensitive, and how long it lives. Errors never hold
/// the token, the assertion or the endpoint's words.
pub(crate) async fn mint<S, RB>(
    inner: &mut S,
    account: &ServiceAccount,
    attempt: Attempt,
) -> Result<(HeaderValue, Duration), BoxError>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let jwt = assertion(account, SystemTime::now())?;
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
    req.extensions_mut().insert(attempt);
    let answer = async {
        let svc = inner.ready().await.map_err(Into::into)?;
        svc.call(req).await.map_err(Into::into)
    };
    let res: Response<RB> = tokio::time::timeout(MINT_TIMEOUT, answer)
        .await
        .map_err(|_| "the token endpoint did not answer in time")??;
    let status = res.status();
    if !status.is_success() {
        return Err(TokenRefused(status).into());
    }
    let body = Limited::new(res.into_body(), MAX_TOKEN_ANSWER)
        .collect()
        .await
        .map_err(|_| "the token endpoint's answer could not be read")?
        .to_bytes();
    let minted: Minted = serde_json::from_slice(&body)
        .map_err(|_| "the token endpoint's answer has no access_token")?;
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

/// The token endpoint refused to mint.
#[derive(Debug, thiserror::Error)]
#[error("the token endpoint answered {0}")]
pub(crate) struct TokenRefused(pub(crate) StatusCode);

impl TokenRefused {
    /// Whether the answer refuses the account itself (`invalid_grant`, an
    /// unknown or disabled account: 400, 401, 403), not a passing failure.
    pub(crate) fn rejects_account(&self) -> bool {
        matches!(self.0.as_u16(), 400 | 401 | 403)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertex_paths_take_the_credentials_project_and_location() {
        let p = |rest| vertex_path(rest, "proj-cred", "us-central1").map(Cow::into_owned);
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
        ];
        for (rest, want) in cases {
            let got = p(rest).map_err(|_| ());
            assert_eq!(got.as_deref(), want.as_deref(), "{rest}");
        }
    }

    #[test]
    fn azure_paths_take_the_entrys_deployment() {
        let cases = [
            (
                "/openai/deployments/gpt-4o/chat/completions",
                "/openai/deployments/prod-4o/chat/completions",
            ),
            (
                "/openai/deployments/gpt-4o/embeddings",
                "/openai/deployments/prod-4o/embeddings",
            ),
            ("/openai/v1/chat/completions", "/openai/v1/chat/completions"),
            ("/models/chat/completions", "/models/chat/completions"),
            ("/openai/deployments", "/openai/deployments"),
            (
                "/openai/deploy%6Dents/gpt-4o/chat/completions",
                "/openai/deploy%6Dents/prod-4o/chat/completions",
            ),
            (
                "/openai/deployments/gpt%2D4o/chat/completions",
                "/openai/deployments/prod-4o/chat/completions",
            ),
        ];
        for (rest, want) in cases {
            assert_eq!(azure_path(rest, "prod-4o"), want, "{rest}");
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
