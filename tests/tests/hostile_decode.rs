//! Hostile counts and lengths, for every API key and version the broker decodes.
//!
//! Each request (a default body, and the captured client requests in `tests/seeds/`) is
//! mutated at every byte offset: a 4-byte, 2-byte or varint field there is set to its largest
//! value, to -1, and one above and below what it holds (off by one from the real size). Every
//! mutant must decode to a request or to an error, without a panic and without allocating
//! more than a few MiB: this test binary's allocator refuses anything past
//! [`ALLOCATION_LIMIT`], which aborts the process (a failed test) the way the unpatched decoder
//! aborted the broker.

use std::alloc::System;

use bytes::{BufMut, Bytes, BytesMut};
use cap::Cap;
use kafka_protocol::messages::ApiKey;
use strata_broker::protocol::{self, Decoded, SUPPORTED};
use strata_tests::hostile::{empty_request, mutants, request_frame};

/// All the memory this test process may hold at once. The largest honest input here is a
/// few KiB; a decoder that trusts a count off the wire asks for gigabytes.
const ALLOCATION_LIMIT: usize = 256 << 20;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, ALLOCATION_LIMIT);

/// The tests here check how much memory the process holds after each input, so they take
/// turns rather than run in parallel.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decodes every mutant of `frame`; returns how many decoded and how many were refused.
fn hammer(frame: &Bytes) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    for at in 0..frame.len() {
        for m in mutants(frame, at) {
            match protocol::decode(m) {
                Ok(Decoded::Request(_)) | Ok(Decoded::Unsupported { .. }) => ok += 1,
                Err(_) => refused += 1,
            }
            assert!(
                ALLOC.allocated() < 64 << 20,
                "{} bytes held after decoding a mutant at offset {at}",
                ALLOC.allocated()
            );
        }
    }
    (ok, refused)
}

#[test]
fn every_api_and_version_survives_hostile_counts() {
    let _turn = serial();
    let mut versions = 0;
    let mut total = (0, 0);
    for s in SUPPORTED {
        let Some(body) = empty_request(s.key) else {
            panic!("no default body for {:?}: add it", s.key);
        };
        for version in s.min.max(3 * i16::from(s.key == ApiKey::Produce))..=s.max {
            let frame = request_frame(s.key, version, &body);
            assert!(
                matches!(protocol::decode(frame.clone()), Ok(Decoded::Request(_))),
                "{:?} v{version}: the unmutated request must decode",
                s.key
            );
            let (ok, refused) = hammer(&frame);
            total = (total.0 + ok, total.1 + refused);
            versions += 1;
        }
    }
    assert!(versions > 150, "only {versions} API versions were tried");
    println!(
        "{versions} API versions: {} mutants decoded, {} refused",
        total.0, total.1
    );
}

/// The exact request from the report: Metadata v1, 2^31-1 topics, 20 bytes in all.
#[test]
fn the_20_byte_metadata_request_is_refused() {
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::Metadata as i16);
    frame.put_i16(1);
    frame.put_i32(1); // correlation id
    frame.put_i16(-1); // null client id
    frame.put_i32(i32::MAX); // topic count
    assert!(protocol::decode(frame.freeze()).is_err());
}

/// Requests captured from real clients (librdkafka, kafka-python, kcat) by
/// `scripts/capture-seeds.sh`: populated arrays, records, tagged fields.
#[test]
fn captured_client_requests_survive_hostile_counts() {
    let _turn = serial();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/seeds exists") {
        let path = entry.expect("readable").path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let frame = Bytes::from(std::fs::read(&path).expect("readable seed"));
        assert!(
            protocol::decode(frame.clone()).is_ok(),
            "{}: the captured request must decode",
            path.display()
        );
        hammer(&frame);
        seeds += 1;
    }
    assert!(seeds >= 20, "only {seeds} seeds in {}", dir.display());
}

/// Inputs for the property tests: the default request of every supported version and the
/// captured client requests.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in SUPPORTED {
        if let Some(body) = empty_request(s.key) {
            for version in s.min.max(3 * i16::from(s.key == ApiKey::Produce))..=s.max {
                out.push(request_frame(s.key, version, &body).to_vec());
            }
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                out.push(b);
            }
        }
    }
    out
}

/// A valid record batch of `n` records with codec `c` (0..=4), the shape clients send.
fn client_batch(c: u8, n: usize) -> Vec<u8> {
    use kafka_protocol::records::Compression;
    let compression = match c % 5 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        _ => Compression::Zstd,
    };
    strata_broker::fuzzing::sample_batch(compression, n as i64).to_vec()
}

/// Random edits of an input: overwrite, insert or delete bytes at random places.
fn mutate(mut input: Vec<u8>, edits: &[(u16, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        let at = usize::from(at) % (input.len() + 1);
        match op % 4 {
            0 if at < input.len() => input[at] = byte,
            1 => input.insert(at, byte),
            2 if at < input.len() => {
                input.remove(at);
            }
            _ if at + 4 <= input.len() => {
                input[at..at + 4].copy_from_slice(&[0x7f, 0xff, 0xff, byte]);
            }
            _ => {}
        }
    }
    input
}

mod properties {
    use proptest::prelude::*;
    use strata_broker::fuzzing;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// A real request of any API and version with random edits: decoded or refused,
        /// never a panic or a large allocation.
        #[test]
        fn mutated_requests(pick in any::<prop::sample::Index>(),
                            edits in prop::collection::vec(any::<(u16, u8, u8)>(), 1..8)) {
            let _turn = serial();
            let corpus = corpus();
            let input = mutate(pick.get(&corpus).clone(), &edits);
            fuzzing::decode_request(&input);
            prop_assert!(ALLOC.allocated() < 64 << 20);
        }

        /// A supported API key and version followed by random bytes.
        #[test]
        fn random_bodies(pick in any::<prop::sample::Index>(), version in 0i16..20,
                         body in prop::collection::vec(any::<u8>(), 0..300)) {
            let _turn = serial();
            let key = pick.get(SUPPORTED).key as i16;
            let mut frame = Vec::new();
            frame.extend_from_slice(&key.to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&body);
            fuzzing::decode_request(&frame);
            prop_assert!(ALLOC.allocated() < 64 << 20);
        }

        /// Client batches of every codec, with random edits (a fixed CRC is kept or not:
        /// both paths run), through produce validation and record decoding.
        #[test]
        fn mutated_record_batches(codec in 0u8..5, n in 1usize..20,
                                  edits in prop::collection::vec(any::<(u16, u8, u8)>(), 0..6),
                                  fix_crc in any::<bool>()) {
            let _turn = serial();
            let mut b = mutate(client_batch(codec, n), &edits);
            if fix_crc && b.len() >= 61 {
                let crc = crc32c::crc32c(&b[21..]);
                b[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            let valid = fuzzing::record_batches(&b);
            if edits.is_empty() {
                prop_assert_eq!(valid, 1);
            }
            prop_assert!(ALLOC.allocated() < 128 << 20);
        }

        /// Spliced Fetch frames equal plainly encoded ones for any record sets and version.
        #[test]
        fn fetch_splice(data in prop::collection::vec(any::<u8>(), 0..2000)) {
            let _turn = serial();
            fuzzing::fetch_splice(&data);
        }
    }
}
