//! Bytes already read from a body, relayed first: [`Replay`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A body that gives `head` (read from `inner` already, to classify an
    /// error answer), as one frame, before the rest of `inner`.
    #[derive(Debug)]
    pub(crate) struct Replay<B> {
        head: Option<Bytes>,
        #[pin]
        inner: B,
    }
}

impl<B> Replay<B> {
    /// `head`, then the rest of `inner`.
    pub(crate) fn new(head: Option<Bytes>, inner: B) -> Self {
        Replay {
            head: head.filter(|h| !h.is_empty()),
            inner,
        }
    }

    /// The bytes still to be relayed first.
    pub(crate) fn head(&self) -> Option<&Bytes> {
        self.head.as_ref()
    }

    /// The body inside.
    pub(crate) fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B> Body for Replay<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.head.take() {
            Some(read) => Poll::Ready(Some(Ok(Frame::data(read)))),
            None => this.inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read = self.head.as_ref().map_or(0, Bytes::len) as u64;
        super::plus(self.inner.size_hint(), read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_head_goes_first_and_counts_in_the_size() {
        let rest = http_body_util::Full::new(Bytes::from_static(b"cd"));
        let body = Replay::new(Some(Bytes::from_static(b"ab")), rest);
        assert_eq!(body.size_hint().exact(), Some(4));
        assert!(!body.is_end_stream());
        let mut body = std::pin::pin!(body);
        let head = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&head[..], b"ab", "as one frame, alone");
        assert_eq!(body.size_hint().exact(), Some(2));
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"cd");
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_its_head() {
        let ended = http_body_util::Empty::<Bytes>::new();
        let mut body = std::pin::pin!(Replay::new(Some(Bytes::from_static(b"ab")), ended));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert!(!body.is_end_stream());
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert!(body.is_end_stream(), "ended with its head");
        // Nothing read ahead (or nothing at all): the body as it is.
        let body = Replay::new(Some(Bytes::new()), http_body_util::Empty::<Bytes>::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }
}
