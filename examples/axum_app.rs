//! `ByokLayer` in an axum application: axum serves the application's own
//! routes, and every other path, `/{provider}/…`, goes through the layer to
//! the `Forwarder`.
//!
//! ```text
//! cargo run --example mock_upstream &
//! cargo run --example axum_app -- config/quickstart.toml 127.0.0.1:0
//! curl http://127.0.0.1:PORT/healthz
//! curl -H 'Authorization: Bearer demo-gateway-key' -H 'content-type: application/json' \
//!   -d '{"model":"gpt-4o-mini","messages":[]}' http://127.0.0.1:PORT/openai/v1/chat/completions
//! ```
//!
//! The address defaults to the config's `[server] listen`; `127.0.0.1:0`
//! picks a free port, printed at start.

use std::error::Error;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use byok_proxy::{ByokLayer, Config, Forwarder, ForwarderOptions, Registry};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    const USAGE: &str = "usage: axum_app CONFIG.toml [ADDR]";
    let mut args = std::env::args_os().skip(1);
    let path: PathBuf = args.next().map(PathBuf::from).ok_or(USAGE)?;
    let config = Config::load(&path)?;
    let addr: SocketAddr = match args.next() {
        Some(addr) => addr.to_str().ok_or(USAGE)?.parse()?,
        None => config.server.listen,
    };
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(&config)?).await?;
    Ok(())
}

/// The application's router: its own routes, answered by axum without any
/// credential work, and the BYOK stack for everything else.
pub(crate) fn app(config: &Config) -> Result<Router, Box<dyn Error>> {
    let byok = ServiceBuilder::new()
        // Outermost: axum serves only services that cannot fail. The layer
        // answers every request itself, refusals and upstream failures
        // included; only the Forwarder's readiness could fail (it never does),
        // and that would become a 502 here.
        .layer(HandleErrorLayer::new(bad_gateway))
        // Resolves the key, picks and injects the credential, and fails over;
        // it must see every attempt's answer, so it wraps the client.
        .layer(ByokLayer::new(Registry::from_config(config)?))
        // Innermost: sends each attempt to the absolute upstream URI set above.
        .service(Forwarder::new(ForwarderOptions {
            connect_timeout: config.server.connect_timeout,
            ..ForwarderOptions::default()
        })?);
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/version", get(|| async { env!("CARGO_PKG_VERSION") }))
        // A fallback, not `nest_service`: nesting strips the matched prefix,
        // and the layer reads the provider from the path's first segment. A
        // path that names no provider gets the layer's own JSON 404.
        .fallback_service(byok))
}

/// The answer to an error from the stack (see [`app`]).
async fn bad_gateway(error: impl Display) -> (StatusCode, String) {
    (
        StatusCode::BAD_GATEWAY,
        format!("upstream unavailable: {error}"),
    )
}
