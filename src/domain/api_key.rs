//! [`ApiKey`]: a gateway API key as the proxy knows it (its hash, never the
//! key), made only by [`ApiKey::validate`].

use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{FieldErrors, KeyHash};

/// A gateway key's fields as a source read them, before any rule is checked.
#[derive(Debug, Clone, Default)]
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
    /// The masked raw key (`byok-ab...c123`), when the raw key was ever
    /// seen (a key made by the API); never more of it.
    pub label: Option<String>,
    /// RFC 3339: when the record last changed.
    pub updated_at: Option<String>,
    /// RFC 3339: from then on the key answers like an unknown one.
    pub expires_at: Option<String>,
    /// Spend limit in USD for each period (SPEC §8); `None`: no limit.
    pub limit: Option<f64>,
    /// `daily`, `weekly`, `monthly`; `None`: the limit is for the key's life.
    pub limit_reset: Option<String>,
    /// Whether spend on BYOK credentials counts toward the limit (shared-tier
    /// spend always does).
    pub include_byok_in_limit: bool,
    /// OpenRouter's `external_user`: the platform's own user of the key.
    pub external_user: Option<String>,
}

/// When a gateway key's limit starts anew (SPEC §8): UTC midnight, Monday,
/// the 1st of the month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitReset {
    /// Every UTC day.
    Daily,
    /// Every Monday, 00:00 UTC.
    Weekly,
    /// Every 1st of the month, 00:00 UTC.
    Monthly,
}

impl LimitReset {
    /// Parses OpenRouter's `limit_reset` word.
    pub fn parse(s: &str) -> Option<LimitReset> {
        match s {
            "daily" => Some(LimitReset::Daily),
            "weekly" => Some(LimitReset::Weekly),
            "monthly" => Some(LimitReset::Monthly),
            _ => None,
        }
    }

    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitReset::Daily => "daily",
            LimitReset::Weekly => "weekly",
            LimitReset::Monthly => "monthly",
        }
    }
}

/// A gateway API key that obeys every rule (the raw key is never held).
#[derive(Debug, Clone, PartialEq)]
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
    /// The masked raw key (`byok-ab...c123`); `...` when the raw key was
    /// never seen (a key of the config file, known by its hash only).
    pub label: String,
    /// RFC 3339: when the record last changed.
    pub updated_at: Option<String>,
    /// RFC 3339: from then on the key answers like an unknown one.
    pub expires_at: Option<String>,
    /// `expires_at` as seconds since the Unix epoch.
    pub expires_at_unix: Option<i64>,
    /// Spend limit in USD per period; `None`: no limit.
    pub limit: Option<f64>,
    /// The limit's period; `None`: the key's whole life.
    pub limit_reset: Option<LimitReset>,
    /// Whether BYOK spend counts toward the limit.
    pub include_byok_in_limit: bool,
    /// The platform's own user of the key (OpenRouter's `external_user`).
    pub external_user: Option<String>,
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
        for (field, at) in [("created_at", &f.created_at), ("updated_at", &f.updated_at)] {
            if at
                .as_ref()
                .is_some_and(|at| OffsetDateTime::parse(at, &Rfc3339).is_err())
            {
                errs.at(field, "not an RFC 3339 timestamp like 2025-08-24T10:30:00Z");
            }
        }
        let expires_at_unix = f.expires_at.as_ref().and_then(|at| {
            OffsetDateTime::parse(at, &Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|_| {
                    errs.at(
                        "expires_at",
                        "not an RFC 3339 timestamp like 2027-01-01T00:00:00Z",
                    )
                })
                .ok()
        });
        if f.label.as_ref().is_some_and(|l| l.chars().count() > 32) {
            errs.at("label", "longer than 32 characters");
        }
        if f.limit.is_some_and(|l| !l.is_finite() || l < 0.0) {
            errs.at("limit", "must be a non-negative number of USD, or null");
        }
        let limit_reset = f.limit_reset.as_deref().and_then(|r| {
            let reset = LimitReset::parse(r);
            if reset.is_none() {
                errs.at(
                    "limit_reset",
                    "must be \"daily\", \"weekly\", \"monthly\" or null",
                );
            }
            reset
        });
        match hash {
            Some(hash) if errs.is_empty() => Ok(ApiKey {
                hash,
                workspace_id: f.workspace_id.into(),
                user_id: f.user_id.into(),
                name: f.name,
                disabled: f.disabled,
                created_at: f.created_at,
                require_zdr: f.require_zdr,
                label: f.label.unwrap_or_else(|| "...".to_owned()),
                updated_at: f.updated_at,
                expires_at: f.expires_at,
                expires_at_unix,
                limit: f.limit,
                limit_reset,
                include_byok_in_limit: f.include_byok_in_limit,
                external_user: f.external_user,
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
            label: (self.label != "...").then(|| self.label.clone()),
            updated_at: self.updated_at.clone(),
            expires_at: self.expires_at.clone(),
            limit: self.limit,
            limit_reset: self.limit_reset.map(|r| r.as_str().to_owned()),
            include_byok_in_limit: self.include_byok_in_limit,
            external_user: self.external_user.clone(),
        }
    }

    /// Whether the key has expired at `now` (seconds since the Unix epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.expires_at_unix.is_some_and(|at| now >= at)
    }
}

/// The label of a raw gateway key: its first 7 characters, `...`, its last
/// 4 (`byok-ab...c123`); a key shorter than 16 characters shows only `...`.
pub fn key_label(raw: &str) -> String {
    super::mask(raw, 7, 16)
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
            ..ApiKeyFields::default()
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
            ("expires_at: not an RFC 3339", |f| {
                f.expires_at = Some("tomorrow".into())
            }),
            ("updated_at: not an RFC 3339", |f| {
                f.updated_at = Some("now".into())
            }),
            ("limit: must be a non-negative", |f| f.limit = Some(-1.0)),
            ("limit: must be a non-negative", |f| {
                f.limit = Some(f64::NAN)
            }),
            ("limit_reset: must be", |f| {
                f.limit_reset = Some("yearly".into())
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
        assert_eq!(k.label, "...");
        let mut f = good();
        f.expires_at = Some("2027-01-01T00:00:00+01:00".into());
        f.label = Some(key_label("byok-ab12cd34ef56ab78cd90"));
        let k = ApiKey::validate(f).unwrap();
        assert_eq!(k.label, "byok-ab...cd90");
        assert_eq!(ApiKey::validate(k.to_fields()).unwrap(), k);
        let at = 1_798_758_000; // 2026-12-31T23:00:00Z
        assert!(!k.expired_at(at - 1));
        assert!(k.expired_at(at));
        assert_eq!(key_label("byok-short"), "...");
    }
}
