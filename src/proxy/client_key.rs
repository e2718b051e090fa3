//! Reading the client's gateway key from the request and hashing it.
//!
//! The key may arrive in any of the four headers that provider SDKs use, so that
//! every SDK can point at the proxy unchanged: `Authorization: Bearer`, `x-api-key`,
//! `api-key` and `x-goog-api-key`. Two different values are refused; the raw key is
//! hashed at once and never stored, logged or echoed.

use http::header::{HeaderMap, AUTHORIZATION};

use crate::common::bearer::bearer_token;
use crate::domain::headers::CREDENTIALS;
use crate::domain::KeyHash;
use crate::proxy::error::Rejection;

/// Finds the one gateway key the client sent and hashes it.
///
/// `Ok(None)` when none of the four headers is present. A header present more
/// than once, or present in several of the four, must carry the same key every
/// time; otherwise the request is ambiguous. An `Authorization` header with a
/// scheme other than `Bearer`, or an empty key, is an invalid key.
pub(crate) fn client_key_hash(headers: &HeaderMap) -> Result<Option<KeyHash>, Rejection> {
    let mut found: Option<&[u8]> = None;
    for value in headers.get_all(AUTHORIZATION) {
        let token = bearer_token(value.as_bytes()).ok_or(Rejection::InvalidApiKey)?;
        found = merge(found, token)?;
    }
    // The SDKs' own key headers, besides `Authorization`.
    for name in &CREDENTIALS[1..] {
        for value in headers.get_all(name) {
            found = merge(found, value.as_bytes())?;
        }
    }
    match found {
        None => Ok(None),
        Some([]) => Err(Rejection::InvalidApiKey),
        Some(raw) => Ok(Some(KeyHash::of(raw))),
    }
}

fn merge<'a>(found: Option<&'a [u8]>, next: &'a [u8]) -> Result<Option<&'a [u8]>, Rejection> {
    match found {
        Some(prev) if prev != next => Err(Rejection::AmbiguousApiKey),
        _ => Ok(Some(next)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn key_headers_table() {
        let k = Some(KeyHash::of(b"gw-key"));
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<Option<KeyHash>, &'a str>);
        let cases: &[Case<'_>] = &[
            (&[], Ok(None)),
            (&[("authorization", "Bearer gw-key")], Ok(k)),
            (&[("authorization", "bearer gw-key")], Ok(k)),
            (&[("authorization", "BEARER   gw-key")], Ok(k)),
            (&[("x-api-key", "gw-key")], Ok(k)),
            (&[("api-key", "gw-key")], Ok(k)),
            (&[("x-goog-api-key", "gw-key")], Ok(k)),
            (
                &[("authorization", "Bearer gw-key"), ("x-api-key", "gw-key")],
                Ok(k),
            ),
            (
                &[("authorization", "Bearer gw-key"), ("x-api-key", "other")],
                Err("ambiguous_api_key"),
            ),
            (
                &[("x-api-key", "gw-key"), ("x-api-key", "other")],
                Err("ambiguous_api_key"),
            ),
            (
                &[("api-key", "gw-key"), ("x-goog-api-key", "gw-keY")],
                Err("ambiguous_api_key"),
            ),
            (
                &[("authorization", "Basic Z3c6a2V5")],
                Err("invalid_api_key"),
            ),
            (&[("authorization", "Bearergw-key")], Err("invalid_api_key")),
            (&[("authorization", "Bearer")], Err("invalid_api_key")),
            (&[("authorization", "Bearer ")], Err("invalid_api_key")),
            (&[("x-api-key", "")], Err("invalid_api_key")),
        ];
        for (pairs, want) in cases {
            let got = client_key_hash(&headers(pairs)).map_err(|r| r.reason());
            assert_eq!(got, *want, "{pairs:?}");
        }
    }
}
