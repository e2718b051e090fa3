//! The pure decision: which credentials may serve a request, in which order.
//!
//! Nothing here does I/O, waits, or knows about HTTP: it reads candidates
//! through [`Gated`] (a record, its allowlists compiled to hash sets, its
//! ZDR declaration, its [`health`] state machine) and takes the time as an
//! argument ([`Clock`]). The registry compiles each credential once into
//! such a candidate and keeps groups pre-sorted by [`order`]. A request's
//! [`Plan`] holds its workspace's group and, where it may use it, the shared
//! tier's; [`admitted`] walks them lazily in tier order and [`deny`]
//! explains a refusal as a [`Denial`].

mod allowlist;
pub(crate) mod health;

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

pub(crate) use allowlist::{Allowlists, ModelMatcher};
use health::Health;

use crate::clock::Clock;
use crate::domain::{Credential, KeyHash};

/// What the policy reads of a candidate: its record, its compiled
/// allowlists, whether it retains no data, and its health. The registry's
/// compiled credentials are one; the tests' are another.
pub(crate) trait Gated {
    /// The credential's record.
    fn credential(&self) -> &Credential;
    /// Its allowlists, compiled.
    fn allowlists(&self) -> &Allowlists;
    /// Declared zero-data-retention (its own declaration, else its provider's).
    fn zdr(&self) -> bool;
    /// Its health.
    fn health(&self) -> &Health;
}

/// Which allowlists refused, counted over the credentials that were considered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedBy {
    /// Credentials whose `allowed_api_key_hashes` did not admit the key.
    pub api_key_hashes: u32,
    /// Credentials whose `allowed_models` did not admit the model.
    pub models: u32,
    /// Credentials whose `allowed_user_ids` did not admit the user.
    pub user_ids: u32,
    /// Credentials not declared zero-data-retention, for a key that
    /// requires it.
    pub zdr: u32,
}

impl RefusedBy {
    /// Adds `other`'s counts to these.
    pub(crate) fn add(&mut self, other: &RefusedBy) {
        self.api_key_hashes += other.api_key_hashes;
        self.models += other.models;
        self.user_ids += other.user_ids;
        self.zdr += other.zdr;
    }
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
        if self.zdr > 0 {
            let n = self.zdr;
            let (plural, verb) = if n == 1 { ("", "is") } else { ("s", "are") };
            write!(
                f,
                "{sep}zero data retention: the key requires it and {n} credential{plural} {verb} not declared ZDR"
            )?;
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
    /// The OpenRouter slug the request named the model by, on the one
    /// endpoint (SPEC §11): an allowlist entry naming the slug admits the
    /// request as one naming the provider's id does.
    pub slug: Option<&'a str>,
    /// The other models the request names (OpenRouter's `models` and
    /// `fallbacks` lists): a credential's `allowed_models` must admit every
    /// one of them too.
    pub also: &'a [String],
    /// The body has such lists but they do not read as lists of models: a
    /// credential whose upstream serves them admits nothing.
    pub lists_unreadable: bool,
    /// The gateway key requires zero data retention: only credentials
    /// declared ZDR (or of a ZDR provider) may serve it.
    pub require_zdr: bool,
}

/// The tier a candidate comes from (SPEC §5), sent in `x-byok-tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The workspace's own credentials and the global ones, fallback or not.
    Byok,
    /// The operator's shared tier (`[shared]`).
    Shared,
}

impl Tier {
    /// `byok` or `shared`: the header value, log field and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Byok => "byok",
            Tier::Shared => "shared",
        }
    }
}

/// What may serve one workspace's requests to one provider: its BYOK group
/// (its own credentials and the global ones, non-fallback first), and the
/// shared tier's group where the workspace may use it.
#[derive(Debug, Clone)]
pub(crate) struct Plan<C> {
    pub(crate) byok: Option<Arc<[C]>>,
    pub(crate) shared: Option<Arc<[C]>>,
}

impl<C> Default for Plan<C> {
    fn default() -> Self {
        Plan {
            byok: None,
            shared: None,
        }
    }
}

impl<C: Gated> Plan<C> {
    fn byok(&self) -> &[C] {
        self.byok.as_deref().unwrap_or(&[])
    }

    /// The shared tier's group, unless `ask` finds it closed (SPEC §5).
    fn open_shared(&self, ask: &Ask<'_>) -> &[C] {
        match self.shared.as_deref() {
            Some(shared) if !shared.is_empty() && !shared_closed(self.byok(), ask) => shared,
            _ => &[],
        }
    }
}

/// Whether `c` may serve `ask`: its allowlists admit it, and it is ZDR
/// where the key requires that.
fn admits(c: &impl Gated, ask: &Ask<'_>) -> bool {
    c.allowlists().check(ask).is_ok() && (!ask.require_zdr || c.zdr())
}

/// Whether the BYOK group closes the shared tier to `ask` (SPEC §5): an
/// enabled credential, fallback or not, with `is_byok_only`, or with
/// `is_required` and an `allowed_models` admitting the model. Their other
/// allowlists play no part.
fn shared_closed<C: Gated>(byok: &[C], ask: &Ask<'_>) -> bool {
    byok.iter().any(|c| {
        let cred = c.credential();
        cred.is_byok_only || (cred.is_required && c.allowlists().models_admit(ask))
    })
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

/// The candidates that may serve `ask`, in tier order, lazily: the BYOK
/// non-fallback ones, the shared tier unless closed, the BYOK fallback ones;
/// within each tier the healthy ones first, then those resting (cooling
/// down or quarantined), never dropped (SPEC §5, §10). Which ones rest is
/// read once, when the request begins: each candidate comes once, whatever
/// its attempts (or other requests) make of its health meanwhile. `clock` is
/// read only when some candidate has rested.
pub(crate) fn admitted<'c, C: Gated>(
    plan: &'c Plan<C>,
    ask: &'c Ask<'c>,
    clock: &'c Clock,
) -> Admitted<'c, C> {
    let byok = plan.byok();
    // Pre-sorted: the fallback ones come last.
    let split = byok.partition_point(|c| !c.credential().is_fallback);
    let (first, fallback) = byok.split_at(split);
    Admitted {
        tiers: [
            TierOrder::new(Tier::Byok, first, ask, clock),
            TierOrder::new(Tier::Shared, plan.open_shared(ask), ask, clock),
            TierOrder::new(Tier::Byok, fallback, ask, clock),
        ],
        at: 0,
    }
}

/// [`admitted`]'s candidates: its three tiers, one after the other.
pub(crate) struct Admitted<'c, C> {
    tiers: [TierOrder<'c, C>; 3],
    at: usize,
}

impl<'c, C: Gated> Admitted<'c, C> {
    /// The admitted candidates that were resting when the request began
    /// (for the access log), as the order read them.
    pub(crate) fn resting(&self) -> impl Iterator<Item = &'c C> + '_ {
        self.tiers.iter().flat_map(|t| {
            t.list
                .iter()
                .enumerate()
                .filter(move |(i, c)| t.resting.get(*i) && admits(*c, t.ask))
                .map(|(_, c)| c)
        })
    }
}

impl<'c, C: Gated> Iterator for Admitted<'c, C> {
    type Item = (Tier, &'c C);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(tier) = self.tiers.get_mut(self.at) {
            if let Some(next) = tier.next() {
                return Some(next);
            }
            self.at += 1;
        }
        None
    }
}

/// One tier's admitted candidates: the healthy ones, then the resting ones,
/// each in the group's order.
struct TierOrder<'c, C> {
    tier: Tier,
    list: &'c [C],
    ask: &'c Ask<'c>,
    resting: Resting,
    /// 0: the healthy pass, 1: the resting pass.
    pass: u8,
    next: usize,
}

impl<'c, C: Gated> TierOrder<'c, C> {
    fn new(tier: Tier, list: &'c [C], ask: &'c Ask<'c>, clock: &Clock) -> Self {
        TierOrder {
            tier,
            list,
            ask,
            resting: Resting::of(list, clock),
            pass: 0,
            next: 0,
        }
    }
}

impl<'c, C: Gated> Iterator for TierOrder<'c, C> {
    type Item = (Tier, &'c C);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next == self.list.len() {
                if self.pass == 1 || self.resting.none() {
                    return None;
                }
                self.pass = 1;
                self.next = 0;
            }
            let i = self.next;
            self.next += 1;
            let c = &self.list[i];
            if self.resting.get(i) == (self.pass == 1) && admits(c, self.ask) {
                return Some((self.tier, c));
            }
        }
    }
}

/// Which candidates of a list rested when the request began.
enum Resting {
    /// Bit `i` for candidate `i` (lists of up to 64: no allocation).
    Bits(u64),
    /// Longer lists.
    Many(Vec<bool>),
}

impl Resting {
    fn of<C: Gated>(list: &[C], clock: &Clock) -> Self {
        if list.len() <= 64 {
            let mut bits = 0u64;
            for (i, c) in list.iter().enumerate() {
                bits |= u64::from(c.health().resting(clock)) << i;
            }
            Resting::Bits(bits)
        } else {
            Resting::Many(list.iter().map(|c| c.health().resting(clock)).collect())
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Resting::Bits(bits) => bits >> i & 1 == 1,
            Resting::Many(v) => v[i],
        }
    }

    fn none(&self) -> bool {
        match self {
            Resting::Bits(bits) => *bits == 0,
            Resting::Many(v) => !v.contains(&true),
        }
    }
}

/// Why no candidate of `plan` admitted `ask`: no credential at all (none of
/// the workspace's, none global, and no open shared tier), or which
/// allowlists refused.
pub(crate) fn deny<C: Gated>(plan: &Plan<C>, ask: &Ask<'_>) -> Denial {
    let shared = plan.open_shared(ask);
    if plan.byok().is_empty() && shared.is_empty() {
        return Denial::NoCredential;
    }
    let mut refused = RefusedBy::default();
    for c in plan.byok().iter().chain(shared) {
        c.allowlists().refusals(ask, &mut refused);
        refused.zdr += u32::from(ask.require_zdr && !c.zdr());
    }
    Denial::NoEligibleCredential(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A candidate as the policy reads it, without the registry's
    /// compilation (upstream, auth headers).
    #[derive(Debug)]
    struct Fixed {
        record: Arc<Credential>,
        allowlists: Allowlists,
        zdr: bool,
        health: Health,
    }

    impl Fixed {
        fn new(cred: Credential) -> Self {
            Fixed {
                allowlists: Allowlists::compile(&cred),
                zdr: cred.declared_zdr.unwrap_or(false),
                health: Health::default(),
                record: Arc::new(cred),
            }
        }
    }

    impl Gated for Fixed {
        fn credential(&self) -> &Credential {
            &self.record
        }
        fn allowlists(&self) -> &Allowlists {
            &self.allowlists
        }
        fn zdr(&self) -> bool {
            self.zdr
        }
        fn health(&self) -> &Health {
            &self.health
        }
    }

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
        let plan = Plan {
            byok: Some(Arc::from(vec![Fixed::new(r1), Fixed::new(r2)])),
            shared: None,
        };
        let ask = Ask {
            key_hash: Some(&k1),
            user_id: "u1",
            model: Some("o1"),
            slug: None,
            also: &[],
            lists_unreadable: false,
            require_zdr: false,
        };
        assert_eq!(admitted(&plan, &ask, &Clock::default()).count(), 0);
        assert_eq!(
            deny(&plan, &ask),
            Denial::NoEligibleCredential(RefusedBy {
                api_key_hashes: 1,
                models: 1,
                user_ids: 1,
                zdr: 0,
            })
        );
        assert_eq!(deny(&Plan::<Fixed>::default(), &ask), Denial::NoCredential);
    }

    /// One row of the tier table: the BYOK group's and the shared tier's
    /// credentials (any order; disabled ones are dropped as the registry
    /// drops them), the model, and the order of `(tier, id)` admitted.
    struct Row {
        name: &'static str,
        byok: Vec<Credential>,
        shared: Option<Vec<Credential>>,
        model: &'static str,
        require_zdr: bool,
        want: &'static [(&'static str, &'static str)],
    }

    fn with(id: &str, edit: impl FnOnce(&mut Credential)) -> Credential {
        let mut c = cred(id);
        edit(&mut c);
        c
    }

    /// A group as the registry keeps it: enabled credentials, in order.
    fn list(creds: Vec<Credential>) -> Arc<[Fixed]> {
        let mut list: Vec<Fixed> = creds
            .into_iter()
            .filter(|c| !c.disabled)
            .map(Fixed::new)
            .collect();
        list.sort_by(|a, b| order(&a.record, &b.record));
        Arc::from(list)
    }

    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    #[test]
    fn tiers_table() {
        let key = KeyHash::of(b"key");
        let other_key = KeyHash::of(b"other").to_hex();
        let fallback = |id| with(id, |c| c.is_fallback = true);
        let shared = || Some(vec![cred("s")]);
        let rows = vec![
            Row {
                name: "byok, then shared, then fallback",
                byok: vec![fallback("f"), cred("a")],
                shared: shared(),
                model: "gpt-4o",
                require_zdr: false,
                want: &[("byok", "a"), ("shared", "s"), ("byok", "f")],
            },
            Row {
                name: "no shared tier for the workspace",
                byok: vec![cred("a"), fallback("f")],
                shared: None,
                model: "gpt-4o",
                require_zdr: false,
                want: &[("byok", "a"), ("byok", "f")],
            },
            // OpenRouter's example: A allows gpt-4o and is required, B has
            // no filter.
            Row {
                name: "required A: gpt-4o tries A then B, never shared",
                byok: vec![
                    with("A", |c| {
                        c.is_required = true;
                        c.allowed_models = strs(&["openai/gpt-4o"]);
                    }),
                    with("B", |c| c.sort_order = 1),
                ],
                shared: shared(),
                model: "gpt-4o",
                require_zdr: false,
                want: &[("byok", "A"), ("byok", "B")],
            },
            Row {
                name: "required A: another model tries B, then shared",
                byok: vec![
                    with("A", |c| {
                        c.is_required = true;
                        c.allowed_models = strs(&["openai/gpt-4o"]);
                    }),
                    with("B", |c| c.sort_order = 1),
                ],
                shared: shared(),
                model: "gpt-4o-mini",
                require_zdr: false,
                want: &[("byok", "B"), ("shared", "s")],
            },
            Row {
                name: "required with null models closes shared for every model",
                byok: vec![with("r", |c| c.is_required = true)],
                shared: shared(),
                model: "anything",
                require_zdr: false,
                want: &[("byok", "r")],
            },
            Row {
                name: "a required fallback closes shared too",
                byok: vec![
                    cred("a"),
                    with("f", |c| {
                        c.is_fallback = true;
                        c.is_required = true;
                    }),
                ],
                shared: shared(),
                model: "gpt-4o",
                require_zdr: false,
                want: &[("byok", "a"), ("byok", "f")],
            },
            Row {
                name: "required closes shared even where its other lists refuse",
                byok: vec![with("r", |c| {
                    c.is_required = true;
                    c.allowed_api_key_hashes = Some(vec![other_key.clone()]);
                })],
                shared: shared(),
                model: "gpt-4o",
                require_zdr: false,
                want: &[],
            },
            Row {
                name: "byok_only closes shared for the provider",
                byok: vec![
                    with("o", |c| {
                        c.is_byok_only = true;
                        c.allowed_models = strs(&["openai/o1"]);
                    }),
                    fallback("f"),
                ],
                shared: shared(),
                model: "gpt-4o",
                require_zdr: false,
                want: &[("byok", "f")],
            },
            Row {
                name: "a disabled credential constrains nothing",
                byok: vec![
                    with("off", |c| {
                        c.disabled = true;
                        c.is_byok_only = true;
                    }),
                    with("off2", |c| {
                        c.disabled = true;
                        c.is_required = true;
                    }),
                ],
                shared: shared(),
                model: "gpt-4o",
                require_zdr: false,
                want: &[("shared", "s")],
            },
            Row {
                name: "shared credentials keep their own allowlists",
                byok: vec![fallback("f")],
                shared: Some(vec![
                    with("s-mini", |c| c.allowed_models = strs(&["gpt-4o-mini"])),
                    with("s-any", |c| c.sort_order = 1),
                ]),
                model: "gpt-4o",
                require_zdr: false,
                want: &[("shared", "s-any"), ("byok", "f")],
            },
            Row {
                name: "require_zdr keeps only ZDR credentials, in every tier",
                byok: vec![
                    cred("a"),
                    with("z", |c| c.declared_zdr = Some(true)),
                    with("fz", |c| {
                        c.is_fallback = true;
                        c.declared_zdr = Some(true);
                    }),
                ],
                shared: Some(vec![cred("s"), with("sz", |c| c.declared_zdr = Some(true))]),
                model: "gpt-4o",
                require_zdr: true,
                want: &[("byok", "z"), ("shared", "sz"), ("byok", "fz")],
            },
            Row {
                name: "ZDR declared false is not ZDR",
                byok: vec![with("n", |c| c.declared_zdr = Some(false))],
                shared: None,
                model: "gpt-4o",
                require_zdr: true,
                want: &[],
            },
        ];
        for row in rows {
            let plan = Plan {
                byok: Some(list(row.byok)),
                shared: row.shared.map(list),
            };
            let ask = Ask {
                key_hash: Some(&key),
                user_id: "u",
                model: Some(row.model),
                slug: None,
                also: &[],
                lists_unreadable: false,
                require_zdr: row.require_zdr,
            };
            let clock = Clock::default();
            let got: Vec<(&str, &str)> = admitted(&plan, &ask, &clock)
                .map(|(tier, c)| (tier.as_str(), c.record.id.as_str()))
                .collect();
            assert_eq!(got, row.want, "{}", row.name);
            if row.want.is_empty() {
                assert!(
                    matches!(deny(&plan, &ask), Denial::NoEligibleCredential(_)),
                    "{}",
                    row.name
                );
            }
        }
    }

    /// Every combination of one BYOK credential's flags (required, byok-only,
    /// fallback, disabled) and model list, beside one shared credential,
    /// against SPEC §5 read literally.
    #[test]
    fn tiers_every_combination_of_one_credentials_flags() {
        let key = KeyHash::of(b"key");
        let ask = Ask {
            key_hash: Some(&key),
            user_id: "u",
            model: Some("gpt-4o"),
            slug: None,
            also: &[],
            lists_unreadable: false,
            require_zdr: false,
        };
        let bools = [false, true];
        let lists: [Option<&[&str]>; 3] = [None, Some(&["openai/gpt-4o"]), Some(&["openai/o1"])];
        let mut checked = 0;
        for required in bools {
            for byok_only in bools {
                for fallback in bools {
                    for disabled in bools {
                        for models in lists {
                            if byok_only && fallback {
                                continue; // refused by validation
                            }
                            let c = with("c", |c| {
                                c.is_required = required;
                                c.is_byok_only = byok_only;
                                c.is_fallback = fallback;
                                c.disabled = disabled;
                                c.allowed_models = models.map(strs).unwrap_or(None);
                            });
                            let plan = Plan {
                                byok: Some(list(vec![c])),
                                shared: Some(list(vec![cred("s")])),
                            };
                            // SPEC §5, literally.
                            let admits = models.is_none_or(|m| m.contains(&"openai/gpt-4o"));
                            let live = !disabled;
                            let closed = live && (byok_only || (required && admits));
                            let mut want = Vec::new();
                            if live && admits && !fallback {
                                want.push(("byok", "c"));
                            }
                            if !closed {
                                want.push(("shared", "s"));
                            }
                            if live && admits && fallback {
                                want.push(("byok", "c"));
                            }
                            let clock = Clock::default();
                            let got: Vec<(&str, &str)> = admitted(&plan, &ask, &clock)
                                .map(|(t, c)| (t.as_str(), c.record.id.as_str()))
                                .collect();
                            assert_eq!(
                                got, want,
                                "required {required}, byok_only {byok_only}, fallback {fallback}, disabled {disabled}, models {models:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 36);
    }

    #[test]
    fn denials_say_when_zdr_ruled_credentials_out() {
        let key = KeyHash::of(b"key");
        let plan = Plan {
            byok: Some(list(vec![cred("a"), cred("b")])),
            shared: None,
        };
        let ask = Ask {
            key_hash: Some(&key),
            user_id: "u",
            model: Some("gpt-4o"),
            slug: None,
            also: &[],
            lists_unreadable: false,
            require_zdr: true,
        };
        let Denial::NoEligibleCredential(refused) = deny(&plan, &ask) else {
            panic!("not a refusal")
        };
        assert_eq!(refused.zdr, 2);
        assert_eq!(
            refused.to_string(),
            "zero data retention: the key requires it and 2 credentials are not declared ZDR"
        );
        // Only the shared tier, closed: nothing at all.
        let closed = Plan {
            byok: Some(list(vec![with("off", |c| c.disabled = true)])),
            shared: Some(list(vec![cred("s")])),
        };
        let ask = Ask {
            require_zdr: false,
            ..ask
        };
        assert_eq!(
            admitted(&closed, &ask, &Clock::default()).count(),
            1,
            "disabled closes nothing"
        );
        assert_eq!(deny(&Plan::<Fixed>::default(), &ask), Denial::NoCredential);
    }
}
