//! # byok-proxy
//!
//! A bring-your-own-key gateway for LLM providers, as a tower middleware
//! ([`ByokLayer`]) and the reverse proxy built from it (the `byok-proxy` binary).
//!
//! Per request the layer hashes the client's gateway key (SHA-256), resolves it
//! to a [`Principal`] in the in-memory [`Registry`], reads the provider from the
//! path and the model from the path or the JSON body, picks the workspace's
//! credentials whose three allowlists (key hashes, models, users) all admit the
//! request — non-fallback before fallback, by `sort_order` — strips every client
//! credential, injects the provider secret and calls the inner service, failing
//! over to the next credential on 401/403/408/429/5xx/529, connection errors and
//! first-byte timeouts.
//!
//! ```no_run
//! use byok_proxy::{ByokLayer, Config, Forwarder, ForwarderOptions, Registry};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("config/example.toml".as_ref())?;
//! let registry = Registry::from_config(&config)?;
//! let service = ServiceBuilder::new()
//!     // Decides, strips, injects and fails over; must be outside the client.
//!     .layer(ByokLayer::new(registry.clone()))
//!     // Sends each attempt to the absolute upstream URI the layer set.
//!     .service(Forwarder::new(ForwarderOptions::default())?);
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! The inner service receives `Request<`[`ForwardBody`]`>` with an absolute
//! URI and an [`Attempt`] extension, and may be anything: the [`Forwarder`], an
//! axum router, a `service_fn`. An application with its own authentication can
//! hand the layer a [`Principal`] instead of a gateway key; see
//! [`ByokLayer::trust_principal_extension`].
//!
//! ## Layout
//!
//! - [`domain`]: the records ([`Credential`], [`ApiKey`], [`Provider`]) and the
//!   one set of rules every source obeys;
//! - `policy`: the pure decision — allowlists, candidate order, denials;
//! - `registry`: the data the hot path reads, swapped atomically;
//! - `proxy`: the layer, its service in named phases, the forwarder, and the
//!   request's edges (client key, route, headers, model, body, errors);
//! - `config`: TOML → validated entries;
//! - with the `server` feature (on by default): `store` (SQLite, Postgres,
//!   secrets at rest, the sync that applies changes in order), `admin` (the
//!   management API) and `server` (bind, serve, drain, reload).
//!
//! Without default features the crate is the middleware alone: no clap, no
//! tracing subscriber, no file watcher, no database drivers.

pub mod domain;

mod auth;
mod clock;
mod common;
mod config;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod ledger;
mod metrics;
mod policy;
mod proxy;
mod registry;

#[cfg(feature = "server")]
mod admin;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod store;

pub use config::{
    AdminConfig, Config, ConfigError, Price, Prices, ScopedKey, ServerConfig, StoreConfig,
    TlsConfig,
};
pub use domain::{
    ApiKey, AuthScheme, Credential, KeyHash, Provider, Providers, SharedTier, Upstream,
};
pub use ledger::{Day, KeyUsage, Ledger, Spend};
pub use metrics::Metrics;
pub use policy::{Ask, Denial, RefusedBy, Tier};
pub use proxy::{
    decide, Attempt, BodyBudget, ByokBody, ByokLayer, ByokService, ForwardBody, Forwarder,
    ForwarderOptions, IdleTimeout, Rejection,
};
// Bedrock's event stream as Anthropic's SSE, for benches/eventstream.rs: not
// an API.
#[doc(hidden)]
pub use proxy::body::{to_sse, EventStreamSse};
pub use registry::{CompileError, Principal, Registry, Settings, Snapshot, SnapshotError};

/// The top-level `"model"` of a JSON body under the strict rules the layer
/// applies (SPEC §4): one valid JSON document, `"model"` a string, no duplicate,
/// escaped-duplicate or case-variant `model` key. `Err` gives the reason.
/// `Ok(None)` when the top level is not an object or has no `model`.
pub fn body_model(body: &[u8]) -> Result<Option<std::borrow::Cow<'_, str>>, &'static str> {
    proxy::model::body_model(body).map_err(|e| e.message())
}

/// The boxed error type used by bodies and inner services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
