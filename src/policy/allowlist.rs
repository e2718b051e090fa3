//! A credential's three allowlists, compiled once into hash sets so that
//! checking a candidate costs a few lookups and never allocates.

use foldhash::HashSet;

use super::{Ask, RefusedBy};
use crate::domain::{Credential, KeyHash};

/// The first allowlist that refused a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `allowed_api_key_hashes`.
    ApiKeyHash,
    /// `allowed_models`.
    Model,
    /// `allowed_user_ids`.
    UserId,
}

/// A credential's three allowlists, compiled; `None` is "no restriction".
#[derive(Debug, Clone, Default)]
pub(crate) struct Allowlists {
    key_hashes: Option<HashSet<KeyHash>>,
    models: Option<ModelMatcher>,
    users: Option<HashSet<Box<str>>>,
    /// The models the key itself can serve, when not every one (an Azure
    /// key array of deployment entries alone): a list like `models`.
    served: Option<ModelMatcher>,
    /// Whether the upstream serves the other models a body names
    /// (OpenRouter's `models`, `fallbacks`): then they must be admitted too.
    reads_model_lists: bool,
}

impl Allowlists {
    /// Compiles a credential's lists. Hash entries must already be validated;
    /// an unparsable one admits nothing.
    pub(crate) fn compile(cred: &Credential) -> Self {
        Allowlists {
            key_hashes: cred
                .allowed_api_key_hashes
                .as_ref()
                .map(|list| list.iter().filter_map(|h| KeyHash::from_hex(h)).collect()),
            models: cred
                .allowed_models
                .as_ref()
                .map(|list| ModelMatcher::compile(&cred.provider, list)),
            users: cred
                .allowed_user_ids
                .as_ref()
                .map(|list| list.iter().map(|u| Box::from(u.as_str())).collect()),
            served: None,
            reads_model_lists: false,
        }
    }

    /// The lists, for a key that serves only the models `served` admits.
    pub(crate) fn serving_only(mut self, served: Option<ModelMatcher>) -> Self {
        self.served = served;
        self
    }

    /// The lists, for an upstream that serves the other models a body names.
    pub(crate) fn reading_model_lists(mut self, reads: bool) -> Self {
        self.reads_model_lists = reads;
        self
    }

    /// Whether all three lists admit the request; otherwise the first that refused.
    pub(crate) fn check(&self, ask: &Ask<'_>) -> Result<(), Refusal> {
        if let Some(set) = &self.key_hashes {
            if !ask.key_hash.is_some_and(|h| set.contains(h)) {
                return Err(Refusal::ApiKeyHash);
            }
        }
        if !self.models_ok(ask) {
            return Err(Refusal::Model);
        }
        if let Some(users) = &self.users {
            if !users.contains(ask.user_id) {
                return Err(Refusal::UserId);
            }
        }
        Ok(())
    }

    /// Whether `allowed_models` admits the request's model (`null` admits
    /// every model, a known one or not).
    pub(crate) fn models_admit(&self, ask: &Ask<'_>) -> bool {
        [&self.models, &self.served]
            .into_iter()
            .all(|list| list.as_ref().is_none_or(|m| m.admits_asked(ask)))
    }

    /// Whether `allowed_models`, and the models the key serves, admit the
    /// request's models.
    fn models_ok(&self, ask: &Ask<'_>) -> bool {
        [&self.models, &self.served].into_iter().all(|list| {
            list.as_ref()
                .is_none_or(|m| m.admits_all(ask, self.reads_model_lists))
        })
    }

    /// Every list that refuses, for the denial message.
    pub(super) fn refusals(&self, ask: &Ask<'_>, into: &mut RefusedBy) {
        let key_ok = self
            .key_hashes
            .as_ref()
            .is_none_or(|set| ask.key_hash.is_some_and(|h| set.contains(h)));
        let model_ok = self.models_ok(ask);
        let user_ok = self
            .users
            .as_ref()
            .is_none_or(|set| set.contains(ask.user_id));
        into.api_key_hashes += u32::from(!key_ok);
        into.models += u32::from(!model_ok);
        into.user_ids += u32::from(!user_ok);
    }
}

/// `allowed_models`, compiled for one provider.
///
/// An entry matches when it equals the canonical slug `{provider}/{model}` or the
/// bare model id, byte for byte. An entry ending in `/*` matches every model whose
/// canonical slug or bare id starts with what precedes the `*` (so `openai/*`
/// admits every model of `openai` and never `openaiz/…`). Both forms are folded
/// at compile time into "the model equals / starts with", so matching is a set
/// lookup and a short prefix scan.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelMatcher {
    exact: HashSet<Box<str>>,
    prefixes: Vec<Box<str>>,
    any: bool,
}

impl ModelMatcher {
    pub(crate) fn compile(provider: &str, entries: &[String]) -> Self {
        let mut m = ModelMatcher::default();
        let own = |entry: &str| -> Option<String> {
            entry
                .strip_prefix(provider)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_owned)
        };
        for entry in entries {
            match entry.strip_suffix('*').filter(|p| p.ends_with('/')) {
                Some(prefix) => {
                    m.prefixes.push(prefix.into());
                    match own(prefix) {
                        Some(rest) if rest.is_empty() => m.any = true,
                        Some(rest) => m.prefixes.push(rest.into()),
                        None => {}
                    }
                }
                None => {
                    m.exact.insert(entry.as_str().into());
                    if let Some(rest) = own(entry) {
                        m.exact.insert(rest.into());
                    }
                }
            }
        }
        m
    }

    pub(crate) fn admits(&self, model: &str) -> bool {
        if router_choice(model) {
            // The router picks the model: only an entry naming it admits it.
            return self.exact.contains(model);
        }
        self.any
            || self.exact.contains(model)
            || self.prefixes.iter().any(|p| model.starts_with(&**p))
    }

    /// Whether the request's model is admitted, by the provider's id or by
    /// the OpenRouter slug the request named it with (SPEC §11).
    fn admits_asked(&self, ask: &Ask<'_>) -> bool {
        ask.model.is_some_and(|m| self.admits(m)) || ask.slug.is_some_and(|s| self.admits(s))
    }

    /// Whether the request's model, and (where the upstream reads them)
    /// every other model it names, are admitted; a request without a model
    /// is not.
    fn admits_all(&self, ask: &Ask<'_>, lists: bool) -> bool {
        self.admits_asked(ask)
            && (!lists || (!ask.lists_unreadable && ask.also.iter().all(|m| self.admits(m))))
    }
}

/// A model id that lets the upstream choose the model: OpenRouter's
/// `openrouter/auto` and its presets (`@preset/…`).
fn router_choice(model: &str) -> bool {
    model == "openrouter/auto" || model.starts_with('@') || model.contains("@preset/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{cred, strs};

    #[test]
    fn model_entries_table() {
        // (provider, entries, model, admitted)
        let cases: &[(&str, &[&str], &str, bool)] = &[
            ("openai", &["openai/gpt-4o"], "gpt-4o", true),
            ("openai", &["gpt-4o"], "gpt-4o", true),
            ("openai", &["openai/gpt-4o"], "openai/gpt-4o", true),
            ("openai", &["gpt-4o"], "openai/gpt-4o", false),
            ("openai", &["openai/gpt-4o"], "gpt-4o-mini", false),
            ("openai", &["openai/gpt-4o"], "GPT-4o", false),
            ("openai", &["openai/gpt-4o"], " gpt-4o", false),
            ("openai", &["openai/gpt-4o"], "gpt-4o ", false),
            ("openai", &["openai/gpt-4*"], "gpt-4o", false),
            ("openai", &["openai/*"], "gpt-4o", true),
            ("openai", &["openai/*"], "anything/at/all", true),
            ("openaiz", &["openai/*"], "gpt-4o", false),
            ("openai", &["openaiz/*"], "gpt-4o", false),
            (
                "openrouter",
                &["openrouter/anthropic/*"],
                "anthropic/claude-3",
                true,
            ),
            (
                "openrouter",
                &["openrouter/anthropic/*"],
                "anthropicz/claude-3",
                false,
            ),
            ("openrouter", &["anthropic/*"], "anthropic/claude-3", true),
            ("openrouter", &["anthropic/*"], "openai/gpt-4o", false),
            ("openrouter", &["openai/gpt-4o"], "openai/gpt-4o", true),
            ("openai", &["*"], "gpt-4o", false),
            ("openai", &["*"], "*", true),
            ("openai", &[], "gpt-4o", false),
            ("openai", &["a", "b", "openai/gpt-4o"], "gpt-4o", true),
            // the router's own choice: only an entry that names it
            ("openrouter", &["openrouter/*"], "openrouter/auto", false),
            ("openrouter", &["openrouter/*"], "@preset/cheap", false),
            ("openrouter", &["openrouter/auto"], "openrouter/auto", true),
            ("openrouter", &["@preset/cheap"], "@preset/cheap", true),
            (
                "openrouter",
                &["openrouter/@preset/cheap"],
                "@preset/cheap",
                true,
            ),
            (
                "google-ai-studio",
                &["google-ai-studio/gemini-1.5-pro"],
                "gemini-1.5-pro",
                true,
            ),
        ];
        for (provider, entries, model, want) in cases {
            let list: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
            let m = ModelMatcher::compile(provider, &list);
            assert_eq!(m.admits(model), *want, "{provider} {entries:?} {model}");
        }
    }

    #[test]
    fn allowlists_table() {
        let k1 = KeyHash::of(b"k1");
        let k2 = KeyHash::of(b"k2");
        let ask =
            |key: Option<&'static KeyHash>, user: &'static str, model: Option<&'static str>| Ask {
                key_hash: key,
                user_id: user,
                model,
                slug: None,
                also: &[],
                lists_unreadable: false,
                require_zdr: false,
            };
        let k1s: &'static KeyHash = Box::leak(Box::new(k1));
        let k2s: &'static KeyHash = Box::leak(Box::new(k2));
        let mut open = cred("open");
        open.allowed_models = None;
        let mut restricted = cred("r");
        restricted.allowed_api_key_hashes = strs(&[&k1.to_hex()]);
        restricted.allowed_models = strs(&["openai/gpt-4o"]);
        restricted.allowed_user_ids = strs(&["u1"]);
        let mut empty = cred("e");
        empty.allowed_api_key_hashes = Some(vec![]);

        let cases: Vec<(&Credential, Ask<'_>, Result<(), Refusal>)> = vec![
            (&open, ask(Some(k1s), "anyone", None), Ok(())),
            (&open, ask(None, "anyone", Some("x")), Ok(())),
            (&restricted, ask(Some(k1s), "u1", Some("gpt-4o")), Ok(())),
            (
                &restricted,
                ask(Some(k2s), "u1", Some("gpt-4o")),
                Err(Refusal::ApiKeyHash),
            ),
            (
                &restricted,
                ask(None, "u1", Some("gpt-4o")),
                Err(Refusal::ApiKeyHash),
            ),
            (
                &restricted,
                ask(Some(k1s), "u1", Some("gpt-4")),
                Err(Refusal::Model),
            ),
            (&restricted, ask(Some(k1s), "u1", None), Err(Refusal::Model)),
            (
                &restricted,
                ask(Some(k1s), "u2", Some("gpt-4o")),
                Err(Refusal::UserId),
            ),
            (
                &restricted,
                ask(Some(k1s), "U1", Some("gpt-4o")),
                Err(Refusal::UserId),
            ),
            (&empty, ask(Some(k1s), "u1", None), Err(Refusal::ApiKeyHash)),
        ];
        for (c, a, want) in cases {
            assert_eq!(Allowlists::compile(c).check(&a), want, "{} {a:?}", c.id);
        }
    }
}
