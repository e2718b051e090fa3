//! Reading the client's gateway key from the request and hashing it.
//!
//! The key may arrive in any of the four headers that provider SDKs use, so that
//! every SDK can point at the proxy unchanged: `Authorization: Bearer`, `x-api-key`,
//! `api-key` and `x-goog-api-key`. Two different values are refused; the raw key is
//! hashed at once and never stored, logged or echoed.

use std::fmt;

use http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use sha2::{Digest, Sha256};

use crate::error::Rejection;

/// The SHA-256 digest of a gateway API key: the registry's map key.
///
/// Comparing fixed-size digests through a hash map, rather than raw key strings,
/// keeps raw keys out of memory beyond the request that carried them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes raw key bytes.
    pub fn of(raw: &[u8]) -> Self {
        KeyHash(Sha256::digest(raw).into())
    }

    /// Parses 64 lowercase hex characters; anything else is `None`.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (lower_hex_value(pair[0])? << 4) | lower_hex_value(pair[1])?;
        }
        Some(KeyHash(out))
    }

    /// The lowercase hex form, as written in configs.
    pub fn to_hex(&self) -> String {
        let mut hex = [0u8; 64];
        lower_hex(&self.0, &mut hex);
        hex.iter().copied().map(char::from).collect()
    }

    /// The first 8 hex characters: enough to tell keys apart in logs.
    pub fn short(&self) -> String {
        let mut hex = self.to_hex();
        hex.truncate(8);
        hex
    }
}

/// Writes `bytes` as lowercase hex into `out`, two digits per byte, as far as
/// `out` reaches.
pub(crate) fn lower_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

fn lower_hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", self.short())
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The headers a client may carry its gateway key in, besides `Authorization`.
pub(crate) const KEY_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

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
    for name in &KEY_HEADERS {
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

/// The token of `Bearer <token>`, with the scheme matched case-insensitively.
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest
        .strip_prefix(b" ")
        .or_else(|| rest.strip_prefix(b"\t"))?;
    Some(token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
    fn hash_is_sha256_lowercase_hex() {
        // echo -n "abc" | sha256sum
        assert_eq!(
            KeyHash::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let h = KeyHash::of(b"abc");
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(h.short(), "ba7816bf");
        assert!(!format!("{h:?}").contains(&h.to_hex()));
    }

    #[test]
    fn from_hex_rejects_anything_but_64_lowercase_hex() {
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for bad in [
            "",
            &good[..63],
            &format!("{good}0"),
            &good.to_uppercase(),
            &good.replace('b', "g"),
            &format!(" {}", &good[1..]),
        ] {
            assert_eq!(KeyHash::from_hex(bad), None, "{bad:?}");
        }
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
