//! The TOML config loader (SPEC §3): no panic, no secret shown.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| byok_proxy::fuzzing::config(data));
