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
use http::{HeaderValue, Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use percent_encoding::percent_decode_str;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use tower::{Service, ServiceExt};

use super::attempt::Attempt;
use super::body::ForwardBody;
use super::error::Rejection;
use crate::domain::{ServiceAccount, Upstream};
use crate::policy::token::MintFailure;
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
/// is `rest` (checked by [`check_path`]); `None` when this candidate has no
/// entry for it (an Azure key of deployments alone, for a path that names
/// no deployment).
pub(crate) fn target<'c>(
    cand: &'c Candidate,
    model: Option<&str>,
    rest: &'c str,
) -> Result<Option<Target<'c>>, Rejection> {
    let plain = |auth| Target {
        upstream: &cand.upstream,
        auth,
        path: Cow::Borrowed(rest),
    };
    match &cand.cloud {
        Cloud::None => Ok(Some(plain(Some(&cand.auth_value)))),
        Cloud::SigV4 => Ok(Some(plain(None))),
        Cloud::Vertex(_) => {
            let Some(account) = cand.record.service_account() else {
                return Ok(None);
            };
            Ok(Some(Target {
                path: vertex_path(rest, &account.project_id, &account.region)?,
                ..plain(None)
            }))
        }
        Cloud::Azure(routes) => {
            // A deployment entry serves a path naming a deployment, which it
            // replaces; a path without one leaves the body's `model` to
            // pick the deployment, which only a resource entry may let it do.
            let names_deployment = azure_path(rest, "")? != rest;
            let deployment = routes.iter().find(|r| {
                names_deployment
                    && r.model
                        .as_ref()
                        .is_some_and(|m| model.is_some_and(|model| m.admits(model)))
            });
            let Some(route) = deployment.or_else(|| routes.iter().find(|r| r.model.is_none()))
            else {
                return Ok(None);
            };
            Ok(Some(Target {
                upstream: &route.upstream,
                auth: Some(&route.auth_value),
                path: match &route.deployment {
                    Some(d) => azure_path(rest, d)?,
                    None => Cow::Borrowed(rest),
                },
            }))
        }
    }
}

/// Refuses, before any attempt, a path that a cloud key's rewrite could
/// not read as the upstream would (see [`vertex_path`], [`azure_path`]).
pub(crate) fn check_path(provider: &str, rest: &str) -> Result<(), Rejection> {
    match provider {
        "google-vertex" => vertex_path(rest, "-", "-").map(drop),
        "azure" => azure_path(rest, "-").map(drop),
        _ => Ok(()),
    }
}

/// Whether a Vertex path names its model where Vertex reads it: a
/// publisher's model (`…/publishers/{p}/models/{m}:{method}`), or the
/// OpenAI-compatible endpoint (`…/endpoints/openapi/…`, the body's
/// `model`). Any other path (jobs, datasets, endpoints of one's own) names
/// none, whatever its body says.
pub(crate) fn vertex_names_model(rest: &str) -> bool {
    let segments: Vec<&str> = rest.split('/').collect();
    segments.contains(&"publishers") || segments.windows(2).any(|w| w == ["endpoints", "openapi"])
}

/// What a path segment is to a rewrite.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// Exactly this keyword (percent-decoded).
    Keyword(&'static str),
    /// Another spelling of a keyword (another case, a `;` parameter),
    /// which an upstream might read as the keyword.
    Disguised,
    Other,
}

fn segment(seg: &str, keywords: &[&'static str]) -> Segment {
    let decoded = percent_decode_str(seg).decode_utf8_lossy();
    let base = decoded.split(';').next().unwrap_or_default();
    for &k in keywords {
        if base.eq_ignore_ascii_case(k) {
            return if decoded == k {
                Segment::Keyword(k)
            } else {
                Segment::Disguised
            };
        }
    }
    Segment::Other
}

const DISGUISED: Rejection =
    Rejection::InvalidRequest("a path keyword is spelt another way (case, a ';' parameter)");

/// `value` in place of `seg`, keeping `seg`'s `:method` suffix
/// (`locations/us-central1:retrieveContexts`).
fn replaced(seg: &str, value: &str) -> String {
    match seg.find(':') {
        Some(at) => format!("{value}{}", &seg[at..]),
        None => value.to_owned(),
    }
}

/// `rest` with every project and location it names replaced by the
/// credential's (`…/projects/{p}/locations/{l}/…`, a `:method` suffix
/// kept), the keywords read percent-decoded; a path naming neither, but a
/// publisher, gets them before `publishers` (Vertex's express-mode paths).
/// Refused: a segment hiding a separator (`%2F`, `\`), or a keyword spelt
/// another way (`Projects`, `projects;x`), where the upstream could read a
/// project the rewrite did not see.
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
    let keywords = ["projects", "locations", "publishers"];
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    let mut named = false;
    let mut replace_next: Option<&str> = None;
    for seg in rest.split('/') {
        if hidden(seg) {
            return Err(Rejection::InvalidRequest(
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

/// `rest` with the deployment it names (`…/deployments/{d}/…`, the keyword
/// read percent-decoded as the model is) replaced by `deployment`;
/// unchanged when it names none. Refused: the keyword spelt another way.
pub(crate) fn azure_path<'a>(rest: &'a str, deployment: &str) -> Result<Cow<'a, str>, Rejection> {
    let mut out = String::with_capacity(rest.len() + deployment.len());
    let mut after_keyword = false;
    let mut replaced_any = false;
    for (i, seg) in rest.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if after_keyword {
            out.push_str(&replaced(seg, deployment));
            replaced_any = true;
        } else {
            out.push_str(seg);
        }
        after_keyword = match segment(seg, &["deployments"]) {
            Segment::Disguised => return Err(DISGUISED),
            Segment::Keyword(_) => true,
            Segment::Other => false,
        };
    }
    Ok(if replaced_any {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(rest)
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

/// Mints an access token for `account` through `inner` (so the token
/// endpoint is reached as upstreams are, with their TLS roots):
/// `Bearer …`, marked sensitive, and how long it lives. The whole exchange
/// is bounded by [`MINT_TIMEOUT`]. Errors never hold the token, the
/// assertion or the endpoint's words; `refused` is the endpoint's status
/// when it refused the account (400 `invalid_grant`, 401, 403).
pub(crate) async fn mint<S, RB>(
    inner: &mut S,
    account: &ServiceAccount,
    attempt: Option<Attempt>,
) -> Result<(HeaderValue, Duration), MintFailure<BoxError>>
where
    S: Service<Request<ForwardBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let failed = |error: BoxError| MintFailure {
        error,
        refused: None,
    };
    let jwt = assertion(account, SystemTime::now()).map_err(failed)?;
    let form =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}");
    let mut req = Request::new(Full::new(Bytes::from(form)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = account
        .token_uri
        .parse()
        .map_err(|_| failed("the token_uri is not a URL".into()))?;
    let headers = req.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    if let Some(attempt) = attempt {
        req.extensions_mut().insert(attempt);
    }
    let exchange = async {
        let svc = inner.ready().await.map_err(|e| failed(e.into()))?;
        let res: Response<RB> = svc.call(req).await.map_err(|e| failed(e.into()))?;
        let status = res.status();
        if !status.is_success() {
            return Err(MintFailure {
                error: format!("the token endpoint answered {status}").into(),
                refused: matches!(status.as_u16(), 400 | 401 | 403).then_some(status.as_u16()),
            });
        }
        let body = Limited::new(res.into_body(), MAX_TOKEN_ANSWER)
            .collect()
            .await
            .map_err(|_| failed("the token endpoint's answer could not be read".into()))?
            .to_bytes();
        Ok(body)
    };
    let body = tokio::time::timeout(MINT_TIMEOUT, exchange)
        .await
        .map_err(|_| failed("the token endpoint did not answer in time".into()))??;
    let minted: Minted = serde_json::from_slice(&body).map_err(|_| {
        failed("the token endpoint's answer is not {access_token, expires_in}".into())
    })?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", minted.access_token))
        .ok()
        .filter(|_| {
            !minted.access_token.is_empty()
                && minted.access_token.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            failed("the token endpoint's access_token cannot be sent in a header".into())
        })?;
    value.set_sensitive(true);
    let life = Duration::from_secs(minted.expires_in.unwrap_or(3600)).min(MAX_TOKEN_LIFE);
    Ok((value, life))
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
            assert_eq!(azure_path(rest, "prod-4o").unwrap(), want, "{rest}");
        }
        for disguised in [
            "/openai/Deployments/gpt-4o/chat/completions",
            "/openai/deployments;v=1/gpt-4o/chat/completions",
        ] {
            assert!(azure_path(disguised, "prod-4o").is_err(), "{disguised}");
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
