//! Fuzz target `wire_request`: see `butter_fuzz::check_wire` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| butter_fuzz::check_wire::<butter_proto::wire::Request>(data)
);
