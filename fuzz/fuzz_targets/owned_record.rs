//! Fuzz target `owned_record`: see `butter_fuzz::check_owned` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| butter_fuzz::check_owned(data));
