//! The endpoints of a request's models, in the order their candidates are
//! tried (SPEC §11): for each model (its `model`, then OpenRouter's
//! `models`), the catalog's endpoints (or the one its slug names) in the
//! catalog's order, those of the `provider` preferences' `order` first,
//! without those `only` and `ignore` leave out or whose provider does not
//! speak the route's format, and with `allow_fallbacks: false` only the
//! first one's provider.

use std::sync::Arc;

use smallvec::SmallVec;

use super::fields::{Asked, Prefs};
use super::wire::{wire, Wire};
use super::Format;
use crate::domain::{Catalog, Endpoint, Provider, Providers};
use crate::proxy::error::Rejection;

/// One endpoint of one model, as the attempts walk it.
#[derive(Debug)]
pub(crate) struct Planned<'a> {
    /// The index of its model in [`Asked::models`].
    pub(crate) model_index: usize,
    /// Its provider, and that provider's metrics label.
    pub(crate) provider: &'a Arc<Provider>,
    pub(crate) label: &'a Arc<str>,
    /// The provider's id of the model.
    pub(crate) model: &'a str,
    /// How the request reaches it.
    pub(crate) wire: Wire,
}

/// An endpoint as (provider slug, the provider's model id).
pub(crate) type EndpointRef<'a> = (&'a str, &'a str);

/// The endpoints of `slug`: the catalog's, else the one the slug names
/// (`{provider}/{model}`) when its author is a provider; `None` when
/// neither. Borrowed from the catalog or the slug: nothing is copied.
pub(crate) fn endpoints<'a>(
    catalog: &'a Catalog,
    providers: &Providers,
    slug: &'a str,
) -> Option<SmallVec<[EndpointRef<'a>; 4]>> {
    if let Some(model) = catalog.get(slug) {
        return Some(
            model
                .endpoints
                .iter()
                .map(|e: &'a Endpoint| (&*e.provider, &*e.model))
                .collect(),
        );
    }
    let (author, model) = slug.split_once('/')?;
    providers.entry(author)?;
    Some(SmallVec::from_elem((author, model), 1))
}

/// Every endpoint of `asked`'s models for `format`, in the order tried.
pub(crate) fn plan<'a>(
    catalog: &'a Catalog,
    providers: &'a Providers,
    asked: &'a Asked<'_>,
    format: Format,
) -> Result<Vec<Planned<'a>>, Rejection> {
    let prefs = &asked.prefs;
    let mut out = Vec::with_capacity(asked.models.len());
    // Whether any endpoint spoke the format, before the preferences.
    let mut spoken = false;
    for (model_index, slug) in asked.models.iter().enumerate() {
        let endpoints = endpoints(catalog, providers, slug)
            .ok_or_else(|| Rejection::UnknownModel(slug.to_string()))?;
        let mut these: SmallVec<[Planned<'a>; 4]> = SmallVec::new();
        for (provider, model) in endpoints {
            let Some((label, provider)) = providers.entry(provider) else {
                continue;
            };
            let Some(wire) = wire(provider, format, model, asked.stream) else {
                continue;
            };
            spoken = true;
            if !preferred(prefs, provider) {
                continue;
            }
            these.push(Planned {
                model_index,
                provider,
                label,
                model,
                wire,
            });
        }
        if !prefs.order.is_empty() {
            // Stable: the catalog's order among equals.
            these.sort_by_key(|p| rank(prefs, p.provider));
        }
        if !prefs.allow_fallbacks {
            if let Some(first) = these.first().map(|p| Arc::clone(p.label)) {
                these.retain(|p| *p.label == first);
            }
        }
        out.extend(these);
    }
    if out.is_empty() {
        let models = asked
            .models
            .iter()
            .map(|m| &**m)
            .collect::<Vec<_>>()
            .join(", ");
        let why = if spoken {
            "is left by the request's provider preferences (provider.only, provider.ignore)"
        } else {
            match format {
                Format::Messages | Format::CountTokens => {
                    "takes Anthropic's Messages format here: anthropic, amazon-bedrock and google-vertex do"
                }
                _ => "takes OpenAI's format here: see the providers marked openai_compatible",
            }
        };
        return Err(Rejection::NoCompatibleEndpoint { models, why });
    }
    Ok(out)
}

/// Whether the preferences' `only` and `ignore` let `provider` serve.
fn preferred(prefs: &Prefs, provider: &Provider) -> bool {
    let named = |list: &[String]| {
        list.iter()
            .any(|n| Prefs::names(n, &provider.slug, provider.display_name()))
    };
    prefs.only.as_deref().is_none_or(named) && !named(&prefs.ignore)
}

/// Where `provider` stands in the preferences' `order`: its place, or
/// after every provider named there.
fn rank(prefs: &Prefs, provider: &Provider) -> usize {
    prefs
        .order
        .iter()
        .position(|n| Prefs::names(n, &provider.slug, provider.display_name()))
        .unwrap_or(prefs.order.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CatalogModel;
    use std::borrow::Cow;

    fn catalog() -> Catalog {
        let e = |p: &str, m: &str| Endpoint {
            provider: Arc::from(p),
            model: Arc::from(m),
        };
        Catalog::new([
            CatalogModel {
                slug: Arc::from("anthropic/claude-sonnet-4"),
                name: None,
                context_length: None,
                endpoints: vec![
                    e("anthropic", "claude-sonnet-4-20250514"),
                    e("amazon-bedrock", "anthropic.claude-sonnet-4-20250514-v1:0"),
                    e("google-vertex", "claude-sonnet-4@20250514"),
                ],
            },
            CatalogModel {
                slug: Arc::from("openai/gpt-4o"),
                name: Some("GPT-4o".into()),
                context_length: Some(128_000),
                endpoints: vec![e("azure", "gpt-4o-prod"), e("openai", "gpt-4o")],
            },
        ])
    }

    fn planned(
        models: &[&str],
        prefs: Prefs,
        format: Format,
    ) -> Result<Vec<(usize, String, String)>, &'static str> {
        let providers = Providers::builtins();
        let asked = Asked {
            models: models.iter().map(|m| Cow::Owned(m.to_string())).collect(),
            prefs,
            stream: false,
        };
        plan(&catalog(), &providers, &asked, format)
            .map(|v| {
                v.into_iter()
                    .map(|p| (p.model_index, p.label.to_string(), p.model.to_owned()))
                    .collect()
            })
            .map_err(|r| r.reason())
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    #[test]
    fn candidate_order_across_endpoints_and_models() {
        let t = |i: usize, p: &str, m: &str| (i, p.to_string(), m.to_string());
        let claude = ["anthropic/claude-sonnet-4"];
        assert_eq!(
            planned(&claude, Prefs::default(), Format::Messages).unwrap(),
            [
                t(0, "anthropic", "claude-sonnet-4-20250514"),
                t(
                    0,
                    "amazon-bedrock",
                    "anthropic.claude-sonnet-4-20250514-v1:0"
                ),
                t(0, "google-vertex", "claude-sonnet-4@20250514"),
            ]
        );
        // On an OpenAI-format route, only Anthropic's compatible endpoint.
        assert_eq!(
            planned(&claude, Prefs::default(), Format::Chat).unwrap(),
            [t(0, "anthropic", "claude-sonnet-4-20250514")]
        );
        // Not in the catalog: the slug's own endpoint; then the models list.
        assert_eq!(
            planned(
                &[
                    "openai/gpt-4o",
                    "mistral/mistral-large",
                    "openai/gpt-4o-mini"
                ],
                Prefs::default(),
                Format::Chat
            )
            .unwrap(),
            [
                t(0, "azure", "gpt-4o-prod"),
                t(0, "openai", "gpt-4o"),
                t(1, "mistral", "mistral-large"),
                t(2, "openai", "gpt-4o-mini"),
            ]
        );
        // order first (by slug or OpenRouter's name), the rest after.
        let prefs = Prefs {
            order: strs(&["Google", "amazon-bedrock"]),
            ..Prefs::default()
        };
        assert_eq!(
            planned(&claude, prefs.clone(), Format::Messages).unwrap(),
            [
                t(0, "google-vertex", "claude-sonnet-4@20250514"),
                t(
                    0,
                    "amazon-bedrock",
                    "anthropic.claude-sonnet-4-20250514-v1:0"
                ),
                t(0, "anthropic", "claude-sonnet-4-20250514"),
            ]
        );
        // allow_fallbacks false: the first endpoint's provider alone, per model.
        let no_fallbacks = Prefs {
            allow_fallbacks: false,
            ..prefs
        };
        // A model of the list without an endpoint for the format adds none.
        assert_eq!(
            planned(
                &["anthropic/claude-sonnet-4", "openai/gpt-4o"],
                no_fallbacks.clone(),
                Format::Messages
            )
            .unwrap(),
            [t(0, "google-vertex", "claude-sonnet-4@20250514")]
        );
        assert_eq!(
            planned(&claude, no_fallbacks, Format::Messages).unwrap(),
            [t(0, "google-vertex", "claude-sonnet-4@20250514")]
        );
        // only and ignore.
        let only = Prefs {
            only: Some(strs(&["anthropic", "AMAZON BEDROCK"])),
            ignore: strs(&["anthropic"]),
            ..Prefs::default()
        };
        assert_eq!(
            planned(&claude, only, Format::Messages).unwrap(),
            [t(
                0,
                "amazon-bedrock",
                "anthropic.claude-sonnet-4-20250514-v1:0"
            )]
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            planned(&["meta-llama/llama-3"], Prefs::default(), Format::Chat),
            Err("unknown_model")
        );
        assert_eq!(
            planned(
                &["openai/gpt-4o", "nobody/x"],
                Prefs::default(),
                Format::Chat
            ),
            Err("unknown_model"),
            "every model of the list is known"
        );
        assert_eq!(
            planned(&["openai/gpt-4o"], Prefs::default(), Format::Messages),
            Err("no_compatible_endpoint")
        );
        let ignore_all = Prefs {
            ignore: strs(&["azure", "openai"]),
            ..Prefs::default()
        };
        assert_eq!(
            planned(&["openai/gpt-4o"], ignore_all, Format::Chat),
            Err("no_compatible_endpoint")
        );
    }
}
