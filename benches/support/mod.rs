//! What both benches build their requests from.

use bytes::Bytes;

/// A chat body of about `len` bytes.
pub(crate) fn chat_body(len: usize) -> Bytes {
    let mut body = String::from(r#"{"model":"gpt-4o","messages":[{"role":"user","content":""#);
    let filler = "lorem ipsum dolor sit amet, \\\"quoted\\\" text and numbers 12345 ";
    while body.len() + filler.len() + 4 < len {
        body.push_str(filler);
    }
    body.push_str(r#""}],"temperature":0.7,"stream":false}"#);
    Bytes::from(body)
}
