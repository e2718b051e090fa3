//! Bedrock's binary event stream turned into Anthropic's server-sent events.
