//! Which header names belong to the proxy rather than to a client or a
//! configuration: hop-by-hop and framing headers, and the client's credentials.

use http::header::{self, HeaderName};

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus the non-standard ones still seen.
pub(crate) const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// The headers a key travels in, either way: a client's gateway key (any of
/// the four, so every provider's SDK works unchanged) and a provider's
/// secret. `Authorization` first; the other three are the SDKs' own.
pub(crate) const CREDENTIALS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

/// Client headers that never go upstream besides its [`CREDENTIALS`]: its
/// identity at the provider, and the framing the proxy recomputes for the
/// forwarded body.
pub(crate) const CLIENT_ONLY: [HeaderName; 8] = [
    header::COOKIE,
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
    // Google's billing project: the credential's, never the client's choice.
    HeaderName::from_static("x-goog-user-project"),
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::HOST,
    header::EXPECT,
];

/// Names that configuration may not set either (`headers` of a provider or
/// credential): they would break framing, or shadow the injected secret.
/// (`Cookie`, `OpenAI-Organization` and `OpenAI-Project` are stripped from the
/// client but may be configured: a credential can name its organization.)
pub(crate) fn reserved(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || CREDENTIALS.contains(name)
        || CLIENT_ONLY.contains(name)
            && !matches!(
                name.as_str(),
                "cookie" | "openai-organization" | "openai-project" | "x-goog-user-project"
            )
}
