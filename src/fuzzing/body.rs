//! The body's model (SPEC §4) against a plain `serde_json` parse.

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

use super::folded;
use crate::proxy::model::{self, BodyModel, ModelError};

/// What `serde_json` makes of a body.
enum Reading {
    /// It rejects the document, as SPEC §4 does.
    Rejected,
    /// It rejects the document for a reason SPEC §4 does not share, so the
    /// proxy may read it: a number beyond `f64` (RFC 8259 sets no limit, the
    /// proxy forwards the bytes and never reads the number) or 128 levels of
    /// nesting (`serde_json` stops at 127, the proxy at 128).
    Differs,
    /// A valid document whose top level is not an object.
    NotObject,
    /// A top-level object's members in order, duplicates kept (a
    /// `serde_json::Value` would keep only the last).
    Object(Vec<(String, Value)>),
}

/// The top-level members, read by `serde_json` without collapsing duplicates.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Value>()? {
            members.push(member);
        }
        Ok(members)
    }
}

fn serde_reading(data: &[u8]) -> Reading {
    match serde_json::from_slice::<Value>(data) {
        Err(e) => {
            let why = e.to_string();
            if why.starts_with("number out of range") || why.starts_with("recursion limit") {
                Reading::Differs
            } else {
                Reading::Rejected
            }
        }
        Ok(Value::Object(_)) => {
            let mut de = serde_json::Deserializer::from_slice(data);
            match (&mut de).deserialize_map(Members) {
                Ok(members) => Reading::Object(members),
                Err(_) => Reading::Differs,
            }
        }
        Ok(_) => Reading::NotObject,
    }
}

/// The body model reader: no panic, and agreement with `serde_json`.
pub fn body_model(data: &[u8]) {
    let ours = model::read_body_model(data);
    let public = crate::body_model(data);
    assert_eq!(
        public.as_ref().ok().map(|m| m.as_deref()),
        ours.as_ref().ok().map(|read| read.model.as_deref()),
        "byok_proxy::body_model and the layer's reader differ"
    );
    match serde_reading(data) {
        Reading::Differs => {}
        Reading::Rejected => assert!(
            ours.is_err(),
            "serde_json rejects a body the proxy reads: {ours:?}"
        ),
        Reading::NotObject => assert!(
            matches!(&ours, Ok(read) if read.model.is_none() && !read.lists),
            "a document that is not an object: {ours:?}"
        ),
        Reading::Object(members) => {
            check_model(&ours, &members);
            if let Ok(read) = &ours {
                check_lists(data, read, &members);
            }
        }
    }
}

/// The model rules on a document `serde_json` accepts.
fn check_model(ours: &Result<BodyModel<'_>, ModelError>, members: &[(String, Value)]) {
    let models: Vec<&Value> = members
        .iter()
        .filter(|(key, _)| key == "model")
        .map(|(_, value)| value)
        .collect();
    let case_variant = members
        .iter()
        .any(|(key, _)| key != "model" && folded(key) == "model");
    let ours_model = ours.as_ref().map(|read| read.model.as_deref());
    match (models.as_slice(), case_variant) {
        // Ambiguous: refused, as ambiguous or (when the first `model`
        // comes first and is not a string) as not a string.
        (_, true) | ([_, _, ..], _) => assert!(ours.is_err(), "an ambiguous model: {ours:?}"),
        ([], false) => assert_eq!(ours_model, Ok(None), "no model"),
        ([Value::String(model)], false) => {
            assert_eq!(ours_model, Ok(Some(model.as_str())), "the model")
        }
        ([_], false) => assert!(
            matches!(ours, Err(ModelError::InvalidBody(_))),
            "a model that is not a string: {ours:?}"
        ),
    }
}

/// OpenRouter's `models` and `fallbacks`: flagged when a top-level key folds
/// to one of them, and read as `serde_json` reads them.
fn check_lists(data: &[u8], read: &BodyModel<'_>, members: &[(String, Value)]) {
    let listed = members
        .iter()
        .any(|(key, _)| matches!(&*folded(key), "models" | "fallbacks"));
    assert_eq!(read.lists, listed, "whether the body names more models");
    if listed {
        assert_eq!(
            model::named_models(data).ok(),
            reference_lists(members),
            "the other models the body names"
        );
    }
}

/// Every model of the top-level `models` and `fallbacks` (each `null` or a
/// list of strings, each at most once, no case variant), in order.
fn reference_lists(members: &[(String, Value)]) -> Option<Vec<String>> {
    let mut seen = [false; 2];
    let mut named = Vec::new();
    for (key, value) in members {
        let slot = match key.as_str() {
            "models" => 0,
            "fallbacks" => 1,
            other if matches!(&*folded(other), "models" | "fallbacks") => return None,
            _ => continue,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    named.push(item.as_str()?.to_owned());
                }
            }
            _ => return None,
        }
    }
    Some(named)
}
