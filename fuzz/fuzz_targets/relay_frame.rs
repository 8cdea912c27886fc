//! Fuzz target `relay_frame`: see `butter_fuzz::check_relay_frame` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| butter_fuzz::check_relay_frame(data));
