//! OpenRouter's error shape, for the proxy's answers and the admin API's.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// `{"error": {"code", "message", "metadata": {"reason"}}}`: OpenRouter's
/// error shape, for the proxy's answers and the admin API's alike.
pub(crate) fn error_json(status: StatusCode, message: &str, reason: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "metadata": { "reason": reason },
        }
    });
    Bytes::from(body.to_string())
}

/// A JSON response with `status` and `body`.
pub(crate) fn json_response<B: From<Bytes>>(status: StatusCode, body: Bytes) -> Response<B> {
    let mut res = Response::new(B::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
