//! Small helpers that the proxy, the stores and the admin API share, below
//! all three: the error shape and JSON answers, the outbound TLS settings,
//! the bearer scheme, and error chains for logs.

pub(crate) mod bearer;
mod error_chain;
pub(crate) mod json;
pub(crate) mod openrouter;
pub(crate) mod tls;

pub(crate) use error_chain::ErrorChain;
