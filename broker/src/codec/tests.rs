use bytes::BytesMut;

use super::*;

/// Compressed with this module's own [`compress`], at fast levels (the bomb test compresses
/// 128 MiB).
fn compressed(c: Compression, data: &[u8]) -> Vec<u8> {
    compress(c, 1, data).unwrap()
}

const ALL: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

#[test]
fn every_codec_round_trips() {
    let data: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    for c in ALL {
        for level in [-1, 1, 3, 9, 17] {
            let packed = compress(c, level, &data).unwrap();
            let out = decompress(c, &packed, MAX_DECOMPRESSED_BYTES).unwrap();
            assert_eq!(out, data, "{c:?} level {level}");
        }
    }
    // snappy-java's framing: its header, then blocks of at most 32 KiB of input.
    let framed = compressed(Compression::Snappy, &data);
    assert!(framed.starts_with(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"));
    let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
    assert_eq!(
        decompress(Compression::Snappy, &raw, data.len()).unwrap(),
        data
    );
}

#[test]
fn output_exactly_at_the_limit_is_accepted_and_one_byte_over_is_not() {
    let data = vec![7u8; 4096];
    for c in ALL {
        let input = compressed(c, &data);
        assert_eq!(decompress(c, &input, 4096).unwrap().len(), 4096, "{c:?}");
        assert!(
            matches!(
                decompress(c, &input, 4095),
                Err(CodecError::TooLarge { limit: 4095 })
            ),
            "{c:?}"
        );
    }
}

/// 128 MiB of zeros compress to a few hundred KiB; expanding them must stop at the limit.
#[test]
fn decompression_bombs_stop_at_the_limit() {
    let zeros = vec![0u8; 2 * MAX_DECOMPRESSED_BYTES];
    for c in [
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Snappy,
    ] {
        let bomb = compressed(c, &zeros);
        assert!(bomb.len() < 16 << 20, "{c:?} bomb is {} bytes", bomb.len());
        let r = decompress(c, &bomb, MAX_DECOMPRESSED_BYTES);
        assert!(
            matches!(r, Err(CodecError::TooLarge { .. })),
            "{c:?}: {r:?}"
        );
    }
}

/// A raw snappy block whose varint header declares 4 GiB: refused before allocating.
#[test]
fn snappy_declared_length_is_checked_before_allocating() {
    let declared_4gib = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    let r = decompress(Compression::Snappy, &declared_4gib, MAX_DECOMPRESSED_BYTES);
    assert!(matches!(r, Err(CodecError::TooLarge { .. })), "{r:?}");
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    framed.extend_from_slice(&(declared_4gib.len() as u32).to_be_bytes());
    framed.extend_from_slice(&declared_4gib);
    let r = decompress(Compression::Snappy, &framed, MAX_DECOMPRESSED_BYTES);
    assert!(matches!(r, Err(CodecError::TooLarge { .. })), "{r:?}");
}

#[test]
fn truncated_and_garbage_streams_are_errors_not_panics() {
    let data = vec![42u8; 10_000];
    for c in ALL {
        let full = compressed(c, &data);
        for cut in [0, 1, 5, 17, full.len() / 2, full.len().saturating_sub(1)] {
            let _ = decompress(c, &full[..cut.min(full.len())], MAX_DECOMPRESSED_BYTES);
        }
        let garbage: Vec<u8> = (0..512u32).map(|i| (i * 7919 % 256) as u8).collect();
        let _ = decompress(c, &garbage, MAX_DECOMPRESSED_BYTES);
    }
    // A framed block whose length runs past the data.
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    framed.extend_from_slice(&1000u32.to_be_bytes());
    framed.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(
        decompress(Compression::Snappy, &framed, MAX_DECOMPRESSED_BYTES),
        Err(CodecError::Invalid { .. })
    ));
}

fn batch(c: Compression, n: i64) -> Bytes {
    crate::fuzzing::sample_batch(c, n)
}

#[test]
fn decode_batch_reads_every_codec() {
    for c in ALL {
        let mut b = batch(c, 50);
        let set = decode_batch(&mut b).unwrap();
        assert_eq!(set.records.len(), 50, "{c:?}");
        assert_eq!(set.records[49].timestamp, 1_700_000_000_049);
    }
}

/// The record count is at byte 57 of a v2 batch; the CRC (bytes 17..21) covers it.
#[test]
fn decode_batch_with_a_huge_record_count_is_an_error() {
    let mut b = BytesMut::from(&batch(Compression::None, 3)[..]);
    b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(decode_batch(&mut b.freeze()).is_err());
}
