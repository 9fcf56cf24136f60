use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use super::*;
use crate::fuzzing::{encode_batch, sample_batch};

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn policy(pairs: &[(&str, &str)]) -> TopicPolicy {
    let configs = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TopicPolicy::from_configs(&configs, &Config::default())
}

fn codec_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Decoded with kafka-protocol's own decompressors (not this broker's), as a client would.
fn decode(b: &[u8]) -> Vec<Record> {
    RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b))
        .unwrap()
        .records
}

/// Every codec to every other: clients decode the same records (keys, values, headers,
/// offsets, timestamps, producer id, epoch and sequences), the header says the new codec, and
/// a batch already in the topic's codec is left alone.
#[test]
fn recompression_keeps_every_record_and_producer_field() {
    for from in CODECS {
        let sent = sample_batch(from, 40);
        let want = decode(&sent);
        for to in CODECS {
            let p = policy(&[("compression.type", codec_name(to))]);
            let out = p.apply(&sent).unwrap();
            let Some(out) = out else {
                assert_eq!(from, to, "{from:?} -> {to:?} left as sent");
                continue;
            };
            assert_ne!(from, to);
            let h = batch::validate(&out).unwrap();
            assert_eq!(
                h.attributes & ATTR_CODEC_MASK,
                to as i16,
                "{from:?} -> {to:?}"
            );
            let got = decode(&out);
            assert_eq!(got, want, "{from:?} -> {to:?}");
            let old = batch::validate(&sent).unwrap();
            assert_eq!(
                (
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.record_count
                ),
                (
                    old.producer_id,
                    old.producer_epoch,
                    old.base_sequence,
                    old.record_count
                )
            );
        }
    }
}

#[test]
fn producer_codec_and_default_leave_batches_alone() {
    let b = sample_batch(Compression::Gzip, 3);
    assert_eq!(policy(&[]).apply(&b).unwrap(), None);
    assert_eq!(
        policy(&[("compression.type", "producer")])
            .apply(&b)
            .unwrap(),
        None
    );
    assert!(!policy(&[]).inspects_batches());
}

#[test]
fn levels_come_from_the_level_configs() {
    let p = policy(&[
        ("compression.type", "zstd"),
        ("compression.zstd.level", "19"),
    ]);
    assert_eq!(p.codec, Some((Compression::Zstd, 19)));
    let p = policy(&[("compression.type", "lz4")]);
    assert_eq!(
        p.codec,
        Some((Compression::Lz4, 9)),
        "Kafka's default lz4 level"
    );
    let p = policy(&[("compression.type", "gzip")]);
    assert_eq!(p.codec, Some((Compression::Gzip, -1)));
}

fn keyed_batch(compression: Compression, keys: &[Option<&'static str>]) -> Bytes {
    let records = keys.iter().map(|k| {
        (
            k.map(|k| Bytes::from_static(k.as_bytes())),
            Bytes::from_static(b"value"),
        )
    });
    encode_batch(compression, -1, records)
}

/// A batch of 60,000 keyless records: every one is counted in the message, but the response
/// names at most MAX_RECORD_ERRORS of them (a hostile batch cannot size the answer).
#[test]
fn record_errors_are_bounded() {
    let compact = policy(&[("cleanup.policy", "compact")]);
    let mut b = strata_storage::batch::BatchBuilder::new(0);
    for _ in 0..60_000 {
        b = b.record(0, None, b"");
    }
    let r = compact.apply(&b.build()).unwrap_err();
    assert_eq!(r.code, code::INVALID_RECORD);
    assert_eq!(r.record_errors.len(), MAX_RECORD_ERRORS);
    assert_eq!(r.record_errors[..3], [0, 1, 2]);
    assert!(
        r.message.starts_with("60000 of the batch's records"),
        "{}",
        r.message
    );
}

/// Compacted topics refuse a batch with any keyless record, compressed or not, with
/// INVALID_RECORD; keyed batches pass (and still get recompressed when asked).
#[test]
fn compacted_topics_need_a_key_on_every_record() {
    let compact = policy(&[("cleanup.policy", "compact")]);
    for c in CODECS {
        let ok = keyed_batch(c, &[Some("a"), Some(""), Some("c")]);
        assert_eq!(compact.apply(&ok).unwrap(), None, "{c:?}");
        let bad = keyed_batch(c, &[Some("a"), None, Some("c"), None]);
        let r = compact.apply(&bad).unwrap_err();
        assert_eq!(r.code, code::INVALID_RECORD, "{c:?}: {}", r.message);
        assert!(r.message.contains("record 1"), "{}", r.message);
        assert_eq!(
            r.record_errors,
            [1, 3],
            "each keyless record is named (KIP-467)"
        );
    }
    let both = policy(&[
        ("cleanup.policy", "delete,compact"),
        ("compression.type", "zstd"),
    ]);
    let out = both
        .apply(&keyed_batch(Compression::None, &[Some("k")]))
        .unwrap()
        .unwrap();
    assert_eq!(decode(&out)[0].key.as_deref(), Some(&b"k"[..]));
    assert!(policy(&[("cleanup.policy", "delete")])
        .apply(&keyed_batch(Compression::None, &[None]))
        .unwrap()
        .is_none());
}

#[test]
fn corrupt_and_oversized_batches_are_refused_not_rewritten() {
    let p = policy(&[("compression.type", "lz4")]);
    let mut b = sample_batch(Compression::Gzip, 5).to_vec();
    let last = b.len() - 1;
    b[last] ^= 1;
    assert_eq!(p.apply(&b).unwrap_err().code, code::CORRUPT_MESSAGE);
    let small = policy(&[("compression.type", "lz4"), ("max.message.bytes", "100")]);
    let b = sample_batch(Compression::Gzip, 5);
    assert_eq!(small.apply(&b).unwrap_err().code, code::MESSAGE_TOO_LARGE);
    // Garbage in a records section whose CRC is right: the codec fails, nothing panics.
    let garbage = batch::with_records(&b, 1, &[0x1f, 0x8b, 1, 2, 3]).unwrap();
    assert_eq!(p.apply(&garbage).unwrap_err().code, code::CORRUPT_MESSAGE);
    // A gzip bomb expanding past the limit.
    let zeros = vec![0u8; MAX_DECOMPRESSED_BYTES + 1];
    let bomb = codec::compress(Compression::Gzip, 1, &zeros).unwrap();
    let bomb = batch::with_records(&b, 1, &bomb).unwrap();
    assert_eq!(p.apply(&bomb).unwrap_err().code, code::MESSAGE_TOO_LARGE);
    // Key walks over garbage: errors, never panics.
    let compact = policy(&[("cleanup.policy", "compact")]);
    for cut in [0usize, 1, 3, 10] {
        let short = batch::with_records(&b, 0, &[0xff; 12][..cut]).unwrap();
        assert!(compact.apply(&short).is_err());
    }
}

#[test]
fn acks_all_needs_min_insync_replicas_of_one() {
    assert!(policy(&[]).check_acks(-1).is_ok());
    let p = policy(&[("min.insync.replicas", "2")]);
    assert_eq!(p.check_acks(-1).unwrap_err().0, code::NOT_ENOUGH_REPLICAS);
    assert!(p.check_acks(1).is_ok());
    assert!(p.check_acks(0).is_ok());
}
