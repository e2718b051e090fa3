//! Structured cloud keys (SPEC §9): no panic, no secret shown.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| byok_proxy::fuzzing::cloud_key(data));
