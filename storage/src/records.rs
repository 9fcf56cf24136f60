//! The records inside an uncompressed v2 records section, as far as the storage reads them:
//! each record's offset and timestamp deltas, its key, whether its value is null (a
//! tombstone), and its bytes. Used by the log cleaner and by the broker's check that every
//! record of a compacted topic has a key. Every length is checked against the bytes present;
//! nothing is allocated.
//!
//! A record (all varints zigzag-encoded, as in Kafka):
//!
//! ```text
//! length varint, attributes i8, timestamp delta varlong, offset delta varint,
//! key length varint (-1: null), key, value length varint (-1: null), value,
//! header count varint, headers ...
//! ```

use crate::error::{StorageError, StorageResult};

/// One record of a records section, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value is null: on a compacted topic, a delete marker for the key.
    pub tombstone: bool,
    /// The whole record, its length prefix included: copied as is into a filtered batch.
    pub bytes: &'a [u8],
}

/// Iterates over the records of an uncompressed records section. Yields an error (and then
/// stops) at the first record that does not parse or that runs past the section.
pub struct RecordIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// The records of `section`, in order.
pub fn records(section: &[u8]) -> RecordIter<'_> {
    RecordIter {
        rest: section,
        failed: false,
    }
}

fn corrupt(what: &str) -> StorageError {
    StorageError::CorruptBatch(format!("record: {what}"))
}

impl<'a> RecordIter<'a> {
    fn parse(&mut self) -> StorageResult<Record<'a>> {
        let start = self.rest;
        let len = varint(&mut self.rest).ok_or_else(|| corrupt("bad length"))?;
        let len = usize::try_from(len).map_err(|_| corrupt("negative length"))?;
        if len > self.rest.len() {
            return Err(corrupt("longer than the batch"));
        }
        let prefix = start.len() - self.rest.len();
        let (body, tail) = self.rest.split_at(len);
        self.rest = tail;
        let bytes = &start[..prefix + len];
        let mut f = body.get(1..).ok_or_else(|| corrupt("no attributes"))?;
        let timestamp_delta = varint(&mut f).ok_or_else(|| corrupt("bad timestamp delta"))?;
        let offset_delta = varint(&mut f)
            .and_then(|d| i32::try_from(d).ok())
            .ok_or_else(|| corrupt("bad offset delta"))?;
        let key = match varint(&mut f).ok_or_else(|| corrupt("bad key length"))? {
            n if n < 0 => None,
            n => {
                let n = usize::try_from(n).map_err(|_| corrupt("bad key length"))?;
                if n > f.len() {
                    return Err(corrupt("key longer than the record"));
                }
                let (k, after) = f.split_at(n);
                f = after;
                Some(k)
            }
        };
        let value_len = varint(&mut f).ok_or_else(|| corrupt("bad value length"))?;
        if value_len > f.len() as i64 {
            return Err(corrupt("value longer than the record"));
        }
        Ok(Record {
            offset_delta,
            timestamp_delta,
            key,
            tombstone: value_len < 0,
            bytes,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = StorageResult<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let r = self.parse();
        self.failed = r.is_err();
        Some(r)
    }
}

/// Reads one zigzag varint (Kafka's varint and varlong, at most 10 bytes) off the front of
/// `buf`; `None` when it is truncated or longer.
pub fn varint(buf: &mut &[u8]) -> Option<i64> {
    let mut raw: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, HEADER_LEN};

    #[test]
    fn reads_keys_tombstones_and_deltas() {
        let b = BatchBuilder::new(1000)
            .record(1000, Some(b"a"), b"1")
            .record(1005, None, b"2")
            .record(1007, Some(b"bb"), b"")
            .build();
        let rs: Vec<Record<'_>> = records(&b[HEADER_LEN..]).map(|r| r.unwrap()).collect();
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0].key, Some(&b"a"[..]));
        assert_eq!(rs[1].key, None);
        assert_eq!(rs[1].timestamp_delta, 5);
        assert_eq!(rs[2].offset_delta, 2);
        assert!(!rs[2].tombstone);
        let total: usize = rs.iter().map(|r| r.bytes.len()).sum();
        assert_eq!(total, b.len() - HEADER_LEN);
    }

    #[test]
    fn a_null_value_is_a_tombstone() {
        // length 7: attributes, ts delta 0, offset delta 0, key "k", value null, 0 headers.
        let rec = [14u8, 0, 0, 0, 2, b'k', 1, 0];
        let r = records(&rec).next().unwrap().unwrap();
        assert!(r.tombstone);
        assert_eq!(r.key, Some(&b"k"[..]));
    }

    #[test]
    fn hostile_sections_are_errors_not_panics() {
        let cases: [&[u8]; 8] = [
            &[0xff; 11],                               // varint too long
            &[1],                                      // negative length (-1)
            &[20, 0],                                  // longer than the section
            &[0],                                      // empty record: no attributes
            &[2, 0],                                   // no timestamp delta
            &[8, 0, 0, 0, 0x7e, 0],                    // key of 63 bytes in a 4-byte record
            &[12, 0, 0, 0, 2, b'k', 0x7e],             // value of 63 bytes
            &[14, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x7f], // offset delta beyond i32
        ];
        for c in cases {
            let mut it = records(c);
            assert!(it.next().unwrap().is_err(), "{c:?}");
            assert!(it.next().is_none());
        }
    }

    #[test]
    fn varints_decode_like_kafka() {
        let mut b: &[u8] = &[0x01, 0x02, 0xfe, 0xff, 0x03, 0x80];
        assert_eq!(varint(&mut b), Some(-1));
        assert_eq!(varint(&mut b), Some(1));
        assert_eq!(varint(&mut b), Some(32767));
        assert_eq!(varint(&mut b), None, "truncated");
        let mut long: &[u8] = &[0xff; 11];
        assert_eq!(varint(&mut long), None, "more than 10 bytes");
    }
}
