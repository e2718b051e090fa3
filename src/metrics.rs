//! Prometheus metrics, in the OpenMetrics text format.
//!
//! Every label value comes from configuration (provider slugs, credential ids)
//! or from a fixed set (outcomes, status classes): never a raw model name,
//! path or header from a client, so the label space stays bounded. A request
//! for an unknown provider counts under `provider="unknown"`.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::ledger::{Entry, Sums};
use crate::registry::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    provider: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: Arc<str>,
    credential_id: Arc<str>,
    tier: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: Arc<str>,
    tier: &'static str,
    credential_id: Arc<str>,
    model: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpendLabels {
    provider: Arc<str>,
    tier: &'static str,
    credential_id: Arc<str>,
    model: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type Histograms = Family<ProviderLabels, Histogram, fn() -> Histogram>;

/// What a body budget holds now (the budget lives with the proxy, above
/// this module).
type HeldBytes = Box<dyn Fn() -> usize + Send + Sync>;

/// The proxy's metrics; share one behind an `Arc` between the layer, the
/// reload loop and the admin listener.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    failovers: Family<ProviderLabels, Counter>,
    own_time: Histograms,
    upstream_wait: Histograms,
    reloads: Family<ReloadLabels, Counter>,
    api_keys: Gauge,
    credentials: Gauge,
    generation: Gauge,
    connections_open: Gauge,
    connections_shed: Counter,
    body_budget_refusals: Counter,
    body_bytes_held: Gauge,
    /// Reads the bytes a body budget holds, at each scrape.
    body_budget: std::sync::Mutex<Option<HeldBytes>>,
    credential_states: Family<StateLabels, Gauge>,
    tokens: Family<TokenLabels, Counter>,
    spend: Family<SpendLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    unpriced: Family<ProviderLabels, Counter>,
    usage_unread: Family<ProviderLabels, Counter>,
    /// The ledgers drained into these metrics at each scrape.
    ledgers: std::sync::Mutex<Vec<std::sync::Weak<crate::ledger::Ledger>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// 1 µs to ~4 s, ×4 per bucket: the proxy's own work per request.
fn own_time_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 4.0, 12))
}

/// 5 ms to ~80 s, ×2 per bucket: waiting for an upstream's response head.
fn upstream_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Metrics {
    /// Registers every metric under the `byok` prefix.
    #[expect(
        clippy::too_many_lines,
        reason = "a registration table: one entry per metric"
    )]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("byok");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by provider and outcome (forwarded, or the refusal's metadata.reason)",
            requests.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Upstream attempts by provider, credential id and status class (2xx..5xx, error, timeout)",
            attempts.clone(),
        );
        let failovers = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "failovers",
            "Times a request moved on to the next credential",
            failovers.clone(),
        );
        let own_time: Histograms = Family::new_with_constructor(own_time_histogram);
        registry.register(
            "proxy_own_seconds",
            "Time the proxy spent on a request itself, until the response head, excluding reading the client's body and waiting on upstreams",
            own_time.clone(),
        );
        let upstream_wait: Histograms = Family::new_with_constructor(upstream_histogram);
        registry.register(
            "upstream_wait_seconds",
            "Time waiting for upstream response heads, all attempts of a request together",
            upstream_wait.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, failed)",
            reloads.clone(),
        );
        let api_keys = Gauge::default();
        registry.register(
            "registry_api_keys",
            "Gateway API keys in the registry",
            api_keys.clone(),
        );
        let credentials = Gauge::default();
        registry.register(
            "registry_credentials",
            "Credentials in the registry, disabled included",
            credentials.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the config snapshot in force",
            generation.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open on the proxy's listener",
            connections_open.clone(),
        );
        let connections_shed = Counter::default();
        registry.register(
            "connections_shed",
            "Client connections closed at once because server.max_connections were open",
            connections_shed.clone(),
        );
        let body_budget_refusals = Counter::default();
        registry.register(
            "body_budget_refusals",
            "Requests refused with 503 because their body would take more than is left of server.max_buffered_body_bytes",
            body_budget_refusals.clone(),
        );
        let body_bytes_held = Gauge::default();
        registry.register(
            "request_body_bytes_held",
            "Bytes of request bodies read and held at once, against server.max_buffered_body_bytes, as of the scrape",
            body_bytes_held.clone(),
        );
        let credential_states = Family::<StateLabels, Gauge>::default();
        registry.register(
            "credentials",
            "Enabled credentials by health state (healthy, cooling, quarantined), as of the scrape",
            credential_states.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens the providers reported, by provider, tier, credential id, model (a price-table key, or other) and kind (input, output, cache_read, cache_write)",
            tokens.clone(),
        );
        let spend = Family::<SpendLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "spend_usd",
            "Spend in USD: reported tokens times the price table, by provider, tier, credential id and model",
            spend.clone(),
        );
        let unpriced = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "unpriced_responses",
            "Responses whose model has no price in the table: tokens counted, no USD",
            unpriced.clone(),
        );
        let usage_unread = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "usage_unread_responses",
            "Successful JSON or event-stream responses that ended without a usage report the proxy could read",
            usage_unread.clone(),
        );
        Metrics {
            ledgers: std::sync::Mutex::default(),
            tokens,
            spend,
            unpriced,
            usage_unread,
            registry,
            requests,
            attempts,
            failovers,
            own_time,
            upstream_wait,
            reloads,
            api_keys,
            credentials,
            generation,
            connections_open,
            connections_shed,
            body_budget_refusals,
            body_bytes_held,
            body_budget: std::sync::Mutex::default(),
            credential_states,
        }
    }

    /// A client connection was taken in (`true`) or ended (`false`); for a
    /// server that embeds the layer, as the binary does.
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.inc();
        } else {
            self.connections_open.dec();
        }
    }

    /// A client connection was closed at once: `server.max_connections` were open.
    pub fn connection_shed(&self) {
        self.connections_shed.inc();
    }

    /// A request was refused with 503: its body would have taken more than
    /// is left of the body budget.
    pub(crate) fn body_budget_refused(&self) {
        self.body_budget_refusals.inc();
    }

    /// Reports what `held` reads (a body budget's bytes held) at each
    /// scrape, in place of what it reported before.
    pub(crate) fn watch_body_budget(&self, held: impl Fn() -> usize + Send + Sync + 'static) {
        *self.body_budget.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(held));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.drain_ledgers();
        if let Some(held) = &*self.body_budget.lock().unwrap_or_else(|e| e.into_inner()) {
            self.body_bytes_held.set(gauge_value(held()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records the sizes and generation of the snapshot now in force.
    pub fn observe_snapshot(&self, snapshot: &Snapshot) {
        self.api_keys.set(gauge_value(snapshot.api_key_count()));
        self.credentials
            .set(gauge_value(snapshot.credential_count()));
        self.generation
            .set(i64::try_from(snapshot.generation()).unwrap_or(i64::MAX));
    }

    /// Sets the count of credentials per health state, now (at a scrape).
    pub fn observe_health(&self, snapshot: &Snapshot) {
        let counts = snapshot.health_counts(crate::clock::now_ms());
        for (state, n) in counts {
            self.credential_states
                .get_or_create(&StateLabels { state })
                .set(gauge_value(n));
        }
    }

    /// Counts `ledger`'s usage too: what it holds is drained into these
    /// metrics at each scrape (and at each of the server's flushes), so a
    /// response costs no metrics update of its own.
    pub fn watch_ledger(&self, ledger: &Arc<crate::ledger::Ledger>) {
        let mut ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        ledgers.retain(|l| l.strong_count() > 0);
        if !ledgers
            .iter()
            .any(|l| std::ptr::eq(l.as_ptr(), Arc::as_ptr(ledger)))
        {
            ledgers.push(Arc::downgrade(ledger));
        }
    }

    fn drain_ledgers(&self) {
        let ledgers: Vec<_> = self
            .ledgers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for ledger in ledgers {
            ledger.drain(|entry, sums| self.usage(entry, sums));
        }
    }

    /// Counts what the responses of one ledger entry added up to.
    pub(crate) fn usage(&self, entry: &Entry, sums: &Sums) {
        let provider = ProviderLabels {
            provider: Arc::clone(&entry.provider),
        };
        if sums.estimated > 0 {
            self.usage_unread
                .get_or_create(&provider)
                .inc_by(sums.estimated);
        }
        if sums.unpriced > 0 {
            self.unpriced.get_or_create(&provider).inc_by(sums.unpriced);
        }
        let tier = entry.tier.as_str();
        for (kind, n) in [
            ("input", sums.input),
            ("output", sums.output),
            ("cache_read", sums.cache_read),
            ("cache_write", sums.cache_write),
        ] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        provider: Arc::clone(&entry.provider),
                        tier,
                        credential_id: Arc::clone(&entry.credential),
                        model: Arc::clone(&entry.model),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        if sums.usd > 0.0 {
            self.spend
                .get_or_create(&SpendLabels {
                    provider: Arc::clone(&entry.provider),
                    tier,
                    credential_id: Arc::clone(&entry.credential),
                    model: Arc::clone(&entry.model),
                })
                .inc_by(sums.usd);
        }
    }

    /// Counts a reload, successful or not.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    // Labels are `Arc<str>` shared with the snapshot: recording allocates nothing.

    pub(crate) fn request(&self, provider: &Arc<str>, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                provider: Arc::clone(provider),
                outcome,
            })
            .inc();
    }

    pub(crate) fn attempt(
        &self,
        provider: &Arc<str>,
        credential_id: &Arc<str>,
        tier: &'static str,
        status_class: &'static str,
    ) {
        self.attempts
            .get_or_create(&AttemptLabels {
                provider: Arc::clone(provider),
                credential_id: Arc::clone(credential_id),
                tier,
                status_class,
            })
            .inc();
    }

    pub(crate) fn failover(&self, provider: &Arc<str>) {
        self.failovers
            .get_or_create(&ProviderLabels {
                provider: Arc::clone(provider),
            })
            .inc();
    }

    pub(crate) fn timings(&self, provider: &Arc<str>, own: f64, upstream: Option<f64>) {
        let labels = ProviderLabels {
            provider: Arc::clone(provider),
        };
        self.own_time.get_or_create(&labels).observe(own);
        if let Some(wait) = upstream {
            self.upstream_wait.get_or_create(&labels).observe(wait);
        }
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `2xx` … `5xx` for a status code.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_counts() {
        let m = Metrics::new();
        let (openai, unknown): (Arc<str>, Arc<str>) = ("openai".into(), "unknown".into());
        m.request(&openai, "forwarded");
        m.request(&openai, "forwarded");
        m.request(&unknown, "unknown_provider");
        m.attempt(&openai, &"c1".into(), "byok", "5xx");
        m.failover(&openai);
        m.timings(&openai, 0.000_01, Some(0.2));
        m.reload(true);
        m.reload(false);
        let text = m.encode();
        for needle in [
            r#"byok_requests_total{provider="openai",outcome="forwarded"} 2"#,
            r#"byok_requests_total{provider="unknown",outcome="unknown_provider"} 1"#,
            r#"byok_upstream_attempts_total{provider="openai",credential_id="c1",tier="byok",status_class="5xx"} 1"#,
            r#"byok_failovers_total{provider="openai"} 1"#,
            r#"byok_proxy_own_seconds_count{provider="openai"} 1"#,
            r#"byok_upstream_wait_seconds_count{provider="openai"} 1"#,
            r#"byok_config_reloads_total{result="ok"} 1"#,
            r#"byok_config_reloads_total{result="failed"} 1"#,
            "byok_registry_api_keys 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn status_classes() {
        for (code, class) in [
            (101, "1xx"),
            (200, "2xx"),
            (302, "3xx"),
            (429, "4xx"),
            (503, "5xx"),
            (529, "5xx"),
        ] {
            assert_eq!(status_class(code), class);
        }
    }
}
