//! The body's top-level "model" and its lists (SPEC §4) against serde_json.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| byok_proxy::fuzzing::body_model(data));
