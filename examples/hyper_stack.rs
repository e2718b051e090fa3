//! `ByokLayer` in a plain hyper 1 server: the proxy's own stack, without the
//! binary's health check, config reload and graceful drain.
//!
//! ```text
//! cargo run --example hyper_stack -- config/example.toml
//! curl -H 'Authorization: Bearer demo-gateway-key' http://127.0.0.1:8080/openai/v1/models
//! ```

use std::path::PathBuf;

use byok_proxy::{ByokLayer, Config, Forwarder, ForwarderOptions, Registry};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: hyper_stack CONFIG.toml")?;
    let config = Config::load(&path)?;
    let registry = Registry::from_config(&config)?;

    let service = ServiceBuilder::new()
        // Outermost: resolves the key, picks and injects the credential, and
        // fails over; it must see every attempt's answer, so it wraps the client.
        .layer(ByokLayer::new(registry))
        // Innermost: sends each attempt to the absolute upstream URI set above.
        .service(Forwarder::new(ForwarderOptions {
            connect_timeout: config.server.connect_timeout,
            ..ForwarderOptions::default()
        })?);

    let listener = TcpListener::bind(config.server.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        // hyper calls services by `&self`; the adapter clones the tower stack
        // (cheap: shared registry and connection pool) per request.
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }
}
