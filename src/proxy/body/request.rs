//! The request side: the client's body, read once within its limit (or
//! drained before an early answer), its content coding, decoded within the
//! limit too, and whether it declares itself JSON.

use std::io::Read;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use flate2::read::{MultiGzDecoder, ZlibDecoder};
use http::header::{HeaderMap, CONTENT_ENCODING, CONTENT_LENGTH};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::budget::Reservation;
use crate::proxy::error::Rejection;
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

/// The body's declared `Content-Length`, when it has a readable one.
fn declared(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The body's declared `Content-Length` (0 when it declares none), refused
/// when above `limit` from the head alone: decided before the body is
/// polled, so that the 413 is written at once (hyper sends `100 Continue`
/// only when a body is first polled).
pub(crate) fn check_declared(headers: &HeaderMap, limit: usize) -> Result<usize, Rejection> {
    match declared(headers) {
        None => Ok(0),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= limit)
            .ok_or(Rejection::BodyTooLarge { limit }),
    }
}

/// Reads the whole body, refusing it as soon as it exceeds `limit` bytes, as
/// soon as it stalls (no byte for `stall` is a 408), and as soon as `held`
/// cannot grow to what it has read (503: the budget of all bodies is
/// spent). A declared length above the limit is refused before, by
/// [`check_declared`].
///
/// Before a 413 or a 503 mid-body it [`drain`]s what the client is still
/// sending (up to twice `limit` in all), so that the answer reaches it
/// rather than a reset; what it had read is let go first.
pub(crate) async fn read<B>(
    body: B,
    limit: usize,
    stall: Duration,
    held: &mut Reservation<'_>,
) -> Result<Bytes, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    // Frames are kept as they came (no copy) and joined once at the end; most
    // bodies arrive in one frame, which is returned as it is. The stall timer
    // is armed only when the body makes the proxy wait.
    let mut frames = Frames::default();
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
        let refused = if total > limit {
            Rejection::BodyTooLarge { limit }
        } else if let Err(exhausted) = held.grow_to(total) {
            exhausted.into()
        } else {
            frames.push(data.copy_to_bytes(data.remaining()));
            stalled.as_mut().reset(Instant::now() + stall);
            continue;
        };
        drop(frames);
        held.shrink_to(0);
        drain(body, total, limit, stall).await;
        return Err(refused);
    }
    Ok(frames.join(total))
}

/// A body's frames as read: the first apart, so that a body of one frame
/// (most of them) is returned as it came, with no list allocated.
#[derive(Default)]
struct Frames {
    first: Option<Bytes>,
    rest: Vec<Bytes>,
}

impl Frames {
    fn push(&mut self, frame: Bytes) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.push(frame);
        }
    }

    /// The frames as one, `total` bytes long.
    fn join(self, total: usize) -> Bytes {
        let Some(first) = self.first else {
            return Bytes::new();
        };
        if self.rest.is_empty() {
            return first;
        }
        let mut all = BytesMut::with_capacity(total);
        all.extend_from_slice(&first);
        for frame in &self.rest {
            all.extend_from_slice(frame);
        }
        all.freeze()
    }
}

/// The longest an early answer waits for the client to finish sending.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The least an early answer drains of what the client still sends.
const DRAIN_MIN: usize = 64 * 1024;

/// Drains `body`, which the proxy refused before reading any of it, on a
/// task of its own, as [`drain`] does: the refusal is answered at once,
/// without waiting on the client's upload. A body that has ended already
/// needs nothing; outside a tokio runtime it is dropped (then hyper closes
/// the connection after the answer).
pub(crate) fn drain_later<B>(body: B, limit: usize, stall: Duration)
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    if body.is_end_stream() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let body = std::pin::pin!(body);
            drain(body, 0, limit, stall).await;
        });
    }
}

/// Reads and discards what the client still sends of a body the proxy will
/// not use — `read` bytes of it already taken, up to twice `limit` (the
/// request's `max_body_bytes`) in all, each frame within `stall`, all within
/// 5 s — so that an early answer (413, 401, …) reaches a client still
/// sending, instead of a reset when the connection closes on unread data.
/// Beyond those bounds the body is dropped: hyper then closes the connection
/// once the answer is written.
pub(crate) async fn drain<B>(body: Pin<&mut B>, read: usize, limit: usize, stall: Duration)
where
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

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use http::HeaderValue;
    use http_body::Frame;
    use std::io::Write;
    use std::task::{Context, Poll};

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

    const STALL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn read_refuses_declared_and_actual_oversize() {
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        let ok = read(body.clone(), 10, STALL, &mut Reservation::of(None))
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
        let err = read(body, 9, STALL, &mut Reservation::of(None))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "body_too_large");
        // A declared length is judged from the head alone.
        let declared = h("content-length", &["1000"]);
        assert_eq!(
            check_declared(&declared, 9).unwrap_err().reason(),
            "body_too_large"
        );
        assert!(check_declared(&declared, 1000).is_ok());
        assert!(check_declared(&h("content-length", &["x"]), 9).is_ok());
        assert!(check_declared(&HeaderMap::new(), 9).is_ok());
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
        let got = read(Fed(rx), 100, STALL, &mut Reservation::of(None))
            .await
            .unwrap();
        assert_eq!(&got[..], b"{\"model\":\"m\"}");

        // A body that stops: 408 after exactly the stall time.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(Bytes::from_static(b"{\"model\":")).await.unwrap();
        let started = Instant::now();
        let err = read(Fed(rx), 100, STALL, &mut Reservation::of(None))
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
    async fn read_holds_its_bytes_in_the_budget_or_gets_503() {
        use super::super::budget::BodyBudget;
        let budget = BodyBudget::new(10);
        // Two frames of 4: held as they come, 8 in all.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for part in ["abcd", "efgh"] {
            tx.send(Bytes::from(part)).await.unwrap();
        }
        drop(tx);
        let mut first = Reservation::of(Some(&budget));
        let got = read(Fed(rx), 100, STALL, &mut first).await.unwrap();
        assert_eq!((&got[..], budget.held()), (&b"abcdefgh"[..], 8));

        // The next body fits 2 bytes: its second frame gets 503, and what
        // it had read is let go before its drain.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for part in ["ab", "cd"] {
            tx.send(Bytes::from(part)).await.unwrap();
        }
        drop(tx);
        let mut second = Reservation::of(Some(&budget));
        let err = read(Fed(rx), 100, STALL, &mut second).await.unwrap_err();
        assert_eq!(
            (err.reason(), err.status().as_u16()),
            ("body_budget_exhausted", 503)
        );
        assert_eq!(budget.held(), 8);
        drop((first, second));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_later_takes_the_body_on_a_task_of_its_own_within_bounds() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let started = Instant::now();
        drain_later(Fed(rx), 4, STALL);
        // The task takes what the client still sends, beyond the channel's
        // one slot...
        for _ in 0..8 {
            tx.send(Bytes::from_static(b"abcd")).await.unwrap();
        }
        // ...and lets the body go after 5 s at most.
        tx.closed().await;
        assert_eq!(started.elapsed(), DRAIN_TIME);

        // A body that has ended needs no task.
        drain_later(http_body_util::Empty::<Bytes>::new(), 4, STALL);
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_body_is_drained_within_bounds_before_the_answer() {
        // 4 frames of 4 bytes over a limit of 6: read to the end, then 413.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for _ in 0..4 {
            tx.send(Bytes::from_static(b"abcd")).await.unwrap();
        }
        drop(tx);
        let err = read(Fed(rx), 6, STALL, &mut Reservation::of(None))
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
        let err = read(Fed(rx), 1, STALL, &mut Reservation::of(None))
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
}
