//! The records the proxy works with, and the one set of rules they obey.
//!
//! A [`Credential`] and an [`ApiKey`] are made in one place only:
//! [`Credential::validate`] and [`ApiKey::validate`], from the plain fields a
//! source read ([`CredentialFields`], [`ApiKeyFields`]). The config file, a
//! database row and an API body each turn into those fields — a credential's
//! plain ones written once, in [`CredentialSpec`] — so every source
//! obeys the same rules and reports the same [`FieldErrors`]
//! (`allowed_api_key_hashes[0]: not 64 lowercase hex chars`), each source
//! putting its own prefix in front (`credentials[2].`). No message repeats a
//! value: a value could be a secret.

mod api_key;
mod catalog;
mod cloud_key;
mod credential;
mod flat;
pub(crate) mod headers;
mod key_hash;
mod provider;
mod shared;
mod spec;

use std::fmt;

pub use api_key::{key_label, ApiKey, ApiKeyFields, LimitReset};
pub(crate) use catalog::valid_model_slug;
pub use catalog::{Catalog, CatalogModel, Endpoint};
pub use cloud_key::{AwsKey, AzureEntry, AzureResourceType, CloudKey, SecretBytes, ServiceAccount};
pub(crate) use credential::header_list;
pub use credential::{label_for, Credential, CredentialFields, MAX_LIST, MAX_NAME};
pub(crate) use flat::Flat;
pub use key_hash::KeyHash;
pub(crate) use provider::valid_slug;
pub use provider::{AuthScheme, Dialect, Provider, Providers, Upstream};
pub use shared::SharedTier;
pub use spec::CredentialSpec;
#[cfg(feature = "server")]
pub(crate) use spec::{CredentialChanges, Scalar, ScalarKind};

/// `value`'s first `head` characters, `...`, its last 4; only `...` when it
/// is shorter than `min` characters (a short value is not half given away).
fn mask(value: &str, head: usize, min: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < min {
        return "...".to_owned();
    }
    let first: String = chars[..head].iter().collect();
    let last: String = chars[chars.len() - 4..].iter().collect();
    format!("{first}...{last}")
}

/// One broken rule: where (`allowed_models[1]`) and what (`must not be empty`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path inside the record, e.g. `allowed_models[1]`; empty
    /// for the record as a whole.
    pub path: String,
    /// What is wrong, never quoting the value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every rule a record broke, in field order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Records one broken rule.
    pub(crate) fn at(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(FieldError {
            path: path.to_string(),
            message: message.to_string(),
        });
    }

    /// Whether no rule was broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The broken rules.
    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }

    /// The same errors with `prefix` in front of each path, as the record's
    /// source names it (`credentials[2]`): `credentials[2].key`.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        for e in &mut self.0 {
            e.path = match (e.path.as_str(), e.path.starts_with('[')) {
                ("", _) => prefix.to_owned(),
                (_, true) => format!("{prefix}{}", e.path),
                (_, false) => format!("{prefix}.{}", e.path),
            };
        }
        self
    }

    /// Renames the path `from` (and the paths below it) to `to`.
    pub(crate) fn renamed(mut self, from: &str, to: &str) -> Self {
        for e in &mut self.0 {
            if let Some(rest) = e.path.strip_prefix(from) {
                if rest.is_empty() || rest.starts_with(['.', '[']) {
                    e.path = format!("{to}{rest}");
                }
            }
        }
        self
    }

    /// `Ok(value)` when nothing was recorded.
    pub(crate) fn or_ok<T>(self, value: impl FnOnce() -> T) -> Result<T, FieldErrors> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for FieldErrors {
    /// One error a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}
