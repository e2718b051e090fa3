//! The floor for `scripts/bench-e2e`: the cheapest correct hyper 1 reverse
//! proxy. It forwards every request to one fixed upstream over a pooled
//! HTTP/1.1 client (TCP_NODELAY on both sides), swaps `Authorization` for a
//! fixed secret, drops hop-by-hop headers and streams the response back.
//! No policy, no body read.
//!
//! ```sh
//! cargo run --release --example bare_forwarder -- 127.0.0.1:8081 http://127.0.0.1:9999
//! # one current-thread runtime per core, each with its own SO_REUSEPORT listener:
//! cargo run --release --example bare_forwarder -- 127.0.0.1:8081 http://127.0.0.1:9999 --per-core
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Incoming>;

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus the legacy `proxy-connection`.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: bare_forwarder LISTEN_ADDR http://UPSTREAM_HOST:PORT [--per-core]";
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: Uri = args.next().ok_or(usage)?.parse()?;
    let authority = upstream.authority().ok_or(usage)?.clone();
    let per_core = match args.next().as_deref() {
        None => false,
        Some("--per-core") => true,
        Some(_) => return Err(usage.into()),
    };
    if !per_core {
        // tokio's multi-thread runtime, one listener: the floor the bench uses.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async {
            let listener = TcpListener::bind(listen).await?;
            println!("bare forwarder on http://{}", listener.local_addr()?);
            serve(listener, authority).await
        });
    }
    // Thread per core (issue 16's experiment): one current-thread runtime
    // per core, each with its own SO_REUSEPORT listener on the same port
    // and its own upstream pool, so a request never leaves its thread.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    // The listeners are made in a runtime's context, then handed to their
    // threads as std listeners.
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _context = setup.enter();
    let first = reuseport_listener(listen)?;
    let addr = first.local_addr()?;
    println!("bare forwarder (thread per core, {cores}) on http://{addr}");
    let mut listeners = vec![first];
    for _ in 1..cores {
        listeners.push(reuseport_listener(addr)?);
    }
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|std_listener| {
            let authority = authority.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let listener =
                        TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
                    serve(listener, authority).await.map_err(|e| e.to_string())
                })
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a serving thread panicked")??;
    }
    Ok(())
}

/// A non-blocking listener on `addr` with `SO_REUSEPORT`, so that several
/// can share a port and the kernel spreads connections over them.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseport(true)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    listener.into_std()
}

/// Accepts and serves connections on `listener` forever, forwarding with a
/// pool of this runtime's own.
async fn serve(
    listener: TcpListener,
    authority: Authority,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, authority) = (client.clone(), authority.clone());
        let svc = hyper::service::service_fn(move |req| {
            let (client, authority) = (client.clone(), authority.clone());
            async move { Ok::<_, Infallible>(forward(client, authority, req).await) }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new();
            let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn forward(
    client: Upstream,
    authority: Authority,
    mut req: Request<Incoming>,
) -> Response<Either<Incoming, Empty<Bytes>>> {
    let mut uri = req.uri().clone().into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = uri.path_and_query.or(Some(PathAndQuery::from_static("/")));
    let result = match Uri::from_parts(uri) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            let headers = req.headers_mut();
            strip_hop_by_hop(headers);
            headers.remove(HOST); // the client sets it from the URI
            let secret = HeaderValue::from_static("Bearer sk-bench-upstream-secret");
            headers.insert(AUTHORIZATION, secret);
            client
                .request(req)
                .await
                .map_err(|_| StatusCode::BAD_GATEWAY)
        }
        Err(_) => Err(StatusCode::BAD_REQUEST),
    };
    match result {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Left(body))
        }
        Err(status) => {
            let mut res = Response::new(Either::Right(Empty::new()));
            *res.status_mut() = status;
            res
        }
    }
}

/// Removes the hop-by-hop headers and every header that `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}
