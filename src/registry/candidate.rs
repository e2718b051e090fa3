//! [`Candidate`]: a credential compiled for the hot path — allowlists as hash
//! sets, upstream resolved, auth and id headers pre-built — so that nothing
//! about a credential is computed per request.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::health::HealthBook;
#[cfg(feature = "vertex")]
use crate::auth::token::TokenCache;
use crate::domain::{AzureEntry, CloudKey, Credential, Provider, Providers, Upstream};
use crate::policy::health::Health;
use crate::policy::{order, Allowlists, Gated, ModelMatcher};

/// A credential compiled for the hot path.
pub(crate) struct Candidate {
    pub(crate) record: Arc<Credential>,
    pub(crate) allowlists: Allowlists,
    pub(crate) upstream: Upstream,
    pub(crate) auth_name: HeaderName,
    /// The secret's header value, for a plain key ([`Cloud::None`]).
    pub(crate) auth_value: HeaderValue,
    /// How a structured cloud key authenticates instead (SPEC §9).
    pub(crate) cloud: Cloud,
    pub(crate) id_value: HeaderValue,
    /// The id again, shared as a metrics label.
    pub(crate) id_label: Arc<str>,
    /// Declared zero-data-retention (`declared_zdr`, else the provider's).
    pub(crate) zdr: bool,
    /// Its health, shared with every snapshot that holds it.
    pub(crate) health: Arc<Health>,
}

/// How an attempt with a structured cloud key authenticates (SPEC §9).
pub(crate) enum Cloud {
    /// A plain key: the pre-built header.
    None,
    /// AWS access keys: each attempt signed with SigV4.
    #[cfg(feature = "aws")]
    SigV4,
    /// A service account: a minted token, and the account's project and
    /// location in the path.
    #[cfg(feature = "vertex")]
    Vertex(Arc<TokenCache>),
    /// Azure entries, deployments first in key order, then resources: the
    /// first deployment whose model matches serves, else the first resource.
    Azure(Box<[AzureRoute]>),
}

/// One Azure entry, compiled.
pub(crate) struct AzureRoute {
    /// The model a deployment entry serves; `None` for a resource (every model).
    pub(crate) model: Option<ModelMatcher>,
    pub(crate) upstream: Upstream,
    pub(crate) auth_value: HeaderValue,
    /// The deployment put in the client's path, for a deployment entry.
    pub(crate) deployment: Option<Box<str>>,
}

impl Gated for Candidate {
    fn credential(&self) -> &Credential {
        &self.record
    }

    fn allowlists(&self) -> &Allowlists {
        &self.allowlists
    }

    fn zdr(&self) -> bool {
        self.zdr
    }

    fn health(&self) -> &Health {
        &self.health
    }
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
    /// The key is a cloud's structured key that this build cannot use:
    /// it was compiled without the cargo feature named.
    #[error("credential {id}: its key needs byok-proxy built with the `{feature}` feature")]
    NotBuilt {
        /// Credential id.
        id: String,
        /// `aws` or `vertex`.
        feature: &'static str,
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
    let bad_header = || CompileError::BadHeader {
        id: cred.id.clone(),
    };
    #[cfg(not(all(feature = "aws", feature = "vertex")))]
    let not_built = |feature| CompileError::NotBuilt {
        id: cred.id.clone(),
        feature,
    };
    let no_upstream = || CompileError::NoUpstream {
        id: cred.id.clone(),
        provider: cred.provider.clone(),
    };
    // A cloud key goes to its region's endpoint, unless the credential or
    // the config's provider names another (private endpoints, tests).
    #[cfg(any(feature = "aws", feature = "vertex"))]
    let regional = |url: String| {
        Upstream::parse(&url)
            .ok()
            .filter(|_| cred.base_url.is_none() && provider.has_builtin_upstream())
    };
    let own = || cred.base_url.clone().or_else(|| provider.upstream.clone());
    let mut served = None;
    let (upstream, cloud) = match cred.cloud.as_deref() {
        None => (own().ok_or_else(no_upstream)?, Cloud::None),
        #[cfg(feature = "aws")]
        Some(CloudKey::Aws(k)) => {
            let host = format!("https://bedrock-runtime.{}.amazonaws.com", k.region);
            (
                regional(host).or_else(own).ok_or_else(no_upstream)?,
                Cloud::SigV4,
            )
        }
        #[cfg(not(feature = "aws"))]
        Some(CloudKey::Aws(_)) => return Err(not_built("aws")),
        #[cfg(not(feature = "vertex"))]
        Some(CloudKey::Vertex(_)) => return Err(not_built("vertex")),
        #[cfg(feature = "vertex")]
        Some(CloudKey::Vertex(sa)) => {
            let host = match sa.region.as_str() {
                "global" => "https://aiplatform.googleapis.com".to_owned(),
                region => format!("https://{region}-aiplatform.googleapis.com"),
            };
            // A token serves whatever path it is sent to: a service account
            // serves only requests that name a model (`allowed_models`
            // narrows them further).
            served = Some(ModelMatcher::compile(
                &cred.provider,
                &[format!("{}/*", cred.provider)],
            ));
            (
                regional(host).or_else(own).ok_or_else(no_upstream)?,
                Cloud::Vertex(Arc::new(TokenCache::new(sa))),
            )
        }
        Some(CloudKey::Azure(entries)) => {
            let routes = azure_routes(cred, provider, entries).ok_or_else(bad_header)?;
            if routes.iter().all(|r| r.model.is_some()) {
                let slugs: Vec<String> = entries
                    .iter()
                    .filter_map(|e| match e {
                        AzureEntry::Deployment { model_slug, .. } => Some(model_slug.clone()),
                        AzureEntry::Resource { .. } => None,
                    })
                    .collect();
                served = Some(ModelMatcher::compile(&cred.provider, &slugs));
            }
            let first = routes
                .iter()
                .find(|r| r.model.is_none())
                .or(routes.first())
                .ok_or_else(no_upstream)?;
            (first.upstream.clone(), Cloud::Azure(routes.into()))
        }
    };
    let auth_value = match cloud {
        Cloud::None => provider
            .auth
            .header_value(&cred.key)
            .ok_or_else(bad_header)?,
        _ => HeaderValue::from_static(""),
    };
    let id_value = HeaderValue::from_str(&cred.id).map_err(|_| bad_header())?;
    if cred.disabled {
        return Ok(None);
    }
    Ok(Some(Candidate {
        record: Arc::clone(cred),
        allowlists: Allowlists::compile(cred)
            .reading_model_lists(provider.reads_model_lists(&upstream))
            .serving_only(served),
        upstream,
        auth_name: provider.auth.header_name(),
        auth_value,
        cloud,
        id_value,
        id_label: Arc::from(cred.id.as_str()),
        zdr: cred.declared_zdr.unwrap_or(provider.zdr),
        health: Arc::default(),
    }))
}

/// An Azure key array's entries as routes: deployments first, in key order,
/// then resources, whose host is the credential's `base_url` when it has one.
/// `None` when a key cannot be sent in a header.
fn azure_routes(
    cred: &Credential,
    provider: &Provider,
    entries: &[AzureEntry],
) -> Option<Vec<AzureRoute>> {
    let mut routes = Vec::with_capacity(entries.len());
    for entry in entries {
        routes.push(match entry {
            AzureEntry::Deployment {
                model_slug,
                endpoint,
                api_key,
                model_id,
            } => AzureRoute {
                model: Some(ModelMatcher::compile(
                    &cred.provider,
                    std::slice::from_ref(model_slug),
                )),
                upstream: endpoint.clone(),
                auth_value: provider.auth.header_value(api_key)?,
                deployment: Some(model_id.as_str().into()),
            },
            AzureEntry::Resource {
                api_key,
                resource_name,
                resource_type,
            } => AzureRoute {
                model: None,
                upstream: match &cred.base_url {
                    Some(base) => base.clone(),
                    None => Upstream::parse(&format!(
                        "https://{resource_name}.{}",
                        resource_type.domain()
                    ))
                    .ok()?,
                },
                auth_value: provider.auth.header_value(api_key)?,
                deployment: None,
            },
        });
    }
    routes.sort_by_key(|r| r.model.is_none());
    Some(routes)
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
            #[cfg(feature = "vertex")]
            if let Some(account) = c.service_account() {
                cand.cloud = Cloud::Vertex(health.token_cache(&c.id, account));
            }
            list.push(cand);
        }
    }
    list.sort_by(|a, b| order(&a.record, &b.record));
    Ok(Arc::from(list))
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
            slug: None,
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
