//! Editing a JSON body's top-level members in place, every other byte as sent.
//!
//! ```text
//! {"model": "openai/gpt-4o", "models": ["openai/gpt-4o", "x/y"], "temperature": 1.0e0}
//!   set model = "gpt-4o", remove models
//! {"model": "gpt-4o", "temperature": 1.0e0}
//! ```
//!
//! The one endpoint (SPEC §11) sends a request body on to each provider with
//! its `model` changed and OpenRouter's own members (`models`, `provider`,
//! `route`, …) taken out, and gives a JSON answer the model slug the client
//! asked for. Parsing into `serde_json::Value` and serialising again would
//! change key order, number spellings, escapes and whitespace, and collapse
//! duplicate keys; so [`members`] finds where each top-level member sits and
//! [`edit`] splices the body there, copying every other byte as it was.
//!
//! The rules of an edit:
//!
//! * keys are compared exactly, after their escapes are decoded
//!   (`"\u006dodels"` is `models`; `Models` is not);
//! * a key given to `set` gets the new value **at every occurrence**: the
//!   strict scanner refuses a second `model`, but other keys may repeat, and
//!   whichever occurrence an upstream's parser keeps (the first or the last),
//!   it reads the value the proxy set;
//! * a key given to `remove` goes **at every occurrence**;
//! * a key given to both is removed (removal wins): what must not reach the
//!   upstream never does, whatever is set; a key given to `set` twice takes
//!   its first value;
//! * a key given to `set` and absent from the body is inserted right after the
//!   opening `{`, as `"key":value` without whitespace, in `set`'s order, with
//!   a comma after it when a member follows;
//! * a removed member goes with one adjacent comma and the whitespace around
//!   it: with the gap after it when another member follows (that member moves
//!   up into its place and its indentation), else with the gap before it (the
//!   whitespace before the `}` stays). When every member goes, so does all
//!   that was between the braces: `{}`;
//! * whitespace before and after the object stays, and so does every byte of
//!   every member not touched.
//!
//! [`members`] is a light scan, for bodies the strict scanner
//! ([`crate::proxy::model`]) has already accepted: one linear pass, no
//! recursion, memchr to the end of each string, and no allocation beyond the
//! list (and a key with escapes, decoded). It checks the top-level object
//! fully (string keys, colons, commas, literals and numbers, the closing
//! brace, only whitespace around the object), decodes each key strictly, and
//! checks that nested arrays and objects close in order within 128 levels;
//! it does not check what is inside nested values or value strings. Whatever
//! the input, it returns `None` or a list, without panicking.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use smallvec::SmallVec;

/// The deepest nesting of arrays and objects, the top-level object included
/// (the strict scanner's limit).
const MAX_DEPTH: u32 = 128;

/// One top-level member of a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member<'a> {
    /// The key, escapes decoded; borrowed from the body when it has none.
    pub(crate) key: Cow<'a, str>,
    /// The whole member: from the key's opening quote to the end of the value.
    pub(crate) span: Range<usize>,
    /// The value.
    pub(crate) value: Range<usize>,
}

/// The top-level members of `body`, in order; `None` when the body is not a
/// JSON object (or is malformed where the scan looks: see the module's docs).
pub(crate) fn members(body: &[u8]) -> Option<Vec<Member<'_>>> {
    let open = skip_ws(body, 0);
    if body.get(open) != Some(&b'{') {
        return None;
    }
    // A chat request has about ten top-level members: one allocation.
    let mut found = Vec::with_capacity(16);
    let mut pos = skip_ws(body, open + 1);
    if body.get(pos) == Some(&b'}') {
        return (skip_ws(body, pos + 1) == body.len()).then_some(found);
    }
    loop {
        let member = member(body, pos)?;
        pos = skip_ws(body, member.span.end);
        found.push(member);
        match body.get(pos)? {
            b',' => pos = skip_ws(body, pos + 1),
            b'}' => return (skip_ws(body, pos + 1) == body.len()).then_some(found),
            _ => return None,
        }
    }
}

/// `body` with the members named in `remove` taken out and each `(key, raw
/// JSON value)` of `set` written, under the rules in the module's docs.
///
/// `members` must be what [`members`] returned for `body`; `None` when it
/// does not fit `body` or `body` is not an object. The values of `set` are
/// written as given: each must be one JSON value (see [`json_string`]).
/// The output is allocated once, at its exact length.
pub(crate) fn edit(
    body: &[u8],
    members: &[Member<'_>],
    set: &[(&str, &[u8])],
    remove: &[&str],
) -> Option<Bytes> {
    let plan = Plan::new(body, members, set, remove)?;
    let mut length = Length(0);
    plan.write(&mut length)?;
    let mut out = Vec::with_capacity(length.0);
    plan.write(&mut out)?;
    Some(Bytes::from(out))
}

/// `text` as a JSON string, quotes included: a value for [`edit`]'s `set`.
/// Escapes only what JSON requires (`"`, `\` and control characters).
pub(crate) fn json_string(text: &str) -> Vec<u8> {
    let mut length = Length(0);
    put_string(&mut length, text);
    let mut out = Vec::with_capacity(length.0);
    put_string(&mut out, text);
    out
}

// ----- the scan ------------------------------------------------------------

/// The member whose key's opening quote is at `start`.
fn member(body: &[u8], start: usize) -> Option<Member<'_>> {
    if body.get(start) != Some(&b'"') {
        return None;
    }
    let (key_end, escaped) = string_end(body, start + 1)?;
    let raw = body.get(start + 1..key_end - 1)?;
    let key = if escaped {
        Cow::Owned(unescape(raw)?)
    } else {
        Cow::Borrowed(std::str::from_utf8(raw).ok()?)
    };
    let colon = skip_ws(body, key_end);
    if body.get(colon) != Some(&b':') {
        return None;
    }
    let value_start = skip_ws(body, colon + 1);
    let value_end = value_end(body, value_start)?;
    Some(Member {
        key,
        span: start..value_end,
        value: value_start..value_end,
    })
}

/// The index of the first byte at or after `pos` that is not JSON whitespace.
#[inline]
fn skip_ws(body: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = body.get(pos) {
        pos += 1;
    }
    pos
}

/// The end of the string whose contents start at `pos` (just past its
/// opening quote): the index past its closing quote, and whether it has
/// escapes.
#[inline]
fn string_end(body: &[u8], mut pos: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        pos += memchr::memchr2(b'"', b'\\', body.get(pos..)?)?;
        if body.get(pos) == Some(&b'"') {
            return Some((pos + 1, escaped));
        }
        // A backslash: the byte after it cannot end the string (`\uXXXX`'s
        // digits hold no quote or backslash either).
        escaped = true;
        pos += 2;
    }
}

/// The end of the value that starts at `start`.
fn value_end(body: &[u8], start: usize) -> Option<usize> {
    match body.get(start)? {
        b'"' => string_end(body, start + 1).map(|(end, _)| end),
        b'{' | b'[' => container_end(body, start),
        b't' => literal_end(body, start, b"true"),
        b'f' => literal_end(body, start, b"false"),
        b'n' => literal_end(body, start, b"null"),
        b'-' | b'0'..=b'9' => number_end(body, start),
        _ => None,
    }
}

/// The end of the array or object that opens at `pos`: strings skipped with
/// memchr, brackets matched by kind, nesting bounded.
fn container_end(body: &[u8], mut pos: usize) -> Option<usize> {
    // Bit `d` is set when the container at nesting `d` (the one at `pos` is
    // 0, inside the top-level object) is an object.
    let mut objects = 0u128;
    let mut depth = 0u32;
    loop {
        let byte = *body.get(pos)?;
        match byte {
            b'"' => {
                pos = string_end(body, pos + 1)?.0;
                continue;
            }
            b'{' | b'[' => {
                if depth + 1 >= MAX_DEPTH {
                    return None;
                }
                let bit = 1u128 << depth;
                if byte == b'{' {
                    objects |= bit;
                } else {
                    objects &= !bit;
                }
                depth += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if (objects >> depth) & 1 != u128::from(byte == b'}') {
                    return None;
                }
                if depth == 0 {
                    return Some(pos + 1);
                }
            }
            _ => {}
        }
        pos += 1;
    }
}

/// The end of `word` (`true`, `false` or `null`) at `pos`.
fn literal_end(body: &[u8], pos: usize, word: &[u8]) -> Option<usize> {
    let end = pos + word.len();
    (body.get(pos..end)? == word).then_some(end)
}

/// The end of the number at `pos`, per
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(body: &[u8], mut pos: usize) -> Option<usize> {
    if body.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match body.get(pos)? {
        b'0' => pos += 1,
        b'1'..=b'9' => pos = digits_end(body, pos + 1),
        _ => return None,
    }
    if body.get(pos) == Some(&b'.') {
        pos = some_digits_end(body, pos + 1)?;
    }
    if let Some(b'e' | b'E') = body.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = body.get(pos) {
            pos += 1;
        }
        pos = some_digits_end(body, pos)?;
    }
    Some(pos)
}

/// The index past the ASCII digits at `pos`.
fn digits_end(body: &[u8], mut pos: usize) -> usize {
    while let Some(b'0'..=b'9') = body.get(pos) {
        pos += 1;
    }
    pos
}

/// [`digits_end`], when there is at least one digit.
fn some_digits_end(body: &[u8], pos: usize) -> Option<usize> {
    let end = digits_end(body, pos);
    (end > pos).then_some(end)
}

/// The text of a key's raw contents (between its quotes), escapes decoded;
/// `None` when they are not UTF-8 or an escape is not one of JSON's
/// (surrogates only as proper pairs).
fn unescape(raw: &[u8]) -> Option<String> {
    let mut rest = std::str::from_utf8(raw).ok()?;
    let mut out = String::with_capacity(rest.len());
    while let Some(at) = rest.find('\\') {
        out.push_str(rest.get(..at)?);
        let escape = rest.as_bytes().get(at + 1..)?;
        let (decoded, used) = match escape.first()? {
            b'"' => ('"', 1),
            b'\\' => ('\\', 1),
            b'/' => ('/', 1),
            b'b' => ('\u{8}', 1),
            b'f' => ('\u{c}', 1),
            b'n' => ('\n', 1),
            b'r' => ('\r', 1),
            b't' => ('\t', 1),
            b'u' => {
                let unit = hex4(escape.get(1..5)?)?;
                if (0xD800..0xDC00).contains(&unit) {
                    if escape.get(5..7)? != b"\\u" {
                        return None;
                    }
                    let low = hex4(escape.get(7..11)?)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(code)?, 11)
                } else {
                    // A lone low surrogate is no char: `None`.
                    (char::from_u32(unit)?, 5)
                }
            }
            _ => return None,
        };
        out.push(decoded);
        rest = rest.get(at + 1 + used..)?;
    }
    out.push_str(rest);
    Some(out)
}

/// The value of four hex digits (either case).
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0, |value, &digit| {
        Some((value << 4) | char::from(digit).to_digit(16)?)
    })
}

// ----- the edit -------------------------------------------------------------

/// Where the bytes of an edit go: counted first, then written.
trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

/// Counts the bytes an edit writes: the output's exact length.
#[derive(Debug)]
struct Length(usize);

impl Sink for Length {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// An edit, checked against its body and ready to write.
#[derive(Debug)]
struct Plan<'p, 'a> {
    body: &'p [u8],
    members: &'p [Member<'a>],
    /// What becomes of each member, decided once (the writes run twice).
    actions: SmallVec<[Action<'p>; 16]>,
    /// The set members the body lacks, in `set`'s order: inserted.
    inserted: SmallVec<[(&'p str, &'p [u8]); 4]>,
    /// The index of the top-level `{`.
    open: usize,
    /// The index of the top-level `}`.
    close: usize,
}

/// What an edit does to one member.
#[derive(Debug, Clone, Copy)]
enum Action<'p> {
    Keep,
    Remove,
    /// Its value replaced by this one.
    Set(&'p [u8]),
}

impl<'p, 'a> Plan<'p, 'a> {
    /// The plan, if `members` fits `body`: each member's value at its end,
    /// and between the braces nothing but the members, whitespace and one
    /// comma between each two (so no member is missing from the list).
    fn new(
        body: &'p [u8],
        members: &'p [Member<'a>],
        set: &'p [(&'p str, &'p [u8])],
        remove: &'p [&'p str],
    ) -> Option<Self> {
        let open = skip_ws(body, 0);
        if body.get(open) != Some(&b'{') {
            return None;
        }
        let mut end = open + 1;
        for (index, member) in members.iter().enumerate() {
            let Member { span, value, .. } = member;
            let fits = body
                .get(end..span.start)
                .is_some_and(|gap| separates(gap, index > 0))
                && span.start <= value.start
                && value.start < value.end
                && value.end == span.end
                && body.get(span.start) == Some(&b'"');
            if !fits {
                return None;
            }
            end = span.end;
        }
        let close = skip_ws(body, end);
        if body.get(close) != Some(&b'}') {
            return None;
        }
        let removes = |key: &str| remove.contains(&key);
        let actions = members
            .iter()
            .map(|m| {
                if removes(&m.key) {
                    Action::Remove
                } else {
                    // Its first value, when set twice.
                    set.iter()
                        .find(|(k, _)| *k == m.key)
                        .map_or(Action::Keep, |(_, v)| Action::Set(v))
                }
            })
            .collect();
        let inserted = set
            .iter()
            .enumerate()
            .filter(|&(index, &(key, _))| {
                let first = !set.iter().take(index).any(|(k, _)| *k == key);
                first && !removes(key) && !members.iter().any(|m| m.key == key)
            })
            .map(|(_, &entry)| entry)
            .collect();
        Some(Self {
            body,
            members,
            actions,
            inserted,
            open,
            close,
        })
    }

    /// Whether the member at `index` is removed.
    fn removed(&self, index: usize) -> bool {
        matches!(self.actions.get(index), Some(Action::Remove))
    }

    /// Writes the edited body to `out`; `None` when a range does not fit
    /// (only if `new` let an inconsistent list through).
    fn write(&self, out: &mut impl Sink) -> Option<()> {
        let body = self.body;
        let any_kept = self.actions.iter().any(|a| !matches!(a, Action::Remove));
        out.put(body.get(..=self.open)?);
        if self.write_insertions(out) && any_kept {
            out.put(b",");
        }
        let cursor = match (any_kept, self.members.is_empty()) {
            (true, _) => self.write_members(out)?,
            // Every member goes, and all between the braces with them.
            (false, false) => self.close,
            (false, true) => self.open + 1,
        };
        out.put(body.get(cursor..)?);
        Some(())
    }

    /// Writes the body from just after the `{` up to the end of the last
    /// kept member, values set and removed members dropped; the index up to
    /// which the body is written or dropped. At least one member is kept.
    fn write_members(&self, out: &mut impl Sink) -> Option<usize> {
        let members = self.members;
        let removed = |index: usize| self.removed(index);
        let mut cursor = self.open + 1;
        let mut index = 0;
        while let Some(member) = members.get(index) {
            if !removed(index) {
                if let Some(Action::Set(value)) = self.actions.get(index) {
                    out.put(self.body.get(cursor..member.value.start)?);
                    out.put(value);
                    cursor = member.value.end;
                }
                index += 1;
                continue;
            }
            // A run of removed members, `index..next`, goes with one gap:
            // the one after it when a member follows, else the one before.
            let mut next = index + 1;
            while removed(next) {
                next += 1;
            }
            let cut = match members.get(next) {
                Some(following) => member.span.start..following.span.start,
                // Nothing kept follows, so the member before the run is kept.
                None => members.get(index.checked_sub(1)?)?.span.end..members.last()?.span.end,
            };
            out.put(self.body.get(cursor..cut.start)?);
            cursor = cut.end;
            index = next;
        }
        Some(cursor)
    }

    /// Writes each set member the body lacks, comma-separated; whether any.
    fn write_insertions(&self, out: &mut impl Sink) -> bool {
        for (index, &(key, value)) in self.inserted.iter().enumerate() {
            if index > 0 {
                out.put(b",");
            }
            put_string(out, key);
            out.put(b":");
            out.put(value);
        }
        !self.inserted.is_empty()
    }
}

/// Whether `gap` is whitespace, around one comma when `comma`.
fn separates(gap: &[u8], comma: bool) -> bool {
    let mut at = skip_ws(gap, 0);
    if comma {
        if gap.get(at) != Some(&b',') {
            return false;
        }
        at = skip_ws(gap, at + 1);
    }
    at == gap.len()
}

/// Writes `text` as a JSON string.
fn put_string(out: &mut impl Sink, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put(b"\"");
    let bytes = text.as_bytes();
    let mut plain = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.put(bytes.get(plain..at).unwrap_or_default());
        plain = at + 1;
        if short.is_empty() {
            let high = HEX.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
            let low = HEX.get(usize::from(byte & 0xf)).copied().unwrap_or(b'0');
            out.put(&[b'\\', b'u', b'0', b'0', high, low]);
        } else {
            out.put(short);
        }
    }
    out.put(bytes.get(plain..).unwrap_or_default());
    out.put(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// `edit` of a text body, as text.
    fn run(body: &str, set: &[(&str, &str)], remove: &[&str]) -> Option<String> {
        let found = members(body.as_bytes())?;
        let set: Vec<(&str, &[u8])> = set.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let out = edit(body.as_bytes(), &found, &set, remove)?;
        Some(String::from_utf8(out.to_vec()).expect("UTF-8 in, UTF-8 out"))
    }

    type Case<'c> = (
        &'c str,
        &'c [(&'c str, &'c str)],
        &'c [&'c str],
        Option<&'c str>,
    );

    const PRETTY: &str = "{\n  \"a\": 1,\n  \"b\": 2,\n  \"c\": 3\n}";
    const X: &[(&str, &str)] = &[("model", "\"x\"")];

    #[test]
    fn edit_table() {
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            // removal: first, last, middle, only, all; one comma goes with each
            (r#"{"a":1,"b":2}"#, &[], &["a"], Some(r#"{"b":2}"#)),
            (r#"{"a":1,"b":2}"#, &[], &["b"], Some(r#"{"a":1}"#)),
            (r#"{"a":1,"b":2}"#, &[], &["a", "b"], Some("{}")),
            (r#"{"a":1}"#, &[], &["a"], Some("{}")),
            (r#"{"a":1,"b":2,"c":3}"#, &[], &["b"], Some(r#"{"a":1,"c":3}"#)),
            (r#"{"a":1,"b":2,"c":3}"#, &[], &["a", "b"], Some(r#"{"c":3}"#)),
            (r#"{"a":1,"b":2,"c":3}"#, &[], &["b", "c"], Some(r#"{"a":1}"#)),
            (r#"{"a":1,"b":2,"c":3}"#, &[], &["c", "a"], Some(r#"{"b":2}"#)),
            (r#"{"a":1,"b":2}"#, &[], &["x"], Some(r#"{"a":1,"b":2}"#)),
            // the next member moves up into the removed one's indentation;
            // the whitespace before the `}` stays
            (PRETTY, &[], &["a"], Some("{\n  \"b\": 2,\n  \"c\": 3\n}")),
            (PRETTY, &[], &["b"], Some("{\n  \"a\": 1,\n  \"c\": 3\n}")),
            (PRETTY, &[], &["c"], Some("{\n  \"a\": 1,\n  \"b\": 2\n}")),
            (PRETTY, &[], &["a", "b"], Some("{\n  \"c\": 3\n}")),
            (PRETTY, &[], &["b", "c"], Some("{\n  \"a\": 1\n}")),
            (PRETTY, &[], &["a", "c"], Some("{\n  \"b\": 2\n}")),
            (PRETTY, &[], &["a", "b", "c"], Some("{}")),
            (r#"{ "a" : 1 , "b" : 2 }"#, &[], &["a"], Some(r#"{ "b" : 2 }"#)),
            (r#"{ "a" : 1 , "b" : 2 }"#, &[], &["b"], Some(r#"{ "a" : 1 }"#)),
            ("{\r\n\t\"a\":1\r\n\t,\"b\":2\r\n}", &[], &["b"], Some("{\r\n\t\"a\":1\r\n}")),
            // set: in place, whatever surrounds the value
            (r#"{"model":"openai/gpt-4o","messages":[]}"#, &[("model", "\"gpt-4o\"")], &[], Some(r#"{"model":"gpt-4o","messages":[]}"#)),
            (r#"{ "model" : "a" , "x" : 1 }"#, &[("model", "\"bb\"")], &[], Some(r#"{ "model" : "bb" , "x" : 1 }"#)),
            (r#"{"model":"a","t":1.0E+2,"s":"\u00e9\/","n":-0}"#, &[("model", "\"b\"")], &[], Some(r#"{"model":"b","t":1.0E+2,"s":"\u00e9\/","n":-0}"#)),
            (r#"{"a":[1,{"b":"}"}],"model":null}"#, &[("model", "{\"k\": [1, 2]}")], &[], Some(r#"{"a":[1,{"b":"}"}],"model":{"k": [1, 2]}}"#)),
            // set: inserted right after the `{`, in order, comma when a member follows
            ("{}", X, &[], Some(r#"{"model":"x"}"#)),
            ("{ }", X, &[], Some(r#"{"model":"x" }"#)),
            (r#"{"a":1}"#, X, &[], Some(r#"{"model":"x","a":1}"#)),
            ("{\n  \"a\": 1\n}", X, &[], Some("{\"model\":\"x\",\n  \"a\": 1\n}")),
            (r#"{"a":1}"#, &[("b", "2"), ("c", "3")], &[], Some(r#"{"b":2,"c":3,"a":1}"#)),
            (r#"{"c":0,"a":1}"#, &[("b", "2"), ("a", "3")], &[], Some(r#"{"b":2,"c":0,"a":3}"#)),
            ("{}", &[("a\"b\n\u{1}", "1")], &[], Some(r#"{"a\"b\n\u0001":1}"#)),
            // a key set twice takes its first value
            (r#"{"a":1}"#, &[("a", "2"), ("a", "3")], &[], Some(r#"{"a":2}"#)),
            ("{}", &[("b", "1"), ("b", "2")], &[], Some(r#"{"b":1}"#)),
            // set and removed: removal wins, present or not
            (r#"{"a":1,"b":2}"#, &[("a", "9")], &["a"], Some(r#"{"b":2}"#)),
            (r#"{"b":2}"#, &[("a", "9")], &["a"], Some(r#"{"b":2}"#)),
            // every member removed, then inserted into the emptied braces
            (r#"{"models":["x"],"route":"fallback"}"#, X, &["models", "route"], Some(r#"{"model":"x"}"#)),
            ("{\n  \"models\": []\n}", X, &["models"], Some(r#"{"model":"x"}"#)),
            // duplicates: set writes every occurrence, remove takes every one
            (r#"{"a":1,"a":2}"#, &[("a", "3")], &[], Some(r#"{"a":3,"a":3}"#)),
            (r#"{"a":1,"a":2}"#, &[], &["a"], Some("{}")),
            (r#"{"a":1,"b":0,"a":2}"#, &[], &["a"], Some(r#"{"b":0}"#)),
            (r#"{"b":0,"a":1,"c":0,"a":2}"#, &[], &["a"], Some(r#"{"b":0,"c":0}"#)),
            // keys compared after decoding, exactly; the key's bytes stay
            (r#"{"\u006dodels":["a"],"model":"m"}"#, &[], &["models"], Some(r#"{"model":"m"}"#)),
            (r#"{"mod\u0065l":"a"}"#, &[("model", "\"b\"")], &[], Some(r#"{"mod\u0065l":"b"}"#)),
            (r#"{"Models":1}"#, &[], &["models"], Some(r#"{"Models":1}"#)),
            // only the top level
            (r#"{"a":{"models":1},"models":2}"#, &[], &["models"], Some(r#"{"a":{"models":1}}"#)),
            // whitespace outside the object stays
            (" \n{\"a\":1}\n ", X, &["a"], Some(" \n{\"model\":\"x\"}\n ")),
            ("\t{\"a\":1 , \"b\":2}\r\n", &[], &["b"], Some("\t{\"a\":1}\r\n")),
            // the one endpoint's edits
            (
                r#"{"model":"anthropic/claude","stream":true,"max_tokens":10}"#,
                &[("model", "\"claude\""), ("anthropic_version", "\"bedrock-2023-05-31\"")],
                &["stream"],
                Some(r#"{"anthropic_version":"bedrock-2023-05-31","model":"claude","max_tokens":10}"#),
            ),
            (
                r#"{"id":"c1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[]}"#,
                &[("model", "\"openai/gpt-4o\""), ("provider", "\"OpenAI\"")],
                &[],
                Some(r#"{"provider":"OpenAI","id":"c1","object":"chat.completion","model":"openai/gpt-4o","choices":[]}"#),
            ),
            // not an object
            ("", X, &[], None),
            ("  ", X, &[], None),
            ("[]", X, &[], None),
            ("\"{}\"", X, &[], None),
            ("null", X, &[], None),
            ("{", X, &[], None),
            (r#"{"a":1,}"#, X, &[], None),
        ];
        for &(body, set, remove, expected) in cases {
            let got = run(body, set, remove);
            assert_eq!(
                got.as_deref(),
                expected,
                "{body:?} set {set:?} remove {remove:?}"
            );
            if let Some(out) = got {
                serde_json::from_str::<Value>(&out).expect("the output is JSON");
            }
        }
    }

    /// Each member as (key, member text, value text).
    fn scanned(body: &str) -> Option<Vec<(String, &str, &str)>> {
        let found = members(body.as_bytes())?;
        Some(
            found
                .iter()
                .map(|m| {
                    (
                        m.key.to_string(),
                        &body[m.span.clone()],
                        &body[m.value.clone()],
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn members_table() {
        assert_eq!(scanned("{}"), Some(vec![]));
        assert_eq!(scanned(" \t{ \n}\r\n"), Some(vec![]));
        assert_eq!(
            scanned(
                r#" { "a" : 1 ,"b":[1,{"c":"}]"}],"\u0061\"\n":"x\"y\\" ,"d":{"e":[]} , "f":true,"g":-1.5e+3}"#
            ),
            Some(vec![
                ("a".to_owned(), r#""a" : 1"#, "1"),
                ("b".to_owned(), r#""b":[1,{"c":"}]"}]"#, r#"[1,{"c":"}]"}]"#),
                (
                    "a\"\n".to_owned(),
                    r#""\u0061\"\n":"x\"y\\""#,
                    r#""x\"y\\""#
                ),
                ("d".to_owned(), r#""d":{"e":[]}"#, r#"{"e":[]}"#),
                ("f".to_owned(), r#""f":true"#, "true"),
                ("g".to_owned(), r#""g":-1.5e+3"#, "-1.5e+3"),
            ])
        );
        assert_eq!(
            scanned(r#"{"\ud83d\ude00\u00E9\/":null,"":""}"#)
                .map(|m| m.into_iter().map(|m| m.0).collect::<Vec<_>>()),
            Some(vec!["😀é/".to_owned(), String::new()])
        );
        let refused = [
            "",
            " ",
            "[]",
            "\"a\"",
            "1",
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,\"a\":1}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":1}}",
            "{\"a\":1} x",
            "{\"a\":1}{}",
            "{\"a\":[1}",
            "{\"a\":{]}",
            "{\"a\":[[]}",
            "{\"a\":]}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":01}",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":1e}",
            "{\"a\":+1}",
            "{\"a\":.5}",
            "{\"a\":1,\"b\"",
            "{\"a\":\"x}",
            "{\"a\\\":1}",
            "{'a':1}",
            "{a:1}",
            "{\"\\ud800\":1}",
            "{\"\\udc00\":1}",
            "{\"\\ud800\\u0041\":1}",
            "{\"\\x\":1}",
            "{\"\\u12\":1}",
            "{\"\\u+123\":1}",
            "{\"a\\",
            "\u{feff}{}",
        ];
        for body in refused {
            assert_eq!(scanned(body), None, "{body:?}");
        }
        // Not UTF-8 in a key.
        assert_eq!(members(b"{\"\xff\":1}"), None);
        assert_eq!(members(b"{\"\\u0041\xff\":1}"), None);
    }

    #[test]
    fn keys_borrowed_unless_escaped() {
        let found = members(br#"{"plain":1,"\u0065sc":2}"#).expect("an object");
        assert!(matches!(found[0].key, Cow::Borrowed("plain")));
        assert!(matches!(&found[1].key, Cow::Owned(k) if k == "esc"));
    }

    #[test]
    fn depth_as_the_strict_scanner() {
        // 128 levels, the top-level object included, as `proxy::model` (not
        // called here: benches/hot_path.rs compiles this file on its own).
        for (depth, accepted) in [(127, true), (128, true), (129, false), (200, false)] {
            // Arrays and objects in turn, a value at the bottom.
            let nested: usize = depth - 1;
            let open = "[{\"b\":".repeat(nested / 2) + &"[".repeat(nested % 2);
            let close = "]".repeat(nested % 2) + &"}]".repeat(nested / 2);
            let body = format!("{{\"a\":{open}0{close}}}");
            if depth <= 127 {
                // serde_json's own limit: the body is JSON.
                serde_json::from_str::<Value>(&body).expect("valid JSON");
            }
            let found = members(body.as_bytes());
            assert_eq!(found.is_some(), accepted, "depth {depth}");
        }
    }

    #[test]
    fn members_that_do_not_fit_the_body() {
        let body = br#"{"a":1,"b":2}"#;
        let found = members(body).expect("an object");
        let mut swapped = found.clone();
        swapped.swap(0, 1);
        assert_eq!(edit(body, &swapped, &[], &["a"]), None);
        let mut wide = found.clone();
        wide[1].value.start = 0;
        assert_eq!(edit(body, &wide, &[], &["a"]), None);
        assert_eq!(edit(br#"{"a":1}"#, &found, &[], &["a"]), None);
        assert_eq!(edit(b"{}", &found, &[], &[]), None);
        assert_eq!(edit(br#"{"a":1,"b":2,"c":3}"#, &found, &[], &[]), None);
        // A list with a member missing.
        let three = br#"{"a":1, "b":2 ,"c":3}"#;
        let found = members(three).expect("an object");
        assert!(edit(three, &found, &[], &["b"]).is_some());
        assert_eq!(edit(three, &found[1..], &[], &["b"]), None);
        assert_eq!(edit(three, &found[..2], &[], &["b"]), None);
        assert_eq!(
            edit(three, &[found[0].clone(), found[2].clone()], &[], &["a"]),
            None
        );
    }

    #[test]
    fn json_string_table() {
        assert_eq!(json_string("openai/gpt-4o"), b"\"openai/gpt-4o\"");
        assert_eq!(json_string(""), b"\"\"");
        assert_eq!(
            json_string("a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}é😀/"),
            "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0000\\u001f\u{7f}é😀/\"".as_bytes()
        );
    }

    // ----- generated documents -----------------------------------------

    /// A JSON string: its text and how each character is written.
    #[derive(Debug, Clone)]
    struct Text {
        text: String,
        /// Per character, cycling: 0 as is (escaped only when JSON requires
        /// it), 1 `\u` lower case, 2 `\u` upper case, 3 the short escape if
        /// there is one.
        styles: Vec<u8>,
    }

    /// A generated value; numbers and literals as written.
    #[derive(Debug, Clone)]
    enum J {
        Word(String),
        Str(Text),
        Arr(Vec<J>),
        Obj(Vec<(Text, J)>),
    }

    const WS: [&str; 7] = ["", "", " ", "\n", "\t", "\r\n  ", "  "];

    /// Writes generated values with whitespace between every token.
    struct Writer<'w> {
        out: String,
        ws: &'w [u8],
        next: usize,
    }

    impl Writer<'_> {
        fn ws(&mut self) {
            if let Some(&pick) = self.ws.get(self.next % self.ws.len().max(1)) {
                self.out.push_str(WS[usize::from(pick) % WS.len()]);
                self.next += 1;
            }
        }

        fn string(&mut self, s: &Text) {
            self.out.push('"');
            for (i, c) in s.text.chars().enumerate() {
                let style = s
                    .styles
                    .get(i % s.styles.len().max(1))
                    .copied()
                    .unwrap_or(0);
                let short = match c {
                    '"' => Some("\\\""),
                    '\\' => Some("\\\\"),
                    '\n' => Some("\\n"),
                    '\r' => Some("\\r"),
                    '\t' => Some("\\t"),
                    '\u{8}' => Some("\\b"),
                    '\u{c}' => Some("\\f"),
                    '/' if style == 3 => Some("\\/"),
                    _ => None,
                };
                let required = c < ' ' || c == '"' || c == '\\';
                if style == 1 || style == 2 || (required && short.is_none()) {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&if style == 2 {
                            format!("\\u{unit:04X}")
                        } else {
                            format!("\\u{unit:04x}")
                        });
                    }
                } else if let Some(short) = short {
                    self.out.push_str(short);
                } else {
                    self.out.push(c);
                }
            }
            self.out.push('"');
        }

        fn member(&mut self, key: &Text, value: &J) -> Written {
            let start = self.out.len();
            self.string(key);
            self.ws();
            self.out.push(':');
            self.ws();
            let value_start = self.out.len();
            self.value(value);
            (start..self.out.len(), value_start..self.out.len())
        }

        fn value(&mut self, j: &J) {
            match j {
                J::Word(w) => self.out.push_str(w),
                J::Str(s) => self.string(s),
                J::Arr(items) => {
                    self.out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        self.ws();
                        if i > 0 {
                            self.out.push(',');
                            self.ws();
                        }
                        self.value(item);
                    }
                    self.ws();
                    self.out.push(']');
                }
                J::Obj(members) => {
                    self.out.push('{');
                    for (i, (k, v)) in members.iter().enumerate() {
                        self.ws();
                        if i > 0 {
                            self.out.push(',');
                            self.ws();
                        }
                        self.member(k, v);
                    }
                    self.ws();
                    self.out.push('}');
                }
            }
        }
    }

    /// Where a member and its value were written.
    type Written = (Range<usize>, Range<usize>);

    /// A top-level object with whitespace from `ws`, and where each of its
    /// members was written.
    fn document(members: &[(Text, J)], ws: &[u8]) -> (String, Vec<Written>) {
        let mut w = Writer {
            out: String::new(),
            ws,
            next: 0,
        };
        let mut ranges = Vec::new();
        w.ws();
        w.out.push('{');
        for (i, (k, v)) in members.iter().enumerate() {
            w.ws();
            if i > 0 {
                w.out.push(',');
                w.ws();
            }
            ranges.push(w.member(k, v));
        }
        w.ws();
        w.out.push('}');
        w.ws();
        (w.out, ranges)
    }

    /// A value alone, as `set` takes it (no whitespace around it).
    fn raw(value: &J, ws: &[u8]) -> Vec<u8> {
        let mut w = Writer {
            out: String::new(),
            ws,
            next: 0,
        };
        w.value(value);
        w.out.into_bytes()
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(proptest::char::range('a', 'e'), 0..4)
                .prop_map(String::from_iter),
            any::<String>(),
            proptest::collection::vec(
                proptest::sample::select(vec![
                    '"', '\\', '/', '\n', '\u{1}', '\u{7f}', 'é', '😀', 'm'
                ]),
                0..5
            )
            .prop_map(String::from_iter),
        ]
    }

    /// Keys the one endpoint touches, and others.
    fn key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => proptest::sample::select(vec![
                "model", "models", "provider", "route", "stream", "Model", "a", "q\"\n",
            ])
            .prop_map(str::to_owned),
            1 => text(),
        ]
    }

    fn styled(text: impl Strategy<Value = String>) -> impl Strategy<Value = Text> {
        (text, proptest::collection::vec(0u8..6, 0..4))
            .prop_map(|(text, styles)| Text { text, styles })
    }

    fn number() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop_oneof![Just(0u64), any::<u64>()],
            proptest::option::of(0u32..1000),
            proptest::option::of((0usize..4, 0u8..60)),
        )
            .prop_map(|(negative, int, fraction, exponent)| {
                let mut n = if negative {
                    "-".to_owned()
                } else {
                    String::new()
                };
                n.push_str(&int.to_string());
                if let Some(f) = fraction {
                    n.push_str(&format!(".{f:03}"));
                }
                if let Some((sign, e)) = exponent {
                    n.push_str(["e", "E", "e+", "E-"][sign]);
                    n.push_str(&e.to_string());
                }
                n
            })
    }

    fn value() -> impl Strategy<Value = J> {
        let leaf = prop_oneof![
            proptest::sample::select(vec!["true", "false", "null"])
                .prop_map(|w| J::Word(w.to_owned())),
            number().prop_map(J::Word),
            styled(text()).prop_map(J::Str),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
                proptest::collection::vec((styled(key_text()), inner), 0..4).prop_map(J::Obj),
            ]
        })
    }

    fn top() -> impl Strategy<Value = Vec<(Text, J)>> {
        proptest::collection::vec((styled(key_text()), value()), 0..7)
    }

    fn whitespace() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..7, 0..10)
    }

    /// `set` entries: a key and a raw value.
    fn sets() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        proptest::collection::vec(
            (key_text(), value(), whitespace()).prop_map(|(k, v, ws)| (k, raw(&v, &ws))),
            0..4,
        )
    }

    fn removes() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(key_text(), 0..4)
    }

    /// The edit at the `serde_json` level, by the module's rules.
    fn oracle(body: &str, set: &[(&str, &[u8])], remove: &[&str]) -> Value {
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(body) else {
            panic!("the generated body is an object: {body:?}");
        };
        for key in remove {
            map.remove(*key);
        }
        let mut written = Map::new();
        for (key, value) in set {
            if remove.contains(key) || written.contains_key(*key) {
                continue;
            }
            let value: Value = serde_json::from_slice(value).expect("a generated value");
            written.insert((*key).to_owned(), value.clone());
            map.insert((*key).to_owned(), value);
        }
        Value::Object(map)
    }

    /// Whitespace before and after the object.
    fn outside(body: &[u8]) -> (&[u8], &[u8]) {
        let open = skip_ws(body, 0);
        let end = body
            .iter()
            .rposition(|b| *b == b'}')
            .map_or(body.len(), |at| at + 1);
        (&body[..open], &body[end..])
    }

    const INTERESTING: &[u8] = b"{}[]\",:\\ \t\n\r0123456789eE.-+tfnulu/\x00\x1f\x7f\x80\xc3\xff";

    /// A generated document with one byte removed, inserted or replaced.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![any::<u8>(), proptest::sample::select(INTERESTING.to_vec())];
        (top(), whitespace(), 0u8..3, any::<usize>(), byte).prop_map(|(top, ws, op, at, byte)| {
            let mut bytes = document(&top, &ws).0.into_bytes();
            let len = bytes.len();
            match op {
                0 => drop(bytes.remove(at % len)),
                1 => bytes.insert(at % (len + 1), byte),
                _ => bytes[at % len] = byte,
            }
            bytes
        })
    }

    proptest! {
        // (1) The members found are the ones written, and agree with serde_json.
        #[test]
        fn members_are_the_ones_written(top in top(), ws in whitespace()) {
            let (body, ranges) = document(&top, &ws);
            let found = members(body.as_bytes()).expect("a generated object");
            prop_assert_eq!(found.len(), top.len());
            for ((m, (key, _)), (span, value)) in found.iter().zip(&top).zip(&ranges) {
                prop_assert_eq!(&*m.key, key.text.as_str());
                prop_assert_eq!(&m.span, span);
                prop_assert_eq!(&m.value, value);
            }
            let Ok(Value::Object(parsed)) = serde_json::from_str::<Value>(&body) else {
                panic!("serde_json reads {body:?} as an object");
            };
            prop_assert_eq!(parsed.len(), found.iter().map(|m| &m.key).collect::<std::collections::BTreeSet<_>>().len());
            for (key, value) in &parsed {
                // serde_json keeps the last of duplicate keys.
                let last = found.iter().rev().find(|m| m.key == key.as_str()).expect("every key found");
                let slice: Value = serde_json::from_str(&body[last.value.clone()]).expect("a value");
                prop_assert_eq!(&slice, value);
            }
        }

        // (2) An edit reads as the same edit made on serde_json's map, and
        // (3) keeps the bytes of every member it does not touch, in order.
        #[test]
        fn edit_agrees_with_serde(top in top(), ws in whitespace(), set in sets(), remove in removes()) {
            let (body, _) = document(&top, &ws);
            let found = members(body.as_bytes()).expect("a generated object");
            let set: Vec<(&str, &[u8])> = set.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
            let out = edit(body.as_bytes(), &found, &set, &remove).expect("an object");

            let read: Value = serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&out))))?;
            prop_assert_eq!(read, oracle(&body, &set, &remove));
            prop_assert_eq!(outside(&out), outside(body.as_bytes()));

            let value_for = |key: &str| set.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            let inserted: Vec<&str> = set
                .iter()
                .enumerate()
                .filter(|&(i, (k, _))| {
                    !set[..i].iter().any(|(e, _)| e == k) && !remove.contains(k) && !found.iter().any(|m| m.key == *k)
                })
                .map(|(_, (k, _))| *k)
                .collect();
            let kept: Vec<&Member<'_>> = found.iter().filter(|m| !remove.contains(&&*m.key)).collect();
            let after = members(&out).expect("the output is an object");
            prop_assert_eq!(after.len(), inserted.len() + kept.len());
            for (m, key) in after.iter().zip(&inserted) {
                prop_assert_eq!(&*m.key, *key);
                prop_assert_eq!(Some(&out[m.value.clone()]), value_for(key));
            }
            for (m, before) in after[inserted.len()..].iter().zip(&kept) {
                prop_assert_eq!(&m.key, &before.key);
                let b = body.as_bytes();
                match value_for(&before.key) {
                    Some(value) => {
                        prop_assert_eq!(&out[m.span.start..m.value.start], &b[before.span.start..before.value.start]);
                        prop_assert_eq!(&out[m.value.clone()], value);
                    }
                    None => prop_assert_eq!(&out[m.span.clone()], &b[before.span.clone()]),
                }
            }
        }

        // (4) Any bytes: `None` or a list, never a panic; and an edit of
        // whatever was found, even with another body's members.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(
            prop_oneof![any::<u8>(), proptest::sample::select(INTERESTING.to_vec())], 0..48),
            set in sets(), remove in removes(),
        ) {
            total(&bytes, &set, &remove)?;
        }

        #[test]
        fn mutated_documents(bytes in mutated(), set in sets(), remove in removes()) {
            total(&bytes, &set, &remove)?;
        }

        #[test]
        fn json_string_is_serde_json(text in text()) {
            prop_assert_eq!(json_string(&text), serde_json::to_vec(&text).expect("a string"));
        }
    }

    /// (4) for one input.
    fn total(
        bytes: &[u8],
        set: &[(String, Vec<u8>)],
        remove: &[String],
    ) -> Result<(), TestCaseError> {
        let set: Vec<(&str, &[u8])> = set
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
        let found = members(bytes);
        if let Ok(Value::Object(_)) = serde_json::from_slice::<Value>(bytes) {
            prop_assert!(
                found.is_some(),
                "refused {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        if let Some(found) = &found {
            prop_assert!(edit(bytes, found, &set, &remove).is_some());
        }
        let other = members(br#"{"model":"a","models":[1],"x":{"y":2}}"#).expect("an object");
        let _ = edit(bytes, &other, &set, &remove);
        Ok(())
    }
}
