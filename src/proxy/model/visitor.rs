//! [`body_model`] as a `serde_json` visitor over the top-level map.
//!
//! `serde_json` checks the grammar; the visitor reads only the top-level keys
//! (decoded, borrowed when unescaped) and the `model` string, and skips every
//! other value with [`IgnoredAny`], which builds nothing. `IgnoredAny` checks
//! less than a parsed value: it takes lone surrogate escapes and has no depth
//! limit, so [`strict_extras`] checks those two in a second pass.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::error::Category;

use super::{
    classify_decoded_key, hex4, invalid, KeyKind, ModelError, MAX_DEPTH, MSG_BOM, MSG_CASE_VARIANT,
    MSG_CONTROL, MSG_DEPTH, MSG_DUPLICATE_MODEL, MSG_EMPTY, MSG_EOF, MSG_ESCAPE,
    MSG_EXPECTED_COLON, MSG_EXPECTED_COMMA, MSG_EXPECTED_KEY, MSG_LITERAL, MSG_MODEL_NOT_STRING,
    MSG_NOT_UTF8, MSG_NUMBER, MSG_SURROGATE, MSG_TRAILING, MSG_UNEXPECTED,
};

/// [`super::body_model`]'s contract, read with `serde_json` and, when
/// `strict`, the second pass.
pub(crate) fn body_model(body: &[u8], strict: bool) -> Result<Option<Cow<'_, str>>, ModelError> {
    if body.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(invalid(MSG_BOM));
    }
    let text = std::str::from_utf8(body).map_err(|_| invalid(MSG_NOT_UTF8))?;
    let start = text.trim_start_matches([' ', '\t', '\n', '\r']);
    if start.is_empty() {
        return Err(invalid(MSG_EMPTY));
    }
    let refused = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let read = if start.starts_with('{') {
        (&mut de).deserialize_map(TopLevel { refused: &refused })
    } else {
        de::Deserialize::deserialize(&mut de).map(|IgnoredAny| None)
    };
    let model = read
        .and_then(|model| de.end().map(|()| model))
        .map_err(|e| refused.get().unwrap_or_else(|| invalid(message(&e))))?;
    if strict {
        strict_extras(body)?;
    }
    Ok(model)
}

/// Our static message for a `serde_json` error (whose text we never pass on).
fn message(e: &serde_json::Error) -> &'static str {
    if e.classify() == Category::Eof {
        return MSG_EOF;
    }
    if e.classify() == Category::Data {
        return MSG_MODEL_NOT_STRING;
    }
    let text = e.to_string();
    let table: [(&str, &'static str); 12] = [
        ("expected `:`", MSG_EXPECTED_COLON),
        ("expected `,`", MSG_EXPECTED_COMMA),
        ("expected ident", MSG_LITERAL),
        ("expected value", MSG_UNEXPECTED),
        ("invalid escape", MSG_ESCAPE),
        ("invalid number", MSG_NUMBER),
        ("number out of range", MSG_NUMBER),
        ("control character", MSG_CONTROL),
        ("key must be a string", MSG_EXPECTED_KEY),
        ("trailing comma", MSG_EXPECTED_KEY),
        ("trailing characters", MSG_TRAILING),
        ("recursion limit", MSG_DEPTH),
    ];
    table
        .iter()
        .find(|(prefix, _)| text.starts_with(prefix))
        .map_or(
            if text.contains("surrogate") || text.contains("hex escape") {
                MSG_SURROGATE
            } else {
                MSG_UNEXPECTED
            },
            |&(_, m)| m,
        )
}

/// Visits the top-level object; `refused` carries our own errors out.
struct TopLevel<'r> {
    /// Set when the visitor refuses the body for a model rule.
    refused: &'r Cell<Option<ModelError>>,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut model = None;
        while let Some(kind) = map.next_key_seed(Key)? {
            let refuse = |e: ModelError| {
                self.refused.set(Some(e));
                de::Error::custom(e.message())
            };
            match kind {
                KeyKind::Other | KeyKind::ModelList => {
                    map.next_value::<IgnoredAny>()?;
                }
                KeyKind::CaseVariant => {
                    return Err(refuse(ModelError::Ambiguous(MSG_CASE_VARIANT)))
                }
                KeyKind::Model if model.is_some() => {
                    return Err(refuse(ModelError::Ambiguous(MSG_DUPLICATE_MODEL)))
                }
                KeyKind::Model => model = Some(map.next_value_seed(Text)?),
            }
        }
        Ok(model)
    }
}

/// Reads a key as what it means for the model, without allocating.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = KeyKind;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<KeyKind, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key {
    type Value = KeyKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyKind, E> {
        Ok(classify_decoded_key(key))
    }
}

/// Reads the model string, borrowed when it has no escapes.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// On a document `serde_json` has accepted: at most [`MAX_DEPTH`] levels of
/// nesting, and every surrogate escape in a proper pair.
fn strict_extras(bytes: &[u8]) -> Result<(), ModelError> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        at += 1;
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(invalid(MSG_DEPTH));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => loop {
                let rest = bytes.get(at..).unwrap_or(&[]);
                let Some(offset) = memchr::memchr2(b'"', b'\\', rest) else {
                    return Err(invalid(MSG_EOF));
                };
                at += offset + 1;
                if rest.get(offset) == Some(&b'"') {
                    break;
                }
                at += escape_len(bytes.get(at..).unwrap_or(&[]))?;
            },
            _ => {}
        }
    }
    Ok(())
}

/// The length, after the backslash, of a valid escape; an error for a
/// surrogate escape that is not half of a proper pair.
fn escape_len(rest: &[u8]) -> Result<usize, ModelError> {
    if rest.first() != Some(&b'u') {
        return Ok(1);
    }
    match (hex4(rest.get(1..5))?, rest.get(5..7), hex4(rest.get(7..11))) {
        (0xD800..=0xDBFF, Some(b"\\u"), Ok(0xDC00..=0xDFFF)) => Ok(11),
        (0xD800..=0xDFFF, _, _) => Err(invalid(MSG_SURROGATE)),
        _ => Ok(5),
    }
}
