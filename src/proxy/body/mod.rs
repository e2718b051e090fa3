//! Bodies: reading the request body once, within its limit ([`request`]);
//! and the response body ([`response`]), which is either the upstream's
//! stream or the proxy's own JSON.

mod request;
mod response;

pub use request::ForwardBody;
pub(crate) use request::{decode, drain, encoding, is_json_like, read, Encoding};
pub use response::{ByokBody, IdleTimeout};
