//! OpenRouter's shapes of this proxy's records, shared by the admin API
//! (SPEC §7) and the one endpoint's `GET /api/v1/key` (§11).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::domain::{ApiKey, LimitReset};
use crate::ledger::{self, Ledger};

/// Milliseconds since the Unix epoch as RFC 3339 (to the second).
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A gateway key on the wire, in OpenRouter's API-key shape (SPEC §2, §8)
/// with this proxy's `user_id`, `require_zdr` and `last_used_at` beside:
/// never the key, only its hash and its masked label. Spend is USD, as of
/// this replica's view (the last flush, and its own responses since).
pub(crate) fn key_json(k: &ApiKey, ledger: &Ledger) -> serde_json::Value {
    let today = ledger::day_of_ms(ledger::now_ms());
    let (usage, limit_remaining) = ledger.key_usage(k, today);
    let hash = k.hash.to_hex();
    // A key made without a user is its own (its hash): no creator.
    let creator = (*k.user_id != *hash).then_some(&*k.user_id);
    serde_json::json!({
        "hash": hash,
        "label": k.label,
        "name": k.name.as_deref().unwrap_or(""),
        "workspace_id": &*k.workspace_id,
        "user_id": &*k.user_id,
        "creator_user_id": creator,
        "external_user": k.external_user,
        "disabled": k.disabled,
        "created_at": k.created_at.as_deref().unwrap_or(""),
        "updated_at": k.updated_at,
        "expires_at": k.expires_at,
        "require_zdr": k.require_zdr,
        "limit": k.limit,
        "limit_remaining": limit_remaining,
        "limit_reset": k.limit_reset.map(LimitReset::as_str),
        "include_byok_in_limit": k.include_byok_in_limit,
        "usage": usage.total.shared,
        "usage_daily": usage.daily.shared,
        "usage_weekly": usage.weekly.shared,
        "usage_monthly": usage.monthly.shared,
        "byok_usage": usage.total.byok,
        "byok_usage_daily": usage.daily.byok,
        "byok_usage_weekly": usage.weekly.byok,
        "byok_usage_monthly": usage.monthly.byok,
        "last_used_at": ledger.key_last_used_ms(&k.hash).map(rfc3339_ms),
    })
}
