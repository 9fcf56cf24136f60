//! Reading a partition back record by record, as a consumer does, for the storage tests of
//! log compaction.

use strata_storage::batch::{self, HEADER_LEN};
use strata_storage::{records, Store};

/// One record as read back: offset, key, value (`None`: a tombstone).
pub type Rec = (i64, Vec<u8>, Option<Vec<u8>>);

/// Every record from `from` on, reading batch after batch as a consumer does.
pub fn read_from(s: &Store, topic: &str, from: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = s.read(topic, 0, next, 1000, true).expect("read");
        if r.records.is_empty() {
            return out;
        }
        let bytes = r.records.to_bytes();
        for b in batch::split(&bytes).expect("whole batches") {
            let h = batch::read_header(b).expect("header");
            assert_eq!(
                h.crc,
                crc32c::crc32c(&b[21..]),
                "batch at {} has a bad CRC",
                h.base_offset
            );
            let mut n = 0;
            for rec in records::records(&b[HEADER_LEN..]) {
                let rec = rec.expect("record");
                let offset = h.base_offset + i64::from(rec.offset_delta);
                if offset >= next {
                    let value = (!rec.tombstone).then(|| value_of(rec.bytes));
                    out.push((offset, rec.key.unwrap_or_default().to_vec(), value));
                }
                n += 1;
            }
            assert_eq!(n, h.record_count, "record count of batch {}", h.base_offset);
        }
        next = r.next_offset;
    }
}

/// The value of a record as the batch builder lays it out (no headers).
pub fn value_of(record: &[u8]) -> Vec<u8> {
    let mut f = record;
    let len = records::varint(&mut f).unwrap() as usize;
    let mut f = &f[1..len];
    records::varint(&mut f).unwrap();
    records::varint(&mut f).unwrap();
    let k = records::varint(&mut f).unwrap();
    f = &f[k.max(0) as usize..];
    let v = records::varint(&mut f).unwrap();
    f[..v as usize].to_vec()
}
