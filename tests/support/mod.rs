//! Test support shared by the three test crates, each of which includes it
//! with `#[path = "../support/mod.rs"] mod support;`:
//!
//! * [`response`]: a response with its body read ([`Resp`]), whoever sent it.
//! * [`recording`]: what an upstream received ([`Recording`], [`Recorded`]).
//! * [`mock`]: a recording mock upstream on a real socket ([`Mock`]).
//! * [`proxy`]: the real binary on ephemeral ports ([`Proxy`]), and waits on
//!   its output.
//! * [`client`]: an HTTP client and request helpers.
//! * [`config`]: configs with gateway keys and credentials, for the binary.
//! * [`admin`]: the admin API: management keys, requests, its error shape.
//! * [`metrics`]: the samples of an OpenMetrics exposition.
//! * [`body`]: byte-level helpers for bodies and files.
//!
//! Synchronisation is on events (log lines, channel messages, socket reads),
//! never on sleeps; every wait is bounded by [`PATIENCE`].

#![allow(
    dead_code,
    unused_imports,
    reason = "each test crate uses its own part of the shared support and of its re-exports"
)]

use std::time::Duration;

pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod metrics;
pub(crate) mod mock;
pub(crate) mod proxy;
pub(crate) mod recording;
pub(crate) mod response;

pub(crate) use body::{contains_bytes, gzip};
pub(crate) use client::{chat, client, post, raw, req, send};
pub(crate) use config::{
    config, config_at, config_with_server, cred, GW, GW2, GW_DISABLED, GW_OTHER_WS,
};
pub(crate) use mock::{Mock, Reply};
pub(crate) use proxy::{check_config, dead_addr, Proxy};
pub(crate) use recording::{Recorded, Recording};
pub(crate) use response::{collect, Resp};

/// How long any single awaited event may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// SHA-256 hex of a gateway or management key, as written in configs.
pub(crate) fn hash(key: &str) -> String {
    byok_proxy::KeyHash::of(key.as_bytes()).to_hex()
}

/// Polls `done` every few milliseconds until it holds; fails the test after
/// [`PATIENCE`].
pub(crate) async fn poll_until<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
