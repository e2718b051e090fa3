// The answers of the fast mock upstream (`examples/mock_upstream.rs`),
// also the answers of `benches/hot_path.rs`'s usage cases: included by both.

/// The fast mode's one answer: a chat completion of about 300 bytes.
const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-bench0000000000000000000001","object":"chat.completion","#,
    r#""created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"#,
    r#""message":{"role":"assistant","content":"Hello from the fast mock upstream."},"#,
    r#""finish_reason":"stop"}],"usage":{"prompt_tokens":24,"#,
    r#""completion_tokens":8,"total_tokens":32}}"#
);

/// One server-sent event of the fast mode's streams.
const EVENT: &str = concat!(
    r#"data: {"id":"chatcmpl-bench0000000000000000000001","object":"chat.completion.chunk","#,
    r#""created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"#,
    r#""delta":{"content":" token"},"finish_reason":null}]}"#,
    "\n\n"
);

/// The last event of the fast mode's streams: OpenAI's usage chunk (what
/// `stream_options.include_usage` asks for).
const USAGE_EVENT: &str = concat!(
    r#"data: {"id":"chatcmpl-bench0000000000000000000001","object":"chat.completion.chunk","#,
    r#""created":1700000000,"model":"gpt-4o-2024-08-06","choices":[],"#,
    r#""usage":{"prompt_tokens":24,"completion_tokens":16,"total_tokens":40}}"#,
    "\n\n"
);
