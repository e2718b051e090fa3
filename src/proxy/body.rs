//! Bodies: reading the request body once, within its limit; and the response
//! body, which is either the upstream's stream or the proxy's own JSON.

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use flate2::read::{MultiGzDecoder, ZlibDecoder};
use http::header::{HeaderMap, CONTENT_ENCODING, CONTENT_LENGTH};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::error::Rejection;
use super::usage::Accounting;
use crate::BoxError;

/// The request body type the inner service receives: the client's body bytes,
/// read once and shared by every attempt.
pub type ForwardBody = http_body_util::Full<Bytes>;

/// A request body's `Content-Encoding`, as far as the proxy can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// None, or only `identity`.
    Identity,
    /// `gzip` / `x-gzip`.
    Gzip,
    /// `deflate` (zlib-wrapped, as HTTP defines it).
    Deflate,
}

impl Encoding {
    /// The coding a `Content-Encoding` value names (an upstream's answer), as
    /// [`encoding`] reads a request's; `None` for one the proxy cannot decode.
    pub(crate) fn of(value: Option<&http::HeaderValue>) -> Option<Encoding> {
        codings(value).ok()
    }
}

/// The request's content coding; anything but one of gzip/deflate (plus any
/// number of `identity`) is refused, so an encoded body is never forwarded
/// without the proxy having read the model in it.
pub(crate) fn encoding(headers: &HeaderMap) -> Result<Encoding, Rejection> {
    codings(headers.get_all(CONTENT_ENCODING))
}

/// The one coding that `Content-Encoding` values name, together.
fn codings<'a>(
    values: impl IntoIterator<Item = &'a http::HeaderValue>,
) -> Result<Encoding, Rejection> {
    let mut found = Encoding::Identity;
    for value in values {
        let value = value.to_str().map_err(|_| Rejection::UnsupportedEncoding)?;
        for coding in value.split(',').map(str::trim) {
            let next = if coding.eq_ignore_ascii_case("identity") || coding.is_empty() {
                continue;
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                Encoding::Gzip
            } else if coding.eq_ignore_ascii_case("deflate") {
                Encoding::Deflate
            } else {
                return Err(Rejection::UnsupportedEncoding);
            };
            if found != Encoding::Identity {
                // Stacked codings: nobody legitimate sends them.
                return Err(Rejection::UnsupportedEncoding);
            }
            found = next;
        }
    }
    Ok(found)
}

/// Reads the whole body, refusing it as soon as it exceeds `limit` bytes (a
/// declared `Content-Length` above the limit is refused before reading), and
/// as soon as it stalls: no byte for `stall` is a 408.
///
/// Before a 413 it [`drain`]s what the client is still sending (up to twice
/// `limit` in all), so that the answer reaches it rather than a reset.
pub(crate) async fn read<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    stall: Duration,
) -> Result<Bytes, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = std::pin::pin!(body);
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body, 0, limit, stall).await;
        return Err(Rejection::BodyTooLarge { limit });
    }
    // Frames are kept as they came (no copy) and joined once at the end; most
    // bodies arrive in one frame, which is returned as it is. The stall timer
    // is armed only when the body makes the proxy wait.
    let mut frames: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let stalled = tokio::time::sleep(stall);
    let mut stalled = std::pin::pin!(stalled);
    loop {
        let next = tokio::select! {
            biased;
            next = body.frame() => next.map(|r| r.map_err(drop)),
            () = &mut stalled => return Err(Rejection::BodyTimeout),
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(_)) => {
                return Err(Rejection::InvalidBody("the request body could not be read"))
            }
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.remaining());
        if total > limit {
            drain(body, total, limit, stall).await;
            return Err(Rejection::BodyTooLarge { limit });
        }
        frames.push(data.copy_to_bytes(data.remaining()));
        stalled.as_mut().reset(Instant::now() + stall);
    }
    Ok(match frames.len() {
        0 => Bytes::new(),
        1 => frames.swap_remove(0),
        _ => {
            let mut all = BytesMut::with_capacity(total);
            for frame in &frames {
                all.extend_from_slice(frame);
            }
            all.freeze()
        }
    })
}

/// The longest an early answer waits for the client to finish sending.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The least an early answer drains of what the client still sends.
const DRAIN_MIN: usize = 64 * 1024;

/// Reads and discards what the client still sends of a body the proxy will
/// not use — `read` bytes of it already taken, up to twice `limit` (the
/// request's `max_body_bytes`) in all, each frame within `stall`, all within
/// 5 s — so that an early answer (413, 401, …) reaches a client still
/// sending, instead of a reset when the connection closes on unread data.
pub(crate) async fn drain<B>(
    body: std::pin::Pin<&mut B>,
    read: usize,
    limit: usize,
    stall: Duration,
) where
    B: Body,
{
    let mut body = body;
    let budget = limit.saturating_mul(2).saturating_sub(read).max(DRAIN_MIN);
    let discard = async {
        let mut left = budget;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(stall, body.as_mut().frame()).await {
            if let Ok(data) = frame.into_data() {
                left = match left.checked_sub(data.remaining()) {
                    Some(left) => left,
                    None => return,
                };
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// Decodes an encoded body, never producing more than `limit` bytes.
pub(crate) fn decode(encoding: Encoding, raw: Bytes, limit: usize) -> Result<Bytes, Rejection> {
    let mut reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => return Ok(raw),
        Encoding::Gzip => Box::new(MultiGzDecoder::new(&raw[..])),
        Encoding::Deflate => Box::new(ZlibDecoder::new(&raw[..])),
    };
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .by_ref()
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|_| {
            Rejection::InvalidBody("the body could not be decoded with its Content-Encoding")
        })?;
    if out.len() > limit {
        return Err(Rejection::BodyTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// Whether the body declares itself JSON (or declares nothing). A body that does
/// must be strict JSON; one with a form or binary media type may be something
/// else, and then has no model.
pub(crate) fn is_json_like(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return true;
    };
    let ct = ct.as_bytes();
    let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
    !(starts(b"multipart/")
        || starts(b"application/x-www-form-urlencoded")
        || starts(b"application/octet-stream")
        || starts(b"audio/")
        || starts(b"image/")
        || starts(b"video/"))
}

/// The upstream body went silent for longer than `server.idle_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for longer than the idle timeout")]
pub struct IdleTimeout;

pin_project! {
    /// The response body: the upstream's, streamed through as it arrives with an
    /// idle timeout between frames, or the proxy's own (JSON errors).
    #[derive(Debug)]
    pub struct ByokBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Upstream {
            // Bytes already read from the body (to classify an error
            // answer), sent before the rest.
            head: Option<Bytes>,
            #[pin]
            body: B,
            // Armed for the first silence; re-armed only when it fires early,
            // so a frame costs no timer operation (see poll_frame).
            #[pin]
            idle: Sleep,
            timeout: Duration,
            last_frame: Instant,
            // Reads the usage report as the body goes by (boxed: most
            // bodies of the layer alone carry none).
            usage: Option<Box<Accounting>>,
            // Small frames that were ready together, sent as one.
            gather: Gather,
        },
        Own {
            data: Option<Bytes>,
        },
    }
}

impl<B> ByokBody<B> {
    /// Streams `body`, failing it when no frame comes for `idle_timeout`.
    pub fn upstream(body: B, idle_timeout: Duration) -> Self {
        Self::upstream_after(None, body, idle_timeout)
    }

    /// Streams `head` (bytes already read from `body`), then the rest of
    /// `body`, as [`ByokBody::upstream`] does.
    pub(crate) fn upstream_after(head: Option<Bytes>, body: B, idle_timeout: Duration) -> Self {
        ByokBody {
            kind: Kind::Upstream {
                head: head.filter(|h| !h.is_empty()),
                body,
                idle: tokio::time::sleep(idle_timeout),
                timeout: idle_timeout,
                last_frame: Instant::now(),
                usage: None,
                gather: Gather::default(),
            },
        }
    }

    /// Reads the provider's usage report from the body as it streams, and
    /// counts it when the body ends.
    pub(crate) fn with_usage(mut self, accounting: Accounting) -> Self {
        if let Kind::Upstream { usage, .. } = &mut self.kind {
            *usage = Some(Box::new(accounting));
        }
        self
    }

    /// A complete body of the proxy's own.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ByokBody {
            kind: Kind::Own {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> From<Bytes> for ByokBody<B> {
    fn from(data: Bytes) -> Self {
        ByokBody::full(data)
    }
}

/// Frames ready together are sent as one while each is under this size...
const GATHER_FRAME: usize = 8 * 1024;

/// ...and all of them under this one.
const GATHER_MAX: usize = 16 * 1024;

/// The pending polls a gathered frame waits through for the next one, each
/// after waking the body's task. hyper's HTTP/1 server polls a pending body
/// twice in a row (it checks a pending write once more before it yields,
/// hyper 1.12 `proto/h1/dispatch.rs`), so under it two polls are one turn of
/// the scheduler: with one, nothing was ever gathered; with two, the 16 events
/// of a burst leave in one write. Under a server that polls once, two polls
/// are two turns.
const GATHER_POLLS: u8 = 2;

/// The small data frames of an upstream body that were ready together.
///
/// hyper's client hands a response body over one frame at a time (an SSE
/// event, a chunk) from its connection task, and hyper's server writes what
/// it holds as soon as the body is pending: without this, a burst of events
/// read in one socket read leaves in one write each. A frame that came alone
/// leaves as it came (no copy), after at most [`GATHER_POLLS`] polls
/// (microseconds); a large one is never copied.
#[derive(Debug, Default)]
struct Gather {
    first: Option<Bytes>,
    more: BytesMut,
    // The pending polls since the last frame (see GATHER_POLLS).
    polls: u8,
    // What the body gave after the gathered frames, sent after them.
    after: Option<Option<Result<Frame<Bytes>, BoxError>>>,
}

impl Gather {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.more.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.more.is_empty()
    }

    /// Whether `data` joins the frames gathered rather than going alone.
    fn takes(&self, data: &Bytes) -> bool {
        data.len() < GATHER_FRAME && self.len() + data.len() <= GATHER_MAX
    }

    fn push(&mut self, data: Bytes) {
        if self.is_empty() {
            self.first = Some(data);
            return;
        }
        if let Some(first) = self.first.take() {
            self.more.reserve(first.len() + data.len());
            self.more.extend_from_slice(&first);
        }
        self.more.extend_from_slice(&data);
    }

    /// The frames gathered, as one.
    fn take(&mut self) -> Option<Bytes> {
        self.polls = 0;
        match self.first.take() {
            Some(first) => Some(first),
            None if self.more.is_empty() => None,
            None => Some(self.more.split().freeze()),
        }
    }

    /// What the body gives now, `next` being what it gave last: the frames
    /// gathered, with `next` kept for the poll after; or `next` itself.
    fn then(
        &mut self,
        next: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Option<Result<Frame<Bytes>, BoxError>> {
        match self.take() {
            Some(held) => {
                self.after = Some(next);
                Some(Ok(Frame::data(held)))
            }
            None => next,
        }
    }
}

impl<B> Body for ByokBody<B>
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
        match self.project().kind.project() {
            KindProj::Upstream {
                head,
                mut body,
                mut idle,
                timeout,
                last_frame,
                usage,
                gather,
            } => {
                if let Some(read) = head.take() {
                    if let Some(acc) = usage {
                        acc.tap.feed(&read);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(read))));
                }
                if let Some(next) = gather.after.take() {
                    return Poll::Ready(next);
                }
                loop {
                    let mut frame = match body.as_mut().poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => frame,
                        Poll::Ready(Some(Err(e))) => {
                            return Poll::Ready(gather.then(Some(Err(e.into()))))
                        }
                        Poll::Ready(None) => {
                            if let Some(acc) = usage.take() {
                                acc.finish();
                            }
                            return Poll::Ready(gather.then(None));
                        }
                        Poll::Pending if !gather.is_empty() => {
                            if gather.polls >= GATHER_POLLS {
                                // Nothing more came: what was gathered goes.
                                return Poll::Ready(gather.take().map(|d| Ok(Frame::data(d))));
                            }
                            // Let the task that reads the upstream run before
                            // the write: frames it has already read join
                            // these (one write instead of one a frame).
                            gather.polls += 1;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Poll::Pending => loop {
                            // A body that is never Pending never registers a timer.
                            match idle.as_mut().poll(cx) {
                                Poll::Pending => return Poll::Pending,
                                Poll::Ready(()) => {
                                    let due = *last_frame + *timeout;
                                    if Instant::now() >= due {
                                        return Poll::Ready(Some(Err(Box::new(IdleTimeout))));
                                    }
                                    // A frame came since it was armed: re-arm from it.
                                    idle.as_mut().reset(due);
                                }
                            }
                        },
                    };
                    // Only noted: the timer is not touched per frame.
                    *last_frame = Instant::now();
                    gather.polls = 0;
                    let ended = body.as_ref().get_ref().is_end_stream();
                    if let (Some(_), Some(data)) = (usage.as_ref(), frame.data_ref()) {
                        // hyper stops polling a body that says it has ended
                        // (all of a Content-Length read): count it with its
                        // last frame, read where it lies.
                        if ended {
                            if let Some(acc) = usage.take() {
                                acc.finish_with(data);
                            }
                        } else if let Some(acc) = usage.as_mut() {
                            acc.tap.feed(data);
                        }
                    }
                    if let Some(trailers) = frame.trailers_mut() {
                        // Trailers are headers too: no credential in them.
                        super::headers::strip_credentials(trailers);
                    }
                    match frame.into_data() {
                        Ok(data) if !ended && gather.takes(&data) => gather.push(data),
                        Ok(data) => return Poll::Ready(gather.then(Some(Ok(Frame::data(data))))),
                        Err(frame) => return Poll::Ready(gather.then(Some(Ok(frame)))),
                    }
                }
            }
            KindProj::Own { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream {
                head, body, gather, ..
            } => {
                head.is_none()
                    && gather.is_empty()
                    && gather.after.is_none()
                    && body.is_end_stream()
            }
            Kind::Own { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream {
                head, body, gather, ..
            } => {
                let held = head.as_ref().map_or(0, Bytes::len) + gather.len();
                let read = held as u64;
                let rest = body.size_hint();
                // Upper first: SizeHint refuses a lower bound above its upper.
                let mut hint = SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint.set_lower(rest.lower().saturating_add(read));
                hint
            }
            Kind::Own { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use http::HeaderValue;
    use std::io::Write;

    fn h(name: &'static str, values: &[&'static str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(name, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn encoding_table() {
        let cases: &[(&[&'static str], Result<Encoding, ()>)] = &[
            (&[], Ok(Encoding::Identity)),
            (&["identity"], Ok(Encoding::Identity)),
            (&["gzip"], Ok(Encoding::Gzip)),
            (&["GZip"], Ok(Encoding::Gzip)),
            (&["x-gzip"], Ok(Encoding::Gzip)),
            (&["deflate"], Ok(Encoding::Deflate)),
            (&["identity, gzip"], Ok(Encoding::Gzip)),
            (&["gzip, gzip"], Err(())),
            (&["gzip", "deflate"], Err(())),
            (&["br"], Err(())),
            (&["zstd"], Err(())),
            (&["compress"], Err(())),
        ];
        for (values, want) in cases {
            let got = encoding(&h("content-encoding", values)).map_err(|_| ());
            assert_eq!(got, *want, "{values:?}");
        }
    }

    #[test]
    fn decode_within_the_limit() {
        let plain = br#"{"model":"gpt-4o"}"#;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(plain).unwrap();
        let gz = Bytes::from(gz.finish().unwrap());
        let mut zl = ZlibEncoder::new(Vec::new(), Compression::default());
        zl.write_all(plain).unwrap();
        let zl = Bytes::from(zl.finish().unwrap());

        assert_eq!(decode(Encoding::Gzip, gz.clone(), 100).unwrap(), &plain[..]);
        assert_eq!(decode(Encoding::Deflate, zl, 100).unwrap(), &plain[..]);
        assert_eq!(
            decode(Encoding::Gzip, gz, plain.len() - 1)
                .unwrap_err()
                .reason(),
            "body_too_large"
        );
        assert_eq!(
            decode(Encoding::Gzip, Bytes::from_static(b"not gzip"), 100)
                .unwrap_err()
                .reason(),
            "invalid_body"
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&vec![b' '; 50 << 20]).unwrap();
        let bomb = Bytes::from(gz.finish().unwrap());
        assert!(bomb.len() < 100_000);
        assert_eq!(
            decode(Encoding::Gzip, bomb, 1 << 20).unwrap_err().reason(),
            "body_too_large"
        );
    }

    #[test]
    fn json_like_table() {
        for (ct, want) in [
            (None, true),
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("text/plain"), true),
            (Some("multipart/form-data; boundary=x"), false),
            (Some("Multipart/Form-Data"), false),
            (Some("application/x-www-form-urlencoded"), false),
            (Some("application/octet-stream"), false),
            (Some("audio/wav"), false),
        ] {
            let mut m = HeaderMap::new();
            if let Some(ct) = ct {
                m.insert("content-type", HeaderValue::from_static(ct));
            }
            assert_eq!(is_json_like(&m), want, "{ct:?}");
        }
    }

    /// A body that yields `frames` chunks `gap` apart, then stays silent.
    struct Trickle {
        frames: u32,
        gap: Duration,
        next: std::pin::Pin<Box<Sleep>>,
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.frames == 0 {
                return Poll::Pending;
            }
            match self.next.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    self.frames -= 1;
                    let at = Instant::now() + self.gap;
                    self.next.as_mut().reset(at);
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_counts_from_the_last_frame() {
        // Frames every 80 ms for 400 ms, with a 100 ms idle timeout: never
        // idle while they come, cut 100 ms after the last one.
        let gap = Duration::from_millis(80);
        let body = Trickle {
            frames: 5,
            gap,
            next: Box::pin(tokio::time::sleep(gap)),
        };
        let started = Instant::now();
        let mut body = std::pin::pin!(ByokBody::upstream(body, Duration::from_millis(100)));
        let mut got = 0;
        let end = loop {
            match body.frame().await {
                Some(Ok(_)) => got += 1,
                other => break other,
            }
        };
        assert_eq!(got, 5);
        assert!(matches!(end, Some(Err(e)) if e.is::<IdleTimeout>()));
        assert_eq!(started.elapsed(), Duration::from_millis(400 + 100));
    }

    /// A response body that ends with trailers.
    struct WithTrailers(Option<http::HeaderMap>);

    impl Body for WithTrailers {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|t| Ok(Frame::trailers(t))))
        }
    }

    #[tokio::test]
    async fn trailers_lose_credential_headers() {
        let mut t = http::HeaderMap::new();
        t.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-echoed"),
        );
        t.insert("x-goog-api-key", HeaderValue::from_static("sk-echoed"));
        t.insert("x-checksum", HeaderValue::from_static("1"));
        let body = ByokBody::upstream(WithTrailers(Some(t)), STALL);
        let trailers = body.collect().await.unwrap().trailers().cloned().unwrap();
        let names: Vec<&str> = trailers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-checksum"]);
    }

    #[tokio::test]
    async fn bytes_read_ahead_go_out_first_and_count_in_the_size() {
        let rest = http_body_util::Full::new(Bytes::from_static(b"cd"));
        let body = ByokBody::upstream_after(Some(Bytes::from_static(b"ab")), rest, STALL);
        assert_eq!(body.size_hint().exact(), Some(4));
        assert!(!body.is_end_stream());
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcd");
        // Read to its end already: the size is what was read.
        let ended = http_body_util::Empty::<Bytes>::new();
        let body = ByokBody::upstream_after(Some(Bytes::from_static(b"ab")), ended, STALL);
        assert_eq!(body.size_hint().exact(), Some(2));
    }

    const STALL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn read_refuses_declared_and_actual_oversize() {
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        let ok = read(&HeaderMap::new(), body.clone(), 10, STALL)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
        let err = read(&HeaderMap::new(), body, 9, STALL).await.unwrap_err();
        assert_eq!(err.reason(), "body_too_large");
        let declared = h("content-length", &["1000"]);
        let err = read(&declared, http_body_util::Empty::<Bytes>::new(), 9, STALL)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "body_too_large");
    }

    /// A request body fed by the test, frame by frame.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn read_joins_frames_and_times_out_a_stall() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for part in ["{\"model\":", "\"m\"}"] {
            tx.send(Bytes::from(part)).await.unwrap();
        }
        drop(tx);
        let got = read(&HeaderMap::new(), Fed(rx), 100, STALL).await.unwrap();
        assert_eq!(&got[..], b"{\"model\":\"m\"}");

        // A body that stops: 408 after exactly the stall time.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(Bytes::from_static(b"{\"model\":")).await.unwrap();
        let started = Instant::now();
        let err = read(&HeaderMap::new(), Fed(rx), 100, STALL)
            .await
            .unwrap_err();
        assert_eq!(
            (err.reason(), err.status().as_u16()),
            ("request_timeout", 408)
        );
        assert_eq!(started.elapsed(), STALL);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_body_is_drained_within_bounds_before_the_answer() {
        // 4 frames of 4 bytes over a limit of 6: read to the end, then 413.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for _ in 0..4 {
            tx.send(Bytes::from_static(b"abcd")).await.unwrap();
        }
        drop(tx);
        let err = read(&HeaderMap::new(), Fed(rx), 6, STALL)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "body_too_large");

        // A client that never stops sending is drained for at most 5 s.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let feeder = tokio::spawn(async move {
            while tx.send(Bytes::from_static(b"x")).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let started = Instant::now();
        let err = read(&HeaderMap::new(), Fed(rx), 1, STALL)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "body_too_large");
        let took = started.elapsed();
        assert!(
            DRAIN_TIME <= took && took <= DRAIN_TIME + Duration::from_millis(20),
            "{took:?}"
        );
        feeder.abort();
    }

    /// A response body fed by the test: frames, trailers or an error, as sent.
    struct Sent(tokio::sync::mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>);

    impl Body for Sent {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx)
        }
    }

    type Sender = tokio::sync::mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>;

    fn sent() -> (Sender, Pin<Box<ByokBody<Sent>>>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (tx, Box::pin(ByokBody::upstream(Sent(rx), STALL)))
    }

    fn data(tx: &Sender, b: &'static [u8]) {
        tx.send(Ok(Frame::data(Bytes::from_static(b)))).unwrap();
    }

    fn poll_once(
        body: &mut Pin<Box<ByokBody<Sent>>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        body.as_mut().poll_frame(&mut cx)
    }

    fn data_of(polled: Poll<Option<Result<Frame<Bytes>, BoxError>>>) -> Bytes {
        match polled {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
            other => panic!(
                "not a data frame: {:?}",
                other.map(|f| f.map(|f| f.is_ok()))
            ),
        }
    }

    #[tokio::test]
    async fn small_frames_ready_together_leave_as_one() {
        let (tx, mut body) = sent();
        for part in [&b"data: 1\n\n"[..], b"data: 2\n\n", b"data: 3\n\n"] {
            data(&tx, part);
        }
        assert!(!body.is_end_stream());
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"data: 1\n\ndata: 2\n\ndata: 3\n\n");
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_frame_waits_two_pending_polls_for_the_next_and_no_more() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = std::task::Waker::from(count.clone());
        let wakes = || count.0.load(std::sync::atomic::Ordering::Relaxed);
        let poll = |body: &mut Pin<Box<ByokBody<Sent>>>| {
            body.as_mut().poll_frame(&mut Context::from_waker(&waker))
        };
        let (tx, mut body) = sent();
        data(&tx, b"a");
        // The frame is held, and the body wakes itself: it is never left
        // holding a frame with nobody to poll it again.
        assert!(poll(&mut body).is_pending());
        assert_eq!(wakes(), 1);
        // One that comes meanwhile joins it, and the wait starts again.
        data(&tx, b"b");
        assert!(poll(&mut body).is_pending());
        assert!(poll(&mut body).is_pending());
        assert!(body.size_hint().lower() >= 2 && !body.is_end_stream());
        // Two pending polls since the last frame: what was gathered goes.
        let before = wakes();
        assert_eq!(&data_of(poll(&mut body))[..], b"ab");
        // Nothing held: pending until the upstream sends, no wake of its own.
        assert!(poll(&mut body).is_pending());
        assert_eq!(wakes(), before);
        data(&tx, b"c");
        assert!(wakes() > before, "the upstream's frame wakes the body");
    }

    #[tokio::test]
    async fn a_frame_alone_leaves_as_it_came() {
        let (tx, mut body) = sent();
        let event = Bytes::from(vec![b'x'; 300]);
        tx.send(Ok(Frame::data(event.clone()))).unwrap();
        assert!(poll_once(&mut body).is_pending());
        assert!(poll_once(&mut body).is_pending());
        let out = data_of(poll_once(&mut body));
        assert_eq!(out.as_ptr(), event.as_ptr(), "not copied");
    }

    #[tokio::test]
    async fn large_frames_are_never_gathered_and_order_is_kept() {
        let (tx, mut body) = sent();
        let large = Bytes::from(vec![b'L'; GATHER_FRAME]);
        data(&tx, b"s1");
        tx.send(Ok(Frame::data(large.clone()))).unwrap();
        data(&tx, b"s2");
        assert_eq!(&data_of(poll_once(&mut body))[..], b"s1");
        let out = data_of(poll_once(&mut body));
        assert_eq!(out.as_ptr(), large.as_ptr(), "not copied");
        // Gathered up to GATHER_MAX, no further.
        let (tx, mut body) = sent();
        let piece = Bytes::from(vec![b'p'; GATHER_FRAME - 1]);
        for _ in 0..3 {
            tx.send(Ok(Frame::data(piece.clone()))).unwrap();
        }
        drop(tx);
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(frame)) = poll_once(&mut body) {
            sizes.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes, [2 * (GATHER_FRAME - 1), GATHER_FRAME - 1]);
    }

    #[tokio::test]
    async fn what_ends_the_body_follows_the_gathered_frames() {
        // Trailers (stripped of credentials), then the end.
        let (tx, mut body) = sent();
        data(&tx, b"a");
        data(&tx, b"b");
        let mut t = http::HeaderMap::new();
        t.insert("authorization", HeaderValue::from_static("Bearer sk-x"));
        t.insert("x-checksum", HeaderValue::from_static("1"));
        tx.send(Ok(Frame::trailers(t))).unwrap();
        drop(tx);
        assert_eq!(&data_of(poll_once(&mut body))[..], b"ab");
        assert!(!body.is_end_stream(), "the trailers are still to come");
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(
            trailers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-checksum"]
        );
        assert!(body.frame().await.is_none());

        // An error, after the frames before it.
        let (tx, mut body) = sent();
        data(&tx, b"a");
        tx.send(Err("upstream reset".into())).unwrap();
        assert_eq!(&data_of(poll_once(&mut body))[..], b"a");
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Err(_)))));
    }
}
