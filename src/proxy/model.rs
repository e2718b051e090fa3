//! Finding which model a request asks for, under strict rules.
//!
//! A request can name its model in two places: the request path (Google's
//! `…/models/{model}:{method}`, Bedrock's `…/model/{model}/{action}`, Azure's
//! `…/deployments/{deployment}/{action}`) and
//! the top-level `"model"` member of a JSON body (OpenAI, Anthropic, …). The
//! proxy's model policy is only as good as its agreement with the upstream
//! about which model that is, so both readers refuse anything that a
//! different parser could read differently:
//!
//! * [`path_model`] reads Google's `…/models/{model}:{method}`, Bedrock's
//!   `…/model/{model}/{op}` and Azure OpenAI's `…/deployments/{deployment}/{op}`
//!   (the deployment decides the model there). It percent-decodes every `/`-separated segment before
//!   matching (the upstream decodes too), rejects malformed percent-encoding,
//!   non-UTF-8 segments, dot segments (`.`/`..`, which an upstream could
//!   normalise away) and empty model ids, and calls the path ambiguous when it
//!   names two different models or when an encoded slash (`%2F`) or a
//!   backslash sits next to a `model`/`models` keyword.
//! * [`body_model`] accepts only one complete RFC 8259 JSON document: UTF-8
//!   without BOM, only the four JSON whitespace bytes, exact literals, the RFC
//!   number grammar (any magnitude), strings without raw control bytes, only
//!   the standard escapes, surrogate escapes only as proper pairs, no trailing
//!   commas or trailing data, and at most 128 levels of nesting. Of a
//!   top-level object it reads the keys with their escapes decoded (so
//!   `"\u006dodel"` is `model`): the first `model` must be a string, a second
//!   one is ambiguous, and so is any other key that equals `model` ignoring
//!   case (`Model`, `MODEL`, …), since some upstreams match keys that way.
//!   Nested keys are validated but otherwise ignored.
//!
//! Against `serde_json` (which the tests compare with), the scanner differs
//! only where it is more permissive in harmless ways: numbers of any magnitude
//! are accepted (`serde_json` rejects f64 overflow such as `1e400`) and
//! exactly 128 levels of nesting are accepted (`serde_json` stops at 127).
//!
//! The body scanner is iterative (a 128-bit stack of container kinds), never
//! builds a tree, and allocates only to decode an escaped top-level key or an
//! escaped model string. Error messages are static and never echo input.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;

/// The `serde_json` visitor that issue 9 measured against the scanner (the
/// scanner stayed: see the module's docs); kept for the `model` benchmark
/// and the tests below, not used by the proxy.
#[cfg(test)]
#[path = "model/visitor.rs"]
pub(crate) mod visitor;

#[path = "model/lists.rs"]
mod lists;

pub(crate) use lists::named_models;

/// The deepest nesting of arrays and objects a body may have.
const MAX_DEPTH: usize = 128;

/// Longest escaped top-level key (raw bytes between the quotes) that could
/// still decode to at most five characters, i.e. could be `model` in any
/// case: five characters of at most 12 escaped bytes each.
const MAX_ESCAPED_MODEL_KEY_LEN: usize = 60;

/// How many bytes of a string are scanned one by one before using memchr.
const SHORT_SCAN: usize = 16;

/// Longest decoded key that is compared with `model` ignoring case.
const MAX_CASE_FOLD_KEY_LEN: usize = 32;

/// Message: the body is not valid UTF-8.
const MSG_NOT_UTF8: &str = "the body is not valid UTF-8";
/// Message: the body starts with a UTF-8 byte order mark.
const MSG_BOM: &str = "the body starts with a byte order mark";
/// Message: the body is empty or only whitespace.
const MSG_EMPTY: &str = "the body is empty";
/// Message: the body ends in the middle of the JSON document.
const MSG_EOF: &str = "the body ends before the JSON document does";
/// Message: a byte that cannot start a JSON value.
const MSG_UNEXPECTED: &str = "the body is not valid JSON";
/// Message: a malformed number.
const MSG_NUMBER: &str = "the body has an invalid JSON number";
/// Message: a malformed `true`/`false`/`null`.
const MSG_LITERAL: &str = "the body has an invalid JSON literal";
/// Message: a raw control byte inside a string.
const MSG_CONTROL: &str = "a JSON string contains an unescaped control character";
/// Message: an escape other than the standard ones.
const MSG_ESCAPE: &str = "a JSON string contains an invalid escape";
/// Message: a `\u` surrogate escape that is not part of a proper pair.
const MSG_SURROGATE: &str = "a JSON string contains an unpaired surrogate escape";
/// Message: an object member does not start with a string key.
const MSG_EXPECTED_KEY: &str = "a JSON object key is missing or not a string";
/// Message: a key is not followed by a colon.
const MSG_EXPECTED_COLON: &str = "a JSON object key is not followed by a colon";
/// Message: a value is followed by something other than `,` or the closer.
const MSG_EXPECTED_COMMA: &str = "a JSON value is not followed by a comma or closing bracket";
/// Message: data after the document.
const MSG_TRAILING: &str = "the body has data after the JSON document";
/// Message: nesting limit exceeded.
const MSG_DEPTH: &str = "JSON nesting is deeper than 128 levels";
/// Message: the top-level model is not a string.
const MSG_MODEL_NOT_STRING: &str = "\"model\" is not a string";
/// Message: two top-level `model` keys.
const MSG_DUPLICATE_MODEL: &str = "\"model\" appears more than once at the top level";
/// Message: a top-level case variant of `model`.
const MSG_CASE_VARIANT: &str = "a top-level key differs from \"model\" only in case";
/// Message: a `%` not followed by two hex digits.
/// A model-bearing path keyword in another case.
const MSG_PATH_KEYWORD_CASE: &str =
    "the path spells a model keyword (model, models, deployments) in another case";

const MSG_PATH_PERCENT: &str = "the path has invalid percent-encoding";
/// Message: a path segment is not UTF-8 once decoded.
const MSG_PATH_UTF8: &str = "the path is not valid UTF-8 after percent-decoding";
/// Message: a `.` or `..` path segment.
const MSG_PATH_DOT: &str = "the path contains a dot segment";
/// Message: an empty model segment in the path.
const MSG_PATH_EMPTY_MODEL: &str = "the path names an empty model";
/// Message: the path names two different models.
const MSG_PATH_TWO_MODELS: &str = "the path names more than one model";
/// Message: an encoded slash next to a model keyword.
const MSG_PATH_ENCODED_SLASH: &str =
    "the path hides a model segment behind an encoded slash or a backslash";

/// Why a request's model could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelError {
    /// The body is not one valid JSON document, or its "model" is not a string. Maps to HTTP 400, reason `invalid_body`.
    InvalidBody(&'static str),
    /// The model is given twice or in conflicting ways. Maps to HTTP 400, reason `ambiguous_model`.
    Ambiguous(&'static str),
    /// The path is malformed (bad percent-encoding / not UTF-8 after decoding / empty model segment). Maps to 400.
    InvalidPath(&'static str),
}

impl ModelError {
    /// The static, human-readable text of the error; it never contains input bytes.
    pub(crate) fn message(&self) -> &'static str {
        match *self {
            Self::InvalidBody(m) | Self::Ambiguous(m) | Self::InvalidPath(m) => m,
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ModelError {}

/// The model named in the request path, percent-decoded, if the path has one.
///
/// `rest` is the path after the `/{provider}` prefix, still percent-encoded
/// and without a query string. Google style: a segment `models` followed by a
/// segment containing `:` names the model before the first `:`. Bedrock
/// style: a segment `model` followed by at least two more segments names the
/// next segment, whole. Matching happens after decoding each segment.
pub(crate) fn path_model(rest: &str) -> Result<Option<String>, ModelError> {
    // Fast path, for most requests: with no escape and no backslash, every
    // segment is literal, so a path with no segment that is a keyword names no
    // model, and only plain dot segments remain to refuse. Same answers as the
    // full scan.
    if rest.bytes().any(|b| b == b'%' || b == b'\\') {
        return path_model_full(rest);
    }
    for segment in rest.split('/') {
        match segment {
            "." | ".." => return Err(ModelError::InvalidPath(MSG_PATH_DOT)),
            "model" | "models" | "deployments" => return path_model_full(rest),
            _ if keyword_in_another_case(segment) => {
                return Err(ModelError::InvalidPath(MSG_PATH_KEYWORD_CASE))
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Whether `segment` is a model-bearing keyword (`model`, `models`,
/// `deployments`) spelt in another case: an upstream that routes without
/// regard to case would read a model there that the proxy did not check.
fn keyword_in_another_case(segment: &str) -> bool {
    matches!(segment.len(), 5 | 6 | 11)
        && ["model", "models", "deployments"]
            .iter()
            .any(|k| segment.eq_ignore_ascii_case(k) && segment != *k)
}

/// [`path_model`] without the fast path.
pub(crate) fn path_model_full(rest: &str) -> Result<Option<String>, ModelError> {
    let mut segments: Vec<Cow<'_, str>> = Vec::new();
    for raw in rest.split('/') {
        if !valid_percent_encoding(raw) {
            return Err(ModelError::InvalidPath(MSG_PATH_PERCENT));
        }
        let segment = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ModelError::InvalidPath(MSG_PATH_UTF8))?;
        // Some servers treat `\` as `/`, and `%2F` decodes to `/`: either
        // could turn one segment into several upstream.
        let has_hidden_slash = segment.contains(['/', '\\']);
        for piece in segment.split(['/', '\\']) {
            if piece == "." || piece == ".." {
                return Err(ModelError::InvalidPath(MSG_PATH_DOT));
            }
            if keyword_in_another_case(piece) {
                return Err(ModelError::InvalidPath(MSG_PATH_KEYWORD_CASE));
            }
            if has_hidden_slash && matches!(piece, "model" | "models" | "deployments") {
                return Err(ModelError::Ambiguous(MSG_PATH_ENCODED_SLASH));
            }
        }
        segments.push(segment);
    }

    let mut found: Option<String> = None;
    for (index, segment) in segments.iter().enumerate() {
        let following = segments.get(index.saturating_add(1));
        let candidate = match segment.as_ref() {
            "models" => following.and_then(|next| next.split_once(':').map(|(model, _)| model)),
            "model" | "deployments" if segments.len().saturating_sub(index) >= 3 => {
                following.map(|s| s.as_ref())
            }
            _ => None,
        };
        let Some(model) = candidate else { continue };
        if model.is_empty() {
            return Err(ModelError::InvalidPath(MSG_PATH_EMPTY_MODEL));
        }
        match &found {
            Some(previous) if previous != model => {
                return Err(ModelError::Ambiguous(MSG_PATH_TWO_MODELS));
            }
            Some(_) => {}
            None => found = Some(model.to_owned()),
        }
    }
    Ok(found)
}

/// Whether every `%` in `raw` is followed by two hex digits.
fn valid_percent_encoding(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut rest = bytes;
    while let Some(at) = memchr::memchr(b'%', rest) {
        match rest.get(at.saturating_add(1)..at.saturating_add(3)) {
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {}
            _ => return false,
        }
        rest = rest.get(at.saturating_add(3)..).unwrap_or(&[]);
    }
    true
}

/// The top-level `"model"` string of a JSON body, under the strict rules.
///
/// Returns `Ok(None)` when the document is valid and either is not an object
/// or has no top-level `model` key. The model is borrowed from `body` unless
/// it contains escapes.
pub(crate) fn body_model(body: &[u8]) -> Result<Option<Cow<'_, str>>, ModelError> {
    read_body_model(body).map(|b| b.model)
}

/// [`body_model`], and whether the body may name more models (then read them
/// with [`named_models`]).
pub(crate) fn read_body_model(body: &[u8]) -> Result<BodyModel<'_>, ModelError> {
    if body.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(ModelError::InvalidBody(MSG_BOM));
    }
    let text = std::str::from_utf8(body).map_err(|_| ModelError::InvalidBody(MSG_NOT_UTF8))?;
    Scanner {
        text,
        bytes: body,
        pos: 0,
    }
    .document()
}

/// Shorthand for an [`ModelError::InvalidBody`] error.
fn invalid(message: &'static str) -> ModelError {
    ModelError::InvalidBody(message)
}

/// What a top-level key means for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// Exactly `model`.
    Model,
    /// Not `model`, but equal to it ignoring case.
    CaseVariant,
    /// `models` or `fallbacks`, in any case: a list of more models.
    ModelList,
    /// Anything else.
    Other,
}

/// What the scanner has learned about the top-level object so far.
#[derive(Debug, Default)]
struct TopLevel<'a> {
    /// Whether a `model` key has been seen.
    seen_model: bool,
    /// The model string, once read.
    model: Option<Cow<'a, str>>,
    /// Whether a key that names more models (`models`, `fallbacks`, in any
    /// case) has been seen.
    model_lists: bool,
}

/// Where the scanner is in a document.
#[derive(Debug, Default)]
struct Walk<'a> {
    /// Bit `d` is set when the container at depth `d + 1` is an object.
    kinds: u128,
    depth: usize,
    top: TopLevel<'a>,
}

/// What a body says about its model, as the scanner read it.
#[derive(Debug)]
pub(crate) struct BodyModel<'a> {
    /// The top-level `"model"` string.
    pub(crate) model: Option<Cow<'a, str>>,
    /// Whether the body has a top-level key that names more models (see
    /// [`named_models`]).
    pub(crate) lists: bool,
}

/// A validating, zero-copy JSON scanner over an already UTF-8-checked body.
#[derive(Debug)]
struct Scanner<'a> {
    /// The body as text (validated UTF-8).
    text: &'a str,
    /// The same body as bytes.
    bytes: &'a [u8],
    /// The index of the next unread byte.
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// The next unread byte, if any.
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips JSON whitespace (space, tab, line feed, carriage return).
    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// The error for a missing expected byte: end of input or something else.
    fn expected(&self, message: &'static str) -> ModelError {
        if self.pos >= self.bytes.len() {
            invalid(MSG_EOF)
        } else {
            invalid(message)
        }
    }

    /// Scans one whole document and returns the top-level model, if any.
    fn document(mut self) -> Result<BodyModel<'a>, ModelError> {
        let mut walk = Walk::default();
        self.skip_ws();
        if self.pos >= self.bytes.len() {
            return Err(invalid(MSG_EMPTY));
        }
        let mut expect_value = true;
        loop {
            expect_value = if expect_value {
                self.value(&mut walk)?
            } else {
                match self.after_value(&mut walk)? {
                    Some(expect_value) => expect_value,
                    None => {
                        return Ok(BodyModel {
                            model: walk.top.model,
                            lists: walk.top.model_lists,
                        })
                    }
                }
            };
        }
    }

    /// One value (or the start of a container's first one); whether a value
    /// is expected next.
    fn value(&mut self, walk: &mut Walk<'a>) -> Result<bool, ModelError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => {
                self.open(&mut walk.kinds, &mut walk.depth, true)?;
                self.skip_ws();
                match self.peek() {
                    Some(b'}') => {
                        self.pos += 1;
                        walk.depth = walk.depth.saturating_sub(1);
                        Ok(false)
                    }
                    Some(b'"') => self.member(walk.depth, &mut walk.top),
                    _ => Err(self.expected(MSG_EXPECTED_KEY)),
                }
            }
            Some(b'[') => {
                self.open(&mut walk.kinds, &mut walk.depth, false)?;
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    walk.depth = walk.depth.saturating_sub(1);
                    return Ok(false);
                }
                Ok(true)
            }
            Some(b'"') => {
                self.pos += 1;
                self.string()?;
                Ok(false)
            }
            Some(b't') => self.literal(b"true").map(|()| false),
            Some(b'f') => self.literal(b"false").map(|()| false),
            Some(b'n') => self.literal(b"null").map(|()| false),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| false),
            _ => Err(self.expected(MSG_UNEXPECTED)),
        }
    }

    /// What follows a value: a comma (whether a value is expected next), the
    /// end of its container, or at the top level the end of the document
    /// (`None`).
    fn after_value(&mut self, walk: &mut Walk<'a>) -> Result<Option<bool>, ModelError> {
        self.skip_ws();
        let Some(index) = walk.depth.checked_sub(1) else {
            return if self.pos == self.bytes.len() {
                Ok(None)
            } else {
                Err(invalid(MSG_TRAILING))
            };
        };
        let in_object = walk
            .kinds
            .checked_shr(u32::try_from(index).unwrap_or(u32::MAX))
            .unwrap_or(0)
            & 1
            == 1;
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                if !in_object {
                    return Ok(Some(true));
                }
                self.skip_ws();
                if self.peek() != Some(b'"') {
                    return Err(self.expected(MSG_EXPECTED_KEY));
                }
                self.member(walk.depth, &mut walk.top).map(Some)
            }
            Some(b'}') if in_object => {
                self.pos += 1;
                walk.depth = index;
                Ok(Some(false))
            }
            Some(b']') if !in_object => {
                self.pos += 1;
                walk.depth = index;
                Ok(Some(false))
            }
            _ => Err(self.expected(MSG_EXPECTED_COMMA)),
        }
    }

    /// Consumes an opening bracket and pushes its kind, enforcing the depth limit.
    fn open(
        &mut self,
        kinds: &mut u128,
        depth: &mut usize,
        object: bool,
    ) -> Result<(), ModelError> {
        if *depth >= MAX_DEPTH {
            return Err(invalid(MSG_DEPTH));
        }
        let bit = 1u128
            .checked_shl(u32::try_from(*depth).unwrap_or(u32::MAX))
            .unwrap_or(0);
        if object {
            *kinds |= bit;
        } else {
            *kinds &= !bit;
        }
        *depth += 1;
        self.pos += 1;
        Ok(())
    }

    /// Scans an object member's key and colon (the scanner is at the key's
    /// opening quote). At the top level it also applies the model rules and,
    /// for the `model` key, reads its string value.
    ///
    /// Returns whether a value is still expected.
    fn member(&mut self, depth: usize, top: &mut TopLevel<'a>) -> Result<bool, ModelError> {
        self.pos += 1;
        let start = self.pos;
        let escaped = self.string()?;
        let end = self.pos.saturating_sub(1);
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.expected(MSG_EXPECTED_COLON));
        }
        self.pos += 1;
        if depth != 1 {
            return Ok(true);
        }
        let raw_key = self.text.get(start..end).ok_or(invalid(MSG_UNEXPECTED))?;
        match classify_key(raw_key, escaped)? {
            KeyKind::Other => Ok(true),
            KeyKind::ModelList => {
                top.model_lists = true;
                Ok(true)
            }
            KeyKind::CaseVariant => Err(ModelError::Ambiguous(MSG_CASE_VARIANT)),
            KeyKind::Model if top.seen_model => Err(ModelError::Ambiguous(MSG_DUPLICATE_MODEL)),
            KeyKind::Model => {
                top.seen_model = true;
                self.skip_ws();
                if self.peek() != Some(b'"') {
                    return Err(self.expected(MSG_MODEL_NOT_STRING));
                }
                self.pos += 1;
                let value_start = self.pos;
                let value_escaped = self.string()?;
                let value_end = self.pos.saturating_sub(1);
                let raw = self
                    .text
                    .get(value_start..value_end)
                    .ok_or(invalid(MSG_UNEXPECTED))?;
                top.model = Some(if value_escaped {
                    Cow::Owned(unescape(raw)?)
                } else {
                    Cow::Borrowed(raw)
                });
                Ok(false)
            }
        }
    }

    /// Scans a string's contents and closing quote (the scanner is just past
    /// the opening quote). Returns whether the string contains escapes.
    #[inline]
    fn string(&mut self) -> Result<bool, ModelError> {
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
            let offset = string_end(rest)?;
            self.pos += offset;
            match rest.get(offset) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {}
                _ => return Err(invalid(MSG_CONTROL)),
            }
            escaped = true;
            self.escape()?;
        }
    }

    /// Validates one escape sequence (the scanner is at its backslash) and
    /// steps past it.
    fn escape(&mut self) -> Result<(), ModelError> {
        let at = self.pos;
        match self.bytes.get(at.saturating_add(1)) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = hex4(self.bytes.get(at.saturating_add(2)..at.saturating_add(6)))?;
                match unit {
                    0xD800..=0xDBFF => {
                        if self.bytes.get(at.saturating_add(6)..at.saturating_add(8))
                            != Some(b"\\u".as_slice())
                        {
                            return Err(self.expected_at(at.saturating_add(6), MSG_SURROGATE));
                        }
                        let low =
                            hex4(self.bytes.get(at.saturating_add(8)..at.saturating_add(12)))?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(invalid(MSG_SURROGATE));
                        }
                        self.pos += 12;
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(invalid(MSG_SURROGATE)),
                    _ => {
                        self.pos += 6;
                        Ok(())
                    }
                }
            }
            Some(_) => Err(invalid(MSG_ESCAPE)),
            None => Err(invalid(MSG_EOF)),
        }
    }

    /// Like [`Scanner::expected`], for a position other than the current one.
    fn expected_at(&self, at: usize, message: &'static str) -> ModelError {
        if at >= self.bytes.len() {
            invalid(MSG_EOF)
        } else {
            invalid(message)
        }
    }

    /// Consumes exactly `word` (`true`, `false` or `null`).
    fn literal(&mut self, word: &[u8]) -> Result<(), ModelError> {
        let end = self.pos.saturating_add(word.len());
        match self.bytes.get(self.pos..end) {
            Some(found) if found == word => {
                self.pos = end;
                Ok(())
            }
            _ => {
                let tail = self.bytes.get(self.pos..).unwrap_or(&[]);
                if word.starts_with(tail) {
                    Err(invalid(MSG_EOF))
                } else {
                    Err(invalid(MSG_LITERAL))
                }
            }
        }
    }

    /// Consumes a number per `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Result<(), ModelError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.pos += 1;
                self.digits();
            }
            _ => return Err(self.expected(MSG_NUMBER)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.expected(MSG_NUMBER));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.expected(MSG_NUMBER));
            }
        }
        Ok(())
    }

    /// Consumes ASCII digits and returns how many.
    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }
}

/// The offset in `rest` (a string's unread contents) of the first quote,
/// backslash or control byte. Short strings, like most keys, are checked
/// eight bytes at a time; long ones with memchr.
#[inline]
fn string_end(rest: &[u8]) -> Result<usize, ModelError> {
    let mut scanned = 0;
    while scanned < SHORT_SCAN {
        let unread = rest.get(scanned..).unwrap_or(&[]);
        let Some(chunk) = unread.first_chunk::<8>() else {
            return match unread
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            {
                Some(offset) => Ok(scanned + offset),
                None => Err(invalid(MSG_EOF)),
            };
        };
        let found = special_bytes(u64::from_le_bytes(*chunk));
        if found != 0 {
            return Ok(scanned + (found.trailing_zeros() / 8) as usize);
        }
        scanned += 8;
    }
    let unread = rest.get(scanned..).unwrap_or(&[]);
    let Some(offset) = memchr::memchr2(b'"', b'\\', unread) else {
        return Err(invalid(if has_control(unread) {
            MSG_CONTROL
        } else {
            MSG_EOF
        }));
    };
    if has_control(unread.get(..offset).unwrap_or(&[])) {
        return Err(invalid(MSG_CONTROL));
    }
    Ok(scanned + offset)
}

/// Marks (with its high bit) each byte of a little-endian word that is a
/// quote, a backslash or below 0x20. Bytes above the first marked one may be
/// marked falsely, so only the lowest mark is meaningful.
#[inline]
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let quote = word ^ (ONES * 0x22);
    let backslash = word ^ (ONES * 0x5C);
    let quote_zero = quote.wrapping_sub(ONES) & !quote;
    let backslash_zero = backslash.wrapping_sub(ONES) & !backslash;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (quote_zero | backslash_zero | control) & HIGHS
}

/// Whether `span` contains a byte below 0x20 (written to vectorise).
#[inline]
fn has_control(span: &[u8]) -> bool {
    let mut chunks = span.chunks_exact(32);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |acc, &b| acc | (b < 0x20)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20)
}

/// The value of four hex digits (either case).
fn hex4(digits: Option<&[u8]>) -> Result<u32, ModelError> {
    let Some(digits) = digits else {
        return Err(invalid(MSG_EOF));
    };
    let mut value = 0u32;
    for &digit in digits {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            b'A'..=b'F' => digit - b'A' + 10,
            _ => return Err(invalid(MSG_ESCAPE)),
        };
        value = (value << 4) | u32::from(nibble);
    }
    Ok(value)
}

/// What a raw top-level key (between its quotes) means for the model.
fn classify_key(raw: &str, escaped: bool) -> Result<KeyKind, ModelError> {
    if !escaped {
        return Ok(classify_decoded_key(raw));
    }
    if raw.len() > MAX_ESCAPED_MODEL_KEY_LEN {
        return Ok(KeyKind::Other);
    }
    Ok(classify_decoded_key(&unescape(raw)?))
}

/// What a decoded top-level key means for the model.
fn classify_decoded_key(key: &str) -> KeyKind {
    if key == "model" {
        KeyKind::Model
    } else if key.len() <= MAX_CASE_FOLD_KEY_LEN
        && key.chars().flat_map(char::to_lowercase).eq("model".chars())
    {
        // Same result as `key.to_lowercase() == "model"`, without allocating.
        KeyKind::CaseVariant
    } else if key.len() <= MAX_CASE_FOLD_KEY_LEN
        && ["models", "fallbacks"]
            .iter()
            .any(|k| key.chars().flat_map(char::to_lowercase).eq(k.chars()))
    {
        KeyKind::ModelList
    } else {
        KeyKind::Other
    }
}

/// Decodes the escapes of a string's raw contents (already validated).
fn unescape(raw: &str) -> Result<String, ModelError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(rest.get(..at).ok_or(invalid(MSG_ESCAPE))?);
        let tail = rest.get(at..).ok_or(invalid(MSG_ESCAPE))?;
        let bytes = tail.as_bytes();
        let (decoded, used) = match bytes.get(1) {
            Some(b'"') => ('"', 2),
            Some(b'\\') => ('\\', 2),
            Some(b'/') => ('/', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => {
                let unit = hex4(bytes.get(2..6))?;
                if (0xD800..=0xDBFF).contains(&unit) {
                    if bytes.get(6..8) != Some(b"\\u".as_slice()) {
                        return Err(invalid(MSG_SURROGATE));
                    }
                    let low = hex4(bytes.get(8..12))?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return Err(invalid(MSG_SURROGATE));
                    }
                    let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(code).ok_or(invalid(MSG_SURROGATE))?, 12)
                } else {
                    (char::from_u32(unit).ok_or(invalid(MSG_SURROGATE))?, 6)
                }
            }
            _ => return Err(invalid(MSG_ESCAPE)),
        };
        out.push(decoded);
        rest = tail.get(used..).ok_or(invalid(MSG_ESCAPE))?;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    // ----- path_model -------------------------------------------------

    #[test]
    fn path_model_table() {
        use ModelError::{Ambiguous, InvalidPath};
        let some = |s: &str| Ok(Some(s.to_owned()));
        let cases: Vec<(&str, Result<Option<String>, ModelError>)> = vec![
            ("/v1beta/models/gemini-1.5-pro:generateContent", some("gemini-1.5-pro")),
            ("/v1/models/gemini-pro:streamGenerateContent", some("gemini-pro")),
            ("/v1beta/models/gemini-pro:countTokens:extra", some("gemini-pro")),
            ("/model/anthropic.claude-3-sonnet-20240229-v1%3A0/converse", some("anthropic.claude-3-sonnet-20240229-v1:0")),
            ("/model/anthropic.claude-3-sonnet-20240229-v1:0/converse-stream", some("anthropic.claude-3-sonnet-20240229-v1:0")),
            ("/model/amazon.titan-text-express-v1/invoke", some("amazon.titan-text-express-v1")),
            ("/model/amazon.titan-text-express-v1/invoke-with-response-stream", some("amazon.titan-text-express-v1")),
            // Azure OpenAI: the deployment picks the model
            ("/openai/deployments/gpt-4o/chat/completions", some("gpt-4o")),
            ("/openai/deployments/my%2Ddeploy/embeddings", some("my-deploy")),
            ("/openai/deployments", Ok(None)),
            ("/openai/deployments/gpt-4o", Ok(None)),
            ("/openai/deployments%2Fgpt-4o/chat/completions", Err(Ambiguous(MSG_PATH_ENCODED_SLASH))),
            // percent-decoding happens before matching
            ("/v1beta/models/gemini%2D1.5%2Dpro%3AgenerateContent", some("gemini-1.5-pro")),
            ("/v1beta/mod%65ls/x:gen", some("x")),
            ("/v1beta/models/caf%C3%A9:gen", some("café")),
            ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3/converse", some("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3")),
            ("/v1beta/models/a%2Fb:gen", some("a/b")),
            // identical repeats are fine
            ("/v1beta/models/x:gen/models/x:gen", some("x")),
            // no model
            ("/v1/models", Ok(None)),
            ("/v1/models/", Ok(None)),
            ("/v1/models/gpt-4o", Ok(None)),
            ("/v1beta/models/gemini-pro", Ok(None)),
            ("/v1/chat/completions", Ok(None)),
            ("/v1/messages", Ok(None)),
            ("", Ok(None)),
            ("/", Ok(None)),
            ("/model/x", Ok(None)),
            ("/model", Ok(None)),
            // a keyword in another case is refused, however it is spelt
            ("/Models/x:gen", Err(InvalidPath(MSG_PATH_KEYWORD_CASE))),
            ("/openai/DEPLOYMENTS/gpt-4o-evil/chat/completions", Err(InvalidPath(MSG_PATH_KEYWORD_CASE))),
            ("/MODEL/x/invoke", Err(InvalidPath(MSG_PATH_KEYWORD_CASE))),
            ("/v1beta/Mod%65ls/x:gen", Err(InvalidPath(MSG_PATH_KEYWORD_CASE))),
            ("/v1/chat/completions/Deployments", Err(InvalidPath(MSG_PATH_KEYWORD_CASE))),
            ("/v1/modelz/x", Ok(None)),
            ("/v1/my-models/x:gen", Ok(None)),
            ("/v1/files/a%2Fb", Ok(None)),
            // malformed
            ("/v1beta/models/:generateContent", Err(InvalidPath(MSG_PATH_EMPTY_MODEL))),
            ("/model//invoke", Err(InvalidPath(MSG_PATH_EMPTY_MODEL))),
            ("/v1beta/models/%FF:gen", Err(InvalidPath(MSG_PATH_UTF8))),
            ("/v1/chat/%FF", Err(InvalidPath(MSG_PATH_UTF8))),
            ("/v1beta/models/%C3:gen", Err(InvalidPath(MSG_PATH_UTF8))),
            ("/v1beta/models/x%ZZ:gen", Err(InvalidPath(MSG_PATH_PERCENT))),
            ("/v1beta/models/x%4:gen", Err(InvalidPath(MSG_PATH_PERCENT))),
            ("/v1beta/models/x:gen%", Err(InvalidPath(MSG_PATH_PERCENT))),
            ("/model/x/../y/invoke", Err(InvalidPath(MSG_PATH_DOT))),
            ("/model/x/%2e%2E/y/invoke", Err(InvalidPath(MSG_PATH_DOT))),
            ("/v1beta/./models/x:gen", Err(InvalidPath(MSG_PATH_DOT))),
            ("/v1beta/models/x%2F..%2F..%2Fy:gen", Err(InvalidPath(MSG_PATH_DOT))),
            // conflicting
            ("/v1beta/models/a:gen/models/b:gen", Err(Ambiguous(MSG_PATH_TWO_MODELS))),
            ("/model/a/invoke/model/b/invoke", Err(Ambiguous(MSG_PATH_TWO_MODELS))),
            ("/model/models/x:gen", Err(Ambiguous(MSG_PATH_TWO_MODELS))),
            ("/v1beta/models%2Fx:gen", Err(Ambiguous(MSG_PATH_ENCODED_SLASH))),
            ("/model%2Fx/invoke", Err(Ambiguous(MSG_PATH_ENCODED_SLASH))),
            ("/v1beta/models/x%2Fmodels%2Fy:gen", Err(Ambiguous(MSG_PATH_ENCODED_SLASH))),
            ("/v1beta/models\\gemini-pro:gen", Err(Ambiguous(MSG_PATH_ENCODED_SLASH))),
            ("/v1beta/models%5Cgemini-pro:gen", Err(Ambiguous(MSG_PATH_ENCODED_SLASH))),
            ("/model/x/..\\y/invoke", Err(InvalidPath(MSG_PATH_DOT))),
        ];
        for (path, want) in cases {
            assert_eq!(path_model(path), want, "path {path:?}");
        }
    }

    // ----- body_model: table ------------------------------------------

    fn ok(s: &str) -> Result<Option<String>, ModelError> {
        Ok(Some(s.to_owned()))
    }

    fn run(body: &[u8]) -> Result<Option<String>, ModelError> {
        body_model(body).map(|m| m.map(Cow::into_owned))
    }

    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    #[test]
    fn body_model_table() {
        use ModelError::{Ambiguous, InvalidBody};
        let cases: Vec<(&str, Result<Option<String>, ModelError>)> = vec![
            (r#"{"model":"gpt-4o"}"#, ok("gpt-4o")),
            (" \t\r\n{ \"model\" : \"gpt-4o\" , \"stream\" : true } \n", ok("gpt-4o")),
            (r#"{"messages":[{"role":"user","content":"hi"}],"model":"claude-3"}"#, ok("claude-3")),
            (r#"{"model":"gpt\u002d4o"}"#, ok("gpt-4o")),
            (r#"{"model":"a\"b\\c\/d\n\u00e9\ud83d\ude00"}"#, ok("a\"b\\c/d\né😀")),
            (r#"{"model":""}"#, ok("")),
            (r#"{"\u006dodel":"gpt-4o"}"#, ok("gpt-4o")),
            (r#"{"\u006Dodel":"x","modelx":1,"mode":2,"models":3}"#, ok("x")),
            (r#"{"x":{"model":1}}"#, Ok(None)),
            (r#"{"x":{"Model":"a","model":"b"},"y":[{"model":null}]}"#, Ok(None)),
            (r#"{}"#, Ok(None)),
            (r#"[{"model":"x"}]"#, Ok(None)),
            (r#""model""#, Ok(None)),
            ("123", Ok(None)),
            ("null", Ok(None)),
            (r#"{"a":123456789012345678901234567890e999999,"b":-1.5E-400}"#, Ok(None)),
            (r#"{"a":-0,"b":0.0,"c":1e5,"d":1E+5,"e":1e-5}"#, Ok(None)),
            (r#"{"model":"a","model":"b"}"#, Err(Ambiguous(MSG_DUPLICATE_MODEL))),
            (r#"{"model":"a","model":"a"}"#, Err(Ambiguous(MSG_DUPLICATE_MODEL))),
            (r#"{"model":"a","\u006dodel":"b"}"#, Err(Ambiguous(MSG_DUPLICATE_MODEL))),
            (r#"{"model":"a","Model":"b"}"#, Err(Ambiguous(MSG_CASE_VARIANT))),
            (r#"{"MODEL":"b","model":"a"}"#, Err(Ambiguous(MSG_CASE_VARIANT))),
            (r#"{"Model":"a"}"#, Err(Ambiguous(MSG_CASE_VARIANT))),
            (r#"{"MODEL":"a"}"#, Err(Ambiguous(MSG_CASE_VARIANT))),
            (r#"{"modeL":1}"#, Err(Ambiguous(MSG_CASE_VARIANT))),
            (r#"{"\u004dodel":"a"}"#, Err(Ambiguous(MSG_CASE_VARIANT))),
            (r#"{"model":1}"#, Err(InvalidBody(MSG_MODEL_NOT_STRING))),
            (r#"{"model":null}"#, Err(InvalidBody(MSG_MODEL_NOT_STRING))),
            (r#"{"model":{"name":"x"}}"#, Err(InvalidBody(MSG_MODEL_NOT_STRING))),
            (r#"{"model":["x"]}"#, Err(InvalidBody(MSG_MODEL_NOT_STRING))),
            (r#"{"model":true}"#, Err(InvalidBody(MSG_MODEL_NOT_STRING))),
            // invalid JSON
            ("", Err(InvalidBody(MSG_EMPTY))),
            (" \n\t ", Err(InvalidBody(MSG_EMPTY))),
            ("\u{feff}{}", Err(InvalidBody(MSG_BOM))),
            (r#"{"model":"a",}"#, Err(InvalidBody(MSG_EXPECTED_KEY))),
            ("[1,]", Err(InvalidBody(MSG_UNEXPECTED))),
            ("[,1]", Err(InvalidBody(MSG_UNEXPECTED))),
            ("{'model':'a'}", Err(InvalidBody(MSG_EXPECTED_KEY))),
            ("['a']", Err(InvalidBody(MSG_UNEXPECTED))),
            ("{/*c*/}", Err(InvalidBody(MSG_EXPECTED_KEY))),
            ("{} // c", Err(InvalidBody(MSG_TRAILING))),
            (r#"{"a":NaN}"#, Err(InvalidBody(MSG_UNEXPECTED))),
            (r#"{"a":Infinity}"#, Err(InvalidBody(MSG_UNEXPECTED))),
            (r#"{"a":-Infinity}"#, Err(InvalidBody(MSG_NUMBER))),
            (r#"{"a":01}"#, Err(InvalidBody(MSG_EXPECTED_COMMA))),
            (r#"{"a":1.}"#, Err(InvalidBody(MSG_NUMBER))),
            (r#"{"a":.5}"#, Err(InvalidBody(MSG_UNEXPECTED))),
            (r#"{"a":+1}"#, Err(InvalidBody(MSG_UNEXPECTED))),
            (r#"{"a":1e}"#, Err(InvalidBody(MSG_NUMBER))),
            (r#"{"a":1e+}"#, Err(InvalidBody(MSG_NUMBER))),
            (r#"{"a":0x10}"#, Err(InvalidBody(MSG_EXPECTED_COMMA))),
            (r#"{"a":tru}"#, Err(InvalidBody(MSG_LITERAL))),
            (r#"{"a":True}"#, Err(InvalidBody(MSG_UNEXPECTED))),
            (r#"{"a":nul}"#, Err(InvalidBody(MSG_LITERAL))),
            (r#"{"a":truex}"#, Err(InvalidBody(MSG_EXPECTED_COMMA))),
            ("{\"a\":\"x\u{1}y\"}", Err(InvalidBody(MSG_CONTROL))),
            ("{\"a\":\"x\ny\"}", Err(InvalidBody(MSG_CONTROL))),
            ("{\"a\":\"x\ty\"}", Err(InvalidBody(MSG_CONTROL))),
            ("{\"a\":\"0123456789abcdefghijklmnopqrstuvwxyz\u{1f}\"}", Err(InvalidBody(MSG_CONTROL))),
            ("{\"a\":\"0123456789abcdefghijklmnopqrstuvwxyz\u{0}0123456789abcdefghijklmnopqrstuvwxyz\"}", Err(InvalidBody(MSG_CONTROL))),
            ("{\"a\":\"0123456789abcdefghijklmnopqrstuvwxyz\r", Err(InvalidBody(MSG_CONTROL))),
            ("{\"a\":\"0123456789abcdefghijklmnopqrstuvwxyz", Err(InvalidBody(MSG_EOF))),
            ("{\"model\":\"0123456789abcdefghijklmnopqrstuvwxyz\\u00e9\"}", ok("0123456789abcdefghijklmnopqrstuvwxyzé")),
            (r#"{"a":"\x41"}"#, Err(InvalidBody(MSG_ESCAPE))),
            (r#"{"a":"\'"}"#, Err(InvalidBody(MSG_ESCAPE))),
            (r#"{"a":"\u12G4"}"#, Err(InvalidBody(MSG_ESCAPE))),
            (r#"{"a":"\ud800"}"#, Err(InvalidBody(MSG_SURROGATE))),
            (r#"{"a":"\ud800x"}"#, Err(InvalidBody(MSG_SURROGATE))),
            (r#"{"a":"\ud800\n"}"#, Err(InvalidBody(MSG_SURROGATE))),
            (r#"{"a":"\ud800\u0041"}"#, Err(InvalidBody(MSG_SURROGATE))),
            (r#"{"a":"\ud800\ud800"}"#, Err(InvalidBody(MSG_SURROGATE))),
            (r#"{"a":"\udc00"}"#, Err(InvalidBody(MSG_SURROGATE))),
            (r#"{"a":"\uDFFF\uD800"}"#, Err(InvalidBody(MSG_SURROGATE))),
            (r#"{"model":"\udc00"}"#, Err(InvalidBody(MSG_SURROGATE))),
            (r#"{}x"#, Err(InvalidBody(MSG_TRAILING))),
            (r#"{}{}"#, Err(InvalidBody(MSG_TRAILING))),
            (r#"{} {"model":"a"}"#, Err(InvalidBody(MSG_TRAILING))),
            ("1 2", Err(InvalidBody(MSG_TRAILING))),
            ("{}\u{0}", Err(InvalidBody(MSG_TRAILING))),
            ("{}\u{a0}", Err(InvalidBody(MSG_TRAILING))),
            ("\u{c}{}", Err(InvalidBody(MSG_UNEXPECTED))),
            (r#"{"a" "b"}"#, Err(InvalidBody(MSG_EXPECTED_COLON))),
            (r#"{"a":1 "b":2}"#, Err(InvalidBody(MSG_EXPECTED_COMMA))),
            (r#"{"a":1]"#, Err(InvalidBody(MSG_EXPECTED_COMMA))),
            (r#"[1}"#, Err(InvalidBody(MSG_EXPECTED_COMMA))),
            (r#"{1:2}"#, Err(InvalidBody(MSG_EXPECTED_KEY))),
            (r#"{"a"}"#, Err(InvalidBody(MSG_EXPECTED_COLON))),
            (r#"{"a":}"#, Err(InvalidBody(MSG_UNEXPECTED))),
            (r#"{"model":}"#, Err(InvalidBody(MSG_MODEL_NOT_STRING))),
            (r#"{"model""#, Err(InvalidBody(MSG_EOF))),
            (r#"{"model":"#, Err(InvalidBody(MSG_EOF))),
        ];
        for (body, want) in cases {
            assert_eq!(run(body.as_bytes()), want, "body {body:?}");
            // Everything rejected here as invalid, serde_json rejects too.
            if matches!(want, Err(InvalidBody(m)) if m != MSG_MODEL_NOT_STRING) {
                assert!(
                    serde_json::from_str::<Value>(body).is_err(),
                    "serde accepts {body:?}"
                );
            }
        }
    }

    #[test]
    fn borrowed_unless_escaped() {
        assert!(matches!(
            body_model(br#"{"model":"gpt-4o"}"#),
            Ok(Some(Cow::Borrowed("gpt-4o")))
        ));
        assert!(matches!(
            body_model(br#"{"model":"gpt\u002d4o"}"#),
            Ok(Some(Cow::Owned(_)))
        ));
        assert!(matches!(
            body_model(br#"{"\u006dodel":"gpt-4o"}"#),
            Ok(Some(Cow::Borrowed("gpt-4o")))
        ));
    }

    #[test]
    fn unicode_case_variants() {
        // U+212A KELVIN SIGN lowercases to 'k', so it is no variant of model;
        // full-width letters lowercase to full-width letters.
        assert_eq!(run("{\"ＭＯＤＥＬ\":1}".as_bytes()), Ok(None));
        assert_eq!(run("{\"mode\u{212a}\":1}".as_bytes()), Ok(None));
        assert_eq!(
            run(r#"{"MoDeL":1,"model":"x"}"#.as_bytes()),
            Err(ModelError::Ambiguous(MSG_CASE_VARIANT))
        );
        // A long escaped key is skipped without decoding.
        let long = format!("{{\"{}\":1,\"model\":\"m\"}}", "\\u0041".repeat(100));
        assert_eq!(run(long.as_bytes()), ok("m"));
        // The longest possible escaped spelling of a variant is still seen.
        let longest = r#"{"\u004D\u004F\u0044\u0045\u004C":1}"#;
        assert_eq!(
            run(longest.as_bytes()),
            Err(ModelError::Ambiguous(MSG_CASE_VARIANT))
        );
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(
            run(b"{\"a\":\"\xff\"}"),
            Err(ModelError::InvalidBody(MSG_NOT_UTF8))
        );
        assert_eq!(
            run(b"{\"model\":\"\xc3\"}"),
            Err(ModelError::InvalidBody(MSG_NOT_UTF8))
        );
        assert_eq!(
            run(b"{\"a\":\"\xed\xa0\x80\"}"),
            Err(ModelError::InvalidBody(MSG_NOT_UTF8))
        );
        assert_eq!(
            run(b"\xef\xbb\xbf{}"),
            Err(ModelError::InvalidBody(MSG_BOM))
        );
        assert_eq!(run(b"\xef\xbb"), Err(ModelError::InvalidBody(MSG_NOT_UTF8)));
    }

    #[test]
    fn every_truncation_is_invalid() {
        let doc = r#"{"a" : [1, -2.5e+3, true, false, null, "x\u00e9\n\ud83d\ude00", {}, []], "model":"m\"", "b":{"c":"d"}}"#;
        assert_eq!(run(doc.as_bytes()), ok("m\""));
        for end in 0..doc.len() {
            let prefix = &doc.as_bytes()[..end];
            let got = run(prefix);
            assert!(
                matches!(got, Err(ModelError::InvalidBody(_))),
                "prefix {end}: {got:?}"
            );
        }
    }

    #[test]
    fn depth_limit() {
        let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(run(arrays(128).as_bytes()), Ok(None));
        assert_eq!(
            run(arrays(129).as_bytes()),
            Err(ModelError::InvalidBody(MSG_DEPTH))
        );
        let objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        assert_eq!(run(objects(128).as_bytes()), Ok(None));
        assert_eq!(
            run(objects(129).as_bytes()),
            Err(ModelError::InvalidBody(MSG_DEPTH))
        );
        let mixed = |n: usize| {
            format!(
                "{{\"model\":\"m\",\"x\":{}1{}}}",
                "[{\"a\":".repeat(n),
                "}]".repeat(n)
            )
        };
        assert_eq!(run(mixed(63).as_bytes()), ok("m"));
        assert_eq!(
            run(mixed(64).as_bytes()),
            Err(ModelError::InvalidBody(MSG_DEPTH))
        );
        // Very deep hostile input fails fast without overflowing the stack.
        let hostile = "[".repeat(1_000_000);
        assert_eq!(
            run(hostile.as_bytes()),
            Err(ModelError::InvalidBody(MSG_DEPTH))
        );
        // Closing and reopening keeps kinds straight at the edge.
        let edge = format!("{}{{}},[1]{}", "[".repeat(127), "]".repeat(127));
        assert_eq!(run(edge.as_bytes()), Ok(None));
    }

    #[test]
    fn serde_json_depth_differs_by_one() {
        // serde_json's own limit rejects 128 levels; ours allows exactly 128.
        let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(serde_json::from_str::<Value>(&arrays(127)).is_ok());
        assert!(serde_json::from_str::<Value>(&arrays(128)).is_err());
        assert_eq!(run(arrays(128).as_bytes()), Ok(None));
    }

    #[test]
    fn messages_are_static_text() {
        let e = ModelError::Ambiguous(MSG_DUPLICATE_MODEL);
        assert_eq!(e.message(), MSG_DUPLICATE_MODEL);
        assert_eq!(e.to_string(), MSG_DUPLICATE_MODEL);
        assert_eq!(
            ModelError::InvalidBody(MSG_DEPTH).message(),
            "JSON nesting is deeper than 128 levels"
        );
        assert_eq!(
            ModelError::InvalidPath(MSG_PATH_UTF8).message(),
            MSG_PATH_UTF8
        );
    }

    // ----- generators for property tests ------------------------------

    /// A JSON string: its logical text plus per-character escape choices.
    #[derive(Debug, Clone)]
    struct JStr {
        text: String,
        styles: Vec<u8>,
    }

    /// A generated JSON value; numbers are kept as (small) text.
    #[derive(Debug, Clone)]
    enum J {
        Null,
        Bool(bool),
        Num(String),
        Str(JStr),
        Arr(Vec<J>),
        Obj(Vec<(JStr, J)>),
    }

    /// Serialises with cycling whitespace choices.
    struct Ser<'w> {
        out: String,
        ws: &'w [u8],
        next: usize,
    }

    const WS: [&str; 7] = ["", "", " ", "\n", "\t", "\r\n", "  "];

    impl Ser<'_> {
        fn ws(&mut self) {
            if !self.ws.is_empty() {
                let pick = self.ws[self.next % self.ws.len()] as usize;
                self.out.push_str(WS[pick % WS.len()]);
                self.next += 1;
            }
        }

        fn string(&mut self, s: &JStr) {
            self.out.push('"');
            for (i, c) in s.text.chars().enumerate() {
                let style = if s.styles.is_empty() {
                    0
                } else {
                    s.styles[i % s.styles.len()]
                };
                let short = match c {
                    '"' => Some("\\\""),
                    '\\' => Some("\\\\"),
                    '\u{8}' => Some("\\b"),
                    '\u{c}' => Some("\\f"),
                    '\n' => Some("\\n"),
                    '\r' => Some("\\r"),
                    '\t' => Some("\\t"),
                    '/' if style == 3 => Some("\\/"),
                    _ => None,
                };
                let must_escape = (c as u32) < 0x20 || c == '"' || c == '\\';
                if style == 1 || style == 2 || (must_escape && short.is_none()) {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        if style == 2 {
                            self.out.push_str(&format!("\\u{:04X}", unit));
                        } else {
                            self.out.push_str(&format!("\\u{:04x}", unit));
                        }
                    }
                } else if let Some(esc) = short {
                    self.out.push_str(esc);
                } else {
                    self.out.push(c);
                }
            }
            self.out.push('"');
        }

        fn value(&mut self, j: &J) {
            match j {
                J::Null => self.out.push_str("null"),
                J::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
                J::Num(n) => self.out.push_str(n),
                J::Str(s) => self.string(s),
                J::Arr(items) => {
                    self.out.push('[');
                    self.ws();
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            self.out.push(',');
                            self.ws();
                        }
                        self.value(item);
                        self.ws();
                    }
                    self.out.push(']');
                }
                J::Obj(members) => {
                    self.out.push('{');
                    self.ws();
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            self.out.push(',');
                            self.ws();
                        }
                        self.string(k);
                        self.ws();
                        self.out.push(':');
                        self.ws();
                        self.value(v);
                        self.ws();
                    }
                    self.out.push('}');
                }
            }
        }
    }

    fn serialize(j: &J, ws: &[u8]) -> String {
        let mut ser = Ser {
            out: String::new(),
            ws,
            next: 0,
        };
        ser.ws();
        ser.value(j);
        ser.ws();
        ser.out
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(proptest::char::range('a', 'z'), 0..8)
                .prop_map(|v| v.into_iter().collect::<String>()),
            any::<String>(),
            proptest::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    Just('/'),
                    Just('\n'),
                    Just('\u{1}'),
                    Just('é'),
                    Just('😀'),
                    Just('\u{ffff}'),
                    Just('\u{7f}'),
                    Just('a'),
                ],
                0..6
            )
            .prop_map(|v| v.into_iter().collect::<String>()),
        ]
    }

    fn styles() -> impl Strategy<Value = Vec<u8>> {
        // 0 and 4..8: raw where possible; 1/2: \u escape; 3: short escape.
        proptest::collection::vec(0u8..8, 0..6)
    }

    fn jstr() -> impl Strategy<Value = JStr> {
        (text(), styles()).prop_map(|(text, styles)| JStr { text, styles })
    }

    fn key() -> impl Strategy<Value = JStr> {
        let pool = prop_oneof![
            4 => Just("model".to_owned()),
            1 => Just("Model".to_owned()),
            1 => Just("MODEL".to_owned()),
            1 => Just("modeL".to_owned()),
            1 => Just("mOdEl".to_owned()),
            1 => Just("mode".to_owned()),
            1 => Just("models".to_owned()),
            1 => Just("model ".to_owned()),
            1 => Just("mode\u{212a}".to_owned()),
            1 => Just("messages".to_owned()),
            3 => text(),
        ];
        (pool, styles()).prop_map(|(text, styles)| JStr { text, styles })
    }

    fn number() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop_oneof![Just(0u64), 1u64..1_000_000_000],
            proptest::option::of(0u32..100_000),
            proptest::option::of((0u8..4, 0u8..100)),
        )
            .prop_map(|(neg, int, frac, exp)| {
                let mut s = String::new();
                if neg {
                    s.push('-');
                }
                s.push_str(&int.to_string());
                if let Some(f) = frac {
                    s.push('.');
                    s.push_str(&f.to_string());
                }
                if let Some((sign, e)) = exp {
                    s.push_str(["e", "E", "e+", "E-"][sign as usize]);
                    s.push_str(&e.to_string());
                }
                s
            })
    }

    fn leaf() -> impl Strategy<Value = J> {
        prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            number().prop_map(J::Num),
            jstr().prop_map(J::Str),
        ]
    }

    fn value() -> impl Strategy<Value = J> {
        leaf().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
                proptest::collection::vec((key(), inner), 0..4).prop_map(J::Obj),
            ]
        })
    }

    fn top_object() -> impl Strategy<Value = Vec<(JStr, J)>> {
        let member_value = prop_oneof![3 => jstr().prop_map(J::Str), 2 => value()];
        proptest::collection::vec((key(), member_value), 0..6)
    }

    fn whitespace() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..7, 0..12)
    }

    /// What body_model must return for a generated top-level object, with
    /// errors reduced to their kind.
    #[derive(Debug, PartialEq)]
    enum Expect {
        Model(Option<String>),
        Ambiguous,
        NotString,
    }

    fn oracle(members: &[(JStr, J)]) -> Expect {
        let mut model = None;
        for (k, v) in members {
            if k.text == "model" {
                if model.is_some() {
                    return Expect::Ambiguous;
                }
                match v {
                    J::Str(s) => model = Some(s.text.clone()),
                    _ => return Expect::NotString,
                }
            } else if k.text.to_lowercase() == "model" {
                return Expect::Ambiguous;
            }
        }
        Expect::Model(model)
    }

    fn reduce(r: &Result<Option<Cow<'_, str>>, ModelError>) -> Option<Expect> {
        match r {
            Ok(m) => Some(Expect::Model(m.as_ref().map(|m| m.to_string()))),
            Err(ModelError::Ambiguous(_)) => Some(Expect::Ambiguous),
            Err(ModelError::InvalidBody(MSG_MODEL_NOT_STRING)) => Some(Expect::NotString),
            Err(_) => None,
        }
    }

    fn serde_rejection_we_accept(e: &serde_json::Error) -> bool {
        // We accept numbers of any magnitude; serde_json rejects f64 overflow.
        e.to_string().contains("number out of range")
    }

    const INTERESTING: &[u8] = b"{}[]\",:\\ \t\n\r0123456789eE.-+tfnulu/\x00\x1f\x7f\x80\xc3\xff";

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![any::<u8>(), proptest::sample::select(INTERESTING.to_vec())];
        let doc = prop_oneof![top_object().prop_map(J::Obj), value()];
        (doc, whitespace(), 0u8..3, any::<usize>(), byte).prop_map(|(j, ws, op, at, b)| {
            let mut bytes = serialize(&j, &ws).into_bytes();
            match op {
                0 if !bytes.is_empty() => {
                    bytes.remove(at % bytes.len());
                }
                1 => bytes.insert(at % (bytes.len() + 1), b),
                _ if !bytes.is_empty() => {
                    let i = at % bytes.len();
                    bytes[i] = b;
                }
                _ => bytes.push(b),
            }
            bytes
        })
    }

    proptest! {
        // (a) Generated objects: exact oracle plus agreement with serde_json.
        #[test]
        fn objects_agree_with_serde(members in top_object(), ws in whitespace()) {
            let body = serialize(&J::Obj(members.clone()), &ws);
            let got = body_model(body.as_bytes());
            prop_assert_eq!(reduce(&got), Some(oracle(&members)), "body {:?} got {:?}", body, got);

            let seen: Value = serde_json::from_str(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let object = seen.as_object().ok_or_else(|| TestCaseError::fail("not an object"))?;
            match &got {
                Ok(Some(m)) => {
                    prop_assert_eq!(object.get("model").and_then(Value::as_str), Some(m.as_ref()));
                    for k in object.keys() {
                        prop_assert!(k == "model" || k.to_lowercase() != "model", "variant {:?}", k);
                    }
                }
                Ok(None) => prop_assert!(!object.contains_key("model")),
                Err(_) => {}
            }
            let raw_models = members.iter().filter(|(k, _)| k.text == "model").count();
            if raw_models > 1 {
                prop_assert!(got.is_err());
            }
        }

        // (b) Mutated documents: never panic; whatever serde_json rejects, we reject.
        #[test]
        fn mutations_never_accepted_when_serde_rejects(bytes in mutated()) {
            let got = body_model(&bytes);
            match serde_json::from_slice::<Value>(&bytes) {
                Err(e) if serde_rejection_we_accept(&e) => {}
                Err(_) => prop_assert!(got.is_err(), "accepted {:?}: {:?}", String::from_utf8_lossy(&bytes), got),
                Ok(_) => prop_assert!(
                    !matches!(got, Err(ModelError::InvalidBody(m)) if m != MSG_MODEL_NOT_STRING),
                    "rejected valid {:?}: {:?}", String::from_utf8_lossy(&bytes), got
                ),
            }
        }

        // (b) Arbitrary bytes: never panic; agree with serde_json on rejection.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(
            prop_oneof![any::<u8>(), proptest::sample::select(INTERESTING.to_vec())], 0..48)
        ) {
            let got = body_model(&bytes);
            match serde_json::from_slice::<Value>(&bytes) {
                Err(e) if serde_rejection_we_accept(&e) => {}
                Err(_) => prop_assert!(got.is_err(), "accepted {:?}", String::from_utf8_lossy(&bytes)),
                Ok(_) => prop_assert!(!matches!(got, Err(ModelError::InvalidBody(m)) if m != MSG_MODEL_NOT_STRING)),
            }
        }

        // Paths: never panic; a model found is never empty.
        #[test]
        fn path_model_total(parts in proptest::collection::vec(prop_oneof![
            Just("models".to_owned()), Just("model".to_owned()), Just("x:gen".to_owned()),
            Just("%3A".to_owned()), Just("%2F".to_owned()), Just("%".to_owned()), Just("%FF".to_owned()),
            Just("..".to_owned()), Just("".to_owned()), Just("\\".to_owned()), any::<String>(),
        ], 0..8)) {
            let path = parts.join("/");
            if let Ok(Some(model)) = path_model(&path) {
                prop_assert!(!model.is_empty());
            }
        }

        // The word-at-a-time string scan agrees with a byte-by-byte one.
        #[test]
        fn string_end_matches_naive(bytes in proptest::collection::vec(
            prop_oneof![4 => 0x20u8..0x7f, 1 => any::<u8>(), 1 => proptest::sample::select(b"\"\\\x00\x1f\x20\x21\x5b\x5d\x7f\x80\xa2\xdc\xff".to_vec())],
            0..64)
        ) {
            let naive = match bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20) {
                None => Err(ModelError::InvalidBody(MSG_EOF)),
                Some(p) if bytes[p] < 0x20 => Err(ModelError::InvalidBody(MSG_CONTROL)),
                Some(p) => Ok(p),
            };
            let fast = match string_end(&bytes) {
                Ok(p) if bytes[p] < 0x20 => Err(ModelError::InvalidBody(MSG_CONTROL)),
                other => other,
            };
            prop_assert_eq!(fast, naive);
        }

        // (c) Valid documents of any shape are never InvalidBody (except a
        // non-string top-level model, which the oracle predicts).
        #[test]
        fn valid_documents_are_valid(j in prop_oneof![value(), top_object().prop_map(J::Obj)], ws in whitespace()) {
            let body = serialize(&j, &ws);
            prop_assert!(serde_json::from_str::<Value>(&body).is_ok(), "generator made invalid {:?}", body);
            let got = body_model(body.as_bytes());
            match &j {
                J::Obj(members) => prop_assert_eq!(reduce(&got), Some(oracle(members))),
                _ => prop_assert_eq!(reduce(&got), Some(Expect::Model(None))),
            }
        }
    }

    // ----- the serde_json visitor (issue 9) ------------------------------

    /// Outcome kinds that must agree; messages may differ.
    fn outcome(r: &Result<Option<Cow<'_, str>>, ModelError>) -> Result<Option<String>, u8> {
        match r {
            Ok(m) => Ok(m.as_ref().map(|m| m.to_string())),
            Err(ModelError::Ambiguous(_)) => Err(0),
            Err(ModelError::InvalidBody(_)) => Err(1),
            Err(ModelError::InvalidPath(_)) => Err(2),
        }
    }

    #[test]
    fn visitor_needs_its_second_pass() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        // IgnoredAny takes lone surrogate escapes and any nesting.
        for body in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":{"\udc00":1}}"#,
            r#"["\ud800"]"#,
            &deep,
        ] {
            assert_eq!(
                visitor::body_model(body.as_bytes(), false),
                Ok(None),
                "{body}"
            );
            assert!(
                matches!(run(body.as_bytes()), Err(ModelError::InvalidBody(_))),
                "{body}"
            );
            assert_eq!(
                outcome(&visitor::body_model(body.as_bytes(), true)),
                Err(1),
                "{body}"
            );
        }
        // Keys and the model string are parsed, so checked without it.
        for body in [r#"{"\ud800":1}"#, r#"{"model":"\ud800"}"#] {
            assert!(
                visitor::body_model(body.as_bytes(), false).is_err(),
                "{body}"
            );
        }
        // Ignored numbers are not converted, so any magnitude passes as in the scanner.
        let huge = r#"{"model":"m","a":1e400}"#;
        assert_eq!(
            visitor::body_model(huge.as_bytes(), false),
            run(huge.as_bytes()).map(|m| m.map(Cow::Owned))
        );
        // Messages differ where serde_json reports the error elsewhere.
        assert_eq!(
            visitor::body_model(br#"{"a":01}"#, true),
            Err(ModelError::InvalidBody(MSG_NUMBER))
        );
        assert_eq!(
            visitor::body_model(br#"{"model":}"#, true),
            Err(ModelError::InvalidBody(MSG_UNEXPECTED))
        );
        let hostile = "[".repeat(1000);
        assert_eq!(
            visitor::body_model(hostile.as_bytes(), true),
            Err(ModelError::InvalidBody(MSG_EOF))
        );
    }

    proptest! {
        #[test]
        fn strict_visitor_agrees_with_the_scanner(bytes in prop_oneof![
            mutated(),
            (top_object(), whitespace()).prop_map(|(m, ws)| serialize(&J::Obj(m), &ws).into_bytes()),
        ]) {
            let scanner = outcome(&body_model(&bytes));
            let visitor = outcome(&visitor::body_model(&bytes, true));
            // The second pass runs after the model rules, so a lone surrogate
            // or deep nesting before an ambiguous key is reported as the
            // ambiguity (the scanner reports what comes first).
            if !(visitor == Err(0) && scanner == Err(1)) {
                prop_assert_eq!(visitor, scanner, "{:?}", String::from_utf8_lossy(&bytes));
            }
        }
    }

    // ----- throughput ---------------------------------------------------

    fn chat_body(target: usize) -> String {
        let paragraph = "The quick brown fox jumps over the lazy dog; \\\"quoted\\\" text, \
                         numbers 12345, and a newline\\n. Caf\u{e9} na\u{ef}ve \u{1f600} \
                         Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do \
                         eiusmod tempor incididunt ut labore et dolore magna aliqua. ";
        let mut messages = Vec::new();
        let mut size = 0;
        let mut i = 0;
        while size < target {
            let content = paragraph.repeat(8);
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            let message =
                format!("{{\"role\":\"{role}\",\"content\":\"{content}\",\"name\":\"u{i}\"}}");
            size += message.len();
            messages.push(message);
            i += 1;
        }
        format!(
            "{{\"model\":\"gpt-4o\",\"messages\":[{}],\"temperature\":0.7,\"max_tokens\":1024,\"stream\":true,\
             \"tools\":[{{\"type\":\"function\",\"function\":{{\"name\":\"f\",\"parameters\":{{\"type\":\"object\"}}}}}}]}}",
            messages.join(",\n  ")
        )
    }

    #[test]
    #[ignore = "throughput measurement: cargo test --release -- --ignored --nocapture"]
    fn throughput_100kb() -> Result<(), serde_json::Error> {
        let body = chat_body(100 * 1024);
        assert_eq!(run(body.as_bytes()), ok("gpt-4o"));
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body)?)?;
        // A structure-heavy body: many short keys, numbers and literals.
        let mut items = Vec::new();
        let mut i = 0u32;
        while items.iter().map(String::len).sum::<usize>() < 100 * 1024 {
            items.push(format!(
                "{{\"id\":{i},\"score\":{}.25e-3,\"ok\":true,\"tag\":null,\"name\":\"item-{i}\",\"xs\":[1,2,3]}}",
                i * 7
            ));
            i += 1;
        }
        let structural = format!("{{\"model\":\"m\",\"items\":[{}]}}", items.join(","));
        for (name, doc) in [
            ("compact chat", body.as_str()),
            ("pretty chat", pretty.as_str()),
            ("structural", structural.as_str()),
        ] {
            let iterations = 3000;
            let start = std::time::Instant::now();
            for _ in 0..iterations {
                let got = body_model(std::hint::black_box(doc.as_bytes()));
                std::hint::black_box(&got);
            }
            let elapsed = start.elapsed().as_secs_f64();
            let gbps = (doc.len() * iterations) as f64 / elapsed / 1e9;
            let start = std::time::Instant::now();
            for _ in 0..iterations / 10 {
                let got = serde_json::from_slice::<Value>(std::hint::black_box(doc.as_bytes()));
                std::hint::black_box(&got.is_ok());
            }
            let serde_gbps =
                (doc.len() * iterations / 10) as f64 / start.elapsed().as_secs_f64() / 1e9;
            println!(
                "{name}: {} bytes, body_model {gbps:.2} GB/s, {:.1} us/body (serde_json Value: {serde_gbps:.2} GB/s)",
                doc.len(),
                elapsed / iterations as f64 * 1e6
            );
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn path_fast_path_agrees_with_the_full_scan(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", ".", "..", "%2e", "%2F", "%", "\\", "model", "models", "mod", "el",
                    "deployments", "x:gen", ":", "v1", "a", "%6d", "%FF",
                ]),
                0..12,
            )
        ) {
            let path: String = parts.concat();
            proptest::prop_assert_eq!(path_model(&path), path_model_full(&path), "{}", path);
        }
    }
}
