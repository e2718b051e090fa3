//! Routing `/{provider}/{rest}` exactly as sent, and the checks on `rest` and
//! the query string.
//!
//! The provider is the first path segment, byte for byte: no decoding, no
//! normalisation, so `/openai/../anthropic/…`, `//…`, `%2e%2e` or `%2F` never name
//! another provider. The rest is forwarded as sent, but dot segments (in any
//! encoding) and empty segments are refused, so a path cannot climb out of a
//! base URL's prefix (an Azure deployment, say) once the upstream normalises it.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::error::Rejection;

/// `/{provider}{rest}`, where `rest` starts with `/`.
pub(crate) fn split(path: &str) -> Result<(&str, &str), Rejection> {
    let after = path.strip_prefix('/').ok_or(Rejection::NotFound)?;
    let slash = after.find('/').ok_or(Rejection::NotFound)?;
    let (provider, rest) = after.split_at(slash);
    if provider.is_empty() {
        return Err(Rejection::NotFound);
    }
    Ok((provider, rest))
}

/// Refuses empty segments and `.`/`..` segments, however they are spelt
/// (`%2e`, `%2E`, behind `%2F` or `\`, with a `;` parameter).
pub(crate) fn check_rest(rest: &str) -> Result<(), Rejection> {
    let bytes = rest.as_bytes();
    if bytes.windows(2).any(|pair| pair == b"//") {
        return Err(Rejection::InvalidRequest(
            "empty path segments are not allowed",
        ));
    }
    let plain = !bytes.iter().any(|&b| matches!(b, b'%' | b'\\' | b';'));
    let dot = if plain {
        // The common case, without decoding or multi-character splitting.
        rest.split('/').any(|seg| seg == "." || seg == "..")
    } else {
        dot_segment_decoded(rest)
    };
    if dot {
        return Err(Rejection::InvalidRequest(
            "dot segments are not allowed in the path",
        ));
    }
    Ok(())
}

/// Whether `rest` has a dot segment once percent-decoded, split at `/` and
/// `\\`, each segment cut at its `;` parameter.
fn dot_segment_decoded(rest: &str) -> bool {
    let decoded: Cow<'_, str> = if rest.contains('%') {
        percent_decode_str(rest).decode_utf8_lossy()
    } else {
        Cow::Borrowed(rest)
    };
    decoded.split(['/', '\\']).any(|seg| {
        let seg = seg.split(';').next().unwrap_or(seg);
        seg == "." || seg == ".."
    })
}

/// The query to forward: without any `key` parameter (Google's way of passing a
/// key, which must never carry the client's key upstream), and refused when it
/// names a `model` (the model comes from the path or body only). Parameter names
/// are percent- and `+`-decoded and compared ignoring ASCII case.
pub(crate) fn filter_query(query: Option<&str>) -> Result<Option<Cow<'_, str>>, Rejection> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut dropped = false;
    for pair in query.split('&') {
        match param_kind(pair) {
            Param::Model => {
                return Err(Rejection::AmbiguousModel(
                    "the model may not be given as a query parameter",
                ))
            }
            Param::Key => dropped = true,
            Param::Other => {}
        }
    }
    if !dropped {
        return Ok((!query.is_empty()).then_some(Cow::Borrowed(query)));
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| param_kind(pair) != Param::Key)
        .collect();
    let kept = kept.join("&");
    Ok((!kept.is_empty()).then_some(Cow::Owned(kept)))
}

#[derive(PartialEq, Eq)]
enum Param {
    Model,
    Key,
    Other,
}

fn param_kind(pair: &str) -> Param {
    let name = pair.split('=').next().unwrap_or(pair);
    // Short-circuit the common case: a name with nothing to decode or trim
    // (no `%`, `+`, whitespace or non-ASCII byte) that is longer than
    // `model`. A length bound alone is not enough: padding (`key%09%09…`,
    // `++++model`) is unbounded and trimmed away below.
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'+');
    if plain && name.len() > "model".len() {
        return Param::Other;
    }
    let name = name.replace('+', " ");
    let decoded = percent_decode_str(&name).decode_utf8_lossy();
    let decoded = decoded.trim();
    if decoded.eq_ignore_ascii_case("model") {
        Param::Model
    } else if decoded.eq_ignore_ascii_case("key") {
        Param::Key
    } else {
        Param::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        type Case<'a> = (&'a str, Result<(&'a str, &'a str), &'a str>);
        let cases: &[Case<'_>] = &[
            (
                "/openai/v1/chat/completions",
                Ok(("openai", "/v1/chat/completions")),
            ),
            ("/openai/", Ok(("openai", "/"))),
            (
                "/openai/../anthropic/v1/messages",
                Ok(("openai", "/../anthropic/v1/messages")),
            ),
            (
                "/openai%2F..%2Fanthropic/v1",
                Ok(("openai%2F..%2Fanthropic", "/v1")),
            ),
            ("/%6fpenai/v1", Ok(("%6fpenai", "/v1"))),
            ("//anthropic/v1", Err("not_found")),
            ("/openai", Err("not_found")),
            ("/", Err("not_found")),
            ("", Err("not_found")),
        ];
        for (path, want) in cases {
            assert_eq!(split(path).map_err(|r| r.reason()), *want, "{path}");
        }
    }

    #[test]
    fn rest_table() {
        for ok in [
            "/v1/chat/completions",
            "/",
            "/v1/models/gemini-pro:generateContent",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse",
            "/v1/a...b/c",
            "/v1/.well-known",
        ] {
            assert_eq!(check_rest(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/../anthropic/v1",
            "/v1/..",
            "/v1/./x",
            "/v1/%2e%2e/x",
            "/v1/%2E%2E/x",
            "/v1/.%2e/x",
            "/v1/%2e%2e%2fx",
            "/v1/x%2F..%2Fy",
            "/v1/x%5C..%5Cy",
            "/v1/..;/x",
            "/v1//x",
            "//x",
        ] {
            assert_eq!(
                check_rest(bad).map_err(|r| r.reason()),
                Err("invalid_request"),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_table() {
        type Case<'a> = (Option<&'a str>, Result<Option<&'a str>, &'a str>);
        let cases: &[Case<'_>] = &[
            (None, Ok(None)),
            (Some(""), Ok(None)),
            (Some("a=1&b=2"), Ok(Some("a=1&b=2"))),
            (Some("key=gw"), Ok(None)),
            (Some("alt=sse&key=gw"), Ok(Some("alt=sse"))),
            (Some("KEY=gw&alt=sse"), Ok(Some("alt=sse"))),
            (Some("k%65y=gw&alt=sse"), Ok(Some("alt=sse"))),
            (Some("key&x=1"), Ok(Some("x=1"))),
            (Some("keys=1"), Ok(Some("keys=1"))),
            (Some("model=gpt-4o"), Err("ambiguous_model")),
            (Some("a=1&Model=x"), Err("ambiguous_model")),
            (Some("m%6fdel=x"), Err("ambiguous_model")),
            (Some("+model=x"), Err("ambiguous_model")),
            (Some("models=x"), Ok(Some("models=x"))),
            // Padded past 15 bytes, a name still decodes and trims to `key`
            // or `model` (found by fuzz/path_model).
            (
                Some("key%09%09%09%09%09%09=gw&alt=sse"),
                Ok(Some("alt=sse")),
            ),
            (Some("key++++++++++++++=gw"), Ok(None)),
            (Some("%20%20%20%20%20model=x"), Err("ambiguous_model")),
            (Some("+++++++++++++++++model=x"), Err("ambiguous_model")),
            (Some("%6d%6f%64%65%6c%20%20=x"), Err("ambiguous_model")),
            (
                Some("a-long-parameter-name=1"),
                Ok(Some("a-long-parameter-name=1")),
            ),
        ];
        for (q, want) in cases {
            let got = filter_query(*q).map_err(|r| r.reason());
            let got = got.as_ref().map(|o| o.as_deref());
            assert_eq!(got, want.as_ref().map(|o| *o), "{q:?}");
        }
    }

    proptest::proptest! {
        /// The plain fast path of `check_rest` agrees with the decoding one.
        #[test]
        fn plain_paths_agree_with_the_decoding_check(
            segments in proptest::collection::vec("[.a-z]{0,3}", 1..6)
        ) {
            let rest = format!("/{}", segments.join("/"));
            let fast = rest.split('/').any(|seg| seg == "." || seg == "..");
            proptest::prop_assert_eq!(fast, dot_segment_decoded(&rest), "{}", rest);
        }
    }
}
