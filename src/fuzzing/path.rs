//! The path's model and the query's checks (SPEC §4) against a slow reading
//! of the spec's rules, written apart from the proxy's.

use super::{percent_decode, text};
use crate::proxy::{model, route};

/// The keywords after which a path names its model.
const KEYWORDS: [&str; 3] = ["model", "models", "deployments"];

/// The path and query readers: no panic, the fast path the same as the full
/// scan, the model SPEC §4 reads, a `model` parameter refused and a `key`
/// one dropped. The input is a request target, `/{provider}/{rest}?{query}`.
pub fn path_model(data: &[u8]) {
    let Some(target) = text(data) else { return };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let rest = match route::split(path) {
        Ok((provider, rest)) => {
            assert_eq!(format!("/{provider}{rest}"), path, "the provider, as sent");
            assert!(!provider.is_empty() && !provider.contains('/'));
            rest
        }
        Err(_) => path,
    };
    let _ = route::check_rest(rest);
    let ours = model::path_model(rest);
    assert_eq!(
        ours,
        model::path_model_full(rest),
        "fast path and full scan"
    );
    match reference_path_model(rest) {
        Some(want) => assert_eq!(ours, Ok(want), "the path's model"),
        None => assert!(ours.is_err(), "a path SPEC §4 refuses: {ours:?}"),
    }
    check_query(query);
}

/// The model SPEC §4 reads from a path (`None`: the path is refused). Each
/// segment is percent-decoded (strictly, as UTF-8); a dot segment, a keyword
/// in another case, or a keyword beside a decoded `/` or a `\` is refused;
/// then `models/{model}:{method}`, `model/{model}/{op}` and
/// `deployments/{deployment}/{op}` name the model, and two different ones
/// are refused.
fn reference_path_model(rest: &str) -> Option<Option<String>> {
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        let segment = String::from_utf8(percent_decode(raw, true)?).ok()?;
        let pieces: Vec<&str> = segment.split(['/', '\\']).collect();
        for piece in &pieces {
            let keyword = KEYWORDS.iter().find(|k| piece.eq_ignore_ascii_case(k));
            let refused = match keyword {
                Some(k) => piece != k || pieces.len() > 1,
                None => *piece == "." || *piece == "..",
            };
            if refused {
                return None;
            }
        }
        segments.push(segment);
    }
    let mut named: Option<&str> = None;
    for (index, segment) in segments.iter().enumerate() {
        let next = segments.get(index + 1).map(String::as_str);
        let model = match segment.as_str() {
            "models" => next.and_then(|n| n.split(':').next().filter(|_| n.contains(':'))),
            "model" | "deployments" if index + 2 < segments.len() => next,
            _ => None,
        };
        match (model, named) {
            (None, _) => {}
            (Some(""), _) => return None,
            (Some(m), Some(before)) if m != before => return None,
            (Some(m), _) => named = Some(m),
        }
    }
    Some(named.map(str::to_owned))
}

/// A parameter's name as the proxy compares it: `+` a space, percent-decoded
/// (an invalid escape kept as it is), trimmed.
fn param_name(pair: &str) -> String {
    let name = pair.split('=').next().unwrap_or(pair).replace('+', " ");
    let decoded = percent_decode(&name, false).unwrap_or_default();
    String::from_utf8_lossy(&decoded).trim().to_owned()
}

/// A `model` parameter refused; otherwise the query forwarded without its
/// `key` parameters, the rest as sent and in order.
fn check_query(query: Option<&str>) {
    let ours = route::filter_query(query);
    let Some(query) = query else {
        assert!(matches!(ours, Ok(None)), "no query: {ours:?}");
        return;
    };
    let names: Vec<String> = query.split('&').map(param_name).collect();
    if names.iter().any(|n| n.eq_ignore_ascii_case("model")) {
        assert!(
            ours.is_err(),
            "a model query parameter is forwarded: {ours:?}"
        );
        return;
    }
    let kept: Vec<&str> = query
        .split('&')
        .zip(&names)
        .filter(|(_, name)| !name.eq_ignore_ascii_case("key"))
        .map(|(pair, _)| pair)
        .collect();
    let want = kept.join("&");
    let want = (!want.is_empty()).then_some(want);
    assert_eq!(
        ours.ok().map(|q| q.map(|q| q.into_owned())),
        Some(want),
        "the query forwarded"
    );
}
