//! The library through the layer: [`byok_proxy::ByokLayer`] over a recording,
//! in-process inner service (`tower::service_fn`), no sockets.
//!
//! Every refusal is shown never to reach the inner service; every forwarded
//! request is checked byte for byte against what the client sent.
//!
//! * `forward`: what an admitted request looks like to the inner service.
//! * `failover`: candidate order, which statuses fail over, what the client gets.
//! * `principal`: a [`byok_proxy::Principal`] handed over by an earlier layer.
//! * `refusals`: every way the layer answers by itself.
//! * `model_property`: generated JSON bodies against an independent parser.
//! * `decide`: the decision alone, without the layer.
//!
//! `fixtures` holds the registry and the recording inner service; `support`
//! is the harness shared with the other test crates (tests/support).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod decide;
mod failover;
mod features;
mod fixtures;
mod forward;
mod model_property;
mod principal;
mod refusals;
#[path = "../support/mod.rs"]
mod support;
