//! A response with its body read to the end, whoever sent it: the real binary
//! through a socket or the layer in process.

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::Body;
use http_body_util::BodyExt;

/// A response as the client got it, body read to the end.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Resp {
    /// A response from its head and its body, already read.
    pub(crate) fn new(head: http::response::Parts, body: Bytes) -> Resp {
        Resp {
            status: head.status.as_u16(),
            headers: head.headers,
            body,
        }
    }

    /// The body as JSON; panics if it is not JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// `error.metadata.reason` of the proxy's own error body; panics if there
    /// is none.
    pub(crate) fn reason(&self) -> String {
        self.json()["error"]["metadata"]["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("no reason in {:?}", self.text()))
            .to_owned()
    }

    /// `error.message` of the proxy's own error body.
    pub(crate) fn message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap().to_owned()
    }

    /// A header's value; panics if it is not visible ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| {
            v.to_str()
                .unwrap_or_else(|_| panic!("{name} is not visible ASCII: {v:?}"))
        })
    }

    /// The body as text (invalid UTF-8 replaced).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The response with its body read to the end; panics if the body fails.
pub(crate) async fn collect<B>(res: Response<B>) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let (head, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .expect("the response body is readable")
        .to_bytes();
    Resp::new(head, body)
}
