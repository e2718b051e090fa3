//! Header hygiene: strip every client credential and hop-by-hop header first,
//! then set the provider's, so nothing the client sends can shadow or remove the
//! injected secret.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::domain::headers::{CLIENT_ONLY, CREDENTIALS, HOP_BY_HOP};
use crate::domain::Provider;
use crate::policy::Tier;
use crate::registry::Candidate;

/// Removes the credential headers (from an upstream's trailers): an
/// upstream that echoes the injected secret must not hand it to the client.
pub(crate) fn strip_credentials(headers: &mut HeaderMap) {
    for name in &CREDENTIALS {
        headers.remove(name);
    }
}

/// An upstream response's headers, made safe to relay: hop-by-hop headers
/// (and those `Connection` names) and credential headers removed, and a
/// `Content-Length` beside a `Transfer-Encoding` dropped (RFC 9112 §6.3: the
/// body was read as chunked, so that length is stale).
pub(crate) fn strip_response(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(name) || CREDENTIALS.contains(name)
    });
}

/// The request headers with every client credential and hop-by-hop header gone.
pub(crate) fn strip_request(headers: &mut HeaderMap) {
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(name) || CREDENTIALS.contains(name) || CLIENT_ONLY.contains(name)
    });
}

/// Removes every header `doomed` picks, and every header `Connection` names.
/// Without a `Connection` header (the common case), one lookup per doomed
/// name present and nothing allocated: `doomed` picks from fixed lists, so
/// the loop turns at most once per listed name. With one, the names are
/// collected first (a client may list any number).
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    while let Some(name) = headers.keys().find(|n| doomed(n)).cloned() {
        headers.remove(&name);
    }
}

/// Whether the request asks for a protocol switch (WebSocket, h2c).
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Sets what goes upstream for one attempt, after [`strip_request`]: the
/// provider's default headers where the client sent none of that name, then the
/// secret (`auth`, the target's: none for a signed or minted one), then the
/// credential's own headers (which win over everything).
pub(crate) fn inject(
    headers: &mut HeaderMap,
    provider: &Provider,
    cand: &Candidate,
    auth: Option<&HeaderValue>,
) {
    for (name, value) in &provider.headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    if let Some(auth) = auth {
        headers.insert(cand.auth_name.clone(), auth.clone());
    }
    for (name, value) in &cand.record.headers {
        headers.insert(name.clone(), value.clone());
    }
}

/// `n` as a header value: a static one for the counts a request reaches in
/// practice (no allocation), else formatted.
fn count(n: usize) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    SMALL
        .get(n)
        .map_or_else(|| HeaderValue::from(n), |s| HeaderValue::from_static(s))
}

/// The `x-byok-*` response headers: the credential that produced the answer
/// (its pre-built id header value), how many attempts it took, and the
/// tier it came from.
pub(crate) fn annotate(
    headers: &mut HeaderMap,
    credential_id: &HeaderValue,
    attempts: usize,
    tier: Tier,
) {
    headers.insert(
        HeaderName::from_static("x-byok-credential-id"),
        credential_id.clone(),
    );
    headers.insert(HeaderName::from_static("x-byok-attempts"), count(attempts));
    headers.insert(
        HeaderName::from_static("x-byok-tier"),
        HeaderValue::from_static(tier.as_str()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_formatted() {
        for n in [0, 1, 2, 9, 10, 11, 100, usize::MAX] {
            assert_eq!(count(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn strips_credentials_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer gw"),
            ("x-api-key", "gw"),
            ("api-key", "gw"),
            ("x-goog-api-key", "gw"),
            ("proxy-authorization", "Basic x"),
            ("cookie", "s=1"),
            ("openai-organization", "org-evil"),
            ("openai-project", "proj-evil"),
            ("x-goog-user-project", "proj-evil"),
            ("connection", "keep-alive, x-secret-hop, Upgrade"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-length", "5"),
            ("content-encoding", "gzip"),
            ("host", "evil.example"),
            ("expect", "100-continue"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-custom", "kept"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_request(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["anthropic-version", "content-type", "x-custom"]);
    }

    #[test]
    fn responses_lose_hop_by_hop_credentials_and_a_stale_length() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk-injected"),
            ("x-api-key", "sk-injected"),
            ("api-key", "sk-injected"),
            ("x-goog-api-key", "sk-injected"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("content-type", "application/json"),
            ("x-request-id", "req-1"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_response(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-request-id"]);
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("5"));
        strip_response(&mut h);
        assert!(h.contains_key("content-length"), "a lone length stays");
    }

    #[test]
    fn reserved_names() {
        for name in [
            "authorization",
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "upgrade",
        ] {
            assert!(
                crate::domain::headers::reserved(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        for name in [
            "openai-organization",
            "openai-project",
            "x-goog-user-project",
            "cookie",
            "anthropic-version",
            "x-custom",
        ] {
            assert!(
                !crate::domain::headers::reserved(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        assert!(!wants_upgrade(&h));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_upgrade(&h));
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        assert!(wants_upgrade(&h));
    }
}
