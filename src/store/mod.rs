//! Where credentials and gateway keys live: the config file (read-only), an
//! embedded SQLite database (one node), or PostgreSQL (any number of
//! replicas, kept in step through `LISTEN/NOTIFY`).
//!
//! The in-memory [`Registry`](crate::Registry) stays the per-request source
//! of truth: it is filled from the store at start, every write through the
//! admin API is applied to it at once, and (Postgres) every other replica's
//! writes arrive as notifications and are applied one row at a time.
//!
//! Secrets are sealed with AES-256-GCM ([`Keyring`]) before they reach a
//! database: a dump holds no plaintext secret.

mod postgres;
mod sqlite;

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cache::{label_for, ApiKey, Credential};
use crate::crypto::{CryptoError, Keyring, Sealed};
use crate::key::KeyHash;
use crate::providers::Upstream;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The most entries an allowlist may have through the API.
pub const MAX_LIST: usize = 100;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A secret does not open.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A stored row does not make a valid credential.
    #[error("stored row {id} is invalid: {why}")]
    BadRow {
        /// The row's id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// A write was refused (validation); the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No row with that id.
    #[error("not found")]
    NotFound,
}

/// A credential as the store holds it, secret in plaintext (in memory only).
#[derive(Debug, Clone)]
pub struct CredentialRecord {
    /// UUID.
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Provider slug.
    pub provider: String,
    /// Human name.
    pub name: Option<String>,
    /// The secret.
    pub key: SecretString,
    /// RFC 3339.
    pub created_at: String,
    /// Never used when set.
    pub disabled: bool,
    /// Tried after the non-fallback ones.
    pub is_fallback: bool,
    /// Try order.
    pub sort_order: i64,
    /// Allowed gateway key hashes; `None` = any.
    pub allowed_api_key_hashes: Option<Vec<String>>,
    /// Allowed models; `None` = any.
    pub allowed_models: Option<Vec<String>>,
    /// Allowed users; `None` = any.
    pub allowed_user_ids: Option<Vec<String>>,
    /// Per-credential upstream.
    pub base_url: Option<String>,
}

impl CredentialRecord {
    /// The registry's view of it.
    pub fn to_credential(&self) -> Result<Credential, StoreError> {
        let bad = |why: String| StoreError::BadRow {
            id: self.id.clone(),
            why,
        };
        let created_at_nanos = OffsetDateTime::parse(&self.created_at, &Rfc3339)
            .map_err(|_| bad("created_at is not RFC 3339".into()))?
            .unix_timestamp_nanos();
        let base_url = self
            .base_url
            .as_deref()
            .map(Upstream::parse)
            .transpose()
            .map_err(|why| bad(format!("base_url {why}")))?;
        Ok(Credential {
            id: self.id.clone(),
            workspace_id: self.workspace_id.clone(),
            provider: self.provider.clone(),
            name: self.name.clone(),
            label: label_for(&self.key),
            created_at: self.created_at.clone(),
            created_at_nanos,
            disabled: self.disabled,
            is_fallback: self.is_fallback,
            sort_order: self.sort_order,
            allowed_api_key_hashes: self.allowed_api_key_hashes.clone(),
            allowed_models: self.allowed_models.clone(),
            allowed_user_ids: self.allowed_user_ids.clone(),
            key: self.key.clone(),
            base_url,
            headers: Vec::new(),
        })
    }

    fn seal(&self, keyring: &Keyring) -> Sealed {
        keyring.seal(self.key.expose_secret().as_bytes(), self.id.as_bytes())
    }
}

/// A gateway key as the store holds it (its hash, never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Workspace.
    pub workspace_id: String,
    /// User.
    pub user_id: String,
    /// Human name.
    pub name: Option<String>,
    /// Refused like an unknown key when set.
    pub disabled: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl ApiKeyRecord {
    /// The registry's view of it.
    pub fn to_api_key(&self) -> ApiKey {
        ApiKey {
            hash: self.hash,
            workspace_id: self.workspace_id.as_str().into(),
            user_id: self.user_id.as_str().into(),
            name: self.name.clone(),
            disabled: self.disabled,
        }
    }
}

/// One change, as seen by other replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A credential was created, updated or deleted.
    Credential(String),
    /// A gateway key was created, updated or deleted.
    ApiKey(KeyHash),
}

impl Change {
    /// The `NOTIFY` payload.
    fn payload(&self) -> String {
        match self {
            Change::Credential(id) => format!("c:{id}"),
            Change::ApiKey(hash) => format!("k:{hash}"),
        }
    }

    fn parse(payload: &str) -> Option<Change> {
        match payload.split_once(':')? {
            ("c", id) => Some(Change::Credential(id.to_owned())),
            ("k", hash) => KeyHash::from_hex(hash).map(Change::ApiKey),
            _ => None,
        }
    }
}

/// An edit of one credential inside the store's transaction; it may refuse.
pub type CredentialEdit = Box<dyn FnOnce(&mut CredentialRecord) -> Result<(), StoreError> + Send>;

/// An edit of one gateway key inside the store's transaction.
pub type ApiKeyEdit = Box<dyn FnOnce(&mut ApiKeyRecord) + Send>;

/// The configured store.
pub enum Store {
    /// The config file: read-only through the API.
    File,
    /// An embedded SQLite database.
    Sqlite(SqliteStore),
    /// PostgreSQL, shared by replicas.
    Postgres(Box<PgStore>),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Store::File => "Store::File",
            Store::Sqlite(_) => "Store::Sqlite",
            Store::Postgres(_) => "Store::Postgres",
        })
    }
}

/// Everything a store holds.
#[derive(Debug, Default)]
pub struct Contents {
    /// Live gateway keys.
    pub api_keys: Vec<ApiKeyRecord>,
    /// Live credentials.
    pub credentials: Vec<CredentialRecord>,
}

impl Store {
    /// Opens the store named by `url` (`file`, `sqlite://PATH`, `postgres://…`),
    /// creating its tables if needed.
    pub async fn open(url: &SecretString, keyring: Option<Keyring>) -> Result<Store, StoreError> {
        let url = url.expose_secret();
        if url == "file" {
            return Ok(Store::File);
        }
        let keyring = keyring.ok_or(StoreError::Crypto(CryptoError::MissingKey(
            crate::crypto::MASTER_KEY_ENV,
        )))?;
        if let Some(path) = url.strip_prefix("sqlite://") {
            return SqliteStore::open(path, keyring).await.map(Store::Sqlite);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgStore::open(url, keyring)
                .await
                .map(|s| Store::Postgres(Box::new(s)));
        }
        Err(StoreError::Invalid(
            "store.url: use \"file\", \"sqlite://PATH\" or \"postgres://…\"".into(),
        ))
    }

    /// Whether the API may write to it.
    pub fn is_writable(&self) -> bool {
        !matches!(self, Store::File)
    }

    /// Every live key and credential (secrets decrypted).
    pub async fn load(&self) -> Result<Contents, StoreError> {
        match self {
            Store::File => Ok(Contents::default()),
            Store::Sqlite(s) => s.load().await,
            Store::Postgres(s) => s.load().await,
        }
    }

    /// Inserts a new credential.
    pub async fn create_credential(&self, rec: CredentialRecord) -> Result<(), StoreError> {
        match self {
            Store::File => Err(StoreError::Unavailable("read-only".into())),
            Store::Sqlite(s) => s.create_credential(rec).await,
            Store::Postgres(s) => s.create_credential(rec).await,
        }
    }

    /// Changes one credential atomically: `edit` sees the current row and may
    /// refuse. Concurrent edits of one row are serialised.
    pub async fn update_credential(
        &self,
        id: &str,
        edit: CredentialEdit,
    ) -> Result<CredentialRecord, StoreError> {
        match self {
            Store::File => Err(StoreError::Unavailable("read-only".into())),
            Store::Sqlite(s) => s.update_credential(id, edit).await,
            Store::Postgres(s) => s.update_credential(id, edit).await,
        }
    }

    /// Soft-deletes a credential: the secret is wiped and the row leaves every
    /// list. `false` when there was no live row.
    pub async fn delete_credential(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Store::File => Err(StoreError::Unavailable("read-only".into())),
            Store::Sqlite(s) => s.delete_credential(id).await,
            Store::Postgres(s) => s.delete_credential(id).await,
        }
    }

    /// Inserts a gateway key.
    pub async fn create_api_key(&self, rec: ApiKeyRecord) -> Result<(), StoreError> {
        match self {
            Store::File => Err(StoreError::Unavailable("read-only".into())),
            Store::Sqlite(s) => s.create_api_key(rec).await,
            Store::Postgres(s) => s.create_api_key(rec).await,
        }
    }

    /// Changes a gateway key's name or disabled flag.
    pub async fn update_api_key(
        &self,
        hash: KeyHash,
        edit: ApiKeyEdit,
    ) -> Result<ApiKeyRecord, StoreError> {
        match self {
            Store::File => Err(StoreError::Unavailable("read-only".into())),
            Store::Sqlite(s) => s.update_api_key(hash, edit).await,
            Store::Postgres(s) => s.update_api_key(hash, edit).await,
        }
    }

    /// Removes a gateway key; `false` when there was none.
    pub async fn delete_api_key(&self, hash: KeyHash) -> Result<bool, StoreError> {
        match self {
            Store::File => Err(StoreError::Unavailable("read-only".into())),
            Store::Sqlite(s) => s.delete_api_key(hash).await,
            Store::Postgres(s) => s.delete_api_key(hash).await,
        }
    }
}

/// Seconds-precision RFC 3339 for `created_at`.
pub(crate) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// A random UUID (version 4).
pub(crate) fn new_uuid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A new gateway key: `byok-` and 32 random bytes in hex.
pub(crate) fn new_gateway_key() -> SecretString {
    let b = random_bytes::<32>();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    SecretString::from(format!("byok-{h}"))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use aes_gcm::aead::rand_core::RngCore;
    let mut b = [0u8; N];
    aes_gcm::aead::OsRng.fill_bytes(&mut b);
    b
}

// ---- the API's request bodies ------------------------------------------------

/// A field of a PATCH body: absent (unchanged), `null` (cleared) or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
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

/// `POST /api/v1/byok`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    provider: String,
    key: SecretString,
    workspace_id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    is_fallback: bool,
    #[serde(default)]
    sort_order: i64,
    allowed_api_key_hashes: Option<Vec<String>>,
    allowed_models: Option<Vec<String>>,
    allowed_user_ids: Option<Vec<String>>,
    base_url: Option<String>,
}

impl CreateCredential {
    /// The record to insert: a fresh id and `created_at`; `workspace_id`
    /// defaults to `default_workspace`.
    pub fn into_record(
        self,
        default_workspace: Option<&str>,
    ) -> Result<CredentialRecord, StoreError> {
        let workspace_id = self
            .workspace_id
            .or_else(|| default_workspace.map(str::to_owned))
            .ok_or_else(|| {
                StoreError::Invalid(
                    "workspace_id: required (no store.default_workspace_id is configured)".into(),
                )
            })?;
        let rec = CredentialRecord {
            id: new_uuid(),
            workspace_id,
            provider: self.provider,
            name: self.name,
            key: self.key,
            created_at: now_rfc3339(),
            disabled: self.disabled,
            is_fallback: self.is_fallback,
            sort_order: self.sort_order,
            allowed_api_key_hashes: self.allowed_api_key_hashes,
            allowed_models: self.allowed_models,
            allowed_user_ids: self.allowed_user_ids,
            base_url: self.base_url,
        };
        validate(&rec)?;
        Ok(rec)
    }
}

/// `PATCH /api/v1/byok/{id}`: an omitted field is unchanged, `null` clears,
/// an array replaces; `key` rotates the secret in place.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredential {
    #[serde(default)]
    name: Patch<String>,
    #[serde(default)]
    key: Option<SecretString>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    is_fallback: Option<bool>,
    #[serde(default)]
    sort_order: Option<i64>,
    #[serde(default)]
    allowed_api_key_hashes: Patch<Vec<String>>,
    #[serde(default)]
    allowed_models: Patch<Vec<String>>,
    #[serde(default)]
    allowed_user_ids: Patch<Vec<String>>,
    #[serde(default)]
    base_url: Patch<String>,
}

impl UpdateCredential {
    /// Applies the patch to `rec` and validates the result.
    pub fn apply(self, rec: &mut CredentialRecord) -> Result<(), StoreError> {
        self.name.apply(&mut rec.name);
        if let Some(key) = self.key {
            rec.key = key;
        }
        if let Some(v) = self.disabled {
            rec.disabled = v;
        }
        if let Some(v) = self.is_fallback {
            rec.is_fallback = v;
        }
        if let Some(v) = self.sort_order {
            rec.sort_order = v;
        }
        self.allowed_api_key_hashes
            .apply(&mut rec.allowed_api_key_hashes);
        self.allowed_models.apply(&mut rec.allowed_models);
        self.allowed_user_ids.apply(&mut rec.allowed_user_ids);
        self.base_url.apply(&mut rec.base_url);
        validate(rec)
    }
}

/// `POST /api/v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    workspace_id: Option<String>,
    user_id: String,
    name: Option<String>,
    #[serde(default)]
    disabled: bool,
}

impl CreateApiKey {
    /// A fresh key and the record of its hash.
    pub fn into_record(
        self,
        default_workspace: Option<&str>,
    ) -> Result<(SecretString, ApiKeyRecord), StoreError> {
        let workspace_id = self
            .workspace_id
            .or_else(|| default_workspace.map(str::to_owned))
            .ok_or_else(|| {
                StoreError::Invalid(
                    "workspace_id: required (no store.default_workspace_id is configured)".into(),
                )
            })?;
        non_empty("workspace_id", &workspace_id)?;
        non_empty("user_id", &self.user_id)?;
        let key = new_gateway_key();
        let rec = ApiKeyRecord {
            hash: KeyHash::of(key.expose_secret().as_bytes()),
            workspace_id,
            user_id: self.user_id,
            name: self.name,
            disabled: self.disabled,
            created_at: now_rfc3339(),
        };
        Ok((key, rec))
    }
}

/// `PATCH /api/v1/keys/{hash}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiKey {
    #[serde(default)]
    name: Patch<String>,
    #[serde(default)]
    disabled: Option<bool>,
}

impl UpdateApiKey {
    /// Applies the patch.
    pub fn apply(self, rec: &mut ApiKeyRecord) {
        self.name.apply(&mut rec.name);
        if let Some(v) = self.disabled {
            rec.disabled = v;
        }
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::Invalid(format!("{field}: must not be empty")));
    }
    Ok(())
}

/// The API's rules for a credential (the provider and upstream are checked
/// against the registry by the caller). Messages name the field, never a value
/// of the secret.
pub fn validate(rec: &CredentialRecord) -> Result<(), StoreError> {
    non_empty("workspace_id", &rec.workspace_id)?;
    non_empty("provider", &rec.provider)?;
    let secret = rec.key.expose_secret();
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::Invalid(
            "key: must be non-empty visible ASCII (no spaces or control characters)".into(),
        ));
    }
    if let Some(hashes) = &rec.allowed_api_key_hashes {
        if hashes.is_empty() {
            return Err(StoreError::Invalid(
                "allowed_api_key_hashes: [] would admit no key; use null for no restriction".into(),
            ));
        }
        for (i, h) in hashes.iter().enumerate() {
            if KeyHash::from_hex(h).is_none() {
                return Err(StoreError::Invalid(format!(
                    "allowed_api_key_hashes[{i}]: not 64 lowercase hex chars"
                )));
            }
        }
    }
    for (field, list) in [
        ("allowed_api_key_hashes", &rec.allowed_api_key_hashes),
        ("allowed_models", &rec.allowed_models),
        ("allowed_user_ids", &rec.allowed_user_ids),
    ] {
        if let Some(list) = list {
            if list.len() > MAX_LIST {
                return Err(StoreError::Invalid(format!(
                    "{field}: more than {MAX_LIST} entries"
                )));
            }
            if let Some(i) = list.iter().position(String::is_empty) {
                return Err(StoreError::Invalid(format!(
                    "{field}[{i}]: must not be empty"
                )));
            }
        }
    }
    if let Some(url) = &rec.base_url {
        Upstream::parse(url).map_err(|why| StoreError::Invalid(format!("base_url: {why}")))?;
    }
    Ok(())
}

/// A credential row before its secret is opened.
pub(crate) struct RawCredential {
    pub(crate) id: String,
    pub(crate) workspace_id: String,
    pub(crate) provider: String,
    pub(crate) name: Option<String>,
    pub(crate) created_at: String,
    pub(crate) disabled: bool,
    pub(crate) is_fallback: bool,
    pub(crate) sort_order: i64,
    pub(crate) allowed_api_key_hashes: Option<String>,
    pub(crate) allowed_models: Option<String>,
    pub(crate) allowed_user_ids: Option<String>,
    pub(crate) base_url: Option<String>,
    pub(crate) key_id: Option<String>,
    pub(crate) nonce: Option<Vec<u8>>,
    pub(crate) secret: Option<Vec<u8>>,
}

impl RawCredential {
    /// Decrypts the secret (bound to the row's id) and parses the lists.
    pub(crate) fn open(self, keyring: &Keyring) -> Result<(CredentialRecord, Sealed), StoreError> {
        let (Some(key_id), Some(nonce), Some(ciphertext)) = (self.key_id, self.nonce, self.secret)
        else {
            return Err(StoreError::BadRow {
                id: self.id,
                why: "live row without a secret".into(),
            });
        };
        let sealed = Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        let plain = keyring.open(&sealed, self.id.as_bytes())?;
        let key = String::from_utf8(plain.to_vec()).map_err(|_| StoreError::BadRow {
            id: self.id.clone(),
            why: "secret is not UTF-8".into(),
        })?;
        let rec = CredentialRecord {
            allowed_api_key_hashes: list_from_json(&self.id, self.allowed_api_key_hashes)?,
            allowed_models: list_from_json(&self.id, self.allowed_models)?,
            allowed_user_ids: list_from_json(&self.id, self.allowed_user_ids)?,
            id: self.id,
            workspace_id: self.workspace_id,
            provider: self.provider,
            name: self.name,
            key: SecretString::from(key),
            created_at: self.created_at,
            disabled: self.disabled,
            is_fallback: self.is_fallback,
            sort_order: self.sort_order,
            base_url: self.base_url,
        };
        Ok((rec, sealed))
    }
}

/// The credential columns, in the order both backends bind them.
pub(crate) const CRED_COLUMNS: &str =
    "id, workspace_id, provider, name, created_at, disabled, is_fallback, sort_order, \
     allowed_api_key_hashes, allowed_models, allowed_user_ids, base_url, key_id, nonce, secret";

/// A credential ready to be written: lists as JSON text, the secret sealed.
/// Bound in [`CRED_COLUMNS`] order by each backend, for INSERT and UPDATE alike.
pub(crate) struct SealedRow<'a> {
    pub(crate) rec: &'a CredentialRecord,
    pub(crate) lists: [Option<String>; 3],
    pub(crate) sealed: Sealed,
}

impl CredentialRecord {
    pub(crate) fn sealed_row(&self, keyring: &Keyring) -> SealedRow<'_> {
        SealedRow {
            rec: self,
            lists: [
                list_to_json(&self.allowed_api_key_hashes),
                list_to_json(&self.allowed_models),
                list_to_json(&self.allowed_user_ids),
            ],
            sealed: self.seal(keyring),
        }
    }
}

/// JSON text of an optional list, for a TEXT column.
fn list_to_json(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref()
        .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".to_owned()))
}

fn list_from_json(id: &str, text: Option<String>) -> Result<Option<Vec<String>>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|_| StoreError::BadRow {
            id: id.to_owned(),
            why: "an allowlist column is not a JSON array of strings".into(),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> CredentialRecord {
        CreateCredential {
            provider: "openai".into(),
            key: SecretString::from("sk-test-0123456789"),
            workspace_id: Some("ws".into()),
            name: None,
            disabled: false,
            is_fallback: false,
            sort_order: 0,
            allowed_api_key_hashes: None,
            allowed_models: None,
            allowed_user_ids: None,
            base_url: None,
        }
        .into_record(None)
        .unwrap()
    }

    #[test]
    fn uuids_are_v4_and_keys_are_fresh() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uuid(), u);
        let k = new_gateway_key();
        assert!(k.expose_secret().starts_with("byok-") && k.expose_secret().len() == 69);
    }

    #[test]
    fn patch_distinguishes_absent_null_and_value() {
        let p: UpdateCredential =
            serde_json::from_str(r#"{"name":null,"allowed_models":["a"],"sort_order":3}"#).unwrap();
        let mut r = rec();
        r.name = Some("old".into());
        r.allowed_user_ids = Some(vec!["u".into()]);
        p.apply(&mut r).unwrap();
        assert_eq!(r.name, None);
        assert_eq!(r.allowed_models, Some(vec!["a".to_owned()]));
        assert_eq!(
            r.allowed_user_ids,
            Some(vec!["u".to_owned()]),
            "absent is unchanged"
        );
        assert_eq!(r.sort_order, 3);
    }

    #[test]
    fn validation_table() {
        let hex = "a".repeat(64);
        type Edit = Box<dyn Fn(&mut CredentialRecord)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "allowed_api_key_hashes: []",
                Box::new(|r| r.allowed_api_key_hashes = Some(vec![])),
            ),
            (
                "allowed_api_key_hashes[0]: not 64",
                Box::new(|r| r.allowed_api_key_hashes = Some(vec!["A".repeat(64)])),
            ),
            (
                "allowed_models: more than 100",
                Box::new(|r| r.allowed_models = Some(vec!["m".into(); 101])),
            ),
            (
                "allowed_user_ids[1]: must not be empty",
                Box::new(|r| r.allowed_user_ids = Some(vec!["u".into(), String::new()])),
            ),
            (
                "key: must be",
                Box::new(|r| r.key = SecretString::from("sk-a\u{7}b")),
            ),
            (
                "key: must be",
                Box::new(|r| r.key = SecretString::from("sk a")),
            ),
            (
                "base_url: must start",
                Box::new(|r| r.base_url = Some("ftp://x".into())),
            ),
            (
                "workspace_id: must not be empty",
                Box::new(|r| r.workspace_id = String::new()),
            ),
        ];
        for (want, edit) in cases {
            let mut r = rec();
            edit(&mut r);
            let err = validate(&r).unwrap_err().to_string();
            assert!(err.starts_with(want), "{want} vs {err}");
            assert!(!err.contains("sk-"), "{err}");
        }
        let mut ok = rec();
        ok.allowed_api_key_hashes = Some(vec![hex]);
        ok.allowed_models = Some(vec!["m".into(); 100]);
        assert!(validate(&ok).is_ok());
    }

    #[test]
    fn change_payloads_round_trip() {
        let h = KeyHash::of(b"k");
        for c in [Change::Credential("abc-1".into()), Change::ApiKey(h)] {
            assert_eq!(Change::parse(&c.payload()), Some(c));
        }
        assert_eq!(Change::parse("x:1"), None);
        assert_eq!(Change::parse("k:nothex"), None);
    }
}
