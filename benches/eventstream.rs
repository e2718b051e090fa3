//! Bedrock's event stream relayed as Anthropic's SSE
//! (`src/proxy/body/eventstream.rs`), each figure beside a baseline.
//!
//! * `eventstream/delta/*`: one typical `content_block_delta` frame (a few
//!   words of text, with Bedrock's padding), as it arrives in one chunk:
//!   `to_sse` polls it out as its SSE event; `passthrough_baseline` polls the
//!   same chunk through unchanged. The difference is a frame's conversion:
//!   the time from its last byte arriving to its event being relayed.
//! * `eventstream/three_frames/*`: the same for a chunk of three frames
//!   (`content_block_delta`, `message_delta`, `message_stop` with Bedrock's
//!   invocation metrics), relayed together as one.
//!
//! ```sh
//! cargo bench --bench eventstream
//! ```

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]
#![allow(clippy::expect_used, reason = "a bench stops on a broken setup")]

use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body::Body;
use http_body_util::Full;

/// One `chunk` event frame of AWS's event-stream encoding carrying `event`.
fn chunk_frame(event: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(event);
    let payload = format!(r#"{{"bytes":"{b64}","p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"}}"#);
    let mut headers = Vec::new();
    for (name, value) in [
        (":event-type", "chunk"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ] {
        headers.push(u8::try_from(name.len()).expect("short"));
        headers.extend_from_slice(name.as_bytes());
        headers.push(7);
        headers.extend_from_slice(&u16::try_from(value.len()).expect("short").to_be_bytes());
        headers.extend_from_slice(value.as_bytes());
    }
    let total = 12 + headers.len() + payload.len() + 4;
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&u32::try_from(total).expect("small").to_be_bytes());
    frame.extend_from_slice(&u32::try_from(headers.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
    frame.extend_from_slice(&headers);
    frame.extend_from_slice(payload.as_bytes());
    frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
    frame
}

const DELTA: &str = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the quick brown fox jumps over"}}"#;
const MESSAGE_DELTA: &str = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":128}}"#;
const MESSAGE_STOP: &str = r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":1024,"outputTokenCount":128,"invocationLatency":2345,"firstByteLatency":456}}"#;

/// The first frame `body` gives, polled by a task nobody wakes (the body
/// is never pending).
fn first<B: Body<Data = Bytes>>(body: B) -> Bytes {
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
        unreachable!("a body that is never pending, with a frame");
    };
    frame.into_data().expect("a data frame")
}

fn bench_case(c: &mut Criterion, name: &str, stream: &[u8]) {
    let chunk = Bytes::copy_from_slice(stream);
    let sse = first(byok_proxy::to_sse(Full::new(chunk.clone())));
    assert!(sse.starts_with(b"event: content_block_delta\ndata: {"));
    let mut group = c.benchmark_group(format!("eventstream/{name}"));
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("to_sse", |b| {
        b.iter(|| first(byok_proxy::to_sse(Full::new(black_box(chunk.clone())))));
    });
    group.bench_function("passthrough_baseline", |b| {
        b.iter(|| first(Full::new(black_box(chunk.clone()))));
    });
    group.finish();
}

fn eventstream(c: &mut Criterion) {
    bench_case(c, "delta", &chunk_frame(DELTA));
    let three = [
        chunk_frame(DELTA),
        chunk_frame(MESSAGE_DELTA),
        chunk_frame(MESSAGE_STOP),
    ]
    .concat();
    bench_case(c, "three_frames", &three);
}

criterion_group!(benches, eventstream);
criterion_main!(benches);
