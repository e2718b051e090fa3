//! The path's model and the query's checks (SPEC §4) against the spec's rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| byok_proxy::fuzzing::path_model(data));
