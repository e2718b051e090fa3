//! Phase 3 of an attempt: the upstream's head, and the provider's own way of
//! saying that the secret is invalid when it does not say so by status.
//! Google says it with a 400: a bounded part of such an answer is read to
//! tell it from any other 400. Only then: a 2xx is never read.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::Body;

use super::send::Sent;
use super::AttemptResult;
use crate::domain::Dialect;
use crate::proxy::body;
use crate::registry::Settings;

/// How much of an error answer is read to tell a rejected key from any
/// other refusal.
const PEEK_LIMIT: usize = 16 * 1024;

/// `sent` as the next phases see it: a Google 400 that says the key is
/// invalid becomes [`AttemptResult::KeyRejected`] (its answer dropped);
/// any other keeps its answer, with what was read of it to relay first.
pub(super) async fn read_head<RB>(
    mut sent: Sent<RB>,
    dialect: Dialect,
    settings: Settings,
) -> Sent<RB>
where
    RB: Body<Data = Bytes> + Unpin,
{
    let Some(res) = sent.response.take() else {
        return sent;
    };
    if res.status() != StatusCode::BAD_REQUEST || dialect != Dialect::Google {
        sent.response = Some(res);
        return sent;
    }
    let (head, mut body) = res.into_parts();
    let encoded = head.headers.get(http::header::CONTENT_ENCODING);
    let (read, rejects) = peek_rejection(&mut body, encoded, settings.first_byte_timeout).await;
    if rejects {
        sent.result = AttemptResult::KeyRejected(head.status);
    } else {
        sent.response = Some(Response::from_parts(head, body));
        sent.peeked = Some(read);
    }
    sent
}

/// Reads the start of an error answer (at most [`PEEK_LIMIT`], all within
/// `within`) and says whether it is Google's invalid-key answer. Returns
/// what was read, to be relayed first when not.
async fn peek_rejection<RB>(
    body: &mut RB,
    encoding: Option<&HeaderValue>,
    within: std::time::Duration,
) -> (Bytes, bool)
where
    RB: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut read = bytes::BytesMut::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut complete = false;
    while read.len() < PEEK_LIMIT {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Ok(None) => {
                complete = true;
                break;
            }
            // A broken or slow body: relayed as it is, for the client's own
            // idle timeout and error to apply.
            _ => break,
        }
    }
    let read = read.freeze();
    // The client may have asked for gzip: the answer is read as sent.
    let rejects = complete
        && match body::Encoding::of(encoding) {
            Some(body::Encoding::Identity) => google_key_invalid(&read),
            Some(enc) => body::decode(enc, read.clone(), PEEK_LIMIT)
                .is_ok_and(|plain| google_key_invalid(&plain)),
            None => false,
        };
    (read, rejects)
}

/// Whether a Google error body says the API key is invalid.
fn google_key_invalid(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: GoogleError,
    }
    #[derive(serde::Deserialize)]
    struct GoogleError {
        #[serde(default)]
        details: Vec<Detail>,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        reason: Option<String>,
    }
    let invalid = |e: &Envelope| {
        e.error
            .details
            .iter()
            .any(|d| d.reason.as_deref() == Some("API_KEY_INVALID"))
    };
    // One error, or (streamGenerateContent without SSE) a list of them.
    serde_json::from_slice::<Envelope>(body).is_ok_and(|e| invalid(&e))
        || serde_json::from_slice::<Vec<Envelope>>(body).is_ok_and(|l| l.iter().any(invalid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn googles_invalid_key_answer_and_only_it() {
        let invalid = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        assert!(google_key_invalid(invalid));
        let listed = [&b"["[..], invalid, b"]"].concat();
        assert!(google_key_invalid(&listed), "streamGenerateContent's list");
        for other in [
            &br#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}"#[..],
            br#"{"error":{"code":400,"message":"API_KEY_INVALID","status":"INVALID_ARGUMENT","details":[{"reason":"BAD_REQUEST"}]}}"#,
            br#"{"error":{"details":[{"reason":"API_KEY_INVALIDX"}]}}"#,
            br#"{"contents":[{"parts":[{"text":"reason API_KEY_INVALID"}]}]}"#,
            br#"[{"error":{"details":[{"reason":"BAD"}]}}]"#,
            b"not json",
            b"",
        ] {
            assert!(!google_key_invalid(other), "{}", String::from_utf8_lossy(other));
        }
    }
}
