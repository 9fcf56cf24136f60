//! Kafka v2 record-batch headers: parse, validate, patch.
//!
//! The storage keeps batches as the producer sent them (compressed or not) and reads only the
//! fixed 61-byte header. Layout (all big-endian):
//!
//! ```text
//! 0  base offset        i64    patched on append; not covered by the CRC
//! 8  batch length       i32    bytes after this field
//! 12 leader epoch       i32    patched on append; not covered by the CRC
//! 16 magic              i8     must be 2
//! 17 crc                u32    CRC-32C of bytes 21..end
//! 21 attributes         i16
//! 23 last offset delta  i32
//! 27 first timestamp    i64
//! 35 max timestamp      i64
//! 43 producer id        i64
//! 51 producer epoch     i16
//! 53 base sequence      i32
//! 57 record count       i32
//! 61 records ...
//! ```

use crate::error::{StorageError, StorageResult};

/// Size of the fixed v2 batch header (everything before the first record).
pub const HEADER_LEN: usize = 61;
/// Bytes before the batch-length field ends: offset (8) + length (4). A batch's total size
/// is `LOG_OVERHEAD + batch length`.
pub const LOG_OVERHEAD: usize = 12;
/// Where the CRC-covered part of the batch starts (the attributes field).
const CRC_START: usize = 21;
/// Attribute bits 0-2: the codec of the records section (0 none, 1 gzip, 2 snappy, 3 lz4,
/// 4 zstd).
pub const ATTR_CODEC_MASK: i16 = 0x07;
/// Attribute bit 3: the timestamps are LogAppendTime (set by the broker).
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;
/// Producer id of a batch from a producer without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;

/// The header fields the storage needs from one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, header included.
    pub size: usize,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence number of the last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        wrapping_seq_add(self.base_sequence, self.last_offset_delta)
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id > NO_PRODUCER_ID
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// `seq + delta` in Kafka's sequence space, which wraps from `i32::MAX` to 0.
pub fn wrapping_seq_add(seq: i32, delta: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(delta);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the header of the batch at the start of `bytes` without checking the CRC. Used on
/// batches the storage wrote itself. Fails when `bytes` is shorter than the header or than
/// the length the header declares.
pub fn read_header(bytes: &[u8]) -> StorageResult<BatchHeader> {
    if bytes.len() < HEADER_LEN {
        return Err(StorageError::CorruptBatch(format!(
            "{} bytes is shorter than a batch header ({HEADER_LEN})",
            bytes.len()
        )));
    }
    let batch_length = be_i32(bytes, 8);
    if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(StorageError::CorruptBatch(format!(
            "batch length {batch_length} is shorter than a batch header"
        )));
    }
    let size = LOG_OVERHEAD + batch_length as usize;
    if size > bytes.len() {
        return Err(StorageError::CorruptBatch(format!(
            "batch declares {size} bytes but only {} are present",
            bytes.len()
        )));
    }
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(StorageError::CorruptBatch(format!(
            "unsupported record batch magic {magic} (only v2 batches are accepted)"
        )));
    }
    Ok(BatchHeader {
        base_offset: be_i64(bytes, 0),
        size,
        partition_leader_epoch: be_i32(bytes, 12),
        crc: u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]),
        attributes: be_i16(bytes, 21),
        last_offset_delta: be_i32(bytes, 23),
        first_timestamp: be_i64(bytes, 27),
        max_timestamp: be_i64(bytes, 35),
        producer_id: be_i64(bytes, 43),
        producer_epoch: be_i16(bytes, 51),
        base_sequence: be_i32(bytes, 53),
        record_count: be_i32(bytes, 57),
    })
}

/// Fully validates one incoming batch that must fill `bytes` exactly: header, magic, CRC-32C,
/// and that the record count agrees with the last offset delta.
pub fn validate(bytes: &[u8]) -> StorageResult<BatchHeader> {
    let header = read_header(bytes)?;
    if header.size != bytes.len() {
        return Err(StorageError::CorruptBatch(format!(
            "batch declares {} bytes but {} were given",
            header.size,
            bytes.len()
        )));
    }
    let actual = crc32c::crc32c(&bytes[CRC_START..]);
    if actual != header.crc {
        return Err(StorageError::CorruptBatch(format!(
            "CRC mismatch: header says {:#010x}, data gives {actual:#010x}",
            header.crc
        )));
    }
    if header.record_count <= 0 {
        return Err(StorageError::CorruptBatch(format!(
            "record count {} (a batch holds at least one record)",
            header.record_count
        )));
    }
    if i64::from(header.last_offset_delta) + 1 != i64::from(header.record_count) {
        return Err(StorageError::CorruptBatch(format!(
            "last offset delta {} does not match record count {}",
            header.last_offset_delta, header.record_count
        )));
    }
    Ok(header)
}

/// Splits a buffer holding several whole batches back to back. A trailing partial batch is
/// an error.
pub fn split(mut bytes: &[u8]) -> StorageResult<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let size = read_header(bytes)?.size;
        let (one, rest) = bytes.split_at(size);
        out.push(one);
        bytes = rest;
    }
    Ok(out)
}

/// Writes the base offset and leader epoch into a batch; neither is covered by the CRC.
pub fn patch_offset_and_epoch(bytes: &mut [u8], base_offset: i64, leader_epoch: i32) {
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Sets the LogAppendTime flag and both timestamps, then recomputes the CRC (these fields
/// are covered by it).
pub fn set_log_append_time(bytes: &mut [u8], timestamp_ms: i64) {
    let attributes = be_i16(bytes, 21) | ATTR_LOG_APPEND_TIME;
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    bytes[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
    bytes[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A batch with the header fields of `header` (the first [`HEADER_LEN`] bytes of a batch)
/// and a new records section, `records`, whose codec is `codec` (attribute bits 0-2): the
/// batch length, the codec bits and the CRC are rewritten, every other field is kept. For
/// recompressing a batch's records; the record count must not change (see [`filtered`]).
pub fn with_records(header: &[u8], codec: i16, records: &[u8]) -> StorageResult<Vec<u8>> {
    let head = header.get(..HEADER_LEN).ok_or_else(|| {
        StorageError::CorruptBatch(format!(
            "{} bytes is shorter than a batch header",
            header.len()
        ))
    })?;
    let length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + records.len()).map_err(|_| {
        StorageError::InvalidRequest(format!(
            "{} bytes of records is too large for a batch",
            records.len()
        ))
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(head);
    out.extend_from_slice(records);
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = (be_i16(&out, 21) & !ATTR_CODEC_MASK) | (codec & ATTR_CODEC_MASK);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The batch `header` (the first [`HEADER_LEN`] bytes of a batch) left with fewer records,
/// as the log cleaner writes it: `records` is the new records section (compressed with
/// `codec`), holding `count` records with their original offset and timestamp deltas. The
/// base offset, last offset delta, first timestamp and producer fields are kept (so the
/// offsets and the producer's sequence range stay those of the original, as in Kafka); the
/// record count, max timestamp, length and CRC are rewritten.
pub fn filtered(
    header: &[u8],
    codec: i16,
    records: &[u8],
    count: i32,
    max_timestamp: i64,
) -> StorageResult<Vec<u8>> {
    let mut out = with_records(header, codec, records)?;
    out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    out[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Builds a valid uncompressed v2 batch. The storage never needs to build batches; tests,
/// benchmarks and tools in the workspace do, so it lives here once.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub first_timestamp: i64,
    records: Vec<u8>,
    count: i32,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn new(first_timestamp: i64) -> Self {
        BatchBuilder {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
            base_sequence: -1,
            first_timestamp,
            records: Vec::new(),
            count: 0,
            max_timestamp: first_timestamp,
        }
    }

    /// Sets the idempotent-producer fields.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Appends a record with a key (or none) and value at `timestamp`.
    pub fn record(self, timestamp: i64, key: Option<&[u8]>, value: &[u8]) -> Self {
        self.record_or_tombstone(timestamp, key, Some(value))
    }

    /// Appends a record with a null value: on a compacted topic, a delete marker for `key`.
    pub fn tombstone(self, timestamp: i64, key: &[u8]) -> Self {
        self.record_or_tombstone(timestamp, Some(key), None)
    }

    fn record_or_tombstone(
        mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Self {
        let mut body = Vec::with_capacity(value.map_or(0, <[u8]>::len) + 16);
        body.push(0); // record attributes
        put_varlong(&mut body, timestamp.wrapping_sub(self.first_timestamp));
        put_varlong(&mut body, i64::from(self.count));
        match key {
            Some(k) => {
                put_varlong(&mut body, k.len() as i64);
                body.extend_from_slice(k);
            }
            None => put_varlong(&mut body, -1),
        }
        match value {
            Some(v) => {
                put_varlong(&mut body, v.len() as i64);
                body.extend_from_slice(v);
            }
            None => put_varlong(&mut body, -1),
        }
        put_varlong(&mut body, 0); // no headers
        put_varlong(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.records.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        let length = (HEADER_LEN - LOG_OVERHEAD + self.records.len()) as i32;
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]); // crc, filled below
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(self.count - 1).to_be_bytes());
        b.extend_from_slice(&self.first_timestamp.to_be_bytes());
        b.extend_from_slice(&self.max_timestamp.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.producer_epoch.to_be_bytes());
        b.extend_from_slice(&self.base_sequence.to_be_bytes());
        b.extend_from_slice(&self.count.to_be_bytes());
        b.extend_from_slice(&self.records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(n: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        for i in 0..n {
            b = b.record(1_000 + i as i64, Some(b"k"), &[i as u8; 10]);
        }
        b.build()
    }

    #[test]
    fn built_batch_validates_and_reports_fields() {
        let bytes = sample(3);
        let h = validate(&bytes).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.first_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_002);
        assert_eq!(h.size, bytes.len());
        assert!(!h.is_idempotent());
    }

    #[test]
    fn patching_offset_keeps_crc_valid() {
        let mut bytes = sample(2);
        patch_offset_and_epoch(&mut bytes, 42, 0);
        let h = validate(&bytes).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 43);
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let mut bytes = sample(2);
        set_log_append_time(&mut bytes, 77);
        let h = validate(&bytes).unwrap();
        assert_eq!((h.first_timestamp, h.max_timestamp), (77, 77));
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0);
    }

    #[test]
    fn with_records_keeps_the_header_and_fixes_length_and_crc() {
        let original = BatchBuilder::new(5)
            .producer(9, 2, 40)
            .record(5, None, b"abc")
            .record(6, None, b"d")
            .build();
        let h = validate(&original).unwrap();
        let records = b"pretend these are compressed";
        let out = with_records(&original, 3, records).unwrap();
        let n = validate(&out).unwrap();
        assert_eq!(n.size, HEADER_LEN + records.len());
        assert_eq!(n.attributes & ATTR_CODEC_MASK, 3);
        assert_eq!(&out[HEADER_LEN..], records);
        let same = |b: BatchHeader| {
            (
                b.producer_id,
                b.producer_epoch,
                b.base_sequence,
                b.record_count,
                b.last_offset_delta,
                b.first_timestamp,
                b.max_timestamp,
            )
        };
        assert_eq!(same(n), same(h));
        assert!(with_records(&original[..10], 0, records).is_err());
    }

    #[test]
    fn flipped_payload_bit_is_a_crc_error() {
        let mut bytes = sample(2);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            matches!(validate(&bytes), Err(StorageError::CorruptBatch(m)) if m.contains("CRC"))
        );
    }

    #[test]
    fn wrong_magic_and_count_mismatch_are_rejected() {
        let mut bytes = sample(1);
        bytes[16] = 1;
        assert!(validate(&bytes).is_err());
        let mut bytes = sample(2);
        bytes[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(validate(&bytes), Err(StorageError::CorruptBatch(m)) if m.contains("record count"))
        );
    }

    #[test]
    fn split_finds_each_batch() {
        let mut all = sample(1);
        all.extend(sample(4));
        let parts = split(&all).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(read_header(parts[1]).unwrap().record_count, 4);
        assert!(split(&all[..all.len() - 1]).is_err());
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(wrapping_seq_add(i32::MAX, 1), 0);
        assert_eq!(wrapping_seq_add(5, 3), 8);
    }

    proptest! {
        #[test]
        fn truncated_batches_never_panic(n in 1usize..5, cut in 0usize..200) {
            let bytes = sample(n);
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(validate(&bytes[..cut]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate(&bytes);
            let _ = split(&bytes);
        }

        #[test]
        fn header_fields_round_trip(ts in 0i64..1<<40, pid in 0i64..1<<40, epoch in 0i16..1000, seq in 0i32..1<<30, n in 1usize..20) {
            let mut b = BatchBuilder::new(ts).producer(pid, epoch, seq);
            for i in 0..n { b = b.record(ts + i as i64, None, b"v"); }
            let h = validate(&b.build()).unwrap();
            prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (pid, epoch, seq));
            prop_assert_eq!(h.record_count as usize, n);
            prop_assert_eq!(h.max_timestamp, ts + n as i64 - 1);
        }
    }
}
