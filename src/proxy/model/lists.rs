//! The other models a body names: OpenRouter's `models` (the list it falls
//! back along, with `"route": "fallback"`) and `fallbacks`. Every one of them
//! must be admitted, or a credential limited to one model would serve
//! whichever model the upstream falls back to.
//!
//! Read only from a body the strict scanner accepted and flagged (it saw a
//! top-level key equal to `models` or `fallbacks` ignoring case), so the
//! common body costs nothing more, and `serde_json`'s leniency in the values
//! it skips does not matter here.

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use std::cell::Cell;
use std::fmt;

use super::ModelError;

const MSG_LIST_NOT_STRINGS: &str = "\"models\" and \"fallbacks\" must be lists of model strings";
const MSG_LIST_DUPLICATE: &str =
    "\"models\" or \"fallbacks\" appears more than once at the top level";
const MSG_LIST_CASE: &str = "a top-level key differs from \"models\" or \"fallbacks\" only in case";

/// Every model the top-level `models` and `fallbacks` lists name, in order.
/// The body must be one the scanner accepted.
pub(crate) fn named_models(body: &[u8]) -> Result<Vec<String>, ModelError> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(ModelError::InvalidBody(MSG_LIST_NOT_STRINGS));
    };
    if !text.trim_start().starts_with('{') {
        return Ok(Vec::new());
    }
    let refused = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    (&mut de)
        .deserialize_map(Lists { refused: &refused })
        .map_err(|_| {
            refused
                .get()
                .unwrap_or(ModelError::InvalidBody(MSG_LIST_NOT_STRINGS))
        })
}

/// The top-level map: `models` and `fallbacks` read, everything else skipped.
struct Lists<'r> {
    refused: &'r Cell<Option<ModelError>>,
}

impl<'de> Visitor<'de> for Lists<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut named = Vec::new();
        let mut seen = [false; 2];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match &*key {
                "models" => 0,
                "fallbacks" => 1,
                other if folds_to_a_list(other) => {
                    self.refused.set(Some(ModelError::Ambiguous(MSG_LIST_CASE)));
                    return Err(de::Error::custom("case"));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                self.refused
                    .set(Some(ModelError::Ambiguous(MSG_LIST_DUPLICATE)));
                return Err(de::Error::custom("duplicate"));
            }
            match map.next_value::<Option<Vec<String>>>() {
                Ok(list) => named.extend(list.unwrap_or_default()),
                Err(e) => {
                    self.refused
                        .set(Some(ModelError::InvalidBody(MSG_LIST_NOT_STRINGS)));
                    return Err(e);
                }
            }
        }
        Ok(named)
    }
}

/// Whether a key other than `models` and `fallbacks` equals one of them
/// ignoring case (as the scanner folds keys).
fn folds_to_a_list(key: &str) -> bool {
    ["models", "fallbacks"]
        .iter()
        .any(|k| key.chars().flat_map(char::to_lowercase).eq(k.chars()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_table() {
        use ModelError::{Ambiguous, InvalidBody};
        let named = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let cases: Vec<(&str, Result<Vec<String>, ModelError>)> = vec![
            (r#"{"model":"a"}"#, named(&[])),
            (r#"{"model":"a","models":["a","b"]}"#, named(&["a", "b"])),
            (r#"{"models":["a"],"fallbacks":["c"]}"#, named(&["a", "c"])),
            (r#"{"\u006dodels":["x"]}"#, named(&["x"])),
            (r#"{"models":null}"#, named(&[])),
            (r#"{"x":{"models":["nested"]}}"#, named(&[])),
            (r#"[1]"#, named(&[])),
            (r#"{"models":"a"}"#, Err(InvalidBody(MSG_LIST_NOT_STRINGS))),
            (r#"{"models":[1]}"#, Err(InvalidBody(MSG_LIST_NOT_STRINGS))),
            (
                r#"{"models":["a"],"models":["b"]}"#,
                Err(Ambiguous(MSG_LIST_DUPLICATE)),
            ),
            (r#"{"Models":["b"]}"#, Err(Ambiguous(MSG_LIST_CASE))),
            (r#"{"FALLBACKS":["b"]}"#, Err(Ambiguous(MSG_LIST_CASE))),
        ];
        for (body, want) in cases {
            assert_eq!(named_models(body.as_bytes()), want, "{body}");
        }
    }
}
