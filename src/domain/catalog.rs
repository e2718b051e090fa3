//! The model catalog (SPEC §11): OpenRouter's model slugs, each mapped to
//! the endpoints that serve it — a (provider, provider's model id) pair
//! each, in the default order of preference. `[models."slug"]` in the
//! config; a slug the catalog does not name has one endpoint, read from
//! the slug itself (`{provider}/{model}`).

use std::sync::Arc;

use foldhash::HashMap;

/// One provider's id for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The provider's slug.
    pub provider: Arc<str>,
    /// The model id that provider's API takes.
    pub model: Arc<str>,
}

/// A model of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogModel {
    /// Its slug, `{author}/{model}`.
    pub slug: Arc<str>,
    /// A name for people (`GET /api/v1/models`); the slug when unset.
    pub name: Option<String>,
    /// Its context window in tokens, when the operator gave it.
    pub context_length: Option<u64>,
    /// Where it is served, in the default order of preference.
    pub endpoints: Vec<Endpoint>,
}

/// The catalog: slug → model.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: HashMap<Arc<str>, Arc<CatalogModel>>,
}

impl Catalog {
    /// A catalog of `models` (the config's validation has checked them).
    pub fn new(models: impl IntoIterator<Item = CatalogModel>) -> Self {
        Catalog {
            models: models
                .into_iter()
                .map(|m| (Arc::clone(&m.slug), Arc::new(m)))
                .collect(),
        }
    }

    /// The model of `slug`, when the catalog names it.
    pub fn get(&self, slug: &str) -> Option<&Arc<CatalogModel>> {
        self.models.get(slug)
    }

    /// Every model, by slug.
    pub fn models(&self) -> impl Iterator<Item = &Arc<CatalogModel>> {
        self.models.values()
    }

    /// How many models it names.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether it names none.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// Whether `slug` reads as OpenRouter's `{author}/{model}`: both parts
/// non-empty, printable ASCII without spaces or quotes.
pub(crate) fn valid_model_slug(slug: &str) -> bool {
    let Some((author, model)) = slug.split_once('/') else {
        return false;
    };
    !author.is_empty()
        && !model.is_empty()
        && slug.len() <= 256
        && slug
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for good in [
            "anthropic/claude-sonnet-4",
            "openai/gpt-4o",
            "meta-llama/llama-3.1-8b-instruct:free",
            "openrouter/anthropic/claude-3",
        ] {
            assert!(valid_model_slug(good), "{good}");
        }
        for bad in [
            "", "gpt-4o", "/gpt-4o", "openai/", "a/b c", "a/\"b", "a/b\n",
        ] {
            assert!(!valid_model_slug(bad), "{bad:?}");
        }
    }
}
