//! Fuzz target `pcg_message`: see `butter_fuzz::check_pcg` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| butter_fuzz::check_pcg(data));
