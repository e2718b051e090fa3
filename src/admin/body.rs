//! The admin API's write bodies, as OpenRouter defines them, each turned into
//! the same fields a config table or a database row becomes. A credential
//! body is its own few fields and the credential's
//! [`CredentialSpec`] (a PATCH: its [`CredentialChanges`]) read beside them
//! ([`Flat`]), as the config's table is: a field of the spec is one there
//! too, with the same name and errors. The rules are
//! checked by [`Credential::validate`](crate::Credential::validate) and
//! [`ApiKey::validate`](crate::ApiKey::validate), not here.
//!
//! `headers` is not a field of these bodies (unknown fields are refused):
//! credential headers are a config-file setting, and the stores keep none.

use serde::{Deserialize, Deserializer};

use secrecy::{ExposeSecret, SecretString};

use super::error::AdminError;
use crate::domain::{
    key_label, ApiKeyFields, CredentialChanges, CredentialFields, CredentialSpec, Flat, KeyHash,
};
use crate::store::{new_gateway_key, new_uuid, now_rfc3339};

/// A field of a PATCH body: absent (unchanged), `null` (cleared) or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Patch<T> {
    /// Not in the body: unchanged.
    #[default]
    Absent,
    /// `null`: cleared.
    Null,
    /// A new value.
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Patch::Null,
            Some(v) => Patch::Value(v),
        })
    }
}

impl<T> Patch<T> {
    fn apply(self, field: &mut Option<T>) {
        match self {
            Patch::Absent => {}
            Patch::Null => *field = None,
            Patch::Value(v) => *field = Some(v),
        }
    }
}

/// The workspace a new record goes to: the body's, else the default.
fn workspace(given: Option<String>, default: Option<&str>) -> Result<String, AdminError> {
    given.or_else(|| default.map(str::to_owned)).ok_or_else(|| {
        AdminError::InvalidField(
            "workspace_id: required (no store.default_workspace_id is configured)".into(),
        )
    })
}

/// `POST /api/v1/byok`: the new credential's own fields, and its
/// [`CredentialSpec`] beside them.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct CreateCredential(Flat<NewCredential, CredentialSpec>);

/// A create body's own fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    provider: String,
    key: SecretString,
    /// Left out: the default workspace; `null`: a global credential.
    #[serde(default)]
    workspace_id: Patch<String>,
}

impl CreateCredential {
    /// The fields of the new credential: a fresh id and `created_at`;
    /// `workspace_id` defaults to `default_workspace`, and `null` makes a
    /// global credential.
    pub(crate) fn into_fields(
        self,
        default_workspace: Option<&str>,
    ) -> Result<CredentialFields, AdminError> {
        let Flat { own, spec } = self.0;
        let workspace_id = match own.workspace_id {
            Patch::Absent => Some(workspace(None, default_workspace)?),
            Patch::Null => None,
            Patch::Value(ws) => Some(ws),
        };
        Ok(CredentialFields {
            id: new_uuid(),
            workspace_id,
            provider: own.provider,
            key: own.key,
            created_at: now_rfc3339(),
            headers: Default::default(),
            spec,
        })
    }
}

/// `PATCH /api/v1/byok/{id}`: an omitted field is unchanged, `null` clears,
/// an array replaces; `key` rotates the secret in place.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct UpdateCredential(Flat<KeyChange, CredentialChanges>);

/// A PATCH body's own field: a new secret.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyChange {
    #[serde(default)]
    key: Option<SecretString>,
}

impl UpdateCredential {
    /// Applies the patch to the stored fields (to be validated after).
    /// Refuses a new `base_url` without the key: the write-only secret is
    /// never sent to an endpoint other than the one its owner gave it with.
    pub(crate) fn apply(self, rec: &mut CredentialFields) -> Result<(), String> {
        let Flat { own, spec } = self.0;
        let moves = match &spec.base_url {
            None => false,
            Some(None) => rec.spec.base_url.is_some(),
            Some(Some(url)) => rec.spec.base_url.as_deref() != Some(url.as_str()),
        };
        if moves && own.key.is_none() {
            return Err(
                "key: required with a new base_url (the secret goes only where its owner sent it)"
                    .to_owned(),
            );
        }
        if let Some(key) = own.key {
            rec.key = key;
        }
        rec.spec.apply(spec);
        Ok(())
    }
}

/// `POST /api/v1/keys`, as OpenRouter defines it (with this proxy's
/// `user_id`, `require_zdr` beside): the key's user is `user_id` or
/// `creator_user_id` (OpenRouter's name for it); a key made with neither is
/// its own user, its hash, which no other key shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateApiKey {
    workspace_id: Option<String>,
    user_id: Option<String>,
    creator_user_id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    require_zdr: bool,
    /// RFC 3339; from then on the key answers like an unknown one.
    expires_at: Option<String>,
    limit: Option<f64>,
    limit_reset: Option<String>,
    #[serde(default)]
    include_byok_in_limit: bool,
    external: Option<External>,
}

/// OpenRouter's `external` on create: the platform's own user of the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct External {
    user: String,
    api_key: Option<serde::de::IgnoredAny>,
}

impl CreateApiKey {
    /// A fresh key, and the fields of the record of its hash.
    pub(crate) fn into_fields(
        self,
        default_workspace: Option<&str>,
    ) -> Result<(SecretString, ApiKeyFields), AdminError> {
        let workspace_id = workspace(self.workspace_id, default_workspace)?;
        let user = match (self.user_id, self.creator_user_id) {
            (Some(a), Some(b)) if a != b => {
                return Err(AdminError::InvalidField(
                    "user_id and creator_user_id name different users".into(),
                ))
            }
            (a, b) => a.or(b),
        };
        let external_user = match self.external {
            Some(External {
                api_key: Some(_), ..
            }) => {
                return Err(AdminError::InvalidField(
                    "external.api_key: not supported by this proxy".into(),
                ))
            }
            Some(e) => Some(e.user),
            None => None,
        };
        let key = new_gateway_key();
        let hash = KeyHash::of(key.expose_secret().as_bytes()).to_hex();
        let now = now_rfc3339();
        let fields = ApiKeyFields {
            user_id: user.unwrap_or_else(|| hash.clone()),
            hash,
            workspace_id,
            name: self.name,
            disabled: self.disabled,
            created_at: Some(now.clone()),
            require_zdr: self.require_zdr,
            label: Some(key_label(key.expose_secret())),
            updated_at: Some(now),
            expires_at: self.expires_at,
            limit: self.limit,
            limit_reset: self.limit_reset,
            include_byok_in_limit: self.include_byok_in_limit,
            external_user,
        };
        Ok((key, fields))
    }
}

/// `PATCH /api/v1/keys/{hash}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateApiKey {
    #[serde(default)]
    name: Patch<String>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    require_zdr: Option<bool>,
    #[serde(default)]
    expires_at: Patch<String>,
    #[serde(default)]
    limit: Patch<f64>,
    #[serde(default)]
    limit_reset: Patch<String>,
    #[serde(default)]
    include_byok_in_limit: Option<bool>,
}

impl UpdateApiKey {
    /// Applies the patch, and renews `updated_at`.
    pub(crate) fn apply(self, rec: &mut ApiKeyFields) {
        rec.updated_at = Some(now_rfc3339());
        self.name.apply(&mut rec.name);
        self.expires_at.apply(&mut rec.expires_at);
        self.limit.apply(&mut rec.limit);
        self.limit_reset.apply(&mut rec.limit_reset);
        if let Some(v) = self.require_zdr {
            rec.require_zdr = v;
        }
        if let Some(v) = self.disabled {
            rec.disabled = v;
        }
        if let Some(v) = self.include_byok_in_limit {
            rec.include_byok_in_limit = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};
    use crate::domain::{ApiKey, Credential, Providers};
    use crate::store;
    use crate::store::crypto::Keyring;

    /// One set of rules, three sources: each bad entry, written as a config
    /// table, as an API body and as a database row, gets the same field-path
    /// error from each (the config's with its `credentials[0].` in front).
    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    #[test]
    fn every_source_gets_the_same_field_error() {
        let hash = "a".repeat(64);
        let many: Vec<String> = (0..101).map(|i| format!("\"m{i}\"")).collect();
        let many = format!("[{}]", many.join(", "));
        // (field, TOML/JSON value, expected error)
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "allowed_api_key_hashes",
                "[]".into(),
                "allowed_api_key_hashes: [] would admit no key",
            ),
            (
                "allowed_api_key_hashes",
                format!("[\"{}\"]", hash.to_uppercase()),
                "allowed_api_key_hashes[0]: not 64 lowercase hex chars",
            ),
            (
                "allowed_models",
                many,
                "allowed_models: more than 100 entries",
            ),
            (
                "allowed_user_ids",
                "[\"u\", \"\"]".into(),
                "allowed_user_ids[1]: must not be empty",
            ),
            (
                "key",
                "\"sk-canary SECRET-123456\"".into(),
                "key: must be non-empty visible ASCII",
            ),
            (
                "base_url",
                "\"ftp://x\"".into(),
                "base_url: must start with",
            ),
            ("provider", "\"nope\"".into(), "provider: unknown provider"),
            (
                "provider",
                "\"azure\"".into(),
                "base_url: required: provider azure",
            ),
            (
                "name",
                format!("\"{}\"", "n".repeat(256)),
                "name: longer than 255 characters",
            ),
            // With is_fallback = true (below).
            (
                "is_byok_only",
                "true".into(),
                "is_byok_only: cannot be set on a fallback credential",
            ),
            (
                "workspace_id",
                "\"\"".into(),
                "workspace_id: must not be empty",
            ),
        ];
        let keyring = Keyring::from_hex(&"1".repeat(64), None).unwrap();
        for (field, value, want) in cases {
            let mut doc: std::collections::BTreeMap<&str, String> = [
                ("id", "\"c1\"".to_owned()),
                ("workspace_id", "\"ws\"".to_owned()),
                ("provider", "\"openai\"".to_owned()),
                ("key", "\"sk-canary-SECRET-123456\"".to_owned()),
            ]
            .into_iter()
            .collect();
            doc.insert(field, value);
            if field == "is_byok_only" {
                doc.insert("is_fallback", "true".into());
            }
            // The config file.
            let toml: String = doc.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            let from_config = match Config::parse(&format!("[[credentials]]\n{toml}")) {
                Err(ConfigError::Invalid(lines)) => lines.join("\n"),
                other => panic!("{field}: config accepted: {:?}", other.map(|_| ())),
            };
            let from_config = from_config
                .strip_prefix("credentials[0].")
                .unwrap_or_else(|| panic!("{from_config}"));
            // The API body.
            doc.remove("id");
            let json: Vec<String> = doc.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            let body: CreateCredential =
                serde_json::from_str(&format!("{{{}}}", json.join(", "))).unwrap();
            let fields = body.into_fields(None).unwrap();
            let from_api = Credential::validate(fields.clone(), &Providers::builtins())
                .map_err(|e| AdminError::fields(&e).to_string())
                .unwrap_err();
            // The database row, as a backend writes and reads it.
            let row = store::credential_row(&fields, &keyring);
            let (read, _) = store::open_credential_row(row, &keyring).unwrap();
            let from_row = match store::credential(read, &Providers::builtins()) {
                Err(store::StoreError::BadRow { why, .. }) => why,
                other => panic!("{field}: row accepted: {:?}", other.map(|_| ())),
            };
            for (source, got) in [
                ("config", from_config),
                ("api", &from_api),
                ("row", &from_row),
            ] {
                assert!(
                    got.starts_with(want),
                    "{source}: want {want:?}, got {got:?}"
                );
                assert!(!got.contains("canary"), "{source}: {got}");
            }
            assert_eq!(from_config, from_api, "{field}");
            assert_eq!(from_api, from_row, "{field}");
        }
    }

    /// The same for gateway keys: the config file and a database row.
    #[test]
    fn gateway_keys_get_the_same_field_error_from_every_source() {
        let good = "b".repeat(64);
        let cases = [
            (
                good.to_uppercase(),
                "ws",
                "u",
                "hash: not 64 lowercase hex chars",
            ),
            (good.clone(), "", "u", "workspace_id: must not be empty"),
            (good.clone(), "ws", "", "user_id: must not be empty"),
        ];
        for (hash, ws, user, want) in cases {
            let toml = format!(
                "[[api_keys]]\nhash = \"{hash}\"\nworkspace_id = \"{ws}\"\nuser_id = \"{user}\"\n"
            );
            let from_config = match Config::parse(&toml) {
                Err(ConfigError::Invalid(lines)) => lines.join("\n"),
                other => panic!("config accepted: {:?}", other.map(|_| ())),
            };
            let row = ApiKeyFields {
                hash,
                workspace_id: ws.into(),
                user_id: user.into(),
                name: None,
                disabled: false,
                created_at: Some("2025-01-01T00:00:00Z".into()),
                ..ApiKeyFields::default()
            };
            let from_row = match store::api_key(row.clone()) {
                Err(store::StoreError::BadRow { why, .. }) => why,
                other => panic!("row accepted: {other:?}"),
            };
            let direct = ApiKey::validate(row).unwrap_err().to_string();
            assert_eq!(from_config, format!("api_keys[0].{want}"));
            assert_eq!(from_row, want);
            assert_eq!(direct, want);
        }
    }

    /// Credential headers are a config-file setting: the API refuses them
    /// (the database stores keep none) rather than drop them silently.
    #[test]
    fn the_api_refuses_headers() {
        let body = r#"{"provider":"openai","key":"sk-test-0123456789","headers":{"x-org":"o"}}"#;
        let err = serde_json::from_str::<CreateCredential>(body).unwrap_err();
        assert!(err.to_string().contains("unknown field `headers`"), "{err}");
        let err = serde_json::from_str::<UpdateCredential>(r#"{"headers":{}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `headers`"), "{err}");
    }

    #[test]
    fn a_new_base_url_needs_the_key_again() {
        let create: CreateCredential = serde_json::from_str(
            r#"{"provider":"azure","key":"az-0123456789ab","workspace_id":"ws","base_url":"https://a.example"}"#,
        )
        .unwrap();
        let rec = create.into_fields(None).unwrap();
        for (patch, ok) in [
            (r#"{"base_url":"https://evil.example"}"#, false),
            (r#"{"base_url":null}"#, false),
            (r#"{"base_url":"https://a.example"}"#, true),
            (
                r#"{"base_url":"https://b.example","key":"az-new-0123456789"}"#,
                true,
            ),
            (r#"{"name":"n"}"#, true),
        ] {
            let p: UpdateCredential = serde_json::from_str(patch).unwrap();
            let mut r = rec.clone();
            assert_eq!(p.apply(&mut r).is_ok(), ok, "{patch}");
        }
    }

    #[test]
    fn patch_distinguishes_absent_null_and_value() {
        let p: UpdateCredential =
            serde_json::from_str(r#"{"name":null,"allowed_models":["a"],"sort_order":3}"#).unwrap();
        let create: CreateCredential = serde_json::from_str(
            r#"{"provider":"openai","key":"sk-test-0123456789","workspace_id":"ws"}"#,
        )
        .unwrap();
        let mut r = create.into_fields(None).unwrap();
        r.spec.name = Some("old".into());
        r.spec.allowed_user_ids = Some(vec!["u".into()]);
        p.apply(&mut r).unwrap();
        assert_eq!(r.spec.name, None);
        assert_eq!(r.spec.allowed_models, Some(vec!["a".to_owned()]));
        assert_eq!(
            r.spec.allowed_user_ids,
            Some(vec!["u".to_owned()]),
            "absent is unchanged"
        );
        assert_eq!(r.spec.sort_order, 3);
    }
}
