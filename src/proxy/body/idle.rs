//! The upstream's silences, bounded: [`Idle`] fails a body with
//! [`IdleTimeout`] when no frame comes for its duration.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::BoxError;

/// The upstream body went silent for longer than `server.idle_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for longer than the idle timeout")]
pub struct IdleTimeout;

pin_project! {
    /// A body that fails with [`IdleTimeout`] once `inner` has given no
    /// frame for `timeout` (counted from the last frame, or from the start).
    #[derive(Debug)]
    pub(crate) struct Idle<B> {
        #[pin]
        inner: B,
        // Armed for the first silence; re-armed only when it fires early,
        // so a frame costs no timer operation (see poll_frame).
        #[pin]
        sleep: Sleep,
        timeout: Duration,
        last_frame: Instant,
    }
}

impl<B> Idle<B> {
    /// `inner`, failed when it is silent for `timeout`.
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        Idle {
            inner,
            sleep: tokio::time::sleep(timeout),
            timeout,
            last_frame: Instant::now(),
        }
    }
}

impl<B> Body for Idle<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Only noted: the timer is not touched per frame.
                *this.last_frame = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            // A body that is never Pending never registers a timer.
            Poll::Pending => loop {
                match this.sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => {
                        let due = *this.last_frame + *this.timeout;
                        if Instant::now() >= due {
                            return Poll::Ready(Some(Err(Box::new(IdleTimeout))));
                        }
                        // A frame came since it was armed: re-arm from it.
                        this.sleep.as_mut().reset(due);
                    }
                }
            },
        }
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
    use bytes::Bytes;
    use http_body_util::BodyExt;

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

    fn trickle(frames: u32, gap: Duration) -> Trickle {
        Trickle {
            frames,
            gap,
            next: Box::pin(tokio::time::sleep(gap)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_counts_from_the_last_frame() {
        // Frames every 80 ms for 400 ms, with a 100 ms idle timeout: never
        // idle while they come, cut 100 ms after the last one.
        let gap = Duration::from_millis(80);
        let started = Instant::now();
        let mut body = std::pin::pin!(Idle::new(trickle(5, gap), Duration::from_millis(100)));
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

    #[tokio::test(start_paused = true)]
    async fn a_body_silent_from_the_start_is_cut_after_the_timeout() {
        let started = Instant::now();
        let silent = trickle(0, Duration::from_secs(1));
        let mut body = std::pin::pin!(Idle::new(silent, Duration::from_millis(250)));
        let end = body.frame().await;
        assert!(matches!(end, Some(Err(e)) if e.is::<IdleTimeout>()));
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_up_is_passed_through_as_it_is() {
        // A body that never waits passes as it is, with its own size and
        // end, however short the timeout.
        let full = http_body_util::Full::new(Bytes::from_static(b"abc"));
        let body = Idle::new(full, Duration::from_millis(1));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        let mut body = std::pin::pin!(body);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reset")]
    struct Reset;

    /// A body that fails at once.
    struct Broken;

    impl Body for Broken {
        type Data = Bytes;
        type Error = Reset;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Reset>>> {
            Poll::Ready(Some(Err(Reset)))
        }
    }

    #[tokio::test]
    async fn the_upstream_error_passes_boxed() {
        let mut body = std::pin::pin!(Idle::new(Broken, Duration::from_secs(60)));
        let end = body.frame().await;
        assert!(
            matches!(end, Some(Err(e)) if e.is::<Reset>()),
            "the inner error, not a timeout"
        );
    }
}
