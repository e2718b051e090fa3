//! [`Candidate`]: a credential compiled for the hot path — allowlists as hash
//! sets, upstream resolved, auth and id headers pre-built — so that nothing
//! about a credential is computed per request.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::health::{Health, HealthBook};
use super::{order, Allowlists};
use crate::domain::{Credential, Providers, Upstream};

/// A credential compiled for the hot path.
pub(crate) struct Candidate {
    pub(crate) record: Arc<Credential>,
    pub(crate) allowlists: Allowlists,
    pub(crate) upstream: Upstream,
    pub(crate) auth_name: HeaderName,
    pub(crate) auth_value: HeaderValue,
    pub(crate) id_value: HeaderValue,
    /// The id again, shared as a metrics label.
    pub(crate) id_label: Arc<str>,
    /// Declared zero-data-retention (`declared_zdr`, else the provider's).
    pub(crate) zdr: bool,
    /// Its health, shared with every snapshot that holds it.
    pub(crate) health: Arc<Health>,
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("id", &self.record.id)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// Why a valid credential cannot be compiled against the providers in force
/// (one was removed or changed by a reload since the credential was checked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// A credential names a provider that does not exist.
    #[error("credential {id}: unknown provider {provider}")]
    UnknownProvider {
        /// Credential id.
        id: String,
        /// The provider slug.
        provider: String,
    },
    /// Neither the credential nor its provider has a base URL.
    #[error("credential {id}: provider {provider} has no base_url, so the credential needs one")]
    NoUpstream {
        /// Credential id.
        id: String,
        /// The provider slug.
        provider: String,
    },
    /// The secret or the id cannot be sent in a header.
    #[error("credential {id}: key or id contains characters not allowed in an HTTP header")]
    BadHeader {
        /// Credential id.
        id: String,
    },
}

/// Compiles one credential for the hot path; `None` for a disabled one (it is
/// still checked, so a record that cannot serve is refused whether or not it
/// is enabled).
pub(crate) fn compile(
    cred: &Arc<Credential>,
    providers: &Providers,
) -> Result<Option<Candidate>, CompileError> {
    let provider = providers
        .get(&cred.provider)
        .ok_or_else(|| CompileError::UnknownProvider {
            id: cred.id.clone(),
            provider: cred.provider.clone(),
        })?;
    let aws = cred.aws_key();
    // AWS keys go to their region's Bedrock endpoint, unless the credential
    // or the config's provider names another (private endpoints, tests).
    let regional = aws
        .filter(|_| cred.base_url.is_none())
        .filter(|_| provider.upstream.as_ref() == builtin_bedrock().as_ref())
        .and_then(|k| {
            Upstream::parse(&format!(
                "https://bedrock-runtime.{}.amazonaws.com",
                k.region
            ))
            .ok()
        });
    let upstream = regional
        .or_else(|| cred.base_url.clone())
        .or_else(|| provider.upstream.clone())
        .ok_or_else(|| CompileError::NoUpstream {
            id: cred.id.clone(),
            provider: cred.provider.clone(),
        })?;
    let bad_header = || CompileError::BadHeader {
        id: cred.id.clone(),
    };
    let auth_value = match aws {
        Some(_) => HeaderValue::from_static(""),
        None => provider
            .auth
            .header_value(&cred.key)
            .ok_or_else(bad_header)?,
    };
    let id_value = HeaderValue::from_str(&cred.id).map_err(|_| bad_header())?;
    if cred.disabled {
        return Ok(None);
    }
    Ok(Some(Candidate {
        record: Arc::clone(cred),
        allowlists: Allowlists::compile(cred)
            .reading_model_lists(provider.reads_model_lists(&upstream)),
        upstream,
        auth_name: provider.auth.header_name(),
        auth_value,
        id_value,
        id_label: Arc::from(cred.id.as_str()),
        zdr: cred.declared_zdr.unwrap_or(provider.zdr),
        health: Arc::default(),
    }))
}

/// The built-in Bedrock upstream (us-east-1), which an AWS key's region
/// replaces.
fn builtin_bedrock() -> Option<Upstream> {
    Upstream::parse("https://bedrock-runtime.us-east-1.amazonaws.com").ok()
}

/// Compiles and orders one group's credentials.
pub(crate) fn group(
    creds: &[Arc<Credential>],
    providers: &Providers,
    health: &HealthBook,
) -> Result<Arc<[Candidate]>, CompileError> {
    let mut list = Vec::with_capacity(creds.len());
    for c in creds {
        if let Some(mut cand) = compile(c, providers)? {
            cand.health = health.get(&c.id);
            list.push(cand);
        }
    }
    list.sort_by(|a, b| order(&a.record, &b.record));
    Ok(Arc::from(list))
}

#[cfg(test)]
impl Candidate {
    pub(crate) fn for_tests(cred: Credential) -> Self {
        let allowlists = Allowlists::compile(&cred);
        Candidate {
            allowlists,
            upstream: Upstream::parse("http://127.0.0.1:1").unwrap_or_else(|_| unreachable!()),
            auth_name: crate::domain::AuthScheme::Bearer.header_name(),
            auth_value: HeaderValue::from_static("Bearer x"),
            id_value: HeaderValue::from_str(&cred.id).unwrap_or_else(|_| unreachable!()),
            id_label: Arc::from(cred.id.as_str()),
            zdr: cred.declared_zdr.unwrap_or(false),
            health: Arc::default(),
            record: Arc::new(cred),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::KeyHash;
    use crate::policy::Ask;

    /// The other models a body names bind every candidate whose upstream is
    /// OpenRouter's, whatever its provider is called; no other.
    #[test]
    fn model_lists_bind_every_openrouter_upstream() {
        let also = vec!["anthropic/claude-opus-4".to_owned()];
        let key = KeyHash::of(b"k");
        let ask = Ask {
            key_hash: Some(&key),
            user_id: "u",
            model: Some("gpt-4o-mini"),
            also: &also,
            lists_unreadable: false,
            require_zdr: false,
        };
        // (provider, base_url, admitted)
        let cases = [
            ("openai", None, true),
            ("openai", Some("https://openrouter.ai/api"), false),
            ("openai", Some("https://OpenRouter.AI/api"), false),
            ("openai", Some("https://eu.openrouter.ai/api"), false),
            ("openai", Some("https://notopenrouter.ai/api"), true),
            ("openrouter", None, false),
        ];
        for (provider, base_url, admitted) in cases {
            let mut cred = Credential::for_tests("c", "ws", provider);
            cred.allowed_models = Some(vec!["gpt-4o-mini".into()]);
            cred.base_url = base_url.map(|u| Upstream::parse(u).unwrap());
            let cand = compile(&Arc::new(cred), &Providers::builtins())
                .unwrap()
                .unwrap();
            assert_eq!(
                cand.allowlists.check(&ask).is_ok(),
                admitted,
                "{provider} {base_url:?}"
            );
            // Lists there but unreadable: only a list-reading upstream refuses.
            let unreadable = Ask {
                also: &[],
                lists_unreadable: true,
                ..ask
            };
            assert_eq!(
                cand.allowlists.check(&unreadable).is_ok(),
                admitted,
                "{provider} {base_url:?} unreadable"
            );
        }
    }
}
