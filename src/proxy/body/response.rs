//! The response body: [`ByokBody`], the proxy's own bytes, or the
//! upstream's stream through the wrappers of this folder, composed here.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::gather::Gather;
use super::idle::Idle;
use super::replay::Replay;
use super::shape::{Shape, Shaping};
use super::tap::Tap;
use crate::proxy::usage::Accounting;
use crate::BoxError;

/// The upstream's body as it leaves the proxy, outermost first:
///
/// - [`Replay`]: bytes a peek already read go first, alone and at once:
///   outside Gather, which never holds them. Being outside the tap too, the
///   tap reads them when it is attached (see [`ByokBody::with_usage`]).
/// - [`Gather`]: outermost over the upstream's frames, and over the tap, so
///   that a frame held is one the tap has read (a client gone while frames
///   are held is counted with them).
/// - [`Tap`]: over the idle timeout, so that the tap sees every frame the
///   upstream gave, and a body cut for idling is counted when dropped.
/// - [`Shape`]: the one endpoint's edit of a JSON answer (or none), under
///   the tap, so that the tap reads what the client gets.
/// - [`Idle`]: around the upstream alone: its silences are what it bounds.
type Upstream<B> = Replay<Gather<Tap<Shape<Idle<B>>>>>;

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
            body: Upstream<B>,
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
        Self::shaped(head, body, idle_timeout, Shaping::Plain)
    }

    /// [`ByokBody::upstream_after`], the upstream's body shaped as
    /// `shaping` says.
    pub(crate) fn shaped(
        head: Option<Bytes>,
        body: B,
        idle_timeout: Duration,
        shaping: Shaping,
    ) -> Self {
        let body = Shape::new(Idle::new(body, idle_timeout), shaping);
        ByokBody {
            kind: Kind::Upstream {
                body: Replay::new(head, Gather::new(Tap::new(body))),
            },
        }
    }

    /// Reads the provider's usage report from the body as it streams, and
    /// counts it when the body ends.
    pub(crate) fn with_usage(mut self, mut accounting: Accounting) -> Self {
        if let Kind::Upstream { body } = &mut self.kind {
            // The bytes read ahead are the body's first, and Replay gives
            // them outside the tap: the tap reads them now, before the rest.
            if let Some(head) = body.head() {
                accounting.tap.feed(head);
            }
            body.get_mut().get_mut().count(accounting);
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
            KindProj::Upstream { body } => {
                let mut next = std::task::ready!(body.poll_frame(cx));
                if let Some(trailers) = next
                    .as_mut()
                    .and_then(|f| f.as_mut().ok())
                    .and_then(Frame::trailers_mut)
                {
                    // Trailers are headers too: no credential in them. Here,
                    // on the way out (the wrappers pass trailers untouched).
                    crate::proxy::headers::strip_credentials(trailers);
                }
                Poll::Ready(next)
            }
            KindProj::Own { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Own { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Own { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::testing::{channel, data, data_of, poll_once, Sent};
    use crate::proxy::body::IdleTimeout;
    use http::HeaderValue;
    use http_body_util::BodyExt;

    const STALL: Duration = Duration::from_secs(60);

    fn sent() -> (
        crate::proxy::body::testing::Sender,
        Pin<Box<ByokBody<Sent>>>,
    ) {
        let (tx, body) = channel();
        (tx, Box::pin(ByokBody::upstream(body, STALL)))
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

    #[tokio::test(start_paused = true)]
    async fn the_upstream_is_cut_when_idle_and_the_proxys_own_body_never() {
        let (tx, body) = channel();
        let started = tokio::time::Instant::now();
        let mut body = std::pin::pin!(ByokBody::upstream(body, Duration::from_millis(100)));
        data(&tx, b"a");
        assert_eq!(
            &body.frame().await.unwrap().unwrap().into_data().unwrap()[..],
            b"a"
        );
        let end = body.frame().await;
        assert!(matches!(end, Some(Err(e)) if e.is::<IdleTimeout>()));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        drop(tx);

        let own = ByokBody::<Sent>::full(Bytes::from_static(b"{}"));
        assert_eq!(own.size_hint().exact(), Some(2));
        assert_eq!(&own.collect().await.unwrap().to_bytes()[..], b"{}");
        let empty = ByokBody::<Sent>::from(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn usage_reads_the_head_and_every_frame_gathered_or_not() {
        use crate::ledger::Ledger;
        use std::sync::Arc;
        let ledger = Arc::new(Ledger::default());
        let (tx, body) = channel();
        let head = Bytes::from_static(b"data: {\"usage\":{\"prompt_tokens\":3}}\n\n");
        let body = ByokBody::upstream_after(Some(head.clone()), body, STALL)
            .with_usage(Accounting::for_tests(b"text/event-stream", &ledger));
        let mut body = Box::pin(body);
        assert_eq!(
            data_of(poll_once(&mut body)),
            head,
            "the head, alone, first"
        );
        data(&tx, b"data: {\"usage\":{\"completion_tokens\":5}}\n\n");
        // Held, not sent: the client goes away now.
        assert!(poll_once(&mut body).is_pending());
        drop(body);
        let mut all = Vec::new();
        ledger.drain(|_, sums| all.push(*sums));
        assert_eq!((all[0].requests, all[0].input, all[0].output), (1, 3, 5));
    }
}
