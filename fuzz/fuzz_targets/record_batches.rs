#![no_main]
//! See `strata_broker::fuzzing::record_batches`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = strata_broker::fuzzing::record_batches(data);
});
