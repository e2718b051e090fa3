//! The in-memory registry: gateway keys and credentials, ready for the hot path.
//!
//! A [`Snapshot`] holds everything one request needs: the gateway keys in a
//! `DashMap` keyed by their SHA-256 ([`KeyHash`]), the providers, and the
//! credentials grouped by workspace and provider, **pre-sorted** in candidate
//! order with their allowlists compiled to hash sets and their auth header
//! pre-built. Nothing about a credential is computed per request.
//!
//! The [`Registry`] hands out the current snapshot as an `Arc`; a reload builds a
//! whole new snapshot and swaps it in atomically, so a request in flight finishes
//! on the snapshot it started with.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::key::KeyHash;
use crate::policy::{self, Allowlists};
use crate::providers::{AuthScheme, Upstream, BUILTIN};

/// Who is asking: the workspace and user behind a gateway key.
///
/// The layer resolves it from the key registry, or, when configured with
/// [`ByokLayer::trust_principal_extension`](crate::ByokLayer::trust_principal_extension),
/// takes it from the request's extensions, put there by an earlier auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The workspace whose credentials may be used.
    pub workspace_id: Arc<str>,
    /// The user, checked against `allowed_user_ids`.
    pub user_id: Arc<str>,
    /// The gateway key's hash, checked against `allowed_api_key_hashes`; `None`
    /// admits only credentials without a hash allowlist.
    pub key_hash: Option<KeyHash>,
}

/// A gateway API key, as registered (the raw key is never held).
#[derive(Debug, Clone)]
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
}

/// A BYOK credential: OpenRouter's `BYOKKey`, field for field, plus the secret
/// and the optional per-credential upstream settings.
///
/// `Debug` shows the secret as `[REDACTED]`; the type has no `Serialize`.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Stable public id (UUID).
    pub id: String,
    /// The workspace it belongs to.
    pub workspace_id: String,
    /// Lowercase provider slug.
    pub provider: String,
    /// Human name.
    pub name: Option<String>,
    /// Masked snippet of the secret (see [`label_for`]).
    pub label: String,
    /// RFC 3339 timestamp, as given.
    pub created_at: String,
    /// `created_at` as nanoseconds since the Unix epoch, for ordering.
    pub created_at_nanos: i128,
    /// A disabled credential is never used.
    pub disabled: bool,
    /// Used only after every non-fallback credential was tried.
    pub is_fallback: bool,
    /// Ascending try order within its group.
    pub sort_order: i64,
    /// Hex SHA-256 hashes of the gateway keys that may use it; `None` = any.
    pub allowed_api_key_hashes: Option<Vec<String>>,
    /// Model slugs it may serve; `None` = any.
    pub allowed_models: Option<Vec<String>>,
    /// User ids that may use it; `None` = any.
    pub allowed_user_ids: Option<Vec<String>>,
    /// The provider secret. Write-only.
    pub key: SecretString,
    /// An upstream of its own (Azure resource, Bedrock region), overriding the provider's.
    pub base_url: Option<Upstream>,
    /// Headers set upstream together with the secret (values marked sensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The masked label of a secret: its first 3 characters, `...`, its last 4
/// (`sk-...AbCd`). A secret shorter than 12 characters shows only `...`, so the
/// label never gives away more than 7 characters, nor most of a short secret.
pub fn label_for(secret: &SecretString) -> String {
    let s = secret.expose_secret();
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 12 {
        return "...".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}...{tail}")
}

/// A provider: its default upstream, auth scheme and default headers.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Lowercase slug, the first path segment of proxied requests.
    pub slug: String,
    /// Default upstream; `None` means every credential must bring its own.
    pub upstream: Option<Upstream>,
    /// How the secret is presented.
    pub auth: AuthScheme,
    /// Headers added upstream when the client sent none of that name.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Provider {
    /// The built-in providers.
    pub fn builtins() -> Vec<Provider> {
        BUILTIN
            .iter()
            .map(|b| Provider {
                slug: b.slug.to_owned(),
                upstream: b.base_url.and_then(|u| Upstream::parse(u).ok()),
                auth: b.auth,
                headers: b
                    .headers
                    .iter()
                    .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
                    .collect(),
            })
            .collect()
    }
}

/// Per-request limits that a reload may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Request bodies above this (after decoding) get 413.
    pub max_body_bytes: usize,
    /// Per attempt, until the upstream's response head; then fail over.
    pub first_byte_timeout: Duration,
    /// Longest silence inside a streamed response body.
    pub idle_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_body_bytes: 10 * 1024 * 1024,
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A credential compiled for the hot path.
pub(crate) struct Candidate {
    pub(crate) record: Arc<Credential>,
    pub(crate) allowlists: Allowlists,
    pub(crate) upstream: Upstream,
    pub(crate) auth_name: HeaderName,
    pub(crate) auth_value: HeaderValue,
    pub(crate) id_value: HeaderValue,
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("id", &self.record.id)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// One workspace's credentials, by provider slug, each list in candidate order.
type WorkspaceGroups = HashMap<Box<str>, Arc<[Candidate]>>;

/// Everything a request needs, immutable once built (see the module docs).
pub struct Snapshot {
    generation: u64,
    loaded_at: SystemTime,
    settings: Settings,
    keys: DashMap<KeyHash, Arc<ApiKey>>,
    providers: HashMap<Box<str>, Arc<Provider>>,
    workspaces: DashMap<Box<str>, Arc<WorkspaceGroups>>,
    credentials: Vec<Arc<Credential>>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("api_keys", &self.keys.len())
            .field("credentials", &self.credentials.len())
            .field("providers", &self.providers.len())
            .finish_non_exhaustive()
    }
}

/// Why a snapshot could not be built (the config validation normally catches
/// these first, naming the entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
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
    /// The secret cannot be sent in a header.
    #[error("credential {id}: key contains characters not allowed in an HTTP header")]
    BadSecret {
        /// Credential id.
        id: String,
    },
    /// The id cannot be sent in the `x-byok-credential-id` header.
    #[error("credential id {id:?} is not a valid header value")]
    BadId {
        /// Credential id.
        id: String,
    },
    /// Two credentials share an id.
    #[error("credential id {id} is used twice")]
    DuplicateId {
        /// Credential id.
        id: String,
    },
}

impl Snapshot {
    /// Builds a snapshot: compiles every enabled credential and sorts each group.
    pub fn build(
        settings: Settings,
        providers: Vec<Provider>,
        api_keys: Vec<ApiKey>,
        credentials: Vec<Credential>,
    ) -> Result<Snapshot, SnapshotError> {
        let providers: HashMap<Box<str>, Arc<Provider>> = providers
            .into_iter()
            .map(|p| (Box::from(p.slug.as_str()), Arc::new(p)))
            .collect();
        let keys = DashMap::with_capacity(api_keys.len());
        for k in api_keys {
            keys.insert(k.hash, Arc::new(k));
        }

        let mut credentials: Vec<Arc<Credential>> = credentials.into_iter().map(Arc::new).collect();
        credentials.sort_by(|a, b| {
            (&a.workspace_id, &a.provider)
                .cmp(&(&b.workspace_id, &b.provider))
                .then_with(|| policy::order(a, b))
        });
        let mut seen = std::collections::HashSet::with_capacity(credentials.len());
        let mut grouped: HashMap<Box<str>, HashMap<Box<str>, Vec<Candidate>>> = HashMap::new();
        for cred in &credentials {
            if !seen.insert(cred.id.as_str()) {
                return Err(SnapshotError::DuplicateId {
                    id: cred.id.clone(),
                });
            }
            let provider = providers.get(cred.provider.as_str()).ok_or_else(|| {
                SnapshotError::UnknownProvider {
                    id: cred.id.clone(),
                    provider: cred.provider.clone(),
                }
            })?;
            let upstream = cred
                .base_url
                .clone()
                .or_else(|| provider.upstream.clone())
                .ok_or_else(|| SnapshotError::NoUpstream {
                    id: cred.id.clone(),
                    provider: cred.provider.clone(),
                })?;
            let auth_value =
                provider
                    .auth
                    .header_value(&cred.key)
                    .ok_or_else(|| SnapshotError::BadSecret {
                        id: cred.id.clone(),
                    })?;
            let id_value = HeaderValue::from_str(&cred.id).map_err(|_| SnapshotError::BadId {
                id: cred.id.clone(),
            })?;
            if cred.disabled {
                continue;
            }
            grouped
                .entry(cred.workspace_id.as_str().into())
                .or_default()
                .entry(cred.provider.as_str().into())
                .or_default()
                .push(Candidate {
                    record: Arc::clone(cred),
                    allowlists: Allowlists::compile(cred),
                    upstream,
                    auth_name: provider.auth.header_name(),
                    auth_value,
                    id_value,
                });
        }
        let workspaces = DashMap::with_capacity(grouped.len());
        for (ws, groups) in grouped {
            let groups: WorkspaceGroups = groups
                .into_iter()
                .map(|(provider, list)| (provider, Arc::from(list)))
                .collect();
            workspaces.insert(ws, Arc::new(groups));
        }
        Ok(Snapshot {
            generation: 0,
            loaded_at: SystemTime::now(),
            settings,
            keys,
            providers,
            workspaces,
            credentials,
        })
    }

    /// The principal behind a key hash; `None` for unknown and disabled keys alike.
    pub fn principal(&self, hash: &KeyHash) -> Option<Principal> {
        let key = self.keys.get(hash)?;
        if key.disabled {
            return None;
        }
        Some(Principal {
            workspace_id: Arc::clone(&key.workspace_id),
            user_id: Arc::clone(&key.user_id),
            key_hash: Some(*hash),
        })
    }

    /// A provider by slug.
    pub fn provider(&self, slug: &str) -> Option<&Arc<Provider>> {
        self.providers.get(slug)
    }

    /// The enabled credentials of a workspace for a provider, in candidate order.
    pub(crate) fn candidates(
        &self,
        workspace_id: &str,
        provider: &str,
    ) -> Option<Arc<[Candidate]>> {
        let groups = self.workspaces.get(workspace_id)?;
        groups.get(provider).cloned()
    }

    /// The per-request limits.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Every credential, disabled ones included, ordered by workspace, provider
    /// and candidate order.
    pub fn credentials(&self) -> &[Arc<Credential>] {
        &self.credentials
    }

    /// How many gateway keys are registered.
    pub fn api_key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many providers are known.
    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    /// Counts up by one with every snapshot a [`Registry`] takes in.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the snapshot was built.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }
}

/// The shared handle to the current [`Snapshot`]; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    current: Arc<ArcSwap<Snapshot>>,
    generations: Arc<AtomicU64>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Registry")
            .field(&self.current.load())
            .finish()
    }
}

impl Registry {
    /// A registry starting with `snapshot` (generation 1).
    pub fn new(mut snapshot: Snapshot) -> Self {
        snapshot.generation = 1;
        Registry {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            generations: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The snapshot in force now. Hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in a new snapshot atomically and returns its generation. Requests
    /// that already hold the old one finish on it.
    pub fn replace(&self, mut snapshot: Snapshot) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        snapshot.generation = generation;
        self.current.store(Arc::new(snapshot));
        generation
    }
}

#[cfg(test)]
impl Credential {
    pub(crate) fn for_tests(id: &str, workspace_id: &str, provider: &str) -> Self {
        Credential {
            id: id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            provider: provider.to_owned(),
            name: None,
            label: "...".to_owned(),
            created_at: "2025-01-01T00:00:00Z".to_owned(),
            created_at_nanos: 0,
            disabled: false,
            is_fallback: false,
            sort_order: 0,
            allowed_api_key_hashes: None,
            allowed_models: None,
            allowed_user_ids: None,
            key: SecretString::from("sk-test-secret"),
            base_url: None,
            headers: Vec::new(),
        }
    }
}

#[cfg(test)]
impl Candidate {
    pub(crate) fn for_tests(cred: Credential) -> Self {
        let allowlists = Allowlists::compile(&cred);
        Candidate {
            allowlists,
            upstream: Upstream::parse("http://127.0.0.1:1").unwrap(),
            auth_name: AuthScheme::Bearer.header_name(),
            auth_value: HeaderValue::from_static("Bearer x"),
            id_value: HeaderValue::from_str(&cred.id).unwrap(),
            record: Arc::new(cred),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn snapshot_groups_sorts_and_skips_disabled() {
        let mut a = Credential::for_tests("a", "ws", "openai");
        a.sort_order = 2;
        let mut b = Credential::for_tests("b", "ws", "openai");
        b.sort_order = 1;
        let mut off = Credential::for_tests("off", "ws", "openai");
        off.disabled = true;
        let other = Credential::for_tests("o", "ws2", "openai");
        let snap = Snapshot::build(
            Settings::default(),
            Provider::builtins(),
            vec![],
            vec![a, b, off, other],
        )
        .unwrap();
        let ids: Vec<String> = snap
            .candidates("ws", "openai")
            .unwrap()
            .iter()
            .map(|c| c.record.id.clone())
            .collect();
        assert_eq!(ids, ["b", "a"]);
        assert!(snap.candidates("ws", "anthropic").is_none());
        assert_eq!(snap.credentials().len(), 4);
    }

    #[test]
    fn snapshot_refuses_duplicates_and_unknown_providers() {
        let dup = vec![
            Credential::for_tests("a", "ws", "openai"),
            Credential::for_tests("a", "ws2", "openai"),
        ];
        assert!(matches!(
            Snapshot::build(Settings::default(), Provider::builtins(), vec![], dup),
            Err(SnapshotError::DuplicateId { .. })
        ));
        let unknown = vec![Credential::for_tests("a", "ws", "nope")];
        assert!(matches!(
            Snapshot::build(Settings::default(), Provider::builtins(), vec![], unknown),
            Err(SnapshotError::UnknownProvider { .. })
        ));
        let azure = vec![Credential::for_tests("a", "ws", "azure")];
        assert!(matches!(
            Snapshot::build(Settings::default(), Provider::builtins(), vec![], azure),
            Err(SnapshotError::NoUpstream { .. })
        ));
    }

    #[test]
    fn disabled_and_unknown_keys_look_the_same() {
        let on = KeyHash::of(b"on");
        let off = KeyHash::of(b"off");
        let key = |hash, disabled| ApiKey {
            hash,
            workspace_id: "ws".into(),
            user_id: "u".into(),
            name: None,
            disabled,
        };
        let snap = Snapshot::build(
            Settings::default(),
            vec![],
            vec![key(on, false), key(off, true)],
            vec![],
        )
        .unwrap();
        assert_eq!(snap.principal(&on).unwrap().key_hash, Some(on));
        assert_eq!(snap.principal(&off), None);
        assert_eq!(snap.principal(&KeyHash::of(b"none")), None);
    }

    #[test]
    fn registry_swaps_and_old_snapshot_stays_valid() {
        let reg =
            Registry::new(Snapshot::build(Settings::default(), vec![], vec![], vec![]).unwrap());
        let held = reg.snapshot();
        assert_eq!(held.generation(), 1);
        let g = reg.replace(
            Snapshot::build(Settings::default(), Provider::builtins(), vec![], vec![]).unwrap(),
        );
        assert_eq!(g, 2);
        assert_eq!(reg.snapshot().generation(), 2);
        assert_eq!(held.provider_count(), 0);
        assert!(reg.snapshot().provider_count() > 0);
    }
}
