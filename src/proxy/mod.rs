//! The middleware: [`ByokLayer`] builds [`ByokService`], which decides, strips,
//! injects and fails over around any inner service; [`Forwarder`] is the inner
//! service the binary uses. The request's edges live here too: the client's
//! key ([`client_key`]), routing ([`route`]), header hygiene ([`headers`]), the
//! model id ([`model`]), bodies ([`body`]) and the proxy's own answers
//! ([`error`]).

mod access_log;
mod attempt;
pub(crate) mod body;
pub(crate) mod client_key;
pub(crate) mod cloud;
mod context;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod headers;
mod layer;
pub(crate) mod model;
pub(crate) mod one;
pub(crate) mod route;
mod service;
pub(crate) mod usage;

pub use attempt::Attempt;
pub use body::{BodyBudget, ByokBody, ForwardBody, IdleTimeout};
pub use error::Rejection;
pub use forward::{Forwarder, ForwarderOptions};
pub use layer::ByokLayer;
pub use service::{decide, ByokService};
