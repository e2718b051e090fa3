//! `GET /api/v1/models` and `GET /api/v1/key` on the proxy listener
//! (SPEC §11): what the calling gateway key may use, and its own record, in
//! OpenRouter's shapes — so that `@openrouter/sdk`'s `models.list` and
//! `apiKeys.getCurrentKeyMetadata` parse them. The model list is a
//! superset that OpenAI's and Anthropic's SDKs parse as their own lists too
//! (`object`, `owned_by`; `type`, `display_name`, `created_at`).

use std::collections::BTreeSet;

use bytes::Bytes;

use super::legs;
use crate::clock::Clock;
use crate::config::Price;
use crate::domain::ApiKey;
use crate::policy::{self, Ask};
use crate::registry::{Principal, Snapshot};

/// When every listed model was "created": the catalog has no dates, and
/// SDKs want one (2025-01-01T00:00:00Z).
const CREATED: i64 = 1_735_689_600;

/// The models `principal` may use: every slug the gateway knows (its
/// catalog's and its price table's) one of whose endpoints has a
/// credential that admits the principal for it.
pub(crate) fn models(snapshot: &Snapshot, principal: &Principal) -> Bytes {
    let catalog = snapshot.catalog();
    let mut slugs: BTreeSet<&str> = catalog.models().map(|m| &*m.slug).collect();
    slugs.extend(snapshot.price_slugs());
    let clock = Clock::default();
    let data: Vec<serde_json::Value> = slugs
        .into_iter()
        .filter(|slug| usable(snapshot, principal, slug, &clock))
        .map(|slug| {
            let listed = catalog.get(slug);
            let name = listed.and_then(|m| m.name.as_deref()).unwrap_or(slug);
            let context = listed.and_then(|m| m.context_length);
            let price = snapshot.price_of_slug(slug).map(|(_, p)| *p);
            model_json(slug, name, context, price)
        })
        .collect();
    let first = data
        .first()
        .and_then(|m| m["id"].as_str())
        .map(str::to_owned);
    let last = data
        .last()
        .and_then(|m| m["id"].as_str())
        .map(str::to_owned);
    let body = serde_json::json!({
        "total_count": data.len(),
        "links": { "next": null },
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": first,
        "last_id": last,
    });
    Bytes::from(body.to_string())
}

/// Whether some endpoint of `slug` has a candidate that admits `principal`.
fn usable(snapshot: &Snapshot, principal: &Principal, slug: &str, clock: &Clock) -> bool {
    let Some(endpoints) = legs::endpoints(snapshot.catalog(), snapshot.providers(), slug) else {
        return false;
    };
    endpoints.iter().any(|(provider, model)| {
        let plan = snapshot.plan(&principal.workspace_id, provider);
        let ask = Ask {
            key_hash: principal.key_hash.as_ref(),
            user_id: &principal.user_id,
            model: Some(model),
            slug: Some(slug),
            also: &[],
            lists_unreadable: false,
            require_zdr: principal.require_zdr,
        };
        policy::admitted(&plan, &ask, clock).next().is_some()
    })
}

/// One model in OpenRouter's shape, with OpenAI's and Anthropic's fields.
fn model_json(
    slug: &str,
    name: &str,
    context: Option<u64>,
    price: Option<Price>,
) -> serde_json::Value {
    let author = slug.split_once('/').map_or(slug, |(a, _)| a);
    // OpenRouter's prices are USD per token, as decimal strings.
    let per_token = |per_million: f64| format!("{}", per_million / 1e6);
    let price = price.unwrap_or_default();
    serde_json::json!({
        "id": slug,
        "canonical_slug": slug,
        "hugging_face_id": null,
        "name": name,
        "created": CREATED,
        "description": "",
        "context_length": context,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": null,
        },
        "pricing": {
            "prompt": per_token(price.input),
            "completion": per_token(price.output),
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
            "input_cache_read": per_token(price.cache_read),
            "input_cache_write": per_token(price.cache_write),
        },
        "top_provider": {
            "context_length": context,
            "max_completion_tokens": null,
            "is_moderated": false,
        },
        "per_request_limits": null,
        "supported_parameters": [],
        "supported_voices": null,
        "default_parameters": null,
        "expiration_date": null,
        "knowledge_cutoff": null,
        "links": { "details": format!("/api/v1/models/{slug}/endpoints") },
        // OpenAI's model object.
        "object": "model",
        "owned_by": author,
        // Anthropic's.
        "type": "model",
        "display_name": name,
        "created_at": "2025-01-01T00:00:00Z",
    })
}

/// The calling key's record, as OpenRouter's `GET /api/v1/key` answers
/// (`{"data": {…}}`, every field its SDK requires), with the fields the
/// admin API shows beside. This proxy has no free tier, no organisations
/// and no rate limits of OpenRouter's kind: those fields say so.
pub(crate) fn key(snapshot: &Snapshot, key: &ApiKey) -> Bytes {
    let mut data = crate::common::openrouter::key_json(key, snapshot.ledger());
    if let Some(object) = data.as_object_mut() {
        for (field, value) in [
            ("is_free_tier", false.into()),
            ("is_provisioning_key", false.into()),
            ("is_management_key", false.into()),
            ("organization_id", serde_json::Value::Null),
            ("allowed_data_regions", serde_json::json!(["global"])),
            (
                "free_model_daily_requests",
                serde_json::json!({"limit": 0, "remaining": 0, "used": 0}),
            ),
            (
                "rate_limit",
                serde_json::json!({
                    "requests": -1,
                    "interval": "10s",
                    "note": "byok-proxy sets no request rate limit on gateway keys",
                }),
            ),
        ] {
            object.insert(field.into(), value);
        }
    }
    Bytes::from(serde_json::json!({ "data": data }).to_string())
}
