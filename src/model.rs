//! TEMPORARY STUB — replaced by the strict implementation.
#![allow(dead_code, missing_docs)]
use std::borrow::Cow;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelError { InvalidBody(&'static str), Ambiguous(&'static str), InvalidPath(&'static str) }
pub(crate) fn path_model(_rest: &str) -> Result<Option<String>, ModelError> { Ok(None) }
pub(crate) fn body_model(body: &[u8]) -> Result<Option<Cow<'_, str>>, ModelError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ModelError::InvalidBody("json"))?;
    Ok(v.get("model").and_then(|m| m.as_str()).map(|s| Cow::Owned(s.to_owned())))
}
