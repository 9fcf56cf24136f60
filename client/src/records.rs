//! Record batches (magic 2): written record by record into one buffer as the producer
//! accumulates them, and parsed out of fetch answers.
//!
//! Layout of a batch header (61 bytes): base offset i64, batch length i32, partition leader
//! epoch i32, magic i8, CRC-32C u32 (over everything from the attributes to the end),
//! attributes i16, last offset delta i32, base timestamp i64, max timestamp i64, producer id
//! i64, producer epoch i16, base sequence i32, record count i32. Each record: length varint,
//! attributes i8, timestamp delta varlong, offset delta varint, key (varint length, -1 for
//! null), value (likewise), header count varint, then each header's key and value.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
pub use kafka_protocol::records::Compression;

use crate::error::{Error, Result};

pub const HEADER_LEN: usize = 61;
const CRC_FROM: usize = 21;
const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_LOG_APPEND: i16 = 0x08;
const ATTR_CONTROL: i16 = 0x20;

/// Parses a codec name as Kafka spells it.
pub fn compression_by_name(name: &str) -> Result<Compression> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            return Err(Error::Config(format!(
                "unknown compression {other:?} (none, gzip, snappy, lz4, zstd)"
            )))
        }
    })
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<i64> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some((&b, rest)) = buf.split_first() else {
            return Err(Error::Protocol("truncated varint in a record".into()));
        };
        *buf = rest;
        if shift == 63 && b > 1 {
            break;
        }
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(Error::Protocol("varint longer than 10 bytes".into()))
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => 1,
    }
}

fn put_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

/// Bytes the headers of a record take: their count, then each key and value.
fn headers_len(headers: &[Header]) -> usize {
    varint_len(headers.len() as i64)
        + headers
            .iter()
            .map(|(k, v)| bytes_len(Some(k.as_bytes())) + bytes_len(v.as_deref()))
            .sum::<usize>()
}

/// A record header.
pub type Header = (String, Option<Bytes>);

/// Bytes a record takes in a batch at most (its timestamp and offset deltas counted at their
/// widest), for memory accounting before the record's batch is known.
pub fn max_record_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
    1 + 10 + 5 + bytes_len(key) + bytes_len(value) + headers_len(headers) + 5
}

/// A batch being filled. Records are encoded as they arrive; the header is written when the
/// batch is sealed.
pub struct BatchBuilder {
    buf: BytesMut,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
}

impl BatchBuilder {
    pub fn new(base_timestamp: i64, capacity: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(capacity.max(HEADER_LEN + 64));
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            buf,
            base_timestamp,
            max_timestamp: base_timestamp,
            count: 0,
        }
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    /// Bytes the batch takes so far (uncompressed).
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The bytes one more record would add.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        let body = self.body_len(timestamp, key, value, headers);
        varint_len(body as i64) + body
    }

    fn body_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        1 + varint_len(timestamp.wrapping_sub(self.base_timestamp))
            + varint_len(i64::from(self.count))
            + bytes_len(key)
            + bytes_len(value)
            + headers_len(headers)
    }

    /// Appends a record; returns its offset delta within the batch.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> i32 {
        let body = self.body_len(timestamp, key, value, headers);
        let delta = self.count;
        let buf = &mut self.buf;
        buf.reserve(body + 5);
        put_varint(buf, body as i64);
        buf.put_i8(0);
        put_varint(buf, timestamp.wrapping_sub(self.base_timestamp));
        put_varint(buf, i64::from(delta));
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varint(buf, headers.len() as i64);
        for (k, v) in headers {
            put_bytes(buf, Some(k.as_bytes()));
            put_bytes(buf, v.as_deref());
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
        delta
    }

    /// Seals the batch: compresses the records if asked, writes the header and CRC.
    pub fn finish(
        self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Result<Bytes> {
        let mut buf = match compression {
            Compression::None => self.buf,
            codec => {
                let records = &self.buf[HEADER_LEN..];
                let mut out = BytesMut::with_capacity(HEADER_LEN + records.len() / 2 + 64);
                out.put_bytes(0, HEADER_LEN);
                let put = |b: &mut BytesMut| -> anyhow::Result<()> {
                    b.put_slice(records);
                    Ok(())
                };
                match codec {
                    Compression::Gzip => Gzip::compress(&mut out, put),
                    Compression::Snappy => Snappy::compress(&mut out, put),
                    Compression::Lz4 => Lz4::compress(&mut out, put),
                    Compression::Zstd => Zstd::compress(&mut out, put),
                    Compression::None => unreachable!("handled above"),
                }
                .map_err(|e| Error::Protocol(format!("compressing a batch: {e:#}")))?;
                out
            }
        };
        let total = buf.len();
        let h = &mut buf[..HEADER_LEN];
        h[0..8].copy_from_slice(&0i64.to_be_bytes());
        h[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        h[16] = 2;
        h[21..23].copy_from_slice(&(compression as i16).to_be_bytes());
        h[23..27].copy_from_slice(&(self.count - 1).max(0).to_be_bytes());
        h[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[43..51].copy_from_slice(&producer_id.to_be_bytes());
        h[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
        h[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&buf[CRC_FROM..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }
}

/// One record read from a fetch answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub timestamp: i64,
    /// The broker set the timestamp (LogAppendTime) rather than the producer.
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// What parsing a fetch answer's record bytes gave.
#[derive(Debug, Default)]
pub struct Parsed {
    pub records: Vec<ConsumedRecord>,
    /// The offset after the last complete batch (even one with nothing to return, such as a
    /// control batch): where the next fetch starts.
    pub next_offset: Option<i64>,
    /// The answer ended in a partial batch (the fetch size cut it).
    pub truncated: bool,
    /// Bytes of the first batch when it was partial, so the caller can fetch with more room.
    pub first_batch_len: Option<usize>,
}

/// Parses the record batches of one partition in a fetch answer, returning records at or
/// after `from`. A partial batch at the end (the broker cut at the size limit) is skipped.
pub fn parse_batches(mut data: Bytes, from: i64) -> Result<Parsed> {
    let mut out = Parsed::default();
    while data.remaining() >= 12 {
        let base_offset = i64::from_be_bytes(data[0..8].try_into().unwrap());
        let len = i32::from_be_bytes(data[8..12].try_into().unwrap());
        if len < (HEADER_LEN - 12) as i32 {
            return Err(Error::Protocol(format!(
                "record batch length {len} too small"
            )));
        }
        let total = 12 + len as usize;
        if data.remaining() < total {
            out.truncated = true;
            if out.next_offset.is_none() && out.records.is_empty() {
                out.first_batch_len = Some(total);
            }
            break;
        }
        let batch = data.split_to(total);
        let magic = batch[16] as i8;
        if magic != 2 {
            return Err(Error::Protocol(format!(
                "record batch at offset {base_offset} has magic {magic}: only magic 2 is supported"
            )));
        }
        let stored_crc = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        if crc32c::crc32c(&batch[CRC_FROM..]) != stored_crc {
            return Err(Error::Protocol(format!(
                "record batch at offset {base_offset} fails its CRC"
            )));
        }
        let attributes = i16::from_be_bytes(batch[21..23].try_into().unwrap());
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
        let base_timestamp = i64::from_be_bytes(batch[27..35].try_into().unwrap());
        let max_timestamp = i64::from_be_bytes(batch[35..43].try_into().unwrap());
        let count = i32::from_be_bytes(batch[57..61].try_into().unwrap());
        out.next_offset = Some(base_offset + i64::from(last_delta) + 1);
        if attributes & ATTR_CONTROL != 0 || count <= 0 {
            continue;
        }
        let log_append = attributes & ATTR_TIMESTAMP_LOG_APPEND != 0;
        let records = batch.slice(HEADER_LEN..);
        let records = decompress(attributes & ATTR_COMPRESSION_MASK, records)?;
        let mut cursor: &[u8] = &records;
        for _ in 0..count {
            let rec = parse_record(&mut cursor, &records, base_offset, base_timestamp)?;
            if rec.offset < from {
                continue;
            }
            out.records.push(ConsumedRecord {
                timestamp: if log_append {
                    max_timestamp
                } else {
                    rec.timestamp
                },
                log_append_time: log_append,
                ..rec
            });
        }
    }
    Ok(out)
}

fn decompress(codec: i16, records: Bytes) -> Result<Bytes> {
    let mut src = records;
    let take = |b: &mut Bytes| -> anyhow::Result<Bytes> { Ok(std::mem::take(b)) };
    let out = match codec {
        0 => return Ok(src),
        1 => Gzip::decompress(&mut src, take),
        2 => Snappy::decompress(&mut src, take),
        3 => Lz4::decompress(&mut src, take),
        4 => Zstd::decompress(&mut src, take),
        other => {
            return Err(Error::Protocol(format!(
                "record batch uses unknown compression {other}"
            )))
        }
    };
    out.map_err(|e| Error::Protocol(format!("decompressing a record batch: {e:#}")))
}

fn take_bytes(cursor: &mut &[u8], whole: &Bytes) -> Result<Option<Bytes>> {
    let len = get_varint(cursor)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if cursor.len() < len {
        return Err(Error::Protocol("record field longer than its batch".into()));
    }
    let start = cursor.as_ptr() as usize - whole.as_ptr() as usize;
    *cursor = &cursor[len..];
    Ok(Some(whole.slice(start..start + len)))
}

fn parse_record(
    cursor: &mut &[u8],
    whole: &Bytes,
    base_offset: i64,
    base_timestamp: i64,
) -> Result<ConsumedRecord> {
    let len = get_varint(cursor)?;
    if len < 0 || len as usize > cursor.len() {
        return Err(Error::Protocol(format!(
            "record length {len} out of bounds"
        )));
    }
    let end_len = cursor.len() - len as usize;
    let _attributes = cursor
        .first()
        .ok_or_else(|| Error::Protocol("empty record".into()))?;
    *cursor = &cursor[1..];
    let ts_delta = get_varint(cursor)?;
    let offset_delta = get_varint(cursor)?;
    let key = take_bytes(cursor, whole)?;
    let value = take_bytes(cursor, whole)?;
    let n_headers = get_varint(cursor)?;
    if n_headers < 0 || n_headers as usize > cursor.len() {
        return Err(Error::Protocol(format!("record header count {n_headers}")));
    }
    let mut headers = Vec::with_capacity(n_headers as usize);
    for _ in 0..n_headers {
        let k = take_bytes(cursor, whole)?.unwrap_or_default();
        let v = take_bytes(cursor, whole)?;
        headers.push((String::from_utf8_lossy(&k).into_owned(), v));
    }
    if cursor.len() != end_len {
        return Err(Error::Protocol(
            "record length disagrees with its fields".into(),
        ));
    }
    Ok(ConsumedRecord {
        offset: base_offset.wrapping_add(offset_delta),
        timestamp: base_timestamp.wrapping_add(ts_delta),
        log_append_time: false,
        key,
        value,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

    fn build(codec: Compression, n: i32) -> Bytes {
        let mut b = BatchBuilder::new(1_000, 0);
        for i in 0..n {
            let headers = vec![("h".to_string(), Some(Bytes::from(format!("v{i}"))))];
            let key = format!("k{i}");
            let value = vec![b'x'; i as usize * 10];
            let predicted = b.record_size(
                1_000 + i64::from(i),
                Some(key.as_bytes()),
                Some(&value),
                &headers,
            );
            let before = b.size();
            b.append(
                1_000 + i64::from(i),
                Some(key.as_bytes()),
                Some(&value),
                &headers,
            );
            assert_eq!(b.size() - before, predicted);
        }
        b.finish(codec, 7, 1, 42).unwrap()
    }

    #[test]
    fn batches_decode_with_an_independent_decoder() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut bytes = build(codec, 50);
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), 50);
            assert_eq!(set.compression, codec);
            let r = &set.records[7];
            assert_eq!(r.offset, 7);
            assert_eq!(r.timestamp, 1_007);
            assert_eq!(r.key.as_deref(), Some(&b"k7"[..]));
            assert_eq!(r.value.as_ref().unwrap().len(), 70);
            assert_eq!(r.producer_id, 7);
            assert_eq!(r.sequence, 42 + 7);
        }
    }

    #[test]
    fn parses_batches_written_by_another_encoder() {
        let records: Vec<_> = (0..5)
            .map(|i| kafka_protocol::records::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: 100 + i,
                sequence: -1,
                timestamp: 5_000 + i,
                key: if i == 0 {
                    None
                } else {
                    Some(Bytes::from(format!("k{i}")))
                },
                value: Some(Bytes::from(format!("v{i}"))),
                headers: Default::default(),
            })
            .collect();
        for codec in [Compression::None, Compression::Zstd, Compression::Snappy] {
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression: codec,
                },
            )
            .unwrap();
            let parsed = parse_batches(buf.freeze(), 102).unwrap();
            assert_eq!(parsed.next_offset, Some(105));
            let offsets: Vec<i64> = parsed.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![102, 103, 104]);
            assert_eq!(parsed.records[0].value.as_deref(), Some(&b"v2"[..]));
            assert_eq!(parsed.records[0].timestamp, 5_002);
        }
    }

    #[test]
    fn a_partial_trailing_batch_is_skipped_and_a_corrupt_one_refused() {
        let one = build(Compression::None, 3);
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one[..one.len() - 5]);
        let parsed = parse_batches(two.freeze(), 0).unwrap();
        assert_eq!(parsed.records.len(), 3);
        assert!(parsed.truncated);
        let partial = parse_batches(one.slice(..one.len() - 1), 0).unwrap();
        assert_eq!(partial.first_batch_len, Some(one.len()));
        let mut bad = BytesMut::from(&one[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(parse_batches(bad.freeze(), 0).is_err());
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        // A batch whose CRC is right but whose records lie about their lengths.
        let mut b = BatchBuilder::new(0, 0);
        b.append(0, None, Some(b"abc"), &[]);
        let batch = b.finish(Compression::None, -1, -1, -1).unwrap();
        for i in HEADER_LEN..batch.len() {
            for v in [0x00, 0x7f, 0xff, 0x01] {
                let mut m = BytesMut::from(&batch[..]);
                m[i] = v;
                let crc = crc32c::crc32c(&m[CRC_FROM..]);
                m[17..21].copy_from_slice(&crc.to_be_bytes());
                let _ = parse_batches(m.freeze(), 0);
            }
        }
        assert!(get_varint(&mut &[0xff; 11][..]).is_err());
        assert!(get_varint(&mut &[][..]).is_err());
    }

    #[test]
    fn varints_round_trip_at_the_extremes() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            assert_eq!(get_varint(&mut &buf[..]).unwrap(), v);
        }
    }
}
