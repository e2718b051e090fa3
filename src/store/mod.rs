//! Where credentials and gateway keys live: the config file (read-only), an
//! embedded SQLite database (one node), or PostgreSQL (any number of
//! replicas, kept in step through `LISTEN/NOTIFY`).
//!
//! The in-memory [`Registry`](crate::Registry) stays the per-request source
//! of truth: it is filled from the store at start, every write through the
//! admin API is applied to it at once, and (Postgres) every other replica's
//! writes arrive as notifications and are applied one row at a time
//! ([`sync`]).
//!
//! A row turns into the same [`CredentialFields`] / [`ApiKeyFields`] as a
//! config table or an API body — a credential row's columns are read and
//! written from one column table ([`credential_columns`]) — and is made a
//! record by the same
//! [`Credential::validate`](crate::Credential::validate) /
//! [`ApiKey::validate`](crate::ApiKey::validate): a row that breaks a rule is
//! refused with the same field-path message. Rows have no `headers` column:
//! the admin API refuses `headers` (they are a config-file setting).
//!
//! Secrets are sealed with AES-256-GCM ([`Keyring`]) before they reach a
//! database, bound to where and for whom they are used ([`seal`]): a dump
//! holds no plaintext secret, and a row moved to another upstream, provider,
//! workspace or set of principals does not open.

pub(crate) mod crypto;
mod postgres;
pub(crate) mod seal;
mod sqlite;
pub(crate) mod sync;
mod usage;

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::domain::{
    ApiKey, ApiKeyFields, Credential, CredentialFields, CredentialSpec, FieldErrors, KeyHash,
    Providers, Scalar, ScalarKind,
};
use crypto::{CryptoError, Keyring, Sealed};

use crate::ledger::{Day, Numbered};
use crate::policy::health::Rest;
pub(crate) use usage::Stored;

pub(crate) use postgres::PgStore;
pub(crate) use sqlite::SqliteStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or failed (the driver's error; it names
    /// hosts and SQL states, never a password or a secret).
    #[error("store unavailable: {}", crate::common::ErrorChain(&**.0))]
    Unavailable(crate::BoxError),
    /// A write to the read-only file store.
    #[error("the file store is read-only")]
    ReadOnly,
    /// The master key is missing or malformed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A credential's secret does not open: the credential is not used.
    #[error("credential {id}: {source}")]
    Sealed {
        /// The credential's id.
        id: String,
        /// Why it does not open.
        source: CryptoError,
        /// The row's fields (without a secret), for a replica that holds
        /// the secret already (`seal::kept_in_memory`).
        unopened: Option<Box<CredentialFields>>,
    },
    /// A stored row does not make a valid credential or key.
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

impl StoreError {
    /// A credential whose secret does not open.
    pub(crate) fn sealed(fields: CredentialFields, source: CryptoError) -> Self {
        StoreError::Sealed {
            id: fields.id.clone(),
            source,
            unopened: Some(Box::new(fields)),
        }
    }

    /// Whether it is a secret sealed under a master key this process does
    /// not have: a deployment mistake, not a bad row.
    pub(crate) fn is_unknown_key(&self) -> bool {
        matches!(
            self,
            StoreError::Sealed {
                source: CryptoError::UnknownKeyId(_),
                ..
            }
        )
    }

    /// A row that breaks a rule.
    pub(crate) fn bad_row(id: &str, errs: &FieldErrors) -> Self {
        StoreError::BadRow {
            id: id.to_owned(),
            why: errs.to_string().replace('\n', "; "),
        }
    }
}

/// Makes a stored credential's fields a credential, under the one set of rules.
pub(crate) fn credential(
    fields: CredentialFields,
    providers: &Providers,
) -> Result<Credential, StoreError> {
    let id = fields.id.clone();
    Credential::validate(fields, providers).map_err(|e| StoreError::bad_row(&id, &e))
}

/// Makes a stored gateway key's fields a key, under the one set of rules.
pub(crate) fn api_key(fields: ApiKeyFields) -> Result<ApiKey, StoreError> {
    let id = fields.hash.clone();
    ApiKey::validate(fields).map_err(|e| StoreError::bad_row(&id, &e))
}

fn seal(fields: &CredentialFields, keyring: &Keyring) -> Sealed {
    keyring.seal(
        fields.key.expose_secret().as_bytes(),
        seal::aad(fields).as_bytes(),
    )
}

/// One change, as seen by other replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A credential was created, updated or deleted.
    Credential(String),
    /// A gateway key was created, updated or deleted.
    ApiKey(KeyHash),
    /// A replica changed a credential's rest (SPEC §10): no row to read.
    Health(String, Rest),
    /// A replica added to the usage rows: each reads its keys' spend anew.
    Usage,
}

impl Change {
    /// The `NOTIFY` payload.
    fn payload(&self) -> String {
        match self {
            Change::Credential(id) => format!("c:{id}"),
            Change::ApiKey(hash) => format!("k:{hash}"),
            Change::Usage => "u:".to_owned(),
            Change::Health(id, r) => format!(
                "h:{}:{}:{}:{id}",
                r.until_ms,
                u8::from(r.quarantined),
                r.quarantines
            ),
        }
    }

    fn parse(payload: &str) -> Option<Change> {
        match payload.split_once(':')? {
            ("c", id) => Some(Change::Credential(id.to_owned())),
            ("k", hash) => KeyHash::from_hex(hash).map(Change::ApiKey),
            ("u", "") => Some(Change::Usage),
            ("h", rest) => {
                let mut parts = rest.splitn(4, ':');
                let until_ms = parts.next()?.parse().ok()?;
                let quarantined = match parts.next()? {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                };
                let quarantines = parts.next()?.parse().ok()?;
                let id = parts.next().filter(|id| !id.is_empty())?;
                Some(Change::Health(
                    id.to_owned(),
                    Rest {
                        until_ms,
                        quarantined,
                        quarantines,
                    },
                ))
            }
            _ => None,
        }
    }
}

/// An edit of one credential inside the store's transaction; it may refuse.
pub(crate) type CredentialEdit =
    Box<dyn FnOnce(&mut CredentialFields) -> Result<(), StoreError> + Send>;

/// An edit of one gateway key inside the store's transaction; it may refuse.
pub(crate) type ApiKeyEdit = Box<dyn FnOnce(&mut ApiKeyFields) -> Result<(), StoreError> + Send>;

/// The configured store.
pub(crate) enum Store {
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

/// Everything a store holds, as read: each record still to be validated.
#[derive(Debug, Default)]
pub(crate) struct Contents {
    /// Live gateway keys.
    pub api_keys: Vec<ApiKeyFields>,
    /// Live credentials; an `Err` for each whose secret does not open.
    pub credentials: Vec<Result<CredentialFields, StoreError>>,
}

/// What `byok-proxy reseal` did.
#[derive(Debug, Default)]
pub struct Resealed {
    /// The id of the master key every secret is now sealed under.
    pub key_id: String,
    /// Credentials re-sealed under it.
    pub resealed: usize,
    /// Credentials that were sealed under it already.
    pub current: usize,
    /// Credentials whose secret does not open (each error names its id).
    pub refused: Vec<StoreError>,
}

/// Live credential rows opened: the records, and the rows of those sealed
/// under the previous master key, re-sealed under the current one.
pub(crate) struct Opened {
    pub(crate) credentials: Vec<Result<CredentialFields, StoreError>>,
    pub(crate) resealed: Vec<(String, Vec<Scalar>)>,
}

impl Opened {
    /// Opens every row; a row that does not open is an `Err` among the records.
    pub(crate) fn rows(rows: Vec<Vec<Scalar>>, keyring: &Keyring) -> Result<Opened, StoreError> {
        let mut opened = Opened {
            credentials: Vec::with_capacity(rows.len()),
            resealed: Vec::new(),
        };
        for row in rows {
            match open_credential_row(row, keyring) {
                Ok((rec, sealed)) => {
                    if keyring.is_stale(&sealed) {
                        let row = credential_row(&rec, keyring);
                        opened.resealed.push((rec.id.clone(), row));
                    }
                    opened.credentials.push(Ok(rec));
                }
                Err(e @ StoreError::Sealed { .. }) => opened.credentials.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        if !opened.resealed.is_empty() {
            tracing::info!(
                credentials = opened.resealed.len(),
                master_key_id = keyring.current_id(),
                "re-sealed credentials under the current master key"
            );
        }
        if let Some(previous) = keyring.previous_id() {
            if opened.credentials.iter().all(Result::is_ok) {
                tracing::info!(
                    master_key_id = previous,
                    "no credential is sealed under BYOK_MASTER_KEY_PREVIOUS any more: it can be removed"
                );
            }
        }
        Ok(opened)
    }

    /// The report of `byok-proxy reseal`.
    pub(crate) fn report(self, keyring: &Keyring) -> Resealed {
        let resealed = self.resealed.len();
        let mut out = Resealed {
            key_id: keyring.current_id().to_owned(),
            resealed,
            ..Resealed::default()
        };
        for c in self.credentials {
            match c {
                Ok(_) => out.current += 1,
                Err(e) => out.refused.push(e),
            }
        }
        out.current -= resealed;
        out
    }
}

impl Store {
    /// Opens the store `config.url` names (`file`, `sqlite://PATH`,
    /// `postgres://…`), creating its tables if needed.
    pub(crate) async fn open(
        config: &crate::config::StoreConfig,
        keyring: Option<Keyring>,
    ) -> Result<Store, StoreError> {
        let url = config.url.expose_secret();
        if url == "file" {
            return Ok(Store::File);
        }
        let keyring = keyring.ok_or(StoreError::Crypto(CryptoError::MissingKey(
            crypto::MASTER_KEY_ENV,
        )))?;
        if let Some(path) = url.strip_prefix("sqlite://") {
            return SqliteStore::open(path, keyring, config.statement_timeout)
                .await
                .map(Store::Sqlite);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgStore::open(url, keyring, &config.ca_roots, config.statement_timeout)
                .await
                .map(|s| Store::Postgres(Box::new(s)));
        }
        Err(StoreError::Invalid(
            "store.url: use \"file\", \"sqlite://PATH\" or \"postgres://…\"".into(),
        ))
    }

    /// Whether the API may write to it.
    pub(crate) fn is_writable(&self) -> bool {
        !matches!(self, Store::File)
    }

    /// Every live key and credential (secrets decrypted).
    pub(crate) async fn load(&self) -> Result<Contents, StoreError> {
        match self {
            Store::File => Ok(Contents::default()),
            Store::Sqlite(s) => s.load().await,
            Store::Postgres(s) => s.load().await,
        }
    }

    /// Re-seals every live credential sealed under the previous master key
    /// under the current one, and says how many.
    pub(crate) async fn reseal(&self) -> Result<Resealed, StoreError> {
        match self {
            Store::File => Err(StoreError::ReadOnly),
            Store::Sqlite(s) => s.reseal().await,
            Store::Postgres(s) => s.reseal().await,
        }
    }

    /// Inserts a new credential.
    pub(crate) async fn create_credential(&self, rec: CredentialFields) -> Result<(), StoreError> {
        match self {
            Store::File => Err(StoreError::ReadOnly),
            Store::Sqlite(s) => s.create_credential(rec).await,
            Store::Postgres(s) => s.timed(s.create_credential(rec)).await,
        }
    }

    /// Changes one credential atomically: `edit` sees the current row and may
    /// refuse. Concurrent edits of one row are serialised.
    pub(crate) async fn update_credential(
        &self,
        id: &str,
        edit: CredentialEdit,
    ) -> Result<CredentialFields, StoreError> {
        match self {
            Store::File => Err(StoreError::ReadOnly),
            Store::Sqlite(s) => s.update_credential(id, edit).await,
            Store::Postgres(s) => s.timed(s.update_credential(id, edit)).await,
        }
    }

    /// Soft-deletes a credential: the secret is wiped and the row leaves every
    /// list. `false` when there was no live row.
    pub(crate) async fn delete_credential(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Store::File => Err(StoreError::ReadOnly),
            Store::Sqlite(s) => s.delete_credential(id).await,
            Store::Postgres(s) => s.timed(s.delete_credential(id)).await,
        }
    }

    /// Inserts a gateway key.
    pub(crate) async fn create_api_key(&self, rec: ApiKeyFields) -> Result<(), StoreError> {
        match self {
            Store::File => Err(StoreError::ReadOnly),
            Store::Sqlite(s) => s.create_api_key(rec).await,
            Store::Postgres(s) => s.timed(s.create_api_key(rec)).await,
        }
    }

    /// Changes a gateway key's name or disabled flag.
    pub(crate) async fn update_api_key(
        &self,
        hash: KeyHash,
        edit: ApiKeyEdit,
    ) -> Result<ApiKeyFields, StoreError> {
        match self {
            Store::File => Err(StoreError::ReadOnly),
            Store::Sqlite(s) => s.update_api_key(hash, edit).await,
            Store::Postgres(s) => s.timed(s.update_api_key(hash, edit)).await,
        }
    }

    /// Removes a gateway key; `false` when there was none.
    pub(crate) async fn delete_api_key(&self, hash: KeyHash) -> Result<bool, StoreError> {
        match self {
            Store::File => Err(StoreError::ReadOnly),
            Store::Sqlite(s) => s.delete_api_key(hash).await,
            Store::Postgres(s) => s.timed(s.delete_api_key(hash)).await,
        }
    }

    /// Whether usage is kept here (a database), not only in memory.
    pub(crate) fn keeps_usage(&self) -> bool {
        !matches!(self, Store::File)
    }

    /// Adds a drained batch of usage to the store's rows, once: a batch
    /// whose number the store already holds for this process is a no-op.
    pub(crate) async fn save_usage(&self, batch: &Numbered) -> Result<(), StoreError> {
        match self {
            Store::File => Ok(()),
            Store::Sqlite(s) => s.save_usage(batch.clone()).await,
            Store::Postgres(s) => s.timed(s.save_usage(batch)).await,
        }
    }

    /// Prunes the usage rows older than `retention_days` (a key's pruned
    /// days are rolled into one row: its lifetime spend stays whole), and
    /// the usage batch numbers as old. On Postgres one replica prunes a
    /// period of `every`: `Ok(None)` when another did within it. `Some`:
    /// the usage rows deleted and the keys rolled up.
    pub(crate) async fn prune_usage(
        &self,
        retention_days: u32,
        every: std::time::Duration,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let now_ms = i64::try_from(crate::ledger::now_ms()).unwrap_or(i64::MAX);
        let retention = i64::from(retention_days) * 86_400_000;
        let batches_before_ms = now_ms.saturating_sub(retention);
        let before = crate::ledger::day_of_ms(crate::ledger::now_ms())
            .saturating_sub(Day::try_from(retention_days).unwrap_or(Day::MAX));
        match self {
            Store::File => Ok(None),
            Store::Sqlite(s) => s.prune_usage(before, batches_before_ms).await.map(Some),
            Store::Postgres(s) => {
                s.prune_usage(before, (now_ms, every), batches_before_ms)
                    .await
            }
        }
    }

    /// Every key's stored spend from `since` on; with `all`, before it too
    /// and the credentials' last uses.
    pub(crate) async fn read_usage(&self, since: Day, all: bool) -> Result<Stored, StoreError> {
        match self {
            Store::File => Ok(Stored::default()),
            Store::Sqlite(s) => s.read_usage(since, all).await,
            Store::Postgres(s) => s.timed(s.read_usage(since, all)).await,
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

/// A random UUID (version 4), from the OS's random source.
pub(crate) fn new_uuid() -> String {
    uuid::Builder::from_random_bytes(random_bytes())
        .into_uuid()
        .to_string()
}

/// A new gateway key: `byok-` and 32 random bytes in hex.
pub(crate) fn new_gateway_key() -> SecretString {
    let b = zeroize::Zeroizing::new(random_bytes::<32>());
    SecretString::from(format!("byok-{}", hex::encode(*b)))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use aes_gcm::aead::rand_core::RngCore;
    let mut b = [0u8; N];
    aes_gcm::aead::OsRng.fill_bytes(&mut b);
    b
}

// ---- the credential row --------------------------------------------------------

/// The record's own columns, before its spec's. `id` is first: an UPDATE
/// finds the row by the first parameter.
const OWN_COLUMNS: [(&str, ScalarKind); 4] = [
    ("id", ScalarKind::Text),
    ("workspace_id", ScalarKind::Text),
    ("provider", ScalarKind::Text),
    ("created_at", ScalarKind::Text),
];

/// The sealed secret's columns, after the spec's.
const SEALED_COLUMNS: [(&str, ScalarKind); 3] = [
    ("key_id", ScalarKind::Text),
    ("nonce", ScalarKind::Bytes),
    ("secret", ScalarKind::Bytes),
];

/// The column table of `byok_credentials`, as both SQL stores write and read
/// it: the record's own columns, one per [`CredentialSpec`] field
/// ([`CredentialSpec::COLUMNS`]), then the sealed secret's. No statement lists
/// them by hand ([`CredentialSql`]); the migrations, which are history,
/// create them (`deleted_at` is the stores' own, outside the record).
pub(crate) fn credential_columns() -> impl Iterator<Item = (&'static str, ScalarKind)> {
    OWN_COLUMNS
        .iter()
        .chain(CredentialSpec::COLUMNS)
        .chain(SEALED_COLUMNS.iter())
        .copied()
}

/// Every credential statement of a store, built from [`credential_columns`]
/// with its parameter syntax (`?1`, `$1`).
#[derive(Debug)]
pub(crate) struct CredentialSql {
    /// Every live row.
    pub(crate) select_live: String,
    /// The live row whose id is the first parameter.
    pub(crate) select_one: String,
    /// A new row.
    pub(crate) insert: String,
    /// Every column of the row whose id is the first parameter.
    pub(crate) update: String,
}

impl CredentialSql {
    /// The statements, with `param(n)` the n-th parameter (from 1).
    pub(crate) fn new(param: fn(usize) -> String) -> Self {
        let names: Vec<&str> = credential_columns().map(|(name, _)| name).collect();
        let columns = names.join(", ");
        let params: Vec<String> = (1..=names.len()).map(param).collect();
        let params = params.join(", ");
        let first = param(1);
        let select_live =
            format!("SELECT {columns} FROM byok_credentials WHERE deleted_at IS NULL");
        CredentialSql {
            select_one: format!("{select_live} AND id = {first}"),
            select_live,
            insert: format!("INSERT INTO byok_credentials ({columns}) VALUES ({params})"),
            update: format!(
                "UPDATE byok_credentials SET ({columns}) = ({params}) WHERE id = {first}"
            ),
        }
    }
}

/// The row to write for `rec`, one value per [`credential_columns`] entry:
/// the secret sealed (bound to [`seal::aad`]).
pub(crate) fn credential_row(rec: &CredentialFields, keyring: &Keyring) -> Vec<Scalar> {
    let sealed = seal(rec, keyring);
    let mut row = vec![
        Scalar::Text(rec.id.clone()),
        rec.workspace_id.clone().map_or(Scalar::Null, Scalar::Text),
        Scalar::Text(rec.provider.clone()),
        Scalar::Text(rec.created_at.clone()),
    ];
    row.extend(rec.spec.to_scalars());
    row.extend([
        Scalar::Text(sealed.key_id),
        Scalar::Bytes(sealed.nonce),
        Scalar::Bytes(sealed.ciphertext),
    ]);
    row
}

/// A row as a store read it (one value per [`credential_columns`] entry) made
/// fields again, the spec's columns parsed, the secret still sealed (the
/// fields' `key` empty).
pub(crate) fn read_credential_row(
    row: Vec<Scalar>,
) -> Result<(CredentialFields, Sealed), StoreError> {
    let mut values = row.into_iter();
    let mut own = values.by_ref().take(OWN_COLUMNS.len());
    let (id, workspace_id, provider, created_at) =
        match (own.next(), own.next(), own.next(), own.next()) {
            (
                Some(Scalar::Text(id)),
                Some(ws @ (Scalar::Null | Scalar::Text(_))),
                Some(Scalar::Text(provider)),
                Some(Scalar::Text(created_at)),
            ) => (id, text(ws), provider, created_at),
            _ => {
                return Err(StoreError::BadRow {
                    id: String::new(),
                    why: "id, workspace_id, provider or created_at does not read as text".into(),
                })
            }
        };
    let bad = |why: String| StoreError::BadRow {
        id: id.clone(),
        why,
    };
    let spec = CredentialSpec::from_scalars(values.by_ref().take(CredentialSpec::COLUMNS.len()))
        .map_err(bad)?;
    let (Some(Scalar::Text(key_id)), Some(Scalar::Bytes(nonce)), Some(Scalar::Bytes(ciphertext))) =
        (values.next(), values.next(), values.next())
    else {
        return Err(bad("live row without a secret".into()));
    };
    let sealed = Sealed {
        key_id,
        nonce,
        ciphertext,
    };
    let rec = CredentialFields {
        id,
        workspace_id,
        provider,
        key: SecretString::from(String::new()),
        created_at,
        headers: Default::default(),
        spec,
    };
    Ok((rec, sealed))
}

/// A row as a store read it made fields again ([`read_credential_row`]), the
/// secret opened with the fields it was sealed to ([`seal::aad`]).
/// [`StoreError::Sealed`] when it does not open.
pub(crate) fn open_credential_row(
    row: Vec<Scalar>,
    keyring: &Keyring,
) -> Result<(CredentialFields, Sealed), StoreError> {
    let (mut rec, sealed) = read_credential_row(row)?;
    match seal::open(&rec, &sealed, keyring) {
        Ok(key) => rec.key = key,
        Err(e) => return Err(StoreError::sealed(rec, e)),
    }
    Ok((rec, sealed))
}

fn text(value: Scalar) -> Option<String> {
    match value {
        Scalar::Text(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn change_payloads_round_trip() {
        let h = KeyHash::of(b"k");
        let rest = Rest {
            until_ms: 1_700_000_000_123,
            quarantined: true,
            quarantines: 3,
        };
        for c in [
            Change::Credential("abc-1".into()),
            Change::ApiKey(h),
            Change::Health("id:with:colons".into(), rest),
            Change::Health("c".into(), Rest::NONE),
            Change::Usage,
        ] {
            assert_eq!(Change::parse(&c.payload()), Some(c));
        }
        for bad in ["h:1:2:3:c", "h:x:0:0:c", "h:1:0:0:", "h:1:0"] {
            assert_eq!(Change::parse(bad), None, "{bad}");
        }
        assert_eq!(Change::parse("x:1"), None);
        assert_eq!(Change::parse("k:nothex"), None);
    }
}
