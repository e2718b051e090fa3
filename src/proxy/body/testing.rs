//! Bodies the response side's tests drive by hand.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::BoxError;

/// A response body fed by the test: frames, trailers or an error, as sent.
pub(super) struct Sent(tokio::sync::mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>);

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

pub(super) type Sender = tokio::sync::mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>;

/// A [`Sent`] body and what feeds it.
pub(super) fn channel() -> (Sender, Sent) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (tx, Sent(rx))
}

pub(super) fn data(tx: &Sender, b: &'static [u8]) {
    tx.send(Ok(Frame::data(Bytes::from_static(b)))).unwrap();
}

/// What one poll of a `B` gives.
pub(super) type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// One poll, by a task nobody wakes.
pub(super) fn poll_once<B: Body>(body: &mut Pin<Box<B>>) -> Polled<B> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    body.as_mut().poll_frame(&mut cx)
}

pub(super) fn data_of<E>(polled: Poll<Option<Result<Frame<Bytes>, E>>>) -> Bytes {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
        other => panic!(
            "not a data frame: {:?}",
            other.map(|f| f.map(|f| f.is_ok()))
        ),
    }
}
