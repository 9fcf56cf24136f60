#![no_main]
//! See `strata_broker::fuzzing::decode_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = strata_broker::fuzzing::decode_request(data);
});
