//! Usage in the databases (SPEC §8): one row per UTC day, workspace,
//! gateway key, credential, tier, provider and model, added to by each
//! replica's flush; and one per key and day, the spend a limit reads.
//! SQLite and Postgres share the tables and the statements (but for their
//! placeholders and the name of `max`).

use crate::domain::KeyHash;
use crate::ledger::{Batch, Day, Numbered, Spend};
use crate::policy::Tier;

/// The tables, for both databases (`BIGINT` and `DOUBLE PRECISION` are
/// SQLite type names too).
pub(super) const TABLES: &str = "
CREATE TABLE IF NOT EXISTS byok_usage (
    day INTEGER NOT NULL,
    workspace_id TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    estimated BIGINT NOT NULL,
    usd DOUBLE PRECISION NOT NULL,
    last_used_ms BIGINT NOT NULL,
    PRIMARY KEY (day, key_hash, credential_id, tier, model, workspace_id, provider)
);
CREATE TABLE IF NOT EXISTS byok_usage_keys (
    key_hash TEXT NOT NULL,
    day INTEGER NOT NULL,
    shared_usd DOUBLE PRECISION NOT NULL,
    byok_usd DOUBLE PRECISION NOT NULL,
    last_used_ms BIGINT NOT NULL,
    PRIMARY KEY (key_hash, day)
);
CREATE INDEX IF NOT EXISTS byok_usage_keys_day ON byok_usage_keys (day);
CREATE TABLE IF NOT EXISTS byok_usage_batches (
    replica TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    saved_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS byok_usage_credential ON byok_usage (credential_id, last_used_ms);
";

/// Adds one entry's sums to its row: `p(n)` writes placeholder `n`,
/// `max` is the database's two-argument maximum.
pub(super) fn add_usage(p: fn(usize) -> String, max: &str) -> String {
    let v: Vec<String> = (1..=15).map(p).collect();
    format!(
        "INSERT INTO byok_usage (day, workspace_id, key_hash, credential_id, tier, provider, model, \
         requests, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, estimated, usd, \
         last_used_ms) VALUES ({}) \
         ON CONFLICT (day, key_hash, credential_id, tier, model, workspace_id, provider) DO UPDATE SET \
         requests = byok_usage.requests + excluded.requests, \
         input_tokens = byok_usage.input_tokens + excluded.input_tokens, \
         output_tokens = byok_usage.output_tokens + excluded.output_tokens, \
         cache_read_tokens = byok_usage.cache_read_tokens + excluded.cache_read_tokens, \
         cache_write_tokens = byok_usage.cache_write_tokens + excluded.cache_write_tokens, \
         estimated = byok_usage.estimated + excluded.estimated, \
         usd = byok_usage.usd + excluded.usd, \
         last_used_ms = {max}(byok_usage.last_used_ms, excluded.last_used_ms)",
        v.join(", ")
    )
}

/// Adds one key's spend of one day to its row.
pub(super) fn add_key_day(p: fn(usize) -> String, max: &str) -> String {
    format!(
        "INSERT INTO byok_usage_keys (key_hash, day, shared_usd, byok_usd, last_used_ms) \
         VALUES ({}, {}, {}, {}, {}) ON CONFLICT (key_hash, day) DO UPDATE SET \
         shared_usd = byok_usage_keys.shared_usd + excluded.shared_usd, \
         byok_usd = byok_usage_keys.byok_usd + excluded.byok_usd, \
         last_used_ms = {max}(byok_usage_keys.last_used_ms, excluded.last_used_ms)",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5)
    )
}

/// Notes that this process (`replica`, a fresh id each start) saved its
/// batch `seq`, in the save's own transaction. Its batches are saved one
/// at a time, in order, and one is tried again until it is saved: a
/// number at or below the one held is a batch already saved (a retry after
/// an acknowledgement was lost), and the statement changes no row.
pub(super) fn claim_batch(p: fn(usize) -> String) -> String {
    format!(
        "INSERT INTO byok_usage_batches (replica, seq, saved_ms) VALUES ({}, {}, {}) \
         ON CONFLICT (replica) DO UPDATE SET seq = excluded.seq, saved_ms = excluded.saved_ms \
         WHERE byok_usage_batches.seq < excluded.seq",
        p(1),
        p(2),
        p(3)
    )
}

/// The number of a batch as its column holds it.
pub(super) fn seq(batch: &Numbered) -> i64 {
    int(batch.seq)
}

/// Logs a batch that was saved already: it is not counted again.
pub(super) fn already_saved(batch: &Numbered) {
    tracing::info!(
        batch = batch.seq,
        "usage batch already saved (its acknowledgement was lost); not counted again"
    );
}

/// Postgres only: when a replica last pruned, so that one prunes a period.
pub(super) const MAINTENANCE_TABLE: &str = "
CREATE TABLE IF NOT EXISTS byok_maintenance (
    job TEXT PRIMARY KEY,
    last_ms BIGINT NOT NULL
);
";

/// Postgres: takes the pruning of this period (`$1` now, `$2` now less the
/// period), or changes no row when another replica pruned within it. The
/// row stays locked until the prune commits: a replica that tries at the
/// same time waits, then finds it taken.
pub(super) const CLAIM_PRUNE: &str = "INSERT INTO byok_maintenance (job, last_ms) \
    VALUES ('prune_usage', $1) ON CONFLICT (job) DO UPDATE SET last_ms = excluded.last_ms \
    WHERE byok_maintenance.last_ms <= $2";

/// The day a pruned key's days are rolled into (1970-01-01, before any
/// real one): what a lifetime limit and the key's `usage` read stays whole.
const ROLLED_UP: &str = "0";

/// Deletes the usage rows before a day (the first parameter).
pub(super) fn prune_usage(p: fn(usize) -> String) -> String {
    format!("DELETE FROM byok_usage WHERE day < {}", p(1))
}

/// Forgets the batch numbers of processes that saved none since a time
/// (the first parameter, in milliseconds).
pub(super) fn prune_batches(p: fn(usize) -> String) -> String {
    format!("DELETE FROM byok_usage_batches WHERE saved_ms < {}", p(1))
}

/// The upsert that adds a key's pruned days to its rolled-up row.
fn roll_up_into(select: &str, max: &str) -> String {
    format!(
        "INSERT INTO byok_usage_keys (key_hash, day, shared_usd, byok_usd, last_used_ms) \
         SELECT key_hash, {ROLLED_UP}, SUM(shared_usd), SUM(byok_usd), MAX(last_used_ms) {select} \
         GROUP BY key_hash ON CONFLICT (key_hash, day) DO UPDATE SET \
         shared_usd = byok_usage_keys.shared_usd + excluded.shared_usd, \
         byok_usd = byok_usage_keys.byok_usd + excluded.byok_usd, \
         last_used_ms = {max}(byok_usage_keys.last_used_ms, excluded.last_used_ms)"
    )
}

/// SQLite: rolls each key's days before `?1` into its rolled-up row; then
/// [`prune_key_days_sqlite`] deletes them (one transaction, one writer).
pub(super) fn roll_up_key_days_sqlite() -> String {
    roll_up_into(
        &format!("FROM byok_usage_keys WHERE day < ?1 AND day <> {ROLLED_UP}"),
        "max",
    )
}

/// SQLite: deletes the key days [`roll_up_key_days_sqlite`] rolled up.
pub(super) fn prune_key_days_sqlite() -> String {
    format!("DELETE FROM byok_usage_keys WHERE day < ?1 AND day <> {ROLLED_UP}")
}

/// Postgres: deletes each key's days before `$1` and adds them to its
/// rolled-up row in one statement, so a row committed meanwhile is never
/// deleted without being added.
pub(super) fn roll_up_key_days_pg() -> String {
    format!(
        "WITH gone AS (DELETE FROM byok_usage_keys WHERE day < $1 AND day <> {ROLLED_UP} \
         RETURNING key_hash, shared_usd, byok_usd, last_used_ms) {}",
        roll_up_into("FROM gone", "GREATEST")
    )
}

/// Every key's days from a day on.
pub(super) const RECENT: &str =
    "SELECT key_hash, day, shared_usd, byok_usd, last_used_ms FROM byok_usage_keys WHERE day >= ";
/// Every key's total before a day.
pub(super) const BEFORE: &str = "SELECT key_hash, SUM(shared_usd), SUM(byok_usd) \
    FROM byok_usage_keys WHERE day < ";
/// Each credential's last use.
pub(super) const CREDENTIALS: &str =
    "SELECT credential_id, MAX(last_used_ms) FROM byok_usage GROUP BY credential_id";

/// One entry of a batch as the columns of its `byok_usage` row.
pub(super) struct Row<'a> {
    pub(super) day: Day,
    pub(super) workspace: &'a str,
    pub(super) key: String,
    pub(super) credential: &'a str,
    pub(super) tier: &'static str,
    pub(super) provider: &'a str,
    pub(super) model: &'a str,
    /// requests, input, output, cache read, cache write, estimated.
    pub(super) counts: [i64; 6],
    pub(super) usd: f64,
    pub(super) last_used_ms: i64,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One key's spend of one day in a batch: hash, day, spend, last use.
pub(super) type KeyDay = (String, Day, Spend, i64);

/// The rows of `batch`, and its spend by key and day.
pub(super) fn rows(batch: &Batch) -> (Vec<Row<'_>>, Vec<KeyDay>) {
    let mut keys: std::collections::BTreeMap<(String, Day), (Spend, i64)> = Default::default();
    let mut rows: Vec<Row<'_>> = batch
        .iter()
        .map(|(e, s)| {
            let key = e.key.map(|k| k.to_hex()).unwrap_or_default();
            if !key.is_empty() {
                let (spend, last) = keys.entry((key.clone(), e.day)).or_default();
                match e.tier {
                    Tier::Shared => spend.shared += s.usd,
                    Tier::Byok => spend.byok += s.usd,
                }
                *last = (*last).max(int(s.last_used_ms));
            }
            Row {
                day: e.day,
                workspace: &e.workspace,
                key,
                credential: &e.credential,
                tier: e.tier.as_str(),
                provider: &e.provider,
                model: &e.model,
                counts: [
                    int(s.requests),
                    int(s.input),
                    int(s.output),
                    int(s.cache_read),
                    int(s.cache_write),
                    int(s.estimated),
                ],
                usd: s.usd,
                last_used_ms: int(s.last_used_ms),
            }
        })
        .collect();
    // In one order on every replica: two saves touching the same rows take
    // their row locks in the same order, and never deadlock.
    rows.sort_unstable_by(|a, b| {
        (
            a.day,
            &a.key,
            a.credential,
            a.tier,
            a.model,
            a.workspace,
            a.provider,
        )
            .cmp(&(
                b.day,
                &b.key,
                b.credential,
                b.tier,
                b.model,
                b.workspace,
                b.provider,
            ))
    });
    let keys = keys
        .into_iter()
        .map(|((k, day), (spend, last))| (k, day, spend, last))
        .collect();
    (rows, keys)
}

/// What a refresh reads back.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// Each key's recent days, with their last use.
    pub(crate) days: Vec<(KeyHash, Day, Spend, u64)>,
    /// Each key's total before them, when asked for.
    pub(crate) before: Option<Vec<(KeyHash, Spend)>>,
    /// Each credential's last use, when asked for.
    pub(crate) credentials: Option<Vec<(String, u64)>>,
}

/// A key hash column; `None` for the rows of keyless principals.
pub(super) fn key(text: &str) -> Option<KeyHash> {
    KeyHash::from_hex(text)
}

/// Now, as a millisecond column.
pub(super) fn now_ms() -> i64 {
    int(crate::ledger::now_ms())
}

/// A millisecond column.
pub(super) fn ms(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
