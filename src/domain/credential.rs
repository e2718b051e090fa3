//! [`Credential`]: OpenRouter's `BYOKKey`, field for field, plus the secret and
//! the optional per-credential upstream settings — made only by
//! [`Credential::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::headers::reserved;
use super::{CredentialSpec, FieldErrors, KeyHash, Providers, Upstream};

/// The most entries an allowlist may have.
pub const MAX_LIST: usize = 100;

/// The longest a credential's `name` may be, in characters.
pub const MAX_NAME: usize = 255;

/// A credential's fields as a source read them, before any rule is checked:
/// what a config table, a database row and an API body each turn into. Its
/// plain fields are its [`CredentialSpec`]; beside them, the record's
/// identity, its secret and its headers, which each source gives its own way.
///
/// `Debug` shows neither the secret nor the header values.
#[derive(Debug, Clone)]
pub struct CredentialFields {
    /// Stable public id.
    pub id: String,
    /// The workspace it belongs to; `None`: global, a credential of every
    /// workspace.
    pub workspace_id: Option<String>,
    /// Lowercase provider slug.
    pub provider: String,
    /// The provider secret.
    pub key: SecretString,
    /// RFC 3339 timestamp.
    pub created_at: String,
    /// Headers set upstream together with the secret (a config-file setting).
    pub headers: BTreeMap<String, SecretString>,
    /// Everything else.
    pub spec: CredentialSpec,
}

/// A BYOK credential that obeys every rule: OpenRouter's `BYOKKey`, field for
/// field, plus the secret and the optional per-credential upstream settings.
///
/// Its plain fields are its [`CredentialSpec`], which it dereferences to
/// (`credential.is_byok_only`); beside them, what validation made of the
/// rest. `base_url` is the parsed upstream (the spec's is its text).
///
/// Made only by [`Credential::validate`] (other crates cannot build one
/// field by field). `Debug` shows the secret as `[REDACTED]`; the type has no
/// `Serialize`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Credential {
    /// Stable public id (UUID).
    pub id: String,
    /// The workspace it belongs to; `None`: global, a credential of every
    /// workspace.
    pub workspace_id: Option<String>,
    /// Lowercase provider slug.
    pub provider: String,
    /// Masked snippet of the secret (see [`label_for`]).
    pub label: String,
    /// RFC 3339 timestamp, as given.
    pub created_at: String,
    /// `created_at` as nanoseconds since the Unix epoch, for ordering.
    pub created_at_nanos: i128,
    /// The provider secret. Write-only.
    pub key: SecretString,
    /// An upstream of its own (Azure resource, Bedrock region), overriding the provider's.
    pub base_url: Option<Upstream>,
    /// Headers set upstream together with the secret (values marked sensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The key read as a cloud's structured format (SPEC §9), when it is one.
    pub cloud: Option<std::sync::Arc<super::CloudKey>>,
    /// Its plain fields, as validated (`base_url` normalised).
    pub spec: CredentialSpec,
}

impl Deref for Credential {
    type Target = CredentialSpec;

    fn deref(&self) -> &CredentialSpec {
        &self.spec
    }
}

impl DerefMut for Credential {
    fn deref_mut(&mut self) -> &mut CredentialSpec {
        &mut self.spec
    }
}

/// The masked label of a secret: its first 3 characters, `...`, its last 4
/// (`sk-...AbCd`). A secret shorter than 12 characters shows only `...`, so the
/// label never gives away more than 7 characters, nor most of a short secret.
pub fn label_for(secret: &SecretString) -> String {
    super::mask(secret.expose_secret(), 3, 12)
}

impl Credential {
    /// Checks every rule (SPEC §2) and builds the credential; otherwise every
    /// broken rule, each naming its field and never its value:
    ///
    /// - `id`, `workspace_id`: non-empty; the id visible ASCII (it is sent in
    ///   `x-byok-credential-id`);
    /// - `provider`: one of `providers`; `base_url`: a URL, required when the
    ///   provider has none;
    /// - `name`: at most [`MAX_NAME`] characters;
    /// - `key`: non-empty visible ASCII;
    /// - `created_at`: RFC 3339;
    /// - `headers`: valid names and values, none the proxy reserves;
    /// - each allowlist: at most [`MAX_LIST`] entries, none empty;
    ///   `allowed_api_key_hashes`, when given, non-empty and 64 lowercase hex
    ///   each.
    pub fn validate(fields: CredentialFields, providers: &Providers) -> Result<Self, FieldErrors> {
        let mut errs = FieldErrors::default();
        let f = fields;
        let spec = &f.spec;
        check_identity(&f, &mut errs);
        let provider = providers.get(&f.provider);
        if provider.is_none() {
            let shown: String = f.provider.chars().take(64).collect();
            errs.at(
                "provider",
                format_args!(
                    "unknown provider {shown:?}: use a built-in one or declare [providers.NAME]"
                ),
            );
        }
        if spec
            .name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NAME)
        {
            errs.at("name", format_args!("longer than {MAX_NAME} characters"));
        }
        let cloud = check_key(&f, &mut errs);
        let created_at_nanos = match OffsetDateTime::parse(&f.created_at, &Rfc3339) {
            Ok(t) => t.unix_timestamp_nanos(),
            Err(_) => {
                errs.at(
                    "created_at",
                    "not an RFC 3339 timestamp like 2025-08-24T10:30:00Z",
                );
                0
            }
        };
        let base_url = spec.base_url.as_deref().and_then(|u| {
            Upstream::parse(u)
                .map_err(|why| errs.at("base_url", why))
                .ok()
        });
        if let Some(p) = provider {
            // An Azure key array names its hosts itself.
            let hosted = matches!(cloud, Some(super::CloudKey::Azure(_)));
            if spec.base_url.is_none() && p.upstream.is_none() && !hosted {
                errs.at(
                    "base_url",
                    format_args!("required: provider {} has no default base_url", p.slug),
                );
            }
        }
        let headers = header_list("headers", &f.headers, &mut errs);
        check_allowlists(spec, &mut errs);
        // The normalised text of the parsed upstream, as it is stored.
        let normalised = base_url.as_ref().map(Upstream::to_string);
        errs.or_ok(|| Credential {
            label: cloud
                .as_ref()
                .map_or_else(|| label_for(&f.key), |c| c.label()),
            cloud: cloud.map(std::sync::Arc::new),
            id: f.id,
            workspace_id: f.workspace_id,
            provider: f.provider,
            created_at: f.created_at,
            created_at_nanos,
            key: f.key,
            base_url,
            headers,
            spec: CredentialSpec {
                base_url: normalised,
                ..f.spec
            },
        })
    }

    /// The AWS access keys its key holds, when it is one (SPEC §9): each
    /// attempt is then signed (SigV4) instead of carrying the key.
    pub fn aws_key(&self) -> Option<&super::AwsKey> {
        match self.cloud.as_deref() {
            Some(super::CloudKey::Aws(k)) => Some(k),
            _ => None,
        }
    }

    /// The service account its key holds, when it is one (SPEC §9): each
    /// attempt then bears a token minted with it instead of the key.
    pub fn service_account(&self) -> Option<&super::ServiceAccount> {
        match self.cloud.as_deref() {
            Some(super::CloudKey::Vertex(sa)) => Some(sa),
            _ => None,
        }
    }

    /// The fields again, to change some and validate anew (an update), or to
    /// store them.
    pub fn to_fields(&self) -> CredentialFields {
        CredentialFields {
            id: self.id.clone(),
            workspace_id: self.workspace_id.clone(),
            provider: self.provider.clone(),
            key: self.key.clone(),
            created_at: self.created_at.clone(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| {
                    let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (n.as_str().to_owned(), SecretString::from(value))
                })
                .collect(),
            spec: CredentialSpec {
                base_url: self.base_url.as_ref().map(Upstream::to_string),
                ..self.spec.clone()
            },
        }
    }
}

/// Configured headers: valid names and values, none reserved; values are
/// marked sensitive (they may carry secrets of their own).
pub(crate) fn header_list(
    path: &str,
    raw: &BTreeMap<String, SecretString>,
    errs: &mut FieldErrors,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (name, value) in raw {
        let at = Quoted(path, name);
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            errs.at(at, "not a valid header name");
            continue;
        };
        if reserved(&header) {
            errs.at(
                at,
                "hop-by-hop, framing and client-credential headers cannot be configured",
            );
            continue;
        }
        match HeaderValue::from_str(value.expose_secret()) {
            Ok(mut v) => {
                v.set_sensitive(true);
                out.push((header, v));
            }
            Err(_) => errs.at(at, "not a valid header value"),
        }
    }
    out
}

/// `headers."Name"`: a header's path, its name quoted.
struct Quoted<'a>(&'a str, &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:?}", self.0, self.1)
    }
}

#[cfg(test)]
impl Credential {
    /// A valid credential for tests: an `openai` key in `workspace_id`.
    pub(crate) fn for_tests(id: &str, workspace_id: &str, provider: &str) -> Self {
        Credential {
            id: id.to_owned(),
            workspace_id: Some(workspace_id.to_owned()),
            provider: provider.to_owned(),
            label: "...".to_owned(),
            created_at: "2025-01-01T00:00:00Z".to_owned(),
            created_at_nanos: 0,
            key: SecretString::from("sk-test-secret"),
            base_url: None,
            headers: Vec::new(),
            cloud: None,
            spec: CredentialSpec::default(),
        }
    }
}

/// The rules of the secret: a cloud's structured key read as such, any
/// other non-empty visible ASCII.
fn check_key(f: &CredentialFields, errs: &mut FieldErrors) -> Option<super::CloudKey> {
    let cloud = match super::CloudKey::parse(&f.provider, &f.key) {
        Ok(cloud) => cloud,
        Err(e) => {
            for err in e.iter() {
                errs.at(&err.path, &err.message);
            }
            None
        }
    };
    let secret = f.key.expose_secret();
    let structured = secret.trim_start().starts_with(['{', '['])
        && matches!(
            f.provider.as_str(),
            "amazon-bedrock" | "google-vertex" | "azure"
        );
    if !structured && (secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic())) {
        errs.at(
            "key",
            "must be non-empty visible ASCII (no spaces or control characters)",
        );
    }
    cloud
}

/// The rules of a credential's id, workspace and tier flags.
fn check_identity(f: &CredentialFields, errs: &mut FieldErrors) {
    if f.id.is_empty() {
        errs.at("id", "must not be empty");
    } else if !f.id.bytes().all(|b| b.is_ascii_graphic()) {
        errs.at(
            "id",
            "must be visible ASCII (it is sent in x-byok-credential-id)",
        );
    }
    if f.workspace_id.as_ref().is_some_and(String::is_empty) {
        errs.at(
                "workspace_id",
                "must not be empty (null, or leaving it out of a config file, makes a global credential)",
            );
    }
    if f.spec.is_byok_only && f.spec.is_fallback {
        errs.at(
                "is_byok_only",
                "cannot be set on a fallback credential (is_fallback): it would close the shared tier that comes before it",
            );
    }
}

/// The rules of the three allowlists: bounded, no empty entry, key hashes
/// 64 lowercase hex, and no `[]` of key hashes (it would admit no key).
fn check_allowlists(spec: &CredentialSpec, errs: &mut FieldErrors) {
    if spec
        .allowed_api_key_hashes
        .as_ref()
        .is_some_and(Vec::is_empty)
    {
        errs.at(
            "allowed_api_key_hashes",
            "[] would admit no key; use null (or leave it out) for no restriction",
        );
    }
    for (field, list) in [
        ("allowed_api_key_hashes", &spec.allowed_api_key_hashes),
        ("allowed_models", &spec.allowed_models),
        ("allowed_user_ids", &spec.allowed_user_ids),
    ] {
        let Some(list) = list else { continue };
        if list.len() > MAX_LIST {
            errs.at(field, format_args!("more than {MAX_LIST} entries"));
        }
        for (i, entry) in list.iter().enumerate() {
            if entry.is_empty() {
                errs.at(format_args!("{field}[{i}]"), "must not be empty");
            } else if field == "allowed_api_key_hashes" && KeyHash::from_hex(entry).is_none() {
                errs.at(format_args!("{field}[{i}]"), "not 64 lowercase hex chars");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> CredentialFields {
        CredentialFields {
            id: "c1".into(),
            workspace_id: Some("ws".into()),
            provider: "openai".into(),
            key: SecretString::from("sk-canary-SECRET-123456"),
            created_at: "2025-01-01T00:00:00Z".into(),
            headers: BTreeMap::new(),
            spec: CredentialSpec::default(),
        }
    }

    #[test]
    fn labels_never_reveal_more_than_seven_chars() {
        let cases = [
            ("sk-proj-abcdefghAbCd", "sk-...AbCd"),
            ("123456789012", "123...9012"),
            ("12345678901", "..."),
            ("short", "..."),
            ("", "..."),
        ];
        for (secret, want) in cases {
            assert_eq!(label_for(&SecretString::from(secret)), want);
        }
    }

    #[test]
    fn rules_table() {
        type Edit = fn(&mut CredentialFields);
        let cases: &[(&str, Edit)] = &[
            ("id: must not be empty", |f| f.id.clear()),
            ("id: must be visible ASCII", |f| f.id = "a b".into()),
            ("workspace_id: must not be empty", |f| {
                f.workspace_id = Some(String::new())
            }),
            ("is_byok_only: cannot be set on a fallback", |f| {
                f.spec.is_byok_only = true;
                f.spec.is_fallback = true;
            }),
            ("provider: unknown provider", |f| f.provider = "nope".into()),
            ("name: longer than 255", |f| {
                f.spec.name = Some("n".repeat(256))
            }),
            ("key: must be non-empty", |f| {
                f.key = SecretString::from("sk a")
            }),
            ("key: must be non-empty", |f| f.key = SecretString::from("")),
            ("created_at: not an RFC 3339", |f| {
                f.created_at = "now".into()
            }),
            ("base_url: must start with", |f| {
                f.spec.base_url = Some("ftp://x".into())
            }),
            ("base_url: required: provider azure", |f| {
                f.provider = "azure".into()
            }),
            (r#"headers."Authorization": hop-by-hop"#, |f| {
                f.headers
                    .insert("Authorization".into(), SecretString::from("x"));
            }),
            ("allowed_api_key_hashes: [] would admit no key", |f| {
                f.spec.allowed_api_key_hashes = Some(vec![])
            }),
            ("allowed_api_key_hashes[0]: not 64 lowercase hex", |f| {
                f.spec.allowed_api_key_hashes = Some(vec!["A".repeat(64)])
            }),
            ("allowed_models: more than 100 entries", |f| {
                f.spec.allowed_models = Some(vec!["m".into(); 101])
            }),
            ("allowed_user_ids[1]: must not be empty", |f| {
                f.spec.allowed_user_ids = Some(vec!["u".into(), String::new()])
            }),
        ];
        for (want, edit) in cases {
            let mut f = fields();
            edit(&mut f);
            let err = Credential::validate(f, &Providers::builtins())
                .expect_err(want)
                .to_string();
            assert!(err.starts_with(want), "want {want:?}, got {err:?}");
            assert!(!err.contains("canary"), "{err}");
        }
        let mut ok = fields();
        ok.spec.allowed_api_key_hashes = Some(vec!["a".repeat(64)]);
        ok.spec.allowed_models = Some(vec!["m".into(); 100]);
        ok.spec.name = Some("n".repeat(255));
        let c = Credential::validate(ok, &Providers::builtins()).unwrap();
        assert_eq!(c.label, "sk-...3456");
        let again = Credential::validate(c.to_fields(), &Providers::builtins()).unwrap();
        assert_eq!(format!("{again:?}"), format!("{c:?}"));
        assert!(!format!("{c:?}").contains("canary"));
    }
}
