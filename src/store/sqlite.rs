//! The embedded store: one SQLite file, one node. Operations run on the
//! blocking pool behind one connection, so writes are serialised.

use std::sync::{Arc, LazyLock, Mutex};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::crypto::Keyring;
use super::usage::{self, Stored};
use super::{
    credential_columns, credential_row, now_rfc3339, open_credential_row, seal, ApiKeyEdit,
    ApiKeyFields, Contents, CredentialEdit, CredentialFields, CredentialSql, Opened, Resealed,
    StoreError,
};
use crate::domain::{KeyHash, Scalar, ScalarKind};
use crate::ledger::{Day, Numbered, Spend};

const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
";

/// The credentials table as this version writes it (`workspace_id` NULL: a
/// global credential).
const CREDENTIALS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS byok_credentials (
    id TEXT PRIMARY KEY,
    workspace_id TEXT,
    provider TEXT NOT NULL,
    name TEXT,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    is_fallback INTEGER NOT NULL,
    sort_order INTEGER NOT NULL,
    allowed_api_key_hashes TEXT,
    allowed_models TEXT,
    allowed_user_ids TEXT,
    base_url TEXT,
    key_id TEXT,
    nonce BLOB,
    secret BLOB,
    deleted_at TEXT,
    is_required INTEGER NOT NULL DEFAULT 0,
    is_byok_only INTEGER NOT NULL DEFAULT 0,
    declared_zdr INTEGER
);
";

const API_KEYS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS byok_api_keys (
    hash TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    disabled INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    require_zdr INTEGER NOT NULL DEFAULT 0,
    label TEXT,
    updated_at TEXT,
    expires_at TEXT,
    limit_usd REAL,
    limit_reset TEXT,
    include_byok_in_limit INTEGER NOT NULL DEFAULT 0,
    external_user TEXT
);
";

/// The gateway-key columns, in the order rows are read.
const KEY_COLUMNS: &str = "hash, workspace_id, user_id, name, disabled, created_at, require_zdr, \
    label, updated_at, expires_at, limit_usd, limit_reset, include_byok_in_limit, external_user";

/// The gateway-key columns added after the first version, each with its type.
const KEY_COLUMNS_ADDED: [(&str, &str); 8] = [
    ("require_zdr", "INTEGER NOT NULL DEFAULT 0"),
    ("label", "TEXT"),
    ("updated_at", "TEXT"),
    ("expires_at", "TEXT"),
    ("limit_usd", "REAL"),
    ("limit_reset", "TEXT"),
    ("include_byok_in_limit", "INTEGER NOT NULL DEFAULT 0"),
    ("external_user", "TEXT"),
];

/// The columns of the first version's credentials table (`workspace_id`
/// NOT NULL, without `is_required`, `is_byok_only`, `declared_zdr`).
const V1_COLUMNS: &str = "id, workspace_id, provider, name, created_at, disabled, is_fallback, \
    sort_order, allowed_api_key_hashes, allowed_models, allowed_user_ids, base_url, key_id, nonce, \
    secret, deleted_at";

/// Creates the tables, or brings a first-version database up to this one:
/// SQLite cannot drop a NOT NULL, so the credentials table is copied into
/// the new layout (the new flags false, `declared_zdr` NULL), in one
/// transaction.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(PRAGMAS)?;
    let tx = conn.transaction()?;
    let old: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('byok_credentials')) \
         AND NOT EXISTS (SELECT 1 FROM pragma_table_info('byok_credentials') WHERE name = 'is_required')",
        [],
        |r| r.get(0),
    )?;
    if old {
        tx.execute_batch("ALTER TABLE byok_credentials RENAME TO byok_credentials_v1")?;
        tx.execute_batch(CREDENTIALS_TABLE)?;
        tx.execute_batch(&format!(
            "INSERT INTO byok_credentials ({V1_COLUMNS}) SELECT {V1_COLUMNS} FROM byok_credentials_v1; \
             DROP TABLE byok_credentials_v1;"
        ))?;
    } else {
        tx.execute_batch(CREDENTIALS_TABLE)?;
    }
    tx.execute_batch(API_KEYS_TABLE)?;
    tx.execute_batch(usage::TABLES)?;
    for (column, kind) in KEY_COLUMNS_ADDED {
        let missing: bool = tx.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM pragma_table_info('byok_api_keys') WHERE name = ?1)",
            [column],
            |r| r.get(0),
        )?;
        if missing {
            tx.execute_batch(&format!(
                "ALTER TABLE byok_api_keys ADD COLUMN {column} {kind}"
            ))?;
        }
    }
    tx.commit()
}

/// An embedded SQLite store.
pub(crate) struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    keyring: Arc<Keyring>,
    /// This process's id for its usage batches ([`usage::claim_batch`]).
    replica: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. A statement that
    /// waits for another process's lock on the file fails after
    /// `busy_timeout` (`store.statement_timeout_ms`).
    pub(crate) async fn open(
        path: &str,
        keyring: Keyring,
        busy_timeout: std::time::Duration,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = Connection::open(&path).map_err(db)?;
            conn.busy_timeout(busy_timeout).map_err(db)?;
            migrate(&mut conn).map_err(db)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))??;
        let store = SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            keyring: Arc::new(keyring),
            replica: super::new_uuid(),
        };
        store.with(migrate_seals).await?;
        Ok(store)
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Keyring) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        let keyring = Arc::clone(&self.keyring);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn, &keyring)
        })
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?
    }

    pub(super) async fn load(&self) -> Result<Contents, StoreError> {
        self.with(|conn, keyring| {
            let tx = conn.transaction().map_err(db)?;
            // Rotation: rows sealed under the previous master key are re-sealed.
            let credentials = open_all(&tx, keyring)?.credentials;
            let mut api_keys = Vec::new();
            {
                let mut stmt = tx
                    .prepare(&format!("SELECT {KEY_COLUMNS} FROM byok_api_keys"))
                    .map_err(db)?;
                let rows = stmt.query_map([], raw_api_key).map_err(db)?;
                for row in rows {
                    api_keys.push(row.map_err(db)?);
                }
            }
            tx.commit().map_err(db)?;
            Ok(Contents {
                api_keys,
                credentials,
            })
        })
        .await
    }

    /// Re-seals every credential under the current master key, in one
    /// transaction.
    pub(super) async fn reseal(&self) -> Result<Resealed, StoreError> {
        self.with(|conn, keyring| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let opened = open_all(&tx, keyring)?;
            tx.commit().map_err(db)?;
            Ok(opened.report(keyring))
        })
        .await
    }

    pub(super) async fn create_credential(&self, rec: CredentialFields) -> Result<(), StoreError> {
        self.with(move |conn, keyring| {
            conn.execute(
                &CRED_SQL.insert,
                params_from_iter(credential_row(&rec, keyring)),
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn update_credential(
        &self,
        id: &str,
        edit: CredentialEdit,
    ) -> Result<CredentialFields, StoreError> {
        let id = id.to_owned();
        self.with(move |conn, keyring| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let row = tx
                .query_row(&CRED_SQL.select_one, [&id], read_row)
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            let (mut rec, _) = open_credential_row(row, keyring)?;
            edit(&mut rec)?;
            write(&tx, &rec, keyring)?;
            tx.commit().map_err(db)?;
            Ok(rec)
        })
        .await
    }

    pub(super) async fn delete_credential(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with(move |conn, _| {
            let n = conn
                .execute(
                    "UPDATE byok_credentials SET secret = NULL, nonce = NULL, key_id = NULL, deleted_at = ?2 \
                     WHERE id = ?1 AND deleted_at IS NULL",
                    params![id, now_rfc3339()],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    pub(super) async fn create_api_key(&self, rec: ApiKeyFields) -> Result<(), StoreError> {
        self.with(move |conn, _| {
            conn.execute(
                &format!(
                    "INSERT INTO byok_api_keys ({KEY_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                params![
                    rec.hash,
                    rec.workspace_id,
                    rec.user_id,
                    rec.name,
                    rec.disabled,
                    rec.created_at.unwrap_or_else(now_rfc3339),
                    rec.require_zdr,
                    rec.label,
                    rec.updated_at,
                    rec.expires_at,
                    rec.limit,
                    rec.limit_reset,
                    rec.include_byok_in_limit,
                    rec.external_user
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn update_api_key(
        &self,
        hash: KeyHash,
        edit: ApiKeyEdit,
    ) -> Result<ApiKeyFields, StoreError> {
        self.with(move |conn, _| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let mut rec = tx
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM byok_api_keys WHERE hash = ?1"),
                    [hash.to_hex()],
                    raw_api_key,
                )
                .optional()
                .map_err(db)?
                .ok_or(StoreError::NotFound)?;
            edit(&mut rec)?;
            tx.execute(
                "UPDATE byok_api_keys SET name = ?2, disabled = ?3, require_zdr = ?4, updated_at = ?5, \
                 expires_at = ?6, limit_usd = ?7, limit_reset = ?8, include_byok_in_limit = ?9 \
                 WHERE hash = ?1",
                params![
                    hash.to_hex(),
                    rec.name,
                    rec.disabled,
                    rec.require_zdr,
                    rec.updated_at,
                    rec.expires_at,
                    rec.limit,
                    rec.limit_reset,
                    rec.include_byok_in_limit
                ],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(rec)
        })
        .await
    }

    pub(super) async fn delete_api_key(&self, hash: KeyHash) -> Result<bool, StoreError> {
        self.with(move |conn, _| {
            let n = conn
                .execute("DELETE FROM byok_api_keys WHERE hash = ?1", [hash.to_hex()])
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    /// Adds `batch` to the usage rows, in one transaction.
    pub(super) async fn save_usage(&self, batch: Numbered) -> Result<(), StoreError> {
        let replica = self.replica.clone();
        self.with(move |conn, _| {
            let (rows, keys) = usage::rows(&batch.entries);
            let tx = conn.transaction().map_err(db)?;
            let claim = usage::claim_batch(|n| format!("?{n}"));
            let fresh = tx
                .execute(
                    &claim,
                    params![replica, usage::seq(&batch), usage::now_ms()],
                )
                .map_err(db)?;
            if fresh == 0 {
                usage::already_saved(&batch);
                return Ok(());
            }
            {
                let mut add = tx
                    .prepare_cached(&usage::add_usage(|n| format!("?{n}"), "max"))
                    .map_err(db)?;
                for r in &rows {
                    let [requests, input, output, cache_read, cache_write, estimated] = r.counts;
                    add.execute(params![
                        r.day,
                        r.workspace,
                        r.key,
                        r.credential,
                        r.tier,
                        r.provider,
                        r.model,
                        requests,
                        input,
                        output,
                        cache_read,
                        cache_write,
                        estimated,
                        r.usd,
                        r.last_used_ms
                    ])
                    .map_err(db)?;
                }
                let mut add = tx
                    .prepare_cached(&usage::add_key_day(|n| format!("?{n}"), "max"))
                    .map_err(db)?;
                for (key, day, spend, last) in &keys {
                    add.execute(params![key, day, spend.shared, spend.byok, last])
                        .map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    /// Prunes the usage rows before day `before` (each key's days rolled
    /// into one row, so its lifetime spend stays whole) and the batch
    /// numbers saved before `batches_before_ms`, in one transaction.
    pub(super) async fn prune_usage(
        &self,
        before: Day,
        batches_before_ms: i64,
    ) -> Result<(u64, u64), StoreError> {
        self.with(move |conn, _| {
            let tx = conn.transaction().map_err(db)?;
            let p = |n| format!("?{n}");
            let rows = tx.execute(&usage::prune_usage(p), [before]).map_err(db)?;
            let keys = tx
                .execute(&usage::roll_up_key_days_sqlite(), [before])
                .map_err(db)?;
            tx.execute(&usage::prune_key_days_sqlite(), [before])
                .map_err(db)?;
            tx.execute(&usage::prune_batches(p), [batches_before_ms])
                .map_err(db)?;
            tx.commit().map_err(db)?;
            let n = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            Ok((n(rows), n(keys)))
        })
        .await
    }

    /// Every key's spend from `since` on; with `all`, before it too, and
    /// the credentials' last uses.
    pub(super) async fn read_usage(&self, since: Day, all: bool) -> Result<Stored, StoreError> {
        self.with(move |conn, _| {
            let mut out = Stored::default();
            let mut stmt = conn
                .prepare_cached(&format!("{}?1", usage::RECENT))
                .map_err(db)?;
            let rows = stmt
                .query_map([since], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Day>(1)?,
                        Spend {
                            shared: r.get(2)?,
                            byok: r.get(3)?,
                        },
                        r.get::<_, i64>(4)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (key, day, spend, last) = row.map_err(db)?;
                if let Some(key) = usage::key(&key) {
                    out.days.push((key, day, spend, usage::ms(last)));
                }
            }
            if all {
                let mut stmt = conn
                    .prepare_cached(&format!("{}?1 GROUP BY key_hash", usage::BEFORE))
                    .map_err(db)?;
                let rows = stmt
                    .query_map([since], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            Spend {
                                shared: r.get(1)?,
                                byok: r.get(2)?,
                            },
                        ))
                    })
                    .map_err(db)?;
                let mut before = Vec::new();
                for row in rows {
                    let (key, spend) = row.map_err(db)?;
                    if let Some(key) = usage::key(&key) {
                        before.push((key, spend));
                    }
                }
                out.before = Some(before);
                let mut stmt = conn.prepare_cached(usage::CREDENTIALS).map_err(db)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .map_err(db)?;
                let mut creds = Vec::new();
                for row in rows {
                    let (id, last) = row.map_err(db)?;
                    creds.push((id, usage::ms(last)));
                }
                out.credentials = Some(creds);
            }
            Ok(out)
        })
        .await
    }
}

/// Every live credential row, opened; those sealed under the previous master
/// key are written back re-sealed.
fn open_all(tx: &rusqlite::Transaction<'_>, keyring: &Keyring) -> Result<Opened, StoreError> {
    let opened = Opened::rows(live_rows(tx)?, keyring)?;
    for (_, row) in &opened.resealed {
        tx.execute(&CRED_SQL.update, params_from_iter(row))
            .map_err(db)?;
    }
    Ok(opened)
}

fn live_rows(tx: &rusqlite::Transaction<'_>) -> Result<Vec<Vec<Scalar>>, StoreError> {
    let mut stmt = tx.prepare(&CRED_SQL.select_live).map_err(db)?;
    let rows = stmt.query_map([], read_row).map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// The one-time seal migration ([`seal::migrate`]): at the first start of
/// this version, the rows sealed to their id alone are re-sealed, in the
/// transaction that records it done.
fn migrate_seals(conn: &mut Connection, keyring: &Keyring) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    tx.execute_batch(seal::META_TABLE).map_err(db)?;
    let done: Option<String> = tx
        .query_row(seal::MARKER_SELECT, [], |r| r.get(0))
        .optional()
        .map_err(db)?;
    if done.is_none() {
        for row in seal::migrate(live_rows(&tx)?, keyring)? {
            tx.execute(&CRED_SQL.update, params_from_iter(row))
                .map_err(db)?;
        }
        tx.execute(seal::MARKER_INSERT, []).map_err(db)?;
    }
    tx.commit().map_err(db)
}

/// Every credential statement, with SQLite's `?N` parameters.
static CRED_SQL: LazyLock<CredentialSql> =
    LazyLock::new(|| CredentialSql::new(|n| format!("?{n}")));

/// Rewrites every column of a credential's row (the secret re-sealed).
fn write(
    tx: &rusqlite::Transaction<'_>,
    rec: &CredentialFields,
    keyring: &Keyring,
) -> Result<(), StoreError> {
    tx.execute(
        &CRED_SQL.update,
        params_from_iter(credential_row(rec, keyring)),
    )
    .map_err(db)?;
    Ok(())
}

/// A column value as SQLite binds it (a boolean as INTEGER 0 or 1).
impl rusqlite::ToSql for Scalar {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Scalar::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Scalar::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Scalar::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Scalar::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Scalar::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// A credential row's values, one per [`credential_columns`] entry.
fn read_row(row: &Row<'_>) -> rusqlite::Result<Vec<Scalar>> {
    credential_columns()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                ScalarKind::Bool => row.get::<_, Option<bool>>(i)?.map(Scalar::Bool),
                ScalarKind::Int => row.get::<_, Option<i64>>(i)?.map(Scalar::Int),
                ScalarKind::Text => row.get::<_, Option<String>>(i)?.map(Scalar::Text),
                ScalarKind::Bytes => row.get::<_, Option<Vec<u8>>>(i)?.map(Scalar::Bytes),
            }
            .unwrap_or(Scalar::Null))
        })
        .collect()
}

fn raw_api_key(row: &Row<'_>) -> rusqlite::Result<ApiKeyFields> {
    Ok(ApiKeyFields {
        hash: row.get(0)?,
        workspace_id: row.get(1)?,
        user_id: row.get(2)?,
        name: row.get(3)?,
        disabled: row.get(4)?,
        created_at: Some(row.get(5)?),
        require_zdr: row.get(6)?,
        label: row.get(7)?,
        updated_at: row.get(8)?,
        expires_at: row.get(9)?,
        limit: row.get(10)?,
        limit_reset: row.get(11)?,
        include_byok_in_limit: row.get(12)?,
        external_user: row.get(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column table is the table the migrations make: every column it
    /// names exists with its kind, and the table has no other but
    /// `deleted_at`. A field added to the spec without its migration fails here.
    #[test]
    fn the_column_table_matches_the_migrated_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let mut stmt = conn
            .prepare("SELECT name, type FROM pragma_table_info('byok_credentials') ORDER BY name")
            .unwrap();
        let table: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut want: Vec<(String, String)> = credential_columns()
            .map(|(name, kind)| {
                let sql = match kind {
                    ScalarKind::Bool | ScalarKind::Int => "INTEGER",
                    ScalarKind::Text => "TEXT",
                    ScalarKind::Bytes => "BLOB",
                };
                (name.to_owned(), sql.to_owned())
            })
            .chain([("deleted_at".to_owned(), "TEXT".to_owned())])
            .collect();
        want.sort();
        assert_eq!(table, want);
    }
}
