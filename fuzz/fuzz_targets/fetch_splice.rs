#![no_main]
//! See `strata_broker::fuzzing::fetch_splice`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    strata_broker::fuzzing::fetch_splice(data);
});
