//! How each provider takes a request of each format (SPEC §11): the path
//! after its base URL, the query, and the body's edits — and how its answer
//! is shaped for the client. No format is translated: a provider that does
//! not speak a request's format has no wire for it, and its endpoints are
//! skipped.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::fields::{OPENROUTER_ONLY, ROUTING};
use super::Format;
use crate::domain::Provider;

/// Bedrock's `anthropic_version` for Claude's Messages format.
const BEDROCK_ANTHROPIC_VERSION: &[u8] = br#""bedrock-2023-05-31""#;
/// Vertex's `anthropic_version` for Claude's Messages format.
const VERTEX_ANTHROPIC_VERSION: &[u8] = br#""vertex-2023-10-16""#;
/// The Azure OpenAI API version of the deployment paths (GA).
const AZURE_API_VERSION: &str = "api-version=2024-10-21";

/// A model id as one path segment: all but unreserved characters (and
/// `@`, Vertex's version separator) percent-encoded, so an id (an ARN
/// with `/` and `:`, say) never adds a segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// How a request of one format reaches one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wire {
    /// The path after the provider's (or credential's) base URL.
    pub(crate) path: Cow<'static, str>,
    /// The query: this one, else the client's (filtered, SPEC §4) where
    /// `client_query`, else none.
    pub(crate) query: Option<&'static str>,
    /// Whether the client's query goes along: to Anthropic's own Messages
    /// API alone (the Anthropic SDK's `?beta=true`); Google's APIs refuse
    /// a query parameter they do not know.
    pub(crate) client_query: bool,
    /// Whether the body keeps `model` (set to the endpoint's id); false
    /// where the path names the model and the body must not.
    pub(crate) body_model: bool,
    /// Members removed from the body.
    pub(crate) remove: &'static [&'static str],
    /// Members set in the body: `anthropic_version` for Bedrock and Vertex.
    pub(crate) set: Option<(&'static str, &'static [u8])>,
    /// Bedrock: the client's `anthropic-beta` header goes in the body's
    /// `anthropic_beta` list instead (as Anthropic's Bedrock SDK sends it).
    pub(crate) beta_in_body: bool,
    /// Vertex: only a service account (whose project the path takes) serves.
    pub(crate) service_account: bool,
    /// How the answer is shaped.
    pub(crate) reply: Reply,
}

/// How an answer is shaped for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    /// A JSON answer's top-level `provider` names who served it (chat
    /// completions, as OpenRouter's do).
    pub(crate) provider_field: bool,
    /// Bedrock's event stream, turned into Anthropic's server-sent events.
    pub(crate) event_stream: bool,
}

/// The wire of `format` to `provider` for `model` (the provider's id),
/// streamed or not; `None` when the provider does not speak the format,
/// or cannot take that id in its path.
pub(crate) fn wire(provider: &Provider, format: Format, model: &str, stream: bool) -> Option<Wire> {
    let slug = provider.slug.as_str();
    let remove = if slug == "openrouter" {
        ROUTING
    } else {
        OPENROUTER_ONLY
    };
    let plain = |path: Cow<'static, str>| Wire {
        path,
        query: None,
        client_query: false,
        body_model: true,
        remove,
        set: None,
        beta_in_body: false,
        service_account: false,
        reply: Reply {
            provider_field: format == Format::Chat,
            event_stream: false,
        },
    };
    match format {
        Format::Messages | Format::CountTokens => {
            messages(slug, format, model, stream, plain("/v1/messages".into()))
        }
        Format::Chat | Format::Embeddings | Format::Responses if provider.openai_compatible => {
            let (op, v1) = match format {
                Format::Chat => ("chat/completions", "/v1/chat/completions"),
                Format::Embeddings => ("embeddings", "/v1/embeddings"),
                _ => ("responses", "/v1/responses"),
            };
            let path: Cow<'static, str> = match (slug, format) {
                ("google-ai-studio", Format::Chat) => "/v1beta/openai/chat/completions".into(),
                ("google-ai-studio", Format::Embeddings) => "/v1beta/openai/embeddings".into(),
                // Vertex's OpenAI-compatible endpoint takes `publisher/model`
                // ids (`google/gemini-2.0-flash`); its Claude models are not
                // served there.
                ("google-vertex", Format::Chat) if model.contains('/') => {
                    return Some(Wire {
                        service_account: true,
                        ..plain(
                            "/v1/projects/-/locations/-/endpoints/openapi/chat/completions".into(),
                        )
                    })
                }
                ("azure", Format::Chat | Format::Embeddings) => {
                    return Some(Wire {
                        query: Some(AZURE_API_VERSION),
                        ..plain(format!("/openai/deployments/{}/{op}", segment(model)?).into())
                    })
                }
                ("azure", Format::Responses) => "/openai/v1/responses".into(),
                ("deepseek", Format::Chat) => "/chat/completions".into(),
                (
                    "anthropic" | "mistral" | "together" | "fireworks" | "deepseek",
                    Format::Responses,
                )
                | ("anthropic" | "groq" | "xai" | "deepseek", Format::Embeddings)
                | ("google-ai-studio" | "google-vertex", _) => return None,
                _ => v1.into(),
            };
            Some(plain(path))
        }
        _ => None,
    }
}

/// Anthropic's Messages (and its token count) to the three hosts of Claude.
fn messages(slug: &str, format: Format, model: &str, stream: bool, plain: Wire) -> Option<Wire> {
    let reply = Reply {
        provider_field: false,
        event_stream: false,
    };
    match (slug, format) {
        ("anthropic", Format::Messages) => Some(Wire {
            reply,
            client_query: true,
            ..plain
        }),
        ("anthropic", Format::CountTokens) => Some(Wire {
            reply,
            client_query: true,
            ..Wire {
                path: "/v1/messages/count_tokens".into(),
                ..plain
            }
        }),
        ("amazon-bedrock", Format::Messages) => {
            let op = if stream {
                "invoke-with-response-stream"
            } else {
                "invoke"
            };
            Some(Wire {
                path: format!("/model/{}/{op}", segment(model)?).into(),
                body_model: false,
                remove: BEDROCK_REMOVE,
                set: Some(("anthropic_version", BEDROCK_ANTHROPIC_VERSION)),
                beta_in_body: true,
                reply: Reply {
                    event_stream: stream,
                    ..reply
                },
                ..plain
            })
        }
        ("google-vertex", Format::Messages) => {
            let method = if stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            Some(Wire {
                path: format!(
                    "/v1/projects/-/locations/-/publishers/anthropic/models/{}:{method}",
                    segment(model)?
                )
                .into(),
                body_model: false,
                set: Some(("anthropic_version", VERTEX_ANTHROPIC_VERSION)),
                service_account: true,
                reply,
                ..plain
            })
        }
        _ => None,
    }
}

/// Bedrock's body: Anthropic's, without what the path says (`model`,
/// `stream`) and without OpenRouter's members.
const BEDROCK_REMOVE: &[&str] = &[
    "stream",
    "models",
    "fallbacks",
    "provider",
    "route",
    "transforms",
    "plugins",
    "preset",
    "usage",
    "debug",
];

/// `model` as one path segment; `None` for a dot segment, which an
/// upstream could normalise away.
fn segment(model: &str) -> Option<String> {
    if model == "." || model == ".." {
        return None;
    }
    Some(utf8_percent_encode(model, SEGMENT).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Providers;

    fn path_of(slug: &str, format: Format, model: &str, stream: bool) -> Option<String> {
        let providers = Providers::builtins();
        let p = providers.get(slug).unwrap();
        wire(p, format, model, stream).map(|w| match w.query {
            Some(q) => format!("{}?{q}", w.path),
            None => w.path.into_owned(),
        })
    }

    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    #[test]
    fn paths_table() {
        use Format::*;
        let cases: &[(&str, Format, &str, bool, Option<&str>)] = &[
            ("openai", Chat, "gpt-4o", false, Some("/v1/chat/completions")),
            ("openai", Embeddings, "e", false, Some("/v1/embeddings")),
            ("openai", Responses, "gpt-4o", true, Some("/v1/responses")),
            ("openai", Messages, "gpt-4o", false, None),
            ("anthropic", Messages, "claude", true, Some("/v1/messages")),
            ("anthropic", CountTokens, "claude", false, Some("/v1/messages/count_tokens")),
            ("anthropic", Chat, "claude", false, Some("/v1/chat/completions")),
            ("anthropic", Responses, "claude", false, None),
            ("anthropic", Embeddings, "claude", false, None),
            (
                "amazon-bedrock",
                Messages,
                "anthropic.claude-sonnet-4-20250514-v1:0",
                false,
                Some("/model/anthropic.claude-sonnet-4-20250514-v1%3A0/invoke"),
            ),
            (
                "amazon-bedrock",
                Messages,
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.x",
                true,
                Some("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.x/invoke-with-response-stream"),
            ),
            ("amazon-bedrock", Messages, "..", false, None),
            ("amazon-bedrock", Chat, "x", false, None),
            ("amazon-bedrock", CountTokens, "x", false, None),
            (
                "google-vertex",
                Messages,
                "claude-sonnet-4@20250514",
                false,
                Some("/v1/projects/-/locations/-/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"),
            ),
            (
                "google-vertex",
                Messages,
                "claude-sonnet-4@20250514",
                true,
                Some("/v1/projects/-/locations/-/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"),
            ),
            (
                "google-vertex",
                Chat,
                "google/gemini-2.0-flash",
                false,
                Some("/v1/projects/-/locations/-/endpoints/openapi/chat/completions"),
            ),
            ("google-vertex", Embeddings, "x", false, None),
            ("google-ai-studio", Chat, "gemini-2.0-flash", false, Some("/v1beta/openai/chat/completions")),
            ("google-ai-studio", Embeddings, "e", false, Some("/v1beta/openai/embeddings")),
            ("google-ai-studio", Responses, "g", false, None),
            ("google-ai-studio", Messages, "g", false, None),
            (
                "azure",
                Chat,
                "gpt-4o",
                false,
                Some("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"),
            ),
            (
                "azure",
                Embeddings,
                "my/emb",
                false,
                Some("/openai/deployments/my%2Femb/embeddings?api-version=2024-10-21"),
            ),
            ("azure", Responses, "gpt-4o", false, Some("/openai/v1/responses")),
            ("deepseek", Chat, "deepseek-chat", false, Some("/chat/completions")),
            ("deepseek", Responses, "d", false, None),
            ("groq", Chat, "llama", false, Some("/v1/chat/completions")),
            ("groq", Responses, "llama", false, Some("/v1/responses")),
            ("mistral", Embeddings, "mistral-embed", false, Some("/v1/embeddings")),
            ("openrouter", Chat, "anthropic/claude-3", false, Some("/v1/chat/completions")),
            ("openrouter", Messages, "anthropic/claude-3", false, None),
        ];
        for (slug, format, model, stream, want) in cases {
            assert_eq!(
                path_of(slug, *format, model, *stream).as_deref(),
                *want,
                "{slug} {format:?} {model}"
            );
        }
    }

    #[test]
    fn bodies_and_replies() {
        let providers = Providers::builtins();
        let get = |slug| providers.get(slug).unwrap();
        let bedrock = wire(get("amazon-bedrock"), Format::Messages, "m", true).unwrap();
        assert!(!bedrock.body_model && bedrock.beta_in_body && bedrock.reply.event_stream);
        assert!(bedrock.remove.contains(&"stream"));
        assert_eq!(
            bedrock.set,
            Some(("anthropic_version", BEDROCK_ANTHROPIC_VERSION))
        );
        let vertex = wire(get("google-vertex"), Format::Messages, "m", true).unwrap();
        assert!(!vertex.body_model && vertex.service_account && !vertex.reply.event_stream);
        assert!(
            !vertex.remove.contains(&"stream"),
            "streamRawPredict reads it"
        );
        let chat = wire(get("openai"), Format::Chat, "m", false).unwrap();
        assert!(chat.body_model && chat.reply.provider_field && chat.set.is_none());
        assert!(chat.remove.contains(&"plugins"));
        let router = wire(get("openrouter"), Format::Chat, "m", false).unwrap();
        assert!(router.remove.contains(&"models") && !router.remove.contains(&"plugins"));
        let mut custom = (**get("openai")).clone();
        custom.slug = "local-llm".into();
        assert_eq!(
            wire(&custom, Format::Responses, "m", false)
                .map(|w| w.path)
                .as_deref(),
            Some("/v1/responses")
        );
        custom.openai_compatible = false;
        assert!(wire(&custom, Format::Chat, "m", false).is_none());
    }
}
