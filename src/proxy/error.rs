//! Every answer the proxy makes itself, as one typed condition each.
//!
//! Each [`Rejection`] has a stable [`reason`](Rejection::reason) (the
//! `metadata.reason` of the JSON body, also usable as a metric label) and a
//! [`status`](Rejection::status); both are mapped here and nowhere else. The body
//! follows OpenRouter's error shape:
//!
//! ```json
//! {"error": {"code": 403, "message": "…", "metadata": {"reason": "no_eligible_credential"}}}
//! ```
//!
//! Messages never carry a secret or a raw gateway key. The only client input they
//! repeat is the provider segment and the model, both truncated and JSON-escaped.

use std::fmt;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use crate::common::json::{error_json, json_response};
use crate::domain::Dialect;
use crate::policy::{Denial, RefusedBy};

/// A request the proxy answers itself instead of forwarding (or after the
/// upstream failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No gateway key in any of the four headers.
    #[error("no gateway API key: send it as Authorization: Bearer, x-api-key, api-key or x-goog-api-key")]
    MissingApiKey,
    /// Unknown or disabled key (indistinguishable on purpose), or an unusable
    /// `Authorization` header.
    #[error("invalid gateway API key")]
    InvalidApiKey,
    /// Two different keys in one request.
    #[error("the request carries two different gateway API keys")]
    AmbiguousApiKey,
    /// The first path segment names no configured provider. The segment is
    /// never echoed: a client that pasted its key into the path must not get
    /// it back in a body.
    #[error("unknown provider: the first path segment names no configured provider")]
    UnknownProvider,
    /// A path that is not `/{provider}/…` (or no admin route).
    #[error("no such route: proxied requests go to /{{provider}}/{{path}}")]
    NotFound,
    /// `CONNECT`, which is never proxied.
    #[error("method not allowed: CONNECT is not proxied")]
    MethodNotAllowed,
    /// Protocol upgrades and path tricks.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// Both `Content-Length` and `Transfer-Encoding`: a request-smuggling shape.
    /// Answered with `Connection: close`.
    #[error("both Content-Length and Transfer-Encoding: ambiguous framing")]
    AmbiguousFraming,
    /// The body broke the strict JSON rules.
    #[error("invalid body: {0}")]
    InvalidBody(&'static str),
    /// The model is given twice or in conflicting ways.
    #[error("ambiguous model: {0}")]
    AmbiguousModel(&'static str),
    /// A member of the body that the one endpoint reads (SPEC §11) is not
    /// what it must be: `model`, `models`, `provider.order`, ….
    #[error("invalid body: \"{field}\" {message}")]
    BadField {
        /// The member, as OpenAI's `error.param` names it.
        field: &'static str,
        /// What is wrong with it, never quoting it.
        message: &'static str,
    },
    /// The one endpoint's slug names no model of the catalog and no
    /// provider (SPEC §11).
    #[error("unknown model {}: no [models] entry names it, and its author names no provider", Clip(.0))]
    UnknownModel(String),
    /// No endpoint of the request's models serves the route's format, or
    /// the request's provider preferences left none (SPEC §11).
    #[error("no endpoint of {} {why}", Clip(.models))]
    NoCompatibleEndpoint {
        /// The models asked for, `, `-separated.
        models: String,
        /// Why none is left.
        why: &'static str,
    },
    /// The workspace has credentials for the provider, but none admits the request.
    #[error("no credential for provider {provider} admits {} for this key (refused by {refused})", ModelPhrase(.model.as_deref(), .provider))]
    NoEligibleCredential {
        /// The provider slug (from configuration).
        provider: String,
        /// The requested model, when known.
        model: Option<String>,
        /// Which allowlists refused.
        refused: RefusedBy,
    },
    /// On the one endpoint (SPEC §11): no credential of any endpoint's
    /// provider admits the request, or (`refused` none) none is configured.
    #[error("{}", EndpointsPhrase(self))]
    NoEndpointCredential {
        /// The endpoints' providers, `, `-separated.
        providers: String,
        /// The models asked for, `, `-separated.
        models: String,
        /// Which allowlists refused, when some credential was considered.
        refused: Option<RefusedBy>,
    },
    /// The workspace has no enabled credential for the provider.
    #[error("no credential configured for provider {provider} in this workspace")]
    NoCredential {
        /// The provider slug (from configuration).
        provider: String,
    },
    /// The body exceeds `server.max_body_bytes` (after decoding).
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The request body stalled longer than `server.body_timeout_secs`.
    /// Answered with `Connection: close`.
    #[error("the request body stalled: no byte arrived within server.body_timeout_secs")]
    BodyTimeout,
    /// The request bodies being read and held take all of
    /// `server.max_buffered_body_bytes` (the layer's [`BodyBudget`](crate::BodyBudget)):
    /// this one would take more. Answered with `Retry-After` and
    /// `x-should-retry: true`.
    #[error("the proxy holds as many request bodies as its memory budget allows; retry shortly")]
    BodyBudgetExhausted,
    /// A `Content-Encoding` the proxy cannot decode.
    #[error(
        "unsupported Content-Encoding: only gzip, deflate and identity request bodies are accepted"
    )]
    UnsupportedEncoding,
    /// Every attempt failed to connect (or the inner service failed).
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    /// The last attempt's upstream answered 401 or 403.
    #[error("the upstream provider rejected the credential")]
    UpstreamRejectedCredential,
    /// The last attempt timed out before the response head.
    #[error("upstream timed out before responding")]
    UpstreamTimeout,
    /// The gateway key's spend in its limit's period has reached the limit
    /// (SPEC §8).
    #[error("this gateway key has reached its spend limit {period}")]
    KeyLimitExceeded {
        /// `for today (UTC)`, `for this week (UTC)`, `for this month (UTC)`,
        /// `for its lifetime`.
        period: &'static str,
    },
}

impl From<crate::auth::BadPath> for Rejection {
    fn from(bad: crate::auth::BadPath) -> Self {
        Rejection::InvalidRequest(bad.0)
    }
}

impl Rejection {
    /// A denial by the policy, for `provider` and `model`.
    /// `also`: how many more models the body names (OpenRouter's `models`,
    /// `fallbacks`), all of which had to be admitted too.
    pub(crate) fn denied(denial: Denial, provider: &str, model: Option<&str>, also: usize) -> Self {
        match denial {
            Denial::NoCredential => Rejection::NoCredential {
                provider: provider.to_owned(),
            },
            Denial::NoEligibleCredential(refused) => Rejection::NoEligibleCredential {
                provider: provider.to_owned(),
                model: model.map(|m| match also {
                    0 => m.to_owned(),
                    n => format!("{m} with the {n} models its models/fallbacks lists name"),
                }),
                refused,
            },
        }
    }

    /// A body member that is not what it must be (SPEC §11).
    pub(crate) fn bad_field(field: &'static str, message: &'static str) -> Self {
        Rejection::BadField { field, message }
    }

    /// The body member a 400 is about: OpenAI's `error.param`.
    fn param(&self) -> Option<&'static str> {
        match self {
            Rejection::BadField { field, .. } => Some(field),
            Rejection::UnknownModel(_) | Rejection::NoCompatibleEndpoint { .. } => Some("model"),
            _ => None,
        }
    }

    /// The HTTP status and the stable `metadata.reason` string (also a bounded
    /// metric label) of this condition: the one table of both.
    fn parts(&self) -> (StatusCode, &'static str) {
        use Rejection::*;
        match self {
            MissingApiKey => (StatusCode::UNAUTHORIZED, "missing_api_key"),
            InvalidApiKey => (StatusCode::UNAUTHORIZED, "invalid_api_key"),
            AmbiguousApiKey => (StatusCode::UNAUTHORIZED, "ambiguous_api_key"),
            UnknownProvider => (StatusCode::NOT_FOUND, "unknown_provider"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            InvalidRequest(_) | AmbiguousFraming => (StatusCode::BAD_REQUEST, "invalid_request"),
            InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            AmbiguousModel(_) => (StatusCode::BAD_REQUEST, "ambiguous_model"),
            BadField { .. } => (StatusCode::BAD_REQUEST, "invalid_body"),
            UnknownModel(_) => (StatusCode::BAD_REQUEST, "unknown_model"),
            NoCompatibleEndpoint { .. } => (StatusCode::BAD_REQUEST, "no_compatible_endpoint"),
            NoEligibleCredential { .. } => (StatusCode::FORBIDDEN, "no_eligible_credential"),
            NoCredential { .. } | NoEndpointCredential { refused: None, .. } => {
                (StatusCode::FORBIDDEN, "no_credential")
            }
            NoEndpointCredential {
                refused: Some(_), ..
            } => (StatusCode::FORBIDDEN, "no_eligible_credential"),
            BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            BodyBudgetExhausted => (StatusCode::SERVICE_UNAVAILABLE, "body_budget_exhausted"),
            UnsupportedEncoding => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
            UpstreamUnreachable => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            UpstreamRejectedCredential => (StatusCode::BAD_GATEWAY, "upstream_rejected_credential"),
            UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            KeyLimitExceeded { .. } => (StatusCode::PAYMENT_REQUIRED, "key_limit_exceeded"),
        }
    }

    /// The HTTP status this condition is answered with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The stable `metadata.reason` string; also a bounded metric label.
    pub fn reason(&self) -> &'static str {
        self.parts().1
    }

    /// The JSON body, in OpenRouter's error shape.
    pub fn to_json(&self) -> Bytes {
        let (status, reason) = self.parts();
        error_json(status, &self.to_string(), reason)
    }

    /// Whether a retry of the same request cannot succeed: every 4xx the
    /// proxy makes, and a credential the provider rejected. Answered with
    /// `x-should-retry: false`, which the OpenAI and Anthropic SDKs honour.
    pub fn is_final(&self) -> bool {
        self.status().is_client_error() || matches!(self, Rejection::UpstreamRejectedCredential)
    }

    /// A complete response carrying [`to_json`](Self::to_json), with any body type
    /// that can be built from bytes.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        self.into_response_for(None, None)
    }

    /// The response on a provider's route: OpenRouter's shape plus the fields
    /// that provider's SDKs read (SPEC §6), and `x-should-retry: false` where
    /// a retry cannot help. `request_id` goes in Anthropic's `request-id`.
    pub fn into_response_for<B: From<Bytes>>(
        self,
        dialect: Option<Dialect>,
        request_id: Option<&HeaderValue>,
    ) -> Response<B> {
        let (mut status, reason) = self.parts();
        if dialect == Some(Dialect::Bedrock)
            && matches!(self, Rejection::UpstreamRejectedCredential)
        {
            // botocore retries every 5xx whatever the headers say, so a 502
            // would send the rejected secret upstream again up to four times.
            // Bedrock itself answers a bad key with 403 AccessDeniedException.
            status = StatusCode::FORBIDDEN;
        }
        let message = self.to_string();
        let body = match dialect {
            None => error_json(status, &message, reason),
            Some(d) => dialect_json(d, status, &message, reason, self.param()),
        };
        let mut res = json_response(status, body);
        let h = res.headers_mut();
        if self.is_final() {
            h.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
        } else if matches!(self, Rejection::BodyBudgetExhausted) {
            // Memory held by other requests' bodies: soon given back.
            h.insert(X_SHOULD_RETRY, HeaderValue::from_static("true"));
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        match dialect {
            Some(Dialect::Anthropic) => {
                if let Some(id) = request_id {
                    h.insert(HeaderName::from_static("request-id"), id.clone());
                }
            }
            Some(Dialect::Bedrock) => {
                h.insert(
                    HeaderName::from_static("x-amzn-errortype"),
                    HeaderValue::from_static(bedrock_type(status)),
                );
            }
            _ => {}
        }
        if matches!(self, Rejection::AmbiguousFraming | Rejection::BodyTimeout) {
            // The connection's framing can no longer be trusted, or its
            // client has stopped sending: it is not kept.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

/// Tells the OpenAI and Anthropic SDKs whether to retry.
const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// When to retry a request refused for the memory budget, in seconds: the
/// bodies holding it are given back as their upstreams answer.
const RETRY_AFTER_SECS: &str = "1";

impl From<crate::proxy::body::Exhausted> for Rejection {
    fn from(_: crate::proxy::body::Exhausted) -> Self {
        Rejection::BodyBudgetExhausted
    }
}

/// OpenRouter's error shape with a provider's own fields added.
fn dialect_json(
    dialect: Dialect,
    status: StatusCode,
    message: &str,
    reason: &str,
    param: Option<&str>,
) -> Bytes {
    let mut error = serde_json::json!({
        "code": status.as_u16(),
        "message": message,
        "metadata": { "reason": reason },
    });
    let mut top = serde_json::Map::new();
    match dialect {
        Dialect::OpenAi => {
            error["type"] = sdk_type(status).into();
            error["param"] = param.into();
        }
        Dialect::Anthropic => {
            error["type"] = sdk_type(status).into();
            top.insert("type".into(), "error".into());
        }
        Dialect::Google => error["status"] = google_status(status).into(),
        Dialect::Bedrock => {
            top.insert("message".into(), message.into());
        }
    }
    top.insert("error".into(), error);
    Bytes::from(serde_json::Value::Object(top).to_string())
}

/// The error type OpenAI's and Anthropic's APIs give for a status.
fn sdk_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Google's canonical code for a status.
fn google_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "UNAUTHENTICATED",
        402 => "FAILED_PRECONDITION",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "UNIMPLEMENTED",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        400..=499 => "INVALID_ARGUMENT",
        502 | 503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// Bedrock's `x-amzn-ErrorType` for a status.
fn bedrock_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => "AccessDeniedException",
        // A spend limit: Bedrock's own word for a quota, which botocore
        // does not retry.
        402 => "ServiceQuotaExceededException",
        404 => "ResourceNotFoundException",
        408 | 504 => "ModelTimeoutException",
        429 => "ThrottlingException",
        400..=499 => "ValidationException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// Client input echoed in a message: at most 120 characters.
struct Clip<'a>(&'a str);

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        let head: String = chars.by_ref().take(120).collect();
        f.write_str(&head)?;
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// The message of [`Rejection::NoEndpointCredential`].
struct EndpointsPhrase<'a>(&'a Rejection);

impl fmt::Display for EndpointsPhrase<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Rejection::NoEndpointCredential {
            providers,
            models,
            refused,
        } = self.0
        else {
            return Ok(());
        };
        match refused {
            Some(refused) => write!(
                f,
                "no credential of {providers} admits model {} for this key (refused by {refused})",
                Clip(models)
            ),
            None => write!(
                f,
                "no credential configured for {providers} in this workspace (model {})",
                Clip(models)
            ),
        }
    }
}

struct ModelPhrase<'a>(Option<&'a str>, &'a str);

impl fmt::Display for ModelPhrase<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(model) => write!(f, "model {}/{}", self.1, Clip(model)),
            None => f.write_str("requests without a model"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_code_equals_status() {
        let all = [
            Rejection::MissingApiKey,
            Rejection::InvalidApiKey,
            Rejection::AmbiguousApiKey,
            Rejection::UnknownProvider,
            Rejection::NotFound,
            Rejection::MethodNotAllowed,
            Rejection::InvalidRequest("x"),
            Rejection::AmbiguousFraming,
            Rejection::InvalidBody("x"),
            Rejection::AmbiguousModel("x"),
            Rejection::bad_field("models", "lists at most 10 models"),
            Rejection::UnknownModel("meta/llama".into()),
            Rejection::NoCompatibleEndpoint {
                models: "a/b".into(),
                why: "serves this format",
            },
            Rejection::NoEligibleCredential {
                provider: "openai".into(),
                model: None,
                refused: RefusedBy::default(),
            },
            Rejection::NoCredential {
                provider: "openai".into(),
            },
            Rejection::BodyTooLarge { limit: 1 },
            Rejection::BodyTimeout,
            Rejection::UnsupportedEncoding,
            Rejection::UpstreamUnreachable,
            Rejection::UpstreamRejectedCredential,
            Rejection::UpstreamTimeout,
        ];
        for r in all {
            let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
            assert_eq!(v["error"]["code"], r.status().as_u16(), "{r:?}");
            assert_eq!(v["error"]["metadata"]["reason"], r.reason());
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
    }

    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    #[test]
    fn each_dialect_adds_its_sdks_fields_to_openrouters() {
        let id = HeaderValue::from_static("req-1");
        // (rejection, dialect, JSON pointer, value)
        let cases: &[(Rejection, Option<Dialect>, &str, serde_json::Value)] = &[
            (
                Rejection::InvalidApiKey,
                Some(Dialect::OpenAi),
                "/error/type",
                "authentication_error".into(),
            ),
            (
                Rejection::InvalidApiKey,
                Some(Dialect::OpenAi),
                "/error/param",
                serde_json::Value::Null,
            ),
            (
                Rejection::UnknownProvider,
                Some(Dialect::OpenAi),
                "/error/type",
                "not_found_error".into(),
            ),
            (
                Rejection::bad_field("provider.order", "must be a list"),
                Some(Dialect::OpenAi),
                "/error/param",
                "provider.order".into(),
            ),
            (
                Rejection::UnknownModel("x/y".into()),
                Some(Dialect::Anthropic),
                "/error/type",
                "invalid_request_error".into(),
            ),
            (
                Rejection::BodyTooLarge { limit: 1 },
                Some(Dialect::Anthropic),
                "/error/type",
                "request_too_large".into(),
            ),
            (
                Rejection::MissingApiKey,
                Some(Dialect::Anthropic),
                "/type",
                "error".into(),
            ),
            (
                Rejection::UpstreamUnreachable,
                Some(Dialect::Anthropic),
                "/error/type",
                "api_error".into(),
            ),
            (
                Rejection::InvalidApiKey,
                Some(Dialect::Google),
                "/error/status",
                "UNAUTHENTICATED".into(),
            ),
            (
                Rejection::NoCredential {
                    provider: "g".into(),
                },
                Some(Dialect::Google),
                "/error/status",
                "PERMISSION_DENIED".into(),
            ),
            (
                Rejection::InvalidBody("x"),
                Some(Dialect::Google),
                "/error/status",
                "INVALID_ARGUMENT".into(),
            ),
            (
                Rejection::UpstreamTimeout,
                Some(Dialect::Google),
                "/error/status",
                "DEADLINE_EXCEEDED".into(),
            ),
            (
                Rejection::InvalidApiKey,
                Some(Dialect::Bedrock),
                "/message",
                "invalid gateway API key".into(),
            ),
        ];
        for (rejection, dialect, pointer, want) in cases {
            let res: Response<http_body_util::Full<Bytes>> =
                rejection.clone().into_response_for(*dialect, Some(&id));
            let body = futures_body(res.into_body());
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                v.pointer(pointer),
                Some(want),
                "{rejection:?} {dialect:?}: {v}"
            );
            // OpenRouter's fields stay.
            assert_eq!(v["error"]["code"], rejection.status().as_u16());
            assert_eq!(v["error"]["metadata"]["reason"], rejection.reason());
            assert!(v["error"]["message"].is_string());
        }
    }

    #[test]
    fn headers_say_what_to_retry_and_carry_the_sdks_ids() {
        let id = HeaderValue::from_static("req-7");
        let res: Response<http_body_util::Full<Bytes>> =
            Rejection::InvalidApiKey.into_response_for(Some(Dialect::Anthropic), Some(&id));
        assert_eq!(res.headers()["x-should-retry"], "false");
        assert_eq!(res.headers()["request-id"], "req-7");
        let res: Response<http_body_util::Full<Bytes>> = Rejection::NoCredential {
            provider: "amazon-bedrock".into(),
        }
        .into_response_for(Some(Dialect::Bedrock), Some(&id));
        assert_eq!(res.headers()["x-amzn-errortype"], "AccessDeniedException");
        // boto3 retries every 5xx: on Bedrock's route a rejected credential
        // is Bedrock's own answer to a bad key, 403, and only there.
        let res: Response<http_body_util::Full<Bytes>> = Rejection::UpstreamRejectedCredential
            .into_response_for(Some(Dialect::Bedrock), Some(&id));
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.headers()["x-amzn-errortype"], "AccessDeniedException");
        let v: serde_json::Value = serde_json::from_slice(&futures_body(res.into_body())).unwrap();
        assert_eq!(v["error"]["code"], 403);
        assert_eq!(
            v["error"]["metadata"]["reason"],
            "upstream_rejected_credential"
        );
        for dialect in [
            None,
            Some(Dialect::OpenAi),
            Some(Dialect::Anthropic),
            Some(Dialect::Google),
        ] {
            let res: Response<http_body_util::Full<Bytes>> =
                Rejection::UpstreamRejectedCredential.into_response_for(dialect, Some(&id));
            assert_eq!(res.status(), StatusCode::BAD_GATEWAY, "{dialect:?}");
        }
        // Final: every 4xx, and a rejected credential; not what may pass.
        for (r, fin) in [
            (Rejection::BodyTooLarge { limit: 1 }, true),
            (Rejection::BodyTimeout, true),
            (Rejection::UnknownProvider, true),
            (Rejection::UpstreamRejectedCredential, true),
            (Rejection::UpstreamUnreachable, false),
            (Rejection::UpstreamTimeout, false),
        ] {
            let res: Response<http_body_util::Full<Bytes>> = r.clone().into_response();
            assert_eq!(res.headers().get("x-should-retry").is_some(), fin, "{r:?}");
        }
        // The memory budget: retry, and when, in every dialect's shape.
        for dialect in [
            None,
            Some(Dialect::OpenAi),
            Some(Dialect::Anthropic),
            Some(Dialect::Google),
            Some(Dialect::Bedrock),
        ] {
            let res: Response<http_body_util::Full<Bytes>> =
                Rejection::BodyBudgetExhausted.into_response_for(dialect, Some(&id));
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{dialect:?}");
            assert_eq!(res.headers()["x-should-retry"], "true", "{dialect:?}");
            assert_eq!(res.headers()["retry-after"], "1", "{dialect:?}");
        }
    }

    /// The bytes of a `Full` body.
    fn futures_body(body: http_body_util::Full<Bytes>) -> Bytes {
        use http_body::Body;
        let mut body = std::pin::pin!(body);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match body.as_mut().poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        }
    }

    #[test]
    fn denial_message_names_the_refusing_allowlists() {
        let r = Rejection::NoEligibleCredential {
            provider: "openai".into(),
            model: Some("gpt-4o".into()),
            refused: RefusedBy {
                api_key_hashes: 0,
                models: 2,
                user_ids: 1,
                zdr: 1,
            },
        };
        assert_eq!(
            r.to_string(),
            "no credential for provider openai admits model openai/gpt-4o for this key \
             (refused by allowed_models of 2 credentials, allowed_user_ids of 1 credential, \
             zero data retention: the key requires it and 1 credential is not declared ZDR)"
        );
    }

    #[test]
    fn echoed_input_is_clipped() {
        let r = Rejection::NoEligibleCredential {
            provider: "openai".into(),
            model: Some("m".repeat(1000)),
            refused: RefusedBy::default(),
        };
        let msg = r.to_string();
        assert!(msg.chars().count() < 260, "{msg}");
        assert!(!Rejection::UnknownProvider.to_string().contains('%'));
    }
}
