//! `Authorization: Bearer …`, as the gateway and admin keys are sent.

/// The token of `Bearer <token>`, with the scheme matched case-insensitively.
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest
        .strip_prefix(b" ")
        .or_else(|| rest.strip_prefix(b"\t"))?;
    Some(token.trim_ascii())
}
