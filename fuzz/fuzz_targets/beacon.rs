//! Fuzz target `beacon`: see `butter_fuzz::check_beacon` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| butter_fuzz::check_beacon(data));
