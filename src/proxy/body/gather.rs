//! Small frames that were ready together, sent as one: [`Gather`].
//!
//! hyper's client hands a response body over one frame at a time (an SSE
//! event, a chunk) from its connection task, and hyper's server writes what
//! it holds as soon as the body is pending: without this, a burst of events
//! read in one socket read leaves in one write each (docs/performance.md,
//! issue 16).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

/// Frames ready together are sent as one while each is under this size...
const GATHER_FRAME: usize = 8 * 1024;

/// ...and all of them under this one.
const GATHER_MAX: usize = 16 * 1024;

/// The pending polls a gathered frame waits through for the next one, each
/// after waking the body's task. hyper's HTTP/1 server polls a pending body
/// twice in a row (it checks a pending write once more before it yields,
/// hyper 1.12 `proto/h1/dispatch.rs`; pinned by the test
/// `hyper_polls_a_pending_body_twice_a_turn` below), so under it two polls
/// are one turn of the scheduler: with one, nothing was ever gathered; with
/// two, the 16 events of a burst leave in one write. Under a server that
/// polls once, two polls are two turns.
const GATHER_POLLS: u8 = 2;

pin_project! {
    /// A body whose small data frames that were ready together leave as one.
    ///
    /// A data frame under [`GATHER_FRAME`] is held; while the inner body is
    /// pending, the held frames wait through at most [`GATHER_POLLS`] polls
    /// (microseconds), the body waking its own task each time so that it is
    /// never left holding a frame with nobody to poll it; then they go, as
    /// one. A frame that came alone leaves as it came (no copy); a large one
    /// is never held; trailers, errors and the end go after what was held.
    #[derive(Debug)]
    pub(crate) struct Gather<B> {
        #[pin]
        inner: B,
        held: Held,
        // What the body gave after the held frames, sent after them.
        after: Option<Option<Result<Frame<Bytes>, BoxError>>>,
    }
}

impl<B> Gather<B> {
    /// `inner`, its small frames gathered.
    pub(crate) fn new(inner: B) -> Self {
        Gather {
            inner,
            held: Held::default(),
            after: None,
        }
    }

    /// The body inside.
    pub(crate) fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

/// The small data frames held, and the pending polls since the last frame.
#[derive(Debug, Default)]
struct Held {
    first: Option<Bytes>,
    more: BytesMut,
    // The pending polls since the last frame (see GATHER_POLLS).
    polls: u8,
}

impl Held {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.more.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.more.is_empty()
    }

    /// Whether `data` joins the frames held rather than going alone.
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

    /// The frames held, as one.
    fn take(&mut self) -> Option<Bytes> {
        self.polls = 0;
        match self.first.take() {
            Some(first) => Some(first),
            None if self.more.is_empty() => None,
            None => Some(self.more.split().freeze()),
        }
    }
}

/// What the body gives now, `next` being what the inner body gave last: the
/// frames held, with `next` kept in `after` for the poll after; or `next`
/// itself.
fn then(
    held: &mut Held,
    after: &mut Option<Option<Result<Frame<Bytes>, BoxError>>>,
    next: Option<Result<Frame<Bytes>, BoxError>>,
) -> Option<Result<Frame<Bytes>, BoxError>> {
    match held.take() {
        Some(data) => {
            *after = Some(next);
            Some(Ok(Frame::data(data)))
        }
        None => next,
    }
}

impl<B> Body for Gather<B>
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
        if let Some(next) = this.after.take() {
            return Poll::Ready(next);
        }
        loop {
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(then(this.held, this.after, Some(Err(e.into()))))
                }
                Poll::Ready(None) => return Poll::Ready(then(this.held, this.after, None)),
                Poll::Pending if this.held.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    if this.held.polls >= GATHER_POLLS {
                        // Nothing more came: what was held goes.
                        return Poll::Ready(this.held.take().map(|d| Ok(Frame::data(d))));
                    }
                    // Let the task that reads the upstream run before the
                    // write: frames it has already read join these (one
                    // write instead of one a frame).
                    this.held.polls += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            };
            this.held.polls = 0;
            let ended = this.inner.is_end_stream();
            match frame.into_data() {
                Ok(data) if !ended && this.held.takes(&data) => this.held.push(data),
                Ok(data) => {
                    let next = Some(Ok(Frame::data(data)));
                    return Poll::Ready(then(this.held, this.after, next));
                }
                Err(frame) => return Poll::Ready(then(this.held, this.after, Some(Ok(frame)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && self.after.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The frames held, and a data frame kept to follow them.
        let after = match &self.after {
            Some(Some(Ok(frame))) => frame.data_ref().map_or(0, Bytes::len),
            _ => 0,
        };
        let read = (self.held.len() + after) as u64;
        super::plus(self.inner.size_hint(), read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::testing::{channel, data, data_of, poll_once, Sender, Sent};
    use http::HeaderValue;
    use http_body_util::BodyExt;

    fn sent() -> (Sender, Pin<Box<Gather<Sent>>>) {
        let (tx, body) = channel();
        (tx, Box::pin(Gather::new(body)))
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
        let poll = |body: &mut Pin<Box<Gather<Sent>>>| {
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
    async fn trailers_errors_and_the_end_follow_the_held_frames() {
        // Trailers, then the end.
        let (tx, mut body) = sent();
        data(&tx, b"a");
        data(&tx, b"b");
        let mut t = http::HeaderMap::new();
        t.insert("x-checksum", HeaderValue::from_static("1"));
        tx.send(Ok(Frame::trailers(t))).unwrap();
        drop(tx);
        assert_eq!(&data_of(poll_once(&mut body))[..], b"ab");
        assert!(!body.is_end_stream(), "the trailers are still to come");
        let trailers = data_or_trailers(poll_once(&mut body)).unwrap_err();
        assert_eq!(trailers.get("x-checksum").unwrap(), "1");
        assert!(matches!(poll_once(&mut body), Poll::Ready(None)));

        // An error, after the frames before it.
        let (tx, mut body) = sent();
        data(&tx, b"a");
        tx.send(Err("upstream reset".into())).unwrap();
        assert_eq!(&data_of(poll_once(&mut body))[..], b"a");
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Err(_)))));

        // The end, after the frames before it.
        let (tx, mut body) = sent();
        data(&tx, b"a");
        drop(tx);
        assert_eq!(&data_of(poll_once(&mut body))[..], b"a");
        assert!(matches!(poll_once(&mut body), Poll::Ready(None)));
    }

    fn data_or_trailers(
        polled: Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    ) -> Result<Bytes, http::HeaderMap> {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                frame.into_data().map_err(|f| f.into_trailers().unwrap())
            }
            _ => panic!("not a frame"),
        }
    }

    #[tokio::test]
    async fn the_last_frame_of_a_body_that_says_it_ended_is_not_held() {
        // hyper writes it with the end of the message and never polls again.
        let full = http_body_util::Full::new(Bytes::from_static(b"done"));
        let mut body = Box::pin(Gather::new(full));
        assert_eq!(body.size_hint().exact(), Some(4));
        assert_eq!(&data_of(poll_once(&mut body))[..], b"done");
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn the_size_counts_what_is_held_and_what_follows_it() {
        // A body of known length: 2 small frames, then a large one.
        let (tx, rest) = channel();
        let large = Bytes::from(vec![b'L'; GATHER_FRAME]);
        let known = 2 + GATHER_FRAME as u64;
        let sized = Counted { rest, left: known };
        let mut body = Box::pin(Gather::new(sized));
        assert_eq!(body.size_hint().exact(), Some(known));
        data(&tx, b"a");
        data(&tx, b"b");
        tx.send(Ok(Frame::data(large))).unwrap();
        assert_eq!(&data_of(poll_once(&mut body))[..], b"ab");
        assert_eq!(body.size_hint().exact(), Some(GATHER_FRAME as u64));
    }

    /// A [`Sent`] body that knows how many bytes it has left.
    struct Counted {
        rest: Sent,
        left: u64,
    }

    impl Body for Counted {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let polled = Pin::new(&mut self.rest).poll_frame(cx);
            if let Poll::Ready(Some(Ok(frame))) = &polled {
                let n = frame.data_ref().map_or(0, Bytes::len) as u64;
                self.left -= n;
            }
            polled
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.left)
        }
    }

    /// Through a real hyper HTTP/1 server: the polling Gather relies on,
    /// pinned, and what it does with it.
    mod under_hyper {
        use super::*;
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        use hyper_util::rt::TokioIo;
        use tokio::io::{
            AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf,
        };

        /// A body handed over one frame at a time through a one-slot
        /// channel, as hyper's client hands over an upstream's body.
        struct Recv(tokio::sync::mpsc::Receiver<Bytes>);

        impl Body for Recv {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
            }
        }

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Polled {
            Pending,
            Data,
            End,
        }

        /// A body that notes each poll: in which turn of the connection's
        /// task (how many times its future had been polled), and what it
        /// gave. It never wakes itself.
        struct Noted {
            inner: Recv,
            turn: Arc<AtomicUsize>,
            log: Arc<Mutex<Vec<(usize, Polled)>>>,
        }

        impl Body for Noted {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                let polled = Pin::new(&mut self.inner).poll_frame(cx);
                let noted = match &polled {
                    Poll::Pending => Polled::Pending,
                    Poll::Ready(Some(_)) => Polled::Data,
                    Poll::Ready(None) => Polled::End,
                };
                let turn = self.turn.load(Ordering::Relaxed);
                self.log.lock().unwrap().push((turn, noted));
                polled
            }
        }

        /// The server's end of the connection, its writes counted.
        struct Counted {
            io: DuplexStream,
            writes: Arc<AtomicUsize>,
        }

        impl Counted {
            fn count(&self, written: &Poll<std::io::Result<usize>>) {
                if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
                    self.writes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        impl AsyncRead for Counted {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.io).poll_read(cx, buf)
            }
        }

        impl AsyncWrite for Counted {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                let written = Pin::new(&mut self.io).poll_write(cx, buf);
                self.count(&written);
                written
            }
            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
                self.count(&written);
                written
            }
            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }
            fn poll_flush(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.io).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.io).poll_shutdown(cx)
            }
        }

        /// Serves one response with `body` from a hyper HTTP/1 server
        /// connection on a task of its own, counting the turns of that task
        /// and the connection's writes; the client's end, request sent.
        async fn serve<B>(body: B, turn: Arc<AtomicUsize>, writes: Arc<AtomicUsize>) -> DuplexStream
        where
            B: Body<Data = Bytes> + Send + 'static,
            B::Error: Into<BoxError>,
        {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let body = Mutex::new(Some(body));
            let service = hyper::service::service_fn(move |_req| {
                let body = body.lock().unwrap().take().unwrap();
                async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
            });
            let io = TokioIo::new(Counted { io: server, writes });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            tokio::spawn(async move {
                let mut conn = std::pin::pin!(conn);
                std::future::poll_fn(|cx| {
                    turn.fetch_add(1, Ordering::Relaxed);
                    conn.as_mut().poll(cx)
                })
                .await
            });
            client
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            client
        }

        /// Reads until `marker` appears after `from`; returns where it ends.
        /// On this one-thread runtime, the server's task has finished the
        /// turn that wrote it by the time the client reads it.
        async fn read_until(
            client: &mut DuplexStream,
            got: &mut Vec<u8>,
            from: usize,
            marker: &[u8],
        ) -> usize {
            loop {
                if let Some(at) = memchr::memmem::find(&got[from..], marker) {
                    return from + at + marker.len();
                }
                let n = client.read_buf(got).await.unwrap();
                assert!(
                    n > 0,
                    "the server closed: {:?}",
                    String::from_utf8_lossy(got)
                );
            }
        }

        /// What hyper's server did with the body, turn by turn.
        fn by_turn(log: &Mutex<Vec<(usize, Polled)>>) -> Vec<Vec<Polled>> {
            let mut turns: Vec<(usize, Vec<Polled>)> = Vec::new();
            for &(turn, polled) in log.lock().unwrap().iter() {
                match turns.last_mut() {
                    Some((t, polls)) if *t == turn => polls.push(polled),
                    _ => turns.push((turn, vec![polled])),
                }
            }
            turns.into_iter().map(|(_, polls)| polls).collect()
        }

        /// GATHER_POLLS is two because hyper's HTTP/1 server polls a pending
        /// body twice in one turn of its task, then yields (`poll_loop`
        /// checks a pending write once more). Should a hyper upgrade poll it
        /// once, Gather waits two turns (slower); three times or more,
        /// Gather never yields to the task that reads the upstream, and
        /// gathers nothing: this test fails, and GATHER_POLLS is to be
        /// measured again (docs/performance.md, issue 16).
        #[tokio::test]
        async fn hyper_polls_a_pending_body_twice_a_turn() {
            use Polled::*;
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let turn = Arc::new(AtomicUsize::new(0));
            let log = Arc::new(Mutex::new(Vec::new()));
            let body = Noted {
                inner: Recv(rx),
                turn: Arc::clone(&turn),
                log: Arc::clone(&log),
            };
            let mut client = serve(body, turn, Arc::default()).await;
            let mut got = Vec::new();
            // The head, written in the turn that first polled the body.
            let at = read_until(&mut client, &mut got, 0, b"\r\n\r\n").await;
            tx.send(Bytes::from_static(b"event")).await.unwrap();
            let at = read_until(&mut client, &mut got, at, b"event\r\n").await;
            drop(tx);
            read_until(&mut client, &mut got, at, b"0\r\n\r\n").await;
            assert_eq!(
                by_turn(&log),
                [
                    vec![Pending, Pending],
                    vec![Data, Pending, Pending],
                    vec![End]
                ],
                "how hyper's server polls a body has changed: see GATHER_POLLS"
            );
        }

        /// The server's writes for a burst of `n` small events that the
        /// upstream's task hands over one at a time, each as soon as the
        /// last is taken; and the events as the client got them.
        async fn burst(n: usize, gathered: bool) -> (usize, Vec<u8>) {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let body = if gathered {
                http_body_util::Either::Left(Gather::new(Recv(rx)))
            } else {
                http_body_util::Either::Right(Recv(rx))
            };
            let writes = Arc::new(AtomicUsize::new(0));
            let mut client = serve(body, Arc::default(), Arc::clone(&writes)).await;
            let mut got = Vec::new();
            let head = read_until(&mut client, &mut got, 0, b"\r\n\r\n").await;
            let before = writes.load(Ordering::Relaxed);
            let upstream = tokio::spawn(async move {
                for i in 0..n {
                    tx.send(Bytes::from(format!("data: {i}\n\n")))
                        .await
                        .unwrap();
                }
            });
            read_until(&mut client, &mut got, head, b"\r\n0\r\n\r\n").await;
            upstream.await.unwrap();
            (writes.load(Ordering::Relaxed) - before, got.split_off(head))
        }

        /// The events, in order, from a chunked body.
        fn events(mut chunked: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            loop {
                let line = memchr::memmem::find(chunked, b"\r\n").unwrap();
                let size = std::str::from_utf8(&chunked[..line]).unwrap();
                let size = usize::from_str_radix(size, 16).unwrap();
                if size == 0 {
                    return out;
                }
                out.extend_from_slice(&chunked[line + 2..line + 2 + size]);
                chunked = &chunked[line + 2 + size + 2..];
            }
        }

        #[tokio::test]
        async fn a_burst_of_small_frames_leaves_in_one_write() {
            let n = 16;
            let want: Vec<u8> = (0..n)
                .flat_map(|i| format!("data: {i}\n\n").into_bytes())
                .collect();
            let (alone, sent) = burst(n, false).await;
            assert_eq!(events(&sent), want);
            let (gathered, sent) = burst(n, true).await;
            assert_eq!(events(&sent), want);
            assert_eq!(
                alone, n,
                "without Gather: a write an event (the end with the last)"
            );
            assert_eq!(
                gathered, 1,
                "with Gather: the burst and the end in one write"
            );
        }
    }
}
