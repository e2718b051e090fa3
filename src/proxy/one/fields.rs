//! What a body of the one endpoint asks beyond its own format (SPEC §11):
//! the models in order (its `model`, then OpenRouter's `models` list), the
//! `provider` preferences, and whether it streams. Read from the body's
//! top-level members ([`edit::members`](super::edit::members)), each value
//! parsed alone; the body itself has passed the strict rules of §4 first.

use std::borrow::Cow;

use super::edit::Member;
use super::Format;
use crate::domain::valid_model_slug;
use crate::proxy::error::Rejection;

/// The most models OpenRouter's `models` list may name.
pub(crate) const MAX_MODELS: usize = 10;

/// The most entries a list of `provider` may have.
const MAX_PROVIDERS: usize = 100;

/// What the body asks.
#[derive(Debug)]
pub(crate) struct Asked<'b> {
    /// The models, in order, each once: `model`, then `models`' others.
    pub(crate) models: Vec<Cow<'b, str>>,
    /// OpenRouter's `provider` object.
    pub(crate) prefs: Prefs,
    /// `"stream": true`.
    pub(crate) stream: bool,
}

/// OpenRouter's provider preferences (its `provider` object): provider
/// names, compared with a provider's slug or OpenRouter name ignoring case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prefs {
    /// These providers' endpoints first, in this order.
    pub(crate) order: Vec<String>,
    /// Only these providers, when given.
    pub(crate) only: Option<Vec<String>>,
    /// Never these.
    pub(crate) ignore: Vec<String>,
    /// False: for each model, only its first endpoint's provider.
    pub(crate) allow_fallbacks: bool,
    /// True: only zero-data-retention credentials, as a key's `require_zdr`.
    pub(crate) zdr: bool,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs {
            order: Vec::new(),
            only: None,
            ignore: Vec::new(),
            allow_fallbacks: true,
            zdr: false,
        }
    }
}

impl Prefs {
    /// Whether `name` (from a list of these preferences) names the provider
    /// with `slug` and OpenRouter name `display`.
    pub(crate) fn names(name: &str, slug: &str, display: &str) -> bool {
        name.eq_ignore_ascii_case(slug) || name.eq_ignore_ascii_case(display)
    }
}

/// The members only OpenRouter reads: never sent to another provider.
pub(crate) const OPENROUTER_ONLY: &[&str] = &[
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

/// The members that choose models and providers: the proxy has chosen, so
/// even OpenRouter does not get them.
pub(crate) const ROUTING: &[&str] = &["models", "fallbacks", "provider", "route"];

/// Reads what `body` (whose top-level members are `members`, and whose
/// `model`, read under the strict rules, is `model`) asks on a route of
/// `format`.
pub(crate) fn read<'b>(
    body: &'b [u8],
    members: &[Member<'b>],
    model: Option<Cow<'b, str>>,
    format: Format,
) -> Result<Asked<'b>, Rejection> {
    let mut models: Vec<Cow<'b, str>> = Vec::new();
    if let Some(m) = model {
        models.push(slug(m, format, "model")?);
    }
    let mut prefs = Prefs::default();
    let mut stream = false;
    let mut seen = [false; 3];
    for m in members {
        let value = &body[m.value.clone()];
        let (i, field) = match &*m.key {
            "models" => (0, "models"),
            "provider" => (1, "provider"),
            "stream" => (2, "stream"),
            other => {
                let variant = ["models", "provider"]
                    .into_iter()
                    .find(|k| other.eq_ignore_ascii_case(k));
                if let Some(field) = variant {
                    return Err(Rejection::bad_field(
                        field,
                        "is spelt in another case by a top-level key: upstreams differ in which they read",
                    ));
                }
                continue;
            }
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(Rejection::bad_field(field, "appears more than once"));
        }
        match i {
            0 => {
                for listed in models_list(value)? {
                    let listed = slug(Cow::Owned(listed), format, "models")?;
                    if !models.contains(&listed) {
                        models.push(listed);
                    }
                }
            }
            1 => prefs = provider(value)?,
            _ => stream = value == b"true",
        }
    }
    if models.is_empty() {
        return Err(Rejection::bad_field(
            "model",
            "is required: a model slug such as \"anthropic/claude-sonnet-4\"",
        ));
    }
    Ok(Asked {
        models,
        prefs,
        stream,
    })
}

/// A model as a slug: `{author}/{model}`, a bare model read with the
/// route's author.
fn slug<'b>(
    model: Cow<'b, str>,
    format: Format,
    field: &'static str,
) -> Result<Cow<'b, str>, Rejection> {
    let model = if model.contains('/') {
        model
    } else {
        Cow::Owned(format!("{}/{model}", format.default_author()))
    };
    if !valid_model_slug(&model) {
        return Err(Rejection::bad_field(
            field,
            "is not a model slug: \"author/model\" in printable ASCII, without spaces or quotes",
        ));
    }
    Ok(model)
}

/// `models`: a list of at most [`MAX_MODELS`] strings (`null`: none).
fn models_list(value: &[u8]) -> Result<Vec<String>, Rejection> {
    let list: Option<Vec<String>> = serde_json::from_slice(value)
        .map_err(|_| Rejection::bad_field("models", "must be a list of model slugs (strings)"))?;
    let list = list.unwrap_or_default();
    if list.len() > MAX_MODELS {
        return Err(Rejection::bad_field("models", "lists at most 10 models"));
    }
    Ok(list)
}

/// `provider`: an object (`null`: no preferences); its lists of names and
/// its flags checked for their types, anything else in it ignored.
fn provider(value: &[u8]) -> Result<Prefs, Rejection> {
    let object: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(value)
        .map_err(|_| Rejection::bad_field("provider", "must be an object"))?;
    let mut prefs = Prefs::default();
    let Some(object) = object else {
        return Ok(prefs);
    };
    for (key, value) in object {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "order" => prefs.order = names("provider.order", value)?,
            "only" => prefs.only = Some(names("provider.only", value)?),
            "ignore" => prefs.ignore = names("provider.ignore", value)?,
            "allow_fallbacks" => prefs.allow_fallbacks = flag("provider.allow_fallbacks", &value)?,
            "zdr" => prefs.zdr = flag("provider.zdr", &value)?,
            // `sort`, `data_collection`, `require_parameters`, `quantizations`,
            // `max_price`, …: accepted, and of no effect here.
            _ => {}
        }
    }
    Ok(prefs)
}

fn names(field: &'static str, value: serde_json::Value) -> Result<Vec<String>, Rejection> {
    let list: Vec<String> = serde_json::from_value(value)
        .map_err(|_| Rejection::bad_field(field, "must be a list of provider names (strings)"))?;
    if list.len() > MAX_PROVIDERS {
        return Err(Rejection::bad_field(field, "lists at most 100 providers"));
    }
    Ok(list)
}

fn flag(field: &'static str, value: &serde_json::Value) -> Result<bool, Rejection> {
    value
        .as_bool()
        .ok_or_else(|| Rejection::bad_field(field, "must be true or false"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::one::edit;

    fn asked(
        body: &str,
        format: Format,
    ) -> Result<(Vec<String>, Prefs, bool), (&'static str, String)> {
        let bytes = body.as_bytes();
        let members = edit::members(bytes).expect("an object");
        let model = crate::proxy::model::body_model(bytes).expect("strict rules");
        read(bytes, &members, model, format)
            .map(|a| {
                (
                    a.models.iter().map(|m| m.to_string()).collect(),
                    a.prefs,
                    a.stream,
                )
            })
            .map_err(|r| (r.reason(), r.to_string()))
    }

    #[test]
    fn models_in_order_each_once() {
        let (models, prefs, stream) = asked(
            r#"{"model":"anthropic/claude-sonnet-4","models":["openai/gpt-4o","anthropic/claude-sonnet-4","gpt-4o-mini"],"stream":true}"#,
            Format::Chat,
        )
        .unwrap();
        assert_eq!(
            models,
            [
                "anthropic/claude-sonnet-4",
                "openai/gpt-4o",
                "openai/gpt-4o-mini"
            ]
        );
        assert_eq!(prefs, Prefs::default());
        assert!(stream);
        let (models, _, stream) = asked(
            r#"{"model":"claude-sonnet-4","stream":false}"#,
            Format::Messages,
        )
        .unwrap();
        assert_eq!(models, ["anthropic/claude-sonnet-4"]);
        assert!(!stream);
        let (models, _, _) = asked(r#"{"models":["a/b","c/d"]}"#, Format::Chat).unwrap();
        assert_eq!(
            models,
            ["a/b", "c/d"],
            "models alone: the first is the model"
        );
    }

    #[test]
    fn provider_preferences() {
        let (_, prefs, _) = asked(
            r#"{"model":"a/b","provider":{"order":["Amazon Bedrock","anthropic"],"only":["anthropic"],"ignore":["azure"],"allow_fallbacks":false,"zdr":true,"sort":"price","data_collection":"deny","x":1}}"#,
            Format::Chat,
        )
        .unwrap();
        assert_eq!(
            prefs,
            Prefs {
                order: vec!["Amazon Bedrock".into(), "anthropic".into()],
                only: Some(vec!["anthropic".into()]),
                ignore: vec!["azure".into()],
                allow_fallbacks: false,
                zdr: true,
            }
        );
        let (_, prefs, _) = asked(r#"{"model":"a/b","provider":null}"#, Format::Chat).unwrap();
        assert_eq!(prefs, Prefs::default());
        let (_, prefs, _) =
            asked(r#"{"model":"a/b","provider":{"order":null}}"#, Format::Chat).unwrap();
        assert_eq!(prefs, Prefs::default());
        assert!(Prefs::names(
            "amazon bedrock",
            "amazon-bedrock",
            "Amazon Bedrock"
        ));
        assert!(Prefs::names(
            "Amazon-Bedrock",
            "amazon-bedrock",
            "Amazon Bedrock"
        ));
        assert!(!Prefs::names("bedrock", "amazon-bedrock", "Amazon Bedrock"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let eleven: Vec<String> = (0..11).map(|i| format!("\"a/m{i}\"")).collect();
        let eleven = format!(r#"{{"model":"a/b","models":[{}]}}"#, eleven.join(","));
        let cases: &[(&str, &str)] = &[
            (r#"{"messages":[]}"#, "model"),
            (r#"{"model":"a/b","models":"c/d"}"#, "models"),
            (r#"{"model":"a/b","models":[1]}"#, "models"),
            (&eleven, "models"),
            (r#"{"model":"a/b","models":["x y"]}"#, "models"),
            (r#"{"model":"a b"}"#, "model"),
            (r#"{"model":"/b"}"#, "model"),
            (r#"{"model":"a/b","provider":"anthropic"}"#, "provider"),
            (r#"{"model":"a/b","provider":[]}"#, "provider"),
            (
                r#"{"model":"a/b","provider":{"order":"anthropic"}}"#,
                "provider.order",
            ),
            (
                r#"{"model":"a/b","provider":{"only":[1]}}"#,
                "provider.only",
            ),
            (
                r#"{"model":"a/b","provider":{"ignore":{}}}"#,
                "provider.ignore",
            ),
            (
                r#"{"model":"a/b","provider":{"allow_fallbacks":"no"}}"#,
                "provider.allow_fallbacks",
            ),
            (r#"{"model":"a/b","provider":{"zdr":1}}"#, "provider.zdr"),
            (r#"{"model":"a/b","provider":{},"provider":{}}"#, "provider"),
            (r#"{"model":"a/b","models":[],"models":[]}"#, "models"),
            (r#"{"model":"a/b","Models":[]}"#, "models"),
            (r#"{"model":"a/b","PROVIDER":{}}"#, "provider"),
        ];
        for (body, field) in cases {
            let (reason, message) = asked(body, Format::Chat).unwrap_err();
            assert_eq!(reason, "invalid_body", "{body}");
            assert!(
                message.contains(&format!("\"{field}\"")),
                "{body}: {message}"
            );
        }
    }
}
