//! One endpoint: OpenRouter's inference API (SPEC §11) on the proxy
//! listener, beside the per-provider routes of §4:
//!
//! - `POST /api/v1/chat/completions`, `/api/v1/embeddings`,
//!   `/api/v1/responses` (OpenAI's formats) and `/api/v1/messages`
//!   (Anthropic's; `/api/v1/messages/count_tokens` too), dispatched by the
//!   model's slug to the providers that speak that format;
//! - `GET /api/v1/models` and `GET /api/v1/key` ([`listing`]).
//!
//! A request names a model by OpenRouter's slug (`anthropic/claude-sonnet-4`),
//! and maybe more in OpenRouter's `models` list, with OpenRouter's `provider`
//! preferences ([`fields`]). Each model has endpoints — the catalog's, or the
//! one its slug names ([`legs`]) — and each endpoint is a *leg* of the
//! request: one provider's candidates (SPEC §5) for one model id, with the
//! path and body edits that provider's API takes ([`wire`]). The attempts
//! walk the legs in order (`attempt`), failing over across all of them; the
//! answer is shaped on its way out ([`wire::Reply`]).

pub(crate) mod edit;
pub(crate) mod fields;
pub(crate) mod legs;
pub(crate) mod listing;
pub(crate) mod wire;

use bytes::Bytes;
use http::HeaderMap;
use smallvec::SmallVec;

use super::attempt::{Forward, OneLeg};
use super::error::Rejection;
use crate::domain::Dialect;

/// The `anthropic-beta` request header: on Bedrock, the body's
/// `anthropic_beta` list instead.
pub(crate) const ANTHROPIC_BETA: http::HeaderName = http::HeaderName::from_static("anthropic-beta");

/// The body `req`'s leg sends: the client's, with `model` set to the
/// endpoint's id (or taken out where the path names it), OpenRouter's
/// members taken out, and what the provider's wire adds — every other byte
/// as the client sent it.
pub(crate) fn leg_body(
    req: &Forward<'_>,
    one: &OneLeg<'_>,
    headers: &HeaderMap,
) -> Result<Bytes, Rejection> {
    let wire = one.wire;
    let model = req.model.unwrap_or_default();
    let model_json = edit::json_string(model);
    let betas = if wire.beta_in_body {
        beta_list(headers)
    } else {
        None
    };
    let mut set: SmallVec<[(&str, &[u8]); 3]> = SmallVec::new();
    let mut remove: SmallVec<[&str; 12]> = wire.remove.iter().copied().collect();
    if wire.body_model {
        set.push(("model", &model_json));
    } else {
        remove.push("model");
    }
    if let Some((key, value)) = wire.set {
        set.push((key, value));
    }
    if let Some(betas) = &betas {
        set.push(("anthropic_beta", betas));
    }
    edit::edit(req.body, one.members, &set, &remove)
        .ok_or(Rejection::InvalidBody("the body must be a JSON object"))
}

/// The `anthropic-beta` header's values as a JSON list, when there are any.
fn beta_list(headers: &HeaderMap) -> Option<Vec<u8>> {
    let betas: Vec<&str> = headers
        .get_all(ANTHROPIC_BETA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    (!betas.is_empty()).then(|| serde_json::to_vec(&betas).unwrap_or_default())
}

/// The request formats of the one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenAI's chat completions.
    Chat,
    /// OpenAI's embeddings.
    Embeddings,
    /// OpenAI's Responses.
    Responses,
    /// Anthropic's Messages.
    Messages,
    /// Anthropic's token count of a Messages request.
    CountTokens,
}

impl Format {
    /// The error shape of the route's SDKs (SPEC §6, §11).
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            Format::Messages | Format::CountTokens => Dialect::Anthropic,
            Format::Chat | Format::Embeddings | Format::Responses => Dialect::OpenAi,
        }
    }

    /// The author of a model named without one (`claude-sonnet-4` on the
    /// Messages route, as Claude Code names its models).
    pub(crate) fn default_author(self) -> &'static str {
        match self {
            Format::Messages | Format::CountTokens => "anthropic",
            Format::Chat | Format::Embeddings | Format::Responses => "openai",
        }
    }
}

/// A route of the one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// An inference request in this format (POST).
    Infer(Format),
    /// `GET /api/v1/models`.
    Models,
    /// `GET /api/v1/key`.
    Key,
}

impl Route {
    /// The error shape on this route: Anthropic's on Messages, else OpenAI's.
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            Route::Infer(f) => f.dialect(),
            Route::Models | Route::Key => Dialect::OpenAi,
        }
    }
}

/// The one endpoint's route of `path` (as sent, byte for byte) and
/// `method`: `None` when `path` is not under `/api/`; a 404 for any other
/// path or method under it.
pub(crate) fn route(method: &http::Method, path: &str) -> Option<Result<Route, Rejection>> {
    let rest = path.strip_prefix("/api/")?;
    let route = match rest {
        "v1/chat/completions" => Route::Infer(Format::Chat),
        "v1/embeddings" => Route::Infer(Format::Embeddings),
        "v1/responses" => Route::Infer(Format::Responses),
        "v1/messages" => Route::Infer(Format::Messages),
        "v1/messages/count_tokens" => Route::Infer(Format::CountTokens),
        "v1/models" => Route::Models,
        "v1/key" => Route::Key,
        _ => return Some(Err(Rejection::NotFound)),
    };
    let wanted = match route {
        Route::Infer(_) => http::Method::POST,
        Route::Models | Route::Key => http::Method::GET,
    };
    Some(if *method == wanted {
        Ok(route)
    } else {
        Err(Rejection::NotFound)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes_table() {
        type Case<'a> = (Method, &'a str, Option<Result<Route, &'a str>>);
        let cases: &[Case<'_>] = &[
            (
                Method::POST,
                "/api/v1/chat/completions",
                Some(Ok(Route::Infer(Format::Chat))),
            ),
            (
                Method::POST,
                "/api/v1/embeddings",
                Some(Ok(Route::Infer(Format::Embeddings))),
            ),
            (
                Method::POST,
                "/api/v1/responses",
                Some(Ok(Route::Infer(Format::Responses))),
            ),
            (
                Method::POST,
                "/api/v1/messages",
                Some(Ok(Route::Infer(Format::Messages))),
            ),
            (
                Method::POST,
                "/api/v1/messages/count_tokens",
                Some(Ok(Route::Infer(Format::CountTokens))),
            ),
            (Method::GET, "/api/v1/models", Some(Ok(Route::Models))),
            (Method::GET, "/api/v1/key", Some(Ok(Route::Key))),
            (
                Method::GET,
                "/api/v1/chat/completions",
                Some(Err("not_found")),
            ),
            (Method::POST, "/api/v1/models", Some(Err("not_found"))),
            (
                Method::POST,
                "/api/v1/chat/completions/",
                Some(Err("not_found")),
            ),
            (
                Method::POST,
                "/api/v1//chat/completions",
                Some(Err("not_found")),
            ),
            (
                Method::POST,
                "/api/v1/%63hat/completions",
                Some(Err("not_found")),
            ),
            (
                Method::POST,
                "/api/v2/chat/completions",
                Some(Err("not_found")),
            ),
            (Method::POST, "/api/", Some(Err("not_found"))),
            (Method::POST, "/api", None),
            (Method::POST, "/openai/v1/chat/completions", None),
            (Method::POST, "/apis/v1/chat/completions", None),
        ];
        for (method, path, want) in cases {
            let got = route(method, path).map(|r| r.map_err(|e| e.reason()));
            assert_eq!(got, *want, "{method} {path}");
        }
    }
}
