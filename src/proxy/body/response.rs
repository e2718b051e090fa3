//! The response side: [`ByokBody`], the upstream's stream or the proxy's own
//! bytes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::proxy::usage::Accounting;
use crate::BoxError;

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
                        crate::proxy::headers::strip_credentials(trailers);
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
    use http::HeaderValue;
    use http_body_util::BodyExt;

    const STALL: Duration = Duration::from_secs(60);

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
