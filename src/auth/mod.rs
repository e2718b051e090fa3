//! Provider auth that is not a plain header (SPEC §9): SigV4 signing of
//! AWS access keys ([`sigv4`]), Vertex service accounts — the signed JWT,
//! the token exchange's request and answer, the token cache, the project
//! and location put in the path ([`vertex`], [`token`]) — and the deployment
//! Azure's entries put in the path ([`azure`]).
//!
//! It knows the credential records and HTTP, nothing of the registry or the
//! request path: the registry keeps the token caches across reloads, and the
//! proxy signs, mints and rewrites per attempt. So it sits below both.

pub(crate) mod azure;
#[cfg(feature = "vertex")]
pub(crate) mod jwt;
#[cfg(feature = "aws")]
pub(crate) mod sigv4;
#[cfg(feature = "vertex")]
pub(crate) mod token;
pub(crate) mod vertex;

use percent_encoding::percent_decode_str;

/// A path that a rewrite could not read as the upstream would: refused
/// with this reason before any attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadPath(pub(crate) &'static str);

/// What a path segment is to a rewrite.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Exactly this keyword (percent-decoded).
    Keyword(&'static str),
    /// Another spelling of a keyword (another case, a `;` parameter),
    /// which an upstream might read as the keyword.
    Disguised,
    Other,
}

pub(crate) fn segment(seg: &str, keywords: &[&'static str]) -> Segment {
    let decoded = percent_decode_str(seg).decode_utf8_lossy();
    let base = decoded.split(';').next().unwrap_or_default();
    for &k in keywords {
        if base.eq_ignore_ascii_case(k) {
            return if decoded == k {
                Segment::Keyword(k)
            } else {
                Segment::Disguised
            };
        }
    }
    Segment::Other
}

pub(crate) const DISGUISED: BadPath =
    BadPath("a path keyword is spelt another way (case, a ';' parameter)");

/// `value` in place of `seg`, keeping `seg`'s `:method` suffix
/// (`locations/us-central1:retrieveContexts`).
pub(crate) fn replaced(seg: &str, value: &str) -> String {
    match seg.find(':') {
        Some(at) => format!("{value}{}", &seg[at..]),
        None => value.to_owned(),
    }
}
