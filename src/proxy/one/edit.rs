//! Editing a JSON body's top-level members in place, every other byte as sent.
//! (A stand-in while the real module is written beside this.)

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

/// One top-level member of a JSON object.
#[derive(Debug, Clone)]
pub(crate) struct Member<'a> {
    pub(crate) key: Cow<'a, str>,
    pub(crate) span: Range<usize>,
    pub(crate) value: Range<usize>,
}

/// The top-level members of `body`; `None` when it is not an object.
pub(crate) fn members(body: &[u8]) -> Option<Vec<Member<'_>>> {
    let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut i = 0;
    while i < body.len() && ws(body[i]) {
        i += 1;
    }
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        while i < body.len() && (ws(body[i]) || body[i] == b',') {
            i += 1;
        }
        match body.get(i)? {
            b'}' => return Some(out),
            b'"' => {}
            _ => return None,
        }
        let key_start = i;
        let key_end = string_end(body, i)?;
        let key: Cow<'_, str> = serde_json::from_slice::<Cow<'_, str>>(&body[key_start..key_end]).ok()?;
        i = key_end;
        while i < body.len() && (ws(body[i]) || body[i] == b':') {
            i += 1;
        }
        let value_start = i;
        let value_end = value_end(body, i)?;
        out.push(Member {
            key,
            span: key_start..value_end,
            value: value_start..value_end,
        });
        i = value_end;
    }
}

fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn value_end(body: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i = string_end(body, i)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' if depth == 0 => return Some(i),
            b' ' | b'\t' | b'\n' | b'\r' if depth == 0 && i > start => return Some(i),
            _ => {}
        }
        i += 1;
    }
    Some(i)
}

/// `body` with `remove` taken out and `set` written.
pub(crate) fn edit(
    body: &[u8],
    members: &[Member<'_>],
    set: &[(&str, &[u8])],
    remove: &[&str],
) -> Option<Bytes> {
    let open = body.iter().position(|&b| b == b'{')?;
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(&body[..=open]);
    let mut first = true;
    for (k, v) in set {
        if members.iter().any(|m| m.key == *k) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&serde_json::to_vec(k).ok()?);
        out.push(b':');
        out.extend_from_slice(v);
    }
    for m in members {
        if remove.contains(&&*m.key) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        match set.iter().find(|(k, _)| *k == m.key) {
            Some((_, v)) => {
                out.extend_from_slice(&body[m.span.start..m.value.start]);
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&body[m.span.clone()]),
        }
    }
    let close = body.iter().rposition(|&b| b == b'}')?;
    out.extend_from_slice(&body[close..]);
    Some(Bytes::from(out))
}

/// `value` as a JSON string.
pub(crate) fn string(value: &str) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
