//! Bodies: reading the request body once, within its limit; and the response
//! body, which is either the upstream's stream or the proxy's own JSON.

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use flate2::read::{MultiGzDecoder, ZlibDecoder};
use http::header::{HeaderMap, CONTENT_ENCODING, CONTENT_LENGTH};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::Rejection;
use crate::BoxError;

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

/// The request's content coding; anything but one of gzip/deflate (plus any
/// number of `identity`) is refused, so an encoded body is never forwarded
/// without the proxy having read the model in it.
pub(crate) fn encoding(headers: &HeaderMap) -> Result<Encoding, Rejection> {
    let mut found = Encoding::Identity;
    for value in headers.get_all(CONTENT_ENCODING) {
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
/// declared `Content-Length` above the limit is refused before reading).
pub(crate) async fn read<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Rejection::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Rejection::BodyTooLarge { limit })
        }
        Err(_) => Err(Rejection::InvalidBody("the request body could not be read")),
    }
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

/// Data frames smaller than this are coalesced with those ready after them.
const COALESCE_BELOW: usize = 4 * 1024;
/// The most one coalesced frame holds.
const COALESCE_UP_TO: usize = 64 * 1024;

/// What ended a batch, delivered on the next poll.
#[derive(Debug)]
enum Held {
    Frame(Frame<Bytes>),
    Error(BoxError),
    End,
}

impl Held {
    fn into_frame(self) -> Option<Result<Frame<Bytes>, BoxError>> {
        match self {
            Held::Frame(f) => Some(Ok(f)),
            Held::Error(e) => Some(Err(e)),
            Held::End => None,
        }
    }
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
            #[pin]
            body: B,
            // Armed for the first silence; re-armed only when it fires early,
            // so a frame costs no timer operation (see poll_frame).
            #[pin]
            idle: Sleep,
            timeout: Duration,
            last_frame: Instant,
            // Small data frames that were ready together, sent as one.
            batch: BytesMut,
            // What came right after a batch: delivered after it.
            held: Option<Held>,
            // Whether this batch already yielded once to let more frames in.
            yielded: bool,
        },
        Own {
            data: Option<Bytes>,
        },
    }
}

impl<B> ByokBody<B> {
    /// Streams `body`, failing it when no frame comes for `idle_timeout`.
    pub fn upstream(body: B, idle_timeout: Duration) -> Self {
        ByokBody {
            kind: Kind::Upstream {
                body,
                idle: tokio::time::sleep(idle_timeout),
                timeout: idle_timeout,
                last_frame: Instant::now(),
                batch: BytesMut::new(),
                held: None,
                yielded: false,
            },
        }
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
                mut body,
                mut idle,
                timeout,
                last_frame,
                batch,
                held,
                yielded,
            } => {
                if batch.is_empty() {
                    if let Some(h) = held.take() {
                        return Poll::Ready(h.into_frame());
                    }
                }
                loop {
                    // What ends a batch waits for the next poll, behind it.
                    let stop = match body.as_mut().poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            // Only noted: the timer is not touched per frame.
                            *last_frame = Instant::now();
                            match frame.into_data() {
                                Ok(data)
                                    if data.len() < COALESCE_BELOW
                                        && batch.len() + data.len() <= COALESCE_UP_TO =>
                                {
                                    batch.extend_from_slice(&data);
                                    continue;
                                }
                                Ok(data) => Held::Frame(Frame::data(data)),
                                Err(trailers) => Held::Frame(trailers),
                            }
                        }
                        Poll::Ready(Some(Err(e))) => Held::Error(e.into()),
                        Poll::Ready(None) => Held::End,
                        Poll::Pending if !batch.is_empty() => {
                            if !*yielded {
                                // Let the upstream connection decode what it has
                                // already read: frames ready by then join this write.
                                *yielded = true;
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                            *yielded = false;
                            return Poll::Ready(Some(Ok(Frame::data(batch.split().freeze()))));
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
                    if batch.is_empty() {
                        return Poll::Ready(stop.into_frame());
                    }
                    *held = Some(stop);
                    *yielded = false;
                    return Poll::Ready(Some(Ok(Frame::data(batch.split().freeze()))));
                }
            }
            KindProj::Own { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream {
                body, batch, held, ..
            } => {
                batch.is_empty()
                    && match held {
                        Some(Held::End) => true,
                        Some(_) => false,
                        None => body.is_end_stream(),
                    }
            }
            Kind::Own { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, batch, .. } => {
                // What is batched was taken from the body's remainder.
                let inner = body.size_hint();
                let extra = batch.len() as u64;
                let mut hint = SizeHint::new();
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint.set_lower(inner.lower().saturating_add(extra));
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

    /// Frames ready at once, in order, from a script; `None` entries are a
    /// Pending (with an immediate wake, as a connection with more to decode).
    struct Script(std::collections::VecDeque<Option<Result<Frame<Bytes>, &'static str>>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                Some(Some(item)) => Poll::Ready(Some(item.map_err(BoxError::from))),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(None),
            }
        }
    }

    async fn drain(script: Vec<Option<Result<Frame<Bytes>, &'static str>>>) -> Vec<String> {
        let body = ByokBody::upstream(Script(script.into()), Duration::from_secs(60));
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(match frame {
                Ok(f) if f.is_data() => {
                    format!("data:{}", String::from_utf8_lossy(&f.into_data().unwrap()))
                }
                Ok(f) => format!("trailers:{}", f.into_trailers().unwrap().len()),
                Err(e) => format!("error:{e}"),
            });
        }
        out
    }

    fn data(s: &'static str) -> Option<Result<Frame<Bytes>, &'static str>> {
        Some(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))
    }

    #[tokio::test]
    async fn ready_small_frames_go_out_together_in_order_and_nothing_is_lost() {
        // Ready back to back: one frame.
        assert_eq!(
            drain(vec![data("a"), data("b"), data("c")]).await,
            ["data:abc"]
        );
        // Frames that become ready during the one yield join the batch.
        assert_eq!(
            drain(vec![data("a"), None, data("b"), None, None, data("c")]).await,
            ["data:ab", "data:c"]
        );
        // A large frame ends the batch and follows it whole.
        let big: &'static str = Box::leak("x".repeat(5000).into_boxed_str());
        let got = drain(vec![data("a"), data(big), data("b")]).await;
        assert_eq!(
            got,
            [
                "data:a".to_owned(),
                format!("data:{big}"),
                "data:b".to_owned()
            ]
        );
        // Trailers and errors come after what was batched before them.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let got = drain(vec![data("a"), Some(Ok(Frame::trailers(trailers)))]).await;
        assert_eq!(got, ["data:a", "trailers:1"]);
        let got = drain(vec![data("a"), data("b"), Some(Err("boom"))]).await;
        assert_eq!(got, ["data:ab", "error:boom"]);
    }

    #[tokio::test]
    async fn size_hint_stays_exact_with_a_batch() {
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        let mut body = std::pin::pin!(ByokBody::upstream(body, Duration::from_secs(60)));
        assert_eq!(body.size_hint().exact(), Some(10));
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.len(), 10);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn read_refuses_declared_and_actual_oversize() {
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        let ok = read(&HeaderMap::new(), body.clone(), 10).await.unwrap();
        assert_eq!(ok.len(), 10);
        let err = read(&HeaderMap::new(), body, 9).await.unwrap_err();
        assert_eq!(err.reason(), "body_too_large");
        let declared = h("content-length", &["1000"]);
        let err = read(&declared, http_body_util::Empty::<Bytes>::new(), 9)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "body_too_large");
    }
}
