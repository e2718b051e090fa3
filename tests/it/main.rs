//! Black-box tests: the real `byok-proxy` binary through real sockets, with a
//! recording mock upstream. Every refusal also proves nothing was forwarded.
//!
//! The harness (mock upstream, the binary, the client, configs, admin API
//! helpers) is `support`, tests/support, shared with the other test crates.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

#[path = "../support/mod.rs"]
mod support;

mod access_log;
mod admin_auth;
mod admin_byok;
mod cli;
mod cloud_keys;
mod docs_examples;
mod failover;
mod forwarding;
mod gateway_keys;
mod global;
mod health;
mod hostile_upstream;
mod https;
mod lifecycle;
mod limits;
mod metrics;
mod model_rules;
mod native_errors;
mod one_endpoint;
mod reload;
mod secrets;
mod tiers;
mod tls;
mod usage;
