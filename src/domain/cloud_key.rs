//! OpenRouter's key formats for the clouds (SPEC §9), read from a
//! credential's `key`: AWS access keys for Bedrock, a service account for
//! Vertex, an array of resource and deployment entries for Azure. A plain
//! string is none of them (a bearer key, as for any provider).
//!
//! Every rule broken is a [`FieldErrors`] path under `key` that never quotes
//! a value: the JSON is read as a `serde_json::Value` first (whose parse
//! error is not shown: it can quote the text), then field by field.

use std::fmt;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::FieldErrors;

/// A structured cloud key.
#[derive(Clone)]
pub enum CloudKey {
    /// Bedrock: `{"accessKeyId", "secretAccessKey", "region", "sessionToken"?}`.
    Aws(AwsKey),
    /// Vertex: a service account and the region to serve from.
    Vertex(ServiceAccount),
    /// Azure: resource entries (every model) and per-deployment entries.
    Azure(Vec<AzureEntry>),
}

/// AWS access keys, signed with SigV4 for each attempt.
#[derive(Clone)]
pub struct AwsKey {
    /// The public half (`AKIA…`).
    pub access_key_id: String,
    /// The secret half.
    pub secret_access_key: SecretString,
    /// The region whose Bedrock endpoint is used and signed for.
    pub region: String,
    /// Temporary credentials' token, sent as `X-Amz-Security-Token`.
    pub session_token: Option<SecretString>,
}

/// A Google service account, for minting OAuth2 access tokens.
#[derive(Clone)]
pub struct ServiceAccount {
    /// The account (`name@project.iam.gserviceaccount.com`): the JWT's `iss`.
    pub client_email: String,
    /// The PKCS#8 DER of the account's RSA key.
    pub private_key_der: SecretBytes,
    /// The key's id, the JWT header's `kid` when the account names it.
    pub private_key_id: Option<String>,
    /// Where tokens are minted; the JWT's `aud`.
    pub token_uri: String,
    /// The project put in the client's path.
    pub project_id: String,
    /// The location put in the client's path (`global` by default).
    pub region: String,
}

/// Key bytes that are never printed.
#[derive(Clone)]
pub struct SecretBytes(pub(crate) zeroize::Zeroizing<Vec<u8>>);

/// One entry of an Azure key array.
#[derive(Clone)]
pub enum AzureEntry {
    /// Every model, on a resource's host.
    Resource {
        /// The resource's `api-key`.
        api_key: SecretString,
        /// The resource's name: the host's first label.
        resource_name: String,
        /// Which host: `{name}.openai.azure.com` or `{name}.services.ai.azure.com`.
        resource_type: AzureResourceType,
    },
    /// One model, on its own endpoint and deployment.
    Deployment {
        /// The model it serves, matched as an allowlist entry is.
        model_slug: String,
        /// Its endpoint's origin and any path prefix before the API's own
        /// path (`openai/…`, `deployments/…`, `models/…`): its query and
        /// the API path are the client's.
        endpoint: super::Upstream,
        /// Its `api-key`.
        api_key: SecretString,
        /// The deployment put in the client's path.
        model_id: String,
    },
}

/// An Azure resource's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AzureResourceType {
    /// Azure OpenAI: `{name}.openai.azure.com`.
    OpenAi,
    /// Azure AI Foundry: `{name}.services.ai.azure.com`.
    AiFoundry,
}

impl AzureResourceType {
    /// The domain a resource's name is the first label of.
    pub fn domain(self) -> &'static str {
        match self {
            AzureResourceType::OpenAi => "openai.azure.com",
            AzureResourceType::AiFoundry => "services.ai.azure.com",
        }
    }
}

impl SecretBytes {
    /// The bytes, for the one place that signs with them.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

impl fmt::Debug for AwsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&CloudKey::Aws(self.clone()), f)
    }
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&CloudKey::Vertex(self.clone()), f)
    }
}

impl AzureEntry {
    /// The host this entry's key is sent to: public, and what an operator
    /// recognises the key by.
    fn host(&self) -> String {
        match self {
            AzureEntry::Resource {
                resource_name,
                resource_type,
                ..
            } => format!("{resource_name}.{}", resource_type.domain()),
            AzureEntry::Deployment { endpoint, .. } => endpoint.host().to_owned(),
        }
    }
}

impl fmt::Debug for AzureEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureEntry::Resource {
                resource_name,
                resource_type,
                ..
            } => f
                .debug_struct("Resource")
                .field("resource_name", resource_name)
                .field("resource_type", resource_type)
                .finish_non_exhaustive(),
            AzureEntry::Deployment {
                model_slug,
                model_id,
                endpoint,
                ..
            } => f
                .debug_struct("Deployment")
                .field("model_slug", model_slug)
                .field("model_id", model_id)
                .field("endpoint", endpoint)
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for CloudKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudKey::Aws(k) => f
                .debug_struct("Aws")
                .field("access_key_id", &self.label())
                .field("region", &k.region)
                .field(
                    "session_token",
                    &k.session_token.as_ref().map(|_| "[redacted]"),
                )
                .finish_non_exhaustive(),
            CloudKey::Vertex(sa) => f
                .debug_struct("Vertex")
                .field("client_email", &self.label())
                .field("project_id", &sa.project_id)
                .field("region", &sa.region)
                .finish_non_exhaustive(),
            CloudKey::Azure(entries) => f
                .debug_struct("Azure")
                .field("entries", &entries.len())
                .finish_non_exhaustive(),
        }
    }
}

impl CloudKey {
    /// The credential's label, made from its public part only: the access
    /// key id masked (`AKI...WXYZ`), the client email's first 3 characters
    /// and its domain, the first Azure entry's host (`my-res.openai.azure.com
    /// +1` when more entries follow). No character of a secret is in it.
    pub fn label(&self) -> String {
        match self {
            CloudKey::Aws(k) => super::mask(&k.access_key_id, 3, 12),
            CloudKey::Vertex(sa) => match sa.client_email.split_once('@') {
                Some((local, domain)) if local.chars().count() > 3 => {
                    let head: String = local.chars().take(3).collect();
                    format!("{head}...@{domain}")
                }
                Some((_, domain)) => format!("...@{domain}"),
                None => "...".to_owned(),
            },
            CloudKey::Azure(entries) => {
                let Some(first) = entries.first() else {
                    return "...".to_owned();
                };
                match entries.len() - 1 {
                    0 => first.host(),
                    more => format!("{} +{more}", first.host()),
                }
            }
        }
    }

    /// Reads `key` as `provider`'s structured format: `Ok(None)` for a plain
    /// key (not JSON), every broken rule otherwise, under the path `key`.
    pub fn parse(provider: &str, key: &SecretString) -> Result<Option<CloudKey>, FieldErrors> {
        let text = key.expose_secret().trim();
        let json = match (provider, text.as_bytes().first()) {
            ("amazon-bedrock" | "google-vertex", Some(b'{')) | ("azure", Some(b'[')) => {
                match serde_json::from_str::<Value>(text) {
                    Ok(v) => v,
                    Err(_) => {
                        let mut errs = FieldErrors::default();
                        errs.at("key", "not valid JSON");
                        return Err(errs);
                    }
                }
            }
            _ => return Ok(None),
        };
        let mut errs = FieldErrors::default();
        let parsed = match provider {
            "amazon-bedrock" if !cfg!(feature = "aws") => {
                errs.at(
                    "key",
                    "AWS access keys need byok-proxy built with the `aws` feature (a Bedrock API key works without it)",
                );
                None
            }
            "google-vertex" if !cfg!(feature = "vertex") => {
                errs.at(
                    "key",
                    "a service account needs byok-proxy built with the `vertex` feature (an express-mode API key works without it)",
                );
                None
            }
            "amazon-bedrock" => aws(&json, &mut errs).map(CloudKey::Aws),
            "google-vertex" => vertex(&json, &mut errs).map(CloudKey::Vertex),
            _ => azure(&json, &mut errs).map(CloudKey::Azure),
        };
        match parsed {
            Some(k) if errs.is_empty() => Ok(Some(k)),
            _ => Err(errs),
        }
    }
}

/// The object's string field `name`, or an error at `path.name`.
fn text(
    obj: &Map<String, Value>,
    path: &str,
    name: &str,
    errs: &mut FieldErrors,
) -> Option<String> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            errs.at(format_args!("{path}.{name}"), "must not be empty");
            None
        }
        Some(_) => {
            errs.at(format_args!("{path}.{name}"), "must be a string");
            None
        }
        None => {
            errs.at(format_args!("{path}.{name}"), "missing");
            None
        }
    }
}

/// The object's optional string field `name`.
fn optional_text(
    obj: &Map<String, Value>,
    path: &str,
    name: &str,
    errs: &mut FieldErrors,
) -> Option<String> {
    match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(_) => text(obj, path, name, errs),
    }
}

fn object<'a>(v: &'a Value, path: &str, errs: &mut FieldErrors) -> Option<&'a Map<String, Value>> {
    let obj = v.as_object();
    if obj.is_none() {
        errs.at(path, "must be a JSON object");
    }
    obj
}

/// An AWS region: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-3`.
fn aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].len() <= 2
        && !parts[parts.len() - 1].is_empty()
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// A Google Cloud location: `global`, or `us-central1`, `europe-west4`.
fn gcp_region(region: &str) -> bool {
    if region == "global" {
        return true;
    }
    let Some((area, rest)) = region.split_once('-') else {
        return false;
    };
    let digits = rest.bytes().rev().take_while(u8::is_ascii_digit).count();
    !area.is_empty()
        && area.bytes().all(|b| b.is_ascii_lowercase())
        && digits > 0
        && digits < rest.len()
        && rest[..rest.len() - digits]
            .bytes()
            .all(|b| b.is_ascii_lowercase())
}

/// A Google Cloud project id: `my-project-1`, or domain-scoped
/// `example.com:my-project`.
fn gcp_project(id: &str) -> bool {
    let (domain, name) = match id.rsplit_once(':') {
        Some((domain, name)) if !domain.is_empty() => (domain, name),
        Some(_) => return false,
        None => ("", id),
    };
    (6..=30).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
}

/// An Azure deployment name, which the proxy puts in the path: letters,
/// digits, `-`, `_`, `.` (not a dot segment).
fn azure_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.bytes().any(|b| b != b'.')
}

const HTTPS_ONLY: &str = "must be an https:// URL (http:// only for a loopback host)";

/// `url` as an upstream, when it is `https://`, or `http://` to a loopback
/// host (a local token service, tests): the proxy sends secrets there.
fn secure_url(url: &str) -> Result<http::Uri, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| HTTPS_ONLY)?;
    let host = uri.host().ok_or(HTTPS_ONLY)?;
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback => Ok(uri),
        _ => Err(HTTPS_ONLY),
    }
}

/// A deployment's `endpoint_url` as an upstream: its origin and any path
/// prefix before the first `openai`, `deployments` or `models` segment (the
/// API's path, which the client sends), without its query.
fn azure_endpoint(url: &str) -> Result<super::Upstream, &'static str> {
    let uri = secure_url(url)?;
    if url.contains('#') || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(HTTPS_ONLY);
    }
    let mut prefix = String::new();
    for seg in uri.path().split('/').filter(|s| !s.is_empty()) {
        if ["openai", "deployments", "models"].contains(&seg) {
            break;
        }
        prefix.push('/');
        prefix.push_str(seg);
    }
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map_or("", |a| a.as_str());
    super::Upstream::parse(&format!("{scheme}://{authority}{prefix}"))
}

fn aws(json: &Value, errs: &mut FieldErrors) -> Option<AwsKey> {
    let obj = object(json, "key", errs)?;
    for name in obj.keys() {
        if !["accessKeyId", "secretAccessKey", "region", "sessionToken"].contains(&name.as_str()) {
            errs.at(
                "key",
                "unknown field: use accessKeyId, secretAccessKey, region, sessionToken",
            );
            break;
        }
    }
    let access_key_id = text(obj, "key", "accessKeyId", errs);
    let secret = text(obj, "key", "secretAccessKey", errs);
    let region = text(obj, "key", "region", errs);
    let session_token = optional_text(obj, "key", "sessionToken", errs);
    if region.as_deref().is_some_and(|r| !aws_region(r)) {
        errs.at("key.region", "not an AWS region like us-east-1");
    }
    if access_key_id
        .as_deref()
        .is_some_and(|id| !id.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        errs.at(
            "key.accessKeyId",
            "not an AWS access key id (letters and digits)",
        );
    }
    Some(AwsKey {
        access_key_id: access_key_id?,
        secret_access_key: SecretString::from(secret?),
        region: region?,
        session_token: session_token.map(SecretString::from),
    })
}

fn vertex(json: &Value, errs: &mut FieldErrors) -> Option<ServiceAccount> {
    let obj = object(json, "key", errs)?;
    if obj.get("type").and_then(Value::as_str) != Some("service_account") {
        errs.at("key.type", "must be \"service_account\"");
    }
    let client_email = text(obj, "key", "client_email", errs);
    let private_key = text(obj, "key", "private_key", errs);
    let token_uri = text(obj, "key", "token_uri", errs);
    let project_id = text(obj, "key", "project_id", errs);
    let private_key_id = optional_text(obj, "key", "private_key_id", errs);
    if project_id.as_deref().is_some_and(|p| !gcp_project(p)) {
        errs.at(
            "key.project_id",
            "not a Google Cloud project id (lowercase letters, digits, -, and a domain:)",
        );
    }
    let region = optional_text(obj, "key", "region", errs).unwrap_or_else(|| "global".to_owned());
    if !gcp_region(&region) {
        errs.at(
            "key.region",
            "not a Google Cloud location like us-central1 or global",
        );
    }
    if client_email.as_deref().is_some_and(|e| !e.contains('@')) {
        errs.at("key.client_email", "not an email address");
    }
    if token_uri
        .as_deref()
        .is_some_and(|u| secure_url(u).is_err() || u.contains('#'))
    {
        errs.at("key.token_uri", HTTPS_ONLY);
    }
    let der = private_key.and_then(|pem| {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .ok()
            .filter(|der| ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).is_ok());
        if der.is_none() {
            errs.at("key.private_key", "not a PEM PKCS#8 RSA private key");
        }
        der.map(|d| SecretBytes(zeroize::Zeroizing::new(d.secret_pkcs8_der().to_vec())))
    });
    Some(ServiceAccount {
        client_email: client_email?,
        private_key_der: der?,
        private_key_id,
        token_uri: token_uri?,
        project_id: project_id?,
        region,
    })
}

fn azure(json: &Value, errs: &mut FieldErrors) -> Option<Vec<AzureEntry>> {
    let Some(items) = json.as_array() else {
        errs.at("key", "must be a JSON array");
        return None;
    };
    if items.is_empty() {
        errs.at("key", "must hold at least one entry");
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("key[{i}]");
        let Some(obj) = object(item, &path, errs) else {
            continue;
        };
        let api_key = text(obj, &path, "api_key", errs).map(SecretString::from);
        if obj.contains_key("model_slug") {
            let model_slug = text(obj, &path, "model_slug", errs);
            let endpoint_url = text(obj, &path, "endpoint_url", errs);
            let model_id = text(obj, &path, "model_id", errs);
            let endpoint = endpoint_url.and_then(|u| {
                azure_endpoint(&u)
                    .map_err(|why| errs.at(format_args!("{path}.endpoint_url"), why))
                    .ok()
            });
            if model_id.as_deref().is_some_and(|d| !azure_name(d)) {
                errs.at(
                    format_args!("{path}.model_id"),
                    "not an Azure deployment name (letters, digits, -, _, .)",
                );
            }
            if let (Some(model_slug), Some(endpoint), Some(api_key), Some(model_id)) =
                (model_slug, endpoint, api_key, model_id)
            {
                out.push(AzureEntry::Deployment {
                    model_slug,
                    endpoint,
                    api_key,
                    model_id,
                });
            }
        } else {
            let resource_name = text(obj, &path, "resource_name", errs);
            if resource_name.as_deref().is_some_and(|n| {
                n.len() > 64
                    || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    || n.starts_with('-')
                    || n.ends_with('-')
            }) {
                errs.at(
                    format_args!("{path}.resource_name"),
                    "not an Azure resource name (letters, digits, -)",
                );
            }
            let resource_type = match obj.get("resource_type").and_then(Value::as_str) {
                Some("openai") => Some(AzureResourceType::OpenAi),
                Some("ai_foundry") => Some(AzureResourceType::AiFoundry),
                _ => {
                    errs.at(
                        format_args!("{path}.resource_type"),
                        "must be \"openai\" or \"ai_foundry\"",
                    );
                    None
                }
            };
            if let (Some(api_key), Some(resource_name), Some(resource_type)) =
                (api_key, resource_name, resource_type)
            {
                out.push(AzureEntry::Resource {
                    api_key,
                    resource_name,
                    resource_type,
                });
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway 2048-bit RSA key, made for these tests alone.
    const TEST_RSA_PKCS8: &str = include_str!("../../tests/fixtures/vertex-test-key.pem");

    fn parse(provider: &str, key: &str) -> Result<Option<CloudKey>, String> {
        CloudKey::parse(provider, &SecretString::from(key.to_owned())).map_err(|e| e.to_string())
    }

    fn service_account(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut obj = serde_json::json!({
            "type": "service_account",
            "project_id": "proj-1",
            "private_key_id": "abc",
            "private_key": TEST_RSA_PKCS8,
            "client_email": "gateway@proj-1.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
            "region": "us-central1",
        });
        edit(obj.as_object_mut().unwrap());
        obj.to_string()
    }

    #[test]
    fn plain_keys_are_not_structured() {
        for (provider, key) in [
            ("amazon-bedrock", "ABSKQmVkcm9ja0FQSUtleS1..."),
            ("google-vertex", "AIza-not-json"),
            ("azure", "0123456789abcdef"),
            ("openai", r#"{"accessKeyId":"AKIA"}"#),
        ] {
            assert!(parse(provider, key).unwrap().is_none(), "{provider}");
        }
    }

    #[test]
    #[cfg(feature = "aws")]
    fn aws_keys_parse_and_label_by_their_public_half() {
        let k = parse(
            "amazon-bedrock",
            r#"{"accessKeyId":"AKIAIOSFODNN7EXAMPLE","secretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","region":"eu-central-1","sessionToken":"FQoGZXIvYXdzEXAMPLE"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(k.label(), "AKI...MPLE");
        let CloudKey::Aws(aws) = &k else { panic!() };
        assert_eq!(aws.region, "eu-central-1");
        let shown = format!("{k:?}");
        for secret in ["wJalrXUtnFEMI", "FQoGZXIvYXdz", "AKIAIOSFODNN7EXAMPLE"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    /// Each broken rule names its field and never its value.
    #[test]
    fn broken_keys_name_the_field_never_the_value() {
        let aws_ok = r#""accessKeyId":"AKIAIOSFODNN7EXAMPLE","secretAccessKey":"SECRETSECRET""#;
        let cases: Vec<(&str, String, &str)> = vec![
            ("amazon-bedrock", "{not json SECRETSECRET".into(), "key: not valid JSON"),
            ("amazon-bedrock", format!("{{{aws_ok}}}"), "key.region: missing"),
            ("amazon-bedrock", format!(r#"{{{aws_ok},"region":"mars-1"}}"#), "key.region: not an AWS region"),
            ("amazon-bedrock", format!(r#"{{{aws_ok},"region":"us-east-1","extra":1}}"#), "key: unknown field"),
            ("amazon-bedrock", r#"{"accessKeyId":7,"secretAccessKey":"SECRETSECRET","region":"us-east-1"}"#.into(), "key.accessKeyId: must be a string"),
            ("google-vertex", service_account(|o| { o.remove("client_email"); }), "key.client_email: missing"),
            ("google-vertex", service_account(|o| { o.insert("private_key".into(), "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n".into()); }), "key.private_key: not a PEM PKCS#8 RSA private key"),
            ("google-vertex", service_account(|o| { o.insert("region".into(), "the moon".into()); }), "key.region: not a Google Cloud location"),
            ("google-vertex", service_account(|o| { o.insert("type".into(), "user".into()); }), "key.type: must be \"service_account\""),
            ("google-vertex", service_account(|o| { o.insert("token_uri".into(), "http://evil.test/SECRETSECRET".into()); }), "key.token_uri: must be an https:// URL"),
            ("azure", "[]".into(), "key: must hold at least one entry"),
            ("azure", r#"[{"model_slug":"gpt-4o","endpoint_url":"http://dep.example/SECRETSECRET","api_key":"k","model_id":"d"}]"#.into(), "key[0].endpoint_url: must be an https:// URL"),
            ("azure", r#"[{"model_slug":"gpt-4o","endpoint_url":"https://d.openai.azure.com","api_key":"k","model_id":"../SECRETSECRET"}]"#.into(), "key[0].model_id: not an Azure deployment name"),
            ("azure", r#"[{"api_key":"k","resource_name":"SECRETSECRET.evil.com/","resource_type":"openai"}]"#.into(), "key[0].resource_name: not an Azure resource name"),
            ("google-vertex", service_account(|o| { o.insert("project_id".into(), "SECRETSECRET/../x".into()); }), "key.project_id: not a Google Cloud project id"),
            ("azure", r#"[{"api_key":"SECRETSECRET","resource_name":"r1","resource_type":"aws"}]"#.into(), "key[0].resource_type: must be"),
            ("azure", r#"[{"api_key":"SECRETSECRET","resource_name":"r1","resource_type":"openai"},{"model_slug":"azure/gpt-4o","api_key":"SECRETSECRET","model_id":"gpt4o-prod"}]"#.into(), "key[1].endpoint_url: missing"),
        ];
        for (provider, key, want) in cases {
            // Without its feature a key is refused for that, or read as a
            // plain one (tests/layer/features.rs): the reader is not built.
            let unbuilt = (provider == "amazon-bedrock" && !cfg!(feature = "aws"))
                || (provider == "google-vertex" && !cfg!(feature = "vertex"));
            if unbuilt {
                continue;
            }
            let err = parse(provider, &key).expect_err(want);
            assert!(err.contains(want), "{provider}: want {want:?}, got {err:?}");
            assert!(!err.contains("SECRETSECRET"), "{err}");
        }
    }

    #[test]
    #[cfg(feature = "vertex")]
    fn a_service_account_parses_with_its_region_and_a_masked_email() {
        let k = parse("google-vertex", &service_account(|_| {}))
            .unwrap()
            .unwrap();
        assert_eq!(k.label(), "gat...@proj-1.iam.gserviceaccount.com");
        let CloudKey::Vertex(sa) = &k else { panic!() };
        assert_eq!(
            (sa.region.as_str(), sa.project_id.as_str()),
            ("us-central1", "proj-1")
        );
        assert!(!format!("{k:?}").contains("PRIVATE"));
        let k = parse(
            "google-vertex",
            &service_account(|o| {
                o.remove("region");
            }),
        )
        .unwrap()
        .unwrap();
        let CloudKey::Vertex(sa) = &k else { panic!() };
        assert_eq!(sa.region, "global");
    }

    #[test]
    fn azure_arrays_mix_resources_and_deployments() {
        let k = parse(
            "azure",
            r#"[{"api_key":"az-key-0000000000001","resource_name":"my-res","resource_type":"ai_foundry"},
                {"model_slug":"azure/gpt-4o","endpoint_url":"https://dep.openai.azure.com","api_key":"az-key-0000000000002","model_id":"gpt4o-prod"}]"#,
        )
        .unwrap()
        .unwrap();
        let CloudKey::Azure(entries) = &k else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
        assert!(matches!(
            entries[0],
            AzureEntry::Resource {
                resource_type: AzureResourceType::AiFoundry,
                ..
            }
        ));
        assert!(
            matches!(&entries[1], AzureEntry::Deployment { model_id, .. } if model_id == "gpt4o-prod")
        );
        assert_eq!(k.label(), "my-res.services.ai.azure.com +1");
        let deployment_first = parse(
            "azure",
            r#"[{"model_slug":"gpt-4o","endpoint_url":"https://dep.openai.azure.com/openai","api_key":"az7secretsecret8d29","model_id":"d"}]"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(deployment_first.label(), "dep.openai.azure.com");
    }

    /// A deployment's endpoint keeps its origin and any prefix before the
    /// API's path; http only to a loopback host.
    #[test]
    fn azure_endpoints_table() {
        let cases = [
            (
                "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=1",
                Ok("https://r.openai.azure.com"),
            ),
            (
                "https://r.services.ai.azure.com/models/chat/completions?api-version=1",
                Ok("https://r.services.ai.azure.com"),
            ),
            (
                "https://gw.example/team-a/openai/deployments/d",
                Ok("https://gw.example/team-a"),
            ),
            (
                "https://r.openai.azure.com",
                Ok("https://r.openai.azure.com"),
            ),
            (
                "http://127.0.0.1:8080/openai/deployments/d",
                Ok("http://127.0.0.1:8080"),
            ),
            ("http://localhost:8080/x", Ok("http://localhost:8080/x")),
            ("http://[::1]:8080/", Ok("http://[::1]:8080")),
            ("http://r.openai.azure.com/openai", Err(())),
            ("http://127.0.0.1.nip.io/openai", Err(())),
            ("https://user:pw@r.openai.azure.com", Err(())),
            ("ftp://r.openai.azure.com", Err(())),
            ("r.openai.azure.com", Err(())),
        ];
        for (url, want) in cases {
            let got = azure_endpoint(url).map(|u| u.to_string()).map_err(|_| ());
            assert_eq!(got.as_deref().map_err(|_| ()), want, "{url}");
        }
    }

    #[test]
    fn project_ids() {
        for (id, ok) in [
            ("my-project-1", true),
            ("example.com:my-project", true),
            ("proj-cred", true),
            ("short", false),
            ("ends-with-", false),
            (":abcdef", false),
            ("1starts-with-digit", false),
            ("Upper-case-1", false),
            ("a-thirty-one-character-project1", false),
        ] {
            assert_eq!(gcp_project(id), ok, "{id}");
        }
    }

    #[test]
    fn region_tables() {
        for (r, ok) in [
            ("us-east-1", true),
            ("us-gov-west-1", true),
            ("ap-southeast-3", true),
            ("eu-central-12", true),
            ("useast1", false),
            ("us-east-", false),
            ("US-EAST-1", false),
            ("us-east-123", false),
        ] {
            assert_eq!(aws_region(r), ok, "{r}");
        }
        for (r, ok) in [
            ("global", true),
            ("us-central1", true),
            ("europe-west4", true),
            ("us-central", false),
            ("central1", false),
            ("us-1", false),
            ("US-central1", false),
        ] {
            assert_eq!(gcp_region(r), ok, "{r}");
        }
    }
}
