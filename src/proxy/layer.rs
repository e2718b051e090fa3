//! [`ByokLayer`]: the tower layer that builds [`ByokService`].

use std::sync::Arc;

use tower::Layer;

use super::body::BodyBudget;
use super::service::ByokService;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Applies BYOK credential selection and injection to an inner service that
/// forwards requests upstream. Cheap to clone: it holds the shared registry.
///
/// # Where it sits in a stack
///
/// Outermost of everything that reads credentials, innermost of everything
/// that must see the client's request as sent (request ids, access logs):
/// it consumes the client's key headers and body, and the inner service gets a
/// request with an absolute upstream URI, the provider secret injected and the
/// body bytes read once. The inner service answers each attempt; the layer
/// retries the next credential on 401/403/408/429/5xx/529, connection errors
/// and first-byte timeouts.
#[derive(Debug, Clone)]
pub struct ByokLayer {
    registry: Registry,
    trust_principal_extension: bool,
    metrics: Option<Arc<Metrics>>,
    budget: Option<BodyBudget>,
}

impl ByokLayer {
    /// A layer resolving gateway keys and credentials from `registry`.
    pub fn new(registry: Registry) -> Self {
        ByokLayer {
            registry,
            trust_principal_extension: false,
            metrics: None,
            budget: None,
        }
    }

    /// Hold the request bodies being read in `budget`, shared with every
    /// layer and service given a clone of it: a request whose body would
    /// take more than is left gets 503 with `Retry-After` and
    /// `x-should-retry: true`, before its body is read when it declares its
    /// length. A body is held from its first byte until the attempts end
    /// (the upstream's response head, or the last failure), since it is
    /// kept for a failover's replay. Without it (the default) the bodies
    /// being read are bounded only by `max_body_bytes` each. The binary sets
    /// it from `server.max_buffered_body_bytes`.
    pub fn with_body_budget(mut self, budget: BodyBudget) -> Self {
        if let Some(metrics) = &self.metrics {
            let watched = budget.clone();
            metrics.watch_body_budget(move || watched.held());
        }
        self.budget = Some(budget);
        self
    }

    /// Count requests, attempts, failovers and timings in `metrics` (see
    /// [`Metrics::encode`] for the exposition). Without it the layer still
    /// writes its access log (`byok_proxy::access`, level info).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.watch_ledger(self.registry.snapshot().ledger());
        if let Some(budget) = self.budget.clone() {
            metrics.watch_body_budget(move || budget.held());
        }
        self.metrics = Some(metrics);
        self
    }

    /// Take the [`Principal`](crate::Principal) from the request's extensions when
    /// an earlier layer put one there (the embedding application's own auth),
    /// instead of resolving the gateway key. Requests without the extension still
    /// go through the key registry. Off by default.
    ///
    /// With a supplied principal, `allowed_api_key_hashes` admit only when its
    /// `key_hash` is set and listed; client key headers are stripped either way.
    pub fn trust_principal_extension(mut self, trust: bool) -> Self {
        self.trust_principal_extension = trust;
        self
    }
}

impl<S> Layer<S> for ByokLayer {
    type Service = ByokService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ByokService {
            inner,
            registry: self.registry.clone(),
            trust_principal_extension: self.trust_principal_extension,
            metrics: self.metrics.clone(),
            budget: self.budget.clone(),
        }
    }
}
