//! Bedrock's binary event stream turned into Anthropic's server-sent events,
//! a frame at a time: [`to_sse`].
//!
//! Bedrock's `InvokeModelWithResponseStream` answers a streamed Messages
//! request in `application/vnd.amazon.eventstream` frames (Smithy's "Amazon
//! Event Stream" encoding); each `chunk` event carries one Anthropic stream
//! event, base64-encoded. The client (an Anthropic SDK, Claude Code) expects
//! Anthropic's own `text/event-stream`:
//!
//! ```text
//! in   [prelude: total, headers length, CRC][headers][payload][CRC]
//!        :message-type = event, :event-type = chunk
//!        {"bytes":"eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0=","p":"abc"}
//! out  event: message_stop
//!      data: {"type":"message_stop"}
//!
//! ```
//!
//! Each frame is converted as soon as its last byte has arrived, in the poll
//! that brought it; frames complete in one chunk leave together, as one. The
//! decoded event is relayed byte for byte (never parsed into a value and
//! written again), Bedrock's `amazon-bedrock-invocationMetrics` included.
//!
//! What else a frame may be:
//!
//! - an `exception` (a modelled error: `:exception-type`, payload
//!   `{"message": …}`) or an `error` (unmodelled: `:error-code`,
//!   `:error-message`): Anthropic's `error` event, typed by
//!   [`anthropic_type`]'s table, and the stream ends, as Anthropic's does
//!   after an error event;
//! - any other event (`initial-response`, events of other operations) or
//!   message type: skipped;
//! - malformed (a checksum that does not match, a length out of bounds,
//!   headers that overrun, a `chunk` whose payload is not base64 JSON of an
//!   Anthropic event), or cut off mid-frame: one `api_error` event whose
//!   message is [`Broken`]'s, static (no byte of the input is echoed), then
//!   the body fails with [`Broken`], so the client sees that the stream broke.
//!
//! At most one frame is held, and a frame is at most [`MAX_FRAME`] bytes.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};

use crate::BoxError;

/// The prelude: total length, headers length, their CRC (4 bytes each).
const PRELUDE: usize = 12;
/// The smallest frame: a prelude and the message CRC.
const MIN_FRAME: usize = PRELUDE + 4;
/// The most header bytes a frame may carry (AWS's limit).
const MAX_HEADERS: usize = 128 * 1024;
/// The payload a frame is sized for: 16 MiB. (Smithy's specification now
/// allows services 24 MB; one Anthropic stream event is never near either.)
const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// The largest frame accepted (its `total_length`), and so the most bytes a
/// [`Decoder`] holds.
const MAX_FRAME: usize = MIN_FRAME + MAX_HEADERS + MAX_PAYLOAD;
/// Buffers grown past this by a large frame are given back after it.
const KEEP: usize = 64 * 1024;

/// Standard base64, padded or not (AWS pads; nothing is lost by not
/// insisting).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a Bedrock event stream could not be read. Each message is static: it
/// is also the client's `api_error` event, which echoes no input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Broken {
    /// A frame's prelude checksum does not match.
    #[error("the upstream's event stream is corrupt: a frame's prelude checksum does not match")]
    PreludeCrc,
    /// A frame's message checksum does not match.
    #[error("the upstream's event stream is corrupt: a frame's checksum does not match")]
    MessageCrc,
    /// A frame's lengths are out of bounds.
    #[error("the upstream's event stream is corrupt: a frame's length is out of bounds")]
    Length,
    /// A frame's headers overrun their length, have an unknown type, or
    /// repeat one of those read.
    #[error("the upstream's event stream is corrupt: a frame's headers are malformed")]
    Headers,
    /// The stream ended mid-frame.
    #[error("the upstream's event stream ended in the middle of a frame")]
    Truncated,
    /// A `chunk` event's payload is not `{"bytes": "<base64>", …}`.
    #[error("the upstream sent a chunk event that is not JSON with a \"bytes\" string")]
    Payload,
    /// A `chunk` event's `bytes` are not base64.
    #[error("the upstream sent a chunk event whose bytes are not base64")]
    Base64,
    /// A `chunk` event's bytes are not an Anthropic stream event's JSON.
    #[error("the upstream sent a chunk event that is not an Anthropic stream event")]
    Event,
}

/// What a frame leaves the stream as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Open,
    /// An error event was relayed: nothing follows it.
    Closed,
}

#[derive(Debug, Clone, Copy, Default)]
enum State {
    #[default]
    Open,
    Closed,
    Broken(Broken),
}

/// The conversion itself, pure: event-stream bytes in, in chunks cut
/// anywhere; Anthropic's SSE out, each frame's as soon as it is whole.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// The frame begun in an earlier chunk: at most [`MAX_FRAME`] bytes.
    partial: Vec<u8>,
    /// A chunk's decoded bytes; kept between frames.
    decoded: Vec<u8>,
    state: State,
}

impl Decoder {
    /// Reads `chunk`, the stream's next bytes, writing to `out` the SSE of
    /// every frame it completes. After an exception or error event, further
    /// bytes are ignored (see [`Decoder::is_closed`]). A malformed stream
    /// writes one `api_error` event and gives `Err`, now and on every later
    /// call, which then writes nothing.
    pub(crate) fn push(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Broken> {
        match self.state {
            State::Open => {}
            State::Closed => return Ok(()),
            State::Broken(broken) => return Err(broken),
        }
        let read = self.read(chunk, out);
        if self.partial.capacity() > KEEP && self.partial.is_empty() {
            self.partial = Vec::new();
        }
        if self.decoded.capacity() > KEEP {
            self.decoded = Vec::new();
        }
        match read {
            Ok(Flow::Open) => Ok(()),
            Ok(Flow::Closed) => {
                self.state = State::Closed;
                self.partial = Vec::new();
                Ok(())
            }
            Err(broken) => Err(self.fail(broken, out)),
        }
    }

    /// The stream has ended: `Err` (with its `api_error` event in `out`) if
    /// it ended mid-frame, or had broken already.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) -> Result<(), Broken> {
        match self.state {
            State::Open if self.partial.is_empty() => Ok(()),
            State::Open => Err(self.fail(Broken::Truncated, out)),
            State::Closed => Ok(()),
            State::Broken(broken) => Err(broken),
        }
    }

    /// Whether an exception or error event ended the stream.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the stream may end here: no frame begun, nothing broken.
    fn is_between_frames(&self) -> bool {
        matches!(self.state, State::Open) && self.partial.is_empty()
    }

    fn fail(&mut self, broken: Broken, out: &mut BytesMut) -> Broken {
        self.state = State::Broken(broken);
        self.partial = Vec::new();
        error_event(out, "api_error", &broken.to_string());
        broken
    }

    /// The frame begun earlier completed first, then the chunk's whole
    /// frames read where they lie, and its last, partial one kept.
    fn read(&mut self, mut chunk: &[u8], out: &mut BytesMut) -> Result<Flow, Broken> {
        if !self.partial.is_empty() {
            let Some(rest) = self.complete(chunk)? else {
                return Ok(Flow::Open);
            };
            chunk = rest;
            let flow = message(&self.partial, &mut self.decoded, out)?;
            self.partial.clear();
            if flow == Flow::Closed {
                return Ok(flow);
            }
        }
        while let Some(total) = frame_length(chunk)? {
            let Some((frame, rest)) = chunk.split_at_checked(total) else {
                break;
            };
            if message(frame, &mut self.decoded, out)? == Flow::Closed {
                return Ok(Flow::Closed);
            }
            chunk = rest;
        }
        self.partial.extend_from_slice(chunk);
        Ok(Flow::Open)
    }

    /// Adds to the frame begun earlier what `chunk` holds of it: the rest
    /// of `chunk` once the frame is whole.
    fn complete<'c>(&mut self, chunk: &'c [u8]) -> Result<Option<&'c [u8]>, Broken> {
        let mut chunk = chunk;
        if self.partial.len() < PRELUDE {
            let want = (PRELUDE - self.partial.len()).min(chunk.len());
            let (head, rest) = chunk.split_at(want);
            self.partial.extend_from_slice(head);
            chunk = rest;
        }
        let Some(total) = frame_length(&self.partial)? else {
            return Ok(None);
        };
        let want = total.saturating_sub(self.partial.len()).min(chunk.len());
        let (body, rest) = chunk.split_at(want);
        self.partial.extend_from_slice(body);
        Ok((self.partial.len() == total).then_some(rest))
    }
}

/// The total length of the frame `buf` begins, its prelude checked; `None`
/// before the prelude is whole.
fn frame_length(buf: &[u8]) -> Result<Option<usize>, Broken> {
    let Some(prelude) = buf.first_chunk::<PRELUDE>() else {
        return Ok(None);
    };
    let [t0, t1, t2, t3, h0, h1, h2, h3, c0, c1, c2, c3] = *prelude;
    if crc32fast::hash(&prelude[..8]) != u32::from_be_bytes([c0, c1, c2, c3]) {
        return Err(Broken::PreludeCrc);
    }
    let total = u32::from_be_bytes([t0, t1, t2, t3]) as usize;
    let headers = u32::from_be_bytes([h0, h1, h2, h3]) as usize;
    let room = total.checked_sub(MIN_FRAME).ok_or(Broken::Length)?;
    if total > MAX_FRAME || headers > MAX_HEADERS || headers > room {
        return Err(Broken::Length);
    }
    Ok(Some(total))
}

/// One whole frame (its prelude checked) into `out`.
fn message(frame: &[u8], decoded: &mut Vec<u8>, out: &mut BytesMut) -> Result<Flow, Broken> {
    let Some((checked, &crc)) = frame.split_last_chunk::<4>() else {
        return Err(Broken::Length);
    };
    if crc32fast::hash(checked) != u32::from_be_bytes(crc) {
        return Err(Broken::MessageCrc);
    }
    let headers_length = match checked.get(4..8) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]) as usize,
        _ => return Err(Broken::Length),
    };
    let Some((headers, payload)) = checked
        .get(PRELUDE..)
        .and_then(|data| data.split_at_checked(headers_length))
    else {
        return Err(Broken::Length);
    };
    let headers = Headers::read(headers)?;
    match headers.message_type {
        Some(b"event") => {
            if headers.event_type == Some(b"chunk") {
                chunk(payload, decoded, out)?;
            }
            Ok(Flow::Open)
        }
        Some(b"exception") => {
            exception(headers.exception_type, payload, out);
            Ok(Flow::Closed)
        }
        Some(b"error") => {
            let kind = headers.error_code.map_or("api_error", anthropic_type);
            let message = headers
                .error_message
                .or(headers.error_code)
                .map_or(Cow::Borrowed(UNNAMED), String::from_utf8_lossy);
            error_event(out, kind, &message);
            Ok(Flow::Closed)
        }
        _ => Ok(Flow::Open),
    }
}

/// The message of an error frame that gives none.
const UNNAMED: &str = "Amazon Bedrock's stream failed";

/// The string headers a frame is read by; every other header is skipped.
#[derive(Debug, Default)]
struct Headers<'a> {
    message_type: Option<&'a [u8]>,
    event_type: Option<&'a [u8]>,
    exception_type: Option<&'a [u8]>,
    error_code: Option<&'a [u8]>,
    error_message: Option<&'a [u8]>,
}

impl<'a> Headers<'a> {
    /// Each header: name length (u8), name, value type (u8), value. One of
    /// ours given twice is malformed (a name "MUST only appear once").
    fn read(mut rest: &'a [u8]) -> Result<Self, Broken> {
        let mut headers = Headers::default();
        while let Some((&name_length, after)) = rest.split_first() {
            let (name, after) = take(after, usize::from(name_length))?;
            let (&kind, after) = after.split_first().ok_or(Broken::Headers)?;
            let (value, after) = match kind {
                0 | 1 => (&[][..], after), // true, false
                2 => take(after, 1)?,      // byte
                3 => take(after, 2)?,      // short
                4 => take(after, 4)?,      // integer
                5 | 8 => take(after, 8)?,  // long, timestamp
                9 => take(after, 16)?,     // uuid
                6 | 7 => {
                    // bytes, string: u16 length first
                    let (length, after) = take(after, 2)?;
                    let length = match *length {
                        [hi, lo] => usize::from(u16::from_be_bytes([hi, lo])),
                        _ => return Err(Broken::Headers),
                    };
                    take(after, length)?
                }
                _ => return Err(Broken::Headers),
            };
            if kind == 7 {
                headers.note(name, value)?;
            }
            rest = after;
        }
        Ok(headers)
    }

    fn note(&mut self, name: &[u8], value: &'a [u8]) -> Result<(), Broken> {
        let slot = match name {
            b":message-type" => &mut self.message_type,
            b":event-type" => &mut self.event_type,
            b":exception-type" => &mut self.exception_type,
            b":error-code" => &mut self.error_code,
            b":error-message" => &mut self.error_message,
            _ => return Ok(()),
        };
        match slot.replace(value) {
            None => Ok(()),
            Some(_) => Err(Broken::Headers),
        }
    }
}

/// The first `n` bytes of `buf`, and the rest.
fn take(buf: &[u8], n: usize) -> Result<(&[u8], &[u8]), Broken> {
    buf.split_at_checked(n).ok_or(Broken::Headers)
}

/// A `chunk` event's payload. Other members (`p`, Bedrock's padding) are
/// skipped unread.
#[derive(Deserialize)]
struct ChunkPayload<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

/// The top of an Anthropic stream event: its `type` names the SSE event.
#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// A `chunk` event: its decoded bytes, relayed as they are, under their
/// `type`.
fn chunk(payload: &[u8], decoded: &mut Vec<u8>, out: &mut BytesMut) -> Result<(), Broken> {
    let payload: ChunkPayload<'_> = serde_json::from_slice(payload).map_err(|_| Broken::Payload)?;
    decoded.clear();
    BASE64
        .decode_vec(payload.bytes.as_bytes(), decoded)
        .map_err(|_| Broken::Base64)?;
    // SSE is UTF-8, and serde_json does not check the strings it skips.
    let json = std::str::from_utf8(decoded).map_err(|_| Broken::Event)?;
    let head: EventHead<'_> = serde_json::from_str(json).map_err(|_| Broken::Event)?;
    // It becomes the `event:` line: nothing that could end or split it.
    let name = &*head.kind;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Broken::Event);
    }
    sse_event(out, name, json.as_bytes());
    Ok(())
}

/// `event: {name}`, `data: {json}`, a blank line. JSON may hold line breaks
/// between its tokens (never inside a string): each line gets its own
/// `data:` line, which the client joins back with `\n`.
fn sse_event(out: &mut BytesMut, name: &str, json: &[u8]) {
    out.reserve(name.len() + json.len() + 24);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\n");
    let mut rest = json;
    loop {
        out.put_slice(b"data: ");
        let Some(at) = memchr::memchr2(b'\n', b'\r', rest) else {
            out.put_slice(rest);
            break;
        };
        let (line, after) = rest.split_at(at);
        out.put_slice(line);
        out.put_slice(b"\n");
        // `\r\n` is one line break, as SSE reads it.
        rest = match after {
            [b'\r', b'\n', rest @ ..] => rest,
            [_, rest @ ..] => rest,
            [] => &[],
        };
    }
    out.put_slice(b"\n\n");
}

/// A modelled exception's payload: `message` (Bedrock writes it in lower
/// case; other AWS services capitalise it); a `modelStreamErrorException`
/// also carries the model's own status.
#[derive(Deserialize)]
struct ExceptionPayload {
    #[serde(alias = "Message")]
    message: Option<String>,
    #[serde(rename = "originalStatusCode")]
    original_status: Option<u16>,
}

fn exception(kind: Option<&[u8]>, payload: &[u8], out: &mut BytesMut) {
    let payload: Option<ExceptionPayload> = serde_json::from_slice(payload).ok();
    let original = payload.as_ref().and_then(|p| p.original_status);
    let anthropic = match (kind, original) {
        (Some(kind), Some(status)) if kind.eq_ignore_ascii_case(b"modelStreamErrorException") => {
            status_type(status)
        }
        (Some(kind), _) => anthropic_type(kind),
        (None, _) => "api_error",
    };
    let message = match (payload.and_then(|p| p.message), kind) {
        (Some(message), _) => Cow::Owned(message),
        (None, Some(kind)) => String::from_utf8_lossy(kind),
        (None, None) => Cow::Borrowed(UNNAMED),
    };
    error_event(out, anthropic, &message);
}

/// Anthropic's error type for a Bedrock exception type (or unmodelled error
/// code), compared without case; `api_error` for any other.
///
/// | Bedrock                         | Anthropic               | why                                   |
/// |---------------------------------|-------------------------|---------------------------------------|
/// | `throttlingException`           | `rate_limit_error`      | 429 either side                       |
/// | `serviceQuotaExceededException` | `rate_limit_error`      | the account's quota, as a rate limit  |
/// | `serviceUnavailableException`   | `overloaded_error`      | 503: the service, not the request     |
/// | `modelNotReadyException`        | `overloaded_error`      | retry later; not the request's fault  |
/// | `validationException`           | `invalid_request_error` | 400 either side                       |
/// | `accessDeniedException`         | `permission_error`      | 403 either side                       |
/// | `resourceNotFoundException`     | `not_found_error`       | 404 either side                       |
/// | `internalServerException`       | `api_error`             | 500 either side                       |
/// | `modelStreamErrorException`     | by `originalStatusCode` ([`status_type`]), else `api_error` | the model's failure, relayed |
/// | `modelTimeoutException`         | `api_error`             | Anthropic documents no timeout type   |
/// | `modelErrorException`, others   | `api_error`             |                                       |
fn anthropic_type(aws: &[u8]) -> &'static str {
    const TABLE: [(&str, &str); 8] = [
        ("throttlingException", "rate_limit_error"),
        ("serviceQuotaExceededException", "rate_limit_error"),
        ("serviceUnavailableException", "overloaded_error"),
        ("modelNotReadyException", "overloaded_error"),
        ("validationException", "invalid_request_error"),
        ("accessDeniedException", "permission_error"),
        ("resourceNotFoundException", "not_found_error"),
        ("internalServerException", "api_error"),
    ];
    TABLE
        .iter()
        .find(|(bedrock, _)| bedrock.as_bytes().eq_ignore_ascii_case(aws))
        .map_or("api_error", |&(_, anthropic)| anthropic)
}

/// Anthropic's error type for the status the model failed with, as
/// Anthropic's API documents them (503 read as 529, overloaded).
fn status_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// Anthropic's `error` event: `{"type":"error","error":{"type":…,"message":…}}`.
fn error_event(out: &mut BytesMut, kind: &str, message: &str) {
    let event = ErrorEvent {
        kind: "error",
        error: ErrorBody { kind, message },
    };
    out.put_slice(b"event: error\ndata: ");
    // Strings written to memory: serde_json cannot fail here (and escapes
    // every line break, so the data is one line).
    if serde_json::to_writer((&mut *out).writer(), &event).is_err() {
        out.put_slice(br#"{"type":"error","error":{"type":"api_error","message":""}}"#);
    }
    out.put_slice(b"\n\n");
}

pin_project! {
    /// A Bedrock event-stream body relayed as Anthropic's SSE ([`to_sse`]).
    ///
    /// Each poll relays what the inner body's next chunk completed, in one
    /// frame; a chunk that completes no frame is not waited on: the inner
    /// body is polled again at once. Trailers from the inner body are
    /// dropped (they would describe the binary stream, not the SSE); its
    /// errors pass as they are, boxed.
    #[derive(Debug)]
    pub struct EventStreamSse<B> {
        #[pin]
        inner: B,
        decoder: Decoder,
        out: BytesMut,
        phase: Phase,
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Streaming,
    /// The `api_error` event was relayed: the error comes next.
    Failing(Broken),
    Ended,
}

/// `body`, a Bedrock `InvokeModelWithResponseStream` answer
/// (`application/vnd.amazon.eventstream`), as Anthropic's `text/event-stream`.
pub fn to_sse<B>(body: B) -> EventStreamSse<B> {
    EventStreamSse {
        inner: body,
        decoder: Decoder::default(),
        out: BytesMut::new(),
        phase: Phase::Streaming,
    }
}

impl<B> Body for EventStreamSse<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            match *this.phase {
                Phase::Streaming => {}
                Phase::Failing(broken) => {
                    *this.phase = Phase::Ended;
                    return Poll::Ready(Some(Err(Box::new(broken))));
                }
                Phase::Ended => return Poll::Ready(None),
            }
            let read = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.decoder.push(&data, this.out),
                    Err(_trailers) => continue,
                },
                Some(Err(e)) => {
                    *this.phase = Phase::Ended;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    *this.phase = Phase::Ended;
                    this.decoder.finish(this.out)
                }
            };
            match read {
                Err(broken) => *this.phase = Phase::Failing(broken),
                Ok(()) if this.decoder.is_closed() => *this.phase = Phase::Ended,
                Ok(()) => {}
            }
            if !this.out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.phase {
            Phase::Streaming => self.inner.is_end_stream() && self.decoder.is_between_frames(),
            Phase::Failing(_) => false,
            Phase::Ended => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::new()
        }
    }
}

/// AWS's event-stream encoding, checksums computed: the frames tests feed
/// (this module's, and the usage tap's).
#[cfg(test)]
pub(crate) mod encode {
    use base64::Engine as _;

    /// A header value, of each type the encoding has.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Value<'a> {
        True,
        False,
        Byte(i8),
        Short(i16),
        Int(i32),
        Long(i64),
        Bytes(&'a [u8]),
        Str(&'a str),
        Time(i64),
        Uuid([u8; 16]),
    }

    /// Headers, encoded.
    pub(crate) fn headers(headers: &[(&str, Value<'_>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            out.push(u8::try_from(name.len()).unwrap());
            out.extend_from_slice(name.as_bytes());
            let (kind, bytes): (u8, Vec<u8>) = match *value {
                Value::True => (0, vec![]),
                Value::False => (1, vec![]),
                Value::Byte(v) => (2, v.to_be_bytes().to_vec()),
                Value::Short(v) => (3, v.to_be_bytes().to_vec()),
                Value::Int(v) => (4, v.to_be_bytes().to_vec()),
                Value::Long(v) => (5, v.to_be_bytes().to_vec()),
                Value::Bytes(v) => (6, sized(v)),
                Value::Str(v) => (7, sized(v.as_bytes())),
                Value::Time(v) => (8, v.to_be_bytes().to_vec()),
                Value::Uuid(v) => (9, v.to_vec()),
            };
            out.push(kind);
            out.extend_from_slice(&bytes);
        }
        out
    }

    fn sized(v: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(v.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }

    /// A prelude of these lengths, its checksum right.
    pub(crate) fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut out = total.to_be_bytes().to_vec();
        out.extend_from_slice(&headers.to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
        out
    }

    /// A frame of these header bytes and payload, both checksums right.
    pub(crate) fn raw(headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = 12 + headers.len() + payload.len() + 4;
        let mut out = prelude(
            u32::try_from(total).unwrap(),
            u32::try_from(headers.len()).unwrap(),
        );
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
        out
    }

    pub(crate) fn frame(headers: &[(&str, Value<'_>)], payload: &[u8]) -> Vec<u8> {
        raw(&self::headers(headers), payload)
    }

    /// An event of type `event` with a JSON payload.
    pub(crate) fn event(event: &str, payload: &[u8]) -> Vec<u8> {
        frame(
            &[
                (":event-type", Value::Str(event)),
                (":content-type", Value::Str("application/json")),
                (":message-type", Value::Str("event")),
            ],
            payload,
        )
    }

    /// A `chunk` event carrying `json`, with Bedrock's padding after it.
    pub(crate) fn chunk(json: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        event(
            "chunk",
            format!(r#"{{"bytes":"{b64}","p":"abcdefgh"}}"#).as_bytes(),
        )
    }

    /// A modelled exception of type `kind` with this payload.
    pub(crate) fn exception(kind: &str, payload: &str) -> Vec<u8> {
        frame(
            &[
                (":exception-type", Value::Str(kind)),
                (":content-type", Value::Str("application/json")),
                (":message-type", Value::Str("exception")),
            ],
            payload.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{self, chunk, event, Value};
    use super::*;

    /// Anthropic's SSE event for this JSON.
    fn sse(name: &str, json: &str) -> String {
        format!("event: {name}\ndata: {json}\n\n")
    }

    /// Anthropic's error event.
    fn error_sse(kind: &str, message: &str) -> String {
        let message = serde_json::to_string(message).unwrap();
        format!(
            "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":{message}}}}}\n\n"
        )
    }

    /// `parts` pushed in order, then the end: the output, and how it ended
    /// (the first `Err`, or `finish`'s answer).
    fn run(parts: &[&[u8]]) -> (String, Result<(), Broken>) {
        let mut decoder = Decoder::default();
        let mut out = BytesMut::new();
        let mut end = Ok(());
        for part in parts {
            end = decoder.push(part, &mut out);
            if end.is_err() {
                break;
            }
        }
        if end.is_ok() {
            end = decoder.finish(&mut out);
        }
        (String::from_utf8(out.to_vec()).unwrap(), end)
    }

    const START: &str = r#"{"type":"message_start","message":{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#;
    const DELTA: &str = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"there\"\n\u00e9 ✓ </script>"}}"#;
    const STOP: &str = r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":25,"outputTokenCount":15,"invocationLatency":812,"firstByteLatency":301}}"#;

    #[test]
    fn chunk_events_become_anthropic_sse_as_they_are() {
        let cases: Vec<(Vec<u8>, String)> = vec![
            (chunk(START), sse("message_start", START)),
            (chunk(DELTA), sse("content_block_delta", DELTA)),
            (chunk(STOP), sse("message_stop", STOP)),
            (chunk(r#"{"type":"ping"}"#), sse("ping", r#"{"type":"ping"}"#)),
            (
                // Anthropic's own error event, relayed as any other.
                chunk(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
                sse("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            ),
            (
                // Line breaks between tokens: a data line each, joined
                // back with `\n` by the client; the bytes otherwise as sent.
                chunk("{\"type\":\"ping\",\n \"a\":1,\r\n\"b\":2,\r\"c\":3}\n"),
                "event: ping\ndata: {\"type\":\"ping\",\ndata:  \"a\":1,\ndata: \"b\":2,\ndata: \"c\":3}\ndata: \n\n".into(),
            ),
            (
                chunk(" \t{\"type\":\"ping\"} "),
                "event: ping\ndata:  \t{\"type\":\"ping\"} \n\n".into(),
            ),
            (
                // Unpadded base64, and `/` escaped in the JSON string.
                event("chunk", br#"{"p":"x","bytes":"eyJ0eXBlIjoicGluZyIsInQiOiI\/Pz8ifQ"}"#),
                sse("ping", r#"{"type":"ping","t":"???"}"#),
            ),
        ];
        for (frame, want) in cases {
            assert_eq!(run(&[&frame]), (want, Ok(())));
        }
    }

    #[test]
    fn frames_complete_in_one_chunk_come_out_together_at_once() {
        let stream = [
            chunk(START),
            event("initial-response", b"{}"),
            chunk(DELTA),
            chunk(STOP),
        ]
        .concat();
        let mut decoder = Decoder::default();
        let mut out = BytesMut::new();
        decoder.push(&stream, &mut out).unwrap();
        let want = [
            sse("message_start", START),
            sse("content_block_delta", DELTA),
            sse("message_stop", STOP),
        ]
        .concat();
        assert_eq!(out, want.as_bytes(), "all in the push that completed them");
        assert!(decoder.partial.is_empty());
    }

    fn three() -> ([Vec<u8>; 3], [String; 3]) {
        (
            [chunk(START), chunk(DELTA), chunk(STOP)],
            [
                sse("message_start", START),
                sse("content_block_delta", DELTA),
                sse("message_stop", STOP),
            ],
        )
    }

    #[test]
    fn a_stream_split_anywhere_gives_the_same_events() {
        let (frames, events) = three();
        let stream = frames.concat();
        let want = events.concat();
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(run(&[a, b]), (want.clone(), Ok(())), "split at {at}");
        }
        // Byte by byte, each event comes out with its frame's last byte.
        let ends: Vec<usize> = frames
            .iter()
            .scan(0, |end, f| {
                *end += f.len();
                Some(*end)
            })
            .collect();
        let mut decoder = Decoder::default();
        let mut out = BytesMut::new();
        for (i, byte) in stream.iter().enumerate() {
            decoder.push(std::slice::from_ref(byte), &mut out).unwrap();
            let done = ends.iter().filter(|&&end| end <= i + 1).count();
            assert_eq!(out, events[..done].concat().as_bytes(), "after byte {i}");
        }
        assert_eq!(decoder.finish(&mut out), Ok(()));
    }

    #[test]
    fn exceptions_become_error_events_and_end_the_stream() {
        let said = r#"{"message":"Too many \"requests\",\nslow down"}"#;
        let message = "Too many \"requests\",\nslow down";
        let cases = [
            ("throttlingException", said, "rate_limit_error", message),
            ("ThrottlingException", said, "rate_limit_error", message),
            (
                "serviceQuotaExceededException",
                said,
                "rate_limit_error",
                message,
            ),
            (
                "serviceUnavailableException",
                said,
                "overloaded_error",
                message,
            ),
            ("modelNotReadyException", said, "overloaded_error", message),
            (
                "validationException",
                said,
                "invalid_request_error",
                message,
            ),
            ("accessDeniedException", said, "permission_error", message),
            (
                "resourceNotFoundException",
                said,
                "not_found_error",
                message,
            ),
            ("internalServerException", said, "api_error", message),
            ("modelTimeoutException", said, "api_error", message),
            ("modelStreamErrorException", said, "api_error", message),
            (
                "modelStreamErrorException",
                r#"{"message":"m","originalStatusCode":529,"originalMessage":"Overloaded"}"#,
                "overloaded_error",
                "m",
            ),
            (
                "modelStreamErrorException",
                r#"{"message":"m","originalStatusCode":429}"#,
                "rate_limit_error",
                "m",
            ),
            (
                "someNewException",
                r#"{"Message":"capitalised"}"#,
                "api_error",
                "capitalised",
            ),
            // No message: the exception's name.
            (
                "throttlingException",
                "{}",
                "rate_limit_error",
                "throttlingException",
            ),
            (
                "throttlingException",
                "not json",
                "rate_limit_error",
                "throttlingException",
            ),
        ];
        for (kind, payload, anthropic, message) in cases {
            let stream = [chunk(START), encode::exception(kind, payload), chunk(DELTA)].concat();
            let mut decoder = Decoder::default();
            let mut out = BytesMut::new();
            assert_eq!(decoder.push(&stream, &mut out), Ok(()), "{kind}");
            assert!(decoder.is_closed());
            let want = sse("message_start", START) + &error_sse(anthropic, message);
            assert_eq!(String::from_utf8(out.to_vec()).unwrap(), want, "{kind}");
            // Nothing after it is read.
            out.clear();
            assert_eq!(decoder.push(&chunk(STOP), &mut out), Ok(()));
            assert_eq!(decoder.push(&[0; 7], &mut out), Ok(()));
            assert_eq!(decoder.finish(&mut out), Ok(()));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn unmodelled_errors_become_error_events_and_end_the_stream() {
        let error = |headers: &[(&str, Value<'_>)]| {
            let mut all = vec![(":message-type", Value::Str("error"))];
            all.extend_from_slice(headers);
            encode::frame(&all, b"")
        };
        let cases = [
            (
                error(&[
                    (":error-code", Value::Str("InternalFailure")),
                    (":error-message", Value::Str("An internal error occurred.")),
                ]),
                error_sse("api_error", "An internal error occurred."),
            ),
            (
                error(&[
                    (":error-code", Value::Str("ThrottlingException")),
                    (":error-message", Value::Str("Rate \"exceeded\"")),
                ]),
                error_sse("rate_limit_error", "Rate \"exceeded\""),
            ),
            (
                error(&[(":error-code", Value::Str("InternalFailure"))]),
                error_sse("api_error", "InternalFailure"),
            ),
            (error(&[]), error_sse("api_error", UNNAMED)),
        ];
        for (frame, want) in cases {
            let (out, end) = run(&[&frame, &chunk(DELTA)]);
            assert_eq!((out, end), (want, Ok(())));
        }
    }

    /// Frames malformed in their framing.
    fn broken_frames() -> Vec<(&'static str, Vec<u8>, Broken)> {
        let flip = |at: usize| {
            let mut f = chunk(STOP);
            let i = at.min(f.len() - 1);
            f[i] ^= 0x01;
            f
        };
        let max = u32::try_from(MAX_FRAME).unwrap();
        let max_headers = u32::try_from(MAX_HEADERS).unwrap();
        let good = chunk(DELTA);
        vec![
            ("prelude CRC", flip(9), Broken::PreludeCrc),
            ("total length flipped", flip(3), Broken::PreludeCrc),
            ("message CRC", flip(usize::MAX), Broken::MessageCrc),
            ("payload byte", flip(100), Broken::MessageCrc),
            (
                "truncated",
                good[..good.len() - 5].to_vec(),
                Broken::Truncated,
            ),
            ("truncated prelude", good[..3].to_vec(), Broken::Truncated),
            ("total under 16", encode::prelude(15, 0), Broken::Length),
            (
                "total over the bound",
                encode::prelude(max + 1, 0),
                Broken::Length,
            ),
            (
                "total u32::MAX",
                encode::prelude(u32::MAX, 0),
                Broken::Length,
            ),
            (
                "headers over their bound",
                encode::prelude(max, max_headers + 1),
                Broken::Length,
            ),
            (
                "headers past the frame",
                encode::prelude(40, 25),
                Broken::Length,
            ),
        ]
    }

    /// Frames whose headers overrun or repeat one of those read.
    fn broken_headers() -> Vec<(&'static str, Vec<u8>, Broken)> {
        let header = |bytes: &[u8]| encode::raw(bytes, b"{}");
        let twice = encode::frame(
            &[
                (":message-type", Value::Str("event")),
                (":message-type", Value::Str("exception")),
            ],
            b"{}",
        );
        vec![
            (
                "header name overruns",
                header(&[9, b':', b'a']),
                Broken::Headers,
            ),
            (
                "header type missing",
                header(&[2, b':', b'a']),
                Broken::Headers,
            ),
            (
                "header type unknown",
                header(&[1, b'a', 10, 0]),
                Broken::Headers,
            ),
            (
                "string overruns",
                header(&[1, b'a', 7, 0, 9, b'x']),
                Broken::Headers,
            ),
            (
                "uuid overruns",
                header(&[1, b'a', 9, 0, 1, 2]),
                Broken::Headers,
            ),
            (
                "long overruns",
                header(&[1, b'a', 5, 0, 1, 2]),
                Broken::Headers,
            ),
            ("header given twice", twice, Broken::Headers),
        ]
    }

    /// `chunk` events whose payload is not base64 JSON of an Anthropic event.
    fn broken_chunks() -> Vec<(&'static str, Vec<u8>, Broken)> {
        let b64 = |decoded: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(decoded);
            format!(r#"{{"bytes":"{b64}"}}"#)
        };
        let payloads = [
            ("payload not JSON", "not json".to_owned(), Broken::Payload),
            (
                "payload without bytes",
                r#"{"p":"x"}"#.to_owned(),
                Broken::Payload,
            ),
            (
                "bytes not a string",
                r#"{"bytes":1}"#.to_owned(),
                Broken::Payload,
            ),
            (
                "bytes twice",
                r#"{"bytes":"e30=","bytes":"e30="}"#.to_owned(),
                Broken::Payload,
            ),
            (
                "bad base64",
                r#"{"bytes":"not base64!"}"#.to_owned(),
                Broken::Base64,
            ),
            ("decoded not JSON", b64(b"hello"), Broken::Event),
            ("decoded without a type", b64(br#"{"x":1}"#), Broken::Event),
            ("type not a string", b64(br#"{"type":1}"#), Broken::Event),
            ("type empty", b64(br#"{"type":""}"#), Broken::Event),
            // The line break would split the `event:` line.
            (
                "type with a line break",
                b64(br#"{"type":"a\nb"}"#),
                Broken::Event,
            ),
            (
                "trailing bytes",
                b64(br#"{"type":"ping"} x"#),
                Broken::Event,
            ),
            (
                "decoded not UTF-8",
                b64(b"{\"type\":\"ping\",\"t\":\"\xff\"}"),
                Broken::Event,
            ),
        ];
        payloads
            .into_iter()
            .map(|(name, payload, broken)| (name, event("chunk", payload.as_bytes()), broken))
            .collect()
    }

    #[test]
    fn malformed_input_gives_one_error_event_then_err() {
        // Each after a good frame: its event, then one `api_error` event
        // with a static message, and `Err`.
        let good = chunk(DELTA);
        let all = [broken_frames(), broken_headers(), broken_chunks()];
        for (name, bad, broken) in all.into_iter().flatten() {
            let want =
                sse("content_block_delta", DELTA) + &error_sse("api_error", &broken.to_string());
            assert_eq!(run(&[&good, &bad]), (want.clone(), Err(broken)), "{name}");
            // Byte by byte, the same.
            let stream = [&good[..], &bad].concat();
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(run(&bytes), (want, Err(broken)), "{name}, byte by byte");
        }
        let mut decoder = Decoder::default();
        let mut out = BytesMut::new();
        let bad = encode::prelude(15, 0);
        assert_eq!(decoder.push(&bad, &mut out), Err(Broken::Length));
        out.clear();
        assert_eq!(decoder.push(&chunk(DELTA), &mut out), Err(Broken::Length));
        assert_eq!(decoder.finish(&mut out), Err(Broken::Length));
        assert!(out.is_empty(), "one error event, not one per call");
    }

    #[test]
    fn an_oversize_frame_is_refused_from_its_prelude() {
        // Its 12 bytes are enough: nothing of it is held.
        let max = u32::try_from(MAX_FRAME).unwrap();
        let prelude = encode::prelude(max + 1, 0);
        let mut decoder = Decoder::default();
        let mut out = BytesMut::new();
        for byte in &prelude[..11] {
            assert_eq!(decoder.push(std::slice::from_ref(byte), &mut out), Ok(()));
        }
        assert!(out.is_empty());
        assert_eq!(decoder.push(&prelude[11..], &mut out), Err(Broken::Length));
        assert_eq!(decoder.partial.capacity(), 0);
        // The largest frame allowed is read.
        let mut decoder = Decoder::default();
        let mut out = BytesMut::new();
        let payload = vec![b' '; MAX_FRAME - MIN_FRAME - 11];
        let frame = encode::frame(&[("big", Value::Bytes(&[0; 4]))], &payload);
        assert_eq!(frame.len(), MAX_FRAME);
        decoder.push(&frame[..MAX_FRAME / 2], &mut out).unwrap();
        decoder.push(&frame[MAX_FRAME / 2..], &mut out).unwrap();
        assert!(out.is_empty(), "no message type: skipped");
        assert_eq!(decoder.partial.capacity(), 0, "given back");
    }

    #[test]
    fn other_header_types_are_skipped_by_their_length() {
        let payload = format!(
            r#"{{"bytes":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(DELTA)
        );
        // A bytes value that reads as a header if skipped wrongly.
        let lure = encode::headers(&[(":message-type", Value::Str("error"))]);
        let frame = encode::frame(
            &[
                ("t", Value::True),
                ("f", Value::False),
                ("byte", Value::Byte(-1)),
                ("short", Value::Short(-2)),
                (":event-type", Value::Bytes(b"error")),
                ("int", Value::Int(7)),
                ("long", Value::Long(-9)),
                ("bytes", Value::Bytes(&lure)),
                (":message-type", Value::Str("event")),
                ("time", Value::Time(1_700_000_000_000)),
                ("uuid", Value::Uuid([0x07; 16])),
                (":event-type", Value::Str("chunk")),
                ("empty", Value::Str("")),
            ],
            payload.as_bytes(),
        );
        assert_eq!(run(&[&frame]), (sse("content_block_delta", DELTA), Ok(())));
    }

    #[test]
    fn other_events_and_message_types_are_skipped() {
        let skipped = [
            event("initial-response", b"{}"),
            event("metadata", br#"{"usage":{"inputTokens":1}}"#),
            Vec::new(), // an empty chunk
            encode::frame(
                &[
                    (":message-type", Value::Str("Event")),
                    (":event-type", Value::Str("chunk")),
                ],
                b"x",
            ),
            encode::frame(&[(":message-type", Value::Str("other"))], b"x"),
            encode::frame(&[(":event-type", Value::Str("chunk"))], b"x"),
            encode::frame(&[], b""),
        ];
        for frame in skipped {
            assert_eq!(
                run(&[&frame, &chunk(DELTA)]),
                (sse("content_block_delta", DELTA), Ok(()))
            );
        }
    }

    /// `bytes` cut at `cuts` (each clamped to its length).
    fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        at.extend([0, bytes.len()]);
        at.sort_unstable();
        at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }

    /// Any input: no panic, at most one error event, the output bounded by
    /// the input, nothing held past a frame's bound.
    fn bounded(parts: &[&[u8]]) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut decoder = Decoder::default();
        let mut out = BytesMut::new();
        for part in parts {
            let _ = decoder.push(part, &mut out);
            proptest::prop_assert!(decoder.partial.len() <= MAX_FRAME);
        }
        let _ = decoder.finish(&mut out);
        let read: usize = parts.iter().map(|p| p.len()).sum();
        proptest::prop_assert!(
            out.len() <= 8 * read + 512,
            "{} bytes out of {read}",
            out.len()
        );
        let text = String::from_utf8(out.to_vec());
        proptest::prop_assert!(text.is_ok(), "SSE is UTF-8");
        let errors = text
            .unwrap_or_default()
            .matches("\"type\":\"api_error\"")
            .count();
        proptest::prop_assert!(errors <= 1);
        Ok(())
    }

    /// A frame whose checksums are right, of headers and payload that may
    /// be anything: what gets past the checksums, and only that, is tried.
    fn any_frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::select;
        let words = [
            "event",
            "chunk",
            "exception",
            "error",
            "throttlingException",
            "x",
        ];
        let value = prop_oneof![
            select(words.to_vec()).prop_map(|w| w.as_bytes().to_vec()),
            vec(any::<u8>(), 0..20),
        ];
        let names = [
            ":message-type",
            ":event-type",
            ":exception-type",
            ":error-code",
            ":error-message",
            "p",
        ];
        let header = (
            select(names.to_vec()),
            prop_oneof![Just(7u8), 0u8..=10],
            value,
        );
        let json = prop_oneof![
            Just(r#"{"type":"ping"}"#.to_owned()),
            "[ \n\r]{0,2}\\{\"type\":\"[a-z_\n]{0,8}\"[ \n\r,]{0,2}\\}[ \n\r]{0,2}",
            ".{0,20}",
        ];
        let payload = prop_oneof![
            vec(any::<u8>(), 0..64),
            json.prop_map(|j| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(j);
                format!(r#"{{"bytes":"{b64}"}}"#).into_bytes()
            }),
            ".{0,30}".prop_map(|m| serde_json::json!({ "message": m }).to_string().into_bytes()),
        ];
        // Mostly a frame of each kind read, the rest of its headers random.
        let kinds = [
            &[][..],
            &[(":message-type", "event"), (":event-type", "chunk")][..],
            &[(":message-type", "exception"), (":exception-type", "x")][..],
            &[(":message-type", "error")][..],
        ];
        let first = select(kinds.to_vec());
        (first, vec(header, 0..4), payload).prop_map(|(first, headers, payload)| {
            let first: Vec<_> = first.iter().map(|&(n, v)| (n, Value::Str(v))).collect();
            let mut encoded = encode::headers(&first);
            for (name, kind, mut value) in headers {
                encoded.push(u8::try_from(name.len()).unwrap());
                encoded.extend_from_slice(name.as_bytes());
                encoded.push(kind);
                match kind {
                    6 | 7 => encoded
                        .extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes()),
                    10 => {}
                    _ => value.resize([0, 0, 1, 2, 4, 8, 0, 0, 8, 16][usize::from(kind)], 0),
                }
                encoded.extend_from_slice(&value);
            }
            encode::raw(&encoded, &payload)
        })
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_cut_anywhere_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            cuts in proptest::collection::vec(0usize..2048, 0..8),
        ) {
            bounded(&cut(&bytes, &cuts))?;
        }

        #[test]
        fn any_frames_cut_anywhere_never_panic(
            frames in proptest::collection::vec(any_frame(), 0..6),
            cuts in proptest::collection::vec(0usize..1024, 0..8),
        ) {
            let stream = frames.concat();
            bounded(&cut(&stream, &cuts))?;
        }

        /// Chunk events of any text, cut anywhere: their events, as whole.
        #[test]
        fn any_chunks_cut_anywhere_give_their_events(
            texts in proptest::collection::vec(".{0,40}", 1..5),
            cuts in proptest::collection::vec(0usize..2048, 0..8),
        ) {
            let events: Vec<String> = texts
                .iter()
                .map(|t| serde_json::json!({"type": "content_block_delta", "delta": {"text": t}}).to_string())
                .collect();
            let stream: Vec<u8> = events.iter().flat_map(|e| chunk(e)).collect();
            let want: String = events.iter().map(|e| sse("content_block_delta", e)).collect();
            proptest::prop_assert_eq!(run(&cut(&stream, &cuts)), (want, Ok(())));
        }
    }

    mod body {
        use std::task::Poll;

        use bytes::Bytes;
        use http_body::{Body, Frame};
        use http_body_util::BodyExt;

        use super::super::to_sse;
        use super::*;
        use crate::proxy::body::testing::{channel, data_of, poll_once, Sender};

        fn send(tx: &Sender, bytes: &[u8]) {
            tx.send(Ok(Frame::data(Bytes::copy_from_slice(bytes))))
                .unwrap();
        }

        /// Structural, no timing: frame 1's event is out in the poll that
        /// read its last byte, before frames 2 and 3 exist.
        #[tokio::test]
        async fn each_frame_is_relayed_in_the_poll_its_last_byte_arrives() {
            let (frames, events) = three();
            let (tx, upstream) = channel();
            let mut body = Box::pin(to_sse(upstream));
            send(&tx, &frames[0]);
            assert_eq!(data_of(poll_once(&mut body)), events[0]);
            assert!(poll_once(&mut body).is_pending(), "nothing else has come");
            let (head, tail) = frames[1].split_at(frames[1].len() / 2);
            send(&tx, head);
            assert!(poll_once(&mut body).is_pending(), "half a frame: held");
            send(&tx, &[tail, &frames[2][..]].concat());
            assert_eq!(
                data_of(poll_once(&mut body)),
                events[1].clone() + &events[2]
            );
            // Trailers are dropped.
            tx.send(Ok(Frame::trailers(http::HeaderMap::new())))
                .unwrap();
            assert!(poll_once(&mut body).is_pending());
            assert!(!body.is_end_stream());
            drop(tx);
            assert!(matches!(poll_once(&mut body), Poll::Ready(None)));
            assert!(body.is_end_stream());
        }

        /// The error event, then the error, then the end.
        async fn broken_end(
            body: &mut std::pin::Pin<Box<impl Body<Data = Bytes, Error = BoxError>>>,
            want: Broken,
        ) {
            let err = body.frame().await.unwrap().unwrap_err();
            assert_eq!(err.downcast_ref::<Broken>(), Some(&want));
            assert!(body.frame().await.is_none());
            assert!(body.is_end_stream());
        }

        #[tokio::test]
        async fn a_malformed_frame_gives_its_error_event_then_fails_the_body() {
            let (tx, upstream) = channel();
            let mut body = Box::pin(to_sse(upstream));
            let mut bad = chunk(STOP);
            bad[9] ^= 1;
            send(&tx, &[chunk(DELTA), bad, chunk(START)].concat());
            let want = sse("content_block_delta", DELTA)
                + &error_sse("api_error", &Broken::PreludeCrc.to_string());
            assert_eq!(data_of(poll_once(&mut body)), want, "together");
            assert!(!body.is_end_stream());
            broken_end(&mut body, Broken::PreludeCrc).await;
        }

        #[tokio::test]
        async fn a_body_that_ends_mid_frame_fails() {
            let frame = chunk(DELTA);
            let (tx, upstream) = channel();
            let mut body = Box::pin(to_sse(upstream));
            send(&tx, &frame[..frame.len() - 1]);
            drop(tx);
            let want = error_sse("api_error", &Broken::Truncated.to_string());
            assert_eq!(data_of(poll_once(&mut body)), want);
            broken_end(&mut body, Broken::Truncated).await;
        }

        #[tokio::test]
        async fn an_exception_ends_the_body_without_reading_further() {
            let (tx, upstream) = channel();
            let mut body = Box::pin(to_sse(upstream));
            send(
                &tx,
                &encode::exception("throttlingException", r#"{"message":"slow"}"#),
            );
            send(&tx, &chunk(DELTA));
            assert_eq!(
                data_of(poll_once(&mut body)),
                error_sse("rate_limit_error", "slow")
            );
            assert!(body.is_end_stream());
            // Ended while the upstream is open, its next frame unread.
            assert!(matches!(poll_once(&mut body), Poll::Ready(None)));
            drop(tx);
        }

        #[derive(Debug, thiserror::Error)]
        #[error("reset")]
        struct Reset;

        #[tokio::test]
        async fn the_upstream_error_passes_as_it_is() {
            let (tx, upstream) = channel();
            let mut body = Box::pin(to_sse(upstream));
            send(&tx, &chunk(DELTA)[..20]);
            tx.send(Err(Box::new(Reset))).unwrap();
            let err = body.frame().await.unwrap().unwrap_err();
            assert!(err.is::<Reset>());
            assert!(body.frame().await.is_none());
        }

        #[tokio::test]
        async fn its_end_and_size_are_known_once_the_upstream_has_ended() {
            let full = http_body_util::Full::new(Bytes::from(chunk(DELTA)));
            let mut body = Box::pin(to_sse(full));
            assert!(!body.is_end_stream());
            assert_eq!(body.size_hint().upper(), None, "unknown length");
            assert_eq!(
                data_of(poll_once(&mut body)),
                sse("content_block_delta", DELTA)
            );
            assert!(body.is_end_stream(), "Full has ended, between frames");
            assert_eq!(body.size_hint().exact(), Some(0));
            // Empty: ended from the start.
            let empty = to_sse(http_body_util::Empty::<Bytes>::new());
            assert!(empty.is_end_stream());
            let all = empty.collect().await.unwrap().to_bytes();
            assert!(all.is_empty());
        }
    }
}
