//! Entry points for the fuzz targets (`fuzz/`, coverage-guided, nightly) and for the property
//! tests that run the same inputs on stable Rust in CI (`tests/tests/hostile_decode.rs`).
//! Each takes arbitrary bytes and panics only when the broker would misbehave: a panic in
//! decoding, or a spliced Fetch frame that differs from the plainly encoded one. Not an API.

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::protocol::{self, Decoded};

/// Decodes `data` as one request frame (without its length prefix), as a connection does.
/// Returns whether it decoded into a request.
pub fn decode_request(data: &[u8]) -> bool {
    matches!(
        protocol::decode(Bytes::copy_from_slice(data)),
        Ok(Decoded::Request(_))
    )
}

/// Validates `data` as a produce payload (a run of v2 record batches) the way Produce does,
/// and decodes each valid batch record by record the way ListOffsets does (bounded
/// decompression). Returns how many batches were valid.
pub fn record_batches(data: &[u8]) -> usize {
    let Ok(batches) = strata_storage::batch::split(data) else {
        return 0;
    };
    let mut valid = 0;
    for b in batches {
        if strata_storage::batch::validate(b).is_ok() {
            valid += 1;
            let _ = crate::codec::decode_batch(&mut Bytes::copy_from_slice(b));
        }
    }
    valid
}

/// Cuts `data` into record sets and chunks (the first bytes choose the version and the cut
/// points), builds a Fetch response from them once with record sets spliced by reference and
/// once plainly, and checks that the two frames are identical.
pub fn fetch_splice(data: &[u8]) {
    let Some((&v, rest)) = data.split_first() else {
        return;
    };
    let version = 4 + i16::from(v % 14); // Fetch 4..=17
    let mut sets: Vec<Vec<Bytes>> = Vec::new();
    let mut rest = Bytes::copy_from_slice(rest);
    // Each record set: a 3-byte header (chunk count, size scale), then its chunks.
    while rest.len() >= 3 && sets.len() < 16 {
        let chunks = 1 + usize::from(rest[0] % 4);
        let scale = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let _ = rest.split_to(3);
        let mut set = Vec::new();
        for i in 0..chunks {
            // Chunks of the input itself, stretched so that some cross the splice threshold.
            let take = (scale >> i).min(rest.len());
            let piece = rest.split_to(take);
            let stretch = if scale > 40_000 { 4 } else { 1 };
            set.push(Bytes::from(piece.repeat(stretch)));
        }
        sets.push(set);
    }
    let plain: Vec<Bytes> = sets.iter().map(|s| Bytes::from(s.concat())).collect();
    let mut refs = Vec::new();
    let spliced_sets: Vec<Bytes> = sets
        .into_iter()
        .map(|s| protocol::record_set(s, &mut refs))
        .collect();
    let Ok(parts) = protocol::encode_parts(
        ApiKey::Fetch,
        version,
        1,
        fetch_body(spliced_sets, version),
        refs,
    ) else {
        panic!("v{version}: spliced encoding failed");
    };
    let Ok(expected) = protocol::encode(ApiKey::Fetch, version, 1, &fetch_body(plain, version))
    else {
        panic!("v{version}: plain encoding failed");
    };
    assert!(
        parts.concat() == expected[..],
        "v{version}: spliced frame differs from the plain one"
    );
}

/// A Fetch response with one topic (by name before v13, by id after) whose partition `i`
/// holds `records[i]`.
pub(crate) fn fetch_body(records: Vec<Bytes>, version: i16) -> ResponseKind {
    let partitions = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            PartitionData::default()
                .with_partition_index(i as i32)
                .with_records(Some(r))
        })
        .collect();
    let topic = FetchableTopicResponse::default().with_partitions(partitions);
    let topic = if version >= 13 {
        topic.with_topic_id(uuid::Uuid::from_u128(7))
    } else {
        topic.with_topic(TopicName(StrBytes::from_static_str("t")))
    };
    ResponseKind::Fetch(FetchResponse::default().with_responses(vec![topic]))
}

/// A v2 record batch as an idempotent client sends it: `n` records with keys, 100-byte values
/// and a header, compressed with `compression`. Seeds for the batch properties and tests.
pub fn sample_batch(compression: Compression, n: i64) -> Bytes {
    let records = (0..n).map(|i| {
        (
            Some(Bytes::from(format!("key-{i}"))),
            Bytes::from(vec![b'v'; 100]),
        )
    });
    encode_batch(compression, 1000, records)
}

/// One v2 batch of `(key, value)` records, as a client sends it: from producer `producer_id`
/// (-1: not idempotent) at epoch 0 and sequences from 0, timestamps from 1_700_000_000_000 a
/// millisecond apart, one header `h=x` each, compressed with `compression`.
pub fn encode_batch(
    compression: Compression,
    producer_id: i64,
    records: impl IntoIterator<Item = (Option<Bytes>, Bytes)>,
) -> Bytes {
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence is the same for every record of one batch.
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key,
            value: Some(value),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    if let Err(e) = RecordBatchEncoder::encode(&mut buf, &records, &options) {
        panic!("a sample batch must encode: {e}");
    }
    buf.freeze()
}
