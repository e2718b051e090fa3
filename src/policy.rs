//! The pure decision: which credentials may serve a request, in which order.
//!
//! Nothing here does I/O. Allowlists are compiled once, when a snapshot is built
//! ([`Allowlists::compile`]), into hash sets, so that checking a candidate costs a
//! few hash lookups and never allocates. Candidates are stored pre-sorted by
//! [`order`]; [`admitted`] filters them lazily and [`deny`] explains a refusal.

use foldhash::HashSet;
use std::cmp::Ordering;

use crate::cache::{Candidate, Credential};
use crate::error::{RefusedBy, Rejection};
use crate::key::KeyHash;

/// What a request asks for, as far as the allowlists are concerned.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The gateway key's hash; `None` when an embedding application supplied the
    /// principal without a key (then hash allowlists admit nothing).
    pub key_hash: Option<&'a KeyHash>,
    /// The user the key belongs to.
    pub user_id: &'a str,
    /// The model, when it could be determined; `None` admits only credentials
    /// with `allowed_models = null`.
    pub model: Option<&'a str>,
}

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
        }
    }

    /// Whether all three lists admit the request; otherwise the first that refused.
    pub(crate) fn check(&self, ask: &Ask<'_>) -> Result<(), Refusal> {
        if let Some(set) = &self.key_hashes {
            if !ask.key_hash.is_some_and(|h| set.contains(h)) {
                return Err(Refusal::ApiKeyHash);
            }
        }
        if let Some(models) = &self.models {
            if !ask.model.is_some_and(|m| models.admits(m)) {
                return Err(Refusal::Model);
            }
        }
        if let Some(users) = &self.users {
            if !users.contains(ask.user_id) {
                return Err(Refusal::UserId);
            }
        }
        Ok(())
    }

    /// Every list that refuses, for the denial message.
    fn refusals(&self, ask: &Ask<'_>, into: &mut RefusedBy) {
        let key_ok = self
            .key_hashes
            .as_ref()
            .is_none_or(|set| ask.key_hash.is_some_and(|h| set.contains(h)));
        let model_ok = self
            .models
            .as_ref()
            .is_none_or(|m| ask.model.is_some_and(|model| m.admits(model)));
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
        self.any
            || self.exact.contains(model)
            || self.prefixes.iter().any(|p| model.starts_with(&**p))
    }
}

/// The one order of candidates: non-fallback before fallback; then `sort_order`,
/// `created_at`, `id` ascending.
pub(crate) fn order(a: &Credential, b: &Credential) -> Ordering {
    (a.is_fallback, a.sort_order, a.created_at_nanos, &a.id).cmp(&(
        b.is_fallback,
        b.sort_order,
        b.created_at_nanos,
        &b.id,
    ))
}

/// The candidates that admit `ask`, in order, lazily.
pub(crate) fn admitted<'c>(
    group: &'c [Candidate],
    ask: &'c Ask<'c>,
) -> impl Iterator<Item = &'c Candidate> + 'c {
    group
        .iter()
        .filter(move |c| c.allowlists.check(ask).is_ok())
}

/// The rejection for a request no candidate admitted.
pub(crate) fn deny(provider: &str, group: &[Candidate], ask: &Ask<'_>) -> Rejection {
    if group.is_empty() {
        return Rejection::NoCredential {
            provider: provider.to_owned(),
        };
    }
    let mut refused = RefusedBy::default();
    for c in group {
        c.allowlists.refusals(ask, &mut refused);
    }
    Rejection::NoEligibleCredential {
        provider: provider.to_owned(),
        model: ask.model.map(str::to_owned),
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Credential;

    fn cred(id: &str) -> Credential {
        Credential::for_tests(id, "ws", "openai")
    }

    fn strs(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

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

    #[test]
    fn order_is_fallback_then_sort_order_then_created_then_id() {
        let mut a = cred("a");
        let mut b = cred("b");
        let mut c = cred("c");
        let mut d = cred("d");
        let mut e = cred("e");
        a.is_fallback = true;
        a.sort_order = -5;
        b.sort_order = 2;
        c.sort_order = 1;
        c.created_at_nanos = 20;
        d.sort_order = 1;
        d.created_at_nanos = 10;
        e.sort_order = 1;
        e.created_at_nanos = 10;
        let mut v = [&a, &b, &c, &d, &e];
        for _ in 0..3 {
            v.sort_by(|x, y| order(x, y));
            let ids: Vec<&str> = v.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, ["d", "e", "c", "b", "a"]);
            v.reverse();
        }
    }

    #[test]
    fn denial_counts_every_refusing_list() {
        let k1 = KeyHash::of(b"k1");
        let mut r1 = cred("r1");
        r1.allowed_models = strs(&["openai/gpt-4o"]);
        r1.allowed_user_ids = strs(&["u9"]);
        let mut r2 = cred("r2");
        r2.allowed_api_key_hashes = strs(&[&KeyHash::of(b"other").to_hex()]);
        let group = vec![Candidate::for_tests(r1), Candidate::for_tests(r2)];
        let ask = Ask {
            key_hash: Some(&k1),
            user_id: "u1",
            model: Some("o1"),
        };
        assert_eq!(admitted(&group, &ask).count(), 0);
        match deny("openai", &group, &ask) {
            Rejection::NoEligibleCredential { refused, model, .. } => {
                assert_eq!(model.as_deref(), Some("o1"));
                assert_eq!(
                    refused,
                    RefusedBy {
                        api_key_hashes: 1,
                        models: 1,
                        user_ids: 1
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(deny("openai", &[], &ask).reason(), "no_credential");
    }
}
