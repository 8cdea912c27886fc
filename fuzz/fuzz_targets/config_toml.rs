//! Fuzz target `config_toml`: see `butter_fuzz::check_config` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| butter_fuzz::check_config(data));
