//! [`ApiKey`]: a gateway API key as the proxy knows it (its hash, never the
//! key), made only by [`ApiKey::validate`].

use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{FieldErrors, KeyHash};

/// A gateway key's fields as a source read them, before any rule is checked.
#[derive(Debug, Clone)]
pub struct ApiKeyFields {
    /// SHA-256 of the raw key, 64 lowercase hex.
    pub hash: String,
    /// The key's workspace.
    pub workspace_id: String,
    /// The user the key acts for.
    pub user_id: String,
    /// A human name.
    pub name: Option<String>,
    /// Refused like an unknown key when set.
    pub disabled: bool,
    /// RFC 3339, when known.
    pub created_at: Option<String>,
    /// Only zero-data-retention credentials may serve it.
    pub require_zdr: bool,
}

/// A gateway API key that obeys every rule (the raw key is never held).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiKey {
    /// SHA-256 of the raw key.
    pub hash: KeyHash,
    /// The key's workspace.
    pub workspace_id: Arc<str>,
    /// The key's user.
    pub user_id: Arc<str>,
    /// A human name.
    pub name: Option<String>,
    /// A disabled key is refused exactly like an unknown one.
    pub disabled: bool,
    /// RFC 3339, when known.
    pub created_at: Option<String>,
    /// Only credentials declared zero-data-retention (or of a ZDR
    /// provider) may serve it (SPEC §5).
    pub require_zdr: bool,
}

impl ApiKey {
    /// Checks every rule and builds the key: `hash` 64 lowercase hex,
    /// `workspace_id` and `user_id` non-empty, `created_at` RFC 3339.
    pub fn validate(f: ApiKeyFields) -> Result<Self, FieldErrors> {
        let mut errs = FieldErrors::default();
        let hash = KeyHash::from_hex(&f.hash);
        if hash.is_none() {
            errs.at("hash", "not 64 lowercase hex chars");
        }
        if f.workspace_id.is_empty() {
            errs.at("workspace_id", "must not be empty");
        }
        if f.user_id.is_empty() {
            errs.at("user_id", "must not be empty");
        }
        if let Some(at) = &f.created_at {
            if OffsetDateTime::parse(at, &Rfc3339).is_err() {
                errs.at(
                    "created_at",
                    "not an RFC 3339 timestamp like 2025-08-24T10:30:00Z",
                );
            }
        }
        match hash {
            Some(hash) if errs.is_empty() => Ok(ApiKey {
                hash,
                workspace_id: f.workspace_id.into(),
                user_id: f.user_id.into(),
                name: f.name,
                disabled: f.disabled,
                created_at: f.created_at,
                require_zdr: f.require_zdr,
            }),
            _ => Err(errs),
        }
    }

    /// The fields again, to change some and validate anew, or to store them.
    pub fn to_fields(&self) -> ApiKeyFields {
        ApiKeyFields {
            hash: self.hash.to_hex(),
            workspace_id: self.workspace_id.to_string(),
            user_id: self.user_id.to_string(),
            name: self.name.clone(),
            disabled: self.disabled,
            created_at: self.created_at.clone(),
            require_zdr: self.require_zdr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_table() {
        let good = || ApiKeyFields {
            hash: KeyHash::of(b"k").to_hex(),
            workspace_id: "ws".into(),
            user_id: "u".into(),
            name: None,
            disabled: false,
            created_at: None,
            require_zdr: false,
        };
        type Edit = fn(&mut ApiKeyFields);
        let cases: &[(&str, Edit)] = &[
            ("hash: not 64 lowercase hex", |f| {
                f.hash = f.hash.to_uppercase()
            }),
            ("hash: not 64 lowercase hex", |f| f.hash.push('0')),
            ("workspace_id: must not be empty", |f| {
                f.workspace_id.clear()
            }),
            ("user_id: must not be empty", |f| f.user_id.clear()),
            ("created_at: not an RFC 3339", |f| {
                f.created_at = Some("x".into())
            }),
        ];
        for (want, edit) in cases {
            let mut f = good();
            edit(&mut f);
            let err = ApiKey::validate(f).expect_err(want).to_string();
            assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        }
        let k = ApiKey::validate(good()).unwrap();
        assert_eq!(ApiKey::validate(k.to_fields()).unwrap(), k);
    }
}
