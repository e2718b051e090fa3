//! Reading the provider's usage report from a response as it streams past
//! (SPEC §8), without holding the body back or changing a byte: a server-
//! sent event stream is scanned line by line for `data:` lines that carry a
//! usage object; a JSON body keeps only its last [`TAIL`] bytes, read at the
//! end. Every provider family reports the same four counts under its own
//! names; the largest seen of each wins (every stream reports running
//! totals).

use std::sync::Arc;

use memchr::memmem;
use serde::Deserialize;

use crate::config::Price;
use crate::ledger::{self, Entry, KeyBook, Ledger, Tokens};

/// How much of the end of a JSON body is kept to find its usage.
const TAIL: usize = 16 * 1024;
/// The longest SSE line kept whole; of a longer one, the last [`TAIL`]
/// bytes.
const MAX_LINE: usize = 64 * 1024;
/// The most tokens one response is counted for.
const MAX_TOKENS: u64 = 1_000_000_000_000;

/// Tokens a response reports, as the provider counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) cache_read: u64,
    pub(crate) cache_write: u64,
    /// Whether `input` counts the cached tokens too (OpenAI's and Google's
    /// reports; Anthropic's and Bedrock's count them apart).
    pub(crate) input_has_cache: bool,
}

impl Usage {
    /// The tokens to price: input without the cached part, each count at
    /// most [`MAX_TOKENS`] (a report beyond it is not a real one, and the
    /// stores' 64-bit sums must not overflow).
    pub(crate) fn tokens(&self) -> Tokens {
        let t = self.tokens_as_reported();
        Tokens {
            input: t.input.min(MAX_TOKENS),
            output: t.output.min(MAX_TOKENS),
            cache_read: t.cache_read.min(MAX_TOKENS),
            cache_write: t.cache_write.min(MAX_TOKENS),
        }
    }

    fn tokens_as_reported(&self) -> Tokens {
        let input = if self.input_has_cache {
            self.input.saturating_sub(self.cache_read)
        } else {
            self.input
        };
        Tokens {
            input,
            output: self.output,
            cache_read: self.cache_read,
            cache_write: self.cache_write,
        }
    }

    /// The larger of each count.
    fn merge(self, other: Usage) -> Usage {
        Usage {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cache_read: self.cache_read.max(other.cache_read),
            cache_write: self.cache_write.max(other.cache_write),
            input_has_cache: self.input_has_cache || other.input_has_cache,
        }
    }
}

/// One usage object, under any provider's names: OpenAI chat
/// (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`),
/// Responses and Anthropic (`input_tokens`, `output_tokens`,
/// `input_tokens_details.cached_tokens`, `cache_read_input_tokens`,
/// `cache_creation_input_tokens`), Google (`promptTokenCount`,
/// `candidatesTokenCount`, `thoughtsTokenCount`, billed as output,
/// `cachedContentTokenCount`), Bedrock (`inputTokens`, `outputTokens`,
/// `cacheReadInputTokens`, `cacheWriteInputTokens`). Read into fixed fields
/// (unknown ones skipped unread): no map is built.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    #[serde(rename = "prompt_tokens")]
    prompt: Option<u64>,
    #[serde(rename = "completion_tokens")]
    completion: Option<u64>,
    #[serde(rename = "input_tokens")]
    input_snake: Option<u64>,
    #[serde(rename = "output_tokens")]
    output_snake: Option<u64>,
    #[serde(rename = "prompt_tokens_details")]
    prompt_details: Option<Details>,
    #[serde(rename = "input_tokens_details")]
    input_details: Option<Details>,
    #[serde(rename = "cache_read_input_tokens")]
    cache_read_snake: Option<u64>,
    #[serde(rename = "cache_creation_input_tokens")]
    cache_creation_snake: Option<u64>,
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_write_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
}

impl Counts {
    /// The usage it reports; `None` for an object that names no count.
    fn usage(&self) -> Option<Usage> {
        let max = |v: &[Option<u64>]| v.iter().flatten().copied().max();
        let input = max(&[
            self.prompt,
            self.input_snake,
            self.prompt_token_count,
            self.input_tokens,
        ]);
        let output = max(&[
            self.completion,
            self.output_snake,
            self.candidates_token_count
                .map(|c| c.saturating_add(self.thoughts_token_count.unwrap_or(0))),
            self.output_tokens,
        ]);
        let cached_within = max(&[
            self.prompt_details.as_ref().and_then(|d| d.cached_tokens),
            self.input_details.as_ref().and_then(|d| d.cached_tokens),
            self.cached_content_token_count,
        ]);
        let cached_apart = max(&[self.cache_read_snake, self.cache_read_input_tokens]);
        let cache_write = max(&[self.cache_creation_snake, self.cache_write_input_tokens]);
        if [input, output, cached_within, cached_apart, cache_write]
            .iter()
            .all(Option::is_none)
        {
            return None;
        }
        Some(Usage {
            input: input.unwrap_or(0),
            output: output.unwrap_or(0),
            cache_read: cached_within.max(cached_apart).unwrap_or(0),
            cache_write: cache_write.unwrap_or(0),
            input_has_cache: cached_within.is_some_and(|c| c > 0),
        })
    }
}

/// `"usage`: the word every report's key starts with.
fn usage_word() -> &'static memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memmem::Finder::new(b"\"usage"))
}

/// What kind of body is being read.
#[derive(Debug)]
enum Reading {
    /// `text/event-stream`: the line being read (bytes since the last
    /// `\n`); `clipped` once it outgrew [`MAX_LINE`], when `line` holds
    /// only its last [`TAIL`] bytes (`Some(true)`: a `data:` line).
    Sse {
        line: Vec<u8>,
        clipped: Option<bool>,
    },
    /// JSON: the last [`TAIL`] bytes.
    Json { tail: Vec<u8> },
}

/// Reads one response's usage as its body goes by.
#[derive(Debug)]
pub(crate) struct UsageTap {
    reading: Reading,
    usage: Option<Usage>,
    /// Body bytes seen: what an unread report's output is estimated from.
    bytes: u64,
}

impl UsageTap {
    /// A tap for a response of `content_type`; `None` for a body that
    /// carries no usage report the proxy reads.
    pub(crate) fn for_content_type(ct: &[u8]) -> Option<UsageTap> {
        let starts = |prefix: &[u8]| {
            ct.len() >= prefix.len() && ct[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        let reading = if starts(b"text/event-stream") {
            Reading::Sse {
                line: Vec::new(),
                clipped: None,
            }
        } else if starts(b"application/json")
            || memmem::find(ct, b"+json").is_some()
            // Bedrock's ConverseStream: binary frames whose payloads are
            // JSON; its last event, `metadata`, carries the usage.
            || starts(b"application/vnd.amazon.eventstream")
        {
            Reading::Json { tail: Vec::new() }
        } else {
            return None;
        };
        Some(UsageTap {
            reading,
            usage: None,
            bytes: 0,
        })
    }

    /// Takes in the next bytes of the body.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        match &mut self.reading {
            Reading::Json { tail } => keep_tail(tail, chunk),
            Reading::Sse { line, clipped } => {
                let mut rest = chunk;
                // The line begun in an earlier chunk, completed here.
                if !line.is_empty() || clipped.is_some() {
                    let Some(end) = memchr::memchr(b'\n', rest) else {
                        carry(line, clipped, rest);
                        return;
                    };
                    line.extend_from_slice(&rest[..end]);
                    merge(&mut self.usage, read_line(line, *clipped));
                    line.clear();
                    *clipped = None;
                    rest = &rest[end + 1..];
                }
                // This chunk's whole lines, read where they lie: one pass
                // for the word, and only the lines that hold it parsed.
                let (whole, partial) = match memchr::memrchr(b'\n', rest) {
                    Some(end) => rest.split_at(end + 1),
                    None => (&[][..], rest),
                };
                let mut done = 0; // the end of the last line read
                for at in usage_word().find_iter(whole) {
                    if at < done {
                        continue;
                    }
                    let start = memchr::memrchr(b'\n', &whole[..at]).map_or(0, |i| i + 1);
                    let end = memchr::memchr(b'\n', &whole[at..]).map_or(whole.len(), |i| at + i);
                    merge(&mut self.usage, sse_line(&whole[start..end]));
                    done = end;
                }
                carry(line, clipped, partial);
            }
        }
    }

    /// The usage the body reported, its last bytes being `last`: a JSON
    /// body that came whole in one frame is read where it lies, uncopied.
    pub(crate) fn finish_with(&mut self, last: &[u8]) -> Option<Usage> {
        if let Reading::Json { tail } = &self.reading {
            if tail.is_empty() {
                self.bytes += last.len() as u64;
                return json_tail(&last[last.len().saturating_sub(TAIL)..]);
            }
        }
        self.feed(last);
        self.finish()
    }

    /// The usage the body reported, once it has ended.
    pub(crate) fn finish(&mut self) -> Option<Usage> {
        match &mut self.reading {
            Reading::Json { tail } => json_tail(tail),
            Reading::Sse { line, clipped } => {
                merge(&mut self.usage, read_line(line, *clipped));
                line.clear();
                *clipped = None;
                self.usage
            }
        }
    }
}

/// Keeps the start of a line the next chunk completes. Of a line longer
/// than [`MAX_LINE`] (OpenAI's `response.completed` repeats the whole
/// response) only the last [`TAIL`] bytes are kept, where its usage is.
fn carry(line: &mut Vec<u8>, clipped: &mut Option<bool>, part: &[u8]) {
    if clipped.is_none() && line.len() + part.len() <= MAX_LINE {
        line.extend_from_slice(part);
        return;
    }
    if clipped.is_none() {
        let head = if line.is_empty() { part } else { &line[..] };
        *clipped = Some(head.starts_with(b"data:"));
    }
    keep_tail(line, part);
}

/// Appends `part` to `buf`, keeping only the last [`TAIL`] bytes.
fn keep_tail(buf: &mut Vec<u8>, part: &[u8]) {
    if part.len() >= TAIL {
        buf.clear();
        buf.extend_from_slice(&part[part.len() - TAIL..]);
    } else {
        let excess = (buf.len() + part.len()).saturating_sub(TAIL);
        buf.drain(..excess);
        buf.extend_from_slice(part);
    }
}

/// The usage in one line: whole, or the kept end of a clipped one.
fn read_line(line: &[u8], clipped: Option<bool>) -> Option<Usage> {
    match clipped {
        None => sse_line(line),
        Some(true) => json_tail(line),
        Some(false) => None,
    }
}

/// Every stream reports running totals: the largest of each count wins.
fn merge(usage: &mut Option<Usage>, found: Option<Usage>) {
    if let Some(u) = found {
        *usage = Some(usage.unwrap_or_default().merge(u));
    }
}

/// One response's accounting: its tap, and where its usage is kept. It
/// counts when the body ends, or when it is dropped unfinished (a client
/// that goes away mid-stream is counted too, with what was read by then).
#[derive(Debug)]
pub(crate) struct Accounting {
    pub(crate) tap: UsageTap,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) book: Option<Arc<KeyBook>>,
    /// Where it counts (the day is the one it ends on); taken when counted,
    /// so a response is counted once.
    pub(crate) entry: Option<Entry>,
    pub(crate) price: Option<Price>,
    /// The request body's size: an unread report's input is estimated
    /// from it.
    pub(crate) request_bytes: u64,
}

impl Accounting {
    /// Counts what the body reported, now that it has ended.
    pub(crate) fn finish(mut self) {
        let usage = self.tap.finish();
        self.record(usage);
    }

    /// Counts what the body reported, `last` being its last bytes (not fed).
    pub(crate) fn finish_with(mut self, last: &[u8]) {
        let usage = self.tap.finish_with(last);
        self.record(usage);
    }

    /// Into the ledger: the reported tokens, or without a report an
    /// estimate of four bytes a token, so no response goes uncounted.
    fn record(&mut self, usage: Option<Usage>) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        let estimated = usage.is_none();
        let tokens = match usage {
            Some(u) => u.tokens(),
            None => Tokens {
                input: self.request_bytes.div_ceil(4).min(MAX_TOKENS),
                output: self.tap.bytes.div_ceil(4).min(MAX_TOKENS),
                ..Tokens::default()
            },
        };
        let usd = self.price.as_ref().map_or(0.0, |p| tokens.cost(p));
        let now = ledger::now_ms();
        entry.day = ledger::day_of_ms(now);
        self.ledger.record(
            entry,
            self.book.as_deref(),
            tokens,
            usd,
            (estimated, self.price.is_none()),
            now,
        );
    }
}

#[cfg(test)]
impl Accounting {
    /// The accounting of an answer of `content_type`, counted in `ledger`
    /// for workspace `ws`, credential `c`, with no key and no price.
    pub(crate) fn for_tests(content_type: &[u8], ledger: &Arc<Ledger>) -> Accounting {
        Accounting {
            tap: UsageTap::for_content_type(content_type).unwrap_or_else(|| unreachable!()),
            ledger: Arc::clone(ledger),
            book: None,
            entry: Some(Entry {
                day: 0,
                workspace: Arc::from("ws"),
                key: None,
                credential: Arc::from("c"),
                provider: Arc::from("openai"),
                tier: crate::policy::Tier::Byok,
                model: Arc::from("other"),
            }),
            price: None,
            request_bytes: 0,
        }
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        if self.entry.is_some() {
            let usage = self.tap.finish();
            self.record(usage);
        }
    }
}

/// The usage in one SSE line, when it is a `data:` line naming one: its
/// `"usage…"` value read where it lies (as at the end of a JSON body), so
/// no event is parsed whole, and `"usage":null` costs a byte's look.
fn sse_line(line: &[u8]) -> Option<Usage> {
    let data = line.strip_prefix(b"data:")?;
    json_tail(data)
}

/// The usage in the end of a JSON body: the last `"usage"` (or
/// `"usageMetadata"`) key followed by an object that reads as one.
fn json_tail(tail: &[u8]) -> Option<Usage> {
    static FINDER: std::sync::OnceLock<memmem::FinderRev<'static>> = std::sync::OnceLock::new();
    let finder = FINDER.get_or_init(|| memmem::FinderRev::new(b"\"usage"));
    let mut end = tail.len();
    // A few tries: the word may also stand in the text of the answer.
    for _ in 0..8 {
        let at = finder.rfind(&tail[..end])?;
        end = at;
        let after = &tail[at + 1..];
        let Some(close) = memchr::memchr(b'"', after) else {
            continue;
        };
        let rest = after[close + 1..].trim_ascii_start();
        let Some(value) = rest.strip_prefix(b":") else {
            continue;
        };
        let value = value.trim_ascii_start();
        if !value.starts_with(b"{") || (at > 0 && tail[at - 1] == b'\\') {
            continue; // `null`, or the word inside a string
        }
        let mut values = serde_json::Deserializer::from_slice(value).into_iter::<Counts>();
        if let Some(Ok(counts)) = values.next() {
            if let Some(u) = counts.usage() {
                return Some(u);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real-shaped captures: (content type, body, usage).
    /// Real-shaped captures: (content type, body, tokens to price: the
    /// input without its cached part).
    fn captures() -> Vec<(&'static str, Vec<u8>, Tokens)> {
        use crate::proxy::body::eventstream_encode::event as event_frame;
        let u = |input, output, cache_read, cache_write| Tokens {
            input,
            output,
            cache_read,
            cache_write,
        };
        let mut all: Vec<(&'static str, Vec<u8>, Tokens)> = texts()
            .into_iter()
            .map(|(ct, body, want)| (ct, body.into_bytes(), want))
            .collect();
        all.push((
            "application/vnd.amazon.eventstream",
            [
                // ConverseStream's events, in AWS's event-stream frames.
                event_frame("contentBlockDelta", br#"{"contentBlockIndex":0,"delta":{"text":"usage"},"p":"abcd"}"#),
                event_frame("messageStop", br#"{"stopReason":"end_turn","p":"ab"}"#),
                event_frame("metadata", br#"{"metrics":{"latencyMs":120},"p":"abcdefghij","usage":{"inputTokens":30,"outputTokens":9,"totalTokens":39,"cacheReadInputTokens":5,"cacheWriteInputTokens":6}}"#),
            ]
            .concat(),
            u(30, 9, 5, 6),
        ));
        all
    }

    fn texts() -> Vec<(&'static str, String, Tokens)> {
        let u = |input, output, cache_read, cache_write| Tokens {
            input,
            output,
            cache_read,
            cache_write,
        };
        vec![
            (
                "application/json",
                r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"the usage of \"usage\": {} here"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3}}}"#.into(),
                u(16, 10, 3, 0),
            ),
            (
                "text/event-stream",
                "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
                 data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2,\"total_tokens\":10}}\n\n\
                 data: [DONE]\n\n"
                    .into(),
                u(8, 2, 0, 0),
            ),
            (
                "application/json",
                r#"{"object":"list","data":[{"object":"embedding","embedding":[0.1,0.2],"index":0}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#.into(),
                u(5, 0, 0, 0),
            ),
            (
                "text/event-stream",
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n\
                 event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":7,\"total_tokens\":19}}}\n\n"
                    .into(),
                u(8, 7, 4, 0),
            ),
            (
                "application/json",
                r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"model":"claude-sonnet-4","stop_reason":"end_turn","usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":50,"output_tokens":11}}"#.into(),
                u(25, 11, 50, 100),
            ),
            (
                "text/event-stream",
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\n\n\
                 event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                 event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
                 event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
                    .into(),
                u(25, 15, 7, 0),
            ),
            (
                "application/json; charset=UTF-8",
                r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"cachedContentTokenCount":2,"totalTokenCount":10},"modelVersion":"gemini-2.0-flash"}"#.into(),
                u(2, 6, 2, 0),
            ),
            (
                // Thinking tokens are billed as output.
                "application/json",
                r#"{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":10,"promptTokensDetails":[{"modality":"TEXT","tokenCount":4}]}}"#.into(),
                u(4, 16, 0, 0),
            ),
            (
                // A `message` that is text, not Anthropic's object, is passed over.
                "text/event-stream",
                "data: {\"message\":\"usage follows\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}\n\n".into(),
                u(3, 1, 0, 0),
            ),
            (
                "text/event-stream",
                "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"H\"}]}}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1}}\r\n\r\n\
                 data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"i\"}]}}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2}}\r\n\r\n"
                    .into(),
                u(4, 2, 0, 0),
            ),
            (
                "application/json",
                r#"{"output":{"message":{"role":"assistant","content":[{"text":"Hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":30,"outputTokens":9,"totalTokens":39,"cacheReadInputTokens":5,"cacheWriteInputTokens":6},"metrics":{"latencyMs":100}}"#.into(),
                u(30, 9, 5, 6),
            ),
        ]
    }

    #[test]
    fn every_capture_split_at_every_byte_gives_the_same_usage() {
        for (ct, body, want) in captures() {
            let bytes = &body[..];
            let shown = String::from_utf8_lossy(bytes);
            for at in 0..=bytes.len() {
                let mut tap = UsageTap::for_content_type(ct.as_bytes()).unwrap();
                tap.feed(&bytes[..at]);
                tap.feed(&bytes[at..]);
                let got = tap.finish().map(|u| u.tokens());
                assert_eq!(got, Some(want), "{ct} split at {at}: {shown}");
                assert_eq!(tap.bytes, bytes.len() as u64);
            }
            // And byte by byte.
            let mut tap = UsageTap::for_content_type(ct.as_bytes()).unwrap();
            for b in bytes {
                tap.feed(std::slice::from_ref(b));
            }
            assert_eq!(
                tap.finish().map(|u| u.tokens()),
                Some(want),
                "{ct} byte by byte"
            );
        }
    }

    #[test]
    fn bodies_without_a_usage_report_read_as_none() {
        for (ct, body) in [
            (
                "text/event-stream",
                "data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}]}\n\ndata: [DONE]\n\n",
            ),
            (
                "application/json",
                r#"{"error":{"message":"no usage here"}}"#,
            ),
            ("application/json", r#"{"text":"\"usage\": not an object"}"#),
            ("text/event-stream", "data: {\"usage\": broken\n\n"),
        ] {
            let mut tap = UsageTap::for_content_type(ct.as_bytes()).unwrap();
            tap.feed(body.as_bytes());
            assert_eq!(tap.finish(), None, "{body}");
        }
        assert!(UsageTap::for_content_type(b"application/vnd.amazon.eventstream").is_some());
        assert!(UsageTap::for_content_type(b"text/plain").is_none());
    }

    /// A body that yields these chunks, in order.
    struct Chunks(std::collections::VecDeque<bytes::Bytes>);

    impl http_body::Body for Chunks {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    proptest::proptest! {
        /// The client gets the same bytes, chunk for chunk, with and without
        /// accounting, whatever the body and its chunking; and the usage read
        /// does not depend on the chunking.
        #[test]
        fn accounting_changes_no_byte(
            pick in 0usize..12,
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            use http_body_util::BodyExt;
            let (ct, body, _) = captures().swap_remove(pick);
            let mut bytes = body;
            bytes.extend_from_slice(&noise);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let chunks: std::collections::VecDeque<bytes::Bytes> = cuts
                .windows(2)
                .map(|w| bytes::Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
                .collect();
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let ledger = Arc::new(Ledger::default());
            let (plain, counted) = rt.block_on(async {
                let idle = std::time::Duration::from_secs(5);
                let plain = crate::proxy::body::ByokBody::upstream(Chunks(chunks.clone()), idle);
                let counted = crate::proxy::body::ByokBody::upstream(Chunks(chunks), idle).with_usage(Accounting {
                    tap: UsageTap::for_content_type(ct.as_bytes()).unwrap(),
                    ledger: Arc::clone(&ledger),
                    book: None,
                    entry: Some(test_entry()),
                    price: None,
                    request_bytes: 0,
                });
                let frames = |b: crate::proxy::body::ByokBody<Chunks>| async move {
                    let mut b = std::pin::pin!(b);
                    let mut out = Vec::new();
                    while let Some(f) = b.frame().await {
                        out.push(f.unwrap().into_data().unwrap());
                    }
                    out
                };
                (frames(plain).await, frames(counted).await)
            });
            proptest::prop_assert_eq!(plain, counted);
            let mut requests = 0;
            ledger.drain(|_, sums| requests += sums.requests);
            proptest::prop_assert_eq!(requests, 1, "counted once");
            // Read whole, the usage is the same as read in these chunks.
            let mut whole = UsageTap::for_content_type(ct.as_bytes()).unwrap();
            whole.feed(&bytes);
            let mut split = UsageTap::for_content_type(ct.as_bytes()).unwrap();
            for w in cuts.windows(2) {
                split.feed(&bytes[w[0]..w[1]]);
            }
            proptest::prop_assert_eq!(whole.finish(), split.finish());
        }
    }

    #[test]
    fn a_large_json_body_keeps_only_its_tail() {
        let mut tap = UsageTap::for_content_type(b"application/json").unwrap();
        tap.feed(b"{\"choices\":[{\"message\":{\"content\":\"");
        for _ in 0..200 {
            tap.feed(&[b'x'; 10_000]);
        }
        tap.feed(br#""}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#);
        match &tap.reading {
            Reading::Json { tail } => assert!(tail.len() <= TAIL),
            Reading::Sse { .. } => unreachable!(),
        }
        assert_eq!(
            tap.finish(),
            Some(Usage {
                input: 1,
                output: 2,
                ..Usage::default()
            })
        );
    }

    fn test_entry() -> Entry {
        Entry {
            day: 0,
            workspace: Arc::from("ws"),
            key: None,
            credential: Arc::from("c"),
            provider: Arc::from("openai"),
            tier: crate::policy::Tier::Byok,
            model: Arc::from("other"),
        }
    }

    /// A `data:` line longer than MAX_LINE, carried over many chunks (a
    /// Responses stream's `response.completed`), is read from its end.
    #[test]
    fn an_overlong_event_is_read_from_its_end() {
        let text = "x".repeat(200 * 1024);
        let event = format!(
            "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":\"{text}\",\"usage\":{{\"input_tokens\":7,\"output_tokens\":9}}}}}}\n\n"
        );
        for chunk in [1000, 4096, 70_000] {
            let mut tap = UsageTap::for_content_type(b"text/event-stream").unwrap();
            for part in event.as_bytes().chunks(chunk) {
                tap.feed(part);
            }
            match &tap.reading {
                Reading::Sse { line, .. } => assert!(line.len() <= MAX_LINE),
                Reading::Json { .. } => unreachable!(),
            }
            let got = tap.finish().map(|u| u.tokens());
            assert_eq!(
                got.map(|t| (t.input, t.output)),
                Some((7, 9)),
                "chunks of {chunk}"
            );
        }
        // A long line that is not a data line reports nothing.
        let mut tap = UsageTap::for_content_type(b"text/event-stream").unwrap();
        for part in format!(": {text}\"usage\":{{\"input_tokens\":1}}\n")
            .as_bytes()
            .chunks(1000)
        {
            tap.feed(part);
        }
        assert_eq!(tap.finish(), None);
    }

    /// A hostile upstream's counts cannot overflow the ledger's sums.
    #[test]
    fn huge_reported_counts_saturate() {
        let ledger = Arc::new(Ledger::default());
        for _ in 0..2 {
            let mut tap = UsageTap::for_content_type(b"application/json").unwrap();
            let max = u64::MAX;
            tap.feed(format!(r#"{{"usageMetadata":{{"candidatesTokenCount":{max},"thoughtsTokenCount":{max}}}}}"#).as_bytes());
            Accounting {
                tap,
                ledger: Arc::clone(&ledger),
                book: None,
                entry: Some(test_entry()),
                price: Some(Price {
                    output: 1e6,
                    ..Price::default()
                }),
                request_bytes: 0,
            }
            .finish();
        }
        let mut all = Vec::new();
        ledger.drain(|_, sums| all.push(*sums));
        assert_eq!(all[0].output, 2 * MAX_TOKENS, "each response clamped");
        assert!(all[0].usd.is_finite());
    }

    /// A response without a usage report is estimated at four bytes a
    /// token; one dropped mid-stream is counted with what was read.
    #[test]
    fn unread_and_unfinished_responses_are_still_counted() {
        let ledger = Arc::new(Ledger::default());
        let acc = |ct: &str, request_bytes| Accounting {
            tap: UsageTap::for_content_type(ct.as_bytes()).unwrap(),
            ledger: Arc::clone(&ledger),
            book: None,
            entry: Some(test_entry()),
            price: Some(Price {
                input: 1e6,
                output: 2e6,
                ..Price::default()
            }),
            request_bytes,
        };
        let mut a = acc("text/event-stream", 41);
        a.tap.feed(&[b'x'; 21]);
        a.finish();
        let mut b = acc("text/event-stream", 0);
        b.tap.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\ndata: {\"type\":\"content");
        drop(b); // the client went away
        let mut all = Vec::new();
        ledger.drain(|_, sums| all.push(*sums));
        let sums = all[0];
        assert_eq!(sums.requests, 2);
        assert_eq!(sums.estimated, 1);
        assert_eq!((sums.input, sums.output), (11 + 25, 6 + 1));
        assert_eq!(sums.usd, 11.0 + 12.0 + 25.0 + 2.0);
    }
}
