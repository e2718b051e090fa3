//! Bodies, one job each (as tower-http's `limit/body.rs`, `timeout/body.rs`).
//!
//! The request side ([`request`]): the client's body, read once within its
//! limit and within the bytes all bodies may hold at once ([`budget`]),
//! decoded, and handed to the inner service as [`ForwardBody`].
//!
//! The response side: [`ByokBody`] ([`response`]), either the proxy's own
//! bytes or the upstream's stream through small wrappers, each in its own
//! file with its own tests, composed in one place ([`response`]):
//!
//! ```text
//! Replay            bytes a peek read ahead, first          replay.rs
//!   Gather          small frames ready together, as one     gather.rs
//!     Tap           the usage report, read as it passes     tap.rs
//!       Shape       the one endpoint's edit of an answer    shape.rs
//!         Idle      the upstream's silences, bounded        idle.rs
//!           upstream
//! ```
//!
//! And one converter, for the one endpoint's Bedrock answers:
//! [`eventstream`], Bedrock's binary event stream as Anthropic's server-sent
//! events, a frame at a time.

mod budget;
mod eventstream;
mod gather;
mod idle;
mod replay;
mod request;
mod response;
mod shape;
mod tap;
#[cfg(test)]
mod testing;

pub use budget::BodyBudget;
pub(crate) use budget::{Exhausted, Reservation};
#[cfg(test)]
pub(crate) use eventstream::encode as eventstream_encode;
pub use eventstream::{to_sse, EventStreamSse};
pub use idle::IdleTimeout;
pub use request::ForwardBody;
pub(crate) use request::{
    check_declared, decode, drain_later, encoding, is_json_like, read, Encoding,
};
pub use response::ByokBody;
pub(crate) use shape::{JsonEdit, Shaping};

/// `rest`, a body's size hint, with `read` more bytes before it (held or
/// read ahead by a wrapper).
fn plus(rest: http_body::SizeHint, read: u64) -> http_body::SizeHint {
    // Upper first: SizeHint refuses a lower bound above its upper.
    let mut hint = http_body::SizeHint::new();
    if let Some(upper) = rest.upper() {
        hint.set_upper(upper.saturating_add(read));
    }
    hint.set_lower(rest.lower().saturating_add(read));
    hint
}
