//! The shared store: PostgreSQL, for any number of replicas.
//!
//! Every write runs in a transaction that also `NOTIFY`s `byok_changes` with
//! the row it touched (`c:<id>` or `k:<hash>`), delivered on commit. Each
//! replica [`follow`](PgStore::follow)s that channel on a connection of its own
//! and applies each change to its registry, one row at a time. When the
//! database goes away the replica keeps serving its last snapshot, reconnects
//! with backoff, and on reconnect LISTENs first and then reloads everything,
//! so no change made in between is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::BytesMut;

use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, Mutex, MutexGuard};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::crypto::Keyring;
use super::usage::{self, Stored};
use super::{
    credential_columns, credential_row, now_rfc3339, open_credential_row, seal, ApiKeyEdit,
    ApiKeyFields, Change, Contents, CredentialEdit, CredentialFields, CredentialSql, Opened,
    Resealed, StoreError,
};
use crate::domain::{KeyHash, Scalar, ScalarKind};
use crate::ledger::{Day, Numbered, Spend};

const CHANNEL: &str = "byok_changes";

const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(735201);
CREATE TABLE IF NOT EXISTS byok_credentials (
    id TEXT PRIMARY KEY,
    workspace_id TEXT,
    provider TEXT NOT NULL,
    name TEXT,
    created_at TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    is_fallback BOOLEAN NOT NULL,
    sort_order BIGINT NOT NULL,
    allowed_api_key_hashes TEXT,
    allowed_models TEXT,
    allowed_user_ids TEXT,
    base_url TEXT,
    key_id TEXT,
    nonce BYTEA,
    secret BYTEA,
    deleted_at TEXT
);
-- Added after the first version; a database made by it is brought up to
-- date here (NULL workspace_id: a global credential).
ALTER TABLE byok_credentials ALTER COLUMN workspace_id DROP NOT NULL;
ALTER TABLE byok_credentials ADD COLUMN IF NOT EXISTS is_required BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE byok_credentials ADD COLUMN IF NOT EXISTS is_byok_only BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE byok_credentials ADD COLUMN IF NOT EXISTS declared_zdr BOOLEAN;
CREATE TABLE IF NOT EXISTS byok_api_keys (
    hash TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    disabled BOOLEAN NOT NULL,
    created_at TEXT NOT NULL
);
ALTER TABLE byok_api_keys ADD COLUMN IF NOT EXISTS require_zdr BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE byok_api_keys ADD COLUMN IF NOT EXISTS label TEXT;
ALTER TABLE byok_api_keys ADD COLUMN IF NOT EXISTS updated_at TEXT;
ALTER TABLE byok_api_keys ADD COLUMN IF NOT EXISTS expires_at TEXT;
ALTER TABLE byok_api_keys ADD COLUMN IF NOT EXISTS limit_usd DOUBLE PRECISION;
ALTER TABLE byok_api_keys ADD COLUMN IF NOT EXISTS limit_reset TEXT;
ALTER TABLE byok_api_keys ADD COLUMN IF NOT EXISTS include_byok_in_limit BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE byok_api_keys ADD COLUMN IF NOT EXISTS external_user TEXT;
COMMIT;
";

const KEY_COLUMNS: &str = "hash, workspace_id, user_id, name, disabled, created_at, require_zdr, \
    label, updated_at, expires_at, limit_usd, limit_reset, include_byok_in_limit, external_user";

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// A PostgreSQL store.
pub(crate) struct PgStore {
    url: String,
    tls: MakeRustlsConnect,
    client: Mutex<Option<Client>>,
    keyring: Arc<Keyring>,
    /// `store.statement_timeout_ms`: each statement's, on the server.
    statement_timeout: Duration,
    /// This process's id for its usage batches ([`usage::claim_batch`]).
    replica: String,
    /// An operation outlived its deadline ([`PgStore::timed`]): the query
    /// connection may be stuck, and is replaced before its next use.
    stale: AtomicBool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The connection settings for `url`, with TLS as its `sslmode` says:
/// `disable`, plain; `prefer` (the default), TLS when the server offers it;
/// `require`, TLS or nothing. Where TLS is used, the server's certificate is
/// always verified (webpki roots plus `store.ca_file`), with its host name:
/// `verify-ca` and `verify-full` are read as `require`, which here does both.
fn pg_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let url = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    // The driver's parse error never holds the URL (or its password).
    let mut config: tokio_postgres::Config = url.parse().map_err(db)?;
    if config.get_connect_timeout().is_none() {
        // A database that does not answer must not hold the store's turn
        // (Registry::ordered) for ever.
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    Ok(config)
}

/// The TLS connector for Postgres: rustls, verifying the server.
fn tls(extra_roots: &[CertificateDer<'static>]) -> Result<MakeRustlsConnect, StoreError> {
    crate::common::tls::client_tls(extra_roots)
        .map(MakeRustlsConnect::new)
        .map_err(|e| StoreError::Unavailable(Box::new(e)))
}

/// A query connection whose every statement is cancelled by the server
/// after `statement_timeout` (a lock wait included): a stuck database fails
/// a write, and the store's turn is let go.
async fn connect(
    url: &str,
    tls: &MakeRustlsConnect,
    statement_timeout: Duration,
) -> Result<Client, StoreError> {
    let (client, connection) = pg_config(url)?.connect(tls.clone()).await.map_err(db)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    client
        .batch_execute(&statement_timeout_sql(statement_timeout))
        .await
        .map_err(db)?;
    Ok(client)
}

/// Sets the session's `statement_timeout`.
fn statement_timeout_sql(timeout: Duration) -> String {
    format!("SET statement_timeout = {}", timeout.as_millis())
}

impl PgStore {
    /// Connects and creates the tables if needed.
    pub(crate) async fn open(
        url: &str,
        keyring: Keyring,
        ca_roots: &[CertificateDer<'static>],
        statement_timeout: Duration,
    ) -> Result<PgStore, StoreError> {
        if pg_config(url)?.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer {
            tracing::warn!("store.url has sslmode=prefer (the default): a man in the middle can refuse TLS and read the connection; use sslmode=require");
        }
        let tls = tls(ca_roots)?;
        let client = connect(url, &tls, statement_timeout).await?;
        // The migrations wait for each other (replicas starting together)
        // as long as they take: no turn is held yet.
        client
            .batch_execute("SET statement_timeout = 0")
            .await
            .map_err(db)?;
        client.batch_execute(SCHEMA).await.map_err(db)?;
        // Under the same lock: replicas starting together race to create.
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(735201); {} {} COMMIT;",
                usage::TABLES,
                usage::MAINTENANCE_TABLE
            ))
            .await
            .map_err(db)?;
        let mut client = client;
        migrate_seals(&mut client, &keyring).await?;
        client
            .batch_execute(&statement_timeout_sql(statement_timeout))
            .await
            .map_err(db)?;
        Ok(PgStore {
            url: url.to_owned(),
            tls,
            client: Mutex::new(Some(client)),
            keyring: Arc::new(keyring),
            statement_timeout,
            replica: super::new_uuid(),
            stale: AtomicBool::new(false),
        })
    }

    /// The query connection, reconnected if it was lost (or went stale).
    async fn client(&self) -> Result<MutexGuard<'_, Option<Client>>, StoreError> {
        let mut guard = self.client.lock().await;
        if self.stale.swap(false, Ordering::SeqCst) {
            // Dropped, it closes: the server rolls back whatever it held.
            *guard = None;
        }
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            *guard = Some(connect(&self.url, &self.tls, self.statement_timeout).await?);
        }
        Ok(guard)
    }

    /// Runs one operation within its deadline: twice the statement
    /// timeout, so that the server's cancellation (a clean error, the
    /// connection kept) normally comes first. Past it — the server or the
    /// network is not answering at all — the operation is dropped where it
    /// stands: a transaction it opened is rolled back by the driver (a
    /// `ROLLBACK` queued ahead of anything else), and the connection is
    /// replaced before its next use, so nothing waits behind a stuck one.
    pub(crate) async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.statement_timeout * 2, op).await {
            Ok(out) => out,
            Err(_) => {
                self.stale.store(true, Ordering::SeqCst);
                Err(StoreError::Unavailable(
                    format!(
                        "no answer from the database within {} ms",
                        (self.statement_timeout * 2).as_millis()
                    )
                    .into(),
                ))
            }
        }
    }

    pub(super) async fn load(&self) -> Result<Contents, StoreError> {
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        // Rotation: rows sealed under the previous master key are re-sealed.
        let credentials = open_all(&tx, &self.keyring, "").await?.credentials;
        let rows = tx
            .query(&format!("SELECT {KEY_COLUMNS} FROM byok_api_keys"), &[])
            .await
            .map_err(db)?;
        let api_keys = rows
            .iter()
            .map(raw_api_key)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(db)?;
        Ok(Contents {
            api_keys,
            credentials,
        })
    }

    /// Re-seals every credential under the current master key, in one
    /// transaction (the rows locked meanwhile).
    pub(super) async fn reseal(&self) -> Result<Resealed, StoreError> {
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        let opened = open_all(&tx, &self.keyring, " FOR UPDATE").await?;
        tx.commit().await.map_err(db)?;
        Ok(opened.report(&self.keyring))
    }

    /// One live credential, `Some(Err)` when its secret does not open, or
    /// `None` (deleted or never there).
    pub(crate) async fn credential(
        &self,
        id: &str,
    ) -> Result<Option<Result<CredentialFields, StoreError>>, StoreError> {
        let guard = self.client().await?;
        let client = guard
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))?;
        let row = client
            .query_opt(&CRED_SQL.select_one, &[&id])
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(
            match open_credential_row(read_row(&row)?, &self.keyring) {
                Ok((rec, _)) => Ok(rec),
                Err(e @ StoreError::Sealed { .. }) => Err(e),
                Err(e) => return Err(e),
            },
        ))
    }

    /// One gateway key, or `None`.
    pub(crate) async fn api_key(&self, hash: KeyHash) -> Result<Option<ApiKeyFields>, StoreError> {
        let guard = self.client().await?;
        let client = guard
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))?;
        let row = client
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM byok_api_keys WHERE hash = $1"),
                &[&hash.to_hex()],
            )
            .await
            .map_err(db)?;
        row.as_ref().map(raw_api_key).transpose()
    }

    pub(super) async fn create_credential(&self, rec: CredentialFields) -> Result<(), StoreError> {
        let row = credential_row(&rec, &self.keyring);
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        tx.execute(&CRED_SQL.insert, &params(&row))
            .await
            .map_err(db)?;
        notify(&tx, &Change::Credential(rec.id.clone())).await?;
        tx.commit().await.map_err(db)
    }

    pub(super) async fn update_credential(
        &self,
        id: &str,
        edit: CredentialEdit,
    ) -> Result<CredentialFields, StoreError> {
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        // FOR UPDATE: concurrent edits of one row, from any replica, queue here.
        let row = tx
            .query_opt(&format!("{} FOR UPDATE", CRED_SQL.select_one), &[&id])
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        let (mut rec, _) = open_credential_row(read_row(&row)?, &self.keyring)?;
        edit(&mut rec)?;
        let row = credential_row(&rec, &self.keyring);
        tx.execute(&CRED_SQL.update, &params(&row))
            .await
            .map_err(db)?;
        notify(&tx, &Change::Credential(rec.id.clone())).await?;
        tx.commit().await.map_err(db)?;
        Ok(rec)
    }

    pub(super) async fn delete_credential(&self, id: &str) -> Result<bool, StoreError> {
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        let n = tx
            .execute(
                "UPDATE byok_credentials SET secret = NULL, nonce = NULL, key_id = NULL, deleted_at = $2 \
                 WHERE id = $1 AND deleted_at IS NULL",
                &[&id, &now_rfc3339()],
            )
            .await
            .map_err(db)?;
        notify(&tx, &Change::Credential(id.to_owned())).await?;
        tx.commit().await.map_err(db)?;
        Ok(n > 0)
    }

    pub(super) async fn create_api_key(&self, rec: ApiKeyFields) -> Result<(), StoreError> {
        let hash = KeyHash::from_hex(&rec.hash)
            .ok_or_else(|| StoreError::Invalid("hash: not 64 lowercase hex chars".into()))?;
        let created_at = rec.created_at.unwrap_or_else(now_rfc3339);
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        tx.execute(
            &format!(
                "INSERT INTO byok_api_keys ({KEY_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            &[
                &rec.hash,
                &rec.workspace_id,
                &rec.user_id,
                &rec.name,
                &rec.disabled,
                &created_at,
                &rec.require_zdr,
                &rec.label,
                &rec.updated_at,
                &rec.expires_at,
                &rec.limit,
                &rec.limit_reset,
                &rec.include_byok_in_limit,
                &rec.external_user,
            ],
        )
        .await
        .map_err(db)?;
        notify(&tx, &Change::ApiKey(hash)).await?;
        tx.commit().await.map_err(db)
    }

    pub(super) async fn update_api_key(
        &self,
        hash: KeyHash,
        edit: ApiKeyEdit,
    ) -> Result<ApiKeyFields, StoreError> {
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        let row = tx
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM byok_api_keys WHERE hash = $1 FOR UPDATE"),
                &[&hash.to_hex()],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        let mut rec = raw_api_key(&row)?;
        edit(&mut rec)?;
        tx.execute(
            "UPDATE byok_api_keys SET name = $2, disabled = $3, require_zdr = $4, updated_at = $5, \
             expires_at = $6, limit_usd = $7, limit_reset = $8, include_byok_in_limit = $9 \
             WHERE hash = $1",
            &[
                &hash.to_hex(),
                &rec.name,
                &rec.disabled,
                &rec.require_zdr,
                &rec.updated_at,
                &rec.expires_at,
                &rec.limit,
                &rec.limit_reset,
                &rec.include_byok_in_limit,
            ],
        )
        .await
        .map_err(db)?;
        notify(&tx, &Change::ApiKey(hash)).await?;
        tx.commit().await.map_err(db)?;
        Ok(rec)
    }

    pub(super) async fn delete_api_key(&self, hash: KeyHash) -> Result<bool, StoreError> {
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        let n = tx
            .execute(
                "DELETE FROM byok_api_keys WHERE hash = $1",
                &[&hash.to_hex()],
            )
            .await
            .map_err(db)?;
        notify(&tx, &Change::ApiKey(hash)).await?;
        tx.commit().await.map_err(db)?;
        Ok(n > 0)
    }

    /// Tells the other replicas of a change that has no row (a credential's
    /// health), on the query connection.
    /// Adds `batch` to the usage rows in one transaction, and tells the
    /// other replicas, which read their keys' spend anew.
    pub(super) async fn save_usage(&self, batch: &Numbered) -> Result<(), StoreError> {
        let (rows, keys) = usage::rows(&batch.entries);
        let mut guard = self.client().await?;
        let tx = transaction(&mut guard).await?;
        let claim = usage::claim_batch(|n| format!("${n}"));
        let now = usage::now_ms();
        let fresh = tx
            .execute(&claim, &[&self.replica, &usage::seq(batch), &now])
            .await
            .map_err(db)?;
        if fresh == 0 {
            usage::already_saved(batch);
            return Ok(());
        }
        let add = tx
            .prepare(&usage::add_usage(|n| format!("${n}"), "GREATEST"))
            .await
            .map_err(db)?;
        for r in &rows {
            let [requests, input, output, cache_read, cache_write, estimated] = &r.counts;
            tx.execute(
                &add,
                &[
                    &r.day,
                    &r.workspace,
                    &r.key,
                    &r.credential,
                    &r.tier,
                    &r.provider,
                    &r.model,
                    requests,
                    input,
                    output,
                    cache_read,
                    cache_write,
                    estimated,
                    &r.usd,
                    &r.last_used_ms,
                ],
            )
            .await
            .map_err(db)?;
        }
        let add = tx
            .prepare(&usage::add_key_day(|n| format!("${n}"), "GREATEST"))
            .await
            .map_err(db)?;
        for (key, day, spend, last) in &keys {
            tx.execute(&add, &[key, day, &spend.shared, &spend.byok, last])
                .await
                .map_err(db)?;
        }
        notify(&tx, &Change::Usage).await?;
        tx.commit().await.map_err(db)
    }

    /// Prunes the usage rows before day `before` (each key's days rolled
    /// into one row, so its lifetime spend stays whole) and the batch
    /// numbers saved before `batches_before_ms`, unless another replica
    /// pruned since `now_ms - every`: `None` then. On a connection of its
    /// own, with a longer statement timeout: a first prune of a large table
    /// holds no other operation up.
    pub(super) async fn prune_usage(
        &self,
        before: Day,
        (now_ms, every): (i64, Duration),
        batches_before_ms: i64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let mut client = connect(&self.url, &self.tls, self.statement_timeout).await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute("SET LOCAL statement_timeout = 600000")
            .await
            .map_err(db)?;
        let since = now_ms.saturating_sub(i64::try_from(every.as_millis()).unwrap_or(i64::MAX));
        let claimed = tx
            .execute(usage::CLAIM_PRUNE, &[&now_ms, &since])
            .await
            .map_err(db)?;
        if claimed == 0 {
            return Ok(None);
        }
        let p = |n| format!("${n}");
        let rows = tx
            .execute(&usage::prune_usage(p), &[&before])
            .await
            .map_err(db)?;
        let keys = tx
            .execute(&usage::roll_up_key_days_pg(), &[&before])
            .await
            .map_err(db)?;
        tx.execute(&usage::prune_batches(p), &[&batches_before_ms])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some((rows, keys)))
    }

    /// Every key's spend from `since` on; with `all`, before it too, and
    /// the credentials' last uses.
    pub(super) async fn read_usage(&self, since: Day, all: bool) -> Result<Stored, StoreError> {
        let guard = self.client().await?;
        let client = guard
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))?;
        let get = |e: tokio_postgres::Error| StoreError::Unavailable(Box::new(e));
        let mut out = Stored::default();
        let rows = client
            .query(&format!("{}$1", usage::RECENT), &[&since])
            .await
            .map_err(db)?;
        for row in rows {
            let key: String = row.try_get(0).map_err(get)?;
            if let Some(key) = usage::key(&key) {
                let spend = Spend {
                    shared: row.try_get(2).map_err(get)?,
                    byok: row.try_get(3).map_err(get)?,
                };
                let last: i64 = row.try_get(4).map_err(get)?;
                out.days
                    .push((key, row.try_get(1).map_err(get)?, spend, usage::ms(last)));
            }
        }
        if all {
            let rows = client
                .query(&format!("{}$1 GROUP BY key_hash", usage::BEFORE), &[&since])
                .await
                .map_err(db)?;
            let mut before = Vec::new();
            for row in rows {
                let key: String = row.try_get(0).map_err(get)?;
                if let Some(key) = usage::key(&key) {
                    let spend = Spend {
                        shared: row.try_get(1).map_err(get)?,
                        byok: row.try_get(2).map_err(get)?,
                    };
                    before.push((key, spend));
                }
            }
            out.before = Some(before);
            let rows = client.query(usage::CREDENTIALS, &[]).await.map_err(db)?;
            let mut creds = Vec::new();
            for row in rows {
                let last: i64 = row.try_get(1).map_err(get)?;
                creds.push((row.try_get(0).map_err(get)?, usage::ms(last)));
            }
            out.credentials = Some(creds);
        }
        Ok(out)
    }

    pub(crate) async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        let guard = self.client().await?;
        let client = guard
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &change.payload()])
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Follows other replicas' writes forever: applies each change with
    /// `on_change`, and after every (re)connection reloads everything with
    /// `on_resync`. Reconnects with backoff (0.1 s doubling to 5 s).
    pub(crate) async fn follow<C, R, FC, FR>(&self, on_change: C, on_resync: R)
    where
        C: Fn(Change) -> FC,
        FC: std::future::Future<Output = Result<(), StoreError>>,
        R: Fn() -> FR,
        FR: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut backoff = Duration::from_millis(100);
        let mut lost = false;
        loop {
            match self.follow_once(&on_change, &on_resync, &mut lost).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    if !lost {
                        tracing::warn!(error = %e, "lost the database; serving the last snapshot and reconnecting");
                        lost = true;
                    } else {
                        tracing::debug!(error = %e, retry_in_ms = backoff.as_millis() as u64, "database still unreachable");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn follow_once<C, R, FC, FR>(
        &self,
        on_change: &C,
        on_resync: &R,
        lost: &mut bool,
    ) -> Result<(), StoreError>
    where
        C: Fn(Change) -> FC,
        FC: std::future::Future<Output = Result<(), StoreError>>,
        R: Fn() -> FR,
        FR: std::future::Future<Output = Result<(), StoreError>>,
    {
        let (client, mut connection) = pg_config(&self.url)?
            .connect(self.tls.clone())
            .await
            .map_err(db)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
        let pump = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(Some(n.payload().to_owned())).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        let _ = tx.send(None);
                        return;
                    }
                }
            }
        });
        let result = async {
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .map_err(db)?;
            // Listening first, then a full reload: nothing written meanwhile is missed.
            on_resync().await?;
            if *lost {
                tracing::info!("database back; resynchronised");
                *lost = false;
            }
            loop {
                match rx.recv().await {
                    Some(Some(payload)) => match Change::parse(&payload) {
                        Some(change) => on_change(change).await?,
                        None => tracing::warn!("ignoring a malformed change notification"),
                    },
                    Some(None) | None => {
                        return Err(StoreError::Unavailable(
                            "the notification connection closed".into(),
                        ))
                    }
                }
            }
        }
        .await;
        pump.abort();
        result
    }
}

/// Every live credential row (`lock`: `""` or `" FOR UPDATE"`), opened;
/// those sealed under the previous master key are written back re-sealed.
/// No replica is told: neither the secret nor a field changed, and a
/// notified row is a write to the replicas (it rebuilds the credential's
/// group and lifts its rest), which a rotation of 100 000 rows must not be.
/// A replica that lacks the new key finds out at its next read of the row,
/// and keeps serving what it holds ([`seal::kept_in_memory`]).
async fn open_all(
    tx: &tokio_postgres::Transaction<'_>,
    keyring: &Keyring,
    lock: &str,
) -> Result<Opened, StoreError> {
    let rows = tx
        .query(&format!("{}{lock}", CRED_SQL.select_live), &[])
        .await
        .map_err(db)?;
    let rows = rows.iter().map(read_row).collect::<Result<_, _>>()?;
    let opened = Opened::rows(rows, keyring)?;
    for (_, row) in &opened.resealed {
        tx.execute(&CRED_SQL.update, &params(row))
            .await
            .map_err(db)?;
    }
    Ok(opened)
}

/// The one-time seal migration ([`seal::migrate`]), under the schema lock
/// (replicas starting together): at the first start of this version, the
/// rows sealed to their id alone are re-sealed, in the transaction that
/// records it done. No replica is told: no secret and no field changes.
async fn migrate_seals(client: &mut Client, keyring: &Keyring) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db)?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock(735201); {};",
        seal::META_TABLE
    ))
    .await
    .map_err(db)?;
    if tx
        .query_opt(seal::MARKER_SELECT, &[])
        .await
        .map_err(db)?
        .is_none()
    {
        let rows = tx
            .query(&format!("{} FOR UPDATE", CRED_SQL.select_live), &[])
            .await
            .map_err(db)?;
        let rows = rows.iter().map(read_row).collect::<Result<_, _>>()?;
        for row in seal::migrate(rows, keyring)? {
            tx.execute(&CRED_SQL.update, &params(&row))
                .await
                .map_err(db)?;
        }
        tx.execute(seal::MARKER_INSERT, &[]).await.map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

/// Every credential statement, with Postgres's `$N` parameters.
static CRED_SQL: LazyLock<CredentialSql> =
    LazyLock::new(|| CredentialSql::new(|n| format!("${n}")));

/// A row's values as statement parameters.
fn params(row: &[Scalar]) -> Vec<&(dyn ToSql + Sync)> {
    row.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// A column value as Postgres binds it; each value checks its own type
/// against the column's.
impl ToSql for Scalar {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Every value is checked against its column, whichever way it is bound.
        self.to_sql_checked(ty, out)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Scalar::Null => Ok(IsNull::Yes),
            Scalar::Bool(b) => b.to_sql_checked(ty, out),
            Scalar::Int(i) => i.to_sql_checked(ty, out),
            Scalar::Text(s) => s.to_sql_checked(ty, out),
            Scalar::Bytes(b) => b.to_sql_checked(ty, out),
        }
    }
}

/// A credential row's values, one per [`credential_columns`] entry.
fn read_row(row: &Row) -> Result<Vec<Scalar>, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Unavailable(Box::new(e));
    credential_columns()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                ScalarKind::Bool => row
                    .try_get::<_, Option<bool>>(i)
                    .map_err(get)?
                    .map(Scalar::Bool),
                ScalarKind::Int => row
                    .try_get::<_, Option<i64>>(i)
                    .map_err(get)?
                    .map(Scalar::Int),
                ScalarKind::Text => row
                    .try_get::<_, Option<String>>(i)
                    .map_err(get)?
                    .map(Scalar::Text),
                ScalarKind::Bytes => row
                    .try_get::<_, Option<Vec<u8>>>(i)
                    .map_err(get)?
                    .map(Scalar::Bytes),
            }
            .unwrap_or(Scalar::Null))
        })
        .collect()
}

/// A transaction on the query connection held by `guard`.
async fn transaction<'a>(
    guard: &'a mut MutexGuard<'_, Option<Client>>,
) -> Result<tokio_postgres::Transaction<'a>, StoreError> {
    let client = guard
        .as_mut()
        .ok_or_else(|| StoreError::Unavailable("no connection".into()))?;
    client.transaction().await.map_err(db)
}

async fn notify(tx: &tokio_postgres::Transaction<'_>, change: &Change) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &change.payload()])
        .await
        .map_err(db)?;
    Ok(())
}

fn raw_api_key(row: &Row) -> Result<ApiKeyFields, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Unavailable(Box::new(e));
    Ok(ApiKeyFields {
        hash: row.try_get(0).map_err(get)?,
        workspace_id: row.try_get(1).map_err(get)?,
        user_id: row.try_get(2).map_err(get)?,
        name: row.try_get(3).map_err(get)?,
        disabled: row.try_get(4).map_err(get)?,
        created_at: Some(row.try_get(5).map_err(get)?),
        require_zdr: row.try_get(6).map_err(get)?,
        label: row.try_get(7).map_err(get)?,
        updated_at: row.try_get(8).map_err(get)?,
        expires_at: row.try_get(9).map_err(get)?,
        limit: row.try_get(10).map_err(get)?,
        limit_reset: row.try_get(11).map_err(get)?,
        include_byok_in_limit: row.try_get(12).map_err(get)?,
        external_user: row.try_get(13).map_err(get)?,
    })
}
