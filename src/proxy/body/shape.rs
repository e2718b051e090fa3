//! The one endpoint's answers shaped for its client (SPEC §11): a JSON
//! answer's top-level `model` made the slug the client asked for (and on
//! chat completions, a `provider` member naming who served it), or
//! Bedrock's event stream turned into Anthropic's server-sent events as it
//! arrives ([`eventstream`](super::eventstream)). Any other answer passes
//! as it came.
//!
//! A JSON answer is held whole to be edited, up to [`MAX_EDITED`]: past
//! that, what was held goes out as it came and the rest streams through.
//! The edit touches those two members alone, every other byte as the
//! provider sent it.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::eventstream::{to_sse, EventStreamSse};
use crate::proxy::one::edit;
use crate::BoxError;

/// What a JSON answer's edit holds: its first frame as it came (most
/// answers are one frame: no copy), the frames joined once there are more.
#[derive(Debug, Default)]
struct Held {
    first: Option<Bytes>,
    joined: BytesMut,
}

impl Held {
    fn push(&mut self, data: Bytes) {
        if self.first.is_none() && self.joined.is_empty() {
            self.first = Some(data);
            return;
        }
        if let Some(first) = self.first.take() {
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(&data);
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.joined.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything held, which is held no more.
    fn take(&mut self) -> Bytes {
        self.first
            .take()
            .unwrap_or_else(|| self.joined.split().freeze())
    }
}

/// The largest JSON answer edited; a larger one is relayed as it came.
const MAX_EDITED: usize = 2 * 1024 * 1024;

/// What a JSON answer's edit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonEdit {
    /// `model`'s new value, a JSON string, where the answer has a `model`.
    pub(crate) model: Vec<u8>,
    /// `provider`'s value, a JSON string, where the format has one (chat
    /// completions, whose answers also get `"system_fingerprint": null`
    /// where the provider sent none: OpenRouter's SDK requires the member).
    pub(crate) provider: Option<Vec<u8>>,
}

impl JsonEdit {
    /// `body` edited, or `None` when it is not a JSON object.
    fn apply(&self, body: &[u8]) -> Option<Bytes> {
        let members = edit::members(body)?;
        let has = |key: &str| members.iter().any(|m| m.key == key);
        let mut set: Vec<(&str, &[u8])> = Vec::with_capacity(3);
        // Where the answer names its model (a token count does not).
        if has("model") {
            set.push(("model", &self.model));
        }
        if let Some(provider) = &self.provider {
            set.push(("provider", provider));
            if !has("system_fingerprint") {
                set.push(("system_fingerprint", b"null"));
            }
        }
        edit::edit(body, &members, &set, &[])
    }
}

/// How an answer is shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shaping {
    /// As it came.
    Plain,
    /// A JSON answer, edited.
    Json(JsonEdit),
    /// Bedrock's event stream, as Anthropic's server-sent events.
    EventStream,
}

pin_project! {
    /// An answer on its way out, shaped as its [`Shaping`] says. The
    /// shaping states are boxed: an answer passed as it came (every answer
    /// of the provider routes) is its body and a tag.
    #[project = ShapeProj]
    #[derive(Debug)]
    pub(crate) enum Shape<B> {
        /// As it came.
        Plain {
            #[pin]
            inner: B,
        },
        /// A JSON answer held and edited.
        Edited {
            #[pin]
            inner: B,
            state: Box<Editing>,
        },
        /// Bedrock's event stream converted, frame by frame.
        Converted {
            inner: Pin<Box<EventStreamSse<B>>>,
        },
    }
}

/// A JSON answer's edit under way.
#[derive(Debug)]
pub(crate) struct Editing {
    /// The edit, until it is made (or given up).
    edit: Option<JsonEdit>,
    held: Held,
    /// Trailers that came after a held body: sent after it.
    trailers: Option<http::HeaderMap>,
    /// The inner body has ended (the held part still to go).
    ended: bool,
}

impl<B> Shape<B> {
    /// `inner`, shaped as `shaping` says.
    pub(crate) fn new(inner: B, shaping: Shaping) -> Self {
        match shaping {
            Shaping::Plain => Shape::Plain { inner },
            Shaping::Json(edit) => Shape::Edited {
                inner,
                state: Box::new(Editing {
                    edit: Some(edit),
                    held: Held::default(),
                    trailers: None,
                    ended: false,
                }),
            },
            Shaping::EventStream => Shape::Converted {
                inner: Box::pin(to_sse(inner)),
            },
        }
    }
}

impl<B> Body for Shape<B>
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
        match self.project() {
            ShapeProj::Plain { inner } => inner.poll_frame(cx).map_err(Into::into),
            ShapeProj::Edited { inner, state } => state.poll_frame(inner, cx),
            ShapeProj::Converted { inner } => inner.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Shape::Plain { inner } => inner.is_end_stream(),
            Shape::Edited { inner, state } => {
                state.edit.is_none()
                    && state.held.is_empty()
                    && state.trailers.is_none()
                    && (state.ended || inner.is_end_stream())
            }
            Shape::Converted { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Shape::Plain { inner } => inner.size_hint(),
            Shape::Edited { inner, state } => {
                if state.edit.is_some() {
                    return SizeHint::default();
                }
                super::plus(inner.size_hint(), state.held.len() as u64)
            }
            Shape::Converted { inner } => inner.size_hint(),
        }
    }
}

impl Editing {
    /// The next frame of `inner`, edited: everything held until the body
    /// ends (then edited and sent as one frame), or until it is too large
    /// (then sent as it came, and the rest after it).
    fn poll_frame<B>(
        &mut self,
        mut inner: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let Some(json) = self.edit.as_ref() else {
            // Past the edit: what is held, then as it comes.
            if !self.held.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(self.held.take()))));
            }
            if let Some(trailers) = self.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            return inner.poll_frame(cx).map_err(Into::into);
        };
        while !self.ended {
            match ready!(inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.held.push(data);
                        if self.held.len() > MAX_EDITED {
                            // Too large to hold: the rest as it comes.
                            self.edit = None;
                            return Poll::Ready(Some(Ok(Frame::data(self.held.take()))));
                        }
                    }
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok();
                        self.ended = true;
                    }
                },
                Some(Err(e)) => {
                    self.edit = None;
                    self.held = Held::default();
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => self.ended = true,
            }
        }
        let held = self.held.take();
        let out = json.apply(&held).unwrap_or(held);
        self.edit = None;
        if out.is_empty() {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        Poll::Ready(Some(Ok(Frame::data(out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::testing::{channel, data};
    use http_body_util::{BodyExt, Full};

    fn edit(provider: bool) -> Shaping {
        Shaping::Json(JsonEdit {
            model: br#""anthropic/claude-sonnet-4""#.to_vec(),
            provider: provider.then(|| br#""Amazon Bedrock""#.to_vec()),
        })
    }

    async fn shaped(chunks: &[&'static [u8]], shaping: Shaping) -> Bytes {
        let (tx, body) = channel();
        for c in chunks {
            data(&tx, c);
        }
        drop(tx);
        Shape::new(body, shaping)
            .collect()
            .await
            .unwrap()
            .to_bytes()
    }

    #[tokio::test]
    async fn a_json_answer_gets_the_slug_and_the_provider_every_other_byte_kept() {
        let out = shaped(
            &[
                b"{\"id\":\"msg_1\",  \"model\": \"anthropic.claude-x-v1:0\",",
                b"\"usage\":{\"input_tokens\":1}}",
            ],
            edit(true),
        )
        .await;
        assert_eq!(
            &out[..],
            &b"{\"provider\":\"Amazon Bedrock\",\"system_fingerprint\":null,\"id\":\"msg_1\",  \"model\": \"anthropic/claude-sonnet-4\",\"usage\":{\"input_tokens\":1}}"[..]
        );
        let out = shaped(&[b"{\"model\":\"m\"}"], edit(false)).await;
        assert_eq!(&out[..], b"{\"model\":\"anthropic/claude-sonnet-4\"}");
        // A fingerprint the provider sent stays.
        let out = shaped(
            &[b"{\"model\":\"m\",\"system_fingerprint\":\"fp_1\"}"],
            edit(true),
        )
        .await;
        assert_eq!(
            &out[..],
            &b"{\"provider\":\"Amazon Bedrock\",\"model\":\"anthropic/claude-sonnet-4\",\"system_fingerprint\":\"fp_1\"}"[..]
        );
    }

    #[tokio::test]
    async fn what_is_not_a_json_object_or_is_plain_passes_as_it_came() {
        for body in [&b"[1,2]"[..], b"not json", b""] {
            let out = shaped(&[body], edit(true)).await;
            assert_eq!(&out[..], body);
        }
        let out = shaped(&[b"{\"model\":", b"\"m\"}"], Shaping::Plain).await;
        assert_eq!(&out[..], b"{\"model\":\"m\"}");
    }

    #[tokio::test]
    async fn a_json_answer_too_large_to_hold_streams_as_it_came() {
        let big = vec![b' '; MAX_EDITED + 1];
        let input = Bytes::from([&b"{\"model\":\"m\","[..], &big, b"\"a\":1}"].concat());
        let out = Shape::new(Full::new(input.clone()), edit(true))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert!(out == input, "relayed as it came");
    }
}
