//! Providers: where their API lives and how a secret is presented to it.
//!
//! The well-known providers are built in ([`Providers::builtins`]); a
//! `[providers.NAME]` table in the config overrides one or adds another.

use std::fmt;
use std::sync::Arc;

use foldhash::HashMap;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::uri::{Authority, Scheme, Uri};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// How a provider expects its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScheme {
    /// `Authorization: Bearer <secret>` (OpenAI and most others).
    Bearer,
    /// `x-api-key: <secret>` (Anthropic).
    XApiKey,
    /// `api-key: <secret>` (Azure OpenAI).
    ApiKey,
    /// `x-goog-api-key: <secret>` (Google AI Studio).
    XGoogApiKey,
}

impl AuthScheme {
    /// The header the secret goes in.
    pub fn header_name(self) -> HeaderName {
        match self {
            AuthScheme::Bearer => AUTHORIZATION,
            AuthScheme::XApiKey => HeaderName::from_static("x-api-key"),
            AuthScheme::ApiKey => HeaderName::from_static("api-key"),
            AuthScheme::XGoogApiKey => HeaderName::from_static("x-goog-api-key"),
        }
    }

    /// The header value carrying `secret`, marked sensitive so that HTTP/2 HPACK
    /// never indexes it and `Debug` of the header map hides it.
    ///
    /// `None` when the secret cannot be a header value (control characters).
    pub fn header_value(self, secret: &SecretString) -> Option<HeaderValue> {
        let secret = secret.expose_secret();
        let mut value = match self {
            AuthScheme::Bearer => {
                let mut v = Vec::with_capacity(7 + secret.len());
                v.extend_from_slice(b"Bearer ");
                v.extend_from_slice(secret.as_bytes());
                HeaderValue::from_bytes(&v).ok()?
            }
            _ => HeaderValue::from_str(secret).ok()?,
        };
        value.set_sensitive(true);
        Some(value)
    }
}

/// A parsed upstream base URL: scheme, authority and a path prefix without a
/// trailing slash. The request path is appended to the prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    prefix: Box<str>,
}

impl Upstream {
    /// Parses `http(s)://host[:port][/prefix]`; no query, fragment or user info.
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        let uri: Uri = url.parse().map_err(|_| "not a valid URL")?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or("must start with https:// or http://")?;
        if scheme != Scheme::HTTPS && scheme != Scheme::HTTP {
            return Err("must start with https:// or http://");
        }
        let authority = uri.authority().cloned().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not contain user info");
        }
        if authority.host().is_empty() {
            return Err("has no host");
        }
        let pq = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("");
        if pq.contains('?') || url.contains('#') {
            return Err("must not have a query or fragment");
        }
        let prefix = uri.path().trim_end_matches('/');
        Ok(Upstream {
            scheme,
            authority,
            prefix: prefix.into(),
        })
    }

    /// The absolute URI for `path` (starting with `/`) and an optional query.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(
            self.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(&self.prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }

    /// Whether the upstream is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The upstream's host.
    pub fn host(&self) -> &str {
        self.authority.host()
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A provider: its default upstream, auth scheme and default headers.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Lowercase slug, the first path segment of proxied requests.
    pub slug: String,
    /// Default upstream; `None` means every credential must bring its own.
    pub upstream: Option<Upstream>,
    /// How the secret is presented.
    pub auth: AuthScheme,
    /// Headers added upstream when the client sent none of that name.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What a credential's `declared_zdr = null` inherits: whether the
    /// operator's account with this provider retains no data.
    pub zdr: bool,
    /// Whether it serves the OpenAI-format routes of the one endpoint
    /// (`/api/v1/chat/completions`, …; SPEC §11): true for the built-in
    /// providers that speak OpenAI's format, and for a configured one that
    /// says `openai_compatible = true`.
    pub openai_compatible: bool,
}

/// The error shape a provider's own SDK reads (SPEC §6): the proxy's
/// answers on that provider's routes carry its fields beside OpenRouter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `error.type` and `error.param`: OpenAI and the OpenAI-compatible APIs.
    OpenAi,
    /// A top-level `"type": "error"`, `error.type`, and a `request-id` header.
    Anthropic,
    /// `error.status`: Google's canonical codes.
    Google,
    /// A top-level `message` and an `x-amzn-ErrorType` header.
    Bedrock,
}

impl Dialect {
    /// The dialect of a built-in provider's slug, whatever the configuration
    /// says: known to any client, so answering in it before the key is
    /// checked tells nothing about what is configured.
    pub fn of_builtin(slug: &str) -> Option<Dialect> {
        let builtin = BUILTIN.iter().find(|b| b.slug == slug)?;
        Some(Dialect::for_provider(builtin.slug, builtin.auth))
    }

    fn for_provider(slug: &str, auth: AuthScheme) -> Dialect {
        match (slug, auth) {
            ("anthropic", _) | (_, AuthScheme::XApiKey) => Dialect::Anthropic,
            ("google-ai-studio" | "google-vertex", _) | (_, AuthScheme::XGoogApiKey) => {
                Dialect::Google
            }
            ("amazon-bedrock", _) => Dialect::Bedrock,
            _ => Dialect::OpenAi,
        }
    }
}

impl Provider {
    /// The error shape its SDKs read: by the built-in slugs, else by the
    /// auth scheme (`x-api-key` is Anthropic's, `x-goog-api-key` Google's),
    /// else OpenAI's.
    pub fn dialect(&self) -> Dialect {
        Dialect::for_provider(&self.slug, self.auth)
    }

    /// Its name in OpenRouter's answers: a built-in provider's (`OpenAI`,
    /// `Amazon Bedrock`, …), else its slug.
    pub fn display_name(&self) -> &str {
        BUILTIN
            .iter()
            .find(|b| b.slug == self.slug)
            .map_or(&self.slug, |b| b.name)
    }

    /// Whether its upstream is the built-in one of its slug, not one the
    /// configuration set.
    #[cfg(any(feature = "aws", feature = "vertex"))]
    pub(crate) fn has_builtin_upstream(&self) -> bool {
        let builtin = BUILTIN
            .iter()
            .find(|b| b.slug == self.slug)
            .and_then(|b| b.base_url);
        match (builtin, &self.upstream) {
            (Some(url), Some(up)) => Upstream::parse(url).is_ok_and(|b| &b == up),
            _ => false,
        }
    }

    /// Whether requests to `upstream` through this provider can name more
    /// models than their `model` (OpenRouter's `models` and `fallbacks`
    /// lists, which it falls back along): the `openrouter` provider, or any
    /// upstream on openrouter.ai (a credential's own `base_url` included).
    pub fn reads_model_lists(&self, upstream: &Upstream) -> bool {
        let host = upstream.host();
        self.slug == "openrouter"
            || host.eq_ignore_ascii_case("openrouter.ai")
            || host
                .len()
                .checked_sub(".openrouter.ai".len())
                .and_then(|at| host.get(at..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(".openrouter.ai"))
    }
}

/// The known providers by slug (an `Arc<str>`, shared as a metrics label).
#[derive(Debug, Clone, Default)]
pub struct Providers(HashMap<Arc<str>, Arc<Provider>>);

impl Providers {
    /// The built-in providers.
    pub fn builtins() -> Self {
        BUILTIN
            .iter()
            .map(|b| Provider {
                slug: b.slug.to_owned(),
                upstream: b.base_url.and_then(|u| Upstream::parse(u).ok()),
                auth: b.auth,
                headers: b
                    .headers
                    .iter()
                    .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
                    .collect(),
                zdr: false,
                openai_compatible: b.openai_compatible,
            })
            .collect()
    }

    /// A provider by slug.
    pub fn get(&self, slug: &str) -> Option<&Arc<Provider>> {
        self.0.get(slug)
    }

    /// A provider by slug, with its slug as a shared string (a metrics label).
    pub(crate) fn entry(&self, slug: &str) -> Option<(&Arc<str>, &Arc<Provider>)> {
        self.0.get_key_value(slug)
    }

    /// Adds or replaces a provider.
    pub fn insert(&mut self, provider: Provider) {
        self.0
            .insert(Arc::from(provider.slug.as_str()), Arc::new(provider));
    }

    /// A provider to change in place, made from `make` when it is not there.
    pub(crate) fn get_or_insert_with(
        &mut self,
        slug: &str,
        make: impl FnOnce() -> Provider,
    ) -> &mut Provider {
        Arc::make_mut(
            self.0
                .entry(Arc::from(slug))
                .or_insert_with(|| Arc::new(make())),
        )
    }

    /// How many providers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Provider> for Providers {
    fn from_iter<I: IntoIterator<Item = Provider>>(iter: I) -> Self {
        let mut out = Providers::default();
        for p in iter {
            out.insert(p);
        }
        out
    }
}

/// A built-in provider: slug, base URL (none where every credential must name its
/// own, as Azure's per-resource endpoints), auth scheme and default headers.
#[derive(Debug, Clone, Copy)]
struct Builtin {
    /// The lowercase slug, also the first path segment.
    slug: &'static str,
    /// The default base URL.
    base_url: Option<&'static str>,
    /// How the secret is sent.
    auth: AuthScheme,
    /// Headers added when the client sent none of that name.
    headers: &'static [(&'static str, &'static str)],
    /// Its name in OpenRouter's answers (`"provider": "OpenAI"`).
    name: &'static str,
    /// Whether it serves OpenAI's format (SPEC §11).
    openai_compatible: bool,
}

const fn bearer(slug: &'static str, name: &'static str, base_url: &'static str) -> Builtin {
    Builtin {
        slug,
        base_url: Some(base_url),
        auth: AuthScheme::Bearer,
        headers: &[],
        name,
        openai_compatible: true,
    }
}

/// The providers every config has without declaring them.
const BUILTIN: &[Builtin] = &[
    bearer("openai", "OpenAI", "https://api.openai.com"),
    // Anthropic's own format, and an OpenAI-compatible chat endpoint.
    Builtin {
        slug: "anthropic",
        base_url: Some("https://api.anthropic.com"),
        auth: AuthScheme::XApiKey,
        headers: &[("anthropic-version", "2023-06-01")],
        name: "Anthropic",
        openai_compatible: true,
    },
    Builtin {
        slug: "google-ai-studio",
        base_url: Some("https://generativelanguage.googleapis.com"),
        auth: AuthScheme::XGoogApiKey,
        headers: &[],
        name: "Google AI Studio",
        openai_compatible: true,
    },
    Builtin {
        slug: "azure",
        base_url: None,
        auth: AuthScheme::ApiKey,
        headers: &[],
        name: "Azure",
        openai_compatible: true,
    },
    // Vertex: an express-mode API key as `x-goog-api-key`; a service
    // account mints its bearer token instead (SPEC §9).
    Builtin {
        slug: "google-vertex",
        base_url: Some("https://aiplatform.googleapis.com"),
        auth: AuthScheme::XGoogApiKey,
        headers: &[],
        name: "Google",
        openai_compatible: true,
    },
    Builtin {
        openai_compatible: false,
        ..bearer(
            "amazon-bedrock",
            "Amazon Bedrock",
            "https://bedrock-runtime.us-east-1.amazonaws.com",
        )
    },
    bearer("mistral", "Mistral", "https://api.mistral.ai"),
    bearer("groq", "Groq", "https://api.groq.com/openai"),
    bearer("deepseek", "DeepSeek", "https://api.deepseek.com"),
    bearer("xai", "xAI", "https://api.x.ai"),
    bearer("together", "Together", "https://api.together.xyz"),
    bearer(
        "fireworks",
        "Fireworks",
        "https://api.fireworks.ai/inference",
    ),
    bearer("openrouter", "OpenRouter", "https://openrouter.ai/api"),
];

/// A provider slug is a lowercase path segment: `[a-z0-9][a-z0-9._-]*`.
pub(crate) fn valid_slug(slug: &str) -> bool {
    let mut bytes = slug.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_are_valid_slugs() {
        for b in BUILTIN {
            assert!(valid_slug(b.slug), "{}", b.slug);
            if let Some(url) = b.base_url {
                let up = Upstream::parse(url).unwrap();
                assert!(up.is_https(), "{url}");
            }
        }
    }

    #[test]
    fn upstream_uri_joins_prefix_path_and_query() {
        let cases = [
            (
                "https://api.openai.com",
                "/v1/chat/completions",
                None,
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://api.groq.com/openai/",
                "/v1/models",
                Some("a=1"),
                "https://api.groq.com/openai/v1/models?a=1",
            ),
            (
                "http://127.0.0.1:9/base",
                "/x",
                None,
                "http://127.0.0.1:9/base/x",
            ),
        ];
        for (base, path, q, want) in cases {
            let up = Upstream::parse(base).unwrap();
            assert_eq!(up.uri(path, q).unwrap().to_string(), want);
        }
    }

    #[test]
    fn upstream_parse_refuses_bad_urls() {
        for bad in [
            "api.openai.com",
            "ftp://x",
            "https://",
            "https://u:p@x.com",
            "https://x.com/?q=1",
            "https://x.com/#f",
            "",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        for good in ["openai", "amazon-bedrock", "google-ai-studio", "x.ai", "a1"] {
            assert!(valid_slug(good), "{good}");
        }
        for bad in ["", "OpenAI", "-x", "a/b", "a b", "é", "%2e"] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }

    #[test]
    fn injected_value_is_sensitive() {
        let s = SecretString::from("sk-test");
        let v = AuthScheme::Bearer.header_value(&s).unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v, "Bearer sk-test");
        assert!(!format!("{v:?}").contains("sk-test"));
        assert!(AuthScheme::XApiKey
            .header_value(&SecretString::from("a\nb"))
            .is_none());
    }
}
