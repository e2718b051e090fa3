//! The pure decision: which credentials may serve a request, in which order.
//!
//! Nothing here does I/O, nor knows about HTTP requests. A credential is
//! compiled once, when the registry takes it in ([`compile`]), into a
//! [`Candidate`]: allowlists as hash sets, auth header pre-built. Groups are
//! stored pre-sorted by [`order`]; [`admitted`] filters them lazily and
//! [`deny`] explains a refusal as a [`Denial`].

mod allowlist;
mod candidate;

use std::cmp::Ordering;
use std::fmt;

pub(crate) use allowlist::Allowlists;
pub use candidate::CompileError;
pub(crate) use candidate::{compile, group, Candidate};

use crate::domain::{Credential, KeyHash};

/// Which allowlists refused, counted over the credentials that were considered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedBy {
    /// Credentials whose `allowed_api_key_hashes` did not admit the key.
    pub api_key_hashes: u32,
    /// Credentials whose `allowed_models` did not admit the model.
    pub models: u32,
    /// Credentials whose `allowed_user_ids` did not admit the user.
    pub user_ids: u32,
}

impl fmt::Display for RefusedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (n, list) in [
            (self.api_key_hashes, "allowed_api_key_hashes"),
            (self.models, "allowed_models"),
            (self.user_ids, "allowed_user_ids"),
        ] {
            if n > 0 {
                let plural = if n == 1 { "" } else { "s" };
                write!(f, "{sep}{list} of {n} credential{plural}")?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

/// Why no candidate serves a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The workspace has no enabled credential for the provider.
    NoCredential,
    /// It has some, but none admits the request; which allowlists refused.
    NoEligibleCredential(RefusedBy),
}

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
    /// The other models the request names (OpenRouter's `models` and
    /// `fallbacks` lists): a credential's `allowed_models` must admit every
    /// one of them too.
    pub also: &'a [String],
    /// The body has such lists but they do not read as lists of models: a
    /// credential whose upstream serves them admits nothing.
    pub lists_unreadable: bool,
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

/// Why no candidate of `group` admitted `ask`.
pub(crate) fn deny(group: &[Candidate], ask: &Ask<'_>) -> Denial {
    if group.is_empty() {
        return Denial::NoCredential;
    }
    let mut refused = RefusedBy::default();
    for c in group {
        c.allowlists.refusals(ask, &mut refused);
    }
    Denial::NoEligibleCredential(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn cred(id: &str) -> Credential {
        Credential::for_tests(id, "ws", "openai")
    }

    pub(super) fn strs(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
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
            also: &[],
            lists_unreadable: false,
        };
        assert_eq!(admitted(&group, &ask).count(), 0);
        assert_eq!(
            deny(&group, &ask),
            Denial::NoEligibleCredential(RefusedBy {
                api_key_hashes: 1,
                models: 1,
                user_ids: 1
            })
        );
        assert_eq!(deny(&[], &ask), Denial::NoCredential);
    }
}
