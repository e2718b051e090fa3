//! The usage report, read as the body goes by: [`Tap`] feeds each data
//! frame to the response's [`Accounting`], which counts when the body ends,
//! or when it is dropped unfinished (its `Drop`: a client that goes away
//! mid-stream is counted with what was read by then).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::proxy::usage::Accounting;

pin_project! {
    /// A body whose data frames its [`Accounting`], if it has one, reads as
    /// they pass; they pass unchanged.
    #[derive(Debug)]
    pub(crate) struct Tap<B> {
        #[pin]
        inner: B,
        // Boxed: most bodies of the layer alone carry none. Taken when
        // counted, so a body is counted once.
        usage: Option<Box<Accounting>>,
    }
}

impl<B> Tap<B> {
    /// `inner`, counted by nobody until [`Tap::count`].
    pub(crate) fn new(inner: B) -> Self {
        Tap { inner, usage: None }
    }

    /// Counts what passes from now on with `accounting`.
    pub(crate) fn count(&mut self, accounting: Accounting) {
        self.usage = Some(Box::new(accounting));
    }
}

impl<B> Body for Tap<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let next = ready!(this.inner.as_mut().poll_frame(cx));
        match &next {
            Some(Ok(frame)) => {
                if let (Some(_), Some(data)) = (this.usage.as_ref(), frame.data_ref()) {
                    // hyper stops polling a body that says it has ended (all
                    // of a Content-Length read): count it with its last
                    // frame, read where it lies.
                    if this.inner.is_end_stream() {
                        if let Some(acc) = this.usage.take() {
                            acc.finish_with(data);
                        }
                    } else if let Some(acc) = this.usage.as_mut() {
                        acc.tap.feed(data);
                    }
                }
            }
            None => {
                if let Some(acc) = this.usage.take() {
                    acc.finish();
                }
            }
            // Counted when dropped, with what was read.
            Some(Err(_)) => {}
        }
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use crate::ledger::{Ledger, Sums};
    use crate::proxy::body::testing::poll_once;

    /// A body that yields these chunks, in order, never waiting; it says it
    /// has ended when the last is taken if `says_end`.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        says_end: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.chunks.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn is_end_stream(&self) -> bool {
            self.says_end && self.chunks.is_empty()
        }
    }

    fn chunks(parts: &[&'static str], says_end: bool) -> Chunks {
        Chunks {
            chunks: parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            says_end,
        }
    }

    fn counted<B>(inner: B, ct: &str, ledger: &Arc<Ledger>) -> Pin<Box<Tap<B>>> {
        let mut tap = Tap::new(inner);
        tap.count(Accounting::for_tests(ct.as_bytes(), ledger));
        Box::pin(tap)
    }

    fn sums(ledger: &Ledger) -> Vec<Sums> {
        let mut all = Vec::new();
        ledger.drain(|_, sums| all.push(*sums));
        all
    }

    const SSE: [&str; 3] = [
        "data: {\"choices\":[]}\n\ndata: {\"usage\":{\"prompt",
        "_tokens\":3,\"completion_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    ];

    #[tokio::test]
    async fn every_frame_is_read_and_the_body_counted_once_at_its_end() {
        let ledger = Arc::new(Ledger::default());
        let mut body = counted(chunks(&SSE, false), "text/event-stream", &ledger);
        let mut out = Vec::new();
        while let Poll::Ready(Some(frame)) = poll_once(&mut body) {
            out.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(out, SSE, "the frames pass as they came");
        let all = sums(&ledger);
        assert_eq!(all.len(), 1);
        let s = all[0];
        assert_eq!((s.requests, s.input, s.output, s.estimated), (1, 3, 5, 0));
        drop(body);
        assert!(
            sums(&ledger).is_empty(),
            "counted once, not again when dropped"
        );
    }

    #[tokio::test]
    async fn a_body_that_says_it_ended_is_counted_with_its_last_frame() {
        // hyper never polls such a body again: counted without the `None`.
        let ledger = Arc::new(Ledger::default());
        let json = [
            "{\"usage\":{\"prompt_tokens\":2,",
            "\"completion_tokens\":4}}",
        ];
        let mut body = counted(chunks(&json, true), "application/json", &ledger);
        assert!(poll_once(&mut body).is_ready());
        assert!(sums(&ledger).is_empty(), "not before its last frame");
        assert!(poll_once(&mut body).is_ready());
        assert!(body.is_end_stream());
        let s = sums(&ledger)[0];
        assert_eq!((s.requests, s.input, s.output), (1, 2, 4));
        drop(body);
        assert!(sums(&ledger).is_empty());
    }

    #[tokio::test]
    async fn a_body_dropped_mid_stream_is_counted_with_what_was_read() {
        let ledger = Arc::new(Ledger::default());
        let parts = ["data: {\"x\":1}\n\n....", "never read"];
        let mut body = counted(chunks(&parts, false), "text/event-stream", &ledger);
        assert!(poll_once(&mut body).is_ready());
        assert!(sums(&ledger).is_empty());
        drop(body); // the client went away
        let s = sums(&ledger)[0];
        // No report: estimated from the 19 bytes read, four a token.
        assert_eq!((s.requests, s.output, s.estimated), (1, 5, 1));
    }

    #[tokio::test]
    async fn without_accounting_the_body_passes_untouched() {
        let full = http_body_util::Full::new(Bytes::from_static(b"abc"));
        let body = Tap::new(full);
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abc");
    }
}
